//! The OpenAPI 3.1 document of the `/v1` API, served at `/openapi.json`, and the interactive
//! documentation at `/docs` (Swagger UI from vendored assets: nothing is fetched from anywhere
//! but this server).
//!
//! Where the document comes from:
//! - each operation (path, parameters, request body, success and route-specific error
//!   responses, examples) is a `#[utoipa::path]` attribute on its handler in `routes.rs`;
//! - the schemas below are documentation-only mirrors of the JSON that `views.rs`, `error.rs`
//!   and `command.rs` write and that the request validators (`json::Fields`) accept; no handler
//!   (de)serializes them;
//! - [`conventions`] then adds what every `/v1` operation shares (bearer auth, `X-Request-Id`,
//!   `Idempotency-Key` on POSTs, the generic error responses 400/401/413/415/429/500/503) and
//!   turns every error response into `application/problem+json` with one example per code that
//!   its description lists (lines of the form ``- `code`: …``).

use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, schema};
use utoipa::{IntoParams, OpenApi, PartialSchema, ToSchema};
use uuid::Uuid;

use crate::AppState;

// ----- the document ------------------------------------------------------------------------

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Zeta Banking API",
        description = text::INTRO,
        // No SPDX `identifier`: Swagger UI would turn it into a link to an external site.
        license(name = "Apache-2.0"),
    ),
    paths(
        crate::routes::create_account,
        crate::routes::list_accounts,
        crate::routes::get_account,
        crate::routes::update_account,
        crate::routes::get_balance,
        crate::routes::credit,
        crate::routes::debit,
        crate::routes::list_transactions,
        crate::routes::get_transaction,
        crate::routes::capture,
        crate::routes::void,
        crate::routes::reverse_transaction,
        crate::routes::create_transfer,
        crate::routes::create_transfer_batch,
        crate::routes::get_transfer,
        crate::routes::reverse_transfer,
        crate::routes::create_api_key,
        crate::routes::list_api_keys,
        crate::routes::revoke_api_key,
        crate::routes::list_audit_events,
    ),
    components(schemas(Problem, BatchItemProblem, FieldError, ErrorCode)),
    tags(
        (name = "accounts", description = "Accounts, their balances and their history."),
        (name = "transactions", description = "Money in and out of one account, and reversals."),
        (name = "holds", description = text::HOLDS_TAG),
        (name = "transfers", description = "Money between two accounts of one currency, one at a time or in batches."),
        (name = "api keys", description = "Who may call the API: roles `admin`, `operator`, `viewer`, optionally limited to accounts."),
        (name = "audit", description = "The tamper-evident log of every state change."),
    ),
)]
struct ApiDoc;

/// The document as JSON, built once.
pub fn document() -> &'static Value {
    static DOC: LazyLock<Value> = LazyLock::new(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
        conventions(&mut doc);
        doc
    });
    &DOC
}

fn document_bytes() -> &'static [u8] {
    static BYTES: LazyLock<Vec<u8>> =
        LazyLock::new(|| serde_json::to_vec(document()).expect("the document serializes"));
    &BYTES
}

// ----- error codes -------------------------------------------------------------------------

/// One problem `code`: its status, title, and the `detail` used in examples.
pub struct Code {
    pub code: &'static str,
    pub status: u16,
    pub title: &'static str,
    pub example_detail: &'static str,
}

const fn code(
    code: &'static str,
    status: u16,
    title: &'static str,
    example_detail: &'static str,
) -> Code {
    Code {
        code,
        status,
        title,
        example_detail,
    }
}

/// Every problem code of API.md (and `batch_failed`, which only batch items carry).
pub const CODES: &[Code] = &[
    code(
        "malformed_json",
        400,
        "Malformed JSON",
        "the body is not valid JSON: EOF while parsing an object at line 1 column 12",
    ),
    code(
        "invalid_header",
        400,
        "Invalid header",
        "Idempotency-Key must be 1 to 255 visible ASCII characters",
    ),
    code(
        "unauthorized",
        401,
        "Unauthorized",
        "a valid API key is required (Authorization: Bearer <key>)",
    ),
    code(
        "forbidden",
        403,
        "Forbidden",
        "this API key's role may not do this",
    ),
    code("not_found", 404, "Not found", "account not found"),
    code(
        "method_not_allowed",
        405,
        "Method not allowed",
        "the method is not allowed on this resource",
    ),
    code(
        "account_number_taken",
        409,
        "Account number taken",
        "account number is already taken",
    ),
    code(
        "idempotency_key_in_use",
        409,
        "Idempotency key in use",
        "a request with this Idempotency-Key is still being processed",
    ),
    code(
        "already_reversed",
        409,
        "Already reversed",
        "the transaction is already reversed",
    ),
    code(
        "invalid_state",
        409,
        "Invalid state",
        "only a pending debit can be captured or voided",
    ),
    code(
        "account_not_empty",
        409,
        "Account not empty",
        "the account balance is 1500; it must be 0 to close the account",
    ),
    code(
        "version_mismatch",
        412,
        "Version mismatch",
        "the account's version is 4, not 3",
    ),
    code(
        "payload_too_large",
        413,
        "Payload too large",
        "the body is larger than 65536 bytes",
    ),
    code(
        "unsupported_media_type",
        415,
        "Unsupported media type",
        "the body must be sent as Content-Type: application/json",
    ),
    code(
        "validation_error",
        422,
        "Validation error",
        "amount: must be an integer from 1 to 9007199254740991 (minor units)",
    ),
    code(
        "insufficient_funds",
        422,
        "Insufficient funds",
        "available balance 500 is less than amount 700",
    ),
    code(
        "currency_mismatch",
        422,
        "Currency mismatch",
        "the accounts hold different currencies (EUR and USD)",
    ),
    code(
        "same_account",
        422,
        "Same account",
        "source and destination are the same account",
    ),
    code(
        "account_not_active",
        422,
        "Account not active",
        "account 0194b2a4-5c3e-7d1a-9f2b-3c4d5e6f7a81 is frozen",
    ),
    code(
        "balance_overflow",
        422,
        "Balance overflow",
        "the balance would exceed the largest representable balance",
    ),
    code(
        "idempotency_key_reused",
        422,
        "Idempotency key reused",
        "this Idempotency-Key was used for a different request",
    ),
    code(
        "batch_failed",
        424,
        "Batch failed",
        "another item of this atomic batch failed, so nothing was recorded",
    ),
    code(
        "precondition_required",
        428,
        "Precondition required",
        "this request needs an If-Match header with the account's ETag",
    ),
    code(
        "rate_limited",
        429,
        "Rate limited",
        "too many requests; retry later",
    ),
    code(
        "internal_error",
        500,
        "Internal error",
        "an internal error occurred",
    ),
    code(
        "service_unavailable",
        503,
        "Service unavailable",
        "the service is temporarily unavailable; retry later",
    ),
];

pub fn find_code(name: &str) -> Option<&'static Code> {
    CODES.iter().find(|c| c.code == name)
}

/// `type` of a problem: `https://zeta.example/problems/<code with dashes>`.
fn problem_type(code: &str) -> String {
    format!("https://zeta.example/problems/{}", code.replace('_', "-"))
}

// ----- schemas: enums ----------------------------------------------------------------------

fn string_enum(description: &str, values: impl IntoIterator<Item = &'static str>) -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(description))
            .enum_values(Some(values))
            .build(),
    )
}

/// A string enum whose values are the domain's own (`zeta_ledger`'s `ALL`), so the document
/// cannot drift from what the server writes and accepts.
macro_rules! domain_enum {
    ($(#[$m:meta])* $name:ident = $domain:ty, $description:literal) => {
        $(#[$m])*
        pub struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                string_enum($description, <$domain>::ALL.iter().map(|v| v.as_str())).into()
            }
        }

        impl ToSchema for $name {}
    };
}

domain_enum!(
    AccountStatus = zeta_ledger::AccountStatus,
    "`active` accounts move money; `frozen` ones are paused (money cannot move, a hold can still be voided); `closed` is final."
);
domain_enum!(
    TransactionType = zeta_ledger::TransactionType,
    "`credit` is money in, `debit` money out."
);
domain_enum!(
    TransactionStatus = zeta_ledger::TransactionStatus,
    "`pending`: a hold (reserved, not posted); `completed`: posted; `failed`: declined or voided (see `failure_reason`); `reversed`: completed, then compensated by a reversal."
);
domain_enum!(
    FailureReason = zeta_ledger::FailureReason,
    "Why a transaction is `failed`."
);
domain_enum!(
    TransferStatus = zeta_ledger::TransferStatus,
    "`completed`, `failed` (declined for insufficient funds: the debit is `failed`, there is no credit) or `reversed`."
);

/// The stable machine-readable error code of a problem.
pub struct ErrorCode;

impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        string_enum(
            "The stable, machine-readable error code.",
            CODES.iter().map(|c| c.code),
        )
        .into()
    }
}

impl ToSchema for ErrorCode {}

// ----- schemas: responses ------------------------------------------------------------------

/// An account. `available_balance` is `balance` minus the open holds.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(examples::account))]
pub struct Account {
    pub id: Uuid,
    /// Unique forever (closed accounts included).
    #[schema(pattern = "^[A-Z0-9]{8,34}$")]
    pub account_number: String,
    #[schema(min_length = 1, max_length = 200)]
    pub owner_name: String,
    /// ISO 4217 code, e.g. `EUR`.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    /// Posted balance in minor units (cents); never negative.
    #[schema(minimum = 0)]
    pub balance: i64,
    /// `balance` minus the pending debits (holds); never negative.
    #[schema(minimum = 0)]
    pub available_balance: i64,
    pub status: AccountStatus,
    /// Starts at 1 and grows by one with every change (balances and holds included); the
    /// `ETag` is this number in quotes.
    #[schema(minimum = 1)]
    pub version: i64,
    /// The client's free-form object (PATCH replaces it whole).
    #[schema(value_type = Object)]
    pub metadata: Value,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// One movement on one account.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(examples::credit_tx))]
pub struct Transaction {
    pub id: Uuid,
    pub account_id: Uuid,
    #[serde(rename = "type")]
    pub kind: TransactionType,
    /// Minor units.
    #[schema(minimum = 1, maximum = 9007199254740991_i64)]
    pub amount: i64,
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    pub status: TransactionStatus,
    /// The account balance right after this movement was posted; null if it never was.
    #[schema(required = true, minimum = 0)]
    pub balance_after: Option<i64>,
    /// The transfer this is a leg of.
    #[schema(required = true)]
    pub transfer_id: Option<Uuid>,
    /// On a compensating transaction: the one it reverses.
    #[schema(required = true)]
    pub reverses_id: Option<Uuid>,
    /// On a `reversed` transaction: its compensation.
    #[schema(required = true)]
    pub reversed_by_id: Option<Uuid>,
    /// Set when `status` is `failed`.
    #[schema(required = true)]
    pub failure_reason: Option<FailureReason>,
    #[schema(required = true, max_length = 500)]
    pub description: Option<String>,
    #[schema(required = true, max_length = 100)]
    pub reference: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When the movement hit the balance (for a captured hold: the capture); null otherwise.
    #[schema(required = true, format = DateTime)]
    pub posted_at: Option<String>,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// Money moved from one account to another: a debit on the source and a credit on the
/// destination, both carrying the transfer's id.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(examples::transfer))]
pub struct Transfer {
    pub id: Uuid,
    pub from_account_id: Uuid,
    pub to_account_id: Uuid,
    #[schema(minimum = 1, maximum = 9007199254740991_i64)]
    pub amount: i64,
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    pub status: TransferStatus,
    /// The leg on the source account.
    pub debit: Transaction,
    /// The leg on the destination account; null for a declined transfer.
    #[schema(required = true)]
    pub credit: Option<Transaction>,
    #[schema(required = true, max_length = 500)]
    pub description: Option<String>,
    #[schema(required = true, max_length = 100)]
    pub reference: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// `POST /v1/api-keys`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(examples::create_api_key))]
pub struct CreateApiKey {
    /// 1–200 characters, for people.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[schema(inline)]
    pub role: KeyRole,
    /// The accounts the key is limited to (1–1000 distinct ids); absent or null: every account.
    #[serde(default)]
    #[schema(min_items = 1, max_items = 1000)]
    pub account_ids: Option<Vec<Uuid>>,
}

/// What a key may do: `admin` everything (API keys and the audit log included), `operator`
/// create and update accounts, move money and read, `viewer` read only.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyRole {
    Admin,
    Operator,
    Viewer,
}

/// An API key. `key`, the secret, is only in the response that created it.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(examples::new_api_key))]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    #[schema(inline)]
    pub role: KeyRole,
    /// The accounts the key is limited to; null: every account.
    #[schema(required = true)]
    pub account_ids: Option<Vec<Uuid>>,
    /// The secret to send as `Authorization: Bearer <key>`: `zeta_` and 64 hex digits. Only in
    /// the 201 of its creation (a replay of that request has no `key`).
    #[serde(default)]
    #[schema(pattern = "^zeta_[0-9a-f]{64}$")]
    pub key: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// One audit event.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(examples::audit_event))]
pub struct AuditEvent {
    /// 1, 2, 3, … without gaps.
    #[schema(minimum = 1)]
    pub seq: i64,
    #[schema(format = DateTime)]
    pub at: String,
    /// The key that made the change; null for changes made outside a request (start-up, CLI).
    #[schema(required = true)]
    pub actor_key_id: Option<Uuid>,
    /// The request's `X-Request-Id`; null outside a request.
    #[schema(required = true)]
    pub request_id: Option<String>,
    /// `account.create`, `account.update`, `transaction.credit`, `transaction.debit`,
    /// `transaction.hold`, `transaction.capture`, `transaction.void`, `transaction.reverse`,
    /// `transfer.create`, `transfer.reverse`, `api_key.create` or `api_key.revoke`.
    pub action: String,
    /// `account`, `transaction`, `transfer` or `api_key`.
    pub resource_type: String,
    pub resource_id: Uuid,
    /// What changed (amounts, statuses, the fields of an update, …).
    #[schema(value_type = Object)]
    pub details: Value,
    /// The previous event's `hash` (64 zeros for the first).
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub prev_hash: String,
    /// SHA-256 of `prev_hash`, a newline and the canonical JSON of the other fields.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub hash: String,
}

/// One page of a list. Pass `next_cursor` as `cursor` to get the next; null on the last page.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Page<T: ToSchema> {
    pub data: Vec<T>,
    /// Opaque.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// An account's balance at an instant.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(examples::balance))]
pub struct Balance {
    pub account_id: Uuid,
    /// The balance after every movement posted at or before `as_of` (0 before the first).
    #[schema(minimum = 0)]
    pub balance: i64,
    /// The `at` asked for (to the microsecond), or now when it was absent.
    #[schema(format = DateTime)]
    pub as_of: String,
}

/// One invalid field of a request.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldError {
    /// The field's path, e.g. `amount`, `metadata`, `transfers.3.amount`, `body` or a query
    /// parameter's name.
    pub field: String,
    pub message: String,
}

/// An RFC 9457 problem: the body of every error response (`application/problem+json`).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(examples::problem))]
pub struct Problem {
    #[schema(format = "uri")]
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// Human-readable; speaks only of the request (never SQL, stack traces or internal names).
    pub detail: String,
    pub code: ErrorCode,
    /// The request's id (also the `X-Request-Id` header).
    pub request_id: String,
    /// The request's path.
    pub instance: String,
    /// `validation_error` only: every invalid field.
    #[schema(required = false)]
    pub errors: Vec<FieldError>,
    /// `insufficient_funds` on a debit or hold: the recorded `failed` transaction; on a
    /// transfer: its recorded `failed` debit.
    #[schema(required = false)]
    pub transaction_id: Uuid,
    /// `insufficient_funds` on a transfer: the recorded `failed` transfer.
    #[schema(required = false)]
    pub transfer_id: Uuid,
}

/// The problem of one failed batch item: a [`Problem`] without `request_id` and `instance`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItemProblem {
    #[schema(format = "uri")]
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    #[schema(minimum = 400, maximum = 499)]
    pub status: u16,
    pub detail: String,
    pub code: ErrorCode,
    #[schema(required = false)]
    pub errors: Vec<FieldError>,
    /// `insufficient_funds`: the recorded `failed` debit of the declined transfer.
    #[schema(required = false)]
    pub transaction_id: Uuid,
    /// `insufficient_funds`: the recorded `failed` transfer.
    #[schema(required = false)]
    pub transfer_id: Uuid,
}

/// A batch item that was executed: `status` is 201.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItemCreated {
    #[schema(minimum = 201, maximum = 201)]
    pub status: u16,
    pub transfer: Transfer,
}

/// A batch item that failed: its own error (as if sent alone), or, in an atomic batch that
/// failed, 424 `batch_failed` for the items that were fine.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItemFailed {
    #[schema(minimum = 400, maximum = 499)]
    pub status: u16,
    pub error: BatchItemProblem,
}

/// The outcome of one batch item, in request order.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum BatchItemResult {
    Created(Box<BatchItemCreated>),
    Failed(BatchItemFailed),
}

/// The outcome of a batch: one result per item, in request order.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(examples::batch_result))]
pub struct BatchResult {
    pub results: Vec<BatchItemResult>,
}

// ----- schemas: requests -------------------------------------------------------------------

/// `POST /v1/accounts`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(examples::create_account))]
pub struct CreateAccount {
    /// 1–200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub owner_name: String,
    /// ISO 4217 code: three upper-case letters. Fixed for the account's life.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    /// 8–34 of `A-Z` and `0-9`, unique forever; generated when absent or null.
    #[serde(default)]
    #[schema(pattern = "^[A-Z0-9]{8,34}$")]
    pub account_number: Option<String>,
    /// Any JSON object of at most 4 KiB (compact UTF-8 JSON); `{}` when absent or null.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// `PATCH /v1/accounts/{id}`: only the fields given change. None of them may be null.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(examples::patch_account))]
pub struct PatchAccount {
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub owner_name: String,
    /// `closed` needs a zero balance and is final.
    #[serde(default)]
    pub status: AccountStatus,
    /// Replaces the metadata as a whole (at most 4 KiB).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Value,
}

/// `POST /v1/accounts/{id}/credits`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(examples::credit))]
pub struct Credit {
    /// Minor units (cents) of the account's currency: a JSON integer from 1 to 2^53−1 (`1.0`,
    /// `1e3` and `"10"` are refused).
    #[schema(minimum = 1, maximum = 9007199254740991_i64)]
    pub amount: i64,
    #[serde(default)]
    #[schema(max_length = 500)]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(max_length = 100)]
    pub reference: Option<String>,
}

/// `POST /v1/accounts/{id}/debits`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(examples::debit))]
pub struct Debit {
    /// Minor units (cents): a JSON integer from 1 to 2^53−1.
    #[schema(minimum = 1, maximum = 9007199254740991_i64)]
    pub amount: i64,
    #[serde(default)]
    #[schema(max_length = 500)]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(max_length = 100)]
    pub reference: Option<String>,
    /// `true`: place a hold (a `pending` debit that lowers `available_balance` but not
    /// `balance`) to be captured or voided later. Absent or null means `false`.
    #[serde(default)]
    pub hold: Option<bool>,
}

/// `POST /v1/transactions/{id}/reverse` and `POST /v1/transfers/{id}/reverse`; the body may be
/// omitted.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(examples::reverse))]
pub struct Reverse {
    /// Why; at most 500 characters.
    #[serde(default)]
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

/// Capture and void take no fields: no body at all, or `{}`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({})))]
pub struct NoFields {}

/// `POST /v1/transfers`, and each item of a batch.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(examples::create_transfer))]
pub struct CreateTransfer {
    pub from_account_id: Uuid,
    pub to_account_id: Uuid,
    /// Minor units (cents): a JSON integer from 1 to 2^53−1.
    #[schema(minimum = 1, maximum = 9007199254740991_i64)]
    pub amount: i64,
    #[serde(default)]
    #[schema(max_length = 500)]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(max_length = 100)]
    pub reference: Option<String>,
}

/// `POST /v1/transfers/batch`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(examples::batch))]
pub struct TransferBatch {
    /// 1–1000 transfers, executed in order. An item that is not a valid [`CreateTransfer`]
    /// fails alone (its result is a 422 `validation_error`), so any JSON value is accepted
    /// here.
    #[schema(schema_with = batch_items)]
    pub transfers: Vec<CreateTransfer>,
    /// `true`: all or nothing — when any item fails, nothing at all is recorded. Absent or null
    /// means `false`.
    #[serde(default)]
    pub atomic: Option<bool>,
}

fn batch_items() -> schema::Array {
    let item = schema::AnyOfBuilder::new()
        .item(RefOr::Ref(schema::Ref::from_schema_name("CreateTransfer")))
        // Any JSON value: the schema `{}`.
        .item(Schema::Object(
            ObjectBuilder::new()
                .schema_type(schema::SchemaType::AnyValue)
                .build(),
        ));
    schema::ArrayBuilder::new()
        .items(item)
        .min_items(Some(1))
        .max_items(Some(crate::routes::MAX_BATCH_ITEMS))
        .build()
}

// ----- parameters --------------------------------------------------------------------------

/// Filters and paging of `GET /v1/accounts`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AccountListQuery {
    /// Only the account with this number.
    #[param(required = false)]
    pub account_number: String,
    /// Only accounts with this status.
    #[param(required = false, inline)]
    pub status: AccountStatus,
    /// Page size, 1–200 (default 50).
    #[param(required = false, minimum = 1, maximum = 200)]
    pub limit: u32,
    /// `next_cursor` of the previous page.
    #[param(required = false)]
    pub cursor: String,
}

/// Filters and paging of `GET /v1/accounts/{id}/transactions`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TransactionListQuery {
    /// Only transactions with this status.
    #[param(required = false, inline)]
    pub status: TransactionStatus,
    /// Only credits or only debits.
    #[param(rename = "type", required = false, inline)]
    pub kind: TransactionType,
    /// Only transactions created at or after this instant (RFC 3339).
    #[param(required = false, format = DateTime)]
    pub since: String,
    /// Only transactions created before this instant (RFC 3339).
    #[param(required = false, format = DateTime)]
    pub until: String,
    /// Page size, 1–200 (default 50).
    #[param(required = false, minimum = 1, maximum = 200)]
    pub limit: u32,
    /// `next_cursor` of the previous page.
    #[param(required = false)]
    pub cursor: String,
}

/// Paging of a list.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1–200 (default 50).
    #[param(required = false, minimum = 1, maximum = 200)]
    pub limit: u32,
    /// `next_cursor` of the previous page.
    #[param(required = false)]
    pub cursor: String,
}

/// Paging of `GET /v1/audit-events`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only events with a greater `seq` (default 0: from the first).
    #[param(required = false, minimum = 0)]
    pub after_seq: i64,
    /// Page size, 1–200 (default 50).
    #[param(required = false, minimum = 1, maximum = 200)]
    pub limit: u32,
    /// `next_cursor` of the previous page.
    #[param(required = false)]
    pub cursor: String,
}

/// `GET /v1/accounts/{id}/balance?at=`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BalanceQuery {
    /// The instant (RFC 3339, any offset; truncated to microseconds). Absent: now.
    #[param(required = false, format = DateTime, example = "2026-11-25T16:22:00.123456Z")]
    pub at: String,
}

// ----- conventions shared by every /v1 operation -------------------------------------------

const PROBLEM_JSON: &str = crate::error::PROBLEM_JSON;

const E400_POST: &str = "- `malformed_json`: the body is not JSON (also: a lone surrogate escape, nesting deeper than 64)\n\
- `invalid_header`: `Idempotency-Key` is not 1–255 visible ASCII characters";
const E401: &str = "- `unauthorized`: the `Authorization: Bearer <api key>` header is missing, or the key is unknown or revoked (with `WWW-Authenticate: Bearer`)";
const E413: &str = "- `payload_too_large`: the body is larger than 64 KiB";
const E415: &str =
    "- `unsupported_media_type`: a body sent without `Content-Type: application/json`";
const E429: &str = "- `rate_limited`: the key's token bucket (or, without a valid key, the client address's) is empty; retry after `Retry-After` seconds";
const E500: &str = "- `internal_error`: a bug; the body says nothing more (the cause is logged under the request id)";
const E503: &str = "- `service_unavailable`: the database is unreachable or the circuit breaker is open; retry after `Retry-After` seconds";
const E409_IDEMPOTENCY: &str =
    "- `idempotency_key_in_use`: a request with this `Idempotency-Key` is still being processed";
const E422_IDEMPOTENCY: &str = "- `idempotency_key_reused`: this `Idempotency-Key` was used for a different method, path or body";

/// The codes an error response's description lists: lines starting ``- `code` ``.
pub fn listed_codes(description: &str) -> Vec<&str> {
    description
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("- `"))
        .filter_map(|rest| rest.split_once('`').map(|(code, _)| code))
        .collect()
}

fn header_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/headers/{name}") })
}

/// Adds the shared parts to every operation and renders every error response as a problem.
fn conventions(doc: &mut Value) {
    let components = doc["components"]
        .as_object_mut()
        .expect("the document has components");
    components.insert(
        "securitySchemes".into(),
        json!({
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key: `Authorization: Bearer <key>`. Roles: `admin` (everything), `operator` (create and update accounts, move money, read), `viewer` (read only). A key limited to some accounts sees every other account as nonexistent (404) and cannot create accounts (403)."
            }
        }),
    );
    components.insert("headers".into(), shared_headers());
    components.insert(
        "parameters".into(),
        json!({
            "Idempotency-Key": {
                "name": "Idempotency-Key",
                "in": "header",
                "required": false,
                "description": text::IDEMPOTENCY,
                // No example: "Try it out" would send it with every request, turning each
                // retry with another body into a 422 `idempotency_key_reused`.
                "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}
            }
        }),
    );
    doc["security"] = json!([{ "bearer": [] }]);

    // utoipa inlines a generic's argument: point each page's items at the named schema.
    let schemas = doc["components"]["schemas"]
        .as_object_mut()
        .expect("the document has schemas");
    for (name, schema) in schemas.iter_mut() {
        if let Some(item) = name.strip_prefix("Page_") {
            schema["properties"]["data"]["items"] =
                json!({ "$ref": format!("#/components/schemas/{item}") });
        }
    }

    let paths = doc["paths"]
        .as_object_mut()
        .expect("the document has paths");
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            if !["get", "post", "patch", "put", "delete"].contains(&method.as_str()) {
                continue;
            }
            operation_conventions(path, method, op);
        }
    }
}

fn shared_headers() -> Value {
    json!({
        "X-Request-Id": {
            "description": "The request's id: the client's `X-Request-Id` when it is 1–128 visible ASCII characters, else one the server made. Problem bodies carry it as `request_id`.",
            "required": true,
            "schema": {"type": "string", "minLength": 1, "maxLength": 128}
        },
        "Idempotent-Replayed": {
            "description": "`true` when this is the stored response of an earlier request with the same `Idempotency-Key` (status and body byte-for-byte equal to the first).",
            "schema": {"type": "string", "enum": ["true"]}
        },
        "Retry-After": {
            "description": "Seconds to wait before retrying.",
            "required": true,
            "schema": {"type": "integer", "minimum": 0}
        },
        "WWW-Authenticate": {
            "description": "`Bearer`.",
            "required": true,
            "schema": {"type": "string"}
        }
    })
}

fn operation_conventions(path: &str, method: &str, op: &mut Value) {
    let has_body = method == "post" || method == "patch";
    let is_post = method == "post";
    if is_post {
        let params = op
            .as_object_mut()
            .expect("an operation is an object")
            .entry("parameters")
            .or_insert_with(|| json!([]));
        params
            .as_array_mut()
            .expect("parameters are a list")
            .push(json!({ "$ref": "#/components/parameters/Idempotency-Key" }));
    }
    // utoipa renders an optional body (`Option<T>`) as "T or null"; a JSON `null` body is
    // refused (422), while no body at all is fine: say that with `required: false` instead.
    if let Some(media) = op
        .pointer_mut("/requestBody/content/application~1json")
        .and_then(Value::as_object_mut)
        && let Some(options) = media["schema"]["oneOf"].as_array()
        && options.len() == 2
        && options.contains(&json!({ "type": "null" }))
    {
        let schema = options
            .iter()
            .find(|s| **s != json!({ "type": "null" }))
            .cloned()
            .expect("one option is not null");
        media.insert("schema".into(), schema);
        op["requestBody"]["required"] = json!(false);
    }
    let responses = op["responses"]
        .as_object_mut()
        .expect("an operation has responses");
    let mut shared: Vec<(&str, &str)> =
        vec![("401", E401), ("429", E429), ("500", E500), ("503", E503)];
    if has_body {
        shared.extend([("400", E400_POST), ("413", E413), ("415", E415)]);
    }
    for (status, description) in shared {
        responses
            .entry(status)
            .or_insert_with(|| json!({ "description": description }));
    }
    if is_post {
        for (status, line) in [("409", E409_IDEMPOTENCY), ("422", E422_IDEMPOTENCY)] {
            let response = responses
                .entry(status)
                .or_insert_with(|| json!({ "description": "" }));
            let description = response["description"].as_str().unwrap_or_default();
            response["description"] = if description.is_empty() {
                json!(line)
            } else {
                json!(format!("{description}\n{line}"))
            };
        }
    }
    for (status, response) in responses.iter_mut() {
        let code: u16 = status.parse().expect("responses have numeric statuses");
        let headers = response
            .as_object_mut()
            .expect("a response is an object")
            .entry("headers")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("headers are an object");
        headers.insert("X-Request-Id".into(), header_ref("X-Request-Id"));
        // Stored (and so replayed) are the responses given once a request passed
        // authentication and validation: 2xx, 404, 409 and 422 outcomes.
        if is_post && (code < 300 || [404, 409, 422].contains(&code)) {
            headers.insert(
                "Idempotent-Replayed".into(),
                header_ref("Idempotent-Replayed"),
            );
        }
        match code {
            401 => {
                headers.insert("WWW-Authenticate".into(), header_ref("WWW-Authenticate"));
            }
            429 | 503 => {
                headers.insert("Retry-After".into(), header_ref("Retry-After"));
            }
            _ => {}
        }
        if code >= 400 && response.get("content").is_none() {
            let description = response["description"].as_str().unwrap_or_default();
            response["content"] = json!({
                PROBLEM_JSON: {
                    "schema": { "$ref": "#/components/schemas/Problem" },
                    "examples": problem_examples(path, code, description),
                }
            });
        }
    }
}

/// One example problem per code listed in an error response's description.
fn problem_examples(path: &str, status: u16, description: &str) -> Value {
    let codes = listed_codes(description);
    assert!(
        !codes.is_empty(),
        "the {status} response of {path} lists no code: {description:?}"
    );
    let mut examples = Map::new();
    for name in codes {
        let code = find_code(name)
            .unwrap_or_else(|| panic!("the {status} response of {path} lists unknown code {name}"));
        assert_eq!(
            code.status, status,
            "{path}: code {name} is a {}, listed under {status}",
            code.status
        );
        let line = description
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("- `{name}`")))
            .unwrap_or_default();
        let mut problem = json!({
            "type": problem_type(name),
            "title": code.title,
            "status": status,
            "detail": code.example_detail,
            "code": name,
            "request_id": examples::REQUEST_ID,
            "instance": examples::instance(path),
        });
        if name == "validation_error" {
            problem["errors"] = json!([{
                "field": "amount",
                "message": "must be an integer from 1 to 9007199254740991 (minor units)"
            }]);
        }
        if line.contains("`transaction_id`") {
            problem["transaction_id"] = json!(examples::TX_DECLINED);
        }
        if line.contains("`transfer_id`") {
            problem["transfer_id"] = json!(examples::TRANSFER_DECLINED);
        }
        examples.insert(
            name.to_string(),
            json!({ "summary": code.title, "value": problem }),
        );
    }
    Value::Object(examples)
}

// ----- /openapi.json and /docs ---------------------------------------------------------------

/// Content-Security-Policy of the documentation page and its assets: everything from this
/// server only (`'unsafe-inline'` styles: Swagger UI sets style attributes; `data:` images:
/// its CSS draws icons as data URIs). Nothing may frame the page.
pub const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The files of the vendored Swagger UI that the page loads.
const DOCS_ASSETS: &[&str] = &[
    "swagger-ui.css",
    "index.css",
    "favicon-32x32.png",
    "favicon-16x16.png",
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "swagger-initializer.js",
];

/// The page: every asset is a file of this server's `/docs/`.
const DOCS_HTML: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Zeta Banking API</title>
<link rel="stylesheet" type="text/css" href="/docs/swagger-ui.css">
<link rel="stylesheet" type="text/css" href="/docs/index.css">
<link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
<link rel="icon" type="image/png" href="/docs/favicon-16x16.png" sizes="16x16">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js" charset="utf-8"></script>
<script src="/docs/swagger-ui-standalone-preset.js" charset="utf-8"></script>
<script src="/docs/swagger-initializer.js" charset="utf-8"></script>
</body>
</html>
"#;

fn swagger_config() -> Arc<utoipa_swagger_ui::Config<'static>> {
    static CONFIG: LazyLock<Arc<utoipa_swagger_ui::Config<'static>>> = LazyLock::new(|| {
        Arc::new(
            utoipa_swagger_ui::Config::new(["/openapi.json"])
                .use_base_layout()
                // The default would send the document to an online validator.
                .validator_url("none")
                .display_request_duration(true)
                .show_extensions(false)
                .persist_authorization(false),
        )
    });
    CONFIG.clone()
}

/// `/openapi.json`, `/docs` (and `/docs/`) and `/docs/{file}`; none needs a key.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(docs_page))
        .route("/docs/", get(docs_page))
        .route("/docs/{file}", get(docs_asset))
}

async fn openapi_json() -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        document_bytes(),
    )
        .into_response()
}

fn with_docs_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DOCS_CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn docs_page() -> Response {
    with_docs_headers(
        (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            DOCS_HTML,
        )
            .into_response(),
    )
}

async fn docs_asset(Path(file): Path<String>) -> Response {
    if !DOCS_ASSETS.contains(&file.as_str()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    match utoipa_swagger_ui::serve(&file, swagger_config()) {
        Ok(Some(asset)) => {
            let content_type = if file.ends_with(".js") {
                "text/javascript; charset=utf-8".to_string()
            } else if file.ends_with(".css") {
                "text/css; charset=utf-8".to_string()
            } else {
                asset.content_type
            };
            with_docs_headers(([(header::CONTENT_TYPE, content_type)], asset.bytes).into_response())
        }
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            crate::ApiError::Internal(format!("swagger ui asset {file}: {e}")).into_response()
        }
    }
}

// ----- texts -------------------------------------------------------------------------------

/// Longer descriptions, used by the attributes in `routes.rs`.
pub mod text {
    pub const CREATE_API_KEY: &str = "Makes a key with a role and, optionally, a list of accounts it is limited to (for any other account it behaves as if the account did not exist). The secret, `key`, is in this response only: it is stored as a SHA-256 hash and cannot be shown again — a replay of this request with its `Idempotency-Key` returns the key without it. Needs an `admin` key not limited to accounts.";
    pub const AUDIT: &str = "Every state change — account created or updated, every money movement (declines that were recorded included), API key created or revoked — appended in the same database transaction as the change. The events form a SHA-256 chain: `hash` = lowercase hex SHA-256 of `prev_hash` + `\\n` + the RFC 8785 canonical JSON of the event's other fields (`seq`, `at`, `actor_key_id`, `request_id`, `action`, `resource_type`, `resource_id`, `details`), integers written exactly in decimal; the first `prev_hash` is 64 zeros. Any edit, insertion or deletion breaks the chain, which `zeta verify` checks. Needs an `admin` key not limited to accounts.";
    pub const INTRO: &str = "The HTTP API of Zeta, a ledger of accounts, holds and transfers.\n\n\
**Money** is an integer count of minor units (cents) of the account's ISO 4217 currency: `amount` is a JSON integer from 1 to 2^53−1; `1.5`, `1e3`, `1.0`, `\"10\"` and `null` are refused. Balances never go negative.\n\n\
**Requests**: JSON bodies with `Content-Type: application/json` (else 415), at most 64 KiB (1 MiB for a batch; else 413). Unknown fields, duplicate keys, NUL characters and unknown query parameters are refused with 422 `validation_error`. Ids are lowercase UUIDs; a malformed id in a path is 404. Times are RFC 3339 UTC with microseconds.\n\n\
**Authentication**: `Authorization: Bearer <api key>` on every `/v1` request.\n\n\
**Errors** are RFC 9457 problems (`application/problem+json`) with a stable `code`. When several refusals apply, the first in this order wins: 400/413/415, 429, 401, 422 `validation_error`, 403, 404, 409/412/428, 422 `same_account`/`currency_mismatch`, 422 `account_not_active`, 422 `balance_overflow`, 422 `insufficient_funds`.\n\n\
**Request ids**: every response carries `X-Request-Id`; a client-sent one of 1–128 visible ASCII characters is kept.\n\n\
**Idempotency**: any POST may carry `Idempotency-Key`; a retry with the same key, method, path and body gets the first response again (header `Idempotent-Replayed: true`) and the effect happens exactly once.\n\n\
**Pagination**: lists take `limit` (1–200, default 50) and `cursor`, and return `{\"data\": [...], \"next_cursor\": string | null}`.";

    pub const IDEMPOTENCY: &str = "1–255 visible ASCII characters, scoped to the API key. A retry with the same key, method, path and body (JSON-equal) returns the first response again — status and body byte-for-byte, with `Idempotent-Replayed: true` — and the effect happens exactly once. Stored are the 2xx responses and the 404, 409 and 422 outcomes given once the request passed authentication and validation (e.g. `insufficient_funds`); 400, 401, 403, 413, 415, 422 `validation_error`, 429, 500 and 503 are not (a retry runs again). The same key with another method, path or body: 422 `idempotency_key_reused`; while the first is still running: 409 `idempotency_key_in_use`. Keys are kept for at least 24 hours.";

    pub const HOLDS_TAG: &str = "Card-style authorizations. A debit with `\"hold\": true` reserves funds: it is a `pending` transaction that lowers `available_balance` but not `balance`. Capture posts it (the balance drops by the held amount); void releases it (`failed`, `failure_reason: \"voided\"`).";

    pub const DEBIT: &str = "Takes money out of the account: a `completed` debit, or with `\"hold\": true` a **hold** — a `pending` debit that reserves the amount: `available_balance` drops, `balance` does not, until the hold is captured (`POST /v1/transactions/{id}/capture`) or voided (`POST /v1/transactions/{id}/void`).\n\n\
When the available balance is short, the debit (or hold) is declined with 422 `insufficient_funds`; the attempt is still recorded as a `failed` transaction whose id is the problem's `transaction_id`.";

    pub const CAPTURE: &str = "Posts a hold: the `pending` debit becomes `completed`, the balance drops by the held amount (the available balance already did), and `posted_at` is the capture's time. Anything but a pending debit: 409 `invalid_state` (e.g. a second capture, or a capture after a void). Refused on a frozen or closed account (422 `account_not_active`). The body may be omitted or `{}`.";

    pub const VOID: &str = "Releases a hold: the `pending` debit becomes `failed` with `failure_reason: \"voided\"` and the reserved amount is available again; the balance never changed. Allowed on a frozen account. Anything but a pending debit: 409 `invalid_state` (e.g. a void after a capture). The body may be omitted or `{}`.";

    pub const BALANCE: &str = "The **historical balance**: the balance after every movement whose `posted_at` is at or before `at` — 0 before the first movement, the current balance for a future instant. `as_of` echoes `at` (truncated to microseconds); without `at` it is the current balance now. Pending holds are not movements: they never change `balance`.";

    pub const BATCH: &str = "The high-throughput path: up to 1000 transfers in one request, executed in order, each as if sent alone (later items see the effects of earlier ones). The response is always 200 with one result per item, in request order: `{\"status\": 201, \"transfer\": …}` or `{\"status\": 4xx, \"error\": problem}`.\n\n\
- **Not atomic** (default): every valid item runs; an item's own invalid field, or an item that is not an object, fails that item only (422 `validation_error`, with `errors` naming `transfers.<index>.<field>`), and so do its refusals (404, 422 `insufficient_funds` — recorded as a failed transfer whose id is `transfer_id` — and so on).\n\
- **`\"atomic\": true`**: all or nothing. When any item fails, nothing at all is recorded: the failing items carry their own error and every other item `{\"status\": 424, \"error\": {\"code\": \"batch_failed\", …}}`.\n\n\
A malformed envelope — `transfers` missing, not a list, empty or longer than 1000 — fails the whole request with 422.\n\n\
A server handles a few batch requests at a time (`ZETA_BATCH_CONCURRENCY`, 2 by default); more wait their turn, within the request timeout, before their body is read.";

    pub const REVERSE_TRANSACTION: &str = "Compensates a completed transaction: the response is the new, `completed` compensating transaction (opposite type, `reverses_id` = the original), and the original becomes `reversed` with `reversed_by_id` set. A transaction that is a leg of a transfer reverses the whole transfer (one compensating transfer, from the original destination back to the source); the response is then the compensation of the leg named. Reversing needs the funds (422 `insufficient_funds`, nothing recorded) and active accounts. The body may be omitted.";

    pub const REVERSE_TRANSFER: &str = "Compensates a completed transfer with a new transfer from the original destination back to the source (the response); the original and its legs become `reversed`. Same refusals as reversing one of its legs. The body may be omitted.";

    pub const PATCH: &str = "Changes the owner name, the status and/or the metadata (replaced as a whole), guarded by the account's version: send `If-Match: \"<version>\"` (the `ETag` of a GET). Without `If-Match`: 428; a stale one: 412 `version_mismatch`. Closing needs a zero balance (409 `account_not_empty`); a closed account cannot change any more (409 `invalid_state`).";

    pub const LIST_TRANSACTIONS: &str = "The account's transactions, newest first (the order in which they were recorded on the account). `since` (inclusive) and `until` (exclusive) filter on `created_at`.";
}

// ----- examples ----------------------------------------------------------------------------

/// Example values: one consistent story (an EUR account, a salary, a coffee, a hotel hold, a
/// rent transfer).
pub mod examples {
    use serde_json::{Value, json};

    pub const ACCOUNT: &str = "0194b2a4-5c3e-7d1a-9f2b-3c4d5e6f7a81";
    pub const ACCOUNT_2: &str = "0194b2a4-6a10-7b22-8c3d-4e5f6a7b8c92";
    pub const TX_CREDIT: &str = "0194b2a5-0b1c-7e2d-a3f4-5b6c7d8e9fa3";
    pub const TX_DEBIT: &str = "0194b2a5-1c2d-7f3e-b4a5-6c7d8e9fa0b4";
    pub const TX_HOLD: &str = "0194b2a5-2d3e-7a4f-85b6-7d8e9fa0b1c5";
    pub const TX_REVERSAL: &str = "0194b2a5-3e4f-7b5a-96c7-8e9fa0b1c2d6";
    pub const TX_DECLINED: &str = "0194b2a5-4f5a-7c6b-a7d8-9fa0b1c2d3e7";
    pub const TRANSFER: &str = "0194b2a6-5a6b-7d7c-b8e9-a0b1c2d3e4f8";
    pub const TRANSFER_DECLINED: &str = "0194b2a6-6b7c-7e8d-89fa-b1c2d3e4f5a9";
    pub const TX_TRANSFER_DEBIT: &str = "0194b2a6-7c8d-7f9e-9a0b-c2d3e4f5a6ba";
    pub const TX_TRANSFER_CREDIT: &str = "0194b2a6-8d9e-7a0f-ab1c-d3e4f5a6b7cb";
    pub const REQUEST_ID: &str = "0194b2a7-9eaf-7b1a-bc2d-e4f5a6b7c8dc";

    /// A path template with the example ids in place of `{id}`.
    pub fn instance(path: &str) -> String {
        let id = if path.starts_with("/v1/transactions/") {
            TX_HOLD
        } else if path.starts_with("/v1/transfers/") {
            TRANSFER
        } else {
            ACCOUNT
        };
        path.replace("{id}", id)
    }

    pub fn create_account() -> Value {
        json!({"owner_name": "Ada Lovelace", "currency": "EUR", "metadata": {"customer_id": "C-1029"}})
    }

    pub fn create_account_with_number() -> Value {
        json!({"owner_name": "Ada Lovelace", "currency": "EUR", "account_number": "DE89370400440532013000"})
    }

    pub fn account() -> Value {
        json!({
            "id": ACCOUNT, "account_number": "40000000000000000017", "owner_name": "Ada Lovelace",
            "currency": "EUR", "balance": 250000, "available_balance": 238000, "status": "active",
            "version": 4, "metadata": {"customer_id": "C-1029"},
            "created_at": "2026-11-25T09:00:00.000000Z", "updated_at": "2026-11-25T16:22:00.123456Z"
        })
    }

    pub fn new_account() -> Value {
        json!({
            "id": ACCOUNT, "account_number": "40000000000000000017", "owner_name": "Ada Lovelace",
            "currency": "EUR", "balance": 0, "available_balance": 0, "status": "active",
            "version": 1, "metadata": {"customer_id": "C-1029"},
            "created_at": "2026-11-25T09:00:00.000000Z", "updated_at": "2026-11-25T09:00:00.000000Z"
        })
    }

    pub fn patch_account() -> Value {
        json!({"status": "frozen"})
    }

    pub fn patched_account() -> Value {
        let mut a = account();
        a["status"] = json!("frozen");
        a["version"] = json!(5);
        a["updated_at"] = json!("2026-11-25T17:00:00.000000Z");
        a
    }

    pub fn accounts_page() -> Value {
        json!({"data": [account()], "next_cursor": "6163636f756e743a303139346232613400"})
    }

    pub const API_KEY: &str = "0194b2a6-4f50-7c6b-a7d8-9fa0b1c2d3e7";

    pub fn create_api_key() -> Value {
        json!({"name": "payments service", "role": "operator"})
    }

    pub fn create_scoped_api_key() -> Value {
        json!({"name": "statement portal", "role": "viewer", "account_ids": [ACCOUNT, ACCOUNT_2]})
    }

    pub fn new_api_key() -> Value {
        json!({
            "id": API_KEY, "name": "payments service", "role": "operator", "account_ids": null,
            "key": "zeta_3f6c1e0b9a8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b",
            "created_at": "2026-11-25T08:00:00.000000Z"
        })
    }

    pub fn api_keys_page() -> Value {
        json!({"data": [{
            "id": API_KEY, "name": "payments service", "role": "operator", "account_ids": null,
            "created_at": "2026-11-25T08:00:00.000000Z"
        }], "next_cursor": null})
    }

    pub fn audit_event() -> Value {
        json!({
            "seq": 42, "at": "2026-11-25T10:15:00.000000Z", "actor_key_id": API_KEY,
            "request_id": "5b0f6c1e-3d2a-4b8c-9e7f-1a2b3c4d5e6f", "action": "transaction.credit",
            "resource_type": "transaction", "resource_id": TX_CREDIT,
            "details": {"account_id": ACCOUNT, "amount": 150000, "balance_after": 150000,
                        "currency": "EUR", "reverses_id": null, "status": "completed"},
            "prev_hash": "9c1f0e5d2b7a4c3e8f6d1a0b9e8c7d6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d",
            "hash": "e3a1b2c4d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
        })
    }

    pub fn audit_page() -> Value {
        json!({"data": [audit_event()], "next_cursor": "61756469743a3432"})
    }

    pub fn balance() -> Value {
        json!({"account_id": ACCOUNT, "balance": 150000, "as_of": "2026-11-25T12:00:00.000000Z"})
    }

    pub fn balance_before_first() -> Value {
        json!({"account_id": ACCOUNT, "balance": 0, "as_of": "2026-11-01T00:00:00.000000Z"})
    }

    pub fn credit() -> Value {
        json!({"amount": 150000, "description": "Salary November", "reference": "PAY-2026-11"})
    }

    #[allow(clippy::too_many_arguments)]
    fn tx(
        id: &str,
        kind: &str,
        amount: i64,
        status: &str,
        balance_after: Option<i64>,
        description: Option<&str>,
        created: &str,
        posted: Option<&str>,
    ) -> Value {
        json!({
            "id": id, "account_id": ACCOUNT, "type": kind, "amount": amount, "currency": "EUR",
            "status": status, "balance_after": balance_after, "transfer_id": null,
            "reverses_id": null, "reversed_by_id": null, "failure_reason": null,
            "description": description, "reference": null, "created_at": created,
            "posted_at": posted, "updated_at": posted.unwrap_or(created)
        })
    }

    pub fn credit_tx() -> Value {
        let mut t = tx(
            TX_CREDIT,
            "credit",
            150000,
            "completed",
            Some(150000),
            Some("Salary November"),
            "2026-11-25T10:00:00.000000Z",
            Some("2026-11-25T10:00:00.000000Z"),
        );
        t["reference"] = json!("PAY-2026-11");
        t
    }

    pub fn debit() -> Value {
        json!({"amount": 450, "description": "Coffee"})
    }

    pub fn hold() -> Value {
        json!({"amount": 12000, "description": "Hotel pre-authorization", "reference": "HTL-88121", "hold": true})
    }

    pub fn debit_tx() -> Value {
        tx(
            TX_DEBIT,
            "debit",
            450,
            "completed",
            Some(149550),
            Some("Coffee"),
            "2026-11-25T11:00:00.000000Z",
            Some("2026-11-25T11:00:00.000000Z"),
        )
    }

    pub fn hold_tx() -> Value {
        let mut t = tx(
            TX_HOLD,
            "debit",
            12000,
            "pending",
            None,
            Some("Hotel pre-authorization"),
            "2026-11-25T12:00:00.000000Z",
            None,
        );
        t["reference"] = json!("HTL-88121");
        t
    }

    pub fn captured_tx() -> Value {
        let mut t = hold_tx();
        t["status"] = json!("completed");
        t["balance_after"] = json!(137550);
        t["posted_at"] = json!("2026-11-27T08:30:00.000000Z");
        t["updated_at"] = json!("2026-11-27T08:30:00.000000Z");
        t
    }

    pub fn voided_tx() -> Value {
        let mut t = hold_tx();
        t["status"] = json!("failed");
        t["failure_reason"] = json!("voided");
        t["updated_at"] = json!("2026-11-26T09:15:00.000000Z");
        t
    }

    pub fn declined_problem() -> Value {
        json!({
            "type": "https://zeta.example/problems/insufficient-funds", "title": "Insufficient funds",
            "status": 422, "detail": "available balance 500 is less than amount 12000",
            "code": "insufficient_funds", "request_id": REQUEST_ID,
            "instance": format!("/v1/accounts/{ACCOUNT}/debits"), "transaction_id": TX_DECLINED
        })
    }

    pub fn problem() -> Value {
        declined_problem()
    }

    pub fn transactions_page() -> Value {
        json!({"data": [hold_tx(), debit_tx(), credit_tx()], "next_cursor": null})
    }

    pub fn reverse() -> Value {
        json!({"reason": "Duplicate charge"})
    }

    pub fn reversal_tx() -> Value {
        let mut t = tx(
            TX_REVERSAL,
            "credit",
            450,
            "completed",
            Some(150000),
            Some("Duplicate charge"),
            "2026-11-25T13:00:00.000000Z",
            Some("2026-11-25T13:00:00.000000Z"),
        );
        t["reverses_id"] = json!(TX_DEBIT);
        t
    }

    pub fn create_transfer() -> Value {
        json!({"from_account_id": ACCOUNT, "to_account_id": ACCOUNT_2, "amount": 90000,
            "description": "Rent December", "reference": "RENT-2026-12"})
    }

    fn leg(id: &str, account: &str, kind: &str, balance_after: i64, transfer: &str) -> Value {
        json!({
            "id": id, "account_id": account, "type": kind, "amount": 90000, "currency": "EUR",
            "status": "completed", "balance_after": balance_after, "transfer_id": transfer,
            "reverses_id": null, "reversed_by_id": null, "failure_reason": null,
            "description": "Rent December", "reference": "RENT-2026-12",
            "created_at": "2026-11-28T09:00:00.000000Z", "posted_at": "2026-11-28T09:00:00.000000Z",
            "updated_at": "2026-11-28T09:00:00.000000Z"
        })
    }

    pub fn transfer() -> Value {
        json!({
            "id": TRANSFER, "from_account_id": ACCOUNT, "to_account_id": ACCOUNT_2, "amount": 90000,
            "currency": "EUR", "status": "completed",
            "debit": leg(TX_TRANSFER_DEBIT, ACCOUNT, "debit", 47550, TRANSFER),
            "credit": leg(TX_TRANSFER_CREDIT, ACCOUNT_2, "credit", 90000, TRANSFER),
            "description": "Rent December", "reference": "RENT-2026-12",
            "created_at": "2026-11-28T09:00:00.000000Z"
        })
    }

    pub fn reversal_transfer() -> Value {
        json!({
            "id": "0194b2a8-0a1b-7c2d-8e3f-4a5b6c7d8e9f", "from_account_id": ACCOUNT_2,
            "to_account_id": ACCOUNT, "amount": 90000, "currency": "EUR", "status": "completed",
            "debit": {
                "id": "0194b2a8-1b2c-7d3e-9f4a-5b6c7d8e9fa0", "account_id": ACCOUNT_2, "type": "debit",
                "amount": 90000, "currency": "EUR", "status": "completed", "balance_after": 0,
                "transfer_id": "0194b2a8-0a1b-7c2d-8e3f-4a5b6c7d8e9f", "reverses_id": TX_TRANSFER_CREDIT,
                "reversed_by_id": null, "failure_reason": null, "description": "Paid twice",
                "reference": null, "created_at": "2026-11-29T10:00:00.000000Z",
                "posted_at": "2026-11-29T10:00:00.000000Z", "updated_at": "2026-11-29T10:00:00.000000Z"
            },
            "credit": {
                "id": "0194b2a8-2c3d-7e4f-8a5b-6c7d8e9fa0b1", "account_id": ACCOUNT, "type": "credit",
                "amount": 90000, "currency": "EUR", "status": "completed", "balance_after": 137550,
                "transfer_id": "0194b2a8-0a1b-7c2d-8e3f-4a5b6c7d8e9f", "reverses_id": TX_TRANSFER_DEBIT,
                "reversed_by_id": null, "failure_reason": null, "description": "Paid twice",
                "reference": null, "created_at": "2026-11-29T10:00:00.000000Z",
                "posted_at": "2026-11-29T10:00:00.000000Z", "updated_at": "2026-11-29T10:00:00.000000Z"
            },
            "description": "Paid twice", "reference": null, "created_at": "2026-11-29T10:00:00.000000Z"
        })
    }

    pub fn batch() -> Value {
        json!({
            "transfers": [
                create_transfer(),
                {"from_account_id": ACCOUNT, "to_account_id": ACCOUNT_2, "amount": 9000000},
                {"from_account_id": ACCOUNT, "to_account_id": ACCOUNT_2, "amount": 0}
            ]
        })
    }

    pub fn batch_atomic() -> Value {
        let mut b = batch();
        b["atomic"] = json!(true);
        b
    }

    fn item_declined() -> Value {
        json!({"status": 422, "error": {
            "type": "https://zeta.example/problems/insufficient-funds", "title": "Insufficient funds",
            "status": 422, "detail": "available balance 47550 is less than amount 9000000",
            "code": "insufficient_funds", "transaction_id": TX_DECLINED,
            "transfer_id": TRANSFER_DECLINED
        }})
    }

    fn item_invalid() -> Value {
        json!({"status": 422, "error": {
            "type": "https://zeta.example/problems/validation-error", "title": "Validation error",
            "status": 422,
            "detail": "transfers.2.amount: must be an integer from 1 to 9007199254740991 (minor units)",
            "code": "validation_error",
            "errors": [{"field": "transfers.2.amount",
                "message": "must be an integer from 1 to 9007199254740991 (minor units)"}]
        }})
    }

    pub fn batch_result() -> Value {
        json!({"results": [{"status": 201, "transfer": transfer()}, item_declined(), item_invalid()]})
    }

    pub fn batch_atomic_result() -> Value {
        let mut declined = item_declined();
        // In an atomic batch that failed nothing is recorded, so there is no declined transfer.
        declined["error"]
            .as_object_mut()
            .map(|e| e.remove("transfer_id"));
        declined["error"]["detail"] = json!("available balance 0 is less than amount 9000000");
        json!({"results": [
            {"status": 424, "error": {
                "type": "https://zeta.example/problems/batch-failed", "title": "Batch failed",
                "status": 424,
                "detail": "another item of this atomic batch failed, so nothing was recorded",
                "code": "batch_failed"
            }},
            declined,
            item_invalid()
        ]})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;
    use zeta_ledger::LedgerError;

    #[test]
    fn code_table_matches_the_errors() {
        let id = Uuid::nil();
        let samples = [
            ApiError::MalformedJson(String::new()),
            ApiError::InvalidHeader(String::new()),
            ApiError::Unauthorized,
            ApiError::Forbidden(""),
            ApiError::NotFound("x"),
            ApiError::MethodNotAllowed,
            ApiError::PayloadTooLarge(1),
            ApiError::UnsupportedMediaType,
            ApiError::Validation(Vec::new()),
            ApiError::IdempotencyKeyInUse,
            ApiError::IdempotencyKeyReused,
            ApiError::PreconditionRequired,
            ApiError::RateLimited {
                retry_after_secs: 1,
            },
            ApiError::Unavailable {
                retry_after_secs: 1,
            },
            ApiError::Internal(String::new()),
            LedgerError::AccountNumberTaken.into(),
            LedgerError::VersionMismatch {
                current: 1,
                expected: 2,
            }
            .into(),
            LedgerError::InvalidState("x").into(),
            LedgerError::AlreadyReversed.into(),
            LedgerError::AccountNotEmpty { balance: 1 }.into(),
            LedgerError::SameAccount.into(),
            LedgerError::CurrencyMismatch {
                from: "EUR".into(),
                to: "USD".into(),
            }
            .into(),
            LedgerError::AccountNotActive {
                account_id: id,
                status: "frozen",
            }
            .into(),
            LedgerError::BalanceOverflow.into(),
            LedgerError::InsufficientFunds {
                available: 0,
                amount: 1,
                transaction_id: None,
                transfer_id: None,
            }
            .into(),
        ];
        for e in &samples {
            let (status, name, title) = e.parts();
            let c = find_code(name).unwrap_or_else(|| panic!("{name} is missing from CODES"));
            assert_eq!((c.status, c.title), (status.as_u16(), title), "{name}");
            assert_eq!(
                e.problem()["type"],
                json!(problem_type(name)),
                "{name}: problem type"
            );
        }
        assert_eq!(
            CODES.len(),
            samples.len() + 1,
            "CODES has exactly one extra: batch_failed"
        );
    }

    /// A small JSON Schema check (types, required, additionalProperties, enum, bounds,
    /// items, anyOf/oneOf, $ref) — enough to keep the examples honest.
    fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r.trim_start_matches("#/components/schemas/");
            return check(doc, &doc["components"]["schemas"][name], value, at);
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(options) = schema.get(key).and_then(Value::as_array) {
                let matching = options
                    .iter()
                    .filter(|s| check(doc, s, value, at).is_ok())
                    .count();
                let ok = if key == "oneOf" {
                    matching == 1
                } else {
                    matching >= 1
                };
                if !ok {
                    return Err(format!("{at}: {matching} of {key} match {value}"));
                }
            }
        }
        if let Some(types) = schema.get("type") {
            let types: Vec<&str> = match types {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            let actual = match value {
                Value::Null => "null",
                Value::Bool(_) => "boolean",
                Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            };
            if !types
                .iter()
                .any(|t| *t == actual || (*t == "number" && actual == "integer"))
            {
                return Err(format!("{at}: {value} is not {types:?}"));
            }
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array)
            && !values.contains(value)
        {
            return Err(format!("{at}: {value} is not one of {values:?}"));
        }
        if let Some(n) = value.as_f64() {
            if schema
                .get("minimum")
                .and_then(Value::as_f64)
                .is_some_and(|m| n < m)
            {
                return Err(format!("{at}: {n} is below the minimum"));
            }
            if schema
                .get("maximum")
                .and_then(Value::as_f64)
                .is_some_and(|m| n > m)
            {
                return Err(format!("{at}: {n} is above the maximum"));
            }
        }
        if let Some(s) = value.as_str() {
            let len = s.chars().count() as u64;
            if schema
                .get("minLength")
                .and_then(Value::as_u64)
                .is_some_and(|m| len < m)
                || schema
                    .get("maxLength")
                    .and_then(Value::as_u64)
                    .is_some_and(|m| len > m)
            {
                return Err(format!("{at}: {s:?} has the wrong length"));
            }
        }
        if let Value::Object(map) = value {
            let properties = schema.get("properties").and_then(Value::as_object);
            for name in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(name) {
                    return Err(format!("{at}: {name} is missing"));
                }
            }
            for (k, v) in map {
                match properties.and_then(|p| p.get(k)) {
                    Some(s) => check(doc, s, v, &format!("{at}.{k}"))?,
                    None if schema.get("additionalProperties") == Some(&json!(false)) => {
                        return Err(format!("{at}: unknown field {k}"));
                    }
                    None => {}
                }
            }
        }
        if let (Value::Array(items), Some(s)) = (value, schema.get("items")) {
            for (i, item) in items.iter().enumerate() {
                check(doc, s, item, &format!("{at}[{i}]"))?;
            }
        }
        Ok(())
    }

    fn media_examples(media: &Value) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        if let Some(e) = media.get("example") {
            out.push(("example".to_string(), e.clone()));
        }
        for (name, e) in media
            .get("examples")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            out.push((name.clone(), e["value"].clone()));
        }
        out
    }

    #[test]
    fn every_example_matches_its_schema() {
        let doc = document();
        let mut checked = 0;
        for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
            for (i, example) in schema
                .get("examples")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                check(doc, schema, example, &format!("{name} example {i}")).unwrap();
                checked += 1;
            }
        }
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                let mut bodies: Vec<(String, &Value)> = Vec::new();
                if let Some(content) = op["requestBody"]["content"].as_object() {
                    bodies.extend(content.values().map(|m| ("request".to_string(), m)));
                }
                for (status, response) in op["responses"].as_object().expect("responses") {
                    if let Some(content) = response["content"].as_object() {
                        bodies.extend(content.values().map(|m| (status.clone(), m)));
                    }
                }
                for (what, media) in bodies {
                    let examples = media_examples(media);
                    assert!(!examples.is_empty(), "{method} {path} {what}: no example");
                    for (name, value) in examples {
                        check(
                            doc,
                            &media["schema"],
                            &value,
                            &format!("{method} {path} {what} {name}"),
                        )
                        .unwrap();
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 50, "only {checked} examples");
    }

    #[test]
    fn the_document_is_openapi_3_1_with_problems_for_every_error() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        for (path, item) in doc["paths"].as_object().expect("paths") {
            assert!(path.starts_with("/v1/"), "{path}");
            for (method, op) in item.as_object().expect("path item") {
                for status in ["401", "429", "500", "503"] {
                    assert!(
                        op["responses"].get(status).is_some(),
                        "{method} {path}: no {status}"
                    );
                }
                for (status, response) in op["responses"].as_object().expect("responses") {
                    if status.as_str() >= "400" {
                        assert!(
                            response["content"].get(PROBLEM_JSON).is_some(),
                            "{method} {path} {status}: not a problem"
                        );
                    }
                }
            }
        }
    }
}
