//! The audit log: one event per state change, chained by SHA-256 so that any edit, insertion or
//! deletion of a stored event is detectable.
//!
//! `hash` = lowercase hex SHA-256 of `prev_hash` + `"\n"` + the RFC 8785 canonical JSON of the
//! event's other fields (`seq`, `at`, `actor_key_id`, `request_id`, `action`, `resource_type`,
//! `resource_id`, `details`), integers written exactly in decimal. The first event's `prev_hash`
//! is 64 zeros.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::macros::format_description;
use uuid::Uuid;

use crate::command::{Command, Envelope};
use crate::error::LedgerError;
use crate::model::{ApiKey, Transaction, TransferView};
use crate::posting::{Effect, ItemResult, Outcome};

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// RFC 3339 UTC with microseconds, e.g. `2026-11-25T16:22:00.123456Z`: how every instant is shown
/// (and hashed).
pub fn timestamp(t: OffsetDateTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    t.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

/// An event before it has a place in the chain.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditDraft {
    pub action: &'static str,
    pub resource_type: &'static str,
    pub resource_id: Uuid,
    pub details: Value,
}

/// A chained event, as stored and shown.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    pub seq: i64,
    pub at: OffsetDateTime,
    pub actor_key_id: Option<Uuid>,
    pub request_id: Option<String>,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Uuid,
    /// The details object as RFC 8785 canonical JSON text: hashed, stored and shown as is.
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The last event of the chain: where the next one attaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: i64,
    pub hash: String,
}

impl ChainHead {
    /// The head of an empty chain.
    pub fn genesis() -> Self {
        Self {
            seq: 0,
            hash: GENESIS_HASH.to_string(),
        }
    }
}

impl AuditEvent {
    /// The RFC 8785 canonical JSON of the hashed fields (every field but `prev_hash` and
    /// `hash`): members in code-unit order, `details` inserted as the canonical text it is.
    fn canonical_body(&self) -> String {
        let mut out = String::with_capacity(320 + self.details.len());
        out.push_str("{\"action\":");
        write_string(&self.action, &mut out);
        out.push_str(",\"actor_key_id\":");
        match self.actor_key_id {
            Some(id) => write_string(&id.to_string(), &mut out),
            None => out.push_str("null"),
        }
        out.push_str(",\"at\":");
        write_string(&timestamp(self.at), &mut out);
        out.push_str(",\"details\":");
        out.push_str(&self.details);
        out.push_str(",\"request_id\":");
        match &self.request_id {
            Some(id) => write_string(id, &mut out),
            None => out.push_str("null"),
        }
        out.push_str(",\"resource_id\":");
        write_string(&self.resource_id.to_string(), &mut out);
        out.push_str(",\"resource_type\":");
        write_string(&self.resource_type, &mut out);
        out.push_str(",\"seq\":");
        out.push_str(&self.seq.to_string());
        out.push('}');
        out
    }

    /// The hash this event must carry, given its `prev_hash`.
    pub fn expected_hash(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.prev_hash.as_bytes());
        hasher.update(b"\n");
        hasher.update(self.canonical_body().as_bytes());
        hex::encode(hasher.finalize())
    }

    /// The event as the API shows it (details that are not JSON, which only an edit of the
    /// stored row can make, are shown as a string).
    pub fn to_json(&self) -> Value {
        json!({
            "seq": self.seq,
            "at": timestamp(self.at),
            "actor_key_id": self.actor_key_id,
            "request_id": self.request_id,
            "action": self.action,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "details": serde_json::from_str::<Value>(&self.details)
                .unwrap_or_else(|_| Value::String(self.details.clone())),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        })
    }
}

/// Appends `drafts` to the chain after `head`, all made at `at` by `actor`; moves `head`.
pub fn seal(
    head: &mut ChainHead,
    at: OffsetDateTime,
    actor: Option<&crate::command::Actor>,
    drafts: Vec<AuditDraft>,
    out: &mut Vec<AuditEvent>,
) {
    for draft in drafts {
        let mut event = AuditEvent {
            seq: head.seq + 1,
            at,
            actor_key_id: actor.map(|a| a.key_id),
            request_id: actor.map(|a| a.request_id.clone()),
            action: draft.action.to_string(),
            resource_type: draft.resource_type.to_string(),
            resource_id: draft.resource_id,
            details: canonical_json(&draft.details),
            prev_hash: head.hash.clone(),
            hash: String::new(),
        };
        event.hash = event.expected_hash();
        head.seq = event.seq;
        head.hash.clone_from(&event.hash);
        out.push(event);
    }
}

/// Checks a stretch of the chain read in `seq` order, starting after `head` (genesis for the
/// whole chain). Returns the first broken link as a sentence naming its `seq`.
pub fn check_chain<'a>(
    head: &ChainHead,
    events: impl IntoIterator<Item = &'a AuditEvent>,
) -> Result<ChainHead, String> {
    let mut head = head.clone();
    for event in events {
        if event.seq != head.seq + 1 {
            return Err(format!(
                "audit event seq {}: expected seq {} next (an event is missing or was inserted)",
                event.seq,
                head.seq + 1
            ));
        }
        if event.prev_hash != head.hash {
            return Err(format!(
                "audit event seq {}: prev_hash does not match the hash of seq {}",
                event.seq, head.seq
            ));
        }
        if event.hash != event.expected_hash() {
            return Err(format!(
                "audit event seq {}: hash does not match its contents (the event was altered)",
                event.seq
            ));
        }
        head = ChainHead {
            seq: event.seq,
            hash: event.hash.clone(),
        };
    }
    Ok(head)
}

/// The events one applied command produces: every state change, recorded declines included.
/// Refusals that recorded nothing produce none.
pub fn events_for(envelope: &Envelope, outcome: &Outcome) -> Vec<AuditDraft> {
    let command = &envelope.command;
    let mut out = Vec::new();
    match outcome {
        Ok(Effect::Account(a)) => match command {
            Command::CreateAccount(_) => out.push(AuditDraft {
                action: "account.create",
                resource_type: "account",
                resource_id: a.id,
                details: json!({
                    "account_number": a.account_number,
                    "owner_name": a.owner_name,
                    "currency": a.currency.as_str(),
                    "metadata": a.metadata,
                }),
            }),
            Command::UpdateAccount { patch, .. } => {
                let mut changes = Map::new();
                if let Some(name) = &patch.owner_name {
                    changes.insert("owner_name".into(), json!(name));
                }
                if let Some(status) = patch.status {
                    changes.insert("status".into(), json!(status.as_str()));
                }
                if let Some(metadata) = &patch.metadata {
                    changes.insert("metadata".into(), Value::Object(metadata.clone()));
                }
                out.push(AuditDraft {
                    action: "account.update",
                    resource_type: "account",
                    resource_id: a.id,
                    details: json!({"changes": changes, "version": a.version}),
                });
            }
            _ => {}
        },
        Ok(Effect::Transaction(t)) => {
            let action = match command {
                Command::Credit { .. } => "transaction.credit",
                Command::Debit { hold: true, .. } => "transaction.hold",
                Command::Debit { .. } => "transaction.debit",
                Command::Capture { .. } => "transaction.capture",
                Command::Void { .. } => "transaction.void",
                Command::ReverseTransaction { .. } => "transaction.reverse",
                _ => return out,
            };
            out.push(transaction_event(action, t));
        }
        // Reversing a leg reverses its transfer: the same event as reversing the transfer.
        // (A compensating transfer always names the one it reverses.)
        Ok(Effect::LegReversal { reversal, .. }) => {
            if let Some(original) = reversal.transfer.reverses_id {
                out.push(transfer_reversal_event(original, reversal));
            }
        }
        Ok(Effect::Transfer(view)) => match command {
            Command::Transfer(_) => out.push(transfer_event("transfer.create", view)),
            Command::ReverseTransfer { transfer_id, .. } => {
                out.push(transfer_reversal_event(*transfer_id, view));
            }
            _ => {}
        },
        Ok(Effect::Batch(results)) => {
            if let Command::TransferBatch { items, .. } = command {
                for (item, result) in items.iter().zip(results) {
                    match (item, result) {
                        (_, ItemResult::Done(view)) => {
                            out.push(transfer_event("transfer.create", view));
                        }
                        (crate::command::BatchItem::Valid(spec), ItemResult::Failed(e)) => {
                            if let Some(draft) = declined_transfer(spec, e) {
                                out.push(draft);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(Effect::ApiKey(key)) => match command {
            Command::CreateApiKey(new) if new.id == key.id => {
                out.push(key_event("api_key.create", key))
            }
            Command::RevokeApiKey { .. } => out.push(key_event("api_key.revoke", key)),
            _ => {}
        },
        Err(
            e @ LedgerError::InsufficientFunds {
                transaction_id,
                amount,
                ..
            },
        ) => match command {
            Command::Transfer(spec) => out.extend(declined_transfer(spec, e)),
            Command::Debit {
                account_id, hold, ..
            } => {
                if let Some(id) = transaction_id {
                    out.push(AuditDraft {
                        action: if *hold {
                            "transaction.hold"
                        } else {
                            "transaction.debit"
                        },
                        resource_type: "transaction",
                        resource_id: *id,
                        details: json!({
                            "account_id": account_id,
                            "amount": amount,
                            "status": "failed",
                            "failure_reason": "insufficient_funds",
                        }),
                    });
                }
            }
            _ => {}
        },
        Err(_) => {}
    }
    out
}

fn transaction_event(action: &'static str, t: &Transaction) -> AuditDraft {
    AuditDraft {
        action,
        resource_type: "transaction",
        resource_id: t.id,
        details: json!({
            "account_id": t.account_id,
            "amount": t.amount,
            "currency": t.currency.as_str(),
            "status": t.status.as_str(),
            "balance_after": t.balance_after,
            "reverses_id": t.reverses_id,
        }),
    }
}

fn transfer_event(action: &'static str, view: &TransferView) -> AuditDraft {
    let t = &view.transfer;
    AuditDraft {
        action,
        resource_type: "transfer",
        resource_id: t.id,
        details: json!({
            "from_account_id": t.from_account_id,
            "to_account_id": t.to_account_id,
            "amount": t.amount,
            "currency": t.currency.as_str(),
            "status": t.status.as_str(),
            "failure_reason": view.debit.failure_reason.map(|f| f.as_str()),
        }),
    }
}

/// `transfer.reverse`, on the reversed transfer (`original`), naming the compensating one.
fn transfer_reversal_event(original: Uuid, reversal: &TransferView) -> AuditDraft {
    let mut event = transfer_event("transfer.reverse", reversal);
    event.resource_id = original;
    if let Value::Object(details) = &mut event.details {
        details.insert("reversal_transfer_id".into(), json!(reversal.transfer.id));
    }
    event
}

/// A transfer declined for lack of funds is recorded (as a failed transfer): its event.
fn declined_transfer(spec: &crate::command::TransferSpec, e: &LedgerError) -> Option<AuditDraft> {
    let LedgerError::InsufficientFunds {
        transfer_id: Some(id),
        amount,
        ..
    } = e
    else {
        return None;
    };
    Some(AuditDraft {
        action: "transfer.create",
        resource_type: "transfer",
        resource_id: *id,
        details: json!({
            "from_account_id": spec.from_account_id,
            "to_account_id": spec.to_account_id,
            "amount": amount,
            "status": "failed",
            "failure_reason": "insufficient_funds",
        }),
    })
}

fn key_event(action: &'static str, key: &ApiKey) -> AuditDraft {
    AuditDraft {
        action,
        resource_type: "api_key",
        resource_id: key.id,
        details: json!({
            "name": key.name,
            "role": key.role,
            "account_ids": key.account_ids,
        }),
    }
}

/// RFC 8785 (JSON Canonicalization Scheme): object members sorted by their UTF-16 code units, no
/// whitespace, minimal string escapes, numbers as ECMAScript prints them — except that integers
/// are written exactly in decimal.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

/// [`canonical_json`], appended to `out`.
pub fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else if let Some(f) = n.as_f64() {
                let mut buffer = ryu_js::Buffer::new();
                out.push_str(buffer.format(f));
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_follows_rfc_8785() {
        // Sorting by UTF-16 code units: "\u{e9}" (0x00e9) sorts before "\u{1f600}" (0xd83d ...)
        // and after "z"; integers exact; floats as ECMAScript prints them.
        let value: Value = serde_json::from_str(
            r#"{"z": 1, "a": [true, null, "x\n\u0001\"\\"], "é": 9007199254740993,
                "\ud83d\ude00": 1e21, "f": 0.000001, "g": 1.5e-7, "n": -0.0, "o": {}}"#,
        )
        .unwrap();
        assert_eq!(
            canonical_json(&value),
            "{\"a\":[true,null,\"x\\n\\u0001\\\"\\\\\"],\"f\":0.000001,\"g\":1.5e-7,\"n\":0,\
             \"o\":{},\"z\":1,\"é\":9007199254740993,\"😀\":1e+21}"
        );
    }

    fn event(seq: i64) -> AuditDraft {
        AuditDraft {
            action: "account.create",
            resource_type: "account",
            resource_id: Uuid::from_u128(seq as u128),
            details: json!({"owner_name": format!("owner {seq}")}),
        }
    }

    #[test]
    fn a_sealed_chain_checks_and_any_change_breaks_it() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let mut head = ChainHead::genesis();
        let mut events = Vec::new();
        seal(
            &mut head,
            at,
            None,
            (1..=4).map(event).collect(),
            &mut events,
        );
        assert_eq!(events[0].prev_hash, GENESIS_HASH);
        assert_eq!(events[1].prev_hash, events[0].hash);
        assert_eq!(head.seq, 4);
        assert_eq!(
            check_chain(&ChainHead::genesis(), &events),
            Ok(head.clone())
        );

        // The documented formula, spelled out.
        let first = &events[0];
        let text = format!(
            "{GENESIS_HASH}\n{{\"action\":\"account.create\",\"actor_key_id\":null,\
             \"at\":\"2023-11-14T22:13:20.000000Z\",\"details\":{{\"owner_name\":\"owner 1\"}},\
             \"request_id\":null,\"resource_id\":\"{}\",\"resource_type\":\"account\",\"seq\":1}}",
            Uuid::from_u128(1)
        );
        assert_eq!(first.hash, hex::encode(Sha256::digest(text.as_bytes())));
        // The hand-written body is exactly the canonical JSON of the fields as an object.
        let mut as_object = first.to_json();
        let object = as_object.as_object_mut().unwrap();
        object.remove("prev_hash");
        object.remove("hash");
        assert_eq!(first.canonical_body(), canonical_json(&as_object));

        let mut altered = events.clone();
        altered[2].details = r#"{"owner_name":"mallory"}"#.into();
        assert_eq!(
            check_chain(&ChainHead::genesis(), &altered),
            Err(
                "audit event seq 3: hash does not match its contents (the event was altered)"
                    .into()
            )
        );
        let mut deleted = events.clone();
        deleted.remove(1);
        assert_eq!(
            check_chain(&ChainHead::genesis(), &deleted),
            Err(
                "audit event seq 3: expected seq 2 next (an event is missing or was inserted)"
                    .into()
            )
        );
        let mut rehashed = events.clone();
        rehashed[1].details = r#"{"owner_name":"mallory"}"#.into();
        rehashed[1].hash = rehashed[1].expected_hash();
        assert_eq!(
            check_chain(&ChainHead::genesis(), &rehashed),
            Err("audit event seq 3: prev_hash does not match the hash of seq 2".into())
        );
    }
}
