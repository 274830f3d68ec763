//! The `zeta` binary: migrate, api-key create, verify (exit codes and reports).

use std::process::Command;

use sqlx::Connection;
use zeta_testkit::TestDb;

fn zeta(db: &TestDb, args: &[&str]) -> std::process::Output {
    zeta_with(db, args, &[])
}

fn zeta_with(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_zeta"))
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("ZETA_LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run zeta")
}

#[tokio::test]
async fn migrate_then_verify_clean_then_broken() {
    let db = TestDb::create().await;
    let out = zeta(&db, &["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Migrations are idempotent.
    assert!(zeta(&db, &["migrate"]).status.success());

    let key = zeta(
        &db,
        &["api-key", "create", "--role", "operator", "--name", "ops"],
    );
    assert!(key.status.success());
    let secret = String::from_utf8(key.stdout).expect("utf8");
    assert!(
        secret.trim().starts_with("zeta_") && secret.trim().len() == 69,
        "{secret:?}"
    );
    assert_eq!(secret.lines().count(), 1, "the secret alone on stdout");

    // Unnamed statements in a transaction: they also pass through a transaction pooler.
    let mut conn = db.connect().await;
    let mut tx = conn.begin().await.expect("begin");
    let account = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO accounts (id, account_number, owner_name, currency, balance, seq, version, created_at, updated_at)
         VALUES ($1, 'ACCT0001', 'A', 'USD', 100, 2, 2, now(), now())",
    )
    .persistent(false)
    .bind(account)
    .execute(&mut *tx)
    .await
    .expect("account");
    sqlx::query(
        "INSERT INTO transactions (id, account_id, seq, posted_seq, type, amount, currency, status, balance_after, created_at, posted_at, updated_at)
         VALUES ($1, $2, 1, 2, 'credit', 100, 'USD', 'completed', 100, now(), now(), now())",
    )
    .persistent(false)
    .bind(uuid::Uuid::now_v7())
    .bind(account)
    .execute(&mut *tx)
    .await
    .expect("transaction");
    tx.commit().await.expect("commit");

    let clean = zeta(&db, &["verify"]);
    let report = String::from_utf8_lossy(&clean.stdout);
    assert_eq!(clean.status.code(), Some(0), "{report}");
    assert!(
        // The CLI's key creation is audited too.
        report.contains("checked 1 accounts, 1 transactions and 1 audit events"),
        "{report}"
    );

    // Tamper with the balance: verify exits 1 and names the account.
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query("UPDATE accounts SET balance = 150 WHERE id = $1")
        .persistent(false)
        .bind(account)
        .execute(&mut *tx)
        .await
        .expect("tamper");
    tx.commit().await.expect("commit");
    let broken = zeta(&db, &["verify"]);
    let report = String::from_utf8_lossy(&broken.stdout);
    assert_eq!(broken.status.code(), Some(1), "{report}");
    assert!(
        report.contains(&format!("BROKEN account {account}")),
        "{report}"
    );
}

/// `verify` reads whole tables: its checks are not cut off by the statement timeout meant for
/// the API's statements (here 20 ms against checks over 300 000 rows).
#[tokio::test]
async fn verify_outlasts_the_statement_timeout() {
    let db = TestDb::create().await;
    assert!(zeta(&db, &["migrate"]).status.success());
    let mut conn = db.connect().await;
    let mut tx = conn.begin().await.expect("begin");
    let account = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO accounts (id, account_number, owner_name, currency, created_at, updated_at)
         VALUES ($1, 'ACCT0001', 'A', 'USD', now(), now())",
    )
    .persistent(false)
    .bind(account)
    .execute(&mut *tx)
    .await
    .expect("account");
    // Declined debits: rows every check reads, none that moves the balance.
    sqlx::query(
        "INSERT INTO transactions (id, account_id, seq, type, amount, currency, status,
                                   failure_reason, created_at, updated_at)
         SELECT gen_random_uuid(), $1, n, 'debit', 1, 'USD', 'failed', 'insufficient_funds',
                now(), now()
           FROM generate_series(1, 300000) AS n",
    )
    .persistent(false)
    .bind(account)
    .execute(&mut *tx)
    .await
    .expect("transactions");
    tx.commit().await.expect("commit");

    let out = zeta_with(&db, &["verify"], &[("ZETA_DB_STATEMENT_TIMEOUT_MS", "20")]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("checked 1 accounts, 300000 transactions and 0 audit events"),
        "{report}"
    );
}

#[tokio::test]
async fn verify_names_the_first_tampered_audit_event() {
    let db = TestDb::create().await;
    assert!(zeta(&db, &["migrate"]).status.success());
    for name in ["first", "second", "third"] {
        let out = zeta(
            &db,
            &["api-key", "create", "--role", "viewer", "--name", name],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let clean = zeta(&db, &["verify"]);
    let report = String::from_utf8_lossy(&clean.stdout);
    assert_eq!(clean.status.code(), Some(0), "{report}");
    assert!(report.contains("and 3 audit events"), "{report}");

    let creates = db
        .scalar("SELECT count(*) FROM audit_events WHERE action = 'api_key.create'")
        .await;
    assert_eq!(creates, 3);
    // Someone rewrites who the second key was made for (unnamed statements in a transaction:
    // they also pass through a transaction pooler).
    let mut conn = db.connect().await;
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query(
        "UPDATE audit_events SET details = replace(details, 'second', 'mallory') WHERE seq = 2",
    )
    .persistent(false)
    .execute(&mut *tx)
    .await
    .expect("tamper");
    tx.commit().await.expect("commit");
    let broken = zeta(&db, &["verify"]);
    let report = String::from_utf8_lossy(&broken.stdout);
    assert_eq!(broken.status.code(), Some(1), "{report}");
    assert!(
        report.contains(
            "BROKEN audit event seq 2: hash does not match its contents (the event was altered)"
        ),
        "{report}"
    );
}

#[test]
fn unsupported_database_url_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_zeta"))
        .args(["migrate"])
        .env("DATABASE_URL", "mysql://u:pw@localhost/db")
        .output()
        .expect("run zeta");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unsupported DATABASE_URL"), "{stderr}");
    assert!(
        !stderr.contains("pw@"),
        "the password is never printed: {stderr}"
    );
}

#[test]
fn help_shows_no_database_password_and_read_url_needs_postgres() {
    let help = Command::new(env!("CARGO_BIN_EXE_zeta"))
        .arg("--help")
        .env("DATABASE_URL", "postgres://zeta:t0psecret@db/zeta")
        .env(
            "ZETA_DATABASE_READ_URL",
            "postgres://reader:s3cret@replica/db",
        )
        .output()
        .expect("run zeta");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--database-read-url"), "{text}");
    assert!(text.contains("[env: ZETA_DATABASE_READ_URL]"), "{text}");
    assert!(!text.contains("s3cret"), "the value is never shown: {text}");
    assert!(text.contains("[env: DATABASE_URL]"), "{text}");
    assert!(
        !text.contains("t0psecret"),
        "the value is never shown: {text}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_zeta"))
        .args(["migrate"])
        .env("DATABASE_URL", "sqlite:///nonexistent-dir/zeta.db")
        .env(
            "ZETA_DATABASE_READ_URL",
            "postgres://reader:s3cret@replica/db",
        )
        .output()
        .expect("run zeta");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("must be a PostgreSQL streaming replica of a PostgreSQL DATABASE_URL"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("s3cret"),
        "the password is never printed: {stderr}"
    );
}

/// On SQLite every command closes its connections before exiting: the WAL is folded into the
/// database file and removed, and the next command finds everything there.
#[test]
fn sqlite_commands_leave_no_wal_behind() {
    let dir = std::env::temp_dir().join(format!("zeta-cli-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("cli.db");
    let url = format!("sqlite://{}", db.display());
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_zeta"))
            .args(args)
            .env("DATABASE_URL", &url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run zeta");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!dir.join("cli.db-wal").exists(), "{args:?} left its WAL");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["migrate"]);
    let secret = run(&["api-key", "create", "--role", "admin", "--name", "ops"]);
    assert!(secret.trim().starts_with("zeta_"), "{secret}");
    let report = run(&["verify"]);
    assert!(report.contains("0 accounts"), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}
