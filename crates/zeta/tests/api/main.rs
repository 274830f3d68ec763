//! API tests against a real PostgreSQL: every test gets its own database.

mod accounts;
mod concurrency;
mod errors;
mod faults;
mod holds;
mod idempotency;
mod money;
mod operations;
mod transfers;
