//! The Zeta server as a library: configuration, store selection, start-up and the CLI commands.

pub mod config;

use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;
use zeta_api::auth::{KeyCreation, Role, create_key};
use zeta_engine::{Engine, EngineSettings};
use zeta_store::{Store, VerifyReport};
use zeta_store_postgres::PgStore;
use zeta_store_sqlite::SqliteStore;

use crate::config::Settings;

/// The embedded database used when `DATABASE_URL` is unset.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://zeta.db";

/// Which backend a URL selects.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

pub fn backend_of(url: &str) -> Option<Backend> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Some(Backend::Postgres)
    } else if url.starts_with("sqlite:") {
        Some(Backend::Sqlite)
    } else {
        None
    }
}

/// Opens the store named by `DATABASE_URL` (unset: the embedded SQLite file `./zeta.db`), with
/// its reads on `ZETA_DATABASE_READ_URL` when that is set (PostgreSQL only).
pub async fn open_store(settings: &Settings) -> Result<(Arc<dyn Store>, Backend), String> {
    let url = settings
        .database_url
        .as_deref()
        .unwrap_or(DEFAULT_DATABASE_URL);
    if let Some(read_url) = settings.database_read_url.as_deref()
        && (backend_of(url) != Some(Backend::Postgres)
            || backend_of(read_url) != Some(Backend::Postgres))
    {
        return Err(format!(
            "ZETA_DATABASE_READ_URL {:?} must be a PostgreSQL streaming replica of a PostgreSQL \
             DATABASE_URL",
            config::redact_url(read_url)
        ));
    }
    match backend_of(url) {
        Some(Backend::Postgres) => {
            let mut store = PgStore::connect(url, &settings.pg()).map_err(|e| e.to_string())?;
            if let Some(read_url) = settings.database_read_url.as_deref() {
                store = store
                    .with_read_replica(read_url, &settings.pg())
                    .map_err(|e| e.to_string())?;
            }
            Ok((Arc::new(store), Backend::Postgres))
        }
        Some(Backend::Sqlite) => {
            let store = SqliteStore::open(url, &settings.sqlite())
                .await
                .map_err(|e| format!("cannot open {url}: {e}"))?;
            Ok((Arc::new(store), Backend::Sqlite))
        }
        None => Err(format!(
            "unsupported DATABASE_URL scheme in {:?}: use postgres://… or sqlite://PATH",
            config::redact_url(url)
        )),
    }
}

/// Creates an API key (through a short-lived engine, so it is audited like every change) and
/// returns its secret, shown once.
pub async fn create_api_key(
    store: Arc<dyn Store>,
    name: &str,
    role: &str,
    account_ids: Option<Vec<Uuid>>,
) -> Result<String, String> {
    let role = Role::parse(role).ok_or_else(|| format!("unknown role {role:?}"))?;
    let engine = Engine::start(store, EngineSettings::default());
    let created = create_key(&engine, name, role, account_ids, None, false).await;
    engine.shutdown().await;
    match created.map_err(|e| e.to_string())? {
        KeyCreation::Created { secret, .. } => Ok(secret),
        KeyCreation::Exists(_) => Err("a key with this secret exists".into()),
        KeyCreation::Refused(e) => Err(e.to_string()),
    }
}

/// At start: makes sure the bootstrap key exists, or — when none is configured and no key exists
/// at all — creates an admin key and returns its secret to print once. A bootstrap secret whose
/// key was revoked stays revoked (logged).
pub async fn bootstrap_keys(
    engine: &Engine,
    bootstrap: Option<&str>,
) -> Result<Option<String>, String> {
    let created = create_key(
        engine,
        "bootstrap",
        Role::Admin,
        None,
        bootstrap,
        bootstrap.is_none(),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(match (created, bootstrap) {
        (KeyCreation::Created { secret, .. }, None) => Some(secret),
        (KeyCreation::Refused(e), Some(_)) => {
            tracing::warn!(reason = %e, "ZETA_BOOTSTRAP_API_KEY is not usable");
            None
        }
        _ => None,
    })
}

/// How often expired idempotency keys are purged.
pub const PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// Deletes idempotency keys older than `retention`, every [`PURGE_INTERVAL`], forever.
pub async fn purge_expired_forever(store: Arc<dyn Store>, retention: std::time::Duration) {
    let mut tick = tokio::time::interval(PURGE_INTERVAL);
    loop {
        tick.tick().await;
        let before = OffsetDateTime::now_utc() - retention;
        match store.purge_expired(before).await {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "purged expired idempotency keys"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "purging expired idempotency keys failed"),
        }
    }
}

/// Renders a verify report; `true` when clean.
pub fn print_report(report: &VerifyReport) -> bool {
    println!(
        "checked {} accounts, {} transactions and {} audit events; total balance {}",
        report.accounts, report.transactions, report.audit_events, report.total_balance
    );
    for problem in &report.problems {
        println!("BROKEN {problem}");
    }
    if report.problems.is_empty() {
        println!("OK: every invariant holds");
    } else {
        println!("FAILED: {} problem(s)", report.problems.len());
    }
    report.problems.is_empty()
}
