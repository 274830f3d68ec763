//! JSON renderings of the domain objects, exactly as API.md shows them.

use serde_json::{Value, json};
use time::OffsetDateTime;
use zeta_ledger::{Account, ApiKey, Transaction, TransferView};

pub use zeta_ledger::audit::timestamp;

fn opt_time(t: Option<OffsetDateTime>) -> Value {
    t.map_or(Value::Null, |t| Value::String(timestamp(t)))
}

pub fn account(a: &Account) -> Value {
    json!({
        "id": a.id,
        "account_number": a.account_number,
        "owner_name": a.owner_name,
        "currency": a.currency.as_str(),
        "balance": a.balance,
        "available_balance": a.available(),
        "status": a.status.as_str(),
        "version": a.version,
        "metadata": a.metadata,
        "created_at": timestamp(a.created_at),
        "updated_at": timestamp(a.updated_at),
    })
}

pub fn transaction(t: &Transaction) -> Value {
    json!({
        "id": t.id,
        "account_id": t.account_id,
        "type": t.kind.as_str(),
        "amount": t.amount,
        "currency": t.currency.as_str(),
        "status": t.status.as_str(),
        "balance_after": t.balance_after,
        "transfer_id": t.transfer_id,
        "reverses_id": t.reverses_id,
        "reversed_by_id": t.reversed_by_id,
        "failure_reason": t.failure_reason.map(|f| f.as_str()),
        "description": t.description,
        "reference": t.reference,
        "created_at": timestamp(t.created_at),
        "posted_at": opt_time(t.posted_at),
        "updated_at": timestamp(t.updated_at),
    })
}

pub fn transfer(v: &TransferView) -> Value {
    let t = &v.transfer;
    json!({
        "id": t.id,
        "from_account_id": t.from_account_id,
        "to_account_id": t.to_account_id,
        "amount": t.amount,
        "currency": t.currency.as_str(),
        "status": t.status.as_str(),
        "debit": transaction(&v.debit),
        "credit": v.credit.as_ref().map_or(Value::Null, transaction),
        "description": t.description,
        "reference": t.reference,
        "created_at": timestamp(t.created_at),
    })
}

/// An API key; `secret` only in the response that created it.
pub fn api_key(k: &ApiKey, secret: Option<&str>) -> Value {
    let mut value = json!({
        "id": k.id,
        "name": k.name,
        "role": k.role,
        "account_ids": k.account_ids,
        "created_at": timestamp(k.created_at),
    });
    if let (Some(secret), Value::Object(map)) = (secret, &mut value) {
        map.insert("key".into(), Value::String(secret.to_string()));
    }
    value
}

/// A list page.
pub fn page(data: Vec<Value>, next_cursor: Option<String>) -> Value {
    json!({ "data": data, "next_cursor": next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_microseconds_and_z() {
        let t = time::macros::datetime!(2026-11-25 16:22:00.123456 UTC);
        assert_eq!(timestamp(t), "2026-11-25T16:22:00.123456Z");
        let t = time::macros::datetime!(2026-01-02 03:04:05 +02:00);
        assert_eq!(timestamp(t), "2026-01-02T01:04:05.000000Z");
    }
}
