//! `zeta-bench`: Zeta's own benchmark (DESIGN.md, "Benchmark").
//!
//! One run: (re)creates the benchmark database, starts the release server on a free port, makes
//! accounts and money through the API, drives each scenario with N keep-alive connections in a
//! closed loop, runs the equivalent pgbench script on the same PostgreSQL at repeatable read and
//! read committed, stops the server, runs `zeta verify`, prints the table and writes it as JSON.
//!
//! Exit status: 0 clean; 1 when any request got a 5xx or a transport error, or `zeta verify`
//! found a broken invariant; 2 when the benchmark itself could not run; 3 when `--check-targets`
//! is given and a target was missed; 130 on ctrl-c.

mod http;
mod load;
mod metrics;
mod pgbench;
mod report;
mod server;
mod setup;
mod sysstat;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use rand::RngCore;
use serde::Serialize;
use sqlx::Connection;

use crate::load::Workload;
use crate::pgbench::{Isolation, Mirror};
use crate::report::ScenarioResult;
use crate::server::{Backend, PgUrl, ServerGuard};
use crate::sysstat::Sampler;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum ScenarioArg {
    All,
    TransfersUniform,
    TransfersHot,
    DebitOneAccount,
    Batch,
    Reads,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Scenario {
    TransfersUniform,
    TransfersHot,
    DebitOneAccount,
    Batch,
    Reads,
}

impl Scenario {
    const ALL: [Scenario; 5] = [
        Scenario::TransfersUniform,
        Scenario::TransfersHot,
        Scenario::DebitOneAccount,
        Scenario::Batch,
        Scenario::Reads,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::TransfersUniform => "transfers-uniform",
            Scenario::TransfersHot => "transfers-hot",
            Scenario::DebitOneAccount => "debit-one-account",
            Scenario::Batch => "batch",
            Scenario::Reads => "reads",
        }
    }

    fn uses_uniform_accounts(self) -> bool {
        matches!(
            self,
            Scenario::TransfersUniform | Scenario::Batch | Scenario::Reads
        )
    }

    fn has_pgbench(self) -> bool {
        matches!(
            self,
            Scenario::TransfersUniform | Scenario::TransfersHot | Scenario::DebitOneAccount
        )
    }
}

fn parse_env_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

/// Zeta's benchmark: HTTP API throughput and latency against raw pgbench, then `zeta verify`.
#[derive(Parser, Debug)]
#[command(name = "zeta-bench", version)]
struct Args {
    /// Which scenario to run.
    #[arg(long, value_enum, default_value = "all")]
    scenario: ScenarioArg,
    /// Seconds each scenario (and each pgbench run) lasts.
    #[arg(long, default_value_t = 20)]
    duration_secs: u64,
    /// Keep-alive connections of the single-request scenarios.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Connections of the batch scenario (each request carries --batch-size transfers).
    #[arg(long, default_value_t = 8)]
    batch_connections: usize,
    /// Transfers per batch request.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Accounts of the uniform, batch and reads scenarios (default 100000; 2000 with --smoke).
    #[arg(long)]
    accounts: Option<usize>,
    /// Accounts of transfers-hot.
    #[arg(long, default_value_t = 10)]
    hot_accounts: usize,
    /// A quick run: 3 s per scenario and 2000 accounts (CI).
    #[arg(long)]
    smoke: bool,
    /// The benchmark database (dropped and created again): postgres://… or sqlite://PATH.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/zeta_bench")]
    database_url: String,
    /// The release server binary to start.
    #[arg(long, default_value = "target/release/zeta")]
    server_bin: PathBuf,
    /// Benchmark an already running server instead of starting one (its database is not
    /// recreated; --database-url must name it for pgbench's mirror and `zeta verify`).
    #[arg(long, requires = "api_key")]
    target_url: Option<String>,
    /// API key (operator or admin) of the --target-url server.
    #[arg(long, env = "ZETA_BENCH_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// PID of the --target-url server, to sample its RSS and CPU.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Extra environment of the started server, KEY=VALUE (repeatable).
    #[arg(long = "server-env", value_parser = parse_env_pair)]
    server_env: Vec<(String, String)>,
    /// Where the results go as JSON.
    #[arg(long, default_value = "bench-results.json")]
    json_out: PathBuf,
    /// pgbench clients.
    #[arg(long, default_value_t = 32)]
    pgbench_clients: usize,
    /// The pgbench binary (default: on PATH, else /usr/lib/postgresql/*/bin/pgbench).
    #[arg(long)]
    pgbench: Option<PathBuf>,
    /// Skip the pgbench comparison.
    #[arg(long)]
    skip_pgbench: bool,
    /// Skip `zeta verify` at the end.
    #[arg(long)]
    skip_verify: bool,
    /// Exit 3 when a target of issue 4 is missed (they are always reported).
    #[arg(long)]
    check_targets: bool,
    /// Load-generator threads (1 keeps it to one core of the shared machine).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Random seed of the request mix.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// Balance given to every uniform account, and to each hot / one-account account.
const UNIFORM_FUNDING: u64 = 1_000_000_000;
const HOT_FUNDING: u64 = 1_000_000_000_000;
/// Largest amount the API accepts (2^53 - 1).
const MAX_AMOUNT: u64 = 9_007_199_254_740_991;

#[derive(Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: Option<String>,
    memory_mib: Option<u64>,
    kernel: Option<String>,
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string()),
        memory_mib: meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|k| k / 1024),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_string()),
    }
}

#[derive(Serialize)]
struct Config {
    scenarios: Vec<&'static str>,
    duration_secs: u64,
    connections: usize,
    batch_connections: usize,
    batch_size: usize,
    uniform_accounts: usize,
    hot_accounts: usize,
    smoke: bool,
    backend: String,
    server: String,
    pgbench_clients: usize,
    client_threads: usize,
    seed: u64,
}

#[derive(Serialize)]
struct Setup {
    accounts_created: usize,
    seconds: f64,
    peak_rss_mib: Option<f64>,
}

#[derive(Serialize, Default)]
struct VerifyResult {
    ran: bool,
    ok: bool,
    output: String,
}

#[derive(Serialize)]
struct Report {
    started_at: String,
    machine: Machine,
    config: Config,
    setup: Option<Setup>,
    scenarios: Vec<ScenarioResult>,
    server_exit: Option<String>,
    verify: VerifyResult,
    targets: Vec<report::Target>,
    /// No 5xx or transport error and a clean verify.
    ok: bool,
    error: Option<String>,
}

/// Resolves the server binary: as given, else relative to the workspace of this crate.
fn resolve_server_bin(given: &Path) -> PathBuf {
    if given.is_file() || given.is_absolute() {
        return given.to_path_buf();
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(given);
    if workspace.is_file() {
        workspace
    } else {
        given.to_path_buf()
    }
}

/// Flushes dirty pages so that no run pays for the previous one's writes.
async fn checkpoint(url: Option<&str>) {
    if let Some(url) = url
        && let Ok(mut conn) = sqlx::PgConnection::connect(url).await
    {
        let _ = sqlx::raw_sql("CHECKPOINT").execute(&mut conn).await;
        let _ = conn.close().await;
    }
}

fn random_key() -> String {
    let mut bytes = [0_u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("zeta_{}", hex::encode(bytes))
}

struct Run {
    report: Report,
    /// Kept on success: removed; on failure: left for inspection.
    work_dir: PathBuf,
}

async fn run(args: Args, report: &mut Report, work_dir: &Path) -> Result<(), BoxError> {
    let backend = server::backend(&args.database_url)?;
    let scenarios: Vec<Scenario> = match args.scenario {
        ScenarioArg::All => Scenario::ALL.to_vec(),
        ScenarioArg::TransfersUniform => vec![Scenario::TransfersUniform],
        ScenarioArg::TransfersHot => vec![Scenario::TransfersHot],
        ScenarioArg::DebitOneAccount => vec![Scenario::DebitOneAccount],
        ScenarioArg::Batch => vec![Scenario::Batch],
        ScenarioArg::Reads => vec![Scenario::Reads],
    };
    let duration = Duration::from_secs(report.config.duration_secs);
    let uniform_n = report.config.uniform_accounts;
    let server_bin = resolve_server_bin(&args.server_bin);
    let pg_url = match backend {
        Backend::Postgres => Some(PgUrl::parse(&args.database_url)?),
        Backend::Sqlite => None,
    };

    // pgbench is optional equipment: find it before anything runs.
    let wants_pgbench = backend == Backend::Postgres
        && !args.skip_pgbench
        && scenarios.iter().any(|s| s.has_pgbench());
    let pgbench_bin = if wants_pgbench {
        let found = pgbench::find_pgbench(args.pgbench.as_deref());
        if found.is_none() {
            eprintln!(
                "warning: pgbench not found (install postgresql-contrib or pass --pgbench); \
                 the comparison is skipped"
            );
        }
        found
    } else {
        None
    };

    // 1. The database and the server.
    let mut guard: Option<ServerGuard> = None;
    let (addr, api_key) = match &args.target_url {
        Some(url) => {
            let key = args.api_key.clone().ok_or("--target-url needs --api-key")?;
            (http::Target::parse_url(url)?, key)
        }
        None => {
            match (&pg_url, backend) {
                (Some(pg), Backend::Postgres) => {
                    eprintln!("recreating database {}", pg.database);
                    server::recreate_pg_database(pg, &pg.database).await?;
                }
                _ => {
                    let path = server::sqlite_path(&args.database_url);
                    eprintln!("removing SQLite database {}", path.display());
                    server::remove_sqlite(&path)?;
                }
            }
            let key = random_key();
            eprintln!("starting {} (RUST_LOG=warn)", server_bin.display());
            let mut g = ServerGuard::start(
                &server_bin,
                &args.database_url,
                &key,
                &args.server_env,
                work_dir.join("server.log"),
            )?;
            g.wait_ready(Duration::from_secs(120)).await?;
            eprintln!("server ready on {} (pid {})", g.addr, g.pid);
            let addr = g.addr;
            guard = Some(g);
            (addr, key)
        }
    };
    let server_pid = guard.as_ref().map(|g| g.pid).or(args.server_pid);
    let target = http::Target::new(addr, &api_key)?;

    // 2. Accounts and money, through the API.
    let setup_started = Instant::now();
    let bench_dbs: Vec<String> = pg_url
        .as_ref()
        .map(|pg| vec![pg.database.clone()])
        .unwrap_or_default();
    let admin_url = pg_url.as_ref().map(|pg| pg.with_database("postgres"));
    let setup_sampler = Sampler::start(server_pid, bench_dbs.clone());
    let setup_conns = args.connections.clamp(1, 64);
    let needs_uniform = scenarios.iter().any(|s| s.uses_uniform_accounts());
    let needs_hot = scenarios.contains(&Scenario::TransfersHot);
    let needs_one = scenarios.contains(&Scenario::DebitOneAccount);
    eprintln!("setup: creating accounts through POST /v1/accounts");
    let treasury = setup::create_accounts(&target, "treasury", 1, 1)
        .await?
        .remove(0);
    let uniform = if needs_uniform {
        setup::create_accounts(&target, "uniform", uniform_n, setup_conns).await?
    } else {
        Vec::new()
    };
    let hot = if needs_hot {
        setup::create_accounts(&target, "hot", args.hot_accounts.max(2), setup_conns).await?
    } else {
        Vec::new()
    };
    let one = if needs_one {
        setup::create_accounts(&target, "one", 1, 1).await?
    } else {
        Vec::new()
    };
    let mut funding: Vec<(String, u64)> = Vec::new();
    funding.extend(uniform.iter().map(|a| (a.clone(), UNIFORM_FUNDING)));
    funding.extend(hot.iter().map(|a| (a.clone(), HOT_FUNDING)));
    funding.extend(one.iter().map(|a| (a.clone(), HOT_FUNDING)));
    let mut needed: u64 = funding.iter().map(|(_, a)| a).sum::<u64>() / 10 * 11 + 1;
    eprintln!("setup: crediting the treasury with {needed} and distributing by batch transfers");
    while needed > 0 {
        let amount = needed.min(MAX_AMOUNT);
        setup::credit(&target, &treasury, amount).await?;
        needed -= amount;
    }
    setup::distribute(&target, &treasury, &funding, 2).await?;
    report.setup = Some(Setup {
        accounts_created: 1 + uniform.len() + hot.len() + one.len(),
        seconds: (setup_started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        peak_rss_mib: setup_sampler.finish().await.0,
    });

    // The pgbench mirror, made before any measurement so its writes do not land in one.
    let mirror: Option<Mirror> = match (&pgbench_bin, &pg_url) {
        (Some(_), Some(pg)) => {
            if !server_bin.is_file() {
                return Err(format!(
                    "pgbench's mirror is migrated by `{} migrate`, which was not found",
                    server_bin.display()
                )
                .into());
            }
            let n = if needs_uniform {
                uniform_n
            } else {
                args.hot_accounts.max(2)
            };
            eprintln!("pgbench: preparing the mirror database with {n} accounts");
            Some(pgbench::prepare(pg, &server_bin, n).await?)
        }
        _ => None,
    };
    let checkpoint_url = admin_url.clone();

    // 3. The scenarios.
    let uniform = Arc::new(uniform);
    for (i, scenario) in scenarios.iter().copied().enumerate() {
        let (workload, connections, batch_size) = match scenario {
            Scenario::TransfersUniform => (
                Workload::Transfers {
                    accounts: uniform.clone(),
                },
                args.connections,
                None,
            ),
            Scenario::TransfersHot => (
                Workload::Transfers {
                    accounts: Arc::new(hot.clone()),
                },
                args.connections,
                None,
            ),
            Scenario::DebitOneAccount => (
                Workload::Debit {
                    account: one.first().cloned().ok_or("no account for debits")?,
                },
                args.connections,
                None,
            ),
            Scenario::Batch => (
                Workload::Batch {
                    accounts: uniform.clone(),
                    size: args.batch_size.clamp(1, setup::BATCH_ITEMS),
                },
                args.batch_connections,
                Some(args.batch_size.clamp(1, setup::BATCH_ITEMS)),
            ),
            Scenario::Reads => (
                Workload::Reads {
                    accounts: uniform.clone(),
                },
                args.connections,
                None,
            ),
        };
        let connections = connections.max(1);
        eprintln!(
            "== {}: {} s, {connections} connections",
            scenario.name(),
            duration.as_secs()
        );
        checkpoint(checkpoint_url.as_deref()).await;
        let engine_before = metrics::scrape(&target).await;
        let sampler = Sampler::start(server_pid, bench_dbs.clone());
        let stats = load::run(
            &target,
            &workload,
            connections,
            duration,
            args.seed.wrapping_add(i as u64 * 1_000_003),
        )
        .await?;
        let (peak_rss, cpu) = sampler.finish().await;
        let mut result =
            ScenarioResult::from_stats(scenario.name(), connections, batch_size, &stats);
        result.cpu = cpu;
        result.peak_rss_mib = peak_rss;
        result.engine = metrics::delta(engine_before, metrics::scrape(&target).await);
        eprintln!(
            "   {:.0} req/s, {} transfers/s, p99 {:.2} ms, errors {}",
            result.rps,
            result
                .transfers_per_s
                .map_or_else(|| "-".into(), |t| format!("{t:.0}")),
            result.latency.p99_ms,
            result.errors
        );
        if let Some(e) = &result.last_transport_error {
            eprintln!("   last transport error: {e}");
        }

        // 4. The pgbench baseline of the same work.
        if let (Some(bin), Some(mirror)) = (&pgbench_bin, &mirror)
            && scenario.has_pgbench()
        {
            let script = match scenario {
                Scenario::TransfersUniform => pgbench::transfer_script(mirror.accounts),
                Scenario::TransfersHot => {
                    pgbench::transfer_script(args.hot_accounts.max(2).min(mirror.accounts))
                }
                _ => pgbench::debit_script(),
            };
            let path = work_dir.join(format!("{}.sql", scenario.name()));
            std::fs::write(&path, script)?;
            for isolation in [Isolation::RepeatableRead, Isolation::ReadCommitted] {
                checkpoint(checkpoint_url.as_deref()).await;
                let run = pgbench::run(
                    bin,
                    mirror,
                    &path,
                    args.pgbench_clients,
                    duration.as_secs(),
                    isolation,
                )
                .await?;
                match &run.error {
                    Some(e) => eprintln!("   pgbench {}: FAILED {e}", isolation.label()),
                    None => eprintln!(
                        "   pgbench {}: {:.0} tps, {:.1}% retried",
                        isolation.label(),
                        run.tps,
                        run.retried_pct
                    ),
                }
                match isolation {
                    Isolation::RepeatableRead => result.pgbench_rr = Some(run),
                    Isolation::ReadCommitted => result.pgbench_rc = Some(run),
                }
            }
            result.compute_ratio();
        }
        report.scenarios.push(result);
        if let Some(g) = guard.as_mut()
            && !g.is_running()
        {
            return Err(format!(
                "the server died during {}:\n{}",
                scenario.name(),
                g.log_tail()
            )
            .into());
        }
    }

    // The server stops before verify, so that verify sees everything it committed.
    if let Some(g) = guard.take() {
        let exit = g.stop(Duration::from_secs(30)).await;
        eprintln!("server stopped: {exit}");
        report.server_exit = Some(exit);
    }

    // 5. zeta verify.
    if args.skip_verify {
        eprintln!("verify skipped (--skip-verify)");
    } else {
        eprintln!("running {} verify", server_bin.display());
        let v = server::verify(&server_bin, &args.database_url).await?;
        println!("zeta verify:\n{}", v.output);
        report.verify = VerifyResult {
            ran: true,
            ok: v.ok,
            output: v.output,
        };
    }
    Ok(())
}

fn build_report(args: &Args) -> Report {
    let smoke = args.smoke;
    let scenarios = match args.scenario {
        ScenarioArg::All => Scenario::ALL.iter().map(|s| s.name()).collect(),
        ScenarioArg::TransfersUniform => vec!["transfers-uniform"],
        ScenarioArg::TransfersHot => vec!["transfers-hot"],
        ScenarioArg::DebitOneAccount => vec!["debit-one-account"],
        ScenarioArg::Batch => vec!["batch"],
        ScenarioArg::Reads => vec!["reads"],
    };
    Report {
        started_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        machine: machine(),
        config: Config {
            scenarios,
            duration_secs: if smoke { 3 } else { args.duration_secs.max(1) },
            connections: args.connections,
            batch_connections: args.batch_connections,
            batch_size: args.batch_size,
            uniform_accounts: args
                .accounts
                .unwrap_or(if smoke { 2_000 } else { 100_000 })
                .max(2),
            hot_accounts: args.hot_accounts.max(2),
            smoke,
            backend: match server::backend(&args.database_url) {
                Ok(Backend::Postgres) => "postgres".into(),
                Ok(Backend::Sqlite) => "sqlite".into(),
                Err(_) => "unknown".into(),
            },
            server: args
                .target_url
                .clone()
                .unwrap_or_else(|| resolve_server_bin(&args.server_bin).display().to_string()),
            pgbench_clients: args.pgbench_clients,
            client_threads: args.client_threads.max(1),
            seed: args.seed,
        },
        setup: None,
        scenarios: Vec::new(),
        server_exit: None,
        verify: VerifyResult::default(),
        targets: Vec::new(),
        ok: false,
        error: None,
    }
}

async fn main_async(args: Args) -> Result<Run, BoxError> {
    let work_dir = std::env::temp_dir().join(format!("zeta-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)?;
    let mut report = build_report(&args);
    let sqlite = report.config.backend == "sqlite";
    let json_out = args.json_out.clone();
    let outcome = run(args, &mut report, &work_dir).await;
    if let Err(e) = &outcome {
        report.error = Some(e.to_string());
    }
    report.targets = report::targets(&report.scenarios, sqlite);
    let errors: u64 = report.scenarios.iter().map(|s| s.errors).sum();
    report.ok = outcome.is_ok() && errors == 0 && (report.verify.ok || !report.verify.ran);
    std::fs::write(&json_out, serde_json::to_vec_pretty(&report)?)?;
    Ok(Run { report, work_dir })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let check_targets = args.check_targets;
    let json_out = args.json_out.clone();
    let threads = args.client_threads.max(1);
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = main_async(args) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    let run = match outcome {
        None => {
            eprintln!("interrupted: the server was killed");
            return ExitCode::from(130);
        }
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        Some(Ok(run)) => run,
    };
    let report = &run.report;
    println!();
    println!("{}", report::table(&report.scenarios));
    println!("CPU used (cores; the machine has {}):", report.machine.cpus);
    println!("{}", report::cpu_table(&report.scenarios));
    let missed: Vec<&report::Target> = report.targets.iter().filter(|t| !t.met).collect();
    println!(
        "targets (issue 4): {} met, {} missed{}",
        report.targets.len() - missed.len(),
        missed.len(),
        if check_targets {
            ""
        } else {
            " (reported, not enforced)"
        }
    );
    for t in &missed {
        println!("  MISSED {}: wanted {}, got {}", t.what, t.wanted, t.got);
    }
    println!("results written to {}", json_out.display());
    if let Some(e) = &report.error {
        eprintln!(
            "error: {e}\n(server log and scripts kept in {})",
            run.work_dir.display()
        );
        return ExitCode::from(2);
    }
    let _ = std::fs::remove_dir_all(&run.work_dir);
    if report.verify.ran && !report.verify.ok {
        eprintln!("FAILED: zeta verify reports a broken invariant");
        return ExitCode::from(1);
    }
    let errors: u64 = report.scenarios.iter().map(|s| s.errors).sum();
    if errors > 0 {
        eprintln!("FAILED: {errors} 5xx responses or transport errors");
        return ExitCode::from(1);
    }
    if check_targets && !missed.is_empty() {
        eprintln!("FAILED: {} target(s) missed", missed.len());
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}
