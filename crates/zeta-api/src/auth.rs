//! API keys: secrets, their hashes, roles and the caller of a request.

use std::collections::HashSet;
use std::sync::Arc;

use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;
use zeta_engine::{Engine, EngineError, Reply};
use zeta_ledger::{ApiKey, Command, Effect, Envelope, LedgerError, NewApiKey, Scope};
use zeta_store::{ApiKeyRecord, Store, StoreError, StoreResult};

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

type KeyAnswer = oneshot::Sender<StoreResult<Option<ApiKeyRecord>>>;

/// Looks the keys of concurrent requests up together: one key query runs at a time, and the
/// requests that arrive while it runs share the next one (`secret_hash = ANY(…)`), so a busy
/// server sends one key query per database round trip instead of one per request. Nothing is
/// cached: every request's lookup is a query that starts after the request arrived, so a key
/// revoked before a request arrives is refused on every instance.
///
/// One query at a time coalesces the most: with four at once each query carried about three
/// requests and the server did 3–12 % fewer transfers per second (`docs/performance.md`).
pub struct KeyLookups {
    queue: mpsc::UnboundedSender<(Vec<u8>, KeyAnswer)>,
}

impl KeyLookups {
    /// Most secret hashes in one query.
    const MAX_BATCH: usize = 256;

    /// Starts the lookup task (it ends when the `KeyLookups` is dropped).
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (queue, mut rx) = mpsc::unbounded_channel::<(Vec<u8>, KeyAnswer)>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Everything that queued while the previous query ran joins this one.
                let mut batch = vec![first];
                while batch.len() < Self::MAX_BATCH {
                    match rx.try_recv() {
                        Ok(lookup) => batch.push(lookup),
                        Err(_) => break,
                    }
                }
                let mut hashes: Vec<Vec<u8>> = batch.iter().map(|(h, _)| h.clone()).collect();
                hashes.sort_unstable();
                hashes.dedup();
                let found = store.find_api_keys(&hashes).await;
                for (hash, answer) in batch {
                    let key = found.as_ref().map_err(Clone::clone).map(|keys| {
                        keys.iter()
                            .find(|(h, _)| *h == hash)
                            .map(|(_, key)| key.clone())
                    });
                    let _ = answer.send(key);
                }
            }
        });
        Self { queue }
    }

    /// The live key with this secret hash.
    pub async fn find(&self, secret_hash: Vec<u8>) -> StoreResult<Option<ApiKeyRecord>> {
        let stopped = || StoreError::Unavailable("the key lookup task stopped".into());
        let (answer, rx) = oneshot::channel();
        self.queue
            .send((secret_hash, answer))
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}
