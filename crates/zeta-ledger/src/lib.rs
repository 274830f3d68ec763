//! Zeta's domain: money, accounts, transactions, transfers and the posting rules.
//!
//! Nothing here does I/O. The ledger engine hands a batch of commands and the locked state they
//! touch to [`Working`], which applies the commands in order — each succeeding or failing on its
//! own — and yields the [`Changes`] to persist.

pub mod audit;
mod command;
mod error;
mod model;
mod money;
mod posting;

pub use command::{
    AccountPatch, Actor, BatchItem, Command, Envelope, NewAccount, NewApiKey, Scope, TransferSpec,
};
pub use error::LedgerError;
pub use model::{
    Account, AccountStatus, ApiKey, FailureReason, Transaction, TransactionStatus, TransactionType,
    Transfer, TransferStatus, TransferView,
};
pub use money::{Amount, Currency, MAX_AMOUNT};
pub use posting::{Changes, Effect, ItemResult, Outcome, Working, now_micros};
