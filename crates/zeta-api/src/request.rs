//! Request context: the request id, the strict JSON body, the API key — checked in the order of
//! API.md (400/413/415, then 401, then 422).

use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tracing::Instrument;
use uuid::Uuid;

use crate::AppState;
use crate::auth::{Caller, hash_secret};
use crate::error::{ApiError, FieldError, PendingProblem};
use crate::json;
use crate::ratelimit::{Bucket, RateInfo};

pub const REQUEST_ID: &str = "x-request-id";

/// Where the `/v1` extractors leave the state of the rate-limit bucket they charged, for the
/// `RateLimit-*` headers.
#[derive(Clone, Default)]
pub struct RateSlot(std::sync::Arc<std::sync::Mutex<Option<RateInfo>>>);

impl RateSlot {
    fn set(&self, info: RateInfo) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(info);
    }

    fn take(&self) -> Option<RateInfo> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Where a handler leaves the command it queued in the engine, so that a request timing out
/// can withdraw it if no batch has taken it yet.
#[derive(Clone, Debug, Default)]
pub struct QueuedSlot(std::sync::Arc<std::sync::Mutex<Option<zeta_engine::Withdrawal>>>);

impl QueuedSlot {
    pub(crate) fn set(&self, withdrawal: zeta_engine::Withdrawal) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(withdrawal);
    }

    fn get(&self) -> Option<zeta_engine::Withdrawal> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The id of the current request (client-sent when valid, else generated).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

fn valid_request_id(v: &HeaderValue) -> Option<String> {
    let bytes = v.as_bytes();
    ((1..=128).contains(&bytes.len()) && bytes.iter().all(|b| (0x21..=0x7e).contains(b)))
        .then(|| String::from_utf8_lossy(bytes).into_owned())
}

/// The route template that served a request (never the raw path), for metrics and logs.
#[derive(Clone, Debug)]
pub struct RouteTemplate(pub String);

/// Route-level middleware: passes the matched route template out to [`context`].
pub async fn route_template(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let mut response = next.run(req).await;
    if let Some(route) = route {
        response.extensions_mut().insert(RouteTemplate(route));
    }
    response
}

/// Outermost middleware: assigns the request id, echoes it, renders every error response as
/// problem+json with `request_id` and `instance`, and records the request's metrics and log line.
pub async fn context(
    axum::extract::State(state): axum::extract::State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(valid_request_id)
        .unwrap_or_else(|| Uuid::now_v7().to_string());
    let instance = req.uri().path().to_string();
    let method = req.method().clone();
    let limited = instance == "/v1" || instance.starts_with("/v1/");
    let address = client_address(req.extensions());
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let slot = RateSlot::default();
    req.extensions_mut().insert(slot.clone());
    let queued = QueuedSlot::default();
    req.extensions_mut().insert(queued.clone());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %method,
        route = tracing::field::Empty,
    );
    let run = next.run(req).instrument(span.clone());
    tokio::pin!(run);
    let mut response = match tokio::time::timeout(state.request_timeout, &mut run).await {
        Ok(response) => response,
        Err(_) => match queued.get() {
            // A batch has taken the request's command: it may commit, so an error now could be
            // untrue. Its answer comes within that batch's retry budget.
            Some(w) if !w.withdraw() => {
                span.in_scope(|| tracing::warn!("request timed out; its command is running"));
                run.await
            }
            // Nothing was queued, or it was withdrawn before it ran: nothing happened.
            _ => {
                span.in_scope(|| tracing::warn!("request timed out"));
                ApiError::Unavailable {
                    retry_after_secs: crate::RETRY_AFTER_SECS,
                }
                .into_response()
            }
        },
    };
    finish_problem(&mut response, &request_id, &instance);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    let info = match slot.take() {
        Some(info) => Some(info),
        None if limited => Some(charge_unauthenticated(&state, address)),
        None => None,
    };
    if let Some(info) = info {
        let headers = response.headers_mut();
        headers.insert("ratelimit-limit", HeaderValue::from(info.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(info.remaining));
        headers.insert("ratelimit-reset", HeaderValue::from(info.reset_secs));
    }
    let route = response
        .extensions()
        .get::<RouteTemplate>()
        .map_or("unmatched", |r| r.0.as_str());
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    crate::telemetry::record_request(method.as_str(), route, status, elapsed);
    span.record("route", route);
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request finished"
        );
    });
    response
}

fn finish_problem(response: &mut Response, request_id: &str, instance: &str) {
    let error = match response.extensions_mut().remove::<PendingProblem>() {
        Some(PendingProblem(e)) => e,
        None => {
            let status = response.status();
            // Our own bodies (problems, readiness JSON) carry a JSON content type; the
            // framework's carry none or plain text.
            let ours = response
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| !v.as_bytes().starts_with(b"text/plain"));
            if !(status.is_client_error() || status.is_server_error()) || ours {
                return;
            }
            // Responses made by the router itself (unknown route, wrong method, a path that does
            // not decode) or by a framework layer.
            match status {
                StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
                StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => ApiError::NotFound("resource"),
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(0),
                StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
                s if s.is_server_error() => ApiError::Internal(format!("framework {s}")),
                _ => ApiError::NotFound("resource"),
            }
        }
    };
    if let ApiError::Internal(cause) = &error {
        tracing::error!(request_id, cause = %cause, "internal error");
    }
    let mut fresh = error.clone().into_response();
    fresh.extensions_mut().remove::<PendingProblem>();
    *response.status_mut() = fresh.status();
    for (name, value) in fresh.headers() {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response.headers_mut().remove(header::CONTENT_LENGTH);
    *response.body_mut() = Body::from(error.problem_body(request_id, instance));
}

/// Authenticates from the `Authorization` header (401 when missing or unknown).
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthorized)?;
    state.breaker.admit()?;
    let found = state
        .keys
        .find(hash_secret(token))
        .await
        .map_err(crate::store_error);
    state.breaker.observe(&found);
    let record = found?.ok_or(ApiError::Unauthorized)?;
    Caller::from_record(&record).ok_or(ApiError::Unauthorized)
}

/// Authenticates and charges the rate limit, in API.md's order: a 429 (the key's bucket, or the
/// client address's when there is no valid key) ranks before a 401.
async fn admit(state: &AppState, parts: &Parts) -> Result<Caller, ApiError> {
    let caller = match authenticate(state, &parts.headers).await {
        Ok(caller) => Ok(caller),
        Err(ApiError::Unauthorized) => Err(ApiError::Unauthorized),
        Err(other) => return Err(other),
    };
    let bucket = match &caller {
        Ok(c) => Bucket::Key(c.key_id),
        Err(_) => address_bucket(client_address(&parts.extensions)),
    };
    let charged = state.limiter.check(&bucket);
    if let Some(slot) = parts.extensions.get::<RateSlot>() {
        slot.set(charged.unwrap_or_else(|(info, _)| info));
    }
    match charged {
        Ok(_) => caller,
        Err((_, retry_after_secs)) => {
            crate::telemetry::rate_limited();
            Err(ApiError::RateLimited { retry_after_secs })
        }
    }
}

fn client_address(extensions: &axum::http::Extensions) -> Option<std::net::IpAddr> {
    extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The bucket of a request without a valid key: its client address's.
fn address_bucket(address: Option<std::net::IpAddr>) -> Bucket {
    address.map_or(Bucket::Unknown, Bucket::Address)
}

/// The `RateLimit-*` state for a `/v1` request answered before it was authenticated (400, 413,
/// 415, 405, an unknown route, a timeout): it spends a token of its client address's bucket,
/// like a request without a valid key — its key, if any, is not looked up, so a refused request
/// costs no database work and cannot wait on it. Its refusal still wins over a 429.
fn charge_unauthenticated(state: &AppState, address: Option<std::net::IpAddr>) -> RateInfo {
    state
        .limiter
        .check(&address_bucket(address))
        .unwrap_or_else(|(info, _)| info)
}

/// What every `/v1` handler knows about its request.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub request_id: String,
    pub method: Method,
    pub path: String,
    pub caller: Caller,
    pub idempotency_key: Option<String>,
    /// Where the command this request queues is left for the timeout (see [`context`]).
    pub queued: QueuedSlot,
}

impl Ctx {
    /// A command sent by this request: its caller's scope, and the key and request for the
    /// audit log.
    pub fn envelope(&self, command: zeta_ledger::Command) -> zeta_ledger::Envelope {
        zeta_ledger::Envelope {
            command,
            scope: self.caller.scope.clone(),
            actor: Some(zeta_ledger::Actor {
                key_id: self.caller.key_id,
                request_id: self.request_id.clone(),
            }),
        }
    }
}

fn context_parts(parts: &Parts, caller: Caller, idempotency_key: Option<String>) -> Ctx {
    Ctx {
        request_id: parts
            .extensions
            .get::<RequestId>()
            .map_or_else(String::new, |r| r.0.clone()),
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        caller,
        idempotency_key,
        queued: parts
            .extensions
            .get::<QueuedSlot>()
            .cloned()
            .unwrap_or_default(),
    }
}

/// For requests without a body (GET, DELETE) whose route takes no query parameters: any is an
/// unknown one (422).
pub struct Authed(pub Ctx);

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = admit(state, parts).await?;
        no_query(parts)?;
        Ok(Authed(context_parts(parts, caller, None)))
    }
}

/// For requests without a body whose handler reads the query string itself (the lists and
/// `/balance`), with [`json::Query`].
pub struct QueryAuthed(pub Ctx);

impl FromRequestParts<AppState> for QueryAuthed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = admit(state, parts).await?;
        Ok(QueryAuthed(context_parts(parts, caller, None)))
    }
}

/// A route that takes no query parameters: every one given is unknown (422).
fn no_query(parts: &Parts) -> Result<(), ApiError> {
    json::Query::parse(parts.uri.query())?.finish()
}

/// A place among the batch requests handled at once (`AppState::with_batch_concurrency`),
/// taken before the body is read and held until the answer is built: at most that many
/// 1000-transfer bodies are parsed, applied and answered in memory at a time; the others wait
/// here, unread, within the request timeout. Batches of random accounts share accounts, so they
/// commit one after another anyway: more at once adds memory, not throughput.
pub struct BatchSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl FromRequestParts<AppState> for BatchSlot {
    type Rejection = ApiError;

    async fn from_request_parts(_parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let waiting = crate::telemetry::BatchWait::start();
        // The semaphore is never closed, so acquiring fails only in theory.
        let permit = state
            .batch_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Unavailable {
                retry_after_secs: crate::RETRY_AFTER_SECS,
            })?;
        drop(waiting);
        Ok(BatchSlot { _permit: permit })
    }
}

/// The `{id}` of a path, never refused here: an id that does not decode is simply not found,
/// which the handler says after authentication and validation.
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let id = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_or_else(|_| String::new(), |axum::extract::Path(id)| id);
        Ok(PathId(id))
    }
}

/// `If-Match: "<version>"`: None when absent, 400 when not a single strong ETag.
pub fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| {
            let digits = s.trim().strip_prefix('"')?.strip_suffix('"')?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse::<i64>().ok()
        })
        .map(Some)
        .ok_or_else(|| {
            ApiError::InvalidHeader("If-Match must be the account's ETag, e.g. \"3\"".into())
        })
}

/// Body size limits.
pub const BODY_LIMIT: usize = 64 * 1024;
pub const BATCH_BODY_LIMIT: usize = 1024 * 1024;

/// A request with a JSON body of at most `LIMIT` bytes; with `OPTIONAL`, the body may be absent.
/// With `KEEP_PROBLEMS`, duplicate keys and NUL characters found while parsing do not fail the
/// request: they are left in `problems` for the handler (the batch endpoint fails only the
/// items they are in).
pub struct JsonRequest<const LIMIT: usize, const OPTIONAL: bool, const KEEP_PROBLEMS: bool = false>
{
    pub ctx: Ctx,
    pub body: Option<Value>,
    /// The canonical form of the body, for idempotency (followed by the kept problems, so that a
    /// body with them never matches one without).
    pub canonical: String,
    pub problems: Vec<FieldError>,
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bytes = v.as_bytes();
    if (1..=255).contains(&bytes.len()) && bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
        Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
    } else {
        Err(ApiError::InvalidHeader(
            "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
        ))
    }
}

impl<const LIMIT: usize, const OPTIONAL: bool, const KEEP_PROBLEMS: bool> FromRequest<AppState>
    for JsonRequest<LIMIT, OPTIONAL, KEEP_PROBLEMS>
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > LIMIT as u64) {
            return Err(ApiError::PayloadTooLarge(LIMIT));
        }
        let bytes = to_bytes(body, LIMIT)
            .await
            .map_err(|_| ApiError::PayloadTooLarge(LIMIT))?;
        let json_type = is_json(&parts.headers);
        let parsed = if bytes.is_empty() && OPTIONAL {
            None
        } else if !json_type {
            return Err(ApiError::UnsupportedMediaType);
        } else {
            Some(json::parse_lenient(&bytes)?)
        };
        let key = if parts.method == Method::POST {
            idempotency_key(&parts.headers)?
        } else {
            None
        };
        if parts.method == Method::PATCH {
            // A malformed precondition is a request error: it ranks before authentication.
            if_match(&parts.headers)?;
        }
        let caller = admit(state, &parts).await?;
        no_query(&parts)?;
        let (body, problems): (Option<Value>, Vec<FieldError>) = match parsed {
            Some((v, p)) => (Some(v), p),
            None => (None, Vec::new()),
        };
        if !problems.is_empty() && !KEEP_PROBLEMS {
            return Err(ApiError::Validation(problems));
        }
        let mut canonical = String::new();
        if let Some(v) = &body {
            json::canonical(v, &mut canonical);
        }
        // Sorted, so that JSON-equal bodies hash alike whatever their key order.
        let mut sorted: Vec<&FieldError> = problems.iter().collect();
        sorted.sort_by(|a, b| (&a.field, &a.message).cmp(&(&b.field, &b.message)));
        for p in sorted {
            canonical.push('\n');
            canonical.push_str(&p.field);
            canonical.push(':');
            canonical.push_str(&p.message);
        }
        Ok(Self {
            ctx: context_parts(&parts, caller, key),
            body,
            canonical,
            problems,
        })
    }
}
