//! Zeta's HTTP API (axum): router, strict extractors, API keys, idempotency and problem errors.
//! Handlers contain no SQL: reads go to the [`Store`], every change to the ledger [`Engine`].

pub mod auth;
pub mod breaker;
mod command;
pub mod error;
pub mod json;
pub mod openapi;
pub mod ratelimit;
pub mod request;
mod routes;
pub mod telemetry;
pub mod views;

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::middleware;
use tokio::net::TcpListener;
use uuid::Uuid;
use zeta_engine::{Engine, EngineError};
use zeta_store::{Store, StoreError};

use crate::breaker::{BreakerSettings, CircuitBreaker};
use crate::ratelimit::{Limiter, RateLimitSettings};
pub use error::ApiError;
pub use routes::{V1_ROUTES, V1Route};

/// `ZETA_REQUEST_TIMEOUT_SECS`'s default.
pub const DEFAULT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `ZETA_BATCH_CONCURRENCY`'s default: batch requests handled at once.
pub const DEFAULT_BATCH_CONCURRENCY: usize = 2;

/// Everything a handler needs, assembled once at start.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub engine: Arc<Engine>,
    pub breaker: Arc<CircuitBreaker>,
    pub limiter: Arc<Limiter>,
    /// API-key lookups, shared by concurrent requests.
    pub keys: Arc<auth::KeyLookups>,
    in_flight: Arc<Mutex<HashSet<(Uuid, String)>>>,
    shutting_down: Arc<AtomicBool>,
    /// Longest time one request may take before it is answered 503 (unless its command has
    /// been taken into a batch: then the batch's answer is awaited).
    pub request_timeout: std::time::Duration,
    /// Places for batch requests being handled (`request::BatchSlot`).
    batch_slots: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, engine: Arc<Engine>) -> Self {
        Self::with_breaker(store, engine, BreakerSettings::default())
    }

    pub fn with_breaker(
        store: Arc<dyn Store>,
        engine: Arc<Engine>,
        breaker: BreakerSettings,
    ) -> Self {
        telemetry::handle();
        Self {
            keys: Arc::new(auth::KeyLookups::start(store.clone())),
            store,
            engine,
            breaker: Arc::new(CircuitBreaker::new(breaker)),
            limiter: Arc::new(Limiter::new(RateLimitSettings::default())),
            in_flight: Arc::default(),
            shutting_down: Arc::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            batch_slots: Arc::new(tokio::sync::Semaphore::new(DEFAULT_BATCH_CONCURRENCY)),
        }
    }

    /// Replaces how many batch requests are handled at once ([`DEFAULT_BATCH_CONCURRENCY`]
    /// otherwise; at least 1).
    pub fn with_batch_concurrency(mut self, slots: usize) -> Self {
        self.batch_slots = Arc::new(tokio::sync::Semaphore::new(slots.max(1)));
        self
    }

    /// Replaces the request timeout ([`DEFAULT_REQUEST_TIMEOUT`] otherwise).
    pub fn with_request_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Replaces the rate limits (`RateLimitSettings::default()` otherwise).
    pub fn with_rate_limit(mut self, settings: RateLimitSettings) -> Self {
        self.limiter = Arc::new(Limiter::new(settings));
        self
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Submits a request's command to the engine, feeding the circuit breaker. Once queued, the
    /// command is left in the request's [`request::QueuedSlot`], so that a request timing out
    /// withdraws it if it has not started yet, and otherwise waits for its answer.
    pub(crate) async fn submit(
        &self,
        ctx: &request::Ctx,
        envelope: zeta_ledger::Envelope,
        idempotency: Option<zeta_engine::IdempotencySpec>,
    ) -> Result<zeta_engine::Reply, ApiError> {
        let result = match self.engine.enqueue(envelope, idempotency).await {
            Ok(queued) => {
                ctx.queued.set(queued.withdrawal());
                queued.reply().await
            }
            Err(e) => Err(e),
        }
        .map_err(engine_error);
        self.breaker.observe(&result);
        result
    }

    /// Marks an idempotency key as being processed by this instance; 409 when it already is.
    pub(crate) fn claim_key(&self, scope: Uuid, key: &str) -> Result<KeyClaim, ApiError> {
        let entry = (scope, key.to_string());
        let mut set = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if !set.insert(entry.clone()) {
            return Err(ApiError::IdempotencyKeyInUse);
        }
        Ok(KeyClaim {
            set: self.in_flight.clone(),
            entry,
        })
    }
}

/// Releases an in-flight idempotency key when the request ends, however it ends.
pub(crate) struct KeyClaim {
    set: Arc<Mutex<HashSet<(Uuid, String)>>>,
    entry: (Uuid, String),
}

impl Drop for KeyClaim {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.entry);
    }
}

/// Seconds a client should wait after a 503.
pub const RETRY_AFTER_SECS: u64 = 1;

pub(crate) fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(_) | StoreError::Unavailable(_) => ApiError::Unavailable {
            retry_after_secs: RETRY_AFTER_SECS,
        },
        StoreError::Other(cause) => ApiError::Internal(cause),
    }
}

pub(crate) fn engine_error(e: EngineError) -> ApiError {
    match e {
        EngineError::Unavailable(_) => ApiError::Unavailable {
            retry_after_secs: RETRY_AFTER_SECS,
        },
        EngineError::Internal(cause) => ApiError::Internal(cause),
    }
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    routes::routes()
        .merge(openapi::routes())
        .route_layer(middleware::from_fn(request::route_template))
        .with_state(state.clone())
        .layer(middleware::from_fn_with_state(state, request::context))
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish and drains the engine.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let flag = state.clone();
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        flag.begin_shutdown();
    })
    .await?;
    state.engine.shutdown().await;
    Ok(())
}
