//! Row mapping and the batched writes of the ledger engine.

use serde_json::Value;
use sqlx::Arguments as _;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Postgres, Row};
use uuid::Uuid;
use zeta_ledger::audit::AuditEvent;
use zeta_ledger::{
    Account, AccountStatus, Changes, Currency, FailureReason, Transaction, TransactionStatus,
    TransactionType, Transfer, TransferStatus, TransferView,
};
use zeta_store::{ApiKeyRecord, IdempotencyRecord, StoreError, StoreResult};

use crate::{PoolMode, classify, query};

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Other(format!("unexpected {what} in database: {value:?}"))
}

pub(crate) fn get<'r, T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>>(
    row: &'r PgRow,
    column: &str,
) -> StoreResult<T> {
    row.try_get(column).map_err(classify)
}

fn currency(row: &PgRow) -> StoreResult<Currency> {
    let text: String = get(row, "currency")?;
    text.parse().map_err(|()| corrupt("currency", &text))
}

fn parsed<T>(row: &PgRow, column: &str, parse: fn(&str) -> Option<T>) -> StoreResult<T> {
    let text: String = get(row, column)?;
    parse(&text).ok_or_else(|| corrupt(column, &text))
}

pub(crate) fn account_from_row(row: &PgRow) -> StoreResult<Account> {
    let metadata = match get::<Value>(row, "metadata")? {
        Value::Object(map) => map,
        other => return Err(corrupt("metadata", &other.to_string())),
    };
    Ok(Account {
        id: get(row, "id")?,
        account_number: get(row, "account_number")?,
        owner_name: get(row, "owner_name")?,
        currency: currency(row)?,
        balance: get(row, "balance")?,
        held: get(row, "held")?,
        status: parsed(row, "status", AccountStatus::parse)?,
        version: get(row, "version")?,
        seq: get(row, "seq")?,
        metadata,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

pub(crate) fn transaction_from_row(row: &PgRow) -> StoreResult<Transaction> {
    let failure: Option<String> = get(row, "failure_reason")?;
    Ok(Transaction {
        id: get(row, "id")?,
        account_id: get(row, "account_id")?,
        seq: get(row, "seq")?,
        posted_seq: get(row, "posted_seq")?,
        kind: parsed(row, "type", TransactionType::parse)?,
        amount: get(row, "amount")?,
        currency: currency(row)?,
        status: parsed(row, "status", TransactionStatus::parse)?,
        balance_after: get(row, "balance_after")?,
        transfer_id: get(row, "transfer_id")?,
        reverses_id: get(row, "reverses_id")?,
        reversed_by_id: get(row, "reversed_by_id")?,
        failure_reason: failure
            .map(|f| FailureReason::parse(&f).ok_or_else(|| corrupt("failure_reason", &f)))
            .transpose()?,
        description: get(row, "description")?,
        reference: get(row, "reference")?,
        created_at: get(row, "created_at")?,
        posted_at: get(row, "posted_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

pub(crate) fn transfer_from_row(row: &PgRow) -> StoreResult<Transfer> {
    Ok(Transfer {
        id: get(row, "id")?,
        from_account_id: get(row, "from_account_id")?,
        to_account_id: get(row, "to_account_id")?,
        amount: get(row, "amount")?,
        currency: currency(row)?,
        status: parsed(row, "status", TransferStatus::parse)?,
        debit_id: get(row, "debit_id")?,
        credit_id: get(row, "credit_id")?,
        reverses_id: get(row, "reverses_id")?,
        reversed_by_id: get(row, "reversed_by_id")?,
        description: get(row, "description")?,
        reference: get(row, "reference")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
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

pub(crate) fn idempotency_from_row(row: &PgRow) -> StoreResult<IdempotencyRecord> {
    let status: i16 = get(row, "status")?;
    Ok(IdempotencyRecord {
        scope: get(row, "api_key_id")?,
        key: get(row, "key")?,
        request_hash: get(row, "request_hash")?,
        status: u16::try_from(status).map_err(|_| corrupt("status", &status.to_string()))?,
        body: get(row, "body")?,
        created_at: get(row, "created_at")?,
    })
}

pub(crate) fn api_key_from_row(row: &PgRow) -> StoreResult<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: get(row, "id")?,
        name: get(row, "name")?,
        role: get(row, "role")?,
        account_ids: get(row, "account_ids")?,
        created_at: get(row, "created_at")?,
        revoked_at: get(row, "revoked_at")?,
    })
}

/// Audit events with `seq > after_seq`, ascending, at most `limit`.
pub(crate) async fn audit_events(
    conn: &mut sqlx::PgConnection,
    mode: PoolMode,
    after_seq: i64,
    limit: u32,
) -> StoreResult<Vec<AuditEvent>> {
    query(
        "SELECT seq, at, actor_key_id, request_id, action, resource_type, resource_id, details,
                prev_hash, hash
           FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2",
        mode,
    )
    .bind(after_seq)
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await
    .map_err(classify)?
    .iter()
    .map(|row| {
        Ok(AuditEvent {
            seq: get(row, "seq")?,
            at: get(row, "at")?,
            actor_key_id: get(row, "actor_key_id")?,
            request_id: get(row, "request_id")?,
            action: get(row, "action")?,
            resource_type: get(row, "resource_type")?,
            resource_id: get(row, "resource_id")?,
            details: get(row, "details")?,
            prev_hash: get(row, "prev_hash")?,
            hash: get(row, "hash")?,
        })
    })
    .collect()
}

/// New and revoked API keys (rare: separate statements, only when there are any).
async fn write_api_keys(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    c: &Changes,
    mode: PoolMode,
) -> StoreResult<()> {
    for (key, hash) in &c.new_api_keys {
        query(
            "INSERT INTO api_keys (id, name, role, account_ids, secret_hash, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            mode,
        )
        .bind(key.id)
        .bind(&key.name)
        .bind(&key.role)
        .bind(&key.account_ids)
        .bind(hash)
        .bind(key.created_at)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
    }
    for key in &c.revoked_api_keys {
        query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1", mode)
            .bind(key.id)
            .bind(key.revoked_at)
            .execute(&mut **tx)
            .await
            .map_err(classify)?;
    }
    Ok(())
}

/// The statement of one batch's writes: a data-modifying CTE per kind of row the batch has,
/// nothing for the kinds it has not (so a batch of transfers does not plan or start the
/// inserts of accounts, idempotency keys or changed transfers). Each part's placeholders are
/// written from `$1` and renumbered as the part is added after the others. The few shapes that
/// occur are prepared once per connection like any other statement.
#[derive(Default)]
struct Ctes {
    sql: String,
    args: PgArguments,
}

type Bound = Result<(), sqlx::error::BoxDynError>;

impl Ctes {
    fn part(
        &mut self,
        name: &str,
        sql: &str,
        bind: impl FnOnce(&mut PgArguments) -> Bound,
    ) -> StoreResult<()> {
        self.sql
            .push_str(if self.sql.is_empty() { "WITH " } else { ",\n" });
        self.sql.push_str(name);
        self.sql.push_str(" AS (");
        renumber(sql, self.args.len(), &mut self.sql);
        self.sql.push(')');
        bind(&mut self.args).map_err(|e| StoreError::Other(format!("cannot bind {name}: {e}")))
    }

    async fn execute(
        self,
        tx: &mut sqlx::Transaction<'static, Postgres>,
        mode: PoolMode,
    ) -> StoreResult<()> {
        if self.sql.is_empty() {
            return Ok(());
        }
        let sql = self.sql + "\nSELECT 1";
        sqlx::query_with(sqlx::AssertSqlSafe(sql), self.args)
            .persistent(mode == PoolMode::Session)
            .execute(&mut **tx)
            .await
            .map_err(classify)?;
        Ok(())
    }
}

/// Copies `sql` to `out` with every placeholder `$n` written as `$(n + offset)`.
fn renumber(sql: &str, offset: usize, out: &mut String) {
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let n: usize = rest[..digits].parse().unwrap_or(0);
        out.push_str(&(n + offset).to_string());
        rest = &rest[digits..];
    }
    out.push_str(rest);
}

const NEW_ACCOUNTS: &str = "
    INSERT INTO accounts (id, account_number, owner_name, currency, balance, held, status,
                          version, seq, metadata, created_at, updated_at)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int8[],
                         $6::int8[], $7::text[], $8::int8[], $9::int8[], $10::jsonb[],
                         $11::timestamptz[], $12::timestamptz[])";
const CHANGED_ACCOUNTS: &str = "
    UPDATE accounts AS a SET owner_name = u.owner_name, balance = u.balance,
           held = u.held, status = u.status, version = u.version, seq = u.seq,
           metadata = u.metadata, updated_at = u.updated_at
      FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::int8[], $5::text[],
                  $6::int8[], $7::int8[], $8::jsonb[], $9::timestamptz[])
        AS u(id, owner_name, balance, held, status, version, seq, metadata, updated_at)
     WHERE a.id = u.id";
const NEW_TRANSFERS: &str = "
    INSERT INTO transfers (id, from_account_id, to_account_id, amount, currency, status,
                           debit_id, credit_id, reverses_id, reversed_by_id, description,
                           reference, created_at, updated_at)
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::int8[], $5::text[],
                         $6::text[], $7::uuid[], $8::uuid[], $9::uuid[], $10::uuid[],
                         $11::text[], $12::text[], $13::timestamptz[], $14::timestamptz[])";
const CHANGED_TRANSFERS: &str = "
    UPDATE transfers AS t SET status = u.status, reversed_by_id = u.reversed_by_id,
           updated_at = u.updated_at
      FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::timestamptz[])
        AS u(id, status, reversed_by_id, updated_at)
     WHERE t.id = u.id";
const NEW_TRANSACTIONS: &str = "
    INSERT INTO transactions (id, account_id, seq, posted_seq, type, amount, currency,
                              status, balance_after, transfer_id, reverses_id,
                              reversed_by_id, failure_reason, description, reference,
                              created_at, posted_at, updated_at)
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int8[], $4::int8[], $5::text[],
                         $6::int8[], $7::text[], $8::text[], $9::int8[], $10::uuid[],
                         $11::uuid[], $12::uuid[], $13::text[], $14::text[], $15::text[],
                         $16::timestamptz[], $17::timestamptz[], $18::timestamptz[])";
const CHANGED_TRANSACTIONS: &str = "
    UPDATE transactions AS t SET status = u.status, posted_seq = u.posted_seq,
           balance_after = u.balance_after, reversed_by_id = u.reversed_by_id,
           failure_reason = u.failure_reason, posted_at = u.posted_at,
           updated_at = u.updated_at
      FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::int8[], $5::uuid[],
                  $6::text[], $7::timestamptz[], $8::timestamptz[])
        AS u(id, status, posted_seq, balance_after, reversed_by_id, failure_reason,
             posted_at, updated_at)
     WHERE t.id = u.id";
const NEW_KEYS: &str = "
    INSERT INTO idempotency_keys (api_key_id, key, request_hash, status, body, created_at)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::int2[],
                         $5::bytea[], $6::timestamptz[])";
const MARKER: &str = "INSERT INTO ledger_commits (id) VALUES ($1::uuid)";
const AUDIT_EVENTS: &str = "
    INSERT INTO audit_events (seq, at, actor_key_id, request_id, action, resource_type,
                              resource_id, details, prev_hash, hash)
    SELECT * FROM unnest($1::int8[], $2::timestamptz[], $3::uuid[], $4::text[], $5::text[],
                         $6::text[], $7::uuid[], $8::text[], $9::text[], $10::text[])";

/// Writes a whole batch — new and changed accounts, transfers and transactions, idempotency
/// records, the batch marker and sealed audit events — in ONE statement of data-modifying
/// CTEs (see [`Ctes`]): one round trip whatever the batch size. Foreign keys are checked at
/// the end of the statement, so parents and children may arrive together.
pub(crate) async fn write_changes(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    c: &Changes,
    idempotency: &[IdempotencyRecord],
    audit: &[AuditEvent],
    batch_id: Option<Uuid>,
    mode: PoolMode,
) -> StoreResult<()> {
    let (na, ua) = (&c.new_accounts, &c.updated_accounts);
    let (nt, ut) = (&c.new_transfers, &c.updated_transfers);
    let (nx, ux) = (&c.new_transactions, &c.updated_transactions);
    let i = idempotency;
    if !c.new_api_keys.is_empty() || !c.revoked_api_keys.is_empty() {
        write_api_keys(tx, c, mode).await?;
    }
    let mut w = Ctes::default();
    if !na.is_empty() {
        w.part("new_accounts", NEW_ACCOUNTS, |a| {
            col(a, na, |x| x.id)?;
            col(a, na, |x| x.account_number.as_str())?;
            col(a, na, |x| x.owner_name.as_str())?;
            col(a, na, |x| x.currency.as_str())?;
            col(a, na, |x| x.balance)?;
            col(a, na, |x| x.held)?;
            col(a, na, |x| x.status.as_str())?;
            col(a, na, |x| x.version)?;
            col(a, na, |x| x.seq)?;
            col(a, na, |x| Value::Object(x.metadata.clone()))?;
            col(a, na, |x| x.created_at)?;
            col(a, na, |x| x.updated_at)
        })?;
    }
    if !ua.is_empty() {
        w.part("changed_accounts", CHANGED_ACCOUNTS, |a| {
            col(a, ua, |x| x.id)?;
            col(a, ua, |x| x.owner_name.as_str())?;
            col(a, ua, |x| x.balance)?;
            col(a, ua, |x| x.held)?;
            col(a, ua, |x| x.status.as_str())?;
            col(a, ua, |x| x.version)?;
            col(a, ua, |x| x.seq)?;
            col(a, ua, |x| Value::Object(x.metadata.clone()))?;
            col(a, ua, |x| x.updated_at)
        })?;
    }
    if !nt.is_empty() {
        w.part("new_transfers", NEW_TRANSFERS, |a| {
            col(a, nt, |x| x.id)?;
            col(a, nt, |x| x.from_account_id)?;
            col(a, nt, |x| x.to_account_id)?;
            col(a, nt, |x| x.amount)?;
            col(a, nt, |x| x.currency.as_str())?;
            col(a, nt, |x| x.status.as_str())?;
            col(a, nt, |x| x.debit_id)?;
            col(a, nt, |x| x.credit_id)?;
            col(a, nt, |x| x.reverses_id)?;
            col(a, nt, |x| x.reversed_by_id)?;
            col(a, nt, |x| x.description.as_deref())?;
            col(a, nt, |x| x.reference.as_deref())?;
            col(a, nt, |x| x.created_at)?;
            col(a, nt, |x| x.updated_at)
        })?;
    }
    if !ut.is_empty() {
        w.part("changed_transfers", CHANGED_TRANSFERS, |a| {
            col(a, ut, |x| x.id)?;
            col(a, ut, |x| x.status.as_str())?;
            col(a, ut, |x| x.reversed_by_id)?;
            col(a, ut, |x| x.updated_at)
        })?;
    }
    if !nx.is_empty() {
        w.part("new_transactions", NEW_TRANSACTIONS, |a| {
            col(a, nx, |x| x.id)?;
            col(a, nx, |x| x.account_id)?;
            col(a, nx, |x| x.seq)?;
            col(a, nx, |x| x.posted_seq)?;
            col(a, nx, |x| x.kind.as_str())?;
            col(a, nx, |x| x.amount)?;
            col(a, nx, |x| x.currency.as_str())?;
            col(a, nx, |x| x.status.as_str())?;
            col(a, nx, |x| x.balance_after)?;
            col(a, nx, |x| x.transfer_id)?;
            col(a, nx, |x| x.reverses_id)?;
            col(a, nx, |x| x.reversed_by_id)?;
            col(a, nx, |x| x.failure_reason.map(|f| f.as_str()))?;
            col(a, nx, |x| x.description.as_deref())?;
            col(a, nx, |x| x.reference.as_deref())?;
            col(a, nx, |x| x.created_at)?;
            col(a, nx, |x| x.posted_at)?;
            col(a, nx, |x| x.updated_at)
        })?;
    }
    if !ux.is_empty() {
        w.part("changed_transactions", CHANGED_TRANSACTIONS, |a| {
            col(a, ux, |x| x.id)?;
            col(a, ux, |x| x.status.as_str())?;
            col(a, ux, |x| x.posted_seq)?;
            col(a, ux, |x| x.balance_after)?;
            col(a, ux, |x| x.reversed_by_id)?;
            col(a, ux, |x| x.failure_reason.map(|f| f.as_str()))?;
            col(a, ux, |x| x.posted_at)?;
            col(a, ux, |x| x.updated_at)
        })?;
    }
    if !i.is_empty() {
        w.part("new_keys", NEW_KEYS, |a| {
            col(a, i, |x| x.scope)?;
            col(a, i, |x| x.key.as_str())?;
            col(a, i, |x| x.request_hash.as_slice())?;
            col(a, i, |x| i16::try_from(x.status).unwrap_or(500))?;
            col(a, i, |x| x.body.as_slice())?;
            col(a, i, |x| x.created_at)
        })?;
    }
    if let Some(id) = batch_id {
        w.part("marker", MARKER, |a| a.add(id))?;
    }
    if !audit.is_empty() {
        w.part("audit", AUDIT_EVENTS, |a| bind_audit(a, audit))?;
    }
    w.execute(tx, mode).await
}

/// Binds one column of `rows` as an array parameter.
fn col<'r, R, T>(a: &mut PgArguments, rows: &'r [R], f: impl FnMut(&'r R) -> T) -> Bound
where
    Vec<T>: sqlx::Encode<'r, Postgres> + sqlx::Type<Postgres>,
{
    a.add(rows.iter().map(f).collect::<Vec<_>>())
}

fn bind_audit(a: &mut PgArguments, e: &[AuditEvent]) -> Bound {
    col(a, e, |x| x.seq)?;
    col(a, e, |x| x.at)?;
    col(a, e, |x| x.actor_key_id)?;
    col(a, e, |x| x.request_id.as_deref())?;
    col(a, e, |x| x.action.as_str())?;
    col(a, e, |x| x.resource_type.as_str())?;
    col(a, e, |x| x.resource_id)?;
    col(a, e, |x| x.details.as_str())?;
    col(a, e, |x| x.prev_hash.as_str())?;
    col(a, e, |x| x.hash.as_str())
}

/// Appends sealed audit events in one statement (when they could not go with the batch's rows).
pub(crate) async fn append_audit(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    e: &[AuditEvent],
    mode: PoolMode,
) -> StoreResult<()> {
    let mut args = PgArguments::default();
    bind_audit(&mut args, e).map_err(|e| StoreError::Other(format!("cannot bind audit: {e}")))?;
    sqlx::query_with(AUDIT_EVENTS, args)
        .persistent(mode == PoolMode::Session)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::renumber;

    #[test]
    fn placeholders_are_renumbered_after_the_earlier_parts() {
        let mut out = String::new();
        renumber("unnest($1::uuid[], $2::text[]) WHERE x = $10", 12, &mut out);
        assert_eq!(out, "unnest($13::uuid[], $14::text[]) WHERE x = $22");
        let mut same = String::new();
        renumber("VALUES ($1::uuid)", 0, &mut same);
        assert_eq!(same, "VALUES ($1::uuid)");
    }
}
