//! Credits and debits, reading and listing transactions, and reversing a single transaction.

use serde_json::{Value, json};
use uuid::Uuid;
use zeta_testkit::{TestApp, TestResponse};

/// 2^53 - 1, the largest amount one request may move.
const MAX_AMOUNT: i64 = 9_007_199_254_740_991;

const TRANSACTION_FIELDS: [&str; 16] = [
    "id",
    "account_id",
    "type",
    "amount",
    "currency",
    "status",
    "balance_after",
    "transfer_id",
    "reverses_id",
    "reversed_by_id",
    "failure_reason",
    "description",
    "reference",
    "created_at",
    "posted_at",
    "updated_at",
];

fn credits(id: &str) -> String {
    format!("/v1/accounts/{id}/credits")
}

fn debits(id: &str) -> String {
    format!("/v1/accounts/{id}/debits")
}

fn transactions(id: &str) -> String {
    format!("/v1/accounts/{id}/transactions")
}

fn reverse(id: &str) -> String {
    format!("/v1/transactions/{id}/reverse")
}

async fn credit(app: &TestApp, id: &str, amount: i64) -> Value {
    let r = app
        .post(&credits(id), json!({ "amount": amount }))
        .send()
        .await;
    assert_eq!(r.status, 201, "credit: {}", r.json);
    r.json
}

async fn debit(app: &TestApp, id: &str, amount: i64) -> TestResponse {
    app.post(&debits(id), json!({ "amount": amount }))
        .send()
        .await
}

/// A POST with no body at all.
async fn post_empty(app: &TestApp, path: &str) -> TestResponse {
    app.req("POST".parse().expect("method"), path).send().await
}

/// A POST whose body is sent exactly as given, as application/json.
async fn post_raw(app: &TestApp, path: &str, body: &str) -> TestResponse {
    app.post(path, Value::Null)
        .raw(body.as_bytes().to_vec())
        .send()
        .await
}

async fn get_tx(app: &TestApp, id: &str) -> Value {
    let r = app.get(&format!("/v1/transactions/{id}")).send().await;
    assert_eq!(r.status, 200, "get transaction: {}", r.json);
    r.json
}

/// Every row of an account's transaction list (newest first), checking it fits one page.
async fn list_all(app: &TestApp, id: &str) -> Vec<Value> {
    list(app, id, "limit=200").await
}

async fn list(app: &TestApp, id: &str, query: &str) -> Vec<Value> {
    let r = app
        .get(&format!("{}?{query}", transactions(id)))
        .send()
        .await;
    assert_eq!(r.status, 200, "list {query}: {}", r.json);
    assert_eq!(r.json["next_cursor"], Value::Null, "{query}: one page");
    r.json["data"].as_array().expect("data").clone()
}

fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|t| t["id"].as_str().expect("id").to_string())
        .collect()
}

async fn set_status(app: &TestApp, id: &str, status: &str) {
    let account = app.get(&format!("/v1/accounts/{id}")).send().await;
    assert_eq!(account.status, 200);
    let version = account.json["version"].as_i64().expect("version");
    let r = app
        .req(
            "PATCH".parse().expect("method"),
            &format!("/v1/accounts/{id}"),
        )
        .json(&json!({ "status": status }))
        .header("if-match", &format!("\"{version}\""))
        .send()
        .await;
    assert_eq!(r.status, 200, "set status {status}: {}", r.json);
    assert_eq!(r.json["status"], status);
}

fn assert_problem(r: &TestResponse, status: u16, code: &str) {
    assert_eq!(r.status, status, "expected {status} {code}: {}", r.json);
    assert_eq!(r.code(), code, "{}", r.json);
    assert_eq!(r.json["status"], status, "{}", r.json);
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{}",
        r.json
    );
}

fn assert_validation(r: &TestResponse, field: &str) {
    assert_problem(r, 422, "validation_error");
    assert_eq!(r.json["errors"][0]["field"], field, "{}", r.json);
}

/// RFC 3339 UTC with exactly six fractional digits.
fn assert_timestamp(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    assert_eq!(s.len(), 27, "{s}");
    assert!(s.ends_with('Z'), "{s}");
    assert_eq!(&s[19..20], ".", "{s}");
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{s}: {e}"));
}

/// A lowercase UUID v7 string.
fn assert_id(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("not an id: {v}"));
    let id = Uuid::parse_str(s).expect("uuid");
    assert_eq!(id.get_version_num(), 7, "{s}");
    assert_eq!(id.hyphenated().to_string(), s);
}

/// A transaction object has exactly the documented fields.
fn assert_shape(t: &Value) {
    let obj = t
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {t}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected = TRANSACTION_FIELDS.to_vec();
    expected.sort_unstable();
    assert_eq!(keys, expected);
    assert_id(&t["id"]);
    assert_timestamp(&t["created_at"]);
    assert_timestamp(&t["updated_at"]);
}

// ----- credits and debits ------------------------------------------------------------------

#[tokio::test]
async fn credit_is_201_with_every_field_exact() {
    let app = crate::spawn().await;
    let id = app.funded("EUR", 0).await;
    let r = app
        .post(
            &credits(&id),
            json!({"amount": 1500, "description": "salary", "reference": "INV-1"}),
        )
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let t = &r.json;
    assert_shape(t);
    assert_eq!(t["account_id"], id.as_str());
    assert_eq!(t["type"], "credit");
    assert_eq!(t["amount"], 1500);
    assert_eq!(t["currency"], "EUR");
    assert_eq!(t["status"], "completed");
    assert_eq!(t["balance_after"], 1500);
    assert_eq!(t["transfer_id"], Value::Null);
    assert_eq!(t["reverses_id"], Value::Null);
    assert_eq!(t["reversed_by_id"], Value::Null);
    assert_eq!(t["failure_reason"], Value::Null);
    assert_eq!(t["description"], "salary");
    assert_eq!(t["reference"], "INV-1");
    assert_timestamp(&t["posted_at"]);

    // Without description and reference both are null; balance_after accumulates.
    let second = credit(&app, &id, 250).await;
    assert_shape(&second);
    assert_eq!(second["balance_after"], 1750);
    assert_eq!(second["description"], Value::Null);
    assert_eq!(second["reference"], Value::Null);
    assert_eq!(second["status"], "completed");
    assert_ne!(second["id"], t["id"]);

    assert_eq!(
        get_tx(&app, &r.id()).await,
        r.json,
        "GET equals the POST body"
    );
    assert_eq!(app.balance(&id).await, (1750, 1750));
    app.assert_verified().await;
}

#[tokio::test]
async fn debit_is_201_with_every_field_exact() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 1000).await;
    let r = app
        .post(
            &debits(&id),
            json!({"amount": 300, "description": "groceries", "reference": "POS-77"}),
        )
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let t = &r.json;
    assert_shape(t);
    assert_eq!(t["account_id"], id.as_str());
    assert_eq!(t["type"], "debit");
    assert_eq!(t["amount"], 300);
    assert_eq!(t["currency"], "USD");
    assert_eq!(t["status"], "completed");
    assert_eq!(t["balance_after"], 700);
    assert_eq!(t["transfer_id"], Value::Null);
    assert_eq!(t["reverses_id"], Value::Null);
    assert_eq!(t["reversed_by_id"], Value::Null);
    assert_eq!(t["failure_reason"], Value::Null);
    assert_eq!(t["description"], "groceries");
    assert_eq!(t["reference"], "POS-77");
    assert_timestamp(&t["posted_at"]);
    assert_eq!(get_tx(&app, &r.id()).await, r.json);

    // "hold": false is a plain debit; a debit of the whole balance is allowed.
    let rest = app
        .post(&debits(&id), json!({"amount": 700, "hold": false}))
        .send()
        .await;
    assert_eq!(rest.status, 201, "{}", rest.json);
    assert_eq!(rest.json["status"], "completed");
    assert_eq!(rest.json["balance_after"], 0);
    assert_eq!(app.balance(&id).await, (0, 0));
    app.assert_verified().await;
}

#[tokio::test]
async fn description_and_reference_lengths_count_code_points() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 1000).await;
    let longest = "é".repeat(500);
    let too_long = "é".repeat(501);
    let longest_ref = "ü".repeat(100);
    let too_long_ref = "ü".repeat(101);

    for path in [credits(&id), debits(&id)] {
        let ok = app
            .post(
                &path,
                json!({"amount": 1, "description": longest, "reference": longest_ref}),
            )
            .send()
            .await;
        assert_eq!(ok.status, 201, "{}", ok.json);
        assert_eq!(ok.json["description"], longest.as_str());
        assert_eq!(ok.json["reference"], longest_ref.as_str());

        let r = app
            .post(&path, json!({"amount": 1, "description": too_long}))
            .send()
            .await;
        assert_validation(&r, "description");
        let r = app
            .post(&path, json!({"amount": 1, "reference": too_long_ref}))
            .send()
            .await;
        assert_validation(&r, "reference");
        let r = app
            .post(&path, json!({"amount": 1, "description": 5}))
            .send()
            .await;
        assert_validation(&r, "description");
    }
    // One credit and one debit of 1 went through; the refusals recorded nothing.
    assert_eq!(app.balance(&id).await, (1000, 1000));
    assert_eq!(list_all(&app, &id).await.len(), 3);
    app.assert_verified().await;
}

#[tokio::test]
async fn invalid_amounts_are_validation_errors() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 100).await;
    let bodies = [
        r#"{"amount": 0}"#,
        r#"{"amount": -1}"#,
        r#"{"amount": 1.5}"#,
        r#"{"amount": 1.0}"#,
        r#"{"amount": 1e3}"#,
        r#"{"amount": "10"}"#,
        r#"{"amount": null}"#,
        r#"{"amount": 9007199254740992}"#,
        r#"{"amount": 18446744073709551616}"#,
        r#"{"amount": true}"#,
        r#"{}"#,
        r#"{"description": "no amount"}"#,
    ];
    for path in [credits(&id), debits(&id)] {
        for body in bodies {
            let r = post_raw(&app, &path, body).await;
            assert_eq!(r.status, 422, "{path} {body}: {}", r.json);
            assert_validation(&r, "amount");
        }
    }
    // A valid amount with an unknown field is refused as well: no mass assignment.
    let r = app
        .post(&credits(&id), json!({"amount": 5, "status": "completed"}))
        .send()
        .await;
    assert_validation(&r, "status");
    assert_eq!(app.balance(&id).await, (100, 100));
    assert_eq!(list_all(&app, &id).await.len(), 1, "nothing was recorded");
}

#[tokio::test]
async fn largest_amount_is_accepted() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 0).await;
    let r = post_raw(&app, &credits(&id), r#"{"amount": 9007199254740991}"#).await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["amount"], MAX_AMOUNT);
    assert_eq!(r.json["balance_after"], MAX_AMOUNT);
    let d = debit(&app, &id, MAX_AMOUNT).await;
    assert_eq!(d.status, 201, "{}", d.json);
    assert_eq!(d.json["amount"], MAX_AMOUNT);
    assert_eq!(d.json["balance_after"], 0);
    assert_eq!(app.balance(&id).await, (0, 0));
    app.assert_verified().await;
}

#[tokio::test]
async fn credit_that_would_overflow_the_balance_is_refused() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 0).await;
    // 1024 × (2^53 − 1) = 2^63 − 1024 still fits; one more would not.
    // Sent concurrently in waves: every running balance from 1 × to 1024 × the amount appears
    // exactly once as a balance_after.
    let app = std::sync::Arc::new(app);
    let mut afters = Vec::new();
    for _ in 0..8 {
        let tasks: Vec<_> = (0..128)
            .map(|_| {
                let app = app.clone();
                let path = credits(&id);
                tokio::spawn(async move {
                    app.post(&path, json!({ "amount": MAX_AMOUNT }))
                        .send()
                        .await
                })
            })
            .collect();
        for t in tasks {
            let r = t.await.expect("task");
            assert_eq!(r.status, 201, "{}", r.json);
            afters.push(r.json["balance_after"].as_i64().expect("balance_after"));
        }
    }
    afters.sort_unstable();
    let expected_afters: Vec<i64> = (1..=1024).map(|k| k * MAX_AMOUNT).collect();
    assert_eq!(afters, expected_afters);
    let expected = 1024 * MAX_AMOUNT;
    assert_eq!(expected, i64::MAX - 1023);
    let last = app
        .get(&format!("{}?limit=1", transactions(&id)))
        .send()
        .await
        .json["data"][0]
        .clone();
    assert_eq!(last["balance_after"], expected);

    let r = app
        .post(&credits(&id), json!({ "amount": MAX_AMOUNT }))
        .send()
        .await;
    assert_problem(&r, 422, "balance_overflow");
    assert_eq!(app.balance(&id).await, (expected, expected));
    let newest = app
        .get(&format!("{}?limit=1", transactions(&id)))
        .send()
        .await;
    assert_eq!(newest.json["data"][0]["id"], last["id"], "nothing recorded");

    // Up to exactly 2^63 - 1 is fine; then even 1 more overflows.
    let top = credit(&app, &id, 1023).await;
    assert_eq!(top["balance_after"], i64::MAX);
    let r = app.post(&credits(&id), json!({ "amount": 1 })).send().await;
    assert_problem(&r, 422, "balance_overflow");
    assert_eq!(app.balance(&id).await, (i64::MAX, i64::MAX));
    let newest = app
        .get(&format!("{}?limit=1", transactions(&id)))
        .send()
        .await;
    assert_eq!(newest.json["data"][0]["id"], top["id"], "nothing recorded");
    // Debits still work at the top.
    let d = debit(&app, &id, MAX_AMOUNT).await;
    assert_eq!(d.status, 201, "{}", d.json);
    assert_eq!(d.json["balance_after"], i64::MAX - MAX_AMOUNT);
    app.assert_verified().await;
}

#[tokio::test]
async fn debit_over_available_is_declined_and_recorded_as_failed() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 500).await;
    let r = app
        .post(
            &debits(&id),
            json!({"amount": 700, "description": "too much"}),
        )
        .send()
        .await;
    assert_problem(&r, 422, "insufficient_funds");
    assert_eq!(
        r.json["type"],
        "https://zeta.example/problems/insufficient-funds"
    );
    assert_eq!(r.json["title"], "Insufficient funds");
    assert_eq!(r.json["instance"], debits(&id).as_str());
    assert!(r.json["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(r.json["detail"].as_str().is_some_and(|s| !s.is_empty()));
    let tx_id = r.json["transaction_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no transaction_id: {}", r.json))
        .to_string();

    let t = get_tx(&app, &tx_id).await;
    assert_shape(&t);
    assert_eq!(t["id"], tx_id.as_str());
    assert_eq!(t["account_id"], id.as_str());
    assert_eq!(t["type"], "debit");
    assert_eq!(t["amount"], 700);
    assert_eq!(t["currency"], "USD");
    assert_eq!(t["status"], "failed");
    assert_eq!(t["failure_reason"], "insufficient_funds");
    assert_eq!(t["balance_after"], Value::Null);
    assert_eq!(t["posted_at"], Value::Null);
    assert_eq!(t["transfer_id"], Value::Null);
    assert_eq!(t["reverses_id"], Value::Null);
    assert_eq!(t["reversed_by_id"], Value::Null);
    assert_eq!(t["description"], "too much");

    assert_eq!(app.balance(&id).await, (500, 500));
    // The whole balance can still be spent.
    let all = debit(&app, &id, 500).await;
    assert_eq!(all.status, 201, "{}", all.json);
    assert_eq!(all.json["balance_after"], 0);
    let one_more = debit(&app, &id, 1).await;
    assert_problem(&one_more, 422, "insufficient_funds");
    let rows = list_all(&app, &id).await;
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["status"], "failed");
    assert_eq!(rows[0]["id"], one_more.json["transaction_id"]);
    assert_eq!(app.balance(&id).await, (0, 0));
    app.assert_verified().await;
}

#[tokio::test]
async fn money_on_unknown_account_is_404() {
    let app = crate::spawn().await;
    let unknown = Uuid::now_v7().to_string();
    for path in [
        credits(&unknown),
        debits(&unknown),
        credits("not-a-uuid"),
        debits("12345"),
    ] {
        let r = app.post(&path, json!({"amount": 10})).send().await;
        assert_problem(&r, 404, "not_found");
    }
    // A validation error outranks the unknown account.
    let r = app
        .post(&credits(&unknown), json!({"amount": 0}))
        .send()
        .await;
    assert_validation(&r, "amount");
    // A scoped key sees other accounts as missing.
    let other = app.funded("USD", 100).await;
    let mine = app.funded("USD", 100).await;
    let scoped = app
        .key(
            "operator",
            Some(vec![Uuid::parse_str(&mine).expect("uuid")]),
        )
        .await;
    for path in [credits(&other), debits(&other)] {
        let r = app
            .post(&path, json!({"amount": 10}))
            .key(&scoped)
            .send()
            .await;
        assert_problem(&r, 404, "not_found");
    }
    let r = app
        .post(&credits(&mine), json!({"amount": 10}))
        .key(&scoped)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(app.balance(&other).await, (100, 100));
    assert_eq!(app.balance(&mine).await, (110, 110));
    app.assert_verified().await;
}

#[tokio::test]
async fn viewer_cannot_move_money() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 100).await;
    let viewer = app.key("viewer", None).await;
    for path in [credits(&id), debits(&id)] {
        let r = app
            .post(&path, json!({"amount": 10}))
            .key(&viewer)
            .send()
            .await;
        assert_problem(&r, 403, "forbidden");
        // 422 validation_error ranks before 403; 403 before 404.
        let r = app
            .post(&path, json!({"amount": 0}))
            .key(&viewer)
            .send()
            .await;
        assert_validation(&r, "amount");
    }
    let unknown = Uuid::now_v7().to_string();
    let r = app
        .post(&credits(&unknown), json!({"amount": 10}))
        .key(&viewer)
        .send()
        .await;
    assert_problem(&r, 403, "forbidden");
    // Viewers may read.
    let r = app.get(&transactions(&id)).key(&viewer).send().await;
    assert_eq!(r.status, 200);
    assert_eq!(app.balance(&id).await, (100, 100));
    assert_eq!(list_all(&app, &id).await.len(), 1);
}

#[tokio::test]
async fn frozen_or_closed_account_cannot_move_money() {
    let app = crate::spawn().await;
    let frozen = app.funded("USD", 100).await;
    set_status(&app, &frozen, "frozen").await;
    for r in [
        app.post(&credits(&frozen), json!({"amount": 10}))
            .send()
            .await,
        debit(&app, &frozen, 10).await,
        // Frozen outranks insufficient funds, and such a refusal is not recorded.
        debit(&app, &frozen, 1000).await,
        app.post(&debits(&frozen), json!({"amount": 10, "hold": true}))
            .send()
            .await,
    ] {
        assert_problem(&r, 422, "account_not_active");
        assert_eq!(r.json.get("transaction_id"), None);
    }
    assert_eq!(app.balance(&frozen).await, (100, 100));
    assert_eq!(list_all(&app, &frozen).await.len(), 1);

    let closed = app.funded("USD", 0).await;
    set_status(&app, &closed, "closed").await;
    for r in [
        app.post(&credits(&closed), json!({"amount": 10}))
            .send()
            .await,
        debit(&app, &closed, 10).await,
    ] {
        assert_problem(&r, 422, "account_not_active");
    }
    assert_eq!(app.balance(&closed).await, (0, 0));
    assert!(list_all(&app, &closed).await.is_empty());

    // Unfrozen, money moves again.
    set_status(&app, &frozen, "active").await;
    let r = debit(&app, &frozen, 10).await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["balance_after"], 90);
    app.assert_verified().await;
}

// ----- reading transactions ----------------------------------------------------------------

#[tokio::test]
async fn get_transaction_200_and_404() {
    let app = crate::spawn().await;
    let a = app.funded("USD", 0).await;
    let b = app.funded("USD", 0).await;
    let ta = credit(&app, &a, 10).await;
    let tb = credit(&app, &b, 20).await;
    let ta_id = ta["id"].as_str().expect("id");
    let tb_id = tb["id"].as_str().expect("id");

    assert_eq!(get_tx(&app, ta_id).await, ta);
    let viewer = app.key("viewer", None).await;
    let r = app
        .get(&format!("/v1/transactions/{ta_id}"))
        .key(&viewer)
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json, ta);

    for path in [
        format!("/v1/transactions/{}", Uuid::now_v7()),
        "/v1/transactions/not-a-uuid".to_string(),
        format!("/v1/transactions/{}x", &ta_id[..35]),
    ] {
        let r = app.get(&path).send().await;
        assert_problem(&r, 404, "not_found");
    }
    // A key scoped to account b cannot see a's transactions.
    let scoped = app
        .key("viewer", Some(vec![Uuid::parse_str(&b).expect("uuid")]))
        .await;
    let hidden = app
        .get(&format!("/v1/transactions/{ta_id}"))
        .key(&scoped)
        .send()
        .await;
    assert_problem(&hidden, 404, "not_found");
    let seen = app
        .get(&format!("/v1/transactions/{tb_id}"))
        .key(&scoped)
        .send()
        .await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.json, tb);
    let list_hidden = app.get(&transactions(&a)).key(&scoped).send().await;
    assert_problem(&list_hidden, 404, "not_found");
}

/// Records, on a fresh account: credit 1000, debit 100, declined debit 5000, credit 50, hold 200,
/// debit 300 reversed by a compensating credit. Returns (account, ids newest first).
async fn history(app: &TestApp) -> (String, Vec<String>) {
    let id = app.funded("USD", 0).await;
    let t1 = credit(app, &id, 1000).await["id"].clone();
    let t2 = debit(app, &id, 100).await;
    assert_eq!(t2.status, 201);
    let t3 = debit(app, &id, 5000).await;
    assert_eq!(t3.code(), "insufficient_funds");
    let t4 = credit(app, &id, 50).await["id"].clone();
    let t5 = app
        .post(&debits(&id), json!({"amount": 200, "hold": true}))
        .send()
        .await;
    assert_eq!(t5.status, 201, "{}", t5.json);
    let t6 = debit(app, &id, 300).await;
    assert_eq!(t6.status, 201);
    let t7 = post_empty(app, &reverse(&t6.id())).await;
    assert_eq!(t7.status, 201, "{}", t7.json);
    let ids = [
        t7.json["id"].clone(),
        t6.json["id"].clone(),
        t5.json["id"].clone(),
        t4,
        t3.json["transaction_id"].clone(),
        t2.json["id"].clone(),
        t1,
    ]
    .iter()
    .map(|v| v.as_str().expect("id").to_string())
    .collect();
    (id, ids)
}

#[tokio::test]
async fn list_is_newest_first_and_filters() {
    let app = crate::spawn().await;
    let (id, all) = history(&app).await;
    let [t7, t6, t5, t4, t3, t2, t1] = all.clone().try_into().expect("seven");
    let rows = list_all(&app, &id).await;
    assert_eq!(ids(&rows), all, "newest first");
    for row in &rows {
        assert_shape(row);
        assert_eq!(row["account_id"], id.as_str());
        assert_eq!(row, &get_tx(&app, row["id"].as_str().expect("id")).await);
    }
    // Default page (no query) is the same.
    let r = app.get(&transactions(&id)).send().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["data"], Value::Array(rows.clone()));
    assert_eq!(r.json["next_cursor"], Value::Null);

    let cases: [(&str, Vec<&String>); 8] = [
        ("status=completed", vec![&t7, &t4, &t2, &t1]),
        ("status=reversed", vec![&t6]),
        ("status=pending", vec![&t5]),
        ("status=failed", vec![&t3]),
        ("type=credit", vec![&t7, &t4, &t1]),
        ("type=debit", vec![&t6, &t5, &t3, &t2]),
        ("type=debit&status=completed", vec![&t2]),
        ("type=credit&status=failed", vec![]),
    ];
    for (query, expected) in cases {
        let got = ids(&list(&app, &id, query).await);
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        assert_eq!(got, expected, "{query}");
    }

    // since (inclusive) and until (exclusive) on created_at.
    let created = |i: usize| {
        rows[i]["created_at"]
            .as_str()
            .expect("created_at")
            .to_string()
    };
    let expect = |pred: &dyn Fn(&str) -> bool| -> Vec<String> {
        rows.iter()
            .filter(|r| pred(r["created_at"].as_str().expect("created_at")))
            .map(|r| r["id"].as_str().expect("id").to_string())
            .collect()
    };
    let pivot = created(3); // t4
    let since = ids(&list(&app, &id, &format!("since={pivot}")).await);
    assert_eq!(since, expect(&|c| c >= pivot.as_str()));
    assert!(since.contains(&t4), "since is inclusive");
    assert!(since.contains(&t7));
    assert!(!since.contains(&t1));
    let until = ids(&list(&app, &id, &format!("until={pivot}")).await);
    assert_eq!(until, expect(&|c| c < pivot.as_str()));
    assert!(!until.contains(&t4), "until is exclusive");
    assert!(until.contains(&t1));
    assert_eq!(since.len() + until.len(), 7);

    let (from, to) = (created(5), created(2)); // t2 .. t5
    let window = ids(&list(&app, &id, &format!("since={from}&until={to}")).await);
    assert_eq!(window, expect(&|c| c >= from.as_str() && c < to.as_str()));
    assert!(window.contains(&t2) && window.contains(&t4) && !window.contains(&t5));
    let window_credits =
        ids(&list(&app, &id, &format!("since={from}&until={to}&type=credit")).await);
    assert!(window_credits.contains(&t4));
    assert!(
        window_credits
            .iter()
            .all(|i| *i == t4 || *i == t1 || *i == t7)
    );
    // An offset other than Z denotes the same instant.
    let same = ids(&list(
        &app,
        &id,
        &format!("until={}", pivot.replace('Z', "%2B00:00")),
    )
    .await);
    assert_eq!(same, until);
    // Nothing is newer than far in the future; everything is older.
    assert!(
        list(&app, &id, "since=2999-01-01T00:00:00Z")
            .await
            .is_empty()
    );
    assert_eq!(
        ids(&list(&app, &id, "until=2999-01-01T00:00:00Z").await),
        all
    );
}

#[tokio::test]
async fn list_pagination_walks_every_row_once() {
    let app = crate::spawn().await;
    let (id, all) = history(&app).await;
    for limit in [1_usize, 2, 3, 6, 7] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let query = match &cursor {
                None => format!("limit={limit}"),
                Some(c) => format!("limit={limit}&cursor={c}"),
            };
            let r = app
                .get(&format!("{}?{query}", transactions(&id)))
                .send()
                .await;
            assert_eq!(r.status, 200, "{}", r.json);
            let data = r.json["data"].as_array().expect("data");
            assert!(data.len() <= limit);
            seen.extend(ids(data));
            pages += 1;
            match r.json["next_cursor"].as_str() {
                Some(c) => {
                    assert_eq!(data.len(), limit, "only a full page has a next page");
                    cursor = Some(c.to_string());
                }
                None => break,
            }
        }
        assert_eq!(seen, all, "limit={limit}: every row exactly once, in order");
        assert_eq!(pages, all.len().div_ceil(limit), "limit={limit}");
    }
    // Pagination within a filter.
    let first = app
        .get(&format!("{}?type=credit&limit=2", transactions(&id)))
        .send()
        .await;
    assert_eq!(first.status, 200);
    assert_eq!(
        ids(first.json["data"].as_array().expect("data")),
        vec![all[0].clone(), all[3].clone()]
    );
    let cursor = first.json["next_cursor"].as_str().expect("cursor");
    let second = app
        .get(&format!(
            "{}?type=credit&limit=2&cursor={cursor}",
            transactions(&id)
        ))
        .send()
        .await;
    assert_eq!(second.status, 200);
    assert_eq!(
        ids(second.json["data"].as_array().expect("data")),
        vec![all[6].clone()]
    );
    assert_eq!(second.json["next_cursor"], Value::Null);
}

#[tokio::test]
async fn list_bad_params_are_422_and_unknown_account_404() {
    let app = crate::spawn().await;
    let (id, _) = history(&app).await;
    app.funded("USD", 0).await;
    // A cursor of another list is not a transaction cursor.
    let accounts = app.get("/v1/accounts?limit=1").send().await;
    let account_cursor = accounts.json["next_cursor"]
        .as_str()
        .expect("accounts cursor")
        .to_string();
    let cases = [
        ("status=bogus", "status"),
        ("status=COMPLETED", "status"),
        ("type=transfer", "type"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("cursor=zz", "cursor"),
        ("cursor=not-a-cursor", "cursor"),
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        ("unknown=1", "unknown"),
        ("status=completed&status=failed", "status"),
    ];
    for (query, field) in cases {
        let r = app
            .get(&format!("{}?{query}", transactions(&id)))
            .send()
            .await;
        assert_validation(&r, field);
    }
    let r = app
        .get(&format!("{}?cursor={account_cursor}", transactions(&id)))
        .send()
        .await;
    assert_validation(&r, "cursor");
    // limit at its bounds is fine.
    for query in ["limit=1", "limit=200"] {
        let r = app
            .get(&format!("{}?{query}", transactions(&id)))
            .send()
            .await;
        assert_eq!(r.status, 200, "{query}");
    }
    for path in [
        transactions(&Uuid::now_v7().to_string()),
        transactions("not-a-uuid"),
    ] {
        let r = app.get(&path).send().await;
        assert_problem(&r, 404, "not_found");
    }
}

// ----- reversals ---------------------------------------------------------------------------

#[tokio::test]
async fn reversing_a_credit_compensates_it() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 0).await;
    let original = credit(&app, &id, 1000).await;
    let original_id = original["id"].as_str().expect("id");
    let other = credit(&app, &id, 200).await;
    assert_eq!(app.balance(&id).await, (1200, 1200));

    let r = post_empty(&app, &reverse(original_id)).await;
    assert_eq!(r.status, 201, "{}", r.json);
    let comp = &r.json;
    assert_shape(comp);
    assert_ne!(comp["id"], original["id"]);
    assert_eq!(comp["account_id"], id.as_str());
    assert_eq!(comp["type"], "debit");
    assert_eq!(comp["amount"], 1000);
    assert_eq!(comp["currency"], "USD");
    assert_eq!(comp["status"], "completed");
    assert_eq!(comp["balance_after"], 200);
    assert_eq!(comp["reverses_id"], original_id);
    assert_eq!(comp["reversed_by_id"], Value::Null);
    assert_eq!(comp["transfer_id"], Value::Null);
    assert_eq!(comp["failure_reason"], Value::Null);
    assert_timestamp(&comp["posted_at"]);
    assert_eq!(get_tx(&app, &r.id()).await, r.json);

    let now = get_tx(&app, original_id).await;
    assert_eq!(now["status"], "reversed");
    assert_eq!(now["reversed_by_id"], comp["id"]);
    assert_eq!(
        now["balance_after"], 1000,
        "a reversed movement keeps balance_after"
    );
    assert_eq!(now["posted_at"], original["posted_at"]);
    assert_eq!(now["created_at"], original["created_at"]);
    assert_eq!(now["amount"], 1000);
    assert_eq!(now["type"], "credit");
    assert_eq!(now["failure_reason"], Value::Null);

    assert_eq!(app.balance(&id).await, (200, 200));
    assert_eq!(
        ids(&list_all(&app, &id).await),
        vec![
            r.id(),
            other["id"].as_str().expect("id").to_string(),
            original_id.to_string()
        ]
    );
    assert_eq!(
        ids(&list(&app, &id, "status=reversed").await),
        vec![original_id.to_string()]
    );
    app.assert_verified().await;
}

#[tokio::test]
async fn reversing_a_debit_compensates_it() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 1000).await;
    let d = debit(&app, &id, 300).await;
    assert_eq!(d.status, 201);
    // A body with a reason is allowed.
    let r = app
        .post(&reverse(&d.id()), json!({"reason": "duplicate charge"}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_shape(&r.json);
    assert_eq!(r.json["type"], "credit");
    assert_eq!(r.json["amount"], 300);
    assert_eq!(r.json["status"], "completed");
    assert_eq!(r.json["balance_after"], 1000);
    assert_eq!(r.json["reverses_id"], d.id().as_str());
    assert_eq!(r.json["account_id"], id.as_str());
    assert_eq!(r.json["transfer_id"], Value::Null);
    let original = get_tx(&app, &d.id()).await;
    assert_eq!(original["status"], "reversed");
    assert_eq!(original["reversed_by_id"], r.id().as_str());
    assert_eq!(original["balance_after"], 700);
    assert_eq!(app.balance(&id).await, (1000, 1000));

    // An empty object body works too; an unknown field or a bad reason does not.
    let d2 = debit(&app, &id, 50).await;
    let bad = app
        .post(&reverse(&d2.id()), json!({"reason": "x", "amount": 5}))
        .send()
        .await;
    assert_validation(&bad, "amount");
    let bad = app
        .post(&reverse(&d2.id()), json!({"reason": 42}))
        .send()
        .await;
    assert_validation(&bad, "reason");
    assert_eq!(get_tx(&app, &d2.id()).await["status"], "completed");
    let ok = app.post(&reverse(&d2.id()), json!({})).send().await;
    assert_eq!(ok.status, 201, "{}", ok.json);
    assert_eq!(ok.json["balance_after"], 1000);
    assert_eq!(app.balance(&id).await, (1000, 1000));
    app.assert_verified().await;
}

#[tokio::test]
async fn reversing_spent_credit_is_insufficient_funds_and_records_nothing() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 0).await;
    let c = credit(&app, &id, 1000).await;
    let c_id = c["id"].as_str().expect("id");
    let spent = debit(&app, &id, 800).await;
    assert_eq!(spent.status, 201);
    let before = list_all(&app, &id).await;

    let r = post_empty(&app, &reverse(c_id)).await;
    assert_problem(&r, 422, "insufficient_funds");
    assert_eq!(r.json.get("transaction_id"), None, "nothing was recorded");
    assert_eq!(list_all(&app, &id).await, before, "transactions unchanged");
    assert_eq!(get_tx(&app, c_id).await, c);
    assert_eq!(app.balance(&id).await, (200, 200));

    // Held funds are not available either.
    let c2 = credit(&app, &id, 500).await;
    let hold = app
        .post(&debits(&id), json!({"amount": 400, "hold": true}))
        .send()
        .await;
    assert_eq!(hold.status, 201);
    let r = post_empty(&app, &reverse(c2["id"].as_str().expect("id"))).await;
    assert_problem(&r, 422, "insufficient_funds");
    assert_eq!(app.balance(&id).await, (700, 300));
    assert_eq!(
        get_tx(&app, c2["id"].as_str().expect("id")).await["status"],
        "completed"
    );
    app.assert_verified().await;
}

#[tokio::test]
async fn reversing_twice_is_already_reversed() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 0).await;
    let c = credit(&app, &id, 100).await;
    let c_id = c["id"].as_str().expect("id");
    let first = post_empty(&app, &reverse(c_id)).await;
    assert_eq!(first.status, 201);
    let count = list_all(&app, &id).await.len();
    for _ in 0..2 {
        let again = post_empty(&app, &reverse(c_id)).await;
        assert_problem(&again, 409, "already_reversed");
    }
    assert_eq!(list_all(&app, &id).await.len(), count);
    assert_eq!(app.balance(&id).await, (0, 0));
    app.assert_verified().await;
}

#[tokio::test]
async fn reversing_failed_pending_or_compensating_is_invalid_state() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 1000).await;
    let declined = debit(&app, &id, 5000).await;
    assert_eq!(declined.code(), "insufficient_funds");
    let declined_id = declined.json["transaction_id"]
        .as_str()
        .expect("id")
        .to_string();
    let hold = app
        .post(&debits(&id), json!({"amount": 100, "hold": true}))
        .send()
        .await;
    assert_eq!(hold.status, 201);
    let voided = app
        .post(&debits(&id), json!({"amount": 50, "hold": true}))
        .send()
        .await;
    let v = post_empty(&app, &format!("/v1/transactions/{}/void", voided.id())).await;
    assert_eq!(v.status, 200, "{}", v.json);
    let d = debit(&app, &id, 10).await;
    let comp = post_empty(&app, &reverse(&d.id())).await;
    assert_eq!(comp.status, 201);
    let before = list_all(&app, &id).await;

    for target in [declined_id, hold.id(), voided.id(), comp.id()] {
        let r = post_empty(&app, &reverse(&target)).await;
        assert_problem(&r, 409, "invalid_state");
    }
    assert_eq!(list_all(&app, &id).await, before, "nothing recorded");
    assert_eq!(get_tx(&app, &hold.id()).await["status"], "pending");
    assert_eq!(app.balance(&id).await, (1000, 900));
    app.assert_verified().await;
}

#[tokio::test]
async fn reverse_on_frozen_account_is_account_not_active() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 1000).await;
    let d = debit(&app, &id, 100).await;
    let c = credit(&app, &id, 40).await;
    let reversed = post_empty(&app, &reverse(c["id"].as_str().expect("id"))).await;
    assert_eq!(reversed.status, 201);
    set_status(&app, &id, "frozen").await;
    let r = post_empty(&app, &reverse(&d.id())).await;
    assert_problem(&r, 422, "account_not_active");
    // A state conflict outranks the inactive account.
    let r = post_empty(&app, &reverse(c["id"].as_str().expect("id"))).await;
    assert_problem(&r, 409, "already_reversed");
    assert_eq!(get_tx(&app, &d.id()).await["status"], "completed");
    assert_eq!(app.balance(&id).await, (900, 900));
    set_status(&app, &id, "active").await;
    let r = post_empty(&app, &reverse(&d.id())).await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(app.balance(&id).await, (1000, 1000));
    app.assert_verified().await;
}

#[tokio::test]
async fn reverse_unknown_is_404_and_viewer_is_403() {
    let app = crate::spawn().await;
    for target in [Uuid::now_v7().to_string(), "nope".to_string()] {
        let r = post_empty(&app, &reverse(&target)).await;
        assert_problem(&r, 404, "not_found");
    }
    let id = app.funded("USD", 100).await;
    let d = debit(&app, &id, 10).await;
    let viewer = app.key("viewer", None).await;
    let r = app
        .req("POST".parse().expect("method"), &reverse(&d.id()))
        .key(&viewer)
        .send()
        .await;
    assert_problem(&r, 403, "forbidden");
    let other = app.funded("USD", 0).await;
    let scoped = app
        .key(
            "operator",
            Some(vec![Uuid::parse_str(&other).expect("uuid")]),
        )
        .await;
    let r = app
        .req("POST".parse().expect("method"), &reverse(&d.id()))
        .key(&scoped)
        .send()
        .await;
    assert_problem(&r, 404, "not_found");
    assert_eq!(get_tx(&app, &d.id()).await["status"], "completed");
    assert_eq!(app.balance(&id).await, (90, 90));
}
