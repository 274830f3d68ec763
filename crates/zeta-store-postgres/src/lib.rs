//! PostgreSQL implementation of [`zeta_store::Store`]. All of Zeta's PostgreSQL SQL lives in this
//! crate, always with bound parameters.

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

mod rows;
mod verify;

use std::borrow::Cow;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection, PgPool, Postgres, Row};
use time::OffsetDateTime;
use uuid::Uuid;
use zeta_ledger::audit::{AuditEvent, ChainHead};
use zeta_ledger::{Account, Changes, Transaction, Transfer, TransferView};
use zeta_store::{
    AccountFilter, ApiKeyRecord, IdempotencyRecord, KeyRefs, LedgerTx, PURGE_CHUNK, Store,
    StoreError, StoreResult, TransactionFilter, VerifyReport,
};

use rows::{account_from_row, idempotency_from_row, transaction_from_row, transfer_from_row};

/// Pool and session settings.
#[derive(Clone, Debug)]
pub struct PgSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
}

impl Default for PgSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(10),
            lock_timeout: Duration::from_secs(5),
        }
    }
}

/// How Zeta reaches PostgreSQL, named by the URL parameter [`POOL_MODE_PARAM`].
///
/// `session` (the default): a direct connection, or a pooler that gives a client one server
/// connection for its whole session (PgBouncer `pool_mode = session`). Statements are prepared
/// once per connection and cached (sqlx's named statements), and the timeouts are session
/// settings sent at connect.
///
/// `transaction`: a pooler that may hand the server connection to another client after every
/// transaction (PgBouncer `pool_mode = transaction`, which before 1.21 does not carry prepared
/// statements). Every statement is then unnamed and runs inside an explicit transaction (sqlx
/// parses a statement and binds it after a second Sync; outside a transaction the pooler could
/// switch server connections in between), the timeouts are `SET LOCAL` in each transaction, no
/// startup parameter the pooler refuses is sent, and migrations run in one transaction on a
/// connection of their own. Each statement then costs a second round trip (parse, then bind),
/// and a statement outside the engine's transactions two more (BEGIN, COMMIT).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum PoolMode {
    #[default]
    Session,
    Transaction,
}

/// The `DATABASE_URL` query parameter that selects the [`PoolMode`]:
/// `postgres://…/zeta?pool-mode=transaction`. Zeta removes it before connecting.
pub const POOL_MODE_PARAM: &str = "pool-mode";

/// Removes [`POOL_MODE_PARAM`] from a PostgreSQL URL: the URL to connect to, and the mode.
pub fn split_pool_mode(url: &str) -> StoreResult<(String, PoolMode)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), PoolMode::Session));
    };
    let mut mode = PoolMode::Session;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((POOL_MODE_PARAM, value)) => {
                mode = match value {
                    "session" => PoolMode::Session,
                    "transaction" => PoolMode::Transaction,
                    other => {
                        return Err(StoreError::Other(format!(
                            "bad DATABASE_URL: {POOL_MODE_PARAM}={other:?}: use session or transaction"
                        )));
                    }
                }
            }
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, mode))
}

#[derive(Clone, Debug)]
pub struct PgStore {
    /// The primary: the ledger engine's transactions, idempotency, API keys, migrations, verify,
    /// readiness — every method that does not say otherwise.
    pool: PgPool,
    /// A streaming replica for the API's reads (accounts, listings, history, balance at an
    /// instant); `None`: those read the primary too.
    replica: Option<PgPool>,
    mode: PoolMode,
    /// `SET LOCAL` of the timeouts, run with every BEGIN (transaction pooling only).
    set_local: String,
    /// Where migrations connect (transaction pooling only: a connection of their own).
    options: PgConnectOptions,
}

/// A connection for statements outside the engine's transactions. Behind a transaction pooler
/// it is a transaction of its own, so that the server connection stays the same from an
/// unnamed statement's parse to its execution.
enum Single {
    Direct(PoolConnection<Postgres>),
    Pooled(sqlx::Transaction<'static, Postgres>),
}

impl Single {
    fn conn(&mut self) -> &mut PgConnection {
        match self {
            Self::Direct(c) => c,
            Self::Pooled(t) => t,
        }
    }

    async fn done(self) -> StoreResult<()> {
        match self {
            Self::Direct(_) => Ok(()),
            Self::Pooled(t) => t.commit().await.map_err(classify),
        }
    }
}

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "ledger", include_str!("../migrations/0001_ledger.sql")),
    (
        2,
        "ledger commits",
        include_str!("../migrations/0002_ledger_commits.sql"),
    ),
    (
        3,
        "audit events",
        include_str!("../migrations/0003_audit_events.sql"),
    ),
    (
        4,
        "drop unused transfer indexes",
        include_str!("../migrations/0004_drop_unused_transfer_indexes.sql"),
    ),
];

/// Maps a driver error to what the caller should do about it.
pub(crate) fn classify(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            match code.as_ref() {
                // serialization_failure, deadlock_detected
                "40001" | "40P01" => StoreError::Conflict(code.into_owned()),
                // A unique key that a concurrent transaction took after our snapshot: the retry's
                // pre-checks see it and answer properly.
                "23505"
                    if matches!(
                        db.constraint(),
                        Some(
                            "idempotency_keys_pkey"
                                | "accounts_account_number_key"
                                | "audit_events_pkey"
                                | "api_keys_secret_hash_key"
                        )
                    ) =>
                {
                    StoreError::Conflict(code.into_owned())
                }
                // lock_not_available, query_canceled (timeouts), shutdown, too many connections
                "55P03" | "57014" | "57P01" | "57P02" | "57P03" | "53300" => {
                    StoreError::Unavailable(code.into_owned())
                }
                c if c.starts_with("08") => StoreError::Unavailable(code.into_owned()),
                _ => StoreError::Other(format!("{code}: {}", db.message())),
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => StoreError::Unavailable(err.to_string()),
        _ => StoreError::Other(err.to_string()),
    }
}

impl PgStore {
    /// A lazily connecting pool: the server starts even while the database is down. The URL may
    /// carry [`POOL_MODE_PARAM`].
    pub fn connect(url: &str, settings: &PgSettings) -> StoreResult<Self> {
        let (url, mode) = split_pool_mode(url)?;
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| StoreError::Other(format!("bad DATABASE_URL: {e}")))?;
        let statement_timeout = settings.statement_timeout.as_millis();
        let lock_timeout = settings.lock_timeout.as_millis();
        let options = options.application_name("zeta");
        let (options, set_local) = match mode {
            PoolMode::Session => (
                options.options([
                    ("statement_timeout", statement_timeout.to_string().as_str()),
                    ("lock_timeout", lock_timeout.to_string().as_str()),
                ]),
                String::new(),
            ),
            // PgBouncer refuses startup parameters it does not track (`options`,
            // `extra_float_digits`); the timeouts are set in every transaction instead.
            PoolMode::Transaction => (
                options.extra_float_digits(None),
                format!(
                    "SET LOCAL statement_timeout = {statement_timeout}; \
                     SET LOCAL lock_timeout = {lock_timeout}"
                ),
            ),
        };
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy_with(options.clone());
        Ok(Self {
            pool,
            replica: None,
            mode,
            set_local,
            options,
        })
    }

    /// Serves the API's reads (see [`Store::get_account`]) from the streaming replica at `url`,
    /// with a pool of its own (same size, timeouts and [`PoolMode`] rules, connecting lazily).
    /// On a direct connection its sessions are also read-only, so a write sent there by mistake
    /// fails instead of landing on the wrong server (a standby refuses writes anyway).
    pub fn with_read_replica(mut self, url: &str, settings: &PgSettings) -> StoreResult<Self> {
        let (url, mode) = split_pool_mode(url)?;
        let options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| {
            StoreError::Other(format!("bad ZETA_DATABASE_READ_URL: {e}"))
        })?;
        if mode != self.mode {
            return Err(StoreError::Other(format!(
                "ZETA_DATABASE_READ_URL must use the same {POOL_MODE_PARAM} as DATABASE_URL"
            )));
        }
        let statement_timeout = settings.statement_timeout.as_millis().to_string();
        let lock_timeout = settings.lock_timeout.as_millis().to_string();
        let options = options.application_name("zeta-reads");
        let options = match mode {
            PoolMode::Session => options.options([
                ("statement_timeout", statement_timeout.as_str()),
                ("lock_timeout", lock_timeout.as_str()),
                ("default_transaction_read_only", "on"),
            ]),
            PoolMode::Transaction => options.extra_float_digits(None),
        };
        self.replica = Some(
            PgPoolOptions::new()
                .max_connections(settings.max_connections)
                .acquire_timeout(settings.acquire_timeout)
                .connect_lazy_with(options),
        );
        Ok(self)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Where the API's reads go: the replica when there is one, else the primary.
    fn reads(&self) -> &PgPool {
        self.replica.as_ref().unwrap_or(&self.pool)
    }

    pub fn pool_mode(&self) -> PoolMode {
        self.mode
    }

    /// A query with bound parameters: a cached named statement, or an unnamed one behind a
    /// transaction pooler (a named one would stay on a server connection that other clients get).
    pub(crate) fn query(&self, sql: &'static str) -> Query<'static, Postgres, PgArguments> {
        query(sql, self.mode)
    }

    /// BEGIN with `head` (e.g. `BEGIN ISOLATION LEVEL REPEATABLE READ`), and the timeouts.
    pub(crate) async fn begin_with(
        &self,
        head: &'static str,
    ) -> StoreResult<sqlx::Transaction<'static, Postgres>> {
        self.begin_on(&self.pool, head).await
    }

    async fn begin_on(
        &self,
        pool: &PgPool,
        head: &'static str,
    ) -> StoreResult<sqlx::Transaction<'static, Postgres>> {
        pool.begin_with(AssertSqlSafe(self.begin_statement(head)))
            .await
            .map_err(classify)
    }

    /// `head` (a BEGIN), then the timeouts behind a transaction pooler, which takes them with
    /// every transaction rather than from the startup options. Without a pooler it is `head`
    /// itself: the engine's BEGIN allocates nothing.
    pub(crate) fn begin_statement(&self, head: &'static str) -> Cow<'static, str> {
        if self.set_local.is_empty() {
            Cow::Borrowed(head)
        } else {
            // Integers only: the settings are numbers, not text from outside.
            Cow::Owned(format!("{head}; {}", self.set_local))
        }
    }

    /// One account by id, on the given connection.
    async fn account_on(&self, mut c: Single, id: Uuid) -> StoreResult<Option<Account>> {
        let row = self
            .query(concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(c.conn())
            .await
            .map_err(classify)?;
        c.done().await?;
        row.map(|r| account_from_row(&r)).transpose()
    }

    /// A connection to the primary for one statement.
    async fn single(&self) -> StoreResult<Single> {
        self.single_on(&self.pool).await
    }

    /// A connection for one of the API's reads: the replica when there is one.
    async fn read_single(&self) -> StoreResult<Single> {
        self.single_on(self.reads()).await
    }

    async fn single_on(&self, pool: &PgPool) -> StoreResult<Single> {
        match self.mode {
            PoolMode::Session => Ok(Single::Direct(pool.acquire().await.map_err(classify)?)),
            PoolMode::Transaction => Ok(Single::Pooled(self.begin_on(pool, "BEGIN").await?)),
        }
    }

    /// The engine's transaction. Its statements find rows by key through `unnest` or `= ANY`
    /// of array parameters, and an index is always the right way for them; but PostgreSQL
    /// caches a prepared statement's generic plan on the connection, and one made while a table
    /// was small (a seq scan and a hash join) keeps scanning the whole table on every batch once
    /// it is large — a seq scan of 100 000 accounts per batch cost about a third of the
    /// throughput. So seq scans, hash and merge joins are switched off for the transaction
    /// (`SET LOCAL`, gone at COMMIT): every plan, cached or not, finds rows through an index.
    /// The statements stay prepared (no parse or plan per batch; custom plans every time cost
    /// about 14 % of hot-account throughput, and `plan_cache_mode = force_custom_plan` would
    /// also re-plan the foreign-key checks once per inserted row).
    async fn begin_ledger(&self) -> StoreResult<PgLedgerTx> {
        let tx = self
            .begin_with(
                "BEGIN ISOLATION LEVEL REPEATABLE READ; \
                 SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; \
                 SET LOCAL enable_mergejoin = off",
            )
            .await?;
        Ok(PgLedgerTx {
            tx,
            batch_id: None,
            mode: self.mode,
        })
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
        // Advisory locks are not available on every PostgreSQL-compatible engine; migrations
        // run in one transaction each, and a concurrent duplicate run fails on the version key.
        migrator.set_locking(false);
        // A rolled-back release keeps working on a database that a newer one migrated
        // (migrations only ever add: expand first, contract in a later release).
        migrator.set_ignore_missing(true);
        migrator
    }
}

use sqlx::SqlSafeStr as _;

pub(crate) fn query(sql: &'static str, mode: PoolMode) -> Query<'static, Postgres, PgArguments> {
    sqlx::query(sql).persistent(mode == PoolMode::Session)
}

#[async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> StoreResult<()> {
        let migrate_error = |e| match e {
            sqlx::migrate::MigrateError::Execute(inner) => classify(inner),
            other => StoreError::Other(other.to_string()),
        };
        if self.mode == PoolMode::Session {
            return Self::migrator()
                .run(&self.pool)
                .await
                .map_err(migrate_error);
        }
        // sqlx's migrator uses named statements. Behind a transaction pooler it runs inside one
        // transaction (each migration in a savepoint) on a connection of its own, so the server
        // connection stays the same throughout, and its statements are deallocated before the
        // server connection goes back to the pooler.
        let mut conn = PgConnection::connect_with(&self.options)
            .await
            .map_err(classify)?;
        let mut tx = conn.begin().await.map_err(classify)?;
        tx.execute(AssertSqlSafe(self.set_local.clone()))
            .await
            .map_err(classify)?;
        // `run_direct` is `run` on a connection we hold (`run(&mut *tx)` does not type-check:
        // sqlx's Acquire is not general enough over the borrow's lifetime).
        Self::migrator()
            .run_direct(None, &mut *tx, false)
            .await
            .map_err(migrate_error)?;
        tx.execute("DEALLOCATE ALL").await.map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        conn.close().await.map_err(classify)
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut c = self.single().await?;
        self.query("SELECT 1")
            .execute(c.conn())
            .await
            .map_err(classify)?;
        c.done().await
    }

    async fn close(&self) {
        self.pool.close().await;
        if let Some(replica) = &self.replica {
            replica.close().await;
        }
    }

    async fn begin(&self) -> StoreResult<Box<dyn LedgerTx>> {
        Ok(Box::new(self.begin_ledger().await?))
    }

    async fn get_account(&self, id: Uuid) -> StoreResult<Option<Account>> {
        let c = self.read_single().await?;
        self.account_on(c, id).await
    }

    async fn get_account_fresh(&self, id: Uuid) -> StoreResult<Option<Account>> {
        let c = self.single().await?;
        self.account_on(c, id).await
    }

    async fn ping_replica(&self) -> Option<StoreResult<()>> {
        let replica = self.replica.as_ref()?;
        Some(
            async {
                let mut c = self.single_on(replica).await?;
                self.query("SELECT 1")
                    .execute(c.conn())
                    .await
                    .map_err(classify)?;
                c.done().await
            }
            .await,
        )
    }

    async fn list_accounts(&self, f: &AccountFilter) -> StoreResult<Vec<Account>> {
        let mut c = self.read_single().await?;
        let rows = self
            .query(concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE ($1::text IS NULL OR account_number = $1)
               AND ($2::text IS NULL OR status = $2)
               AND ($3::uuid[] IS NULL OR id = ANY($3))
               AND ($4::uuid IS NULL OR id > $4)
             ORDER BY id LIMIT $5"
            ))
            .bind(&f.account_number)
            .bind(f.status.map(|s| s.as_str()))
            .bind(&f.only)
            .bind(f.after)
            .bind(i64::from(f.limit))
            .fetch_all(c.conn())
            .await
            .map_err(classify)?;
        c.done().await?;
        rows.iter().map(account_from_row).collect()
    }

    async fn get_transaction(&self, id: Uuid) -> StoreResult<Option<Transaction>> {
        let mut c = self.read_single().await?;
        let row = self
            .query(concat!(
                "SELECT ",
                transaction_columns!(),
                " FROM transactions WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(c.conn())
            .await
            .map_err(classify)?;
        c.done().await?;
        row.map(|r| transaction_from_row(&r)).transpose()
    }

    async fn list_transactions(&self, f: &TransactionFilter) -> StoreResult<Vec<Transaction>> {
        let mut c = self.read_single().await?;
        let rows = self
            .query(concat!(
                "SELECT ",
                transaction_columns!(),
                " FROM transactions WHERE account_id = $1
               AND ($2::text IS NULL OR status = $2)
               AND ($3::text IS NULL OR type = $3)
               AND ($4::timestamptz IS NULL OR created_at >= $4)
               AND ($5::timestamptz IS NULL OR created_at < $5)
               AND ($6::bigint IS NULL OR seq < $6)
             ORDER BY seq DESC LIMIT $7"
            ))
            .bind(f.account_id)
            .bind(f.status.map(|s| s.as_str()))
            .bind(f.kind.map(|k| k.as_str()))
            .bind(f.since)
            .bind(f.until)
            .bind(f.before_seq)
            .bind(i64::from(f.limit))
            .fetch_all(c.conn())
            .await
            .map_err(classify)?;
        c.done().await?;
        rows.iter().map(transaction_from_row).collect()
    }

    async fn get_transfer(&self, id: Uuid) -> StoreResult<Option<TransferView>> {
        let mut tx = self
            .begin_on(
                self.reads(),
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            )
            .await?;
        let Some(row) = self
            .query(concat!(
                "SELECT ",
                transfer_columns!(),
                " FROM transfers WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?
        else {
            return Ok(None);
        };
        let transfer = transfer_from_row(&row)?;
        let legs = self
            .query(concat!(
                "SELECT ",
                transaction_columns!(),
                " FROM transactions WHERE transfer_id = $1"
            ))
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(classify)?
            .iter()
            .map(transaction_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        tx.commit().await.map_err(classify)?;
        rows::assemble_transfer(transfer, &legs).map(Some)
    }

    async fn balance_at(&self, account_id: Uuid, at: OffsetDateTime) -> StoreResult<i64> {
        let mut c = self.read_single().await?;
        let row = self
            .query(
                "SELECT balance_after FROM transactions
              WHERE account_id = $1 AND posted_at IS NOT NULL AND posted_at <= $2
              ORDER BY posted_at DESC, posted_seq DESC LIMIT 1",
            )
            .bind(account_id)
            .bind(at)
            .fetch_optional(c.conn())
            .await
            .map_err(classify)?;
        c.done().await?;
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
        let mut c = self.single().await?;
        let row = self
            .query(
                "SELECT api_key_id, key, request_hash, status, body, created_at
               FROM idempotency_keys WHERE api_key_id = $1 AND key = $2",
            )
            .bind(scope)
            .bind(key)
            .fetch_optional(c.conn())
            .await
            .map_err(classify)?;
        c.done().await?;
        row.map(|r| idempotency_from_row(&r)).transpose()
    }

    async fn find_api_keys(
        &self,
        secret_hashes: &[Vec<u8>],
    ) -> StoreResult<Vec<(Vec<u8>, ApiKeyRecord)>> {
        let mut c = self.single().await?;
        let rows = self
            .query(
                "SELECT id, name, role, account_ids, created_at, revoked_at, secret_hash
               FROM api_keys WHERE secret_hash = ANY($1) AND revoked_at IS NULL",
            )
            .bind(secret_hashes)
            .fetch_all(c.conn())
            .await
            .map_err(classify)?;
        c.done().await?;
        rows.iter()
            .map(|r| Ok((rows::get(r, "secret_hash")?, rows::api_key_from_row(r)?)))
            .collect()
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        let mut c = self.single().await?;
        let rows = self
            .query(
                "SELECT id, name, role, account_ids, created_at, revoked_at
                   FROM api_keys WHERE revoked_at IS NULL ORDER BY created_at, id",
            )
            .fetch_all(c.conn())
            .await
            .map_err(classify)?;
        c.done().await?;
        rows.iter().map(rows::api_key_from_row).collect()
    }

    async fn list_audit_events(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        let mut c = self.single().await?;
        let events = rows::audit_events(c.conn(), self.mode, after_seq, limit).await;
        c.done().await?;
        events
    }

    async fn verify(&self) -> StoreResult<VerifyReport> {
        verify::run(self).await
    }

    async fn resolve_batch(&self, batch_id: Uuid) -> StoreResult<Option<bool>> {
        // Inserting the same key waits for an in-flight transaction that inserted it: when that
        // one committed, the insert conflicts (committed); when it rolled back or never got there,
        // this row now blocks it from ever committing (not committed).
        let mut c = self.single().await?;
        let inserted = self
            .query("INSERT INTO ledger_commits (id) VALUES ($1) ON CONFLICT (id) DO NOTHING")
            .bind(batch_id)
            .execute(c.conn())
            .await
            .map_err(classify)?
            .rows_affected();
        c.done().await?;
        Ok(Some(inserted == 0))
    }

    async fn purge_expired(&self, before: OffsetDateTime) -> StoreResult<u64> {
        // Oldest first through the `created_at` indexes, one chunk per transaction. Each chunk
        // starts where the last one ended: while an older snapshot is open (a `verify`, a
        // backup) the deleted entries stay in the index, and starting from the oldest every time
        // would walk past all of them again. The scans are pinned to that index, as in the
        // engine's transactions: with statistics not yet gathered for a fresh backlog the
        // planner would read every expired row to sort them instead.
        const PURGES: [&str; 2] = [
            "WITH gone AS (
               DELETE FROM idempotency_keys WHERE (api_key_id, key) IN (
                 SELECT api_key_id, key FROM idempotency_keys
                  WHERE created_at >= COALESCE($1, '-infinity') AND created_at < $2
                  ORDER BY created_at LIMIT $3)
               RETURNING created_at)
             SELECT count(*), max(created_at) FROM gone",
            "WITH gone AS (
               DELETE FROM ledger_commits WHERE id IN (
                 SELECT id FROM ledger_commits
                  WHERE created_at >= COALESCE($1, '-infinity') AND created_at < $2
                  ORDER BY created_at LIMIT $3)
               RETURNING created_at)
             SELECT count(*), max(created_at) FROM gone",
        ];
        let mut deleted = 0;
        for sql in PURGES {
            let mut from: Option<OffsetDateTime> = None;
            loop {
                let mut tx = self
                    .begin_with(
                        "BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off",
                    )
                    .await?;
                let row = self
                    .query(sql)
                    .bind(from)
                    .bind(before)
                    .bind(PURGE_CHUNK)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(classify)?;
                tx.commit().await.map_err(classify)?;
                let n: i64 = row.try_get(0).map_err(classify)?;
                deleted += n.unsigned_abs();
                from = row.try_get(1).map_err(classify)?;
                if n < PURGE_CHUNK {
                    break;
                }
            }
        }
        Ok(deleted)
    }

    fn pool_stats(&self) -> (u32, u32) {
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        (self.pool.size(), idle)
    }
}

struct PgLedgerTx {
    tx: sqlx::Transaction<'static, Postgres>,
    batch_id: Option<Uuid>,
    mode: PoolMode,
}

#[async_trait]
impl LedgerTx for PgLedgerTx {
    async fn idempotency_lookup(
        &mut self,
        keys: &[(Uuid, String)],
    ) -> StoreResult<Vec<IdempotencyRecord>> {
        let (scopes, names): (Vec<Uuid>, Vec<&str>) =
            keys.iter().map(|(s, k)| (*s, k.as_str())).unzip();
        query(
            "SELECT i.api_key_id, i.key, i.request_hash, i.status, i.body, i.created_at
               FROM idempotency_keys i
               JOIN unnest($1::uuid[], $2::text[]) AS k(api_key_id, key)
                 ON i.api_key_id = k.api_key_id AND i.key = k.key",
            self.mode,
        )
        .bind(scopes)
        .bind(names)
        .fetch_all(&mut *self.tx)
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
            query(
                concat!(
                    "SELECT ",
                    transaction_columns!(),
                    " FROM transactions WHERE id = ANY($1)"
                ),
                self.mode,
            )
            .bind(transaction_ids)
            .fetch_all(&mut *self.tx)
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
        let transfers = query(
            concat!(
                "SELECT ",
                transfer_columns!(),
                " FROM transfers WHERE id = ANY($1)"
            ),
            self.mode,
        )
        .bind(&wanted)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(classify)?
        .iter()
        .map(transfer_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
        let legs = query(
            concat!(
                "SELECT ",
                transaction_columns!(),
                " FROM transactions WHERE transfer_id = ANY($1)"
            ),
            self.mode,
        )
        .bind(&wanted)
        .fetch_all(&mut *self.tx)
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
        query(
            concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE"
            ),
            self.mode,
        )
        .bind(ids)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(classify)?
        .iter()
        .map(account_from_row)
        .collect()
    }

    async fn api_keys(&mut self, ids: &[Uuid], secret_hashes: &[Vec<u8>]) -> StoreResult<KeyRefs> {
        let keys = query(
            "SELECT id, name, role, account_ids, created_at, revoked_at, secret_hash
               FROM api_keys
              WHERE id = ANY($1) OR secret_hash = ANY($2)",
            self.mode,
        )
        .bind(ids)
        .bind(secret_hashes)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(classify)?
        .iter()
        .map(|row| {
            Ok((
                rows::api_key_from_row(row)?,
                row.try_get("secret_hash").map_err(classify)?,
            ))
        })
        .collect::<StoreResult<Vec<_>>>()?;
        let any = query("SELECT EXISTS (SELECT 1 FROM api_keys)", self.mode)
            .fetch_one(&mut *self.tx)
            .await
            .map_err(classify)?
            .try_get::<bool, _>(0)
            .map_err(classify)?;
        Ok(KeyRefs { keys, any })
    }

    async fn audit_head(&mut self) -> StoreResult<Option<ChainHead>> {
        query(
            "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
            self.mode,
        )
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(classify)?
        .map(|row| {
            Ok(ChainHead {
                seq: row.try_get(0).map_err(classify)?,
                hash: row.try_get(1).map_err(classify)?,
            })
        })
        .transpose()
    }

    async fn taken_account_numbers(&mut self, numbers: &[String]) -> StoreResult<Vec<String>> {
        query(
            "SELECT account_number FROM accounts WHERE account_number = ANY($1)",
            self.mode,
        )
        .bind(numbers)
        .fetch_all(&mut *self.tx)
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
        rows::write_changes(
            &mut self.tx,
            changes,
            idempotency,
            audit,
            self.batch_id,
            self.mode,
        )
        .await
    }

    async fn append_audit(&mut self, events: &[AuditEvent]) -> StoreResult<()> {
        rows::append_audit(&mut self.tx, events, self.mode).await
    }

    async fn mark_batch(&mut self, batch_id: Uuid) -> StoreResult<()> {
        // Written by `write`, in the same statement as the batch's rows.
        self.batch_id = Some(batch_id);
        Ok(())
    }

    async fn commit(self: Box<Self>) -> StoreResult<()> {
        self.tx.commit().await.map_err(classify)
    }
}

#[cfg(test)]
mod tests {
    use super::{PgSettings, PgStore, PoolMode, split_pool_mode};
    use uuid::Uuid;
    use zeta_ledger::Changes;
    use zeta_store::{LedgerTx, Store};

    /// The engine's statements, prepared while `accounts` has one row (so that a generic plan
    /// is cached on the connection), still find accounts through the index once the table
    /// holds thousands, and the transaction runs at REPEATABLE READ.
    #[tokio::test]
    async fn ledger_plans_cached_on_a_small_table_use_the_index_on_a_large_one() {
        let server = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let admin = PgStore::connect(&server, &PgSettings::default()).expect("valid URL");
        let name = format!("zeta_store_test_{}", Uuid::new_v4().simple());
        let create = format!("CREATE DATABASE {name}");
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(admin.pool())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is required for this test and cannot be reached at {server}: {e}"
                )
            });
        let (base, mode) = split_pool_mode(&server).expect("valid URL");
        let (root, _) = base.rsplit_once('/').expect("a database in the URL");
        let mut url = format!("{root}/{name}");
        if mode == PoolMode::Transaction {
            url.push_str("?pool-mode=transaction");
        }
        let one = PgSettings {
            max_connections: 1,
            ..PgSettings::default()
        };
        let store = PgStore::connect(&url, &one).expect("URL");
        store.migrate().await.expect("migrate");
        let insert = |ids: &str| {
            format!(
                "INSERT INTO accounts (id, account_number, owner_name, currency, created_at,
                                       updated_at)
                 SELECT i, upper(md5(i::text)), 'x', 'USD', now(), now() FROM ({ids}) AS t(i)"
            )
        };
        let first = Uuid::new_v4();
        sqlx::query(sqlx::AssertSqlSafe(insert(&format!(
            "SELECT '{first}'::uuid"
        ))))
        .execute(store.pool())
        .await
        .expect("one account");

        // More executions than PostgreSQL's five custom plans before it caches a generic one.
        for _ in 0..8 {
            let mut ledger = store.begin_ledger().await.expect("begin");
            let isolation: String = sqlx::query_scalar("SHOW transaction_isolation")
                .persistent(false)
                .fetch_one(&mut *ledger.tx)
                .await
                .expect("SHOW");
            assert_eq!(isolation, "repeatable read");
            let accounts = ledger.lock_accounts(&[first]).await.expect("lock");
            let changes = Changes {
                updated_accounts: accounts,
                ..Changes::default()
            };
            ledger.write(&changes, &[], &[]).await.expect("write");
            ledger.tx.rollback().await.expect("rollback");
        }
        let many = "SELECT gen_random_uuid() FROM generate_series(1, 20000)";
        sqlx::query(sqlx::AssertSqlSafe(insert(many)))
            .execute(store.pool())
            .await
            .expect("many accounts");

        let mut ledger = store.begin_ledger().await.expect("begin");
        let statements: Vec<(String, i64)> = sqlx::query_as(
            "SELECT name, cardinality(parameter_types)::int8 FROM pg_prepared_statements
              WHERE statement LIKE '%FOR UPDATE%' OR statement LIKE '%UPDATE accounts AS a%'",
        )
        .persistent(false)
        .fetch_all(&mut *ledger.tx)
        .await
        .expect("statements");
        if mode == PoolMode::Session {
            assert_eq!(statements.len(), 2, "{statements:?}");
        }
        for (statement, params) in statements {
            let nulls = vec!["NULL"; usize::try_from(params).expect("count")].join(", ");
            let explain = format!("EXPLAIN EXECUTE {statement}({nulls})");
            let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
                .persistent(false)
                .fetch_all(&mut *ledger.tx)
                .await
                .expect("EXPLAIN");
            let plan = plan.join("\n");
            assert!(
                !plan.contains("Seq Scan on accounts") && plan.contains("accounts_pkey"),
                "{plan}"
            );
        }
        ledger.tx.rollback().await.expect("rollback");

        store.pool().close().await;
        let drop = format!("DROP DATABASE {name} WITH (FORCE)");
        sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(admin.pool())
            .await
            .expect("drop");
    }

    #[test]
    fn pool_mode_is_taken_off_the_url() {
        let split = |url: &str| split_pool_mode(url).expect("valid");
        assert_eq!(
            split("postgres://u@h:6432/zeta?pool-mode=transaction"),
            ("postgres://u@h:6432/zeta".into(), PoolMode::Transaction)
        );
        assert_eq!(
            split("postgres://u@h/zeta?sslmode=disable&pool-mode=transaction&application_name=x"),
            (
                "postgres://u@h/zeta?sslmode=disable&application_name=x".into(),
                PoolMode::Transaction
            )
        );
        assert_eq!(
            split("postgres://u@h/zeta?pool-mode=session"),
            ("postgres://u@h/zeta".into(), PoolMode::Session)
        );
        assert_eq!(
            split("postgres://u@h/zeta?sslmode=disable"),
            (
                "postgres://u@h/zeta?sslmode=disable".into(),
                PoolMode::Session
            )
        );
        assert_eq!(
            split("postgres://u@h/zeta"),
            ("postgres://u@h/zeta".into(), PoolMode::Session)
        );
        assert!(split_pool_mode("postgres://u@h/zeta?pool-mode=statement").is_err());
    }
}
