//! The `/v1` and operational routes. Each handler: validate (422), authorize (403), resolve the
//! path (404), then read from the store or run a command through the engine.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get, on};
use serde_json::{Value, json};
use uuid::Uuid;
use zeta_engine::Reply;
use zeta_ledger::{
    AccountPatch, AccountStatus, BatchItem, Command, Currency, NewAccount, TransactionStatus,
    TransactionType, TransferSpec, now_micros,
};
use zeta_store::{AccountFilter, TransactionFilter};

use crate::auth::Role;
use crate::command::{ItemErrors, account_headers, execute, execute_revealing, raw_response};
use crate::error::{ApiError, FieldError};
use crate::json::{Fields, Query};
use crate::request::{
    Authed, BATCH_BODY_LIMIT, BODY_LIMIT, BatchSlot, Ctx, JsonRequest, PathId, QueryAuthed,
    if_match,
};
use crate::{AppState, openapi, store_error, views};

type Body = JsonRequest<BODY_LIMIT, false>;
type OptionalBody = JsonRequest<BODY_LIMIT, true>;
type BatchBody = JsonRequest<BATCH_BODY_LIMIT, false, true>;

/// Longest `description` and `reason`, and `reference`, in code points.
const MAX_DESCRIPTION: usize = 500;
const MAX_REFERENCE: usize = 100;
const MAX_OWNER_NAME: usize = 200;
/// Largest `metadata`, as compact UTF-8 JSON.
const MAX_METADATA_BYTES: usize = 4096;
/// Most transfers in one batch request.
pub const MAX_BATCH_ITEMS: usize = 1000;

/// One `/v1` route. The router serves exactly the routes of [`V1_ROUTES`] under `/v1`, and the
/// OpenAPI document (`crate::openapi`) must describe exactly these: a test checks both ways.
pub struct V1Route {
    pub method: Method,
    /// The path template, in the syntax both axum and OpenAPI use (`{id}`).
    pub path: &'static str,
    handler: fn(MethodFilter) -> MethodRouter<AppState>,
}

const fn v1(
    method: Method,
    path: &'static str,
    handler: fn(MethodFilter) -> MethodRouter<AppState>,
) -> V1Route {
    V1Route {
        method,
        path,
        handler,
    }
}

/// Every `/v1` route, in the order of API.md.
pub const V1_ROUTES: &[V1Route] = &[
    v1(Method::POST, "/v1/accounts", |m| on(m, create_account)),
    v1(Method::GET, "/v1/accounts", |m| on(m, list_accounts)),
    v1(Method::GET, "/v1/accounts/{id}", |m| on(m, get_account)),
    v1(Method::PATCH, "/v1/accounts/{id}", |m| {
        on(m, update_account)
    }),
    v1(Method::GET, "/v1/accounts/{id}/balance", |m| {
        on(m, get_balance)
    }),
    v1(Method::POST, "/v1/accounts/{id}/credits", |m| on(m, credit)),
    v1(Method::POST, "/v1/accounts/{id}/debits", |m| on(m, debit)),
    v1(Method::GET, "/v1/accounts/{id}/transactions", |m| {
        on(m, list_transactions)
    }),
    v1(Method::GET, "/v1/transactions/{id}", |m| {
        on(m, get_transaction)
    }),
    v1(Method::POST, "/v1/transactions/{id}/capture", |m| {
        on(m, capture)
    }),
    v1(Method::POST, "/v1/transactions/{id}/void", |m| on(m, void)),
    v1(Method::POST, "/v1/transactions/{id}/reverse", |m| {
        on(m, reverse_transaction)
    }),
    v1(Method::POST, "/v1/transfers", |m| on(m, create_transfer)),
    v1(Method::POST, "/v1/transfers/batch", |m| {
        on(m, create_transfer_batch)
    }),
    v1(Method::GET, "/v1/transfers/{id}", |m| on(m, get_transfer)),
    v1(Method::POST, "/v1/transfers/{id}/reverse", |m| {
        on(m, reverse_transfer)
    }),
    v1(Method::POST, "/v1/api-keys", |m| on(m, create_api_key)),
    v1(Method::GET, "/v1/api-keys", |m| on(m, list_api_keys)),
    v1(Method::DELETE, "/v1/api-keys/{id}", |m| {
        on(m, revoke_api_key)
    }),
    v1(Method::GET, "/v1/audit-events", |m| {
        on(m, list_audit_events)
    }),
];

pub(crate) fn routes() -> Router<AppState> {
    V1_ROUTES
        .iter()
        .fold(Router::new(), |router, route| {
            let filter =
                MethodFilter::try_from(route.method.clone()).expect("a method axum can route");
            router.route(route.path, (route.handler)(filter))
        })
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

/// Like [`visible_account`], but as the primary has it: for an answer that depends on the
/// account existing right now, which a read replica may not show yet.
async fn visible_account_fresh(
    state: &AppState,
    ctx: &Ctx,
    id: Uuid,
) -> Result<zeta_ledger::Account, ApiError> {
    state
        .store
        .get_account_fresh(id)
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

#[utoipa::path(
    post,
    path = "/v1/accounts",
    tag = "accounts",
    summary = "Create an account",
    description = "Opens an account at balance 0. Needs an `operator` or `admin` key that is not limited to accounts.",
    request_body(content = openapi::CreateAccount, examples(
        ("generated number" = (summary = "The server picks the account number", value = json!(openapi::examples::create_account()))),
        ("own number" = (summary = "The client's own account number", value = json!(openapi::examples::create_account_with_number()))),
    )),
    responses(
        (status = 201, description = "The new account.", body = openapi::Account,
            headers(
                ("Location" = String, description = "`/v1/accounts/{id}` of the new account."),
                ("ETag" = String, description = "The account's `version` in quotes."),
            ),
            example = json!(openapi::examples::new_account())),
        (status = 403, description = "- `forbidden`: a `viewer` key, or a key limited to accounts"),
        (status = 409, description = "- `account_number_taken`: the account number is, or was, in use"),
        (status = 422, description = "- `validation_error`: a field is missing, invalid or unknown (`errors` lists them)"),
    ),
)]
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

#[utoipa::path(
    get,
    path = "/v1/accounts/{id}",
    tag = "accounts",
    summary = "Get an account",
    params(("id" = Uuid, Path, description = "The account's id.")),
    responses(
        (status = 200, description = "The account.", body = openapi::Account,
            headers(("ETag" = String, description = "The account's `version` in quotes, e.g. `\"4\"`: the `If-Match` of a PATCH.")),
            example = json!(openapi::examples::account())),
        (status = 404, description = "- `not_found`: no such account, or it is outside the key's scope"),
    ),
)]
async fn get_account(
    State(state): State<AppState>,
    PathId(id): PathId,
    Authed(ctx): Authed,
) -> Result<Response, ApiError> {
    let id = path_id(&id, "account")?;
    let account = visible_account(&state, &ctx, id).await?;
    let mut response = json_ok(&views::account(&account));
    account_headers(&mut response, account.id, account.version, false);
    Ok(response)
}

#[utoipa::path(
    get,
    path = "/v1/accounts",
    tag = "accounts",
    summary = "List accounts",
    description = "Accounts, oldest first. A key limited to accounts lists only those.",
    params(openapi::AccountListQuery),
    responses(
        (status = 200, description = "A page of accounts.", body = openapi::Page<openapi::Account>,
            example = json!(openapi::examples::accounts_page())),
        (status = 422, description = "- `validation_error`: a bad `status`, `limit` or `cursor`, or a repeated or unknown query parameter"),
    ),
)]
async fn list_accounts(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    QueryAuthed(ctx): QueryAuthed,
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

#[utoipa::path(
    patch,
    path = "/v1/accounts/{id}",
    tag = "accounts",
    summary = "Update an account",
    description = openapi::text::PATCH,
    params(
        ("id" = Uuid, Path, description = "The account's id."),
        ("If-Match" = String, Header, description = "The account's current `ETag`, e.g. `\"4\"`.", pattern = r#"^"[0-9]{1,18}"$"#, example = json!("\"4\"")),
    ),
    request_body(content = openapi::PatchAccount, examples(
        ("freeze" = (summary = "Freeze the account", value = json!(openapi::examples::patch_account()))),
        ("rename" = (summary = "New owner name and metadata", value = json!({"owner_name": "Ada King", "metadata": {"customer_id": "C-1029", "segment": "private"}}))),
        ("close" = (summary = "Close it (balance must be 0; final)", value = json!({"status": "closed"}))),
    )),
    responses(
        (status = 200, description = "The updated account.", body = openapi::Account,
            headers(("ETag" = String, description = "The account's `version` in quotes, e.g. `\"4\"`: the `If-Match` of a PATCH.")),
            example = json!(openapi::examples::patched_account())),
        (status = 400, description = "- `malformed_json`: the body is not JSON\n- `invalid_header`: `If-Match` is not a version in quotes, e.g. `\"4\"`"),
        (status = 403, description = "- `forbidden`: a `viewer` key"),
        (status = 404, description = "- `not_found`: no such account, or it is outside the key's scope"),
        (status = 409, description = "- `account_not_empty`: closing needs a zero balance\n- `invalid_state`: the account is closed"),
        (status = 412, description = "- `version_mismatch`: `If-Match` is not the account's current version"),
        (status = 422, description = "- `validation_error`: a field is invalid, null or unknown (`errors` lists them)"),
        (status = 428, description = "- `precondition_required`: no `If-Match` header"),
    ),
)]
async fn update_account(
    State(state): State<AppState>,
    PathId(id): PathId,
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
        // 404 or 428 is decided on the primary: an account created a moment ago exists.
        visible_account_fresh(&state, &req.ctx, id).await?;
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

#[utoipa::path(
    get,
    path = "/v1/accounts/{id}/balance",
    tag = "accounts",
    summary = "Balance at an instant",
    description = openapi::text::BALANCE,
    params(("id" = Uuid, Path, description = "The account's id."), openapi::BalanceQuery),
    responses(
        (status = 200, description = "The balance as of `at` (or now).", body = openapi::Balance, examples(
            ("at an instant" = (summary = "?at=2026-11-25T12:00:00Z: after the salary, before the coffee", value = json!(openapi::examples::balance()))),
            ("before the first movement" = (summary = "?at=2026-11-01T00:00:00Z", value = json!(openapi::examples::balance_before_first()))),
        )),
        (status = 404, description = "- `not_found`: no such account, or it is outside the key's scope"),
        (status = 422, description = "- `validation_error`: `at` is not an RFC 3339 date-time, or a repeated or unknown query parameter"),
    ),
)]
async fn get_balance(
    State(state): State<AppState>,
    PathId(id): PathId,
    RawQuery(query): RawQuery,
    QueryAuthed(ctx): QueryAuthed,
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

#[utoipa::path(
    post,
    path = "/v1/accounts/{id}/credits",
    tag = "transactions",
    summary = "Credit an account",
    description = "Puts money into the account: a `completed` credit.",
    params(("id" = Uuid, Path, description = "The account's id.")),
    request_body(content = openapi::Credit, example = json!(openapi::examples::credit())),
    responses(
        (status = 201, description = "The completed credit.", body = openapi::Transaction,
            example = json!(openapi::examples::credit_tx())),
        (status = 403, description = "- `forbidden`: a `viewer` key (moving money needs `operator` or `admin`)"),
        (status = 404, description = "- `not_found`: no such account, or it is outside the key's scope"),
        (status = 422, description = "- `validation_error`: a field is missing, invalid or unknown (`errors` lists them)\n- `account_not_active`: the account is frozen or closed\n- `balance_overflow`: the balance would exceed 2^63−1"),
    ),
)]
async fn credit(
    State(state): State<AppState>,
    PathId(id): PathId,
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

#[utoipa::path(
    post,
    path = "/v1/accounts/{id}/debits",
    tags = ["transactions", "holds"],
    summary = "Debit an account, or place a hold",
    description = openapi::text::DEBIT,
    params(("id" = Uuid, Path, description = "The account's id.")),
    request_body(content = openapi::Debit, examples(
        ("debit" = (summary = "A completed debit", value = json!(openapi::examples::debit()))),
        ("hold" = (summary = "A hold: reserve funds to capture or void later", value = json!(openapi::examples::hold()))),
    )),
    responses(
        (status = 201, description = "The debit: `completed`, or `pending` for a hold.", body = openapi::Transaction, examples(
            ("debit" = (summary = "A completed debit", value = json!(openapi::examples::debit_tx()))),
            ("hold" = (summary = "A hold: pending, not posted (balance_after and posted_at are null)", value = json!(openapi::examples::hold_tx()))),
        )),
        (status = 403, description = "- `forbidden`: a `viewer` key (moving money needs `operator` or `admin`)"),
        (status = 404, description = "- `not_found`: no such account, or it is outside the key's scope"),
        (status = 422, description = "- `validation_error`: a field is missing, invalid or unknown (`errors` lists them)\n- `account_not_active`: the account is frozen or closed\n- `insufficient_funds`: the available balance is less than the amount; the declined attempt is recorded as a `failed` transaction whose id is `transaction_id`"),
    ),
)]
async fn debit(
    State(state): State<AppState>,
    PathId(id): PathId,
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

#[utoipa::path(
    get,
    path = "/v1/accounts/{id}/transactions",
    tag = "transactions",
    summary = "List an account's transactions",
    description = openapi::text::LIST_TRANSACTIONS,
    params(("id" = Uuid, Path, description = "The account's id."), openapi::TransactionListQuery),
    responses(
        (status = 200, description = "A page of transactions, newest first.", body = openapi::Page<openapi::Transaction>,
            example = json!(openapi::examples::transactions_page())),
        (status = 404, description = "- `not_found`: no such account, or it is outside the key's scope"),
        (status = 422, description = "- `validation_error`: a bad `status`, `type`, `since`, `until`, `limit` or `cursor`, or a repeated or unknown query parameter"),
    ),
)]
async fn list_transactions(
    State(state): State<AppState>,
    PathId(id): PathId,
    RawQuery(query): RawQuery,
    QueryAuthed(ctx): QueryAuthed,
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

#[utoipa::path(
    get,
    path = "/v1/transactions/{id}",
    tag = "transactions",
    summary = "Get a transaction",
    params(("id" = Uuid, Path, description = "The transaction's id.")),
    responses(
        (status = 200, description = "The transaction.", body = openapi::Transaction,
            example = json!(openapi::examples::debit_tx())),
        (status = 404, description = "- `not_found`: no such transaction, or its account is outside the key's scope"),
    ),
)]
async fn get_transaction(
    State(state): State<AppState>,
    PathId(id): PathId,
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

#[utoipa::path(
    post,
    path = "/v1/transactions/{id}/capture",
    tag = "holds",
    summary = "Capture a hold",
    description = openapi::text::CAPTURE,
    params(("id" = Uuid, Path, description = "The transaction's id.")),
    request_body(content = Option<openapi::NoFields>, description = "Nothing, or `{}`.", example = json!({})),
    responses(
        (status = 200, description = "The captured debit, now `completed`.", body = openapi::Transaction,
            example = json!(openapi::examples::captured_tx())),
        (status = 403, description = "- `forbidden`: a `viewer` key (moving money needs `operator` or `admin`)"),
        (status = 404, description = "- `not_found`: no such transaction, or its account is outside the key's scope"),
        (status = 409, description = "- `invalid_state`: not a pending debit (already captured, voided, or not a hold)"),
        (status = 422, description = "- `validation_error`: the body has fields\n- `account_not_active`: the account is frozen or closed"),
    ),
)]
async fn capture(
    State(state): State<AppState>,
    PathId(id): PathId,
    req: OptionalBody,
) -> Result<Response, ApiError> {
    settle(&state, &id, req, |transaction_id| Command::Capture {
        transaction_id,
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/transactions/{id}/void",
    tag = "holds",
    summary = "Void a hold",
    description = openapi::text::VOID,
    params(("id" = Uuid, Path, description = "The transaction's id.")),
    request_body(content = Option<openapi::NoFields>, description = "Nothing, or `{}`.", example = json!({})),
    responses(
        (status = 200, description = "The voided debit, now `failed` with `failure_reason: \"voided\"`.", body = openapi::Transaction,
            example = json!(openapi::examples::voided_tx())),
        (status = 403, description = "- `forbidden`: a `viewer` key (moving money needs `operator` or `admin`)"),
        (status = 404, description = "- `not_found`: no such transaction, or its account is outside the key's scope"),
        (status = 409, description = "- `invalid_state`: not a pending debit (already captured, voided, or not a hold)"),
        (status = 422, description = "- `validation_error`: the body has fields"),
    ),
)]
async fn void(
    State(state): State<AppState>,
    PathId(id): PathId,
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

#[utoipa::path(
    post,
    path = "/v1/transactions/{id}/reverse",
    tag = "transactions",
    summary = "Reverse a transaction",
    description = openapi::text::REVERSE_TRANSACTION,
    params(("id" = Uuid, Path, description = "The transaction's id.")),
    request_body(content = Option<openapi::Reverse>, example = json!(openapi::examples::reverse())),
    responses(
        (status = 201, description = "The compensating transaction.", body = openapi::Transaction,
            example = json!(openapi::examples::reversal_tx())),
        (status = 403, description = "- `forbidden`: a `viewer` key (moving money needs `operator` or `admin`)"),
        (status = 404, description = "- `not_found`: no such transaction, or its account is outside the key's scope"),
        (status = 409, description = "- `already_reversed`: it was reversed before\n- `invalid_state`: it is pending, failed, or itself a compensation"),
        (status = 422, description = "- `validation_error`: `reason` is invalid, or a field is unknown\n- `account_not_active`: an account involved is frozen or closed\n- `balance_overflow`: a balance would exceed 2^63−1\n- `insufficient_funds`: the account to take the money back from has too little available (nothing is recorded)"),
    ),
)]
async fn reverse_transaction(
    State(state): State<AppState>,
    PathId(id): PathId,
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

#[utoipa::path(
    post,
    path = "/v1/transfers",
    tag = "transfers",
    summary = "Transfer money",
    description = "Moves money between two accounts of one currency: a debit on the source and a credit on the destination, both `completed` in one database transaction.",
    request_body(content = openapi::CreateTransfer, example = json!(openapi::examples::create_transfer())),
    responses(
        (status = 201, description = "The completed transfer.", body = openapi::Transfer,
            example = json!(openapi::examples::transfer())),
        (status = 403, description = "- `forbidden`: a `viewer` key (moving money needs `operator` or `admin`)"),
        (status = 404, description = "- `not_found`: an account is unknown or outside the key's scope"),
        (status = 422, description = "- `validation_error`: a field is missing, invalid or unknown (`errors` lists them)\n- `same_account`: source and destination are the same account\n- `currency_mismatch`: the accounts hold different currencies\n- `account_not_active`: an account is frozen or closed\n- `balance_overflow`: the destination's balance would exceed 2^63−1\n- `insufficient_funds`: the source's available balance is short; the declined transfer is recorded (`status: failed`, a failed debit, no credit) and its id is `transfer_id`, and its failed debit's is `transaction_id`"),
    ),
)]
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

#[utoipa::path(
    post,
    path = "/v1/transfers/batch",
    tag = "transfers",
    summary = "Transfer in batches",
    description = openapi::text::BATCH,
    request_body(content = openapi::TransferBatch, examples(
        ("not atomic" = (summary = "Each item on its own: the first succeeds, the second is declined, the third is invalid", value = json!(openapi::examples::batch()))),
        ("atomic" = (summary = "All or nothing: one item fails, so nothing is recorded", value = json!(openapi::examples::batch_atomic()))),
    )),
    responses(
        (status = 200, description = "One result per item, in request order.", body = openapi::BatchResult, examples(
            ("not atomic" = (summary = "Results of the non-atomic example", value = json!(openapi::examples::batch_result()))),
            ("atomic" = (summary = "Results of the atomic example: nothing recorded", value = json!(openapi::examples::batch_atomic_result()))),
        )),
        (status = 403, description = "- `forbidden`: a `viewer` key (moving money needs `operator` or `admin`)"),
        (status = 413, description = "- `payload_too_large`: the body is larger than 1 MiB"),
        (status = 422, description = "- `validation_error`: a malformed envelope: `transfers` missing, not a list, empty or longer than 1000; `atomic` not a boolean; an unknown field"),
    ),
)]
async fn create_transfer_batch(
    State(state): State<AppState>,
    _slot: BatchSlot,
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
    // A duplicate key or a NUL inside an item fails that item only; anywhere else, the request.
    let mut item_problems = vec![Vec::new(); raw_items.as_ref().map_or(0, Vec::len)];
    for problem in req.problems {
        match batch_item_of(&problem.field).filter(|&i| i < item_problems.len()) {
            Some(i) => item_problems[i].push(problem),
            None => f.invalid(&problem.field, problem.message),
        }
    }
    validated(f)?;
    let raw_items = raw_items.ok_or(ApiError::Validation(Vec::new()))?;
    req.ctx.caller.require(Role::Operator)?;
    let mut items = Vec::with_capacity(raw_items.len());
    let mut errors = Vec::with_capacity(raw_items.len());
    for ((i, raw), mut problems) in raw_items.into_iter().enumerate().zip(item_problems) {
        let prefix = format!("transfers.{i}.");
        let spec = match Fields::new(raw, &prefix) {
            Err(e) => {
                problems.push(e);
                None
            }
            Ok(mut item) => {
                let spec = transfer_spec(&mut item);
                if let Err(e) = item.finish() {
                    problems.extend(e);
                }
                spec
            }
        };
        let (item, error) = match spec {
            Some(spec) if problems.is_empty() => (BatchItem::Valid(spec), None),
            _ if problems.is_empty() => (
                BatchItem::Invalid,
                Some(ApiError::Validation(vec![FieldError::new(
                    prefix,
                    "is invalid",
                )])),
            ),
            _ => (BatchItem::Invalid, Some(ApiError::Validation(problems))),
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

/// The item a problem's field is in (`transfers.3` or `transfers.3.amount` → 3).
fn batch_item_of(field: &str) -> Option<usize> {
    let rest = field.strip_prefix("transfers.")?;
    let index = rest.split('.').next()?;
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    index.parse().ok()
}

#[utoipa::path(
    get,
    path = "/v1/transfers/{id}",
    tag = "transfers",
    summary = "Get a transfer",
    params(("id" = Uuid, Path, description = "The transfer's id.")),
    responses(
        (status = 200, description = "The transfer.", body = openapi::Transfer,
            example = json!(openapi::examples::transfer())),
        (status = 404, description = "- `not_found`: no such transfer, or one of its accounts is outside the key's scope"),
    ),
)]
async fn get_transfer(
    State(state): State<AppState>,
    PathId(id): PathId,
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

#[utoipa::path(
    post,
    path = "/v1/transfers/{id}/reverse",
    tag = "transfers",
    summary = "Reverse a transfer",
    description = openapi::text::REVERSE_TRANSFER,
    params(("id" = Uuid, Path, description = "The transfer's id.")),
    request_body(content = Option<openapi::Reverse>, example = json!(openapi::examples::reverse())),
    responses(
        (status = 201, description = "The compensating transfer, from the original destination back to the source.", body = openapi::Transfer,
            example = json!(openapi::examples::reversal_transfer())),
        (status = 403, description = "- `forbidden`: a `viewer` key (moving money needs `operator` or `admin`)"),
        (status = 404, description = "- `not_found`: no such transfer, or one of its accounts is outside the key's scope"),
        (status = 409, description = "- `already_reversed`: it was reversed before\n- `invalid_state`: it is pending, failed, or itself a compensation"),
        (status = 422, description = "- `validation_error`: `reason` is invalid, or a field is unknown\n- `account_not_active`: an account involved is frozen or closed\n- `balance_overflow`: a balance would exceed 2^63−1\n- `insufficient_funds`: the account to take the money back from has too little available (nothing is recorded)"),
    ),
)]
async fn reverse_transfer(
    State(state): State<AppState>,
    PathId(id): PathId,
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

// ----- API keys and the audit log ----------------------------------------------------------

/// Longest API key `name`, in code points; most accounts in a key's scope.
const MAX_KEY_NAME: usize = 200;
pub const MAX_KEY_ACCOUNTS: usize = 1000;

/// API keys and the audit log are for `admin` keys that are not limited to accounts: a scoped
/// key could otherwise mint itself a wider one, or read about accounts it cannot see.
fn require_security_admin(ctx: &Ctx) -> Result<(), ApiError> {
    ctx.caller.require(Role::Admin)?;
    if ctx.caller.scope.is_some() {
        return Err(ApiError::Forbidden(
            "a key limited to accounts cannot manage API keys or read the audit log",
        ));
    }
    Ok(())
}

/// `account_ids`: absent or null (every account), or 1–1000 distinct account ids.
fn key_scope(f: &mut Fields) -> Option<Vec<Uuid>> {
    let ids = match f.raw("account_ids") {
        None | Some(Value::Null) => return None,
        Some(Value::Array(items)) => items,
        Some(_) => {
            f.invalid("account_ids", "must be an array of account ids, or null");
            return None;
        }
    };
    if ids.is_empty() || ids.len() > MAX_KEY_ACCOUNTS {
        f.invalid(
            "account_ids",
            format!("must list 1 to {MAX_KEY_ACCOUNTS} accounts (null: every account)"),
        );
        return None;
    }
    let mut parsed = Vec::with_capacity(ids.len());
    for (i, item) in ids.iter().enumerate() {
        match item.as_str().and_then(|s| Uuid::try_parse(s).ok()) {
            Some(id) if !parsed.contains(&id) => parsed.push(id),
            Some(_) => f.invalid(&format!("account_ids.{i}"), "is listed twice"),
            None => f.invalid(&format!("account_ids.{i}"), "must be a UUID string"),
        }
    }
    Some(parsed)
}

#[utoipa::path(
    post,
    path = "/v1/api-keys",
    tag = "api keys",
    summary = "Create an API key",
    description = openapi::text::CREATE_API_KEY,
    request_body(content = openapi::CreateApiKey, examples(
        ("operator" = (summary = "A key that moves money on every account", value = json!(openapi::examples::create_api_key()))),
        ("scoped viewer" = (summary = "A read-only key for two accounts", value = json!(openapi::examples::create_scoped_api_key()))),
    )),
    responses(
        (status = 201, description = "The new key, with its secret `key`: shown this once.", body = openapi::ApiKey,
            example = json!(openapi::examples::new_api_key())),
        (status = 403, description = "- `forbidden`: not an `admin` key, or a key limited to accounts"),
        (status = 404, description = "- `not_found`: an account in `account_ids` does not exist"),
        (status = 422, description = "- `validation_error`: a field is missing, invalid or unknown (`errors` lists them)"),
    ),
)]
async fn create_api_key(State(state): State<AppState>, req: Body) -> Result<Response, ApiError> {
    let mut f = Fields::body(req.body)?;
    let name = f.string("name", 1, MAX_KEY_NAME, true);
    let role = f.string("role", 0, 16, true).and_then(|r| {
        let parsed = Role::parse(&r);
        if parsed.is_none() {
            f.invalid("role", "must be admin, operator or viewer");
        }
        parsed
    });
    let account_ids = key_scope(&mut f);
    let (Some(name), Some(role)) = (name, role) else {
        return validated(f).and(Err(ApiError::Validation(Vec::new())));
    };
    validated(f)?;
    require_security_admin(&req.ctx)?;
    let secret = crate::auth::generate_secret();
    let command = Command::CreateApiKey(crate::auth::new_key(
        name,
        role,
        account_ids,
        &secret,
        false,
    ));
    execute_revealing(
        &state,
        &req.ctx,
        command,
        StatusCode::CREATED,
        &req.canonical,
        no_items(),
        Some(&secret),
    )
    .await
}

#[utoipa::path(
    get,
    path = "/v1/api-keys",
    tag = "api keys",
    summary = "List API keys",
    description = "The keys that work (revoked ones are gone), oldest first, without their secrets. Needs an `admin` key not limited to accounts.",
    params(openapi::PageQuery),
    responses(
        (status = 200, description = "A page of keys.", body = openapi::Page<openapi::ApiKey>,
            example = json!(openapi::examples::api_keys_page())),
        (status = 403, description = "- `forbidden`: not an `admin` key, or a key limited to accounts"),
        (status = 422, description = "- `validation_error`: a bad `limit` or `cursor`, or a repeated or unknown query parameter"),
    ),
)]
async fn list_api_keys(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    QueryAuthed(ctx): QueryAuthed,
) -> Result<Response, ApiError> {
    let mut q = Query::parse(query.as_deref())?;
    let limit = q.limit() as usize;
    let after = decode_cursor(&mut q, "api_key").and_then(|s| {
        let id = Uuid::try_parse(&s).ok();
        if id.is_none() {
            q.invalid("cursor", "is not a valid cursor");
        }
        id
    });
    q.finish()?;
    require_security_admin(&ctx)?;
    // Keys are few: the store returns them all, oldest (smallest UUIDv7) first.
    let keys = state.store.list_api_keys().await.map_err(store_error)?;
    let mut page: Vec<_> = keys
        .iter()
        .filter(|k| after.is_none_or(|a| k.id > a))
        .take(limit + 1)
        .collect();
    let more = page.len() > limit;
    page.truncate(limit);
    let next = more
        .then(|| {
            page.last()
                .map(|k| encode_cursor("api_key", &k.id.to_string()))
        })
        .flatten();
    Ok(json_ok(&views::page(
        page.iter().map(|k| views::api_key(k, None)).collect(),
        next,
    )))
}

#[utoipa::path(
    delete,
    path = "/v1/api-keys/{id}",
    tag = "api keys",
    summary = "Revoke an API key",
    description = "The key stops working at once, on every instance: every request looks its key up in the database. Revocation is final. Needs an `admin` key not limited to accounts.",
    params(("id" = Uuid, Path, description = "The key's id.")),
    responses(
        (status = 204, description = "Revoked."),
        (status = 403, description = "- `forbidden`: not an `admin` key, or a key limited to accounts"),
        (status = 404, description = "- `not_found`: no such key, or it is already revoked"),
    ),
)]
async fn revoke_api_key(
    State(state): State<AppState>,
    PathId(id): PathId,
    Authed(ctx): Authed,
) -> Result<Response, ApiError> {
    require_security_admin(&ctx)?;
    let key_id = path_id(&id, "api key")?;
    // Only unscoped admins get here, so the envelope's scope is None.
    let envelope = ctx.envelope(Command::RevokeApiKey { key_id });
    match state.submit(&ctx, envelope, None).await? {
        Reply::Applied { outcome: Ok(_), .. } => {
            tracing::info!(request_id = %ctx.request_id, key_id = %ctx.caller.key_id, revoked = %key_id, "API key revoked");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Reply::Applied {
            outcome: Err(e), ..
        } => Err(ApiError::Ledger(e)),
        Reply::Replay(_) | Reply::KeyReused => {
            Err(ApiError::Internal("idempotency reply without a key".into()))
        }
    }
}

#[utoipa::path(
    get,
    path = "/v1/audit-events",
    tag = "audit",
    summary = "Read the audit log",
    description = openapi::text::AUDIT,
    params(openapi::AuditQuery),
    responses(
        (status = 200, description = "A page of events, ascending `seq`.", body = openapi::Page<openapi::AuditEvent>,
            example = json!(openapi::examples::audit_page())),
        (status = 403, description = "- `forbidden`: not an `admin` key, or a key limited to accounts"),
        (status = 422, description = "- `validation_error`: a bad `after_seq`, `limit` or `cursor`, or a repeated or unknown query parameter"),
    ),
)]
async fn list_audit_events(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    QueryAuthed(ctx): QueryAuthed,
) -> Result<Response, ApiError> {
    let mut q = Query::parse(query.as_deref())?;
    let after_seq = q.take("after_seq").and_then(|s| {
        let n = s.parse::<i64>().ok().filter(|n| *n >= 0);
        if n.is_none() {
            q.invalid("after_seq", "must be an integer of at least 0");
        }
        n
    });
    let limit = q.limit();
    let cursor = decode_cursor(&mut q, "audit").and_then(|s| {
        let n = s.parse::<i64>().ok().filter(|n| *n >= 0);
        if n.is_none() {
            q.invalid("cursor", "is not a valid cursor");
        }
        n
    });
    q.finish()?;
    require_security_admin(&ctx)?;
    // The cursor continues a listing that started at `after_seq`: events after both.
    let after = after_seq.unwrap_or(0).max(cursor.unwrap_or(0));
    let mut events = state
        .store
        .list_audit_events(after, limit + 1)
        .await
        .map_err(store_error)?;
    let more = events.len() > limit as usize;
    events.truncate(limit as usize);
    let next = more
        .then(|| {
            events
                .last()
                .map(|e| encode_cursor("audit", &e.seq.to_string()))
        })
        .flatten();
    Ok(json_ok(&views::page(
        events
            .iter()
            .map(zeta_ledger::audit::AuditEvent::to_json)
            .collect(),
        next,
    )))
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
    // The read replica is reported but does not decide readiness: without it only reads fail
    // (503), and every instance shares it, so taking them all out of service would also stop
    // the money commands that the primary still serves. Not through the breaker: that one
    // guards the primary. Probed while the primary is.
    let store = state.store.clone();
    let replica = tokio::spawn(async move {
        match tokio::time::timeout(READY_TIMEOUT, store.ping_replica()).await {
            Ok(None) => None,
            Ok(Some(Ok(()))) => Some("ok"),
            Ok(Some(Err(_))) | Err(_) => Some("down"),
        }
    });
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
    let replica = replica.await.unwrap_or(Some("down"));
    let with_replica = |mut body: Value| {
        if let Some(replica) = replica {
            body["checks"]["read_replica"] = json!(replica);
        }
        Json(body)
    };
    if database_ok {
        with_replica(json!({"status": "ready", "checks": {"database": "ok"}})).into_response()
    } else {
        let circuit = match state.breaker.state() {
            crate::breaker::BreakerState::Closed => "closed",
            crate::breaker::BreakerState::Open => "open",
            crate::breaker::BreakerState::HalfOpen => "half_open",
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            with_replica(
                json!({"status": "unavailable", "checks": {"database": "down", "circuit_breaker": circuit}}),
            ),
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
