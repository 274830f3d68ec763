//! The storage boundary of Zeta. The ledger engine and the API talk to a [`Store`]; each backend
//! (PostgreSQL, SQLite) implements it with its own SQL. No database type crosses this trait.

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;
use zeta_ledger::audit::{AuditEvent, ChainHead};
use zeta_ledger::{
    Account, AccountStatus, ApiKey, Changes, Transaction, TransactionStatus, TransactionType,
    Transfer, TransferView,
};

/// A storage failure, classified by what the caller should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Another transaction got in the way (serialization failure, deadlock, a unique key that a
    /// concurrent transaction just took): run the whole transaction again.
    #[error("transient conflict: {0}")]
    Conflict(String),
    /// The database cannot be reached or did not answer in time: retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or a broken database; never retried.
    #[error("database error: {0}")]
    Other(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Conflict(_) | StoreError::Unavailable(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A stored response to an idempotent request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The API key the request was made with.
    pub scope: Uuid,
    pub key: String,
    /// SHA-256 of the method, path and canonical body.
    pub request_hash: Vec<u8>,
    pub status: u16,
    pub body: Vec<u8>,
    pub created_at: OffsetDateTime,
}

/// An API key as stored: never the secret, only its hash.
pub type ApiKeyRecord = ApiKey;

/// The API keys a batch refers to, with their secret hashes.
#[derive(Clone, Debug, Default)]
pub struct KeyRefs {
    pub keys: Vec<(ApiKey, Vec<u8>)>,
    /// Whether any key (live or revoked) exists at all.
    pub any: bool,
}

#[derive(Clone, Debug, Default)]
pub struct AccountFilter {
    pub account_number: Option<String>,
    pub status: Option<AccountStatus>,
    /// Only these accounts (a scoped key).
    pub only: Option<Vec<Uuid>>,
    /// Accounts created after this one (the cursor).
    pub after: Option<Uuid>,
    pub limit: u32,
}

#[derive(Clone, Debug)]
pub struct TransactionFilter {
    pub account_id: Uuid,
    pub status: Option<TransactionStatus>,
    pub kind: Option<TransactionType>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    /// Transactions recorded before this position (the cursor).
    pub before_seq: Option<i64>,
    pub limit: u32,
}

/// What `verify` found: one line per broken account, transfer or row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub accounts: i64,
    pub transactions: i64,
    pub audit_events: i64,
    pub total_balance: i128,
    pub problems: Vec<String>,
}

/// Rows deleted per statement by [`Store::purge_expired`].
pub const PURGE_CHUNK: i64 = 1_000;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies pending migrations.
    async fn migrate(&self) -> StoreResult<()>;
    /// One round trip, for readiness.
    async fn ping(&self) -> StoreResult<()>;
    /// Closes every connection, once nothing uses the store any more (at shutdown). SQLite
    /// then copies its WAL into the database file and removes it.
    async fn close(&self);
    /// Starts a write transaction for the ledger engine (REPEATABLE READ or its equivalent).
    async fn begin(&self) -> StoreResult<Box<dyn LedgerTx>>;

    /// The API's reads — balance inquiries, listings and history, from here to `balance_at` —
    /// may be served by a read replica and then lag behind the primary by the replication delay.
    /// Everything else in this trait reads and writes the primary.
    async fn get_account(&self, id: Uuid) -> StoreResult<Option<Account>>;
    async fn list_accounts(&self, filter: &AccountFilter) -> StoreResult<Vec<Account>>;
    async fn get_transaction(&self, id: Uuid) -> StoreResult<Option<Transaction>>;
    async fn list_transactions(&self, filter: &TransactionFilter) -> StoreResult<Vec<Transaction>>;
    async fn get_transfer(&self, id: Uuid) -> StoreResult<Option<TransferView>>;
    /// The balance after the last movement posted at or before `at` (0 before the first).
    async fn balance_at(&self, account_id: Uuid, at: OffsetDateTime) -> StoreResult<i64>;

    /// The account as the primary has it, for a read that decides something and so must see
    /// every committed write. The reads above may come from a read replica and lag behind it
    /// (see [`Store::ping_replica`]); a backend without replicas reads from its only database.
    async fn get_account_fresh(&self, id: Uuid) -> StoreResult<Option<Account>> {
        self.get_account(id).await
    }

    /// One round trip to the read replica, for readiness; `None` when reads go to the primary.
    async fn ping_replica(&self) -> Option<StoreResult<()>> {
        None
    }

    async fn get_idempotency(
        &self,
        scope: Uuid,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>>;

    /// The live (not revoked) keys with these secret hashes, each with its hash.
    async fn find_api_keys(
        &self,
        secret_hashes: &[Vec<u8>],
    ) -> StoreResult<Vec<(Vec<u8>, ApiKeyRecord)>>;
    /// The live (not revoked) key with this secret hash.
    async fn find_api_key(&self, secret_hash: &[u8]) -> StoreResult<Option<ApiKeyRecord>> {
        let found = self.find_api_keys(&[secret_hash.to_vec()]).await?;
        Ok(found.into_iter().next().map(|(_, key)| key))
    }
    /// The live keys, oldest first (keys are created and revoked by the engine).
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>>;
    /// Audit events with `seq > after_seq`, ascending, at most `limit`.
    async fn list_audit_events(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditEvent>>;

    /// Recomputes every balance and checks the invariants on one consistent snapshot.
    async fn verify(&self) -> StoreResult<VerifyReport>;

    /// After a COMMIT whose answer was lost: did the batch marked `batch_id` commit? Waits for
    /// the transaction to end if it is still running, and makes sure a batch found not committed
    /// can never commit later. `None`: this backend cannot tell.
    async fn resolve_batch(&self, _batch_id: Uuid) -> StoreResult<Option<bool>> {
        Ok(None)
    }

    /// Deletes idempotency records and batch markers created before `before`; returns how many.
    /// At most [`PURGE_CHUNK`] rows per statement, each committed on its own, so a backlog of
    /// any size is purged without outlasting the statement timeout or holding up writes.
    async fn purge_expired(&self, _before: OffsetDateTime) -> StoreResult<u64> {
        Ok(0)
    }

    /// Connections of the pool: (open, idle).
    fn pool_stats(&self) -> (u32, u32) {
        (0, 0)
    }
}

/// One write transaction of the ledger engine. Dropping it without `commit` rolls it back.
#[async_trait]
pub trait LedgerTx: Send {
    async fn idempotency_lookup(
        &mut self,
        keys: &[(Uuid, String)],
    ) -> StoreResult<Vec<IdempotencyRecord>>;
    /// The transactions with these ids, plus the transfers with these ids or that any of those
    /// transactions belongs to, plus every leg of those transfers.
    async fn load_refs(
        &mut self,
        transaction_ids: &[Uuid],
        transfer_ids: &[Uuid],
    ) -> StoreResult<(Vec<Transaction>, Vec<Transfer>)>;
    /// Locks the accounts (`ids` ascending, no duplicates) for the rest of the transaction.
    async fn lock_accounts(&mut self, ids: &[Uuid]) -> StoreResult<Vec<Account>>;
    /// The keys with these ids or secret hashes (revoked ones too), and whether any key exists.
    async fn api_keys(&mut self, ids: &[Uuid], secret_hashes: &[Vec<u8>]) -> StoreResult<KeyRefs>;
    /// The last audit event (as this transaction sees it); `None` for an empty log.
    async fn audit_head(&mut self) -> StoreResult<Option<ChainHead>>;
    /// Those of `numbers` that some account already has.
    async fn taken_account_numbers(&mut self, numbers: &[String]) -> StoreResult<Vec<String>>;
    /// Writes the batch's rows, and `audit` (sealed events; empty when the engine did not hold
    /// the chain head yet) with them.
    async fn write(
        &mut self,
        changes: &Changes,
        idempotency: &[IdempotencyRecord],
        audit: &[AuditEvent],
    ) -> StoreResult<()>;
    /// Appends sealed audit events. The engine calls it after a `write` without them when
    /// another batch held the chain head, holding it from here until the COMMIT is answered,
    /// so the serial part of concurrent batches is only this insert and the COMMIT.
    async fn append_audit(&mut self, events: &[AuditEvent]) -> StoreResult<()>;
    /// Records that this transaction is batch `batch_id` (see [`Store::resolve_batch`]); called
    /// before `write`, whose statements may carry the marker.
    async fn mark_batch(&mut self, _batch_id: Uuid) -> StoreResult<()> {
        Ok(())
    }
    async fn commit(self: Box<Self>) -> StoreResult<()>;
}
