//! Transfers: create, read, reverse (whole or via a leg), and the batch endpoint.

use serde_json::{Value, json};
use uuid::Uuid;
use zeta_testkit::{TestApp, TestResponse};

const TRANSFER_FIELDS: [&str; 11] = [
    "id",
    "from_account_id",
    "to_account_id",
    "amount",
    "currency",
    "status",
    "debit",
    "credit",
    "description",
    "reference",
    "created_at",
];

fn transactions(id: &str) -> String {
    format!("/v1/accounts/{id}/transactions")
}

async fn transfer(app: &TestApp, from: &str, to: &str, amount: i64) -> TestResponse {
    app.post(
        "/v1/transfers",
        json!({"from_account_id": from, "to_account_id": to, "amount": amount}),
    )
    .send()
    .await
}

async fn transfer_ok(app: &TestApp, from: &str, to: &str, amount: i64) -> Value {
    let r = transfer(app, from, to, amount).await;
    assert_eq!(r.status, 201, "transfer: {}", r.json);
    r.json
}

async fn post_empty(app: &TestApp, path: &str) -> TestResponse {
    app.req("POST".parse().expect("method"), path).send().await
}

async fn get_json(app: &TestApp, path: &str) -> Value {
    let r = app.get(path).send().await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.json);
    r.json
}

async fn get_transfer(app: &TestApp, id: &str) -> Value {
    get_json(app, &format!("/v1/transfers/{id}")).await
}

async fn get_tx(app: &TestApp, id: &str) -> Value {
    get_json(app, &format!("/v1/transactions/{id}")).await
}

/// An account's whole transaction list (one page).
async fn history(app: &TestApp, id: &str) -> Value {
    let page = get_json(app, &format!("{}?limit=200", transactions(id))).await;
    assert_eq!(page["next_cursor"], Value::Null);
    page["data"].clone()
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

fn assert_problem(r: &TestResponse, status: u16, code: &str) {
    assert_eq!(r.status, status, "expected {status} {code}: {}", r.json);
    assert_eq!(r.code(), code, "{}", r.json);
    assert_eq!(r.json["status"], status, "{}", r.json);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
}

fn assert_validation(r: &TestResponse, field: &str) {
    assert_problem(r, 422, "validation_error");
    assert_eq!(r.json["errors"][0]["field"], field, "{}", r.json);
}

fn assert_timestamp(v: &Value) {
    let t = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    assert_eq!(t.len(), 27, "{t}");
    assert!(t.ends_with('Z'), "{t}");
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{t}: {e}"));
}

fn assert_transfer_shape(t: &Value) {
    let obj = t
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {t}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected = TRANSFER_FIELDS.to_vec();
    expected.sort_unstable();
    assert_eq!(keys, expected);
    let id = Uuid::parse_str(t["id"].as_str().expect("id")).expect("uuid");
    assert_eq!(id.get_version_num(), 7);
    assert_timestamp(&t["created_at"]);
}

/// A completed leg of a transfer.
fn assert_leg(leg: &Value, account: &str, kind: &str, amount: i64, after: i64, transfer_id: &str) {
    assert_eq!(leg["account_id"], account, "{leg}");
    assert_eq!(leg["type"], kind, "{leg}");
    assert_eq!(leg["amount"], amount, "{leg}");
    assert_eq!(leg["status"], "completed", "{leg}");
    assert_eq!(leg["balance_after"], after, "{leg}");
    assert_eq!(leg["transfer_id"], transfer_id, "{leg}");
    assert_eq!(leg["failure_reason"], Value::Null, "{leg}");
    assert_eq!(leg["reversed_by_id"], Value::Null, "{leg}");
    assert_timestamp(&leg["posted_at"]);
}

async fn set_status(app: &TestApp, id: &str, status: &str) {
    let version = get_json(app, &format!("/v1/accounts/{id}")).await["version"]
        .as_i64()
        .expect("version");
    let r = app
        .req(
            "PATCH".parse().expect("method"),
            &format!("/v1/accounts/{id}"),
        )
        .json(&json!({ "status": status }))
        .header("if-match", &format!("\"{version}\""))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
}

// ----- single transfers --------------------------------------------------------------------

#[tokio::test]
async fn transfer_moves_money_with_two_completed_legs() {
    let app = crate::spawn().await;
    let a = app.funded("USD", 1000).await;
    let b = app.funded("USD", 50).await;
    let r = app
        .post(
            "/v1/transfers",
            json!({"from_account_id": a, "to_account_id": b, "amount": 300,
                   "description": "rent", "reference": "R-2026-01"}),
        )
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let t = &r.json;
    assert_transfer_shape(t);
    let id = r.id();
    assert_eq!(t["from_account_id"], a.as_str());
    assert_eq!(t["to_account_id"], b.as_str());
    assert_eq!(t["amount"], 300);
    assert_eq!(t["currency"], "USD");
    assert_eq!(t["status"], "completed");
    assert_eq!(t["description"], "rent");
    assert_eq!(t["reference"], "R-2026-01");
    assert_leg(&t["debit"], &a, "debit", 300, 700, &id);
    assert_leg(&t["credit"], &b, "credit", 300, 350, &id);
    for leg in [&t["debit"], &t["credit"]] {
        assert_eq!(leg["currency"], "USD");
        assert_eq!(leg["reverses_id"], Value::Null);
        assert_eq!(leg["description"], "rent");
        assert_eq!(leg["reference"], "R-2026-01");
    }
    assert_ne!(t["debit"]["id"], t["credit"]["id"]);
    assert_eq!(app.balance(&a).await, (700, 700));
    assert_eq!(app.balance(&b).await, (350, 350));

    // GET equals the POST body; the legs are ordinary transactions on their accounts.
    assert_eq!(get_transfer(&app, &id).await, r.json);
    assert_eq!(get_tx(&app, &s(&t["debit"]["id"])).await, t["debit"]);
    assert_eq!(get_tx(&app, &s(&t["credit"]["id"])).await, t["credit"]);
    assert_eq!(history(&app, &a).await[0], t["debit"]);
    assert_eq!(history(&app, &b).await[0], t["credit"]);

    // Without description and reference; a transfer of the whole balance is allowed.
    let all = transfer_ok(&app, &a, &b, 700).await;
    assert_eq!(all["description"], Value::Null);
    assert_eq!(all["reference"], Value::Null);
    assert_eq!(all["debit"]["balance_after"], 0);
    assert_eq!(all["credit"]["balance_after"], 1050);
    assert_eq!(app.balance(&a).await, (0, 0));
    assert_eq!(app.balance(&b).await, (1050, 1050));
    app.assert_verified().await;
}

#[tokio::test]
async fn refused_transfers_record_nothing() {
    let app = crate::spawn().await;
    let a = app.funded("USD", 1000).await;
    let b = app.funded("USD", 0).await;
    let eur = app.funded("EUR", 0).await;
    let unknown = Uuid::now_v7().to_string();

    let r = transfer(&app, &a, &a, 10).await;
    assert_problem(&r, 422, "same_account");
    let r = transfer(&app, &a, &eur, 10).await;
    assert_problem(&r, 422, "currency_mismatch");
    let r = transfer(&app, &eur, &a, 10).await;
    assert_problem(&r, 422, "currency_mismatch");
    for (from, to) in [(&unknown, &b), (&a, &unknown), (&unknown, &unknown)] {
        let r = transfer(&app, from, to, 10).await;
        assert_problem(&r, 404, "not_found");
    }
    // Also when funds are short, an unknown account is 404 first.
    let r = transfer(&app, &b, &unknown, 10_000).await;
    assert_problem(&r, 404, "not_found");

    let bad_bodies = [
        (
            json!({"from_account_id": "not-a-uuid", "to_account_id": b, "amount": 10}),
            "from_account_id",
        ),
        (
            json!({"from_account_id": a, "to_account_id": "1234", "amount": 10}),
            "to_account_id",
        ),
        (
            json!({"from_account_id": a, "to_account_id": 7, "amount": 10}),
            "to_account_id",
        ),
        (json!({"to_account_id": b, "amount": 10}), "from_account_id"),
        (json!({"from_account_id": a, "amount": 10}), "to_account_id"),
        (json!({"from_account_id": a, "to_account_id": b}), "amount"),
        (
            json!({"from_account_id": a, "to_account_id": b, "amount": 0}),
            "amount",
        ),
        (
            json!({"from_account_id": a, "to_account_id": b, "amount": 1.5}),
            "amount",
        ),
        (
            json!({"from_account_id": a, "to_account_id": b, "amount": 10, "fee": 1}),
            "fee",
        ),
        (
            json!({"from_account_id": a, "to_account_id": b, "amount": 10,
                   "description": "x".repeat(501)}),
            "description",
        ),
        (
            json!({"from_account_id": a, "to_account_id": b, "amount": 10,
                   "reference": "x".repeat(101)}),
            "reference",
        ),
    ];
    for (body, field) in bad_bodies {
        let r = app.post("/v1/transfers", body.clone()).send().await;
        assert_validation(&r, field);
    }
    // Validation outranks an unknown account.
    let r = app
        .post(
            "/v1/transfers",
            json!({"from_account_id": unknown, "to_account_id": b, "amount": 0}),
        )
        .send()
        .await;
    assert_validation(&r, "amount");

    assert_eq!(app.balance(&a).await, (1000, 1000));
    assert_eq!(app.balance(&b).await, (0, 0));
    assert_eq!(history(&app, &a).await.as_array().map(Vec::len), Some(1));
    assert_eq!(history(&app, &b).await, json!([]));
    assert_eq!(history(&app, &eur).await, json!([]));
    app.assert_verified().await;
}

#[tokio::test]
async fn insufficient_funds_records_a_failed_transfer() {
    let app = crate::spawn().await;
    let a = app.funded("USD", 100).await;
    let b = app.funded("USD", 0).await;
    let r = app
        .post(
            "/v1/transfers",
            json!({"from_account_id": a, "to_account_id": b, "amount": 500,
                   "description": "too much"}),
        )
        .send()
        .await;
    assert_problem(&r, 422, "insufficient_funds");
    assert_eq!(r.json["instance"], "/v1/transfers");
    let transfer_id = s(&r.json["transfer_id"]);
    let transaction_id = s(&r.json["transaction_id"]);

    let t = get_transfer(&app, &transfer_id).await;
    assert_transfer_shape(&t);
    assert_eq!(t["id"], transfer_id.as_str());
    assert_eq!(t["status"], "failed");
    assert_eq!(t["from_account_id"], a.as_str());
    assert_eq!(t["to_account_id"], b.as_str());
    assert_eq!(t["amount"], 500);
    assert_eq!(t["currency"], "USD");
    assert_eq!(t["description"], "too much");
    assert_eq!(t["credit"], Value::Null);
    let debit = &t["debit"];
    assert_eq!(debit["id"], transaction_id.as_str());
    assert_eq!(debit["account_id"], a.as_str());
    assert_eq!(debit["type"], "debit");
    assert_eq!(debit["amount"], 500);
    assert_eq!(debit["status"], "failed");
    assert_eq!(debit["failure_reason"], "insufficient_funds");
    assert_eq!(debit["balance_after"], Value::Null);
    assert_eq!(debit["posted_at"], Value::Null);
    assert_eq!(debit["transfer_id"], transfer_id.as_str());
    assert_eq!(get_tx(&app, &transaction_id).await, *debit);

    assert_eq!(app.balance(&a).await, (100, 100));
    assert_eq!(app.balance(&b).await, (0, 0));
    assert_eq!(history(&app, &b).await, json!([]));
    assert_eq!(history(&app, &a).await[0], *debit);

    // A failed transfer cannot be reversed, neither whole nor via its leg.
    let r = post_empty(&app, &format!("/v1/transfers/{transfer_id}/reverse")).await;
    assert_problem(&r, 409, "invalid_state");
    let r = post_empty(&app, &format!("/v1/transactions/{transaction_id}/reverse")).await;
    assert_problem(&r, 409, "invalid_state");
    assert_eq!(get_transfer(&app, &transfer_id).await, t);
    app.assert_verified().await;
}

#[tokio::test]
async fn scoped_and_viewer_keys() {
    let app = crate::spawn().await;
    let a = app.funded("USD", 1000).await;
    let b = app.funded("USD", 0).await;
    let c = app.funded("USD", 0).await;
    let uuid = |s: &str| Uuid::parse_str(s).expect("uuid");
    let only_a = app.key("operator", Some(vec![uuid(&a)])).await;
    for (from, to) in [(&a, &b), (&b, &a)] {
        let r = app
            .post(
                "/v1/transfers",
                json!({"from_account_id": from, "to_account_id": to, "amount": 10}),
            )
            .key(&only_a)
            .send()
            .await;
        assert_problem(&r, 404, "not_found");
    }
    let a_and_b = app.key("operator", Some(vec![uuid(&a), uuid(&b)])).await;
    let ok = app
        .post(
            "/v1/transfers",
            json!({"from_account_id": a, "to_account_id": b, "amount": 10}),
        )
        .key(&a_and_b)
        .send()
        .await;
    assert_eq!(ok.status, 201, "{}", ok.json);
    let seen = app
        .get(&format!("/v1/transfers/{}", ok.id()))
        .key(&a_and_b)
        .send()
        .await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.json, ok.json);
    let r = app
        .post(
            "/v1/transfers",
            json!({"from_account_id": a, "to_account_id": c, "amount": 10}),
        )
        .key(&a_and_b)
        .send()
        .await;
    assert_problem(&r, 404, "not_found");

    let viewer = app.key("viewer", None).await;
    let r = app
        .post(
            "/v1/transfers",
            json!({"from_account_id": a, "to_account_id": b, "amount": 10}),
        )
        .key(&viewer)
        .send()
        .await;
    assert_problem(&r, 403, "forbidden");
    let r = app
        .get(&format!("/v1/transfers/{}", ok.id()))
        .key(&viewer)
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json, ok.json);

    assert_eq!(app.balance(&a).await, (990, 990));
    assert_eq!(app.balance(&b).await, (10, 10));
    assert_eq!(app.balance(&c).await, (0, 0));
    app.assert_verified().await;
}

#[tokio::test]
async fn get_transfer_200_and_404() {
    let app = crate::spawn().await;
    let a = app.funded("USD", 100).await;
    let b = app.funded("USD", 0).await;
    let t = transfer_ok(&app, &a, &b, 40).await;
    assert_eq!(get_transfer(&app, &s(&t["id"])).await, t);
    for path in [
        format!("/v1/transfers/{}", Uuid::now_v7()),
        "/v1/transfers/not-a-uuid".to_string(),
        // A transaction id is not a transfer id.
        format!("/v1/transfers/{}", s(&t["debit"]["id"])),
    ] {
        let r = app.get(&path).send().await;
        assert_problem(&r, 404, "not_found");
    }
}

// ----- reversals ---------------------------------------------------------------------------

#[tokio::test]
async fn reversing_a_transfer_moves_the_money_back() {
    let app = crate::spawn().await;
    let a = app.funded("USD", 1000).await;
    let b = app.funded("USD", 100).await;
    let original = transfer_ok(&app, &a, &b, 400).await;
    let original_id = s(&original["id"]);
    let (debit_leg, credit_leg) = (s(&original["debit"]["id"]), s(&original["credit"]["id"]));

    let r = app
        .post(
            &format!("/v1/transfers/{original_id}/reverse"),
            json!({"reason": "sent to the wrong account"}),
        )
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let comp = &r.json;
    assert_transfer_shape(comp);
    let comp_id = r.id();
    assert_ne!(comp_id, original_id);
    assert_eq!(comp["from_account_id"], b.as_str());
    assert_eq!(comp["to_account_id"], a.as_str());
    assert_eq!(comp["amount"], 400);
    assert_eq!(comp["currency"], "USD");
    assert_eq!(comp["status"], "completed");
    assert_leg(&comp["debit"], &b, "debit", 400, 100, &comp_id);
    assert_leg(&comp["credit"], &a, "credit", 400, 1000, &comp_id);
    // Each compensating leg names the original leg on its account.
    assert_eq!(comp["debit"]["reverses_id"], credit_leg.as_str());
    assert_eq!(comp["credit"]["reverses_id"], debit_leg.as_str());
    assert_eq!(get_transfer(&app, &comp_id).await, r.json);

    let now = get_transfer(&app, &original_id).await;
    assert_eq!(now["status"], "reversed");
    assert_eq!(now["debit"]["status"], "reversed");
    assert_eq!(now["credit"]["status"], "reversed");
    assert_eq!(now["debit"]["reversed_by_id"], comp["credit"]["id"]);
    assert_eq!(now["credit"]["reversed_by_id"], comp["debit"]["id"]);
    assert_eq!(
        now["debit"]["balance_after"], 600,
        "reversed legs keep balance_after"
    );
    assert_eq!(now["credit"]["balance_after"], 500);
    assert_eq!(now["amount"], 400);
    assert_eq!(now["created_at"], original["created_at"]);
    assert_eq!(get_tx(&app, &debit_leg).await, now["debit"]);
    assert_eq!(get_tx(&app, &credit_leg).await, now["credit"]);

    assert_eq!(app.balance(&a).await, (1000, 1000));
    assert_eq!(app.balance(&b).await, (100, 100));
    let counts = (history(&app, &a).await, history(&app, &b).await);

    // Again, whole or via a leg: already reversed.
    for path in [
        format!("/v1/transfers/{original_id}/reverse"),
        format!("/v1/transactions/{debit_leg}/reverse"),
        format!("/v1/transactions/{credit_leg}/reverse"),
    ] {
        let r = post_empty(&app, &path).await;
        assert_problem(&r, 409, "already_reversed");
    }
    // The compensation itself cannot be reversed, whole or via a leg.
    for path in [
        format!("/v1/transfers/{comp_id}/reverse"),
        format!("/v1/transactions/{}/reverse", s(&comp["debit"]["id"])),
        format!("/v1/transactions/{}/reverse", s(&comp["credit"]["id"])),
    ] {
        let r = post_empty(&app, &path).await;
        assert_problem(&r, 409, "invalid_state");
    }
    assert_eq!((history(&app, &a).await, history(&app, &b).await), counts);
    assert_eq!(app.balance(&a).await, (1000, 1000));
    assert_eq!(app.balance(&b).await, (100, 100));
    app.assert_verified().await;
}

#[tokio::test]
async fn reversing_a_leg_reverses_the_whole_transfer() {
    let app = crate::spawn().await;
    let a = app.funded("USD", 1000).await;
    let b = app.funded("USD", 0).await;

    // Via the debit leg: the answer is the compensating credit on the source.
    let t1 = transfer_ok(&app, &a, &b, 300).await;
    let debit_leg = s(&t1["debit"]["id"]);
    let r = post_empty(&app, &format!("/v1/transactions/{debit_leg}/reverse")).await;
    assert_eq!(r.status, 201, "{}", r.json);
    let comp_credit = &r.json;
    assert_eq!(comp_credit["account_id"], a.as_str());
    assert_eq!(comp_credit["type"], "credit");
    assert_eq!(comp_credit["amount"], 300);
    assert_eq!(comp_credit["status"], "completed");
    assert_eq!(comp_credit["reverses_id"], debit_leg.as_str());
    assert_eq!(comp_credit["balance_after"], 1000);
    let comp_id = s(&comp_credit["transfer_id"]);
    assert_ne!(comp_id, s(&t1["id"]));
    let comp = get_transfer(&app, &comp_id).await;
    assert_eq!(comp["from_account_id"], b.as_str());
    assert_eq!(comp["to_account_id"], a.as_str());
    assert_eq!(comp["status"], "completed");
    assert_eq!(comp["credit"], r.json);
    assert_leg(&comp["debit"], &b, "debit", 300, 0, &comp_id);
    assert_eq!(comp["debit"]["reverses_id"], t1["credit"]["id"]);
    let t1_now = get_transfer(&app, &s(&t1["id"])).await;
    assert_eq!(t1_now["status"], "reversed");
    assert_eq!(t1_now["debit"]["status"], "reversed");
    assert_eq!(t1_now["credit"]["status"], "reversed");
    assert_eq!(t1_now["debit"]["reversed_by_id"], comp_credit["id"]);
    assert_eq!(t1_now["credit"]["reversed_by_id"], comp["debit"]["id"]);
    assert_eq!(app.balance(&a).await, (1000, 1000));
    assert_eq!(app.balance(&b).await, (0, 0));

    // Via the credit leg: the answer is the compensating debit on the destination.
    let t2 = transfer_ok(&app, &a, &b, 250).await;
    let credit_leg = s(&t2["credit"]["id"]);
    let r = app
        .post(
            &format!("/v1/transactions/{credit_leg}/reverse"),
            json!({"reason": "duplicate"}),
        )
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["account_id"], b.as_str());
    assert_eq!(r.json["type"], "debit");
    assert_eq!(r.json["amount"], 250);
    assert_eq!(r.json["reverses_id"], credit_leg.as_str());
    assert_eq!(r.json["balance_after"], 0);
    let comp2 = get_transfer(&app, &s(&r.json["transfer_id"])).await;
    assert_eq!(comp2["debit"], r.json);
    assert_eq!(comp2["credit"]["account_id"], a.as_str());
    assert_eq!(comp2["credit"]["reverses_id"], t2["debit"]["id"]);
    assert_eq!(
        get_transfer(&app, &s(&t2["id"])).await["status"],
        "reversed"
    );
    // The other leg is reversed too.
    let r = post_empty(&app, &format!("/v1/transfers/{}/reverse", s(&t2["id"]))).await;
    assert_problem(&r, 409, "already_reversed");

    assert_eq!(app.balance(&a).await, (1000, 1000));
    assert_eq!(app.balance(&b).await, (0, 0));

    // Audited as reversing the transfer, like `POST /v1/transfers/{id}/reverse`.
    let audit = get_json(&app, "/v1/audit-events?limit=200").await;
    let reversals: Vec<(Value, Value, Value, Value)> = audit["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|e| {
            e["action"]
                .as_str()
                .is_some_and(|a| a.ends_with(".reverse"))
        })
        .map(|e| {
            (
                e["action"].clone(),
                e["resource_type"].clone(),
                e["resource_id"].clone(),
                e["details"]["reversal_transfer_id"].clone(),
            )
        })
        .collect();
    assert_eq!(
        reversals,
        [
            (
                json!("transfer.reverse"),
                json!("transfer"),
                t1["id"].clone(),
                json!(comp_id)
            ),
            (
                json!("transfer.reverse"),
                json!("transfer"),
                t2["id"].clone(),
                comp2["id"].clone()
            ),
        ]
    );
    app.assert_verified().await;
}

#[tokio::test]
async fn reversal_needs_the_destination_funds_and_active_accounts() {
    let app = crate::spawn().await;
    let a = app.funded("USD", 1000).await;
    let b = app.funded("USD", 0).await;
    let t = transfer_ok(&app, &a, &b, 400).await;
    let id = s(&t["id"]);
    let spend = app
        .post(&format!("/v1/accounts/{b}/debits"), json!({"amount": 300}))
        .send()
        .await;
    assert_eq!(spend.status, 201);
    let before = (history(&app, &a).await, history(&app, &b).await);

    for path in [
        format!("/v1/transfers/{id}/reverse"),
        format!("/v1/transactions/{}/reverse", s(&t["debit"]["id"])),
        format!("/v1/transactions/{}/reverse", s(&t["credit"]["id"])),
    ] {
        let r = post_empty(&app, &path).await;
        assert_problem(&r, 422, "insufficient_funds");
        assert_eq!(r.json.get("transfer_id"), None, "nothing recorded");
        assert_eq!(r.json.get("transaction_id"), None, "nothing recorded");
    }
    assert_eq!((history(&app, &a).await, history(&app, &b).await), before);
    assert_eq!(
        get_transfer(&app, &id).await,
        t,
        "still completed, untouched"
    );
    assert_eq!(app.balance(&a).await, (600, 600));
    assert_eq!(app.balance(&b).await, (100, 100));

    // With the money back, a frozen account still blocks the reversal.
    let refill = app
        .post(&format!("/v1/accounts/{b}/credits"), json!({"amount": 300}))
        .send()
        .await;
    assert_eq!(refill.status, 201);
    set_status(&app, &a, "frozen").await;
    let r = post_empty(&app, &format!("/v1/transfers/{id}/reverse")).await;
    assert_problem(&r, 422, "account_not_active");
    set_status(&app, &a, "active").await;
    let r = post_empty(&app, &format!("/v1/transfers/{id}/reverse")).await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(app.balance(&a).await, (1000, 1000));
    assert_eq!(app.balance(&b).await, (0, 0));

    for path in [
        format!("/v1/transfers/{}/reverse", Uuid::now_v7()),
        "/v1/transfers/nope/reverse".to_string(),
    ] {
        let r = post_empty(&app, &path).await;
        assert_problem(&r, 404, "not_found");
    }
    app.assert_verified().await;
}

// ----- batches -----------------------------------------------------------------------------

/// What the model expects of one batch item.
enum Expect {
    Done {
        from: usize,
        to: usize,
        amount: i64,
        from_after: i64,
        to_after: i64,
    },
    Refused(u16, &'static str),
}

#[tokio::test]
async fn batch_of_1000_runs_in_order_with_per_item_results() {
    let app = crate::spawn().await;
    let start = [100_000_i64, 0, 5_000];
    let mut accounts = Vec::new();
    for balance in start {
        accounts.push(app.funded("USD", balance).await);
    }
    let eur = app.funded("EUR", 1_000).await;
    let unknown = Uuid::now_v7().to_string();
    let mut balances = start;
    let mut items = Vec::new();
    let mut expected = Vec::new();
    let spec = |from: &str, to: &str, amount: i64| json!({"from_account_id": from, "to_account_id": to, "amount": amount});
    for i in 0..1000_usize {
        // (from, to, amount) of a well-formed transfer among the USD accounts.
        let plan = match i {
            0 => Some((0, 1, 1000)),
            // Spends what item 0 just brought to B (which started empty).
            1 => Some((1, 2, 1000)),
            // B is empty again.
            2 => Some((1, 2, 1)),
            _ => match i % 25 {
                3 => {
                    items.push(spec(&accounts[0], &accounts[1], 0));
                    expected.push(Expect::Refused(422, "validation_error"));
                    None
                }
                5 => {
                    items.push(json!({"from_account_id": accounts[0], "amount": 5}));
                    expected.push(Expect::Refused(422, "validation_error"));
                    None
                }
                9 => {
                    items.push(json!(i));
                    expected.push(Expect::Refused(422, "validation_error"));
                    None
                }
                11 => {
                    items.push(spec(&accounts[0], &unknown, 5));
                    expected.push(Expect::Refused(404, "not_found"));
                    None
                }
                15 => {
                    items.push(spec(&accounts[2], &accounts[2], 5));
                    expected.push(Expect::Refused(422, "same_account"));
                    None
                }
                19 => {
                    items.push(spec(&accounts[0], &eur, 5));
                    expected.push(Expect::Refused(422, "currency_mismatch"));
                    None
                }
                _ => Some((i % 3, (i + 1) % 3, 1 + (i as i64 * 37) % 900)),
            },
        };
        let Some((from, to, amount)) = plan else {
            continue;
        };
        items.push(spec(&accounts[from], &accounts[to], amount));
        if balances[from] < amount {
            expected.push(Expect::Refused(422, "insufficient_funds"));
        } else {
            balances[from] -= amount;
            balances[to] += amount;
            expected.push(Expect::Done {
                from,
                to,
                amount,
                from_after: balances[from],
                to_after: balances[to],
            });
        }
    }
    assert_eq!(items.len(), 1000);
    let declines = expected
        .iter()
        .filter(|e| matches!(e, Expect::Refused(_, "insufficient_funds")))
        .count();
    assert!(declines > 1, "the plan has natural declines: {declines}");

    let r = app
        .post("/v1/transfers/batch", json!({ "transfers": items }))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let results = r.json["results"].as_array().expect("results");
    assert_eq!(results.len(), 1000);
    let mut ids = std::collections::HashSet::new();
    let mut failed_transfers = Vec::new();
    for (i, (result, expect)) in results.iter().zip(&expected).enumerate() {
        match expect {
            Expect::Done {
                from,
                to,
                amount,
                from_after,
                to_after,
            } => {
                assert_eq!(result["status"], 201, "item {i}: {result}");
                assert_eq!(result.get("error"), None, "item {i}");
                let t = &result["transfer"];
                assert_transfer_shape(t);
                let id = s(&t["id"]);
                assert_eq!(t["status"], "completed", "item {i}");
                assert_eq!(t["from_account_id"], accounts[*from].as_str(), "item {i}");
                assert_eq!(t["to_account_id"], accounts[*to].as_str(), "item {i}");
                assert_eq!(t["amount"], *amount, "item {i}");
                assert_leg(
                    &t["debit"],
                    &accounts[*from],
                    "debit",
                    *amount,
                    *from_after,
                    &id,
                );
                assert_leg(
                    &t["credit"],
                    &accounts[*to],
                    "credit",
                    *amount,
                    *to_after,
                    &id,
                );
                assert!(ids.insert(id), "item {i}: unique transfer id");
            }
            Expect::Refused(status, code) => {
                assert_eq!(result["status"], *status, "item {i}: {result}");
                assert_eq!(result.get("transfer"), None, "item {i}");
                assert_eq!(result["error"]["code"], *code, "item {i}: {result}");
                assert_eq!(result["error"]["status"], *status, "item {i}");
                if *code == "insufficient_funds" {
                    failed_transfers.push(s(&result["error"]["transfer_id"]));
                    assert!(result["error"]["transaction_id"].is_string(), "item {i}");
                }
            }
        }
    }
    assert_eq!(failed_transfers.len(), declines);
    // Item 0 credited B, item 1 spent it, item 2 found B empty.
    assert_eq!(results[0]["status"], 201);
    assert_eq!(results[1]["status"], 201);
    assert_eq!(results[1]["transfer"]["debit"]["balance_after"], 0);
    assert_eq!(results[2]["error"]["code"], "insufficient_funds");
    // A declined item is recorded as a failed transfer, as if sent alone.
    let failed = get_transfer(&app, &failed_transfers[0]).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["debit"]["status"], "failed");
    assert_eq!(failed["credit"], Value::Null);

    for (account, balance) in accounts.iter().zip(balances) {
        assert_eq!(app.balance(account).await, (balance, balance));
    }
    assert_eq!(app.balance(&eur).await, (1_000, 1_000));
    assert_eq!(
        balances.iter().sum::<i64>(),
        start.iter().sum::<i64>(),
        "transfers create no money"
    );
    app.assert_verified().await;
}

#[tokio::test]
async fn atomic_batch_with_a_bad_item_records_nothing() {
    let app = crate::spawn().await;
    let a = app.funded("USD", 1000).await;
    let b = app.funded("USD", 0).await;
    let c = app.funded("USD", 0).await;
    let spec = |from: &str, to: &str, amount: i64| json!({"from_account_id": from, "to_account_id": to, "amount": amount});
    let unknown = Uuid::now_v7().to_string();
    let before = [
        history(&app, &a).await,
        history(&app, &b).await,
        history(&app, &c).await,
    ];
    let cases = [
        // An invalid field.
        (
            vec![spec(&a, &b, 300), spec(&b, &c, 200), spec(&a, &c, 0)],
            2,
            422,
            "validation_error",
        ),
        // Not an object.
        (
            vec![spec(&a, &b, 300), json!("transfer"), spec(&b, &c, 200)],
            1,
            422,
            "validation_error",
        ),
        // B only has what item 0 gave it.
        (
            vec![spec(&a, &b, 300), spec(&b, &c, 500), spec(&a, &c, 1)],
            1,
            422,
            "insufficient_funds",
        ),
        (
            vec![spec(&a, &b, 300), spec(&a, &unknown, 1)],
            1,
            404,
            "not_found",
        ),
        (
            vec![spec(&c, &c, 1), spec(&a, &b, 300)],
            0,
            422,
            "same_account",
        ),
    ];
    for (items, bad, status, code) in cases {
        let n = items.len();
        let r = app
            .post(
                "/v1/transfers/batch",
                json!({"transfers": items, "atomic": true}),
            )
            .send()
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
        let results = r.json["results"].as_array().expect("results");
        assert_eq!(results.len(), n);
        for (i, result) in results.iter().enumerate() {
            if i == bad {
                assert_eq!(result["status"], status, "{code}: {result}");
                assert_eq!(result["error"]["code"], code, "{result}");
                // Nothing was recorded, so no failed transfer is named.
                assert_eq!(result["error"].get("transfer_id"), None, "{result}");
                assert_eq!(result["error"].get("transaction_id"), None, "{result}");
            } else {
                assert_eq!(result["status"], 424, "{code} item {i}: {result}");
                assert_eq!(result["error"]["code"], "batch_failed", "{result}");
                assert_eq!(result["error"]["status"], 424, "{result}");
                assert_eq!(result.get("transfer"), None);
            }
        }
        assert_eq!(app.balance(&a).await, (1000, 1000), "{code}");
        assert_eq!(app.balance(&b).await, (0, 0), "{code}");
        assert_eq!(app.balance(&c).await, (0, 0), "{code}");
        let after = [
            history(&app, &a).await,
            history(&app, &b).await,
            history(&app, &c).await,
        ];
        assert_eq!(after, before, "{code}: transaction lists untouched");
    }

    // All good: everything completes, in order.
    let r = app
        .post(
            "/v1/transfers/batch",
            json!({"atomic": true,
                   "transfers": [spec(&a, &b, 300), spec(&b, &c, 200), spec(&c, &a, 50)]}),
        )
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let results = r.json["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    let afters = [(700, 300), (100, 200), (150, 750)];
    for (result, (debit_after, credit_after)) in results.iter().zip(afters) {
        assert_eq!(result["status"], 201, "{result}");
        assert_eq!(result["transfer"]["status"], "completed");
        assert_eq!(result["transfer"]["debit"]["balance_after"], debit_after);
        assert_eq!(result["transfer"]["credit"]["balance_after"], credit_after);
        let id = s(&result["transfer"]["id"]);
        assert_eq!(get_transfer(&app, &id).await, result["transfer"]);
    }
    assert_eq!(app.balance(&a).await, (750, 750));
    assert_eq!(app.balance(&b).await, (100, 100));
    assert_eq!(app.balance(&c).await, (150, 150));
    app.assert_verified().await;
}

#[tokio::test]
async fn batch_envelope_errors_are_validation_errors() {
    let app = crate::spawn().await;
    let a = app.funded("USD", 1000).await;
    let b = app.funded("USD", 0).await;
    let one = json!({"from_account_id": a, "to_account_id": b, "amount": 1});
    let cases = [
        (json!({}), "transfers"),
        (json!({"atomic": true}), "transfers"),
        (json!({"transfers": null}), "transfers"),
        (json!({"transfers": one}), "transfers"),
        (json!({"transfers": "all"}), "transfers"),
        (json!({"transfers": []}), "transfers"),
        (json!({"transfers": vec![one.clone(); 1001]}), "transfers"),
        (json!({"transfers": [one], "extra": 1}), "extra"),
        (json!({"transfers": [one], "atomic": "yes"}), "atomic"),
    ];
    for (body, field) in cases {
        let r = app.post("/v1/transfers/batch", body.clone()).send().await;
        assert_eq!(r.status, 422, "{body}: {}", r.json);
        assert_validation(&r, field);
    }
    // JSON that is not an object.
    let r = app.post("/v1/transfers/batch", json!([one])).send().await;
    assert_problem(&r, 422, "validation_error");
    assert_eq!(app.balance(&a).await, (1000, 1000));
    assert_eq!(app.balance(&b).await, (0, 0));
    assert_eq!(history(&app, &b).await, json!([]));

    // 1000 items is the most allowed.
    let r = app
        .post(
            "/v1/transfers/batch",
            json!({ "transfers": vec![one; 1000] }),
        )
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let results = r.json["results"].as_array().expect("results");
    assert_eq!(results.len(), 1000);
    assert!(results.iter().all(|x| x["status"] == 201));
    assert_eq!(app.balance(&a).await, (0, 0));
    assert_eq!(app.balance(&b).await, (1000, 1000));
    app.assert_verified().await;
}

/// A duplicate key or a NUL inside an item is that item's own invalid field: the item fails,
/// the others run. In the envelope, they fail the request.
#[tokio::test]
async fn batch_items_with_duplicate_keys_or_nul_fail_alone() {
    let app = crate::spawn().await;
    let a = app.funded("USD", 1000).await;
    let b = app.funded("USD", 0).await;
    let request = |body: String| {
        app.req("POST".parse().expect("method"), "/v1/transfers/batch")
            .header("content-type", "application/json")
            .raw(body)
    };
    let post = |body: String| request(body).send();
    let item = format!(r#"{{"from_account_id":"{a}","to_account_id":"{b}","amount":1}}"#);
    let nul = format!(
        r#"{{"from_account_id":"{a}","to_account_id":"{b}","amount":2,"reference":"x\u0000"}}"#
    );
    let twice =
        format!(r#"{{"from_account_id":"{a}","to_account_id":"{b}","amount":3,"amount":4}}"#);
    let r = post(format!(
        r#"{{"transfers":[{item},{nul},{twice},"\u0000",{item}]}}"#
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let results = r.json["results"].as_array().expect("results");
    let statuses: Vec<&Value> = results.iter().map(|x| &x["status"]).collect();
    assert_eq!(
        statuses,
        [
            &json!(201),
            &json!(422),
            &json!(422),
            &json!(422),
            &json!(201)
        ]
    );
    let fields = |i: usize| -> Vec<(Value, Value)> {
        assert_eq!(
            results[i]["error"]["code"], "validation_error",
            "{}",
            results[i]
        );
        results[i]["error"]["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| (e["field"].clone(), e["message"].clone()))
            .collect()
    };
    assert_eq!(
        fields(1),
        [(
            json!("transfers.1.reference"),
            json!("must not contain NUL characters")
        )]
    );
    assert_eq!(
        fields(2),
        [(json!("transfers.2.amount"), json!("duplicate key"))]
    );
    assert_eq!(
        fields(3),
        [
            (
                json!("transfers.3"),
                json!("must not contain NUL characters")
            ),
            (json!("transfers.3"), json!("must be a JSON object")),
        ]
    );
    assert_eq!(app.balance(&a).await, (998, 998));
    assert_eq!(app.balance(&b).await, (2, 2));

    // Outside the items: the whole request is refused.
    for (body, field) in [
        (
            format!(r#"{{"transfers":[{item}],"atomic":false,"atomic":true}}"#),
            "atomic",
        ),
        (format!(r#"{{"transfers":[{item}],"x\u0000":1}}"#), "x\u{0}"),
    ] {
        let r = post(body.clone()).await;
        assert_problem(&r, 422, "validation_error");
        assert_eq!(r.json["errors"][0]["field"], field, "{body}: {}", r.json);
    }
    assert_eq!(app.balance(&a).await, (998, 998));

    // With an idempotency key: the same body with an item's fields in another order is the
    // same request, replayed; a body that differs only by its NULs is another one.
    let fields = [
        format!(r#""from_account_id":"{a}""#),
        format!(r#""to_account_id":"{b}""#),
        r#""amount":5"#.to_string(),
        r#""description":"d\u0000""#.to_string(),
        r#""reference":"r\u0000""#.to_string(),
    ];
    let batch = |fields: &[String]| format!(r#"{{"transfers":[{{{}}}]}}"#, fields.join(","));
    let reversed: Vec<String> = fields.iter().rev().cloned().collect();
    let keyed = |body: String| request(body).header("idempotency-key", "nul-order").send();
    let first = keyed(batch(&fields)).await;
    assert_eq!(first.status, 200, "{}", first.json);
    assert_eq!(first.json["results"][0]["status"], 422);
    let again = keyed(batch(&reversed)).await;
    assert_eq!(again.status, 200, "{}", again.json);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    let clean: Vec<String> = fields.iter().map(|f| f.replace("\\u0000", "")).collect();
    let other = keyed(batch(&clean)).await;
    assert_problem(&other, 422, "idempotency_key_reused");
    assert_eq!(app.balance(&a).await, (998, 998));
    app.assert_verified().await;
}

#[tokio::test]
async fn batch_idempotency_key_replays_byte_identically() {
    let app = crate::spawn().await;
    let a = app.funded("USD", 1000).await;
    let b = app.funded("USD", 0).await;
    let body = json!({"transfers": [
        {"from_account_id": a, "to_account_id": b, "amount": 100},
        {"from_account_id": b, "to_account_id": a, "amount": 500},
        {"from_account_id": b, "to_account_id": a, "amount": 30},
    ]});
    let first = app
        .post("/v1/transfers/batch", body.clone())
        .idempotency("batch-1")
        .send()
        .await;
    assert_eq!(first.status, 200, "{}", first.json);
    assert_eq!(first.header("idempotent-replayed"), None);
    assert_eq!(first.json["results"][0]["status"], 201);
    assert_eq!(first.json["results"][1]["status"], 422);
    assert_eq!(first.json["results"][2]["status"], 201);
    let again = app
        .post("/v1/transfers/batch", body.clone())
        .idempotency("batch-1")
        .send()
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, first.body, "byte-for-byte equal");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(app.balance(&a).await, (930, 930), "applied once");
    assert_eq!(app.balance(&b).await, (70, 70));
    // The same key with another batch is refused.
    let other = app
        .post(
            "/v1/transfers/batch",
            json!({"transfers": [{"from_account_id": a, "to_account_id": b, "amount": 1}]}),
        )
        .idempotency("batch-1")
        .send()
        .await;
    assert_problem(&other, 422, "idempotency_key_reused");
    assert_eq!(app.balance(&a).await, (930, 930));
    app.assert_verified().await;
}
