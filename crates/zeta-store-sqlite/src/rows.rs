//! Encodings, row mapping and the batched writes of the ledger engine.

use serde_json::Value;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{QueryBuilder, Row, Sqlite};
use time::OffsetDateTime;
use uuid::Uuid;
use uuid::fmt::Hyphenated;
use zeta_ledger::audit::AuditEvent;
use zeta_ledger::{
    Account, AccountStatus, Changes, Currency, FailureReason, Transaction, TransactionStatus,
    TransactionType, Transfer, TransferStatus, TransferView,
};
use zeta_store::{ApiKeyRecord, IdempotencyRecord, StoreError, StoreResult};

use crate::classify;

/// Rows per multi-row statement at most. Inside a transaction, SQLite keeps the original of
/// every page a multi-row statement changes until the statement ends (its statement journal, in
/// memory: `temp_store=MEMORY`), so this bounds that memory (a 1000-transfer batch writes 2000
/// transaction rows). 256 rows of the widest row (18 columns) bind 4 608 parameters, far under
/// SQLite's limit of 32 766.
const ROWS_PER_STATEMENT: usize = 256;
const _: () = assert!(ROWS_PER_STATEMENT * 18 <= 32_766);

// ---- encodings -------------------------------------------------------------------------------

/// An id as stored: lowercase hyphenated text.
pub(crate) fn id(id: Uuid) -> Hyphenated {
    id.hyphenated()
}

/// A list of ids as one JSON array parameter (`["…", …]`), read in SQL with `json_each`.
pub(crate) fn id_list(ids: &[Uuid]) -> StoreResult<String> {
    // uuid serializes to JSON as its lowercase hyphenated text: the stored form.
    serde_json::to_string(ids).map_err(|e| StoreError::Other(format!("cannot encode ids: {e}")))
}

/// Microseconds since the Unix epoch, rounded down (the precision stored, like PostgreSQL's
/// timestamptz), as the writes store it.
pub(crate) fn micros_of(at: OffsetDateTime) -> StoreResult<i64> {
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000))
        .map_err(|_| StoreError::Other(format!("timestamp out of range: {at}")))
}

/// Like [`micros_of`], for a bound in a query: saturates, since every stored time is in range.
pub(crate) fn micros_bound(at: OffsetDateTime) -> i64 {
    let micros = at.unix_timestamp_nanos().div_euclid(1_000);
    i64::try_from(micros).unwrap_or(if micros < 0 { i64::MIN } else { i64::MAX })
}

fn time_of(micros: i64) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .map_err(|_| corrupt("timestamp", &micros.to_string()))
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Other(format!("unexpected {what} in database: {value:?}"))
}

// ---- decoding --------------------------------------------------------------------------------

pub(crate) fn get<'r, T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>>(
    row: &'r SqliteRow,
    column: &str,
) -> StoreResult<T> {
    row.try_get(column).map_err(classify)
}

fn uuid_of(column: &str, text: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(text).map_err(|_| corrupt(column, text))
}

fn get_id(row: &SqliteRow, column: &str) -> StoreResult<Uuid> {
    let text: String = get(row, column)?;
    uuid_of(column, &text)
}

fn get_opt_id(row: &SqliteRow, column: &str) -> StoreResult<Option<Uuid>> {
    get::<Option<String>>(row, column)?
        .map(|text| uuid_of(column, &text))
        .transpose()
}

fn get_time(row: &SqliteRow, column: &str) -> StoreResult<OffsetDateTime> {
    time_of(get(row, column)?)
}

fn get_opt_time(row: &SqliteRow, column: &str) -> StoreResult<Option<OffsetDateTime>> {
    get::<Option<i64>>(row, column)?.map(time_of).transpose()
}

fn currency(row: &SqliteRow) -> StoreResult<Currency> {
    let text: String = get(row, "currency")?;
    text.parse().map_err(|()| corrupt("currency", &text))
}

fn parsed<T>(row: &SqliteRow, column: &str, parse: fn(&str) -> Option<T>) -> StoreResult<T> {
    let text: String = get(row, column)?;
    parse(&text).ok_or_else(|| corrupt(column, &text))
}

pub(crate) fn account_from_row(row: &SqliteRow) -> StoreResult<Account> {
    let text: String = get(row, "metadata")?;
    let metadata = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => map,
        _ => return Err(corrupt("metadata", &text)),
    };
    Ok(Account {
        id: get_id(row, "id")?,
        account_number: get(row, "account_number")?,
        owner_name: get(row, "owner_name")?,
        currency: currency(row)?,
        balance: get(row, "balance")?,
        held: get(row, "held")?,
        status: parsed(row, "status", AccountStatus::parse)?,
        version: get(row, "version")?,
        seq: get(row, "seq")?,
        metadata,
        created_at: get_time(row, "created_at")?,
        updated_at: get_time(row, "updated_at")?,
    })
}

pub(crate) fn transaction_from_row(row: &SqliteRow) -> StoreResult<Transaction> {
    let failure: Option<String> = get(row, "failure_reason")?;
    Ok(Transaction {
        id: get_id(row, "id")?,
        account_id: get_id(row, "account_id")?,
        seq: get(row, "seq")?,
        posted_seq: get(row, "posted_seq")?,
        kind: parsed(row, "type", TransactionType::parse)?,
        amount: get(row, "amount")?,
        currency: currency(row)?,
        status: parsed(row, "status", TransactionStatus::parse)?,
        balance_after: get(row, "balance_after")?,
        transfer_id: get_opt_id(row, "transfer_id")?,
        reverses_id: get_opt_id(row, "reverses_id")?,
        reversed_by_id: get_opt_id(row, "reversed_by_id")?,
        failure_reason: failure
            .map(|f| FailureReason::parse(&f).ok_or_else(|| corrupt("failure_reason", &f)))
            .transpose()?,
        description: get(row, "description")?,
        reference: get(row, "reference")?,
        created_at: get_time(row, "created_at")?,
        posted_at: get_opt_time(row, "posted_at")?,
        updated_at: get_time(row, "updated_at")?,
    })
}

pub(crate) fn transfer_from_row(row: &SqliteRow) -> StoreResult<Transfer> {
    Ok(Transfer {
        id: get_id(row, "id")?,
        from_account_id: get_id(row, "from_account_id")?,
        to_account_id: get_id(row, "to_account_id")?,
        amount: get(row, "amount")?,
        currency: currency(row)?,
        status: parsed(row, "status", TransferStatus::parse)?,
        debit_id: get_id(row, "debit_id")?,
        credit_id: get_opt_id(row, "credit_id")?,
        reverses_id: get_opt_id(row, "reverses_id")?,
        reversed_by_id: get_opt_id(row, "reversed_by_id")?,
        description: get(row, "description")?,
        reference: get(row, "reference")?,
        created_at: get_time(row, "created_at")?,
        updated_at: get_time(row, "updated_at")?,
    })
}

pub(crate) fn assemble_transfer(
    transfer: Transfer,
    legs: &[Transaction],
) -> StoreResult<TransferView> {
    let find = |id| legs.iter().find(|t| t.id == id).cloned();
    let debit = find(transfer.debit_id)
        .ok_or_else(|| StoreError::Other(format!("transfer {} has no debit leg", transfer.id)))?;
    let credit = transfer.credit_id.and_then(find);
    Ok(TransferView {
        transfer,
        debit,
        credit,
    })
}

pub(crate) fn idempotency_from_row(row: &SqliteRow) -> StoreResult<IdempotencyRecord> {
    let status: i64 = get(row, "status")?;
    Ok(IdempotencyRecord {
        scope: get_id(row, "api_key_id")?,
        key: get(row, "key")?,
        request_hash: get(row, "request_hash")?,
        status: u16::try_from(status).map_err(|_| corrupt("status", &status.to_string()))?,
        body: get(row, "body")?,
        created_at: get_time(row, "created_at")?,
    })
}

pub(crate) fn api_key_from_row(row: &SqliteRow) -> StoreResult<ApiKeyRecord> {
    let account_ids = get::<Option<String>>(row, "account_ids")?
        .map(|text| {
            serde_json::from_str::<Vec<Uuid>>(&text).map_err(|_| corrupt("account_ids", &text))
        })
        .transpose()?;
    Ok(ApiKeyRecord {
        id: get_id(row, "id")?,
        name: get(row, "name")?,
        role: get(row, "role")?,
        account_ids,
        created_at: get_time(row, "created_at")?,
        revoked_at: get_opt_time(row, "revoked_at")?,
    })
}

/// Audit events with `seq > after_seq`, ascending, at most `limit`.
pub(crate) async fn audit_events<'e, E: sqlx::SqliteExecutor<'e>>(
    executor: E,
    after_seq: i64,
    limit: u32,
) -> StoreResult<Vec<AuditEvent>> {
    sqlx::query(
        "SELECT seq, at, actor_key_id, request_id, action, resource_type, resource_id, details,
                prev_hash, hash
           FROM audit_events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )
    .bind(after_seq)
    .bind(i64::from(limit))
    .fetch_all(executor)
    .await
    .map_err(classify)?
    .iter()
    .map(|row| {
        Ok(AuditEvent {
            seq: get(row, "seq")?,
            at: get_time(row, "at")?,
            actor_key_id: get_opt_id(row, "actor_key_id")?,
            request_id: get(row, "request_id")?,
            action: get(row, "action")?,
            resource_type: get(row, "resource_type")?,
            resource_id: get_id(row, "resource_id")?,
            details: get(row, "details")?,
            prev_hash: get(row, "prev_hash")?,
            hash: get(row, "hash")?,
        })
    })
    .collect()
}

// ---- writes ----------------------------------------------------------------------------------

fn metadata_text(metadata: &serde_json::Map<String, Value>) -> StoreResult<String> {
    serde_json::to_string(metadata)
        .map_err(|e| StoreError::Other(format!("cannot encode metadata: {e}")))
}

fn opt_micros(at: Option<OffsetDateTime>) -> StoreResult<Option<i64>> {
    at.map(micros_of).transpose()
}

/// Runs one multi-row INSERT per chunk of [`ROWS_PER_STATEMENT`] rows. The statement text depends
/// on the chunk's length, so it is not kept in the connection's statement cache.
async fn insert_chunks<T>(
    tx: &mut SqliteConnection,
    head: &'static str,
    items: &[T],
    push: impl Fn(&mut sqlx::query_builder::Separated<'_, Sqlite, &'static str>, &T),
) -> StoreResult<()> {
    for chunk in items.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(head);
        q.push_values(chunk, |mut b, item| push(&mut b, item));
        q.build()
            .persistent(false)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
    }
    Ok(())
}

/// An account row ready to bind (fallible encodings done up front).
struct AccountRow<'a> {
    a: &'a Account,
    metadata: String,
    created_at: i64,
    updated_at: i64,
}

struct TransactionRow<'a> {
    t: &'a Transaction,
    created_at: i64,
    posted_at: Option<i64>,
    updated_at: i64,
}

struct TransferRow<'a> {
    t: &'a Transfer,
    created_at: i64,
    updated_at: i64,
}

struct IdempotencyRow<'a> {
    i: &'a IdempotencyRecord,
    created_at: i64,
}

/// Writes a batch: multi-row INSERTs and JSON-array UPDATEs of accounts of at most
/// [`ROWS_PER_STATEMENT`] rows each, and one prepared UPDATE per other changed row, all inside
/// the caller's transaction.
pub(crate) async fn write_changes(
    tx: &mut SqliteConnection,
    c: &Changes,
    idempotency: &[IdempotencyRecord],
) -> StoreResult<()> {
    if !c.new_accounts.is_empty() {
        let rows = c
            .new_accounts
            .iter()
            .map(|a| {
                Ok(AccountRow {
                    a,
                    metadata: metadata_text(&a.metadata)?,
                    created_at: micros_of(a.created_at)?,
                    updated_at: micros_of(a.updated_at)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        insert_chunks(
            tx,
            "INSERT INTO accounts (id, account_number, owner_name, currency, balance, held, \
             status, version, seq, metadata, created_at, updated_at) ",
            &rows,
            |b, r| {
                b.push_bind(id(r.a.id))
                    .push_bind(r.a.account_number.as_str())
                    .push_bind(r.a.owner_name.as_str())
                    .push_bind(r.a.currency.as_str())
                    .push_bind(r.a.balance)
                    .push_bind(r.a.held)
                    .push_bind(r.a.status.as_str())
                    .push_bind(r.a.version)
                    .push_bind(r.a.seq)
                    .push_bind(r.metadata.as_str())
                    .push_bind(r.created_at)
                    .push_bind(r.updated_at);
            },
        )
        .await?;
    }
    for chunk in c.updated_accounts.chunks(ROWS_PER_STATEMENT) {
        // One statement per chunk of changed accounts: the rows as one JSON array parameter.
        let rows = chunk
            .iter()
            .map(|a| {
                Ok(serde_json::json!([
                    a.id,
                    a.owner_name,
                    a.balance,
                    a.held,
                    a.status.as_str(),
                    a.version,
                    a.seq,
                    metadata_text(&a.metadata)?,
                    micros_of(a.updated_at)?,
                ]))
            })
            .collect::<StoreResult<Vec<Value>>>()?;
        let rows = Value::Array(rows).to_string();
        sqlx::query(
            "UPDATE accounts SET owner_name = u.value ->> 1, balance = u.value ->> 2,
                    held = u.value ->> 3, version = u.value ->> 5, seq = u.value ->> 6,
                    metadata = u.value ->> 7, updated_at = u.value ->> 8
               FROM json_each(?1) AS u
              WHERE accounts.id = u.value ->> 0",
        )
        .bind(rows.as_str())
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        // `status` is indexed, and SQLite rewrites the index entry of every row whose UPDATE
        // sets an indexed column, changed or not: only rows whose status changed are set, so a
        // balance change dirties the account's table page alone.
        sqlx::query(
            "UPDATE accounts SET status = u.value ->> 4
               FROM json_each(?1) AS u
              WHERE accounts.id = u.value ->> 0 AND accounts.status <> u.value ->> 4",
        )
        .bind(rows.as_str())
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
    }
    // Transfers before their legs (the legs reference them); reversal links are updates.
    if !c.new_transfers.is_empty() {
        let rows = c
            .new_transfers
            .iter()
            .map(|t| {
                Ok(TransferRow {
                    t,
                    created_at: micros_of(t.created_at)?,
                    updated_at: micros_of(t.updated_at)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        insert_chunks(
            tx,
            "INSERT INTO transfers (id, from_account_id, to_account_id, amount, currency, \
             status, debit_id, credit_id, reverses_id, reversed_by_id, description, reference, \
             created_at, updated_at) ",
            &rows,
            |b, r| {
                b.push_bind(id(r.t.id))
                    .push_bind(id(r.t.from_account_id))
                    .push_bind(id(r.t.to_account_id))
                    .push_bind(r.t.amount)
                    .push_bind(r.t.currency.as_str())
                    .push_bind(r.t.status.as_str())
                    .push_bind(id(r.t.debit_id))
                    .push_bind(r.t.credit_id.map(id))
                    .push_bind(r.t.reverses_id.map(id))
                    .push_bind(r.t.reversed_by_id.map(id))
                    .push_bind(r.t.description.as_deref())
                    .push_bind(r.t.reference.as_deref())
                    .push_bind(r.created_at)
                    .push_bind(r.updated_at);
            },
        )
        .await?;
    }
    for t in &c.updated_transfers {
        sqlx::query(
            "UPDATE transfers SET status = ?2, reversed_by_id = ?3, updated_at = ?4 WHERE id = ?1",
        )
        .bind(id(t.id))
        .bind(t.status.as_str())
        .bind(t.reversed_by_id.map(id))
        .bind(micros_of(t.updated_at)?)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
    }
    if !c.new_transactions.is_empty() {
        let rows = c
            .new_transactions
            .iter()
            .map(|t| {
                Ok(TransactionRow {
                    t,
                    created_at: micros_of(t.created_at)?,
                    posted_at: opt_micros(t.posted_at)?,
                    updated_at: micros_of(t.updated_at)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        insert_chunks(
            tx,
            "INSERT INTO transactions (id, account_id, seq, posted_seq, type, amount, currency, \
             status, balance_after, transfer_id, reverses_id, reversed_by_id, failure_reason, \
             description, reference, created_at, posted_at, updated_at) ",
            &rows,
            |b, r| {
                b.push_bind(id(r.t.id))
                    .push_bind(id(r.t.account_id))
                    .push_bind(r.t.seq)
                    .push_bind(r.t.posted_seq)
                    .push_bind(r.t.kind.as_str())
                    .push_bind(r.t.amount)
                    .push_bind(r.t.currency.as_str())
                    .push_bind(r.t.status.as_str())
                    .push_bind(r.t.balance_after)
                    .push_bind(r.t.transfer_id.map(id))
                    .push_bind(r.t.reverses_id.map(id))
                    .push_bind(r.t.reversed_by_id.map(id))
                    .push_bind(r.t.failure_reason.map(|f| f.as_str()))
                    .push_bind(r.t.description.as_deref())
                    .push_bind(r.t.reference.as_deref())
                    .push_bind(r.created_at)
                    .push_bind(r.posted_at)
                    .push_bind(r.updated_at);
            },
        )
        .await?;
    }
    for t in &c.updated_transactions {
        sqlx::query(
            "UPDATE transactions SET status = ?2, posted_seq = ?3, balance_after = ?4,
                    reversed_by_id = ?5, failure_reason = ?6, posted_at = ?7, updated_at = ?8
              WHERE id = ?1",
        )
        .bind(id(t.id))
        .bind(t.status.as_str())
        .bind(t.posted_seq)
        .bind(t.balance_after)
        .bind(t.reversed_by_id.map(id))
        .bind(t.failure_reason.map(|f| f.as_str()))
        .bind(opt_micros(t.posted_at)?)
        .bind(micros_of(t.updated_at)?)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
    }
    for (key, hash) in &c.new_api_keys {
        sqlx::query(
            "INSERT INTO api_keys (id, name, role, account_ids, secret_hash, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(id(key.id))
        .bind(&key.name)
        .bind(&key.role)
        .bind(key.account_ids.as_deref().map(id_list).transpose()?)
        .bind(hash.as_slice())
        .bind(micros_of(key.created_at)?)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
    }
    for key in &c.revoked_api_keys {
        sqlx::query("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1")
            .bind(id(key.id))
            .bind(opt_micros(key.revoked_at)?)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
    }
    if !idempotency.is_empty() {
        let rows = idempotency
            .iter()
            .map(|i| {
                Ok(IdempotencyRow {
                    i,
                    created_at: micros_of(i.created_at)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        insert_chunks(
            tx,
            "INSERT INTO idempotency_keys (api_key_id, key, request_hash, status, body, \
             created_at) ",
            &rows,
            |b, r| {
                b.push_bind(id(r.i.scope))
                    .push_bind(r.i.key.as_str())
                    .push_bind(r.i.request_hash.as_slice())
                    // As PostgreSQL's SMALLINT column: a status beyond it is stored as 500.
                    .push_bind(i16::try_from(r.i.status).unwrap_or(500))
                    .push_bind(r.i.body.as_slice())
                    .push_bind(r.created_at);
            },
        )
        .await?;
    }
    Ok(())
}

/// Appends sealed audit events.
pub(crate) async fn append_audit(
    tx: &mut SqliteConnection,
    events: &[AuditEvent],
) -> StoreResult<()> {
    if !events.is_empty() {
        let rows = events
            .iter()
            .map(|e| Ok((e, micros_of(e.at)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        insert_chunks(
            tx,
            "INSERT INTO audit_events (seq, at, actor_key_id, request_id, action, \
             resource_type, resource_id, details, prev_hash, hash) ",
            &rows,
            |b, (e, at)| {
                b.push_bind(e.seq)
                    .push_bind(*at)
                    .push_bind(e.actor_key_id.map(id))
                    .push_bind(e.request_id.as_deref())
                    .push_bind(e.action.as_str())
                    .push_bind(e.resource_type.as_str())
                    .push_bind(id(e.resource_id))
                    .push_bind(e.details.as_str())
                    .push_bind(e.prev_hash.as_str())
                    .push_bind(e.hash.as_str());
            },
        )
        .await?;
    }
    Ok(())
}
