use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::money::Currency;

macro_rules! str_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

str_enum!(
    /// `active` accounts move money; `frozen` ones are paused; `closed` is final.
    AccountStatus { Active => "active", Frozen => "frozen", Closed => "closed" }
);
str_enum!(
    /// `credit` is money in, `debit` money out.
    TransactionType { Credit => "credit", Debit => "debit" }
);
str_enum!(
    /// The seed's four statuses.
    TransactionStatus {
        Pending => "pending",
        Completed => "completed",
        Failed => "failed",
        Reversed => "reversed",
    }
);
str_enum!(
    /// Why a transaction is `failed`.
    FailureReason { InsufficientFunds => "insufficient_funds", Voided => "voided" }
);
str_enum!(
    TransferStatus { Completed => "completed", Failed => "failed", Reversed => "reversed" }
);

#[derive(Clone, Debug, PartialEq)]
pub struct Account {
    pub id: Uuid,
    pub account_number: String,
    pub owner_name: String,
    pub currency: Currency,
    /// Posted balance in minor units; never negative.
    pub balance: i64,
    /// Sum of the pending debits (holds); `0 <= held <= balance`.
    pub held: i64,
    pub status: AccountStatus,
    /// Starts at 1, +1 on every change; the `ETag`.
    pub version: i64,
    /// Counter of transaction events (recorded or posted) on this account; orders its history.
    pub seq: i64,
    pub metadata: Map<String, Value>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl Account {
    pub fn available(&self) -> i64 {
        self.balance - self.held
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Transaction {
    pub id: Uuid,
    pub account_id: Uuid,
    /// Position among the account's recorded transactions (listing order).
    pub seq: i64,
    /// Position among the account's postings (the `balance_after` chain); None until posted.
    pub posted_seq: Option<i64>,
    pub kind: TransactionType,
    pub amount: i64,
    pub currency: Currency,
    pub status: TransactionStatus,
    pub balance_after: Option<i64>,
    pub transfer_id: Option<Uuid>,
    pub reverses_id: Option<Uuid>,
    pub reversed_by_id: Option<Uuid>,
    pub failure_reason: Option<FailureReason>,
    pub description: Option<String>,
    pub reference: Option<String>,
    pub created_at: OffsetDateTime,
    pub posted_at: Option<OffsetDateTime>,
    pub updated_at: OffsetDateTime,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Transfer {
    pub id: Uuid,
    pub from_account_id: Uuid,
    pub to_account_id: Uuid,
    pub amount: i64,
    pub currency: Currency,
    pub status: TransferStatus,
    pub debit_id: Uuid,
    pub credit_id: Option<Uuid>,
    /// Set on a compensating transfer: the transfer it reverses.
    pub reverses_id: Option<Uuid>,
    pub reversed_by_id: Option<Uuid>,
    pub description: Option<String>,
    pub reference: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A transfer with its legs, as the API shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct TransferView {
    pub transfer: Transfer,
    pub debit: Transaction,
    pub credit: Option<Transaction>,
}

/// An API key as stored: never its secret, only the secret's hash (kept apart from this view).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    /// `admin`, `operator` or `viewer`.
    pub role: String,
    /// The accounts the key is limited to; `None` for an unscoped key.
    pub account_ids: Option<Vec<Uuid>>,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}
