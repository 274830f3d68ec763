//! PostgreSQL only: the idempotency purge at volume.

use std::time::Duration;

use sqlx::Connection;
use time::OffsetDateTime;
use zeta_store::{PURGE_CHUNK, Store};
use zeta_store_postgres::{PgSettings, PgStore};
use zeta_testkit::TestDb;

/// A backlog far larger than one statement can delete within the statement timeout (300 000
/// expired keys against 50 ms) is purged chunk by chunk; fresh keys and markers stay.
#[tokio::test]
async fn a_large_backlog_is_purged_within_the_statement_timeout() {
    let db = TestDb::create().await;
    let settings = PgSettings {
        statement_timeout: Duration::from_millis(50),
        ..PgSettings::default()
    };
    let store = PgStore::connect(&db.url, &settings).expect("store");
    store.migrate().await.expect("migrate");
    // Unnamed statements in a transaction: they also pass through a transaction pooler.
    let mut conn = db.connect().await;
    let mut tx = conn.begin().await.expect("begin");
    for (rows, age) in [(300_000, "3 days"), (10, "1 hour")] {
        sqlx::query(
            "INSERT INTO idempotency_keys (api_key_id, key, request_hash, status, body, created_at)
             SELECT gen_random_uuid(), 'key-' || n, '\\x00', 201, '\\x00', now() - $2::interval
               FROM generate_series(1, $1) AS n",
        )
        .persistent(false)
        .bind(rows)
        .bind(age)
        .execute(&mut *tx)
        .await
        .expect("keys");
    }
    for (rows, age) in [(2_500, "3 days"), (3, "1 hour")] {
        sqlx::query(
            "INSERT INTO ledger_commits (id, created_at)
             SELECT gen_random_uuid(), now() - $2::interval FROM generate_series(1, $1)",
        )
        .persistent(false)
        .bind(rows)
        .bind(age)
        .execute(&mut *tx)
        .await
        .expect("markers");
    }
    tx.commit().await.expect("commit");
    const { assert!(300_000 > 10 * PURGE_CHUNK) };

    let before = OffsetDateTime::now_utc() - Duration::from_secs(48 * 3600);
    let deleted = store.purge_expired(before).await.expect("purge");
    assert_eq!(deleted, 302_500);
    assert_eq!(db.scalar("SELECT count(*) FROM idempotency_keys").await, 10);
    assert_eq!(db.scalar("SELECT count(*) FROM ledger_commits").await, 3);
    assert_eq!(store.purge_expired(before).await.expect("again"), 0);
    store.close().await;
}
