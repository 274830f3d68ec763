//! API keys: secrets, their hashes, roles and the caller of a request.

use std::collections::HashSet;
use std::sync::Arc;

use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeta_engine::{Engine, EngineError, Reply};
use zeta_ledger::{ApiKey, Command, Effect, Envelope, LedgerError, NewApiKey, Scope};
use zeta_store::ApiKeyRecord;

use crate::error::ApiError;

/// Roles, weakest first.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub key_id: Uuid,
    pub role: Role,
    /// The accounts this key is limited to; `None` for an unscoped key.
    pub scope: Scope,
}

impl Caller {
    pub fn from_record(record: &ApiKeyRecord) -> Option<Self> {
        Some(Self {
            key_id: record.id,
            role: Role::parse(&record.role)?,
            scope: record
                .account_ids
                .as_ref()
                .map(|ids| Arc::new(ids.iter().copied().collect::<HashSet<_>>())),
        })
    }

    /// 403 unless the caller's role is at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this API key's role does not allow this request",
            ))
        }
    }

    pub fn sees(&self, account_id: Uuid) -> bool {
        self.scope.as_ref().is_none_or(|s| s.contains(&account_id))
    }
}

/// SHA-256 of a secret: what is stored and looked up. A 256-bit random secret needs no salt or
/// slow hash; the lookup is by hash equality in the database index, so no secret is compared in
/// process memory.
pub fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// A new secret: `zeta_` and 64 hex digits (256 random bits from the OS generator).
pub fn generate_secret() -> String {
    let mut bytes = [0_u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("zeta_{}", hex::encode(bytes))
}

/// The ledger command's part of a new key: a fresh id and the secret's hash.
pub fn new_key(
    name: String,
    role: Role,
    account_ids: Option<Vec<Uuid>>,
    secret: &str,
    only_if_none: bool,
) -> NewApiKey {
    NewApiKey {
        id: Uuid::now_v7(),
        name,
        role: role.as_str().to_string(),
        account_ids,
        secret_hash: hash_secret(secret),
        only_if_none,
    }
}

/// What [`create_key`] did.
#[derive(Debug)]
pub enum KeyCreation {
    Created {
        key: ApiKey,
        secret: String,
    },
    /// A live key already has this secret: nothing changed.
    Exists(ApiKey),
    /// The ledger refused (e.g. `only_if_none` and a key exists, or the secret was revoked).
    Refused(LedgerError),
}

/// Creates an API key outside a request (start-up, CLI) through the ledger engine, so it is
/// written with its audit event like every change. `secret`: a given secret (the bootstrap key),
/// else a new one. `only_if_none`: only when no key exists at all.
pub async fn create_key(
    engine: &Engine,
    name: &str,
    role: Role,
    account_ids: Option<Vec<Uuid>>,
    secret: Option<&str>,
    only_if_none: bool,
) -> Result<KeyCreation, EngineError> {
    let secret = secret.map_or_else(generate_secret, str::to_string);
    let new = new_key(name.to_string(), role, account_ids, &secret, only_if_none);
    let id = new.id;
    let command = Command::CreateApiKey(new);
    let envelope = Envelope {
        command,
        scope: None,
        actor: None,
    };
    Ok(match engine.submit(envelope, None).await? {
        Reply::Applied {
            outcome: Ok(Effect::ApiKey(key)),
            ..
        } if key.id == id => KeyCreation::Created { key, secret },
        Reply::Applied {
            outcome: Ok(Effect::ApiKey(key)),
            ..
        } => KeyCreation::Exists(key),
        Reply::Applied {
            outcome: Err(e), ..
        } => KeyCreation::Refused(e),
        other => {
            return Err(EngineError::Internal(format!(
                "unexpected reply to an API key creation: {other:?}"
            )));
        }
    })
}
