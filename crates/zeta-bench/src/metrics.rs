//! The server's own view of a run, from `GET /metrics` (when it has one): how many database
//! transactions the ledger engine committed, how many commands each carried, how many retries.

use std::sync::Arc;

use hyper::Method;
use serde::Serialize;

use crate::http::{Conn, Target};

#[derive(Clone, Copy, Default)]
pub struct EngineCounters {
    batches: f64,
    commands: f64,
    retries: f64,
}

/// What the engine did during a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EngineDelta {
    /// Database transactions committed by the engine (`ledger_batch_size_count`).
    pub batches: u64,
    /// Commands they carried (`ledger_batch_size_sum`).
    pub commands: u64,
    /// Commands per committed transaction.
    pub mean_batch: f64,
    /// `db_retries_total`: batches retried after a serialization failure, deadlock or outage.
    pub retries: u64,
}

/// The value of an unlabelled series in Prometheus text.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value = rest.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

pub fn parse(text: &str) -> Option<EngineCounters> {
    Some(EngineCounters {
        batches: series(text, "ledger_batch_size_count")?,
        commands: series(text, "ledger_batch_size_sum")?,
        retries: series(text, "db_retries_total").unwrap_or(0.0),
    })
}

/// Scrapes `/metrics`; `None` when the server has no such endpoint.
pub async fn scrape(target: &Arc<Target>) -> Option<EngineCounters> {
    let mut conn = Conn::new(target.clone());
    let (status, body) = conn.call(Method::GET, "/metrics", None).await.ok()?;
    if status != 200 {
        return None;
    }
    parse(&String::from_utf8_lossy(&body))
}

pub fn delta(before: Option<EngineCounters>, after: Option<EngineCounters>) -> Option<EngineDelta> {
    let (b, a) = (before?, after?);
    let batches = (a.batches - b.batches).max(0.0);
    let commands = (a.commands - b.commands).max(0.0);
    Some(EngineDelta {
        batches: batches as u64,
        commands: commands as u64,
        mean_batch: if batches > 0.0 {
            (commands / batches * 10.0).round() / 10.0
        } else {
            0.0
        },
        retries: (a.retries - b.retries).max(0.0) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_engine_series() {
        let text = "# TYPE ledger_batch_size histogram\n\
                    ledger_batch_size_bucket{le=\"1\"} 3\n\
                    ledger_batch_size_sum 120\n\
                    ledger_batch_size_count 10\n\
                    db_retries_total 2\n";
        let before = parse("ledger_batch_size_sum 20\nledger_batch_size_count 5\n");
        let d = delta(before, parse(text)).unwrap();
        assert_eq!((d.batches, d.commands, d.retries), (5, 100, 2));
        assert!((d.mean_batch - 20.0).abs() < 1e-9);
        assert!(parse("nothing").is_none());
    }
}
