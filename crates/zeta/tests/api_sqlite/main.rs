//! The conformance suite on SQLite: the same modules as `tests/api`, on a SQLite file per test.

#[path = "../api/accounts.rs"]
mod accounts;
#[path = "../api/concurrency.rs"]
mod concurrency;
#[path = "../api/docs.rs"]
mod docs;
#[path = "../api/errors.rs"]
mod errors;
#[path = "../api/holds.rs"]
mod holds;
#[path = "../api/idempotency.rs"]
mod idempotency;
#[path = "../api/money.rs"]
mod money;
#[path = "../api/operations.rs"]
mod operations;
#[path = "../api/security.rs"]
mod security;
#[path = "../api/transfers.rs"]
mod transfers;

use zeta_testkit::{Backend, TestApp};

/// The app under test on this binary's backend.
pub async fn spawn() -> TestApp {
    TestApp::spawn_on(Backend::Sqlite).await
}
