//! Running a command through the engine, with idempotency, and rendering its outcome once.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeta_engine::{IdempotencySpec, Reply, StoredResponse};
use zeta_ledger::{Command, Effect, ItemResult, Outcome};
use zeta_store::IdempotencyRecord;

use crate::error::{ApiError, PROBLEM_JSON};
use crate::request::Ctx;
use crate::{AppState, store_error, views};

/// Per-item validation errors of a transfer batch (None for valid items).
pub(crate) type ItemErrors = Arc<Vec<Option<ApiError>>>;

fn batch_failed() -> Value {
    json!({
        "type": "https://zeta.example/problems/batch-failed",
        "title": "Batch failed",
        "status": 424,
        "detail": "another item of this atomic batch failed, so nothing was recorded",
        "code": "batch_failed",
    })
}

fn item_problem(error: &ApiError) -> Value {
    json!({"status": error.status().as_u16(), "error": Value::Object(error.problem())})
}

fn effect_json(effect: &Effect, item_errors: &[Option<ApiError>]) -> Value {
    match effect {
        Effect::Account(a) => views::account(a),
        Effect::Transaction(t) | Effect::LegReversal { leg: t, .. } => views::transaction(t),
        Effect::Transfer(t) => views::transfer(t),
        // The secret is never stored: a replay shows the key without it.
        Effect::ApiKey(k) => views::api_key(k, None),
        Effect::Batch(results) => {
            let results: Vec<Value> = results
                .iter()
                .enumerate()
                .map(|(i, r)| match r {
                    ItemResult::Done(view) => {
                        json!({"status": 201, "transfer": views::transfer(view)})
                    }
                    ItemResult::Failed(e) => item_problem(&ApiError::Ledger(e.clone())),
                    ItemResult::Invalid => item_errors
                        .get(i)
                        .and_then(Option::as_ref)
                        .map_or_else(|| json!({"status": 422, "error": null}), item_problem),
                    ItemResult::Aborted => json!({"status": 424, "error": batch_failed()}),
                })
                .collect();
            json!({ "results": results })
        }
    }
}

/// Renders an outcome: the response sent and, with an idempotency key, stored.
pub(crate) fn render(
    outcome: &Outcome,
    success: StatusCode,
    request_id: &str,
    instance: &str,
    item_errors: &[Option<ApiError>],
) -> StoredResponse {
    match outcome {
        Ok(effect) => StoredResponse {
            status: success.as_u16(),
            body: serde_json::to_vec(&effect_json(effect, item_errors)).unwrap_or_default(),
        },
        Err(e) => {
            let error = ApiError::Ledger(e.clone());
            StoredResponse {
                status: error.status().as_u16(),
                body: error.problem_body(request_id, instance),
            }
        }
    }
}

pub(crate) fn raw_response(status: u16, body: Vec<u8>) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = if status.is_success() {
        "application/json"
    } else {
        PROBLEM_JSON
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `ETag` (and for a created account, `Location`) of a response about one account.
pub(crate) fn account_headers(
    response: &mut Response<Body>,
    id: uuid::Uuid,
    version: i64,
    created: bool,
) {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(header::ETAG, v);
    }
    if created && let Ok(v) = HeaderValue::from_str(&format!("/v1/accounts/{id}")) {
        response.headers_mut().insert(header::LOCATION, v);
    }
}

fn replay(record: &IdempotencyRecord, request_hash: &[u8]) -> Result<Response<Body>, ApiError> {
    if record.request_hash != request_hash {
        return Err(ApiError::IdempotencyKeyReused);
    }
    let mut response = raw_response(record.status, record.body.clone());
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    // A replayed account keeps its ETag (and, when created, its Location).
    if (200..300).contains(&record.status)
        && let Ok(body) = serde_json::from_slice::<Value>(&record.body)
        && body.get("account_number").is_some()
        && let (Some(id), Some(version)) = (
            body["id"]
                .as_str()
                .and_then(|s| uuid::Uuid::try_parse(s).ok()),
            body["version"].as_i64(),
        )
    {
        account_headers(&mut response, id, version, record.status == 201);
    }
    Ok(response)
}

/// Runs a state-changing command for a request and answers it.
pub(crate) async fn execute(
    state: &AppState,
    ctx: &Ctx,
    command: Command,
    success: StatusCode,
    canonical_body: &str,
    item_errors: ItemErrors,
) -> Result<Response<Body>, ApiError> {
    execute_revealing(
        state,
        ctx,
        command,
        success,
        canonical_body,
        item_errors,
        None,
    )
    .await
}

/// [`execute`], where a new API key's first response also carries its `secret`: the one time
/// it is shown (the stored response, replayed for a retry, never has it).
pub(crate) async fn execute_revealing(
    state: &AppState,
    ctx: &Ctx,
    command: Command,
    success: StatusCode,
    canonical_body: &str,
    item_errors: ItemErrors,
    secret: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let envelope = ctx.envelope(command);
    let request_id = ctx.request_id.clone();
    let instance = ctx.path.clone();
    let errors = item_errors.clone();
    let renderer =
        move |outcome: &Outcome| render(outcome, success, &request_id, &instance, &errors);

    let (outcome, stored) = match &ctx.idempotency_key {
        None => match state.submit(ctx, envelope, None).await? {
            Reply::Applied { outcome, .. } => {
                let stored = renderer(&outcome);
                (outcome, stored)
            }
            Reply::Replay(_) | Reply::KeyReused => {
                return Err(ApiError::Internal("idempotency reply without a key".into()));
            }
        },
        Some(key) => {
            let mut hasher = Sha256::new();
            hasher.update(ctx.method.as_str().as_bytes());
            hasher.update(b"\n");
            hasher.update(ctx.path.as_bytes());
            hasher.update(b"\n");
            hasher.update(canonical_body.as_bytes());
            let request_hash = hasher.finalize().to_vec();
            let scope = ctx.caller.key_id;
            if let Some(record) = state
                .store
                .get_idempotency(scope, key)
                .await
                .map_err(store_error)?
            {
                return replay(&record, &request_hash);
            }
            // The claim travels with the command and is released once the engine has answered
            // it, so a retry while it may still commit gets 409 `idempotency_key_in_use` even
            // when this request has gone (client disconnected).
            let claim = state.claim_key(scope, key)?;
            let spec = IdempotencySpec {
                scope,
                key: key.clone(),
                request_hash: request_hash.clone(),
                render: Arc::new(renderer),
                claim: Some(Arc::new(claim)),
            };
            match state.submit(ctx, envelope, Some(spec)).await? {
                Reply::Applied {
                    outcome,
                    stored: Some(stored),
                } => (outcome, stored),
                Reply::Applied { stored: None, .. } => {
                    return Err(ApiError::Internal(
                        "idempotent command without a stored response".into(),
                    ));
                }
                Reply::Replay(record) => return replay(&record, &request_hash),
                Reply::KeyReused => return Err(ApiError::IdempotencyKeyReused),
            }
        }
    };
    log_outcome(ctx, &outcome);
    let body = match (&outcome, secret) {
        (Ok(Effect::ApiKey(key)), Some(secret)) => {
            serde_json::to_vec(&views::api_key(key, Some(secret))).unwrap_or_default()
        }
        _ => stored.body,
    };
    let mut response = raw_response(stored.status, body);
    if let Ok(Effect::Account(a)) = &outcome {
        account_headers(
            &mut response,
            a.id,
            a.version,
            success == StatusCode::CREATED,
        );
    }
    Ok(response)
}

fn log_outcome(ctx: &Ctx, outcome: &Outcome) {
    match outcome {
        Ok(_) => {
            tracing::info!(request_id = %ctx.request_id, key_id = %ctx.caller.key_id, path = %ctx.path, "command applied")
        }
        Err(e) => {
            tracing::info!(request_id = %ctx.request_id, key_id = %ctx.caller.key_id, path = %ctx.path, refused = %e, "command refused")
        }
    }
}
