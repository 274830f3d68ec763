//! Row mapping and the batched writes of the ledger engine.

use serde_json::Value;
use sqlx::postgres::PgRow;
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

/// Writes a whole batch — new and changed accounts, transfers and transactions, idempotency
/// records and the batch marker — in ONE statement of data-modifying CTEs: one round trip
/// whatever the batch size. Empty arrays make their part a no-op. Foreign keys are checked at
/// the end of the statement, so parents and children may arrive together.
pub(crate) async fn write_changes(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    c: &Changes,
    idempotency: &[IdempotencyRecord],
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
    query(
        "WITH
         new_accounts AS (
           INSERT INTO accounts (id, account_number, owner_name, currency, balance, held, status,
                                 version, seq, metadata, created_at, updated_at)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int8[],
                                $6::int8[], $7::text[], $8::int8[], $9::int8[], $10::jsonb[],
                                $11::timestamptz[], $12::timestamptz[])),
         changed_accounts AS (
           UPDATE accounts AS a SET owner_name = u.owner_name, balance = u.balance,
                  held = u.held, status = u.status, version = u.version, seq = u.seq,
                  metadata = u.metadata, updated_at = u.updated_at
             FROM unnest($13::uuid[], $14::text[], $15::int8[], $16::int8[], $17::text[],
                         $18::int8[], $19::int8[], $20::jsonb[], $21::timestamptz[])
               AS u(id, owner_name, balance, held, status, version, seq, metadata, updated_at)
            WHERE a.id = u.id),
         new_transfers AS (
           INSERT INTO transfers (id, from_account_id, to_account_id, amount, currency, status,
                                  debit_id, credit_id, reverses_id, reversed_by_id, description,
                                  reference, created_at, updated_at)
           SELECT * FROM unnest($22::uuid[], $23::uuid[], $24::uuid[], $25::int8[], $26::text[],
                                $27::text[], $28::uuid[], $29::uuid[], $30::uuid[], $31::uuid[],
                                $32::text[], $33::text[], $34::timestamptz[], $35::timestamptz[])),
         changed_transfers AS (
           UPDATE transfers AS t SET status = u.status, reversed_by_id = u.reversed_by_id,
                  updated_at = u.updated_at
             FROM unnest($36::uuid[], $37::text[], $38::uuid[], $39::timestamptz[])
               AS u(id, status, reversed_by_id, updated_at)
            WHERE t.id = u.id),
         new_transactions AS (
           INSERT INTO transactions (id, account_id, seq, posted_seq, type, amount, currency,
                                     status, balance_after, transfer_id, reverses_id,
                                     reversed_by_id, failure_reason, description, reference,
                                     created_at, posted_at, updated_at)
           SELECT * FROM unnest($40::uuid[], $41::uuid[], $42::int8[], $43::int8[], $44::text[],
                                $45::int8[], $46::text[], $47::text[], $48::int8[], $49::uuid[],
                                $50::uuid[], $51::uuid[], $52::text[], $53::text[], $54::text[],
                                $55::timestamptz[], $56::timestamptz[], $57::timestamptz[])),
         changed_transactions AS (
           UPDATE transactions AS t SET status = u.status, posted_seq = u.posted_seq,
                  balance_after = u.balance_after, reversed_by_id = u.reversed_by_id,
                  failure_reason = u.failure_reason, posted_at = u.posted_at,
                  updated_at = u.updated_at
             FROM unnest($58::uuid[], $59::text[], $60::int8[], $61::int8[], $62::uuid[],
                         $63::text[], $64::timestamptz[], $65::timestamptz[])
               AS u(id, status, posted_seq, balance_after, reversed_by_id, failure_reason,
                    posted_at, updated_at)
            WHERE t.id = u.id),
         new_keys AS (
           INSERT INTO idempotency_keys (api_key_id, key, request_hash, status, body, created_at)
           SELECT * FROM unnest($66::uuid[], $67::text[], $68::bytea[], $69::int2[],
                                $70::bytea[], $71::timestamptz[])),
         marker AS (
           INSERT INTO ledger_commits (id) SELECT $72::uuid WHERE $72::uuid IS NOT NULL)
         SELECT 1",
        mode,
    )
    // new accounts
    .bind(na.iter().map(|x| x.id).collect::<Vec<_>>())
    .bind(
        na.iter()
            .map(|x| x.account_number.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(na.iter().map(|x| x.owner_name.as_str()).collect::<Vec<_>>())
    .bind(na.iter().map(|x| x.currency.as_str()).collect::<Vec<_>>())
    .bind(na.iter().map(|x| x.balance).collect::<Vec<_>>())
    .bind(na.iter().map(|x| x.held).collect::<Vec<_>>())
    .bind(na.iter().map(|x| x.status.as_str()).collect::<Vec<_>>())
    .bind(na.iter().map(|x| x.version).collect::<Vec<_>>())
    .bind(na.iter().map(|x| x.seq).collect::<Vec<_>>())
    .bind(
        na.iter()
            .map(|x| Value::Object(x.metadata.clone()))
            .collect::<Vec<_>>(),
    )
    .bind(na.iter().map(|x| x.created_at).collect::<Vec<_>>())
    .bind(na.iter().map(|x| x.updated_at).collect::<Vec<_>>())
    // changed accounts
    .bind(ua.iter().map(|x| x.id).collect::<Vec<_>>())
    .bind(ua.iter().map(|x| x.owner_name.as_str()).collect::<Vec<_>>())
    .bind(ua.iter().map(|x| x.balance).collect::<Vec<_>>())
    .bind(ua.iter().map(|x| x.held).collect::<Vec<_>>())
    .bind(ua.iter().map(|x| x.status.as_str()).collect::<Vec<_>>())
    .bind(ua.iter().map(|x| x.version).collect::<Vec<_>>())
    .bind(ua.iter().map(|x| x.seq).collect::<Vec<_>>())
    .bind(
        ua.iter()
            .map(|x| Value::Object(x.metadata.clone()))
            .collect::<Vec<_>>(),
    )
    .bind(ua.iter().map(|x| x.updated_at).collect::<Vec<_>>())
    // new transfers
    .bind(nt.iter().map(|x| x.id).collect::<Vec<_>>())
    .bind(nt.iter().map(|x| x.from_account_id).collect::<Vec<_>>())
    .bind(nt.iter().map(|x| x.to_account_id).collect::<Vec<_>>())
    .bind(nt.iter().map(|x| x.amount).collect::<Vec<_>>())
    .bind(nt.iter().map(|x| x.currency.as_str()).collect::<Vec<_>>())
    .bind(nt.iter().map(|x| x.status.as_str()).collect::<Vec<_>>())
    .bind(nt.iter().map(|x| x.debit_id).collect::<Vec<_>>())
    .bind(nt.iter().map(|x| x.credit_id).collect::<Vec<_>>())
    .bind(nt.iter().map(|x| x.reverses_id).collect::<Vec<_>>())
    .bind(nt.iter().map(|x| x.reversed_by_id).collect::<Vec<_>>())
    .bind(
        nt.iter()
            .map(|x| x.description.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        nt.iter()
            .map(|x| x.reference.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(nt.iter().map(|x| x.created_at).collect::<Vec<_>>())
    .bind(nt.iter().map(|x| x.updated_at).collect::<Vec<_>>())
    // changed transfers
    .bind(ut.iter().map(|x| x.id).collect::<Vec<_>>())
    .bind(ut.iter().map(|x| x.status.as_str()).collect::<Vec<_>>())
    .bind(ut.iter().map(|x| x.reversed_by_id).collect::<Vec<_>>())
    .bind(ut.iter().map(|x| x.updated_at).collect::<Vec<_>>())
    // new transactions
    .bind(nx.iter().map(|x| x.id).collect::<Vec<_>>())
    .bind(nx.iter().map(|x| x.account_id).collect::<Vec<_>>())
    .bind(nx.iter().map(|x| x.seq).collect::<Vec<_>>())
    .bind(nx.iter().map(|x| x.posted_seq).collect::<Vec<_>>())
    .bind(nx.iter().map(|x| x.kind.as_str()).collect::<Vec<_>>())
    .bind(nx.iter().map(|x| x.amount).collect::<Vec<_>>())
    .bind(nx.iter().map(|x| x.currency.as_str()).collect::<Vec<_>>())
    .bind(nx.iter().map(|x| x.status.as_str()).collect::<Vec<_>>())
    .bind(nx.iter().map(|x| x.balance_after).collect::<Vec<_>>())
    .bind(nx.iter().map(|x| x.transfer_id).collect::<Vec<_>>())
    .bind(nx.iter().map(|x| x.reverses_id).collect::<Vec<_>>())
    .bind(nx.iter().map(|x| x.reversed_by_id).collect::<Vec<_>>())
    .bind(
        nx.iter()
            .map(|x| x.failure_reason.map(|f| f.as_str()))
            .collect::<Vec<_>>(),
    )
    .bind(
        nx.iter()
            .map(|x| x.description.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        nx.iter()
            .map(|x| x.reference.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(nx.iter().map(|x| x.created_at).collect::<Vec<_>>())
    .bind(nx.iter().map(|x| x.posted_at).collect::<Vec<_>>())
    .bind(nx.iter().map(|x| x.updated_at).collect::<Vec<_>>())
    // changed transactions
    .bind(ux.iter().map(|x| x.id).collect::<Vec<_>>())
    .bind(ux.iter().map(|x| x.status.as_str()).collect::<Vec<_>>())
    .bind(ux.iter().map(|x| x.posted_seq).collect::<Vec<_>>())
    .bind(ux.iter().map(|x| x.balance_after).collect::<Vec<_>>())
    .bind(ux.iter().map(|x| x.reversed_by_id).collect::<Vec<_>>())
    .bind(
        ux.iter()
            .map(|x| x.failure_reason.map(|f| f.as_str()))
            .collect::<Vec<_>>(),
    )
    .bind(ux.iter().map(|x| x.posted_at).collect::<Vec<_>>())
    .bind(ux.iter().map(|x| x.updated_at).collect::<Vec<_>>())
    // idempotency records
    .bind(i.iter().map(|x| x.scope).collect::<Vec<_>>())
    .bind(i.iter().map(|x| x.key.as_str()).collect::<Vec<_>>())
    .bind(
        i.iter()
            .map(|x| x.request_hash.as_slice())
            .collect::<Vec<_>>(),
    )
    .bind(
        i.iter()
            .map(|x| i16::try_from(x.status).unwrap_or(500))
            .collect::<Vec<_>>(),
    )
    .bind(i.iter().map(|x| x.body.as_slice()).collect::<Vec<_>>())
    .bind(i.iter().map(|x| x.created_at).collect::<Vec<_>>())
    .bind(batch_id)
    .execute(&mut **tx)
    .await
    .map_err(classify)?;
    Ok(())
}

/// Appends sealed audit events in one statement.
pub(crate) async fn append_audit(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    e: &[AuditEvent],
    mode: PoolMode,
) -> StoreResult<()> {
    query(
        "INSERT INTO audit_events (seq, at, actor_key_id, request_id, action, resource_type,
                                   resource_id, details, prev_hash, hash)
         SELECT * FROM unnest($1::int8[], $2::timestamptz[], $3::uuid[], $4::text[], $5::text[],
                              $6::text[], $7::uuid[], $8::text[], $9::text[], $10::text[])",
        mode,
    )
    .bind(e.iter().map(|x| x.seq).collect::<Vec<_>>())
    .bind(e.iter().map(|x| x.at).collect::<Vec<_>>())
    .bind(e.iter().map(|x| x.actor_key_id).collect::<Vec<_>>())
    .bind(
        e.iter()
            .map(|x| x.request_id.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(e.iter().map(|x| x.action.as_str()).collect::<Vec<_>>())
    .bind(
        e.iter()
            .map(|x| x.resource_type.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(e.iter().map(|x| x.resource_id).collect::<Vec<_>>())
    .bind(e.iter().map(|x| x.details.as_str()).collect::<Vec<_>>())
    .bind(e.iter().map(|x| x.prev_hash.as_str()).collect::<Vec<_>>())
    .bind(e.iter().map(|x| x.hash.as_str()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await
    .map_err(classify)?;
    Ok(())
}
