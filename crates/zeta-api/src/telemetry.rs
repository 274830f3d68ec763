//! Prometheus metrics: names and labels of API.md ("Operations"), one recorder per process.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use zeta_engine::EngineObserver;
use zeta_store::StoreError;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Installs the process-wide recorder once and returns the handle that renders it. Every
/// unlabelled series is registered here, at zero.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("http_request_duration_seconds".into()),
                    LATENCY_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("ledger_batch_size".into()),
                        BATCH_BUCKETS,
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only when another recorder is installed already; the handle then renders
            // nothing, which a test would notice.
            let _ = metrics::set_global_recorder(recorder);
            counter!("db_retries_total").absolute(0);
            counter!("rate_limited_total").absolute(0);
            gauge!("circuit_breaker_state").set(0.0);
            gauge!("batch_requests_waiting").set(0.0);
            let _ = histogram!("ledger_batch_size");
            handle
        })
        .clone()
}

/// Records one HTTP request.
pub fn record_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    counter!(
        "http_requests_total",
        "method" => method.to_string(),
        "route" => route.to_string(),
        "status" => status.to_string()
    )
    .increment(1);
    histogram!(
        "http_request_duration_seconds",
        "method" => method.to_string(),
        "route" => route.to_string()
    )
    .record(elapsed.as_secs_f64());
}

/// Feeds the engine's events into metrics.
pub struct MetricsObserver;

impl EngineObserver for MetricsObserver {
    fn batch_committed(&self, size: usize) {
        histogram!("ledger_batch_size").record(size as f64);
    }

    fn retried(&self, _error: &StoreError) {
        counter!("db_retries_total").increment(1);
    }
}

pub fn set_pool(open: u32, idle: u32) {
    gauge!("db_pool_connections", "state" => "open").set(f64::from(open));
    gauge!("db_pool_connections", "state" => "idle").set(f64::from(idle));
    gauge!("db_pool_connections", "state" => "busy").set(f64::from(open.saturating_sub(idle)));
}

pub fn set_breaker(state: u8) {
    gauge!("circuit_breaker_state").set(f64::from(state));
}

/// A batch request waiting for its place (`request::BatchSlot`), counted in
/// `batch_requests_waiting` from creation until dropped.
pub struct BatchWait(());

impl BatchWait {
    pub fn start() -> Self {
        gauge!("batch_requests_waiting").increment(1.0);
        BatchWait(())
    }
}

impl Drop for BatchWait {
    fn drop(&mut self) {
        gauge!("batch_requests_waiting").decrement(1.0);
    }
}

pub fn rate_limited() {
    counter!("rate_limited_total").increment(1);
}
