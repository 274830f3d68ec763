//! API tests on PostgreSQL: every test gets its own database. The portable modules also run on
//! SQLite (`tests/api_sqlite`), so both backends answer every request the same.

mod accounts;
mod concurrency;
mod docs;
mod errors;
mod faults;
mod holds;
mod idempotency;
mod instances;
mod maintenance;
mod money;
mod operations;
mod schema;
mod security;
mod transfers;

use zeta_testkit::{Backend, TestApp};

/// The app under test on this binary's backend.
pub async fn spawn() -> TestApp {
    TestApp::spawn_on(Backend::Postgres).await
}
