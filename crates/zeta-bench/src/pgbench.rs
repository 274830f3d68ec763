//! The raw-PostgreSQL baseline: pgbench running, one transaction per transfer (or debit), what
//! the API's work would be without the engine.
//!
//! The mirror is a scratch database `<bench db>_pgbench` migrated by `zeta migrate`, so its
//! tables, constraints, foreign keys and indexes are exactly the server's. pgbench picks
//! integers with `random(1, N)`; `bench_acct(n)` maps one to the uuid of a seeded account
//! (`lpad(to_hex(n), 32, '0')::uuid`, an inlined immutable SQL function, so the lookup is the same
//! primary-key probe the server does, without an extra mapping table and query). New rows get
//! time-ordered (v7-layout) uuids from `bench_uuid7()`, as the server's `Uuid::now_v7()`, so
//! their primary-key inserts are as append-friendly as the server's.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Serialize;
use sqlx::Connection;
use tokio::process::Command;

use crate::BoxError;
use crate::server::{PgUrl, migrate, recreate_pg_database};
use crate::sysstat::{CpuUse, Sampler};

/// Balance every mirror account starts with: far more than any run moves.
const MIRROR_BALANCE: i64 = 1_000_000_000_000;

/// Finds the pgbench binary: the given path, `pgbench` on PATH, or the Debian location.
pub fn find_pgbench(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = given {
        return p.is_file().then(|| p.to_path_buf());
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("pgbench"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin/pgbench"))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        found.pop()
    })
}

/// The mirror database, ready for scripts.
pub struct Mirror {
    pub url: String,
    pub database: String,
    pub accounts: usize,
}

/// Creates and seeds the mirror with `accounts` accounts numbered 1..=accounts.
pub async fn prepare(base: &PgUrl, server_bin: &Path, accounts: usize) -> Result<Mirror, BoxError> {
    let database = format!("{}_pgbench", base.database);
    recreate_pg_database(base, &database).await?;
    let url = base.with_database(&database);
    migrate(server_bin, &url).await?;
    let mut conn = sqlx::PgConnection::connect(&url).await?;
    sqlx::raw_sql(
        "CREATE FUNCTION bench_acct(n integer) RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE
             AS $$ SELECT lpad(to_hex(n), 32, '0')::uuid $$;
         CREATE FUNCTION bench_uuid7() RETURNS uuid LANGUAGE sql VOLATILE
             AS $$ SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
                        PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp())
                        * 1000)::bigint) FROM 3) FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid $$;",
    )
    .execute(&mut conn)
    .await?;
    sqlx::query(
        "INSERT INTO accounts (id, account_number, owner_name, currency, balance, created_at,
                               updated_at)
         SELECT bench_acct(n), 'PGB' || lpad(n::text, 10, '0'), 'pgbench ' || n, 'USD', $2,
                now(), now()
           FROM generate_series(1, $1) AS n",
    )
    .bind(i32::try_from(accounts)?)
    .bind(MIRROR_BALANCE)
    .execute(&mut conn)
    .await?;
    sqlx::raw_sql("VACUUM ANALYZE").execute(&mut conn).await?;
    conn.close().await?;
    Ok(Mirror {
        url,
        database,
        accounts,
    })
}

/// One transfer between two distinct random accounts among the first `n`, as the server does
/// it: lock both rows in id order, update balances/versions/seq, insert the transfer and its two
/// completed legs, commit.
pub fn transfer_script(n: usize) -> String {
    format!(
        r"\set a random(1, {n})
\set b random(1, {m})
\set b CASE WHEN :b >= :a THEN :b + 1 ELSE :b END
\set amt random(1, 100)
BEGIN;
SELECT id FROM accounts WHERE id IN (bench_acct(:a), bench_acct(:b)) ORDER BY id FOR UPDATE;
UPDATE accounts SET balance = balance - :amt, version = version + 1, seq = seq + 2, updated_at = now() WHERE id = bench_acct(:a) RETURNING balance AS from_balance, seq AS from_seq \gset
UPDATE accounts SET balance = balance + :amt, version = version + 1, seq = seq + 2, updated_at = now() WHERE id = bench_acct(:b) RETURNING balance AS to_balance, seq AS to_seq \gset
INSERT INTO transfers (id, from_account_id, to_account_id, amount, currency, status, debit_id, credit_id, created_at, updated_at) VALUES (bench_uuid7(), bench_acct(:a), bench_acct(:b), :amt, 'USD', 'completed', bench_uuid7(), bench_uuid7(), now(), now()) RETURNING id AS transfer_id, debit_id, credit_id \gset
INSERT INTO transactions (id, account_id, seq, posted_seq, type, amount, currency, status, balance_after, transfer_id, created_at, posted_at, updated_at) VALUES (CAST(:debit_id AS uuid), bench_acct(:a), CAST(:from_seq AS bigint) - 1, CAST(:from_seq AS bigint), 'debit', :amt, 'USD', 'completed', CAST(:from_balance AS bigint), CAST(:transfer_id AS uuid), now(), now(), now()), (CAST(:credit_id AS uuid), bench_acct(:b), CAST(:to_seq AS bigint) - 1, CAST(:to_seq AS bigint), 'credit', :amt, 'USD', 'completed', CAST(:to_balance AS bigint), CAST(:transfer_id AS uuid), now(), now(), now());
END;
",
        m = n.saturating_sub(1).max(1)
    )
}

/// One debit of 1 on account 1: lock it, update it, insert the completed debit, commit.
pub fn debit_script() -> String {
    r"BEGIN;
SELECT id FROM accounts WHERE id = bench_acct(1) FOR UPDATE;
UPDATE accounts SET balance = balance - 1, version = version + 1, seq = seq + 2, updated_at = now() WHERE id = bench_acct(1) RETURNING balance AS balance_after, seq AS posted_seq \gset
INSERT INTO transactions (id, account_id, seq, posted_seq, type, amount, currency, status, balance_after, created_at, posted_at, updated_at) VALUES (bench_uuid7(), bench_acct(1), CAST(:posted_seq AS bigint) - 1, CAST(:posted_seq AS bigint), 'debit', 1, 'USD', 'completed', CAST(:balance_after AS bigint), now(), now(), now());
END;
"
    .to_string()
}

/// Isolation levels the baseline runs at.
#[derive(Clone, Copy, Debug)]
pub enum Isolation {
    RepeatableRead,
    ReadCommitted,
}

impl Isolation {
    fn pgoptions(self) -> &'static str {
        match self {
            Isolation::RepeatableRead => r"-c default_transaction_isolation=repeatable\ read",
            Isolation::ReadCommitted => r"-c default_transaction_isolation=read\ committed",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Isolation::RepeatableRead => "repeatable read",
            Isolation::ReadCommitted => "read committed",
        }
    }
}

/// One pgbench run, parsed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PgbenchRun {
    pub isolation: String,
    pub command: String,
    pub tps: f64,
    /// Wall-clock seconds of the pgbench process.
    pub seconds: f64,
    pub processed: u64,
    pub failed: u64,
    /// Transactions that needed at least one retry, and their share of the processed ones.
    pub retried: u64,
    pub retried_pct: f64,
    pub total_retries: u64,
    pub latency_avg_ms: f64,
    pub cpu: CpuUse,
    /// Set when pgbench exited non-zero or printed no tps.
    pub error: Option<String>,
}

fn value_after<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .map(str::trim)
}

fn leading_number<T: std::str::FromStr>(s: &str) -> Option<T> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s[..end].parse().ok()
}

/// Fills the numbers of a run from pgbench's report.
pub fn parse_output(text: &str, run: &mut PgbenchRun) {
    let num = |prefix: &str| value_after(text, prefix).and_then(leading_number::<u64>);
    run.tps = value_after(text, "tps =")
        .and_then(leading_number)
        .unwrap_or(0.0);
    run.processed = num("number of transactions actually processed:").unwrap_or(0);
    run.failed = num("number of failed transactions:").unwrap_or(0);
    run.total_retries = num("total number of retries:").unwrap_or(0);
    if let Some(v) = value_after(text, "number of transactions retried:") {
        run.retried = leading_number(v).unwrap_or(0);
        run.retried_pct = v
            .split_once('(')
            .and_then(|(_, p)| leading_number(p))
            .unwrap_or(0.0);
    }
    run.latency_avg_ms = value_after(text, "latency average =")
        .and_then(leading_number)
        .unwrap_or(0.0);
}

/// Runs pgbench once with `script` for `duration_secs`.
pub async fn run(
    pgbench: &Path,
    mirror: &Mirror,
    script: &Path,
    clients: usize,
    duration_secs: u64,
    isolation: Isolation,
) -> Result<PgbenchRun, BoxError> {
    let threads = clients.clamp(1, 2);
    let args = [
        "-n".to_string(),
        "-M".into(),
        "prepared".into(),
        "-c".into(),
        clients.to_string(),
        "-j".into(),
        threads.to_string(),
        "-T".into(),
        duration_secs.to_string(),
        "--max-tries=100".into(),
        "-f".into(),
        script.display().to_string(),
    ];
    let mut run = PgbenchRun {
        isolation: isolation.label().into(),
        command: format!(
            "PGOPTIONS='{}' {} {} <mirror db>",
            isolation.pgoptions(),
            pgbench.display(),
            args.join(" ")
        ),
        ..PgbenchRun::default()
    };
    let sampler = Sampler::start(None, vec![mirror.database.clone()]);
    let started = std::time::Instant::now();
    let output = Command::new(pgbench)
        .args(&args)
        .arg(&mirror.url)
        .env("PGOPTIONS", isolation.pgoptions())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", pgbench.display()))?;
    run.seconds = (started.elapsed().as_secs_f64() * 100.0).round() / 100.0;
    run.cpu = sampler.finish().await.1;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    parse_output(&text, &mut run);
    if !output.status.success() || run.tps <= 0.0 {
        let tail: Vec<&str> = text.lines().rev().take(12).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        run.error = Some(format!("pgbench {}: {}", output.status, tail.join(" | ")));
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "pgbench (15.20 (Debian 15.20-0+deb12u1))
transaction type: /tmp/t.sql
scaling factor: 1
query mode: prepared
number of clients: 32
number of threads: 2
maximum number of tries: 100
duration: 20 s
number of transactions actually processed: 24000
number of failed transactions: 0 (0.000%)
number of transactions retried: 17520 (73.000%)
total number of retries: 52000
latency average = 26.500 ms
initial connection time = 21.456 ms
tps = 1203.123456 (without initial connection time)
";

    #[test]
    fn parses_pgbench_reports() {
        let mut run = PgbenchRun::default();
        parse_output(SAMPLE, &mut run);
        assert_eq!(run.processed, 24000);
        assert_eq!(run.failed, 0);
        assert_eq!(run.retried, 17520);
        assert!((run.retried_pct - 73.0).abs() < 1e-9);
        assert_eq!(run.total_retries, 52000);
        assert!((run.tps - 1203.123456).abs() < 1e-6);
        assert!((run.latency_avg_ms - 26.5).abs() < 1e-9);
    }

    #[test]
    fn scripts_pick_distinct_accounts() {
        let s = transfer_script(10);
        assert!(s.contains("random(1, 10)"));
        assert!(s.contains("random(1, 9)"));
        assert!(s.contains("ORDER BY id FOR UPDATE"));
    }
}
