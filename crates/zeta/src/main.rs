use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;
use zeta::config::{LogFormat, ServeSettings, Settings};
use zeta_api::AppState;
use zeta_engine::Engine;

#[derive(Parser)]
#[command(
    name = "zeta",
    version,
    about = "Zeta banking API: accounts, credits, debits, holds, transfers and reversals over HTTP"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(flatten)]
    settings: Settings,
    /// `zeta` with no subcommand serves, and takes `serve`'s flags.
    #[command(flatten)]
    serve: ServeSettings,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Apply migrations and serve the API (the default).
    Serve(ServeSettings),
    /// Apply migrations and exit.
    Migrate,
    /// Recompute every balance and check every invariant; exit 1 naming what is broken.
    Verify,
    /// Manage API keys.
    #[command(subcommand)]
    ApiKey(ApiKeyCmd),
}

#[derive(Subcommand)]
enum ApiKeyCmd {
    /// Create a key and print its secret alone on stdout.
    Create {
        #[arg(long, value_parser = ["admin", "operator", "viewer"])]
        role: String,
        #[arg(long)]
        name: String,
    },
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}

async fn serve(settings: Settings, serve: ServeSettings) -> Result<(), String> {
    let (store, backend) = zeta::open_store(&settings).await?;
    store
        .migrate()
        .await
        .map_err(|e| format!("migrations failed: {e}"))?;
    let mut engine_settings = serve.engine();
    if backend == zeta::Backend::Sqlite {
        // One writer at a time is all SQLite has.
        engine_settings.writers = 1;
        engine_settings.pipeline = 1;
    }
    let engine = Arc::new(Engine::start_observed(
        store.clone(),
        engine_settings,
        Arc::new(zeta_api::telemetry::MetricsObserver),
    ));
    if let Some(secret) = zeta::bootstrap_keys(&engine, serve.bootstrap_api_key.as_deref())
        .await
        .map_err(|e| format!("bootstrap key: {e}"))?
    {
        eprintln!(
            "\nCreated the first admin API key. It is shown only this once:\n\n    {secret}\n"
        );
    }
    tokio::spawn(zeta::purge_expired_forever(
        store.clone(),
        Duration::from_secs(serve.idempotency_retention_hours * 3600),
    ));
    let state = AppState::with_breaker(store, engine, serve.breaker())
        .with_rate_limit(serve.rate_limit())
        .with_request_timeout(Duration::from_secs(serve.request_timeout_secs))
        .with_batch_concurrency(serve.batch_concurrency);
    let listener = TcpListener::bind(serve.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", serve.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, "listening");
    let timeout = Duration::from_secs(serve.shutdown_timeout_secs);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let closing = Arc::clone(&state.store);
    let server = tokio::spawn(zeta_api::serve(listener, state, async move {
        let _ = rx.await;
    }));
    shutdown_signal().await;
    let _ = tx.send(());
    match tokio::time::timeout(timeout, server).await {
        Ok(Ok(Ok(()))) => {
            // Every request and the engine are done: close the connections (SQLite folds its
            // WAL into the database file).
            if tokio::time::timeout(timeout, closing.close())
                .await
                .is_err()
            {
                return Err(format!(
                    "closing the database took longer than {}s",
                    timeout.as_secs()
                ));
            }
            tracing::info!("stopped cleanly");
            Ok(())
        }
        Ok(Ok(Err(e))) => Err(format!("server error: {e}")),
        Ok(Err(e)) => Err(format!("server task failed: {e}")),
        Err(_) => Err(format!("shutdown took longer than {}s", timeout.as_secs())),
    }
}

async fn run(cli: Cli) -> Result<ExitCode, String> {
    let settings = cli.settings;
    match cli.command {
        None => serve(settings, cli.serve).await.map(|()| ExitCode::SUCCESS),
        Some(Cmd::Serve(s)) => serve(settings, s).await.map(|()| ExitCode::SUCCESS),
        Some(Cmd::Migrate) => {
            let (store, _) = zeta::open_store(&settings).await?;
            store
                .migrate()
                .await
                .map_err(|e| format!("migrations failed: {e}"))?;
            store.close().await;
            eprintln!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Some(Cmd::Verify) => {
            let (store, _) = zeta::open_store(&settings).await?;
            let report = store
                .verify()
                .await
                .map_err(|e| format!("verify failed: {e}"))?;
            store.close().await;
            Ok(if zeta::print_report(&report) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Some(Cmd::ApiKey(ApiKeyCmd::Create { role, name })) => {
            let (store, _) = zeta::open_store(&settings).await?;
            store
                .migrate()
                .await
                .map_err(|e| format!("migrations failed: {e}"))?;
            let secret = zeta::create_api_key(Arc::clone(&store), &name, &role, None)
                .await
                .map_err(|e| format!("cannot create key: {e}"))?;
            store.close().await;
            println!("{secret}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.settings.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(message) => {
            tracing::error!(%message, "fatal");
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}
