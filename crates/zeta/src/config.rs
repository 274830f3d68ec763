//! The one configuration struct: every knob is a flag and an environment variable.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use zeta_engine::{EngineSettings, RetryPolicy};
use zeta_store_postgres::PgSettings;
use zeta_store_sqlite::SqliteSettings;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// JSON lines when stderr is not a terminal, text otherwise.
    Auto,
    Json,
    Text,
}

/// Settings shared by every subcommand.
#[derive(Args, Clone)]
pub struct Settings {
    /// Database: `postgres://…` for PostgreSQL, `sqlite://PATH` for SQLite; unset means the
    /// embedded SQLite file `./zeta.db`.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// A PostgreSQL streaming replica (`postgres://…`) for balance inquiries, listings and
    /// history, which may then lag behind by the replication delay; money commands, idempotency,
    /// API keys and preconditions always use DATABASE_URL. Unset: everything on DATABASE_URL.
    #[arg(
        long,
        env = "ZETA_DATABASE_READ_URL",
        global = true,
        hide_env_values = true
    )]
    pub database_read_url: Option<String>,

    /// Log format.
    #[arg(
        long,
        env = "ZETA_LOG_FORMAT",
        value_enum,
        default_value = "auto",
        global = true
    )]
    pub log_format: LogFormat,

    /// Most database connections in the pool [default: 16 on PostgreSQL, 5 on SQLite].
    #[arg(long, env = "ZETA_DB_MAX_CONNECTIONS", global = true)]
    pub db_max_connections: Option<u32>,

    /// Longest wait for a pooled connection, in milliseconds.
    #[arg(
        long,
        env = "ZETA_DB_ACQUIRE_TIMEOUT_MS",
        default_value_t = 3000,
        global = true
    )]
    pub db_acquire_timeout_ms: u64,

    /// Statement timeout set on every connection, in milliseconds.
    #[arg(
        long,
        env = "ZETA_DB_STATEMENT_TIMEOUT_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub db_statement_timeout_ms: u64,

    /// Lock timeout set on every connection, in milliseconds.
    #[arg(
        long,
        env = "ZETA_DB_LOCK_TIMEOUT_MS",
        default_value_t = 5000,
        global = true
    )]
    pub db_lock_timeout_ms: u64,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field(
                "database_read_url",
                &self.database_read_url.as_deref().map(redact_url),
            )
            .field("log_format", &self.log_format)
            .field("db_max_connections", &self.db_max_connections)
            .finish_non_exhaustive()
    }
}

/// A database URL without its password.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{user}:***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// The PostgreSQL pool's default size.
pub const PG_MAX_CONNECTIONS: u32 = 16;
/// The SQLite pool's default size: the writer and four readers. Every SQLite connection is a
/// thread of its own, and glibc gives each thread its own malloc arena that keeps what it
/// freed: 16 connections kept the server at 130–140 MB, six at 95–112 MB once the batch
/// endpoint had run while every connection could write. Since writes have a connection of
/// their own, five peak at 62–66 MB (`docs/performance.md`).
pub const SQLITE_MAX_CONNECTIONS: u32 = 5;

impl Settings {
    pub fn sqlite(&self) -> SqliteSettings {
        SqliteSettings {
            max_connections: self
                .db_max_connections
                .unwrap_or(SQLITE_MAX_CONNECTIONS)
                .max(2),
            busy_timeout: Duration::from_millis(self.db_lock_timeout_ms),
            ..SqliteSettings::default()
        }
    }

    pub fn pg(&self) -> PgSettings {
        PgSettings {
            max_connections: self.db_max_connections.unwrap_or(PG_MAX_CONNECTIONS),
            acquire_timeout: Duration::from_millis(self.db_acquire_timeout_ms),
            statement_timeout: Duration::from_millis(self.db_statement_timeout_ms),
            lock_timeout: Duration::from_millis(self.db_lock_timeout_ms),
        }
    }
}

/// Settings of `zeta serve`.
#[derive(Args, Clone)]
pub struct ServeSettings {
    /// Address to listen on.
    #[arg(long, env = "ZETA_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Makes sure an admin key with exactly this secret exists at start.
    #[arg(long, env = "ZETA_BOOTSTRAP_API_KEY", hide_env_values = true)]
    pub bootstrap_api_key: Option<String>,

    /// Ledger writer tasks (commands on one account always go to the same writer). SQLite
    /// always uses one: it has one writer at a time.
    #[arg(long, env = "ZETA_ENGINE_WRITERS", default_value_t = 1)]
    pub engine_writers: usize,

    /// Most commands committed in one database transaction.
    #[arg(long, env = "ZETA_ENGINE_MAX_BATCH", default_value_t = 512)]
    pub engine_max_batch: usize,

    /// Most transfers (counting each item of a batch request) in one database transaction.
    #[arg(long, env = "ZETA_ENGINE_MAX_BATCH_WEIGHT", default_value_t = 2048)]
    pub engine_max_batch_weight: usize,

    /// Transactions one writer may have in flight at once (a batch overlaps earlier ones only
    /// when it touches none of their accounts; always 1 on SQLite).
    #[arg(long, env = "ZETA_ENGINE_PIPELINE", default_value_t = 2)]
    pub engine_pipeline: usize,

    /// Commands that may queue per writer before submitters wait.
    #[arg(long, env = "ZETA_ENGINE_QUEUE", default_value_t = 8192)]
    pub engine_queue: usize,

    /// Attempts of a batch on serialization failures and deadlocks before 503.
    #[arg(long, env = "ZETA_RETRY_MAX_ATTEMPTS", default_value_t = 40)]
    pub retry_max_attempts: u32,

    /// Attempts of a batch while the database is unreachable before 503.
    #[arg(long, env = "ZETA_RETRY_UNAVAILABLE_ATTEMPTS", default_value_t = 3)]
    pub retry_unavailable_attempts: u32,

    /// Rate limit: tokens added per second to each API key's bucket (per client address for
    /// requests without a valid key). Buckets are per instance.
    #[arg(long, env = "ZETA_RATE_LIMIT_RPS", default_value_t = 1000)]
    pub rate_limit_rps: u32,

    /// Rate limit: bucket size (the burst).
    #[arg(long, env = "ZETA_RATE_LIMIT_BURST", default_value_t = 2000)]
    pub rate_limit_burst: u32,

    /// Consecutive database failures that open the circuit breaker.
    #[arg(long, env = "ZETA_BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,

    /// How long the open breaker refuses requests before letting a probe through, in ms.
    #[arg(long, env = "ZETA_BREAKER_OPEN_MS", default_value_t = 2000)]
    pub breaker_open_ms: u64,

    /// How long idempotency keys (and batch markers) are kept, in hours (at least 24).
    #[arg(long, env = "ZETA_IDEMPOTENCY_RETENTION_HOURS", default_value_t = 48,
          value_parser = clap::value_parser!(u64).range(24..))]
    pub idempotency_retention_hours: u64,

    /// Longest time one request may take, in seconds; then 503, and a money command still
    /// queued is withdrawn (one a batch has taken is answered when the batch ends).
    #[arg(long, env = "ZETA_REQUEST_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_secs: u64,

    /// Batch requests (`POST /v1/transfers/batch`) handled at once; the others wait, body
    /// unread, within the request timeout. Bounds the memory 1000-transfer requests take.
    #[arg(long, env = "ZETA_BATCH_CONCURRENCY", default_value_t = zeta_api::DEFAULT_BATCH_CONCURRENCY,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub batch_concurrency: usize,

    /// Longest wait for in-flight requests and queued commands at shutdown, in seconds.
    #[arg(long, env = "ZETA_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    pub shutdown_timeout_secs: u64,
}

impl fmt::Debug for ServeSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeSettings")
            .field("listen", &self.listen)
            .field(
                "bootstrap_api_key",
                &self.bootstrap_api_key.as_ref().map(|_| "***"),
            )
            .field("engine_writers", &self.engine_writers)
            .field("engine_max_batch", &self.engine_max_batch)
            .finish_non_exhaustive()
    }
}

impl ServeSettings {
    pub fn rate_limit(&self) -> zeta_api::ratelimit::RateLimitSettings {
        zeta_api::ratelimit::RateLimitSettings {
            rps: self.rate_limit_rps.max(1),
            burst: self.rate_limit_burst.max(1),
        }
    }

    pub fn breaker(&self) -> zeta_api::breaker::BreakerSettings {
        zeta_api::breaker::BreakerSettings {
            failure_threshold: self.breaker_failures.max(1),
            open_for: Duration::from_millis(self.breaker_open_ms),
        }
    }

    pub fn engine(&self) -> EngineSettings {
        EngineSettings {
            writers: self.engine_writers.max(1),
            max_batch: self.engine_max_batch.max(1),
            max_batch_weight: self.engine_max_batch_weight.max(1),
            queue_capacity: self.engine_queue.max(1),
            pipeline: self.engine_pipeline.max(1),
            retry: RetryPolicy {
                max_attempts: self.retry_max_attempts.max(1),
                max_unavailable_attempts: self.retry_unavailable_attempts.max(1),
                ..RetryPolicy::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://zeta:s3cret@db:5432/zeta"),
            "postgres://zeta:***@db:5432/zeta"
        );
        assert_eq!(redact_url("sqlite://zeta.db"), "sqlite://zeta.db");
    }

    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }

    #[test]
    fn the_pool_size_defaults_per_backend_and_one_setting_sets_both() {
        let defaults = Cli::try_parse_from(["zeta"]).expect("flags parse").settings;
        assert_eq!(defaults.pg().max_connections, 16);
        assert_eq!(defaults.sqlite().max_connections, 5);
        let set = Cli::try_parse_from(["zeta", "--db-max-connections", "9"])
            .expect("flags parse")
            .settings;
        assert_eq!(set.pg().max_connections, 9);
        assert_eq!(set.sqlite().max_connections, 9);
        let one = Cli::try_parse_from(["zeta", "--db-max-connections", "1"])
            .expect("flags parse")
            .settings;
        assert_eq!(
            one.sqlite().max_connections,
            2,
            "the writer and one reader at least"
        );
    }

    #[derive(Parser)]
    struct ServeCli {
        #[command(flatten)]
        serve: ServeSettings,
    }

    #[test]
    fn batch_concurrency_defaults_to_two_and_refuses_zero() {
        let defaults = ServeCli::try_parse_from(["zeta"]).expect("flags parse");
        assert_eq!(defaults.serve.batch_concurrency, 2);
        let set = ServeCli::try_parse_from(["zeta", "--batch-concurrency", "5"]).expect("parse");
        assert_eq!(set.serve.batch_concurrency, 5);
        let zero = ServeCli::try_parse_from(["zeta", "--batch-concurrency", "0"]);
        assert_eq!(
            zero.err().map(|e| e.kind()),
            Some(clap::error::ErrorKind::ValueValidation)
        );
    }

    #[test]
    fn debug_redacts_both_database_urls() {
        let cli = Cli::try_parse_from([
            "zeta",
            "--database-url",
            "postgres://zeta:primary-secret@db:5432/zeta",
            "--database-read-url",
            "postgres://reader:replica-secret@replica:5432/zeta",
        ])
        .expect("flags parse");
        let debug = format!("{:?}", cli.settings);
        assert!(!debug.contains("primary-secret"), "{debug}");
        assert!(!debug.contains("replica-secret"), "{debug}");
        assert!(
            debug.contains(r#"database_read_url: Some("postgres://reader:***@replica:5432/zeta")"#),
            "{debug}"
        );
    }
}
