use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::model::AccountStatus;
use crate::money::{Amount, Currency};

/// The accounts an API key may see; `None` means every account.
pub type Scope = Option<Arc<HashSet<Uuid>>>;

/// A command together with who sent it.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub command: Command,
    pub scope: Scope,
    /// The request that sent it, for the audit log; `None` outside a request (CLI, start-up).
    pub actor: Option<Actor>,
}

/// Who made a change: the API key and the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub key_id: Uuid,
    pub request_id: String,
}

#[derive(Clone, Debug)]
pub enum Command {
    CreateAccount(NewAccount),
    UpdateAccount {
        account_id: Uuid,
        if_match: i64,
        patch: AccountPatch,
    },
    Credit {
        account_id: Uuid,
        amount: Amount,
        description: Option<String>,
        reference: Option<String>,
    },
    Debit {
        account_id: Uuid,
        amount: Amount,
        description: Option<String>,
        reference: Option<String>,
        hold: bool,
    },
    Capture {
        transaction_id: Uuid,
    },
    Void {
        transaction_id: Uuid,
    },
    ReverseTransaction {
        transaction_id: Uuid,
        reason: Option<String>,
    },
    ReverseTransfer {
        transfer_id: Uuid,
        reason: Option<String>,
    },
    Transfer(TransferSpec),
    TransferBatch {
        items: Vec<BatchItem>,
        atomic: bool,
    },
    CreateApiKey(NewApiKey),
    RevokeApiKey {
        key_id: Uuid,
    },
}

#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub id: Uuid,
    pub name: String,
    /// `admin`, `operator` or `viewer` (validated by the caller).
    pub role: String,
    pub account_ids: Option<Vec<Uuid>>,
    /// SHA-256 of the secret. When a live key already has it, nothing is created and the
    /// outcome is that key.
    pub secret_hash: Vec<u8>,
    /// Create only when no key exists at all (first start); otherwise `InvalidState`.
    pub only_if_none: bool,
}

#[derive(Clone, Debug)]
pub struct NewAccount {
    pub id: Uuid,
    /// `None`: the ledger generates a free one.
    pub account_number: Option<String>,
    pub owner_name: String,
    pub currency: Currency,
    pub metadata: Map<String, Value>,
}

#[derive(Clone, Debug, Default)]
pub struct AccountPatch {
    pub owner_name: Option<String>,
    pub status: Option<AccountStatus>,
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Clone, Debug)]
pub struct TransferSpec {
    pub from_account_id: Uuid,
    pub to_account_id: Uuid,
    pub amount: Amount,
    pub description: Option<String>,
    pub reference: Option<String>,
}

/// One item of a batch: a valid transfer, or an item the API already refused (its error is the
/// API's to render).
#[derive(Clone, Debug)]
pub enum BatchItem {
    Valid(TransferSpec),
    Invalid,
}

impl Command {
    /// Accounts named directly by the command (not those found through a transaction or transfer).
    pub fn account_ids(&self, out: &mut Vec<Uuid>) {
        match self {
            Command::CreateAccount(_)
            | Command::Capture { .. }
            | Command::Void { .. }
            | Command::ReverseTransaction { .. }
            | Command::ReverseTransfer { .. }
            | Command::RevokeApiKey { .. } => {}
            Command::CreateApiKey(new) => out.extend(new.account_ids.iter().flatten()),
            Command::UpdateAccount { account_id, .. }
            | Command::Credit { account_id, .. }
            | Command::Debit { account_id, .. } => out.push(*account_id),
            Command::Transfer(spec) => {
                out.push(spec.from_account_id);
                out.push(spec.to_account_id);
            }
            Command::TransferBatch { items, .. } => {
                for item in items {
                    if let BatchItem::Valid(spec) = item {
                        out.push(spec.from_account_id);
                        out.push(spec.to_account_id);
                    }
                }
            }
        }
    }

    /// Transactions the command refers to by id.
    pub fn transaction_ref(&self) -> Option<Uuid> {
        match self {
            Command::Capture { transaction_id }
            | Command::Void { transaction_id }
            | Command::ReverseTransaction { transaction_id, .. } => Some(*transaction_id),
            _ => None,
        }
    }

    /// Transfer the command refers to by id.
    pub fn transfer_ref(&self) -> Option<Uuid> {
        match self {
            Command::ReverseTransfer { transfer_id, .. } => Some(*transfer_id),
            _ => None,
        }
    }

    /// A key that routes commands on the same account to the same writer.
    pub fn routing_key(&self) -> Uuid {
        match self {
            Command::CreateAccount(new) => new.id,
            Command::CreateApiKey(new) => new.id,
            Command::RevokeApiKey { key_id } => *key_id,
            Command::UpdateAccount { account_id, .. }
            | Command::Credit { account_id, .. }
            | Command::Debit { account_id, .. } => *account_id,
            Command::Capture { transaction_id }
            | Command::Void { transaction_id }
            | Command::ReverseTransaction { transaction_id, .. } => *transaction_id,
            Command::ReverseTransfer { transfer_id, .. } => *transfer_id,
            Command::Transfer(spec) => spec.from_account_id.min(spec.to_account_id),
            // A batch touches accounts everywhere: all batches share one writer (the nil key),
            // so they never conflict with each other.
            Command::TransferBatch { .. } => Uuid::nil(),
        }
    }

    /// How much work the command is, for sizing a database transaction: transfers in a batch,
    /// else 1.
    pub fn weight(&self) -> usize {
        match self {
            Command::TransferBatch { items, .. } => items.len().max(1),
            _ => 1,
        }
    }
}
