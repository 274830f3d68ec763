//! The one error type of the API and its RFC 9457 problem+json rendering.
//!
//! Policy: every refusal is an [`ApiError`] with a stable `code`. 4xx details speak only of the
//! request; 5xx bodies are opaque (the cause is logged with the request id, never sent).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use uuid::Uuid;
use zeta_ledger::LedgerError;

/// One invalid field of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ApiError {
    MalformedJson(String),
    InvalidHeader(String),
    Unauthorized,
    Forbidden(&'static str),
    NotFound(&'static str),
    MethodNotAllowed,
    PayloadTooLarge(usize),
    UnsupportedMediaType,
    Validation(Vec<FieldError>),
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    PreconditionRequired,
    RateLimited {
        retry_after_secs: u64,
    },
    Ledger(LedgerError),
    /// The database is unreachable or the engine is shutting down.
    Unavailable {
        retry_after_secs: u64,
    },
    /// A bug. The message is logged, never sent.
    Internal(String),
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        ApiError::Ledger(e)
    }
}

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    /// (status, code, title)
    pub fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError as E;
        use LedgerError as L;
        match self {
            E::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json", "Malformed JSON"),
            E::InvalidHeader(_) => (StatusCode::BAD_REQUEST, "invalid_header", "Invalid header"),
            E::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            E::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            E::NotFound(_) | E::Ledger(L::NotFound(_)) => {
                (StatusCode::NOT_FOUND, "not_found", "Not found")
            }
            E::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            ),
            E::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
            ),
            E::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
            ),
            E::Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_error",
                "Validation error",
            ),
            E::IdempotencyKeyInUse => (
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                "Idempotency key in use",
            ),
            E::IdempotencyKeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency key reused",
            ),
            E::PreconditionRequired => (
                StatusCode::PRECONDITION_REQUIRED,
                "precondition_required",
                "Precondition required",
            ),
            E::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Rate limited",
            ),
            E::Unavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "Service unavailable",
            ),
            E::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Internal error",
            ),
            E::Ledger(l) => match l {
                L::NotFound(_) => unreachable!("matched above"),
                L::AccountNumberTaken => (
                    StatusCode::CONFLICT,
                    "account_number_taken",
                    "Account number taken",
                ),
                L::VersionMismatch { .. } => (
                    StatusCode::PRECONDITION_FAILED,
                    "version_mismatch",
                    "Version mismatch",
                ),
                L::InvalidState(_) => (StatusCode::CONFLICT, "invalid_state", "Invalid state"),
                L::AlreadyReversed => {
                    (StatusCode::CONFLICT, "already_reversed", "Already reversed")
                }
                L::AccountNotEmpty { .. } => (
                    StatusCode::CONFLICT,
                    "account_not_empty",
                    "Account not empty",
                ),
                L::SameAccount => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "same_account",
                    "Same account",
                ),
                L::CurrencyMismatch { .. } => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "currency_mismatch",
                    "Currency mismatch",
                ),
                L::AccountNotActive { .. } => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "account_not_active",
                    "Account not active",
                ),
                L::BalanceOverflow => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "balance_overflow",
                    "Balance overflow",
                ),
                L::InsufficientFunds { .. } => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "insufficient_funds",
                    "Insufficient funds",
                ),
            },
        }
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    pub fn code(&self) -> &'static str {
        self.parts().1
    }

    fn detail(&self) -> String {
        use ApiError as E;
        match self {
            E::MalformedJson(m) => format!("the body is not valid JSON: {m}"),
            E::InvalidHeader(m) => m.clone(),
            E::Unauthorized => "a valid API key is required (Authorization: Bearer <key>)".into(),
            E::Forbidden(m) => (*m).into(),
            E::NotFound(what) => format!("{what} not found"),
            E::MethodNotAllowed => "the method is not allowed on this resource".into(),
            E::PayloadTooLarge(limit) => format!("the body is larger than {limit} bytes"),
            E::UnsupportedMediaType => {
                "the body must be sent as Content-Type: application/json".into()
            }
            E::Validation(errors) => match errors.as_slice() {
                [one] => format!("{}: {}", one.field, one.message),
                _ => format!("{} fields are invalid", errors.len()),
            },
            E::IdempotencyKeyInUse => {
                "a request with this Idempotency-Key is still being processed".into()
            }
            E::IdempotencyKeyReused => {
                "this Idempotency-Key was used for a different request".into()
            }
            E::PreconditionRequired => {
                "this request needs an If-Match header with the account's ETag".into()
            }
            E::RateLimited { .. } => "too many requests; retry later".into(),
            E::Unavailable { .. } => "the service is temporarily unavailable; retry later".into(),
            E::Internal(_) => "an internal error occurred".into(),
            E::Ledger(l) => l.to_string(),
        }
    }

    fn slug(code: &str) -> String {
        code.replace('_', "-")
    }

    /// The problem document (without `request_id` and `instance`, which the request adds).
    pub fn problem(&self) -> Map<String, Value> {
        let (status, code, title) = self.parts();
        let mut p = Map::new();
        p.insert(
            "type".into(),
            json!(format!(
                "https://zeta.example/problems/{}",
                Self::slug(code)
            )),
        );
        p.insert("title".into(), json!(title));
        p.insert("status".into(), json!(status.as_u16()));
        p.insert("detail".into(), json!(self.detail()));
        p.insert("code".into(), json!(code));
        match self {
            ApiError::Validation(errors) => {
                let list: Vec<Value> = errors
                    .iter()
                    .map(|e| json!({"field": e.field, "message": e.message}))
                    .collect();
                p.insert("errors".into(), Value::Array(list));
            }
            ApiError::Ledger(LedgerError::InsufficientFunds {
                transaction_id,
                transfer_id,
                ..
            }) => {
                if let Some(id) = transaction_id {
                    p.insert("transaction_id".into(), json!(id));
                }
                if let Some(id) = transfer_id {
                    p.insert("transfer_id".into(), json!(id));
                }
            }
            _ => {}
        }
        p
    }

    /// The complete problem body of a request.
    pub fn problem_body(&self, request_id: &str, instance: &str) -> Vec<u8> {
        let mut p = self.problem();
        p.insert("request_id".into(), json!(request_id));
        p.insert("instance".into(), json!(instance));
        serde_json::to_vec(&Value::Object(p)).unwrap_or_default()
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after_secs }
            | ApiError::Unavailable { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }
}

/// Placed in a response's extensions; the request-context middleware turns it into the body,
/// adding `request_id` and `instance`.
#[derive(Clone, Debug)]
pub struct PendingProblem(pub ApiError);

pub const PROBLEM_JSON: &str = "application/problem+json";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = status.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if matches!(self, ApiError::Unauthorized) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response.extensions_mut().insert(PendingProblem(self));
        response
    }
}

/// Renders a uuid in the API's form (lowercase hyphenated).
pub fn id_str(id: Uuid) -> String {
    id.hyphenated().to_string()
}
