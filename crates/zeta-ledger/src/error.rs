use uuid::Uuid;

/// Why the ledger refused a command. Each maps to one API error code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("account number is already taken")]
    AccountNumberTaken,
    #[error("the account's version is {current}, not {expected}")]
    VersionMismatch { current: i64, expected: i64 },
    #[error("{0}")]
    InvalidState(&'static str),
    #[error("the transaction is already reversed")]
    AlreadyReversed,
    #[error("the account balance is {balance}; it must be 0 to close the account")]
    AccountNotEmpty { balance: i64 },
    #[error("source and destination are the same account")]
    SameAccount,
    #[error("the accounts hold different currencies ({from} and {to})")]
    CurrencyMismatch { from: String, to: String },
    #[error("account {account_id} is {status}")]
    AccountNotActive {
        account_id: Uuid,
        status: &'static str,
    },
    #[error("the balance would exceed the largest representable balance")]
    BalanceOverflow,
    #[error("available balance {available} is less than amount {amount}")]
    InsufficientFunds {
        available: i64,
        amount: i64,
        /// The recorded failed transaction, when the decline was recorded.
        transaction_id: Option<Uuid>,
        /// The recorded failed transfer, when the decline was a transfer.
        transfer_id: Option<Uuid>,
    },
}
