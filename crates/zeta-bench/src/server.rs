//! The database and the server process under test.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sqlx::Connection;
use tokio::process::{Child, Command};

use crate::BoxError;
use crate::http;

/// The backend a database URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

pub fn backend(url: &str) -> Result<Backend, BoxError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else if url.starts_with("sqlite://") || url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else {
        Err(format!("unsupported --database-url {url:?}: use postgres:// or sqlite://").into())
    }
}

/// A PostgreSQL URL split around its database name.
pub struct PgUrl {
    prefix: String,
    pub database: String,
    suffix: String,
}

impl PgUrl {
    pub fn parse(url: &str) -> Result<Self, BoxError> {
        let scheme_end = url.find("://").ok_or("database URL without scheme")? + 3;
        let slash = url[scheme_end..]
            .find('/')
            .map(|i| i + scheme_end)
            .ok_or("the database URL names no database")?;
        let query = url[slash..].find('?').map_or(url.len(), |i| i + slash);
        let database = url[slash + 1..query].to_string();
        if database.is_empty()
            || !database
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(format!(
                "benchmark database name {database:?} must be non-empty letters, digits and _"
            )
            .into());
        }
        Ok(Self {
            prefix: url[..=slash].to_string(),
            database,
            suffix: url[query..].to_string(),
        })
    }

    /// The same server, another database.
    pub fn with_database(&self, database: &str) -> String {
        format!("{}{database}{}", self.prefix, self.suffix)
    }
}

/// Drops and creates a PostgreSQL database (through the `postgres` maintenance database).
pub async fn recreate_pg_database(url: &PgUrl, database: &str) -> Result<(), BoxError> {
    let admin = url.with_database("postgres");
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .map_err(|e| format!("cannot connect to PostgreSQL maintenance database: {e}"))?;
    // `database` is checked to be letters, digits and `_` (PgUrl::parse, or a suffix of it).
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE \"{database}\""
    )))
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    Ok(())
}

/// The file of a `sqlite://PATH` URL.
pub fn sqlite_path(url: &str) -> PathBuf {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    PathBuf::from(rest.split('?').next().unwrap_or(rest))
}

/// Removes a SQLite database and its journal files.
pub fn remove_sqlite(path: &Path) -> Result<(), BoxError> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {}: {e}", Path::new(&p).display()).into()),
        }
    }
    Ok(())
}

/// A free port on 127.0.0.1 (bound and released; the server binds it right after).
pub fn free_local_addr() -> Result<SocketAddr, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// The running server; killed when dropped (error, panic, ctrl-c), stopped gracefully by `stop`.
pub struct ServerGuard {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl ServerGuard {
    pub fn start(
        bin: &Path,
        database_url: &str,
        api_key: &str,
        extra_env: &[(String, String)],
        log: PathBuf,
    ) -> Result<Self, BoxError> {
        if !bin.is_file() {
            return Err(format!(
                "server binary {} not found: build it with `cargo build --release -p zeta` \
                 or pass --server-bin / --target-url",
                bin.display()
            )
            .into());
        }
        let addr = free_local_addr()?;
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let mut command = Command::new(bin);
        command
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("ZETA_LISTEN", addr.to_string())
            .env("ZETA_BOOTSTRAP_API_KEY", api_key)
            .env("RUST_LOG", "warn")
            // The benchmark measures the engine, not the per-key rate limiter.
            .env("ZETA_RATE_LIMIT_RPS", "1000000000")
            .env("ZETA_RATE_LIMIT_BURST", "1000000000");
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let pid = child.id().ok_or("server exited at once")?;
        Ok(Self {
            child,
            pid,
            addr,
            log,
        })
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Polls `GET /health/ready` until 200; fails when the process exits or `timeout` passes.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), BoxError> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!(
                    "the server exited during start-up ({status}); its log:\n{}",
                    self.log_tail()
                )
                .into());
            }
            let last = match http::ready_status(self.addr).await {
                Ok(200) => return Ok(()),
                Ok(status) => format!("/health/ready answered {status}"),
                Err(e) => e.to_string(),
            };
            if started.elapsed() > timeout {
                return Err(format!(
                    "the server was not ready after {timeout:?} ({last}); its log:\n{}",
                    self.log_tail()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM (graceful shutdown), then SIGKILL after `grace`; the exit status as text.
    pub async fn stop(mut self, grace: Duration) -> String {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => status.to_string(),
            _ => {
                let _ = self.child.kill().await;
                "killed after the grace period".into()
            }
        }
    }
}

/// What `zeta verify` said.
pub struct Verify {
    pub ok: bool,
    pub output: String,
}

/// Runs `zeta verify` against the database.
pub async fn verify(bin: &Path, database_url: &str) -> Result<Verify, BoxError> {
    let output = Command::new(bin)
        .arg("verify")
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {} verify: {e}", bin.display()))?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !stderr.trim().is_empty() {
        text.push_str(&stderr);
    }
    Ok(Verify {
        ok: output.status.success(),
        output: text.trim_end().to_string(),
    })
}

/// Runs `zeta migrate` against a database (the pgbench mirror gets the real schema this way).
pub async fn migrate(bin: &Path, database_url: &str) -> Result<(), BoxError> {
    let output = Command::new(bin)
        .arg("migrate")
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await?;
    if !output.status.success() {
        return Err(format!(
            "zeta migrate failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_pg_urls() {
        let u =
            PgUrl::parse("postgres://postgres@127.0.0.1:5432/zeta_bench?sslmode=disable").unwrap();
        assert_eq!(u.database, "zeta_bench");
        assert_eq!(
            u.with_database("postgres"),
            "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
        );
        assert!(PgUrl::parse("postgres://h/bad-name").is_err());
        assert!(PgUrl::parse("postgres://h").is_err());
    }

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            sqlite_path("sqlite:///tmp/z.db"),
            PathBuf::from("/tmp/z.db")
        );
        assert_eq!(sqlite_path("sqlite://z.db?mode=rwc"), PathBuf::from("z.db"));
    }
}
