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
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Row};
use time::OffsetDateTime;
use uuid::Uuid;
use zeta_ledger::audit::{AuditEvent, ChainHead};
use zeta_ledger::{Account, Changes, Transaction, Transfer, TransferView};
use zeta_store::{
    AccountFilter, ApiKeyRecord, IdempotencyRecord, KeyRefs, LedgerTx, Store, StoreError,
    StoreResult, TransactionFilter, VerifyReport,
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

#[derive(Clone, Debug)]
pub struct PgStore {
    /// The primary: the ledger engine's transactions, idempotency, API keys, migrations, verify,
    /// readiness — every method that does not say otherwise.
    pool: PgPool,
    /// A streaming replica for the API's reads (accounts, listings, history, balance at an
    /// instant); `None`: those read the primary too.
    replica: Option<PgPool>,
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
    /// A lazily connecting pool: the server starts even while the database is down.
    pub fn connect(url: &str, settings: &PgSettings) -> StoreResult<Self> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| StoreError::Other(format!("bad DATABASE_URL: {e}")))?;
        let statement_timeout = settings.statement_timeout.as_millis().to_string();
        let lock_timeout = settings.lock_timeout.as_millis().to_string();
        let options = options.application_name("zeta").options([
            ("statement_timeout", statement_timeout.as_str()),
            ("lock_timeout", lock_timeout.as_str()),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            replica: None,
        })
    }

    /// Serves the API's reads (see [`Store::get_account`]) from the streaming replica at `url`,
    /// with a pool of its own (same size and timeouts, connecting lazily). Its sessions are
    /// read-only, so a write sent there by mistake fails instead of landing on the wrong server.
    pub fn with_read_replica(mut self, url: &str, settings: &PgSettings) -> StoreResult<Self> {
        let options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| {
            StoreError::Other(format!("bad ZETA_DATABASE_READ_URL: {e}"))
        })?;
        let statement_timeout = settings.statement_timeout.as_millis().to_string();
        let lock_timeout = settings.lock_timeout.as_millis().to_string();
        let options = options.application_name("zeta-reads").options([
            ("statement_timeout", statement_timeout.as_str()),
            ("lock_timeout", lock_timeout.as_str()),
            ("default_transaction_read_only", "on"),
        ]);
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

#[async_trait]
impl Store for PgStore {
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

    async fn begin(&self) -> StoreResult<Box<dyn LedgerTx>> {
        let tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ")
            .await
            .map_err(classify)?;
        Ok(Box::new(PgLedgerTx { tx, batch_id: None }))
    }

    async fn get_account(&self, id: Uuid) -> StoreResult<Option<Account>> {
        sqlx::query(concat!(
            "SELECT ",
            account_columns!(),
            " FROM accounts WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.reads())
        .await
        .map_err(classify)?
        .map(|r| account_from_row(&r))
        .transpose()
    }

    async fn list_accounts(&self, f: &AccountFilter) -> StoreResult<Vec<Account>> {
        sqlx::query(concat!(
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
        .fetch_all(self.reads())
        .await
        .map_err(classify)?
        .iter()
        .map(account_from_row)
        .collect()
    }

    async fn get_transaction(&self, id: Uuid) -> StoreResult<Option<Transaction>> {
        sqlx::query(concat!(
            "SELECT ",
            transaction_columns!(),
            " FROM transactions WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.reads())
        .await
        .map_err(classify)?
        .map(|r| transaction_from_row(&r))
        .transpose()
    }

    async fn list_transactions(&self, f: &TransactionFilter) -> StoreResult<Vec<Transaction>> {
        sqlx::query(concat!(
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
        .fetch_all(self.reads())
        .await
        .map_err(classify)?
        .iter()
        .map(transaction_from_row)
        .collect()
    }

    async fn get_transfer(&self, id: Uuid) -> StoreResult<Option<TransferView>> {
        let mut conn = self
            .reads()
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(classify)?;
        let Some(row) = sqlx::query(concat!(
            "SELECT ",
            transfer_columns!(),
            " FROM transfers WHERE id = $1"
        ))
        .bind(id)
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
            " FROM transactions WHERE transfer_id = $1"
        ))
        .bind(id)
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
              WHERE account_id = $1 AND posted_at IS NOT NULL AND posted_at <= $2
              ORDER BY posted_at DESC, posted_seq DESC LIMIT 1",
        )
        .bind(account_id)
        .bind(at)
        .fetch_optional(self.reads())
        .await
        .map_err(classify)?;
        match row {
            Some(r) => r.try_get::<i64, _>(0).map_err(classify),
            None => Ok(0),
        }
    }

    async fn get_account_fresh(&self, id: Uuid) -> StoreResult<Option<Account>> {
        sqlx::query(concat!(
            "SELECT ",
            account_columns!(),
            " FROM accounts WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?
        .map(|r| account_from_row(&r))
        .transpose()
    }

    async fn ping_replica(&self) -> Option<StoreResult<()>> {
        let replica = self.replica.as_ref()?;
        Some(
            sqlx::query("SELECT 1")
                .execute(replica)
                .await
                .map(drop)
                .map_err(classify),
        )
    }

    async fn get_idempotency(
        &self,
        scope: Uuid,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        sqlx::query(
            "SELECT api_key_id, key, request_hash, status, body, created_at
               FROM idempotency_keys WHERE api_key_id = $1 AND key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?
        .map(|r| idempotency_from_row(&r))
        .transpose()
    }

    async fn find_api_key(&self, secret_hash: &[u8]) -> StoreResult<Option<ApiKeyRecord>> {
        sqlx::query(
            "SELECT id, name, role, account_ids, created_at, revoked_at
               FROM api_keys WHERE secret_hash = $1 AND revoked_at IS NULL",
        )
        .bind(secret_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?
        .map(|r| rows::api_key_from_row(&r))
        .transpose()
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
        verify::run(&self.pool).await
    }

    async fn resolve_batch(&self, batch_id: Uuid) -> StoreResult<Option<bool>> {
        // Inserting the same key waits for an in-flight transaction that inserted it: when that
        // one committed, the insert conflicts (committed); when it rolled back or never got there,
        // this row now blocks it from ever committing (not committed).
        let inserted =
            sqlx::query("INSERT INTO ledger_commits (id) VALUES ($1) ON CONFLICT (id) DO NOTHING")
                .bind(batch_id)
                .execute(&self.pool)
                .await
                .map_err(classify)?
                .rows_affected();
        Ok(Some(inserted == 0))
    }

    async fn purge_expired(&self, before: OffsetDateTime) -> StoreResult<u64> {
        let keys = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(classify)?
            .rows_affected();
        let batches = sqlx::query("DELETE FROM ledger_commits WHERE created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(classify)?
            .rows_affected();
        Ok(keys + batches)
    }

    fn pool_stats(&self) -> (u32, u32) {
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        (self.pool.size(), idle)
    }
}

struct PgLedgerTx {
    tx: sqlx::Transaction<'static, Postgres>,
    batch_id: Option<Uuid>,
}

#[async_trait]
impl LedgerTx for PgLedgerTx {
    async fn idempotency_lookup(
        &mut self,
        keys: &[(Uuid, String)],
    ) -> StoreResult<Vec<IdempotencyRecord>> {
        let (scopes, names): (Vec<Uuid>, Vec<&str>) =
            keys.iter().map(|(s, k)| (*s, k.as_str())).unzip();
        sqlx::query(
            "SELECT i.api_key_id, i.key, i.request_hash, i.status, i.body, i.created_at
               FROM idempotency_keys i
               JOIN unnest($1::uuid[], $2::text[]) AS k(api_key_id, key)
                 ON i.api_key_id = k.api_key_id AND i.key = k.key",
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
            sqlx::query(concat!(
                "SELECT ",
                transaction_columns!(),
                " FROM transactions WHERE id = ANY($1)"
            ))
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
        let transfers = sqlx::query(concat!(
            "SELECT ",
            transfer_columns!(),
            " FROM transfers WHERE id = ANY($1)"
        ))
        .bind(&wanted)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(classify)?
        .iter()
        .map(transfer_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
        let legs = sqlx::query(concat!(
            "SELECT ",
            transaction_columns!(),
            " FROM transactions WHERE transfer_id = ANY($1)"
        ))
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
        sqlx::query(concat!(
            "SELECT ",
            account_columns!(),
            " FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE"
        ))
        .bind(ids)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(classify)?
        .iter()
        .map(account_from_row)
        .collect()
    }

    async fn api_keys(&mut self, ids: &[Uuid], secret_hashes: &[Vec<u8>]) -> StoreResult<KeyRefs> {
        let keys = sqlx::query(
            "SELECT id, name, role, account_ids, created_at, revoked_at, secret_hash
               FROM api_keys
              WHERE id = ANY($1) OR secret_hash = ANY($2)",
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
        let any = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys)")
            .fetch_one(&mut *self.tx)
            .await
            .map_err(classify)?;
        Ok(KeyRefs { keys, any })
    }

    async fn audit_head(&mut self) -> StoreResult<Option<ChainHead>> {
        sqlx::query_as::<_, (i64, String)>(
            "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(classify)
        .map(|head| head.map(|(seq, hash)| ChainHead { seq, hash }))
    }

    async fn taken_account_numbers(&mut self, numbers: &[String]) -> StoreResult<Vec<String>> {
        sqlx::query("SELECT account_number FROM accounts WHERE account_number = ANY($1)")
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
    ) -> StoreResult<()> {
        rows::write_changes(&mut self.tx, changes, idempotency, self.batch_id).await
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
