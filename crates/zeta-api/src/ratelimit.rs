//! Rate limiting: a token bucket per API key (per client address for requests without a valid
//! key), from `governor`. Buckets live in each instance (the usual convention: N instances
//! allow N times the rate); `RateLimit-*` headers describe the bucket that was charged.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use uuid::Uuid;

/// Whose tokens a request spends.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Bucket {
    Key(Uuid),
    Address(IpAddr),
    /// No key and no known address (in-process calls).
    Unknown,
}

/// The state of a bucket after a request, for the `RateLimit-*` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateInfo {
    /// The burst size.
    pub limit: u32,
    /// Tokens left.
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct RateLimitSettings {
    /// Tokens added per second.
    pub rps: u32,
    /// Bucket size.
    pub burst: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            rps: 1000,
            burst: 2000,
        }
    }
}

type Keyed =
    RateLimiter<Bucket, DefaultKeyedStateStore<Bucket>, DefaultClock, StateInformationMiddleware>;

pub struct Limiter {
    inner: Keyed,
    clock: DefaultClock,
    settings: RateLimitSettings,
    checks: AtomicU64,
}

/// Buckets idle long enough to be full are forgotten every this many checks.
const SHRINK_EVERY: u64 = 50_000;

impl Limiter {
    pub fn new(settings: RateLimitSettings) -> Self {
        let rps = NonZeroU32::new(settings.rps.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(settings.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let clock = DefaultClock::default();
        let inner = RateLimiter::dashmap_with_clock(
            Quota::per_second(rps).allow_burst(burst),
            clock.clone(),
        )
        .with_middleware::<StateInformationMiddleware>();
        Self {
            inner,
            clock,
            settings: RateLimitSettings {
                rps: rps.get(),
                burst: burst.get(),
            },
            checks: AtomicU64::new(0),
        }
    }

    fn reset_secs(&self, missing: u32) -> u64 {
        u64::from(missing).div_ceil(u64::from(self.settings.rps))
    }

    /// Spends one token: `Ok` with the bucket's state, or `Err` with it and the seconds to wait.
    pub fn check(&self, bucket: &Bucket) -> Result<RateInfo, (RateInfo, u64)> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SHRINK_EVERY == SHRINK_EVERY - 1 {
            self.inner.retain_recent();
        }
        let burst = self.settings.burst;
        match self.inner.check_key(bucket) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Ok(RateInfo {
                    limit: burst,
                    remaining,
                    reset_secs: self.reset_secs(burst - remaining.min(burst)),
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Err((
                    RateInfo {
                        limit: burst,
                        remaining: 0,
                        reset_secs: self.reset_secs(burst),
                    },
                    retry_after.max(1),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let limiter = Limiter::new(RateLimitSettings { rps: 1, burst: 3 });
        let key = Bucket::Key(Uuid::nil());
        let remaining: Vec<u32> = (0..3)
            .map(|_| limiter.check(&key).expect("within burst").remaining)
            .collect();
        assert_eq!(remaining, vec![2, 1, 0]);
        let (info, retry) = limiter.check(&key).expect_err("over the burst");
        assert_eq!((info.limit, info.remaining, info.reset_secs), (3, 0, 3));
        assert_eq!(retry, 1);
        // Another bucket is untouched.
        let other = limiter.check(&Bucket::Unknown).expect("own bucket");
        assert_eq!(other.remaining, 2);
    }
}
