//! API keys: secrets, their hashes, roles and the caller of a request.

use std::collections::HashSet;
use std::sync::Arc;

use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeta_ledger::Scope;
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
