//! The two backends' schemas after every migration: the same indexes, by name, on the same
//! tables (the SQLite migrations promise "the same indexes as the PostgreSQL schema").

use sqlx::Row;
use zeta_testkit::{Backend, TestDb};

/// `table.index` of every index that is not a table's primary key, sorted.
async fn pg_indexes(db: &TestDb) -> Vec<String> {
    let mut conn = db.connect().await;
    sqlx::query(
        "SELECT tablename || '.' || indexname FROM pg_indexes
          WHERE schemaname = current_schema() AND indexname NOT LIKE '%\\_pkey'
            AND tablename <> '_sqlx_migrations'
          ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .expect("pg_indexes")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn sqlite_indexes(db: &TestDb) -> Vec<String> {
    let pool = sqlx::SqlitePool::connect(&db.url).await.expect("open");
    let names = sqlx::query(
        "SELECT tbl_name || '.' || name FROM sqlite_schema
          WHERE type = 'index' AND name NOT LIKE 'sqlite\\_autoindex\\_%' ESCAPE '\\'
          ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("sqlite_schema")
    .iter()
    .map(|r| r.get(0))
    .collect();
    pool.close().await;
    names
}

#[tokio::test]
async fn both_backends_have_the_same_indexes() {
    let pg = TestDb::create().await;
    pg.store().await;
    let lite = TestDb::create_on(Backend::Sqlite).await;
    lite.store().await;
    let shared = [
        "accounts.accounts_account_number_key",
        "accounts.accounts_status_idx",
        "api_keys.api_keys_secret_hash_key",
        "idempotency_keys.idempotency_keys_created_idx",
        "transactions.transactions_account_created_idx",
        "transactions.transactions_account_seq_key",
        "transactions.transactions_created_idx",
        "transactions.transactions_posted_idx",
        "transactions.transactions_status_idx",
        "transactions.transactions_transfer_idx",
    ];
    assert_eq!(sqlite_indexes(&lite).await, shared);
    // PostgreSQL also keeps a record of committed engine batches (SQLite's one writer needs none).
    let mut on_pg: Vec<&str> = shared.to_vec();
    on_pg.push("ledger_commits.ledger_commits_created_idx");
    on_pg.sort_unstable();
    assert_eq!(pg_indexes(&pg).await, on_pg);
}
