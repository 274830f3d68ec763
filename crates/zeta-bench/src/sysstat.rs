//! What the machine spends during a measured run, from `/proc`: the server's resident memory
//! (sampled every 200 ms, plus the kernel's high-water mark), and CPU time split between the
//! server, PostgreSQL (backends of the benchmark's databases, its background processes, and
//! backends of other databases — the machine is shared), the load generator (this process), its
//! children (pgbench) and everything else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Clock ticks per second of `/proc/*/stat` times.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// `(utime + stime, cutime + cstime)` of a process, in ticks.
fn proc_ticks(path: &str) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // utime is field 14 overall = index 11 here; stime 12, cutime 13, cstime 14.
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some((n(11)? + n(12)?, n(13)? + n(14)?))
}

/// `(busy, total)` ticks of the whole machine, summed over its cores.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_ascii_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PgKind {
    /// A backend connected to one of the benchmark's databases.
    Bench,
    /// Postmaster, checkpointer, WAL writer, autovacuum, …: shared by every database.
    Background,
    /// A backend of some other database (other users of the machine).
    Other,
}

/// What a process is, if it is PostgreSQL.
fn classify(pid: &str, bench_dbs: &[String]) -> Option<PgKind> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    if comm.trim_end() != "postgres" {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    // A backend: "postgres: 15/main: USER DATABASE HOST(PORT) STATE".
    let Some(rest) = cmdline.strip_prefix("postgres: ") else {
        return Some(PgKind::Background);
    };
    let after_cluster = rest.split_once(": ").map_or(rest, |(_, r)| r);
    let words: Vec<&str> = after_cluster.split_ascii_whitespace().collect();
    match words.as_slice() {
        [_user, db, host, ..] if host.contains('(') || host.starts_with('[') => {
            if bench_dbs.iter().any(|b| b == db) {
                Some(PgKind::Bench)
            } else {
                Some(PgKind::Other)
            }
        }
        _ => Some(PgKind::Background),
    }
}

#[derive(Default)]
struct PgState {
    /// Per pid: kind (None = not PostgreSQL), ticks at first sight, ticks at last sight.
    procs: HashMap<u32, (Option<PgKind>, u64, u64)>,
    peak_rss_kib: u64,
}

fn scan(state: &mut PgState, bench_dbs: &[String], first: bool) {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid_str) = name.to_str() else {
            continue;
        };
        let Ok(pid) = pid_str.parse::<u32>() else {
            continue;
        };
        let kind = match state.procs.get(&pid) {
            Some((kind, _, _)) => *kind,
            None => {
                let kind = classify(pid_str, bench_dbs);
                // A process first seen after the start did all its work within the run.
                state.procs.insert(pid, (kind, 0, 0));
                kind
            }
        };
        if kind.is_none() {
            continue;
        }
        if let Some((own, _)) = proc_ticks(&format!("/proc/{pid_str}/stat"))
            && let Some(entry) = state.procs.get_mut(&pid)
        {
            if first {
                entry.1 = own;
            }
            entry.2 = entry.2.max(own);
        }
    }
}

/// Samples RSS and CPU from the start of a measured run to its end.
pub struct Sampler {
    server_pid: Option<u32>,
    bench_dbs: Arc<Vec<String>>,
    state: Arc<Mutex<PgState>>,
    task: tokio::task::JoinHandle<()>,
    started: Instant,
    server_ticks: Option<u64>,
    own: (u64, u64),
    machine: Option<(u64, u64)>,
    hwm_reset: bool,
}

fn lock(state: &Mutex<PgState>) -> std::sync::MutexGuard<'_, PgState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sampler {
    /// Starts sampling; `bench_dbs` are the databases whose backends count as the benchmark's.
    pub fn start(server_pid: Option<u32>, bench_dbs: Vec<String>) -> Self {
        let bench_dbs = Arc::new(bench_dbs);
        let hwm_reset = server_pid.is_some_and(reset_peak);
        let mut initial = PgState::default();
        scan(&mut initial, &bench_dbs, true);
        if let Some(pid) = server_pid {
            initial.peak_rss_kib = status_kib(pid, "VmRSS:").unwrap_or(0);
        }
        let state = Arc::new(Mutex::new(initial));
        let task = tokio::spawn({
            let state = state.clone();
            let bench_dbs = bench_dbs.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let mut s = lock(&state);
                    scan(&mut s, &bench_dbs, false);
                    if let Some(rss) = server_pid.and_then(|p| status_kib(p, "VmRSS:")) {
                        s.peak_rss_kib = s.peak_rss_kib.max(rss);
                    }
                }
            }
        });
        let own = proc_ticks("/proc/self/stat").unwrap_or((0, 0));
        Self {
            server_pid,
            bench_dbs,
            state,
            task,
            started: Instant::now(),
            server_ticks: server_pid
                .and_then(|p| proc_ticks(&format!("/proc/{p}/stat")).map(|t| t.0)),
            own,
            machine: machine_ticks(),
            hwm_reset,
        }
    }

    /// Stops sampling: the server's peak RSS in MiB (when its pid is known) and the CPU use.
    pub async fn finish(self) -> (Option<f64>, CpuUse) {
        self.task.abort();
        let _ = self.task.await;
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let ticks = clock_ticks();
        let cores = |t: u64| round2(t as f64 / ticks / secs);
        let mut s = lock(&self.state);
        scan(&mut s, &self.bench_dbs, false);
        let mut pg = [0_u64; 3];
        for (kind, first, last) in s.procs.values() {
            let slot = match kind {
                Some(PgKind::Bench) => 0,
                Some(PgKind::Background) => 1,
                Some(PgKind::Other) => 2,
                None => continue,
            };
            pg[slot] += last.saturating_sub(*first);
        }
        let mut peak_kib = s.peak_rss_kib;
        drop(s);
        let server = match (
            self.server_ticks,
            self.server_pid
                .and_then(|p| proc_ticks(&format!("/proc/{p}/stat")).map(|t| t.0)),
        ) {
            (Some(a), Some(b)) => Some(cores(b.saturating_sub(a))),
            _ => None,
        };
        let own = proc_ticks("/proc/self/stat").unwrap_or(self.own);
        let load_generator = cores(own.0.saturating_sub(self.own.0));
        let child_processes = cores(own.1.saturating_sub(self.own.1));
        let machine_busy = match (self.machine, machine_ticks()) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                let cpus = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
                Some(round2(
                    b1.saturating_sub(b0) as f64 / (t1 - t0) as f64 * cpus,
                ))
            }
            _ => None,
        };
        let (postgres_bench, postgres_background, postgres_other_dbs) =
            (cores(pg[0]), cores(pg[1]), cores(pg[2]));
        let others = machine_busy.map(|m| {
            round2(
                (m - server.unwrap_or(0.0)
                    - postgres_bench
                    - postgres_background
                    - postgres_other_dbs
                    - load_generator
                    - child_processes)
                    .max(0.0),
            )
        });
        if let Some(pid) = self.server_pid {
            if let Some(rss) = status_kib(pid, "VmRSS:") {
                peak_kib = peak_kib.max(rss);
            }
            if self.hwm_reset
                && let Some(hwm) = status_kib(pid, "VmHWM:")
            {
                peak_kib = peak_kib.max(hwm);
            }
        }
        let peak = self.server_pid.map(|_| round2(peak_kib as f64 / 1024.0));
        (
            peak,
            CpuUse {
                server,
                postgres_bench,
                postgres_background,
                postgres_other_dbs,
                load_generator,
                child_processes,
                machine_busy,
                others,
            },
        )
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Cores (CPU-seconds per second) used during a measured interval.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CpuUse {
    pub server: Option<f64>,
    /// PostgreSQL backends of the benchmark's databases (the server's pool, or pgbench's).
    pub postgres_bench: f64,
    /// Postmaster, WAL writer, checkpointer, autovacuum (shared by all databases).
    pub postgres_background: f64,
    /// Backends of other databases: other users of the shared machine.
    pub postgres_other_dbs: f64,
    /// This process (the HTTP load generator).
    pub load_generator: f64,
    /// Child processes of this one that ended in the interval (pgbench).
    pub child_processes: f64,
    /// The whole machine, out of `available_parallelism` cores.
    pub machine_busy: Option<f64>,
    /// `machine_busy` less all of the above: other processes, the kernel.
    pub others: Option<f64>,
}

/// A `Vm…:` field of `/proc/PID/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resets the kernel's peak-RSS counter (VmHWM) of a process; false when not allowed.
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), b"5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_counters() {
        let pid = std::process::id();
        assert!(status_kib(pid, "VmRSS:").unwrap() > 0);
        assert!(proc_ticks("/proc/self/stat").is_some());
        assert!(machine_ticks().is_some());
        assert!(classify(&pid.to_string(), &[]).is_none());
    }
}
