//! A circuit breaker around the database. After `failure_threshold` consecutive failures it
//! opens: requests fail at once with 503 and `Retry-After` instead of waiting on a dead pool.
//! After `open_for` it lets one probe through (half-open); a success closes it, a failure opens
//! it again. A probe whose request went away before the database answered is presumed lost
//! after [`PROBE_TIMEOUT`], and another is let through.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::ApiError;
use crate::telemetry;

#[derive(Clone, Debug)]
pub struct BreakerSettings {
    pub failure_threshold: u32,
    pub open_for: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(2),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The `circuit_breaker_state` gauge: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// How long a probe may be out before it is presumed lost: the default request timeout, by
/// which its request has been answered or dropped (a probe still out after a longer configured
/// timeout only lets a second probe through).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

struct Inner {
    state: BreakerState,
    failures: u32,
    opened_at: Instant,
    probing: bool,
    probe_started: Instant,
}

pub struct CircuitBreaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
    probe_timeout: Duration,
}

impl CircuitBreaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: 0,
                opened_at: Instant::now(),
                probing: false,
                probe_started: Instant::now(),
            }),
            probe_timeout: PROBE_TIMEOUT,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    fn retry_after(&self, inner: &Inner) -> u64 {
        let left = self
            .settings
            .open_for
            .saturating_sub(inner.opened_at.elapsed());
        left.as_secs().max(1)
    }

    /// May this request go to the database? `Err(503)` while open (and while a probe is out).
    pub fn admit(&self) -> Result<(), ApiError> {
        let mut inner = self.lock();
        match inner.state {
            BreakerState::Closed => Ok(()),
            BreakerState::Open if inner.opened_at.elapsed() >= self.settings.open_for => {
                inner.state = BreakerState::HalfOpen;
                inner.probing = true;
                inner.probe_started = Instant::now();
                telemetry::set_breaker(BreakerState::HalfOpen.gauge());
                Ok(())
            }
            // No probe out, or the one out was lost (its request dropped before it was observed).
            BreakerState::HalfOpen
                if !inner.probing || inner.probe_started.elapsed() >= self.probe_timeout =>
            {
                inner.probing = true;
                inner.probe_started = Instant::now();
                Ok(())
            }
            BreakerState::Open | BreakerState::HalfOpen => Err(ApiError::Unavailable {
                retry_after_secs: self.retry_after(&inner),
            }),
        }
    }

    pub fn success(&self) {
        let mut inner = self.lock();
        inner.failures = 0;
        inner.probing = false;
        if inner.state != BreakerState::Closed {
            tracing::info!("database reachable again; circuit closed");
            inner.state = BreakerState::Closed;
            telemetry::set_breaker(BreakerState::Closed.gauge());
        }
    }

    pub fn failure(&self) {
        let mut inner = self.lock();
        inner.failures = inner.failures.saturating_add(1);
        inner.probing = false;
        let trip = match inner.state {
            BreakerState::Closed => inner.failures >= self.settings.failure_threshold,
            BreakerState::HalfOpen => true,
            BreakerState::Open => false,
        };
        if trip {
            tracing::warn!(
                failures = inner.failures,
                "database failing; circuit opened"
            );
            inner.state = BreakerState::Open;
            inner.opened_at = Instant::now();
            telemetry::set_breaker(BreakerState::Open.gauge());
        }
    }

    /// Feeds the outcome of a database call.
    pub fn observe<T>(&self, result: &Result<T, ApiError>) {
        match result {
            Err(ApiError::Unavailable { .. }) => self.failure(),
            _ => self.success(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_then_half_opens_and_closes() {
        let b = CircuitBreaker::new(BreakerSettings {
            failure_threshold: 3,
            open_for: Duration::from_millis(0),
        });
        assert!(b.admit().is_ok());
        b.failure();
        b.failure();
        assert_eq!(b.state(), BreakerState::Closed);
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        // open_for elapsed: one probe is admitted, the next waits for it.
        assert!(b.admit().is_ok());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(matches!(b.admit(), Err(ApiError::Unavailable { .. })));
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.admit().is_ok());
    }

    /// A probe never observed (its request was dropped mid-call) does not keep the breaker
    /// half-open for good: after the probe timeout another probe goes through.
    #[test]
    fn a_lost_probe_is_replaced_after_the_probe_timeout() {
        let mut b = CircuitBreaker::new(BreakerSettings {
            failure_threshold: 1,
            open_for: Duration::from_millis(0),
        });
        b.probe_timeout = Duration::from_millis(50);
        b.failure();
        assert!(b.admit().is_ok(), "the probe");
        assert!(matches!(b.admit(), Err(ApiError::Unavailable { .. })));
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.admit().is_ok(), "the lost probe is replaced");
        assert!(matches!(b.admit(), Err(ApiError::Unavailable { .. })));
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn open_breaker_refuses_fast_with_retry_after() {
        let b = CircuitBreaker::new(BreakerSettings {
            failure_threshold: 1,
            open_for: Duration::from_secs(30),
        });
        b.failure();
        match b.admit() {
            Err(ApiError::Unavailable { retry_after_secs }) => {
                assert!((1..=30).contains(&retry_after_secs))
            }
            other => panic!("expected 503, got {other:?}"),
        }
        // A failed probe re-opens it.
        let b = CircuitBreaker::new(BreakerSettings {
            failure_threshold: 1,
            open_for: Duration::from_millis(0),
        });
        b.failure();
        assert!(b.admit().is_ok());
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
    }
}
