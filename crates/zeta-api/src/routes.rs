//! The `/v1` and operational routes. Each handler: validate (422), authorize (403), resolve the
//! path (404), then read from the store or run a command through the engine.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use uuid::Uuid;
use zeta_ledger::{
    AccountPatch, AccountStatus, BatchItem, Command, Currency, NewAccount, TransactionStatus,
    TransactionType, TransferSpec, now_micros,
};
use zeta_store::{AccountFilter, TransactionFilter};

use crate::auth::Role;
use crate::command::{ItemErrors, account_headers, execute, raw_response};
use crate::error::{ApiError, FieldError};
use crate::json::{Fields, Query};
use crate::request::{Authed, BATCH_BODY_LIMIT, BODY_LIMIT, Ctx, JsonRequest};
use crate::{AppState, store_error, views};

type Body = JsonRequest<BODY_LIMIT, false>;
type OptionalBody = JsonRequest<BODY_LIMIT, true>;
type BatchBody = JsonRequest<BATCH_BODY_LIMIT, false>;

/// Longest `description` and `reason`, and `reference`, in code points.
const MAX_DESCRIPTION: usize = 500;
const MAX_REFERENCE: usize = 100;
const MAX_OWNER_NAME: usize = 200;
/// Largest `metadata`, as compact UTF-8 JSON.
const MAX_METADATA_BYTES: usize = 4096;
/// Most transfers in one batch request.
pub const MAX_BATCH_ITEMS: usize = 1000;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/accounts", post(create_account).get(list_accounts))
        .route("/v1/accounts/{id}", get(get_account).patch(update_account))
        .route("/v1/accounts/{id}/balance", get(get_balance))
        .route("/v1/accounts/{id}/credits", post(credit))
        .route("/v1/accounts/{id}/debits", post(debit))
        .route("/v1/accounts/{id}/transactions", get(list_transactions))
        .route("/v1/transactions/{id}", get(get_transaction))
        .route("/v1/transactions/{id}/capture", post(capture))
        .route("/v1/transactions/{id}/void", post(void))
        .route("/v1/transactions/{id}/reverse", post(reverse_transaction))
        .route("/v1/transfers", post(create_transfer))
        .route("/v1/transfers/batch", post(create_transfer_batch))
        .route("/v1/transfers/{id}", get(get_transfer))
        .route("/v1/transfers/{id}/reverse", post(reverse_transfer))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
}

// ----- helpers -----------------------------------------------------------------------------

/// A path id; anything that is not a UUID is simply not found.
fn path_id(raw: &str, what: &'static str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(raw).map_err(|_| ApiError::NotFound(what))
}

fn validated(fields: Fields) -> Result<(), ApiError> {
    fields.finish().map_err(ApiError::Validation)
}

fn no_items() -> ItemErrors {
    Arc::new(Vec::new())
}

fn json_ok(value: &Value) -> Response {
    raw_response(200, serde_json::to_vec(value).unwrap_or_default())
}

fn encode_cursor(kind: &str, value: &str) -> String {
    hex::encode(format!("{kind}:{value}"))
}

fn decode_cursor(q: &mut Query, kind: &str) -> Option<String> {
    let raw = q.take("cursor")?;
    let decoded = hex::decode(&raw)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix(&format!("{kind}:")).map(str::to_string));
    if decoded.is_none() {
        q.invalid("cursor", "is not a valid cursor");
    }
    decoded
}

async fn visible_account(
    state: &AppState,
    ctx: &Ctx,
    id: Uuid,
) -> Result<zeta_ledger::Account, ApiError> {
    state
        .store
        .get_account(id)
        .await
        .map_err(store_error)?
        .filter(|a| ctx.caller.sees(a.id))
        .ok_or(ApiError::NotFound("account"))
}

fn description(f: &mut Fields) -> Option<String> {
    f.string("description", 0, MAX_DESCRIPTION, false)
}

fn reference(f: &mut Fields) -> Option<String> {
    f.string("reference", 0, MAX_REFERENCE, false)
}

// ----- accounts ----------------------------------------------------------------------------

fn valid_account_number(n: &str) -> bool {
    (8..=34).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

async fn create_account(State(state): State<AppState>, req: Body) -> Result<Response, ApiError> {
    let mut f = Fields::body(req.body)?;
    let owner_name = f.string("owner_name", 1, MAX_OWNER_NAME, true);
    let currency = f.string("currency", 0, 16, true).and_then(|c| {
        let parsed = c.parse::<Currency>().ok();
        if parsed.is_none() {
            f.invalid("currency", "must be three upper-case letters (ISO 4217)");
        }
        parsed
    });
    let account_number = f.string("account_number", 0, 64, false);
    if account_number
        .as_deref()
        .is_some_and(|n| !valid_account_number(n))
    {
        f.invalid(
            "account_number",
            "must be 8 to 34 characters of A-Z and 0-9",
        );
    }
    let metadata = f.object("metadata", MAX_METADATA_BYTES, true);
    let (Some(owner_name), Some(currency)) = (owner_name, currency) else {
        return validated(f).and(Err(ApiError::Validation(Vec::new())));
    };
    validated(f)?;
    req.ctx.caller.require(Role::Operator)?;
    if req.ctx.caller.scope.is_some() {
        return Err(ApiError::Forbidden(
            "a key limited to accounts cannot create accounts",
        ));
    }
    let command = Command::CreateAccount(NewAccount {
        id: Uuid::now_v7(),
        account_number,
        owner_name,
        currency,
        metadata: metadata.unwrap_or_default(),
    });
    execute(
        &state,
        &req.ctx,
        command,
        StatusCode::CREATED,
        &req.canonical,
        no_items(),
    )
    .await
}

async fn get_account(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Authed(ctx): Authed,
) -> Result<Response, ApiError> {
    let id = path_id(&id, "account")?;
    let account = visible_account(&state, &ctx, id).await?;
    let mut response = json_ok(&views::account(&account));
    account_headers(&mut response, account.id, account.version, false);
    Ok(response)
}

async fn list_accounts(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    Authed(ctx): Authed,
) -> Result<Response, ApiError> {
    let mut q = Query::parse(query.as_deref())?;
    let account_number = q.take("account_number");
    let status = q.enumerated("status", AccountStatus::parse);
    let limit = q.limit();
    let after = decode_cursor(&mut q, "account").and_then(|s| {
        let id = Uuid::try_parse(&s).ok();
        if id.is_none() {
            q.invalid("cursor", "is not a valid cursor");
        }
        id
    });
    q.finish()?;
    let filter = AccountFilter {
        account_number,
        status,
        only: ctx
            .caller
            .scope
            .as_ref()
            .map(|s| s.iter().copied().collect()),
        after,
        limit: limit + 1,
    };
    let mut accounts = state
        .store
        .list_accounts(&filter)
        .await
        .map_err(store_error)?;
    let more = accounts.len() > limit as usize;
    accounts.truncate(limit as usize);
    let next = more
        .then(|| {
            accounts
                .last()
                .map(|a| encode_cursor("account", &a.id.to_string()))
        })
        .flatten();
    Ok(json_ok(&views::page(
        accounts.iter().map(views::account).collect(),
        next,
    )))
}

/// `If-Match: "<version>"`: None when absent, 400 when not a single strong ETag.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| {
            s.trim()
                .strip_prefix('"')?
                .strip_suffix('"')?
                .parse::<i64>()
                .ok()
        })
        .map(Some)
        .ok_or_else(|| {
            ApiError::InvalidHeader("If-Match must be the account's ETag, e.g. \"3\"".into())
        })
}

async fn update_account(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    req: Body,
) -> Result<Response, ApiError> {
    let expected = if_match(&headers)?;
    let mut f = Fields::body(req.body)?;
    let owner_name = f.patch_string("owner_name", 1, MAX_OWNER_NAME);
    let status = match f.raw("status") {
        None => None,
        Some(Value::String(s)) => {
            let parsed = AccountStatus::parse(&s);
            if parsed.is_none() {
                f.invalid("status", "must be active, frozen or closed");
            }
            parsed
        }
        Some(_) => {
            f.invalid("status", "must be active, frozen or closed");
            None
        }
    };
    let metadata = f.object("metadata", MAX_METADATA_BYTES, false);
    validated(f)?;
    req.ctx.caller.require(Role::Operator)?;
    let id = path_id(&id, "account")?;
    let Some(expected) = expected else {
        visible_account(&state, &req.ctx, id).await?;
        return Err(ApiError::PreconditionRequired);
    };
    let command = Command::UpdateAccount {
        account_id: id,
        if_match: expected,
        patch: AccountPatch {
            owner_name,
            status,
            metadata,
        },
    };
    execute(
        &state,
        &req.ctx,
        command,
        StatusCode::OK,
        &req.canonical,
        no_items(),
    )
    .await
}

async fn get_balance(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    Authed(ctx): Authed,
) -> Result<Response, ApiError> {
    let mut q = Query::parse(query.as_deref())?;
    let at = q.time("at");
    q.finish()?;
    let id = path_id(&id, "account")?;
    let account = visible_account(&state, &ctx, id).await?;
    let (balance, as_of) = match at {
        None => (account.balance, now_micros()),
        Some(at) => {
            let at = at
                .replace_nanosecond(at.nanosecond() / 1000 * 1000)
                .unwrap_or(at);
            (
                state.store.balance_at(id, at).await.map_err(store_error)?,
                at,
            )
        }
    };
    Ok(json_ok(&json!({
        "account_id": id,
        "balance": balance,
        "as_of": views::timestamp(as_of),
    })))
}

// ----- money on one account ----------------------------------------------------------------

async fn credit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Body,
) -> Result<Response, ApiError> {
    let mut f = Fields::body(req.body)?;
    let amount = f.amount("amount");
    let description = description(&mut f);
    let reference = reference(&mut f);
    validated(f)?;
    let amount = amount.ok_or(ApiError::Validation(Vec::new()))?;
    req.ctx.caller.require(Role::Operator)?;
    let account_id = path_id(&id, "account")?;
    let command = Command::Credit {
        account_id,
        amount,
        description,
        reference,
    };
    execute(
        &state,
        &req.ctx,
        command,
        StatusCode::CREATED,
        &req.canonical,
        no_items(),
    )
    .await
}

async fn debit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Body,
) -> Result<Response, ApiError> {
    let mut f = Fields::body(req.body)?;
    let amount = f.amount("amount");
    let description = description(&mut f);
    let reference = reference(&mut f);
    let hold = f.bool("hold").unwrap_or(false);
    validated(f)?;
    let amount = amount.ok_or(ApiError::Validation(Vec::new()))?;
    req.ctx.caller.require(Role::Operator)?;
    let account_id = path_id(&id, "account")?;
    let command = Command::Debit {
        account_id,
        amount,
        description,
        reference,
        hold,
    };
    execute(
        &state,
        &req.ctx,
        command,
        StatusCode::CREATED,
        &req.canonical,
        no_items(),
    )
    .await
}

async fn list_transactions(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    Authed(ctx): Authed,
) -> Result<Response, ApiError> {
    let mut q = Query::parse(query.as_deref())?;
    let status = q.enumerated("status", TransactionStatus::parse);
    let kind = q.enumerated("type", TransactionType::parse);
    let since = q.time("since");
    let until = q.time("until");
    let limit = q.limit();
    let before_seq = decode_cursor(&mut q, "transaction").and_then(|s| {
        let seq = s.parse::<i64>().ok();
        if seq.is_none() {
            q.invalid("cursor", "is not a valid cursor");
        }
        seq
    });
    q.finish()?;
    let account_id = path_id(&id, "account")?;
    visible_account(&state, &ctx, account_id).await?;
    let filter = TransactionFilter {
        account_id,
        status,
        kind,
        since,
        until,
        before_seq,
        limit: limit + 1,
    };
    let mut rows = state
        .store
        .list_transactions(&filter)
        .await
        .map_err(store_error)?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = more
        .then(|| {
            rows.last()
                .map(|t| encode_cursor("transaction", &t.seq.to_string()))
        })
        .flatten();
    Ok(json_ok(&views::page(
        rows.iter().map(views::transaction).collect(),
        next,
    )))
}

// ----- transactions ------------------------------------------------------------------------

async fn get_transaction(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Authed(ctx): Authed,
) -> Result<Response, ApiError> {
    let id = path_id(&id, "transaction")?;
    let tx = state
        .store
        .get_transaction(id)
        .await
        .map_err(store_error)?
        .filter(|t| ctx.caller.sees(t.account_id))
        .ok_or(ApiError::NotFound("transaction"))?;
    Ok(json_ok(&views::transaction(&tx)))
}

/// Capture and void take no fields; the body may be absent or `{}`.
async fn settle(
    state: &AppState,
    id: &str,
    req: OptionalBody,
    make: fn(Uuid) -> Command,
) -> Result<Response, ApiError> {
    let f = Fields::body(req.body)?;
    validated(f)?;
    req.ctx.caller.require(Role::Operator)?;
    let id = path_id(id, "transaction")?;
    execute(
        state,
        &req.ctx,
        make(id),
        StatusCode::OK,
        &req.canonical,
        no_items(),
    )
    .await
}

async fn capture(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: OptionalBody,
) -> Result<Response, ApiError> {
    settle(&state, &id, req, |transaction_id| Command::Capture {
        transaction_id,
    })
    .await
}

async fn void(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: OptionalBody,
) -> Result<Response, ApiError> {
    settle(&state, &id, req, |transaction_id| Command::Void {
        transaction_id,
    })
    .await
}

fn reason(req_body: Option<Value>) -> Result<Option<String>, ApiError> {
    let mut f = Fields::body(req_body)?;
    let reason = f.string("reason", 0, MAX_DESCRIPTION, false);
    validated(f)?;
    Ok(reason)
}

async fn reverse_transaction(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: OptionalBody,
) -> Result<Response, ApiError> {
    let reason = reason(req.body)?;
    req.ctx.caller.require(Role::Operator)?;
    let transaction_id = path_id(&id, "transaction")?;
    let command = Command::ReverseTransaction {
        transaction_id,
        reason,
    };
    execute(
        &state,
        &req.ctx,
        command,
        StatusCode::CREATED,
        &req.canonical,
        no_items(),
    )
    .await
}

// ----- transfers ---------------------------------------------------------------------------

fn transfer_spec(f: &mut Fields) -> Option<TransferSpec> {
    let from = f.uuid("from_account_id");
    let to = f.uuid("to_account_id");
    let amount = f.amount("amount");
    let description = description(f);
    let reference = reference(f);
    Some(TransferSpec {
        from_account_id: from?,
        to_account_id: to?,
        amount: amount?,
        description,
        reference,
    })
}

async fn create_transfer(State(state): State<AppState>, req: Body) -> Result<Response, ApiError> {
    let mut f = Fields::body(req.body)?;
    let spec = transfer_spec(&mut f);
    validated(f)?;
    let spec = spec.ok_or(ApiError::Validation(Vec::new()))?;
    req.ctx.caller.require(Role::Operator)?;
    let command = Command::Transfer(spec);
    execute(
        &state,
        &req.ctx,
        command,
        StatusCode::CREATED,
        &req.canonical,
        no_items(),
    )
    .await
}

async fn create_transfer_batch(
    State(state): State<AppState>,
    req: BatchBody,
) -> Result<Response, ApiError> {
    let mut f = Fields::body(req.body)?;
    let atomic = f.bool("atomic").unwrap_or(false);
    let raw_items = match f.raw("transfers") {
        Some(Value::Array(items)) if (1..=MAX_BATCH_ITEMS).contains(&items.len()) => Some(items),
        Some(Value::Array(_)) => {
            f.invalid(
                "transfers",
                format!("must hold 1 to {MAX_BATCH_ITEMS} transfers"),
            );
            None
        }
        None => {
            f.invalid("transfers", "is required");
            None
        }
        Some(_) => {
            f.invalid("transfers", "must be an array of transfers");
            None
        }
    };
    validated(f)?;
    let raw_items = raw_items.ok_or(ApiError::Validation(Vec::new()))?;
    req.ctx.caller.require(Role::Operator)?;
    let mut items = Vec::with_capacity(raw_items.len());
    let mut errors = Vec::with_capacity(raw_items.len());
    for (i, raw) in raw_items.into_iter().enumerate() {
        let prefix = format!("transfers.{i}.");
        let (item, error) = match Fields::new(raw, &prefix) {
            Err(e) => (BatchItem::Invalid, Some(ApiError::Validation(vec![e]))),
            Ok(mut item) => {
                let spec = transfer_spec(&mut item);
                match (item.finish(), spec) {
                    (Ok(()), Some(spec)) => (BatchItem::Valid(spec), None),
                    (Err(e), _) => (BatchItem::Invalid, Some(ApiError::Validation(e))),
                    (Ok(()), None) => (
                        BatchItem::Invalid,
                        Some(ApiError::Validation(vec![FieldError::new(
                            prefix,
                            "is invalid",
                        )])),
                    ),
                }
            }
        };
        items.push(item);
        errors.push(error);
    }
    let command = Command::TransferBatch { items, atomic };
    execute(
        &state,
        &req.ctx,
        command,
        StatusCode::OK,
        &req.canonical,
        Arc::new(errors),
    )
    .await
}

async fn get_transfer(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Authed(ctx): Authed,
) -> Result<Response, ApiError> {
    let id = path_id(&id, "transfer")?;
    let view = state
        .store
        .get_transfer(id)
        .await
        .map_err(store_error)?
        .filter(|v| {
            ctx.caller.sees(v.transfer.from_account_id) && ctx.caller.sees(v.transfer.to_account_id)
        })
        .ok_or(ApiError::NotFound("transfer"))?;
    Ok(json_ok(&views::transfer(&view)))
}

async fn reverse_transfer(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: OptionalBody,
) -> Result<Response, ApiError> {
    let reason = reason(req.body)?;
    req.ctx.caller.require(Role::Operator)?;
    let transfer_id = path_id(&id, "transfer")?;
    let command = Command::ReverseTransfer {
        transfer_id,
        reason,
    };
    execute(
        &state,
        &req.ctx,
        command,
        StatusCode::CREATED,
        &req.canonical,
        no_items(),
    )
    .await
}

// ----- operations --------------------------------------------------------------------------

async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Deadline of the readiness probe's database round trip.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn ready(State(state): State<AppState>) -> Response {
    if state.is_shutting_down() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting_down", "checks": {"database": "ok", "shutdown": "in_progress"}})),
        )
            .into_response();
    }
    // The probe goes through the breaker, so an idle instance still finds out when the
    // database is back.
    let database_ok = match state.breaker.admit() {
        Ok(()) => {
            let ok = matches!(
                tokio::time::timeout(READY_TIMEOUT, state.store.ping()).await,
                Ok(Ok(()))
            );
            if ok {
                state.breaker.success();
            } else {
                state.breaker.failure();
            }
            ok
        }
        Err(_) => false,
    };
    if database_ok {
        Json(json!({"status": "ready", "checks": {"database": "ok"}})).into_response()
    } else {
        let circuit = match state.breaker.state() {
            crate::breaker::BreakerState::Closed => "closed",
            crate::breaker::BreakerState::Open => "open",
            crate::breaker::BreakerState::HalfOpen => "half_open",
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "checks": {"database": "down", "circuit_breaker": circuit}})),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let (open, idle) = state.store.pool_stats();
    crate::telemetry::set_pool(open, idle);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::telemetry::handle().render(),
    )
        .into_response()
}
