//! The results: one row per scenario, the targets, the printed tables and the JSON file.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::load::LoadStats;
use crate::metrics::EngineDelta;
use crate::pgbench::PgbenchRun;
use crate::sysstat::CpuUse;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub connections: usize,
    /// Transfers per request (batch only).
    pub batch_size: Option<usize>,
    pub seconds: f64,
    pub requests: u64,
    pub rps: f64,
    /// Successful transfers (or debits) per second: 2xx responses, or batch items with 201.
    pub transfers_per_s: Option<f64>,
    pub latency: Latency,
    pub by_status: BTreeMap<u16, u64>,
    /// Problem codes of error responses (batch items as `item:<code>`).
    pub by_code: BTreeMap<String, u64>,
    pub transport_errors: u64,
    /// 5xx responses plus transport errors.
    pub errors: u64,
    pub last_transport_error: Option<String>,
    pub peak_rss_mib: Option<f64>,
    pub cpu: CpuUse,
    /// The engine's batches during the run, from the server's `/metrics`.
    pub engine: Option<EngineDelta>,
    pub pgbench_rr: Option<PgbenchRun>,
    pub pgbench_rc: Option<PgbenchRun>,
    /// API transfers/s divided by the better pgbench tps.
    pub ratio: Option<f64>,
}

fn ms(micros: u64) -> f64 {
    (micros as f64 / 10.0).round() / 100.0
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl ScenarioResult {
    pub fn from_stats(
        name: &str,
        connections: usize,
        batch_size: Option<usize>,
        stats: &LoadStats,
    ) -> Self {
        let secs = stats.elapsed.as_secs_f64().max(1e-9);
        let h = &stats.histogram;
        let latency = if h.is_empty() {
            Latency::default()
        } else {
            Latency {
                p50_ms: ms(h.value_at_quantile(0.50)),
                p90_ms: ms(h.value_at_quantile(0.90)),
                p99_ms: ms(h.value_at_quantile(0.99)),
                p999_ms: ms(h.value_at_quantile(0.999)),
                max_ms: ms(h.max()),
                mean_ms: (h.mean() / 10.0).round() / 100.0,
            }
        };
        Self {
            name: name.into(),
            connections,
            batch_size,
            seconds: (secs * 100.0).round() / 100.0,
            requests: stats.requests,
            rps: round1(stats.requests as f64 / secs),
            transfers_per_s: stats
                .moves_money
                .then(|| round1(stats.succeeded_moves as f64 / secs)),
            latency,
            by_status: stats.by_status.clone(),
            by_code: stats.by_code.clone(),
            transport_errors: stats.transport_errors,
            errors: stats.errors(),
            last_transport_error: stats.last_transport_error.clone(),
            ..Self::default()
        }
    }

    pub fn best_pgbench_tps(&self) -> Option<f64> {
        [&self.pgbench_rr, &self.pgbench_rc]
            .into_iter()
            .flatten()
            .filter(|r| r.error.is_none())
            .map(|r| r.tps)
            .fold(None, |best, t| Some(best.map_or(t, |b: f64| b.max(t))))
    }

    pub fn compute_ratio(&mut self) {
        self.ratio = match (self.transfers_per_s, self.best_pgbench_tps()) {
            (Some(api), Some(pg)) if pg > 0.0 => Some((api / pg * 100.0).round() / 100.0),
            _ => None,
        };
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub what: String,
    pub wanted: String,
    pub got: String,
    pub met: bool,
}

/// Checks the targets against the results.
pub fn targets(results: &[ScenarioResult], sqlite: bool) -> Vec<Target> {
    let mut out = Vec::new();
    let mut push = |what: String, wanted: String, got: String, met: bool| {
        out.push(Target {
            what,
            wanted,
            got,
            met,
        });
    };
    for r in results {
        let n = &r.name;
        let ratio_target = match n.as_str() {
            "transfers-uniform" => Some(2.0),
            "transfers-hot" => Some(4.0),
            "debit-one-account" => Some(5.0),
            _ => None,
        };
        if let Some(want) = ratio_target {
            if !sqlite {
                match r.ratio {
                    Some(ratio) => push(
                        format!("{n} API/pgbench"),
                        format!(">= {want}x"),
                        format!("{ratio:.2}x"),
                        ratio >= want,
                    ),
                    None => push(
                        format!("{n} API/pgbench"),
                        format!(">= {want}x"),
                        "no pgbench result".into(),
                        false,
                    ),
                }
            }
            push(
                format!("{n} p99"),
                "<= 25 ms".into(),
                format!("{:.2} ms", r.latency.p99_ms),
                r.latency.p99_ms <= 25.0,
            );
        }
        if sqlite && n == "transfers-uniform" {
            let t = r.transfers_per_s.unwrap_or(0.0);
            push(
                format!("{n} (SQLite)"),
                ">= 10000 transfers/s".into(),
                format!("{t:.0}/s"),
                t >= 10_000.0,
            );
        }
        if n == "batch" {
            let t = r.transfers_per_s.unwrap_or(0.0);
            push(
                "batch".into(),
                ">= 50000 transfers/s".into(),
                format!("{t:.0}/s"),
                t >= 50_000.0,
            );
        }
        push(
            format!("{n} 5xx + transport errors"),
            "0".into(),
            r.errors.to_string(),
            r.errors == 0,
        );
        if let Some(rss) = r.peak_rss_mib {
            push(
                format!("{n} server peak RSS"),
                "<= 100 MB".into(),
                format!("{rss:.1} MiB"),
                rss <= 100.0,
            );
        }
    }
    out
}

fn opt(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

fn codes(r: &ScenarioResult) -> String {
    let mut parts = Vec::new();
    if r.errors > 0 {
        parts.push(format!("ERRORS {}", r.errors));
    }
    for (status, n) in &r.by_status {
        if *status >= 500 {
            parts.push(format!("{status}:{n}"));
        }
    }
    if r.transport_errors > 0 {
        parts.push(format!("transport:{}", r.transport_errors));
    }
    for (code, n) in &r.by_code {
        parts.push(format!("{code}:{n}"));
    }
    if parts.is_empty() {
        "0".into()
    } else {
        parts.join(" ")
    }
}

fn pg_cell(run: &Option<PgbenchRun>, with_retries: bool) -> String {
    match run {
        None => "-".into(),
        Some(r) if r.error.is_some() => "failed".into(),
        Some(r) if with_retries => format!("{:.0} ({:.1}%)", r.tps, r.retried_pct),
        Some(r) => format!("{:.0}", r.tps),
    }
}

fn render(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| {
                if c == 0 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        out.push_str(line.join(" | ").trim_end());
        out.push('\n');
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&rule.join("-|-"));
            out.push('\n');
        }
    }
    out
}

/// The main table.
pub fn table(results: &[ScenarioResult]) -> String {
    let mut rows = vec![
        [
            "scenario",
            "API rps",
            "transfers/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "errors / codes",
            "pgbench RR tps (retried)",
            "pgbench RC tps",
            "ratio",
            "peak RSS MB",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in results {
        rows.push(vec![
            r.name.clone(),
            format!("{:.0}", r.rps),
            opt(r.transfers_per_s, 0),
            format!("{:.2}", r.latency.p50_ms),
            format!("{:.2}", r.latency.p99_ms),
            format!("{:.2}", r.latency.p999_ms),
            codes(r),
            pg_cell(&r.pgbench_rr, true),
            pg_cell(&r.pgbench_rc, false),
            r.ratio.map_or_else(|| "-".into(), |x| format!("{x:.2}x")),
            opt(r.peak_rss_mib, 1),
        ]);
    }
    render(&rows)
}

/// Where the CPU went, in cores (CPU-seconds per second).
pub fn cpu_table(results: &[ScenarioResult]) -> String {
    let mut rows = vec![
        [
            "run",
            "server",
            "pg (bench)",
            "pg (bg)",
            "pg (other dbs)",
            "load-gen",
            "pgbench",
            "others",
            "machine busy",
            "engine tx/s",
            "cmds/tx",
            "engine retries",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let row = |label: String, c: &CpuUse, engine: &Option<EngineDelta>, secs: f64| {
        let per_s = |n: i64| format!("{:.0}", n as f64 / secs.max(1e-9));
        vec![
            label,
            opt(c.server, 2),
            format!("{:.2}", c.postgres_bench),
            format!("{:.2}", c.postgres_background),
            format!("{:.2}", c.postgres_other_dbs),
            format!("{:.2}", c.load_generator),
            format!("{:.2}", c.child_processes),
            opt(c.others, 2),
            opt(c.machine_busy, 2),
            engine
                .as_ref()
                .map_or_else(|| "-".into(), |e| per_s(e.batches as i64)),
            engine
                .as_ref()
                .map_or_else(|| "-".into(), |e| format!("{:.1}", e.mean_batch)),
            engine
                .as_ref()
                .map_or_else(|| "-".into(), |e| e.retries.to_string()),
        ]
    };
    for r in results {
        rows.push(row(
            format!("{} (API)", r.name),
            &r.cpu,
            &r.engine,
            r.seconds,
        ));
        for run in [&r.pgbench_rr, &r.pgbench_rc].into_iter().flatten() {
            rows.push(row(
                format!("{} (pgbench {})", r.name, run.isolation),
                &run.cpu,
                &None,
                run.seconds,
            ));
        }
    }
    render(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_uses_the_better_baseline() {
        let mut r = ScenarioResult {
            name: "transfers-hot".into(),
            transfers_per_s: Some(10_000.0),
            pgbench_rr: Some(PgbenchRun {
                tps: 1000.0,
                ..PgbenchRun::default()
            }),
            pgbench_rc: Some(PgbenchRun {
                tps: 2500.0,
                ..PgbenchRun::default()
            }),
            ..ScenarioResult::default()
        };
        r.compute_ratio();
        assert_eq!(r.ratio, Some(4.0));
        let t = targets(&[r], false);
        assert!(t.iter().all(|t| t.met), "{t:?}");
        assert!(table(&[]).starts_with("scenario"));
    }
}
