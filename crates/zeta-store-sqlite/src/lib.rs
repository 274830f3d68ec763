//! SQLite implementation of [`zeta_store::Store`]: the embedded backend. All of Zeta's SQLite SQL
//! lives in this crate, always with bound parameters.
//!
//! Behaviour mirrors `zeta-store-postgres`; the concurrency model differs:
//! - The database runs in WAL mode with `synchronous=FULL` (a COMMIT is durable when it returns),
//!   foreign keys on, a busy timeout and temporary storage (statement journals) in memory.
//!   Checkpoints run on a connection of their own, not in the writer's COMMIT (`checkpoint`).
//! - Every write transaction begins with `BEGIN IMMEDIATE`, which takes SQLite's single write lock
//!   up front. Writers are serialized, so nothing a writer reads can change under it: this replaces
//!   PostgreSQL's `REPEATABLE READ` plus `SELECT … FOR UPDATE`, and `lock_accounts` is a plain
//!   `SELECT` inside the immediate transaction. The engine runs one writer on SQLite.
//!   Write transactions (and the one write outside the engine, the idempotency purge) always use
//!   the same connection, held by the store rather than pooled, so its page cache stays valid
//!   from one transaction to the next and nothing runs between a COMMIT and the next BEGIN.
//! - Readers use the other pooled connections; WAL gives each read transaction a consistent
//!   snapshot and never blocks the writer.
//!
//! Encodings: ids are TEXT (lowercase hyphenated UUIDs, whose text order is PostgreSQL's uuid
//! order), timestamps INTEGER microseconds since the Unix epoch (UTC), metadata TEXT JSON, the
//! `account_ids` of an API key a TEXT JSON array. Lists of ids are passed to SQL as one JSON array
//! parameter read with `json_each`, SQLite's counterpart of PostgreSQL's `= ANY($1)`.

/// Column lists, as literals so that queries stay `&'static str`.
macro_rules! account_columns {
    () => {
        "id, account_number, owner_name, currency, balance, held, status, version, seq, metadata, created_at, updated_at"
    };
}
macro_rules! transaction_columns {
    () => {
        "id, account_id, seq, posted_seq, type, amount, currency, status, balance_after, transfer_id, reverses_id, reversed_by_id, failure_reason, description, reference, created_at, posted_at, updated_at"
    };
}
macro_rules! transfer_columns {
    () => {
        "id, from_account_id, to_account_id, amount, currency, status, debit_id, credit_id, reverses_id, reversed_by_id, description, reference, created_at, updated_at"
    };
}

mod checkpoint;
mod rows;
mod verify;

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection as _, QueryBuilder, Row, SqlSafeStr as _, Sqlite};
use time::OffsetDateTime;
use tokio::sync::{Mutex, OwnedMutexGuard};
use uuid::Uuid;
use zeta_ledger::audit::{AuditEvent, ChainHead};
use zeta_ledger::{Account, Changes, Transaction, Transfer, TransferView};
use zeta_store::{
    AccountFilter, ApiKeyRecord, IdempotencyRecord, KeyRefs, LedgerTx, PURGE_CHUNK, Store,
    StoreError, StoreResult, TransactionFilter, VerifyReport,
};

use checkpoint::Checkpointer;
use rows::{
    account_from_row, api_key_from_row, id, id_list, idempotency_from_row, micros_bound,
    transaction_from_row, transfer_from_row,
};

/// Pool and connection settings.
#[derive(Clone, Debug)]
pub struct SqliteSettings {
    /// Connections: the writer's one plus the readers' (at least one reader).
    pub max_connections: u32,
    /// How long a statement waits for a lock another connection (or process) holds before it
    /// fails with SQLITE_BUSY (retryable); also how long a caller waits for a free connection.
    pub busy_timeout: Duration,
    /// WAL size, in frames (pages), from which a write transaction first waits for the
    /// background checkpoint to copy everything, so that the WAL starts over (see `checkpoint`).
    pub wal_restart_frames: i64,
}

impl Default for SqliteSettings {
    fn default() -> Self {
        Self {
            max_connections: 8,
            busy_timeout: Duration::from_secs(5),
            wal_restart_frames: checkpoint::RESTART_FRAMES,
        }
    }
}

#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// The readers (and the migrations).
    pool: SqlitePool,
    /// The one connection that writes.
    writer: Arc<Mutex<Writer>>,
    busy_timeout: Duration,
    checkpointer: Arc<Checkpointer>,
}

/// The writer's connection. Not pooled: a pool pings a connection when it is handed back and
/// again when it is handed out, two trips to the connection's thread between a COMMIT and the
/// next BEGIN (about 0.5 ms per transaction under load).
#[derive(Debug)]
struct Writer {
    /// `None` until (re)connected by [`Writer::ready`].
    conn: Option<SqliteConnection>,
    /// A transaction was begun and is neither committed nor rolled back yet (its `LedgerTx`
    /// was dropped): the next user rolls it back first.
    open: bool,
    closed: bool,
    options: SqliteConnectOptions,
}

impl Writer {
    /// The connection, outside any transaction: rolls back what a dropped transaction left
    /// open, and connects (again) when there is no usable connection.
    async fn ready(&mut self) -> StoreResult<&mut SqliteConnection> {
        if self.closed {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
        let mut conn = self.conn.take();
        if std::mem::take(&mut self.open)
            && let Some(mut open) = conn.take()
        {
            match sqlx::query("ROLLBACK").execute(&mut open).await {
                Ok(_) => conn = Some(open),
                // In an unknown state: replaced below.
                Err(_) => {
                    let _ = open.close().await;
                }
            }
        }
        let conn = match conn {
            Some(conn) => conn,
            None => SqliteConnection::connect_with(&self.options)
                .await
                .map_err(classify)?,
        };
        Ok(self.conn.insert(conn))
    }
}

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "ledger", include_str!("../migrations/0001_ledger.sql")),
    (
        2,
        "audit events",
        include_str!("../migrations/0002_audit_events.sql"),
    ),
    (
        3,
        "drop unused transfer indexes",
        include_str!("../migrations/0003_drop_unused_transfer_indexes.sql"),
    ),
];

/// `UNIQUE constraint failed: …` messages of the keys a concurrent writer may have taken: the
/// retry's pre-checks see them and answer properly. (SQLite reports no constraint name, only the
/// columns.)
const CONFLICT_KEYS: &[&str] = &[
    "UNIQUE constraint failed: idempotency_keys.api_key_id, idempotency_keys.key",
    "UNIQUE constraint failed: accounts.account_number",
    "UNIQUE constraint failed: audit_events.seq",
    "UNIQUE constraint failed: api_keys.secret_hash",
];

/// SQLITE_BUSY and SQLITE_LOCKED, the primary codes of every extended code for "someone else
/// holds the lock".
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
/// SQLITE_CONSTRAINT_PRIMARYKEY and SQLITE_CONSTRAINT_UNIQUE.
const SQLITE_CONSTRAINT_PRIMARYKEY: i32 = 1555;
const SQLITE_CONSTRAINT_UNIQUE: i32 = 2067;

/// Maps a driver error to what the caller should do about it.
pub(crate) fn classify(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::Database(db) => {
            // SQLite errors carry the extended result code; its low byte is the primary code.
            let code = db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .unwrap_or_default();
            let message = db.message();
            match code {
                c if c & 0xff == SQLITE_BUSY || c & 0xff == SQLITE_LOCKED => {
                    StoreError::Unavailable(format!("{code}: {message}"))
                }
                SQLITE_CONSTRAINT_PRIMARYKEY | SQLITE_CONSTRAINT_UNIQUE
                    if CONFLICT_KEYS.contains(&message) =>
                {
                    StoreError::Conflict(format!("{code}: {message}"))
                }
                _ => StoreError::Other(format!("{code}: {message}")),
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(err.to_string()),
        _ => StoreError::Other(err.to_string()),
    }
}

impl SqliteStore {
    /// Opens (creating it when missing) the database at `sqlite://PATH`, `sqlite:PATH` or a plain
    /// file path, and connects the writer's connection and one reader's right away.
    pub async fn open(url_or_path: &str, settings: &SqliteSettings) -> StoreResult<Self> {
        let options = if url_or_path.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url_or_path)
                .map_err(|e| StoreError::Other(format!("bad DATABASE_URL: {e}")))?
        } else {
            SqliteConnectOptions::new().filename(url_or_path)
        };
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Statement journals (see `rows::ROWS_PER_STATEMENT`) in memory, not in a temporary
            // file the writer writes and reads back on every multi-row statement.
            .pragma("temp_store", "memory")
            // Checkpoints run on a connection of their own (see `checkpoint`).
            .pragma("wal_autocheckpoint", "0")
            .busy_timeout(settings.busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections.saturating_sub(1).max(1))
            .acquire_timeout(settings.busy_timeout)
            .connect_with(options.clone())
            .await
            .map_err(classify)?;
        // SQLite has one writer at a time anyway. A connection's page cache is dropped whenever
        // another connection wrote since its last transaction: with the writes spread over the
        // pool, every write transaction started cold, and every connection kept a writer's
        // worth of memory.
        let mut writer = Writer {
            conn: None,
            open: false,
            closed: false,
            options: options.clone(),
        };
        writer.ready().await?;
        let checkpointer =
            Arc::new(Checkpointer::start(&options, settings.wal_restart_frames).await?);
        Ok(Self {
            pool,
            writer: Arc::new(Mutex::new(writer)),
            busy_timeout: settings.busy_timeout,
            checkpointer,
        })
    }

    /// The writer's connection, waiting at most the busy timeout for the transaction that has
    /// it (like a second writer waits for SQLite's write lock).
    async fn writer(&self) -> StoreResult<OwnedMutexGuard<Writer>> {
        tokio::time::timeout(self.busy_timeout, Arc::clone(&self.writer).lock_owned())
            .await
            .map_err(|_| {
                StoreError::Unavailable("timed out waiting for the writer's connection".into())
            })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn migrator() -> Migrator {
        let migrations = MIGRATIONS
            .iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*name),
                    MigrationType::Simple,
                    sqlx::AssertSqlSafe(*sql).into_sql_str(),
                    false,
                )
            })
            .collect();
        let mut migrator = Migrator::with_migrations(migrations);
        // A rolled-back release keeps working on a database that a newer one migrated
        // (migrations only ever add: expand first, contract in a later release).
        migrator.set_ignore_missing(true);
        migrator
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> StoreResult<()> {
        Self::migrator().run(&self.pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(inner) => classify(inner),
            other => StoreError::Other(other.to_string()),
        })
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
        let mut writer = self.writer.lock().await;
        writer.closed = true;
        // Closing rolls back what a dropped transaction left open.
        if let Some(conn) = writer.conn.take() {
            let _ = conn.close().await;
        }
        drop(writer);
        // The last connection to close checkpoints the whole WAL and removes it.
        self.checkpointer.close().await;
    }

    async fn begin(&self) -> StoreResult<Box<dyn LedgerTx>> {
        self.checkpointer.before_write().await;
        let mut writer = self.writer().await?;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(writer.ready().await?)
            .await
            .map_err(classify)?;
        writer.open = true;
        Ok(Box::new(SqliteLedgerTx {
            writer: Some(writer),
            checkpointer: Arc::clone(&self.checkpointer),
        }))
    }

    async fn get_account(&self, account_id: Uuid) -> StoreResult<Option<Account>> {
        sqlx::query(concat!(
            "SELECT ",
            account_columns!(),
            " FROM accounts WHERE id = ?1"
        ))
        .bind(id(account_id))
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?
        .map(|r| account_from_row(&r))
        .transpose()
    }

    async fn list_accounts(&self, f: &AccountFilter) -> StoreResult<Vec<Account>> {
        // Only the filters that are set become predicates (fixed fragments, values bound), so
        // SQLite can pick the matching index.
        let mut q = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT ",
            account_columns!(),
            " FROM accounts WHERE TRUE"
        ));
        if let Some(number) = &f.account_number {
            q.push(" AND account_number = ").push_bind(number.as_str());
        }
        if let Some(status) = f.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(only) = &f.only {
            q.push(" AND id IN (SELECT value FROM json_each(")
                .push_bind(id_list(only)?)
                .push("))");
        }
        if let Some(after) = f.after {
            q.push(" AND id > ").push_bind(id(after));
        }
        q.push(" ORDER BY id LIMIT ").push_bind(i64::from(f.limit));
        q.build()
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?
            .iter()
            .map(account_from_row)
            .collect()
    }

    async fn get_transaction(&self, transaction_id: Uuid) -> StoreResult<Option<Transaction>> {
        sqlx::query(concat!(
            "SELECT ",
            transaction_columns!(),
            " FROM transactions WHERE id = ?1"
        ))
        .bind(id(transaction_id))
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?
        .map(|r| transaction_from_row(&r))
        .transpose()
    }

    async fn list_transactions(&self, f: &TransactionFilter) -> StoreResult<Vec<Transaction>> {
        let mut q = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT ",
            transaction_columns!(),
            " FROM transactions WHERE account_id = "
        ));
        q.push_bind(id(f.account_id));
        if let Some(status) = f.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(kind) = f.kind {
            q.push(" AND type = ").push_bind(kind.as_str());
        }
        if let Some(since) = f.since {
            q.push(" AND created_at >= ").push_bind(micros_bound(since));
        }
        if let Some(until) = f.until {
            q.push(" AND created_at < ").push_bind(micros_bound(until));
        }
        if let Some(before) = f.before_seq {
            q.push(" AND seq < ").push_bind(before);
        }
        q.push(" ORDER BY seq DESC LIMIT ")
            .push_bind(i64::from(f.limit));
        q.build()
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?
            .iter()
            .map(transaction_from_row)
            .collect()
    }

    async fn get_transfer(&self, transfer_id: Uuid) -> StoreResult<Option<TransferView>> {
        // A deferred transaction: its first read fixes the WAL snapshot the second one sees too.
        let mut conn = self.pool.begin().await.map_err(classify)?;
        let Some(row) = sqlx::query(concat!(
            "SELECT ",
            transfer_columns!(),
            " FROM transfers WHERE id = ?1"
        ))
        .bind(id(transfer_id))
        .fetch_optional(&mut *conn)
        .await
        .map_err(classify)?
        else {
            return Ok(None);
        };
        let transfer = transfer_from_row(&row)?;
        let legs = sqlx::query(concat!(
            "SELECT ",
            transaction_columns!(),
            " FROM transactions WHERE transfer_id = ?1"
        ))
        .bind(id(transfer_id))
        .fetch_all(&mut *conn)
        .await
        .map_err(classify)?
        .iter()
        .map(transaction_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
        conn.commit().await.map_err(classify)?;
        rows::assemble_transfer(transfer, &legs).map(Some)
    }

    async fn balance_at(&self, account_id: Uuid, at: OffsetDateTime) -> StoreResult<i64> {
        let row = sqlx::query(
            "SELECT balance_after FROM transactions
              WHERE account_id = ?1 AND posted_at IS NOT NULL AND posted_at <= ?2
              ORDER BY posted_at DESC, posted_seq DESC LIMIT 1",
        )
        .bind(id(account_id))
        .bind(micros_bound(at))
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        match row {
            Some(r) => r.try_get::<i64, _>(0).map_err(classify),
            None => Ok(0),
        }
    }

    async fn get_idempotency(
        &self,
        scope: Uuid,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        sqlx::query(
            "SELECT api_key_id, key, request_hash, status, body, created_at
               FROM idempotency_keys WHERE api_key_id = ?1 AND key = ?2",
        )
        .bind(id(scope))
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?
        .map(|r| idempotency_from_row(&r))
        .transpose()
    }

    async fn find_api_keys(
        &self,
        secret_hashes: &[Vec<u8>],
    ) -> StoreResult<Vec<(Vec<u8>, ApiKeyRecord)>> {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT id, name, role, account_ids, created_at, revoked_at, secret_hash
               FROM api_keys WHERE revoked_at IS NULL AND secret_hash IN (",
        );
        let mut list = q.separated(", ");
        for hash in secret_hashes {
            list.push_bind(hash.as_slice());
        }
        q.push(")");
        q.build()
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?
            .iter()
            .map(|r| Ok((rows::get(r, "secret_hash")?, rows::api_key_from_row(r)?)))
            .collect()
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        sqlx::query(
            "SELECT id, name, role, account_ids, created_at, revoked_at
               FROM api_keys WHERE revoked_at IS NULL ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?
        .iter()
        .map(rows::api_key_from_row)
        .collect()
    }

    async fn list_audit_events(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        rows::audit_events(&self.pool, after_seq, limit).await
    }

    async fn verify(&self) -> StoreResult<VerifyReport> {
        verify::run(&self.pool.connect_options()).await
    }

    async fn purge_expired(&self, before: OffsetDateTime) -> StoreResult<u64> {
        // One chunk per statement, each on the writer's connection on its own: engine batches
        // take their turns between the chunks instead of waiting for the whole backlog.
        let mut deleted = 0;
        loop {
            let n = sqlx::query(
                "DELETE FROM idempotency_keys WHERE (api_key_id, key) IN (
                   SELECT api_key_id, key FROM idempotency_keys WHERE created_at < ?
                    ORDER BY created_at LIMIT ?)",
            )
            .bind(rows::micros_bound(before))
            .bind(PURGE_CHUNK)
            .execute(self.writer().await?.ready().await?)
            .await
            .map_err(classify)?
            .rows_affected();
            deleted += n;
            if n < PURGE_CHUNK.unsigned_abs() {
                return Ok(deleted);
            }
        }
    }

    fn pool_stats(&self) -> (u32, u32) {
        let writer = self.writer.try_lock().map_or((1, 0), |w| {
            (u32::from(w.conn.is_some()), usize::from(w.conn.is_some()))
        });
        let idle = self.pool.num_idle() + writer.1;
        (
            self.pool.size() + writer.0,
            u32::try_from(idle).unwrap_or(u32::MAX),
        )
    }
}

/// A write transaction on the writer's connection. Dropped without `commit`, it is rolled back
/// at once by a task that holds the connection until then (or, outside a runtime, by the
/// connection's next user: see [`Writer::ready`]), so SQLite's write lock is not kept.
struct SqliteLedgerTx {
    /// `Some` until dropped.
    writer: Option<OwnedMutexGuard<Writer>>,
    checkpointer: Arc<Checkpointer>,
}

impl SqliteLedgerTx {
    fn conn(&mut self) -> StoreResult<&mut SqliteConnection> {
        self.writer
            .as_mut()
            .and_then(|w| w.conn.as_mut())
            .ok_or_else(|| StoreError::Unavailable("the store is closed".into()))
    }
}

impl Drop for SqliteLedgerTx {
    fn drop(&mut self) {
        if let Some(mut writer) = self.writer.take()
            && writer.open
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = writer.ready().await;
            });
        }
    }
}

#[async_trait]
impl LedgerTx for SqliteLedgerTx {
    async fn idempotency_lookup(
        &mut self,
        keys: &[(Uuid, String)],
    ) -> StoreResult<Vec<IdempotencyRecord>> {
        // One JSON parameter `[["<scope>", "<key>"], …]`, joined like PostgreSQL's unnest pair.
        let pairs: Vec<(Uuid, &str)> = keys.iter().map(|(s, k)| (*s, k.as_str())).collect();
        let pairs = serde_json::to_string(&pairs)
            .map_err(|e| StoreError::Other(format!("cannot encode idempotency keys: {e}")))?;
        sqlx::query(
            "SELECT i.api_key_id, i.key, i.request_hash, i.status, i.body, i.created_at
               FROM json_each(?1) AS k
               JOIN idempotency_keys i
                 ON i.api_key_id = k.value ->> 0 AND i.key = k.value ->> 1",
        )
        .bind(pairs)
        .fetch_all(self.conn()?)
        .await
        .map_err(classify)?
        .iter()
        .map(idempotency_from_row)
        .collect()
    }

    async fn load_refs(
        &mut self,
        transaction_ids: &[Uuid],
        transfer_ids: &[Uuid],
    ) -> StoreResult<(Vec<Transaction>, Vec<Transfer>)> {
        let mut transactions: Vec<Transaction> = if transaction_ids.is_empty() {
            Vec::new()
        } else {
            sqlx::query(concat!(
                "SELECT ",
                transaction_columns!(),
                " FROM transactions WHERE id IN (SELECT value FROM json_each(?1))"
            ))
            .bind(id_list(transaction_ids)?)
            .fetch_all(self.conn()?)
            .await
            .map_err(classify)?
            .iter()
            .map(transaction_from_row)
            .collect::<StoreResult<_>>()?
        };
        let mut wanted: Vec<Uuid> = transfer_ids.to_vec();
        wanted.extend(transactions.iter().filter_map(|t| t.transfer_id));
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok((transactions, Vec::new()));
        }
        let wanted = id_list(&wanted)?;
        let transfers = sqlx::query(concat!(
            "SELECT ",
            transfer_columns!(),
            " FROM transfers WHERE id IN (SELECT value FROM json_each(?1))"
        ))
        .bind(&wanted)
        .fetch_all(self.conn()?)
        .await
        .map_err(classify)?
        .iter()
        .map(transfer_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
        let legs = sqlx::query(concat!(
            "SELECT ",
            transaction_columns!(),
            " FROM transactions
             WHERE transfer_id IS NOT NULL AND transfer_id IN (SELECT value FROM json_each(?1))"
        ))
        .bind(&wanted)
        .fetch_all(self.conn()?)
        .await
        .map_err(classify)?;
        for row in &legs {
            let leg = transaction_from_row(row)?;
            if !transactions.iter().any(|t| t.id == leg.id) {
                transactions.push(leg);
            }
        }
        Ok((transactions, transfers))
    }

    async fn lock_accounts(&mut self, ids: &[Uuid]) -> StoreResult<Vec<Account>> {
        debug_assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "lock order is ascending id"
        );
        // The transaction began IMMEDIATE and holds SQLite's write lock: no other writer can
        // change these rows before COMMIT, so a plain SELECT locks them.
        sqlx::query(concat!(
            "SELECT ",
            account_columns!(),
            " FROM accounts WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY id"
        ))
        .bind(id_list(ids)?)
        .fetch_all(self.conn()?)
        .await
        .map_err(classify)?
        .iter()
        .map(account_from_row)
        .collect()
    }

    async fn api_keys(&mut self, ids: &[Uuid], secret_hashes: &[Vec<u8>]) -> StoreResult<KeyRefs> {
        let mut keys = Vec::new();
        for row in sqlx::query(
            "SELECT id, name, role, account_ids, created_at, revoked_at, secret_hash
               FROM api_keys WHERE id IN (SELECT value FROM json_each(?1))",
        )
        .bind(id_list(ids)?)
        .fetch_all(self.conn()?)
        .await
        .map_err(classify)?
        {
            keys.push((
                api_key_from_row(&row)?,
                row.try_get("secret_hash").map_err(classify)?,
            ));
        }
        for hash in secret_hashes {
            if let Some(row) = sqlx::query(
                "SELECT id, name, role, account_ids, created_at, revoked_at, secret_hash
                   FROM api_keys WHERE secret_hash = ?1",
            )
            .bind(hash.as_slice())
            .fetch_optional(self.conn()?)
            .await
            .map_err(classify)?
            {
                keys.push((
                    api_key_from_row(&row)?,
                    row.try_get("secret_hash").map_err(classify)?,
                ));
            }
        }
        let any = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys)")
            .fetch_one(self.conn()?)
            .await
            .map_err(classify)?;
        Ok(KeyRefs { keys, any })
    }

    async fn audit_head(&mut self) -> StoreResult<Option<ChainHead>> {
        sqlx::query_as::<_, (i64, String)>(
            "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(self.conn()?)
        .await
        .map_err(classify)
        .map(|head| head.map(|(seq, hash)| ChainHead { seq, hash }))
    }

    async fn taken_account_numbers(&mut self, numbers: &[String]) -> StoreResult<Vec<String>> {
        let numbers = serde_json::to_string(numbers)
            .map_err(|e| StoreError::Other(format!("cannot encode account numbers: {e}")))?;
        sqlx::query(
            "SELECT account_number FROM accounts
              WHERE account_number IN (SELECT value FROM json_each(?1))",
        )
        .bind(numbers)
        .fetch_all(self.conn()?)
        .await
        .map_err(classify)?
        .iter()
        .map(|r| r.try_get::<String, _>(0).map_err(classify))
        .collect()
    }

    async fn write(
        &mut self,
        changes: &Changes,
        idempotency: &[IdempotencyRecord],
        audit: &[AuditEvent],
    ) -> StoreResult<()> {
        rows::write_changes(self.conn()?, changes, idempotency).await?;
        if !audit.is_empty() {
            rows::append_audit(self.conn()?, audit).await?;
        }
        Ok(())
    }

    async fn append_audit(&mut self, events: &[AuditEvent]) -> StoreResult<()> {
        rows::append_audit(self.conn()?, events).await
    }

    async fn commit(mut self: Box<Self>) -> StoreResult<()> {
        sqlx::query("COMMIT")
            .execute(self.conn()?)
            .await
            .map_err(classify)?;
        if let Some(writer) = self.writer.as_mut() {
            writer.open = false;
        }
        self.checkpointer.committed();
        Ok(())
    }
}
