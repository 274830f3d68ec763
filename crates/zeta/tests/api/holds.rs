//! Holds: pending debits, capture and void, their refusals, concurrency, and historical balances.

use std::sync::Arc;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;
use zeta_testkit::{TestApp, TestResponse};

fn debits(id: &str) -> String {
    format!("/v1/accounts/{id}/debits")
}

fn capture_path(tx: &str) -> String {
    format!("/v1/transactions/{tx}/capture")
}

fn void_path(tx: &str) -> String {
    format!("/v1/transactions/{tx}/void")
}

async fn hold(app: &TestApp, account: &str, amount: i64) -> TestResponse {
    app.post(&debits(account), json!({"amount": amount, "hold": true}))
        .send()
        .await
}

async fn hold_ok(app: &TestApp, account: &str, amount: i64) -> String {
    let r = hold(app, account, amount).await;
    assert_eq!(r.status, 201, "hold: {}", r.json);
    assert_eq!(r.json["status"], "pending");
    r.id()
}

/// A POST with no body at all.
async fn post_empty(app: &TestApp, path: &str) -> TestResponse {
    app.req("POST".parse().expect("method"), path).send().await
}

async fn get_json(app: &TestApp, path: &str) -> Value {
    let r = app.get(path).send().await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.json);
    r.json
}

async fn get_tx(app: &TestApp, id: &str) -> Value {
    get_json(app, &format!("/v1/transactions/{id}")).await
}

async fn version(app: &TestApp, id: &str) -> i64 {
    get_json(app, &format!("/v1/accounts/{id}")).await["version"]
        .as_i64()
        .expect("version")
}

async fn set_status(app: &TestApp, id: &str, status: &str) -> TestResponse {
    let v = version(app, id).await;
    app.req(
        "PATCH".parse().expect("method"),
        &format!("/v1/accounts/{id}"),
    )
    .json(&json!({ "status": status }))
    .header("if-match", &format!("\"{v}\""))
    .send()
    .await
}

fn assert_problem(r: &TestResponse, status: u16, code: &str) {
    assert_eq!(r.status, status, "expected {status} {code}: {}", r.json);
    assert_eq!(r.code(), code, "{}", r.json);
    assert_eq!(r.json["status"], status, "{}", r.json);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
}

fn parse_time(v: &Value) -> OffsetDateTime {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    assert_eq!(s.len(), 27, "{s}");
    OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The API's timestamp form: RFC 3339 UTC with microseconds.
fn format_time(t: OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .expect("format")
}

async fn balance_at(app: &TestApp, id: &str, at: &str) -> i64 {
    let r = app
        .get(&format!("/v1/accounts/{id}/balance?at={at}"))
        .send()
        .await;
    assert_eq!(r.status, 200, "balance at {at}: {}", r.json);
    assert_eq!(r.json["account_id"], id);
    assert_eq!(r.json["as_of"], at, "as_of echoes at");
    r.json["balance"].as_i64().expect("balance")
}

// ----- the life of a hold ------------------------------------------------------------------

#[tokio::test]
async fn hold_reserves_funds_and_capture_posts_them() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 1000).await;
    let v0 = version(&app, &id).await;
    let r = app
        .post(
            &debits(&id),
            json!({"amount": 300, "hold": true, "description": "pre-auth", "reference": "H-1"}),
        )
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let h = r.json.clone();
    assert_eq!(h["account_id"], id.as_str());
    assert_eq!(h["type"], "debit");
    assert_eq!(h["amount"], 300);
    assert_eq!(h["currency"], "USD");
    assert_eq!(h["status"], "pending");
    assert_eq!(h["balance_after"], Value::Null);
    assert_eq!(h["posted_at"], Value::Null);
    assert_eq!(h["failure_reason"], Value::Null);
    assert_eq!(h["transfer_id"], Value::Null);
    assert_eq!(h["reverses_id"], Value::Null);
    assert_eq!(h["reversed_by_id"], Value::Null);
    assert_eq!(h["description"], "pre-auth");
    assert_eq!(h["reference"], "H-1");
    parse_time(&h["created_at"]);
    assert_eq!(get_tx(&app, &r.id()).await, h);
    assert_eq!(app.balance(&id).await, (1000, 700), "balance unchanged");
    assert_eq!(version(&app, &id).await, v0 + 1);

    // Capture with no body at all.
    let c = post_empty(&app, &capture_path(&r.id())).await;
    assert_eq!(c.status, 200, "{}", c.json);
    assert_eq!(c.json["id"], h["id"]);
    assert_eq!(c.json["status"], "completed");
    assert_eq!(c.json["type"], "debit");
    assert_eq!(c.json["amount"], 300);
    assert_eq!(c.json["balance_after"], 700);
    assert_eq!(c.json["failure_reason"], Value::Null);
    assert_eq!(c.json["created_at"], h["created_at"]);
    assert_eq!(c.json["description"], "pre-auth");
    let posted = parse_time(&c.json["posted_at"]);
    assert!(posted >= parse_time(&h["created_at"]));
    assert_eq!(get_tx(&app, &r.id()).await, c.json);
    assert_eq!(app.balance(&id).await, (700, 700), "available as when held");
    assert_eq!(version(&app, &id).await, v0 + 2);

    // Capture with an empty object body works the same.
    let h2 = hold_ok(&app, &id, 200).await;
    assert_eq!(app.balance(&id).await, (700, 500));
    let c2 = app.post(&capture_path(&h2), json!({})).send().await;
    assert_eq!(c2.status, 200, "{}", c2.json);
    assert_eq!(c2.json["status"], "completed");
    assert_eq!(c2.json["balance_after"], 500);
    assert_eq!(app.balance(&id).await, (500, 500));
    assert_eq!(version(&app, &id).await, v0 + 4);
    app.assert_verified().await;
}

#[tokio::test]
async fn void_releases_the_hold() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 1000).await;
    let h = hold_ok(&app, &id, 300).await;
    let v = version(&app, &id).await;
    assert_eq!(app.balance(&id).await, (1000, 700));
    let r = post_empty(&app, &void_path(&h)).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["id"], h.as_str());
    assert_eq!(r.json["status"], "failed");
    assert_eq!(r.json["failure_reason"], "voided");
    assert_eq!(r.json["balance_after"], Value::Null);
    assert_eq!(r.json["posted_at"], Value::Null);
    assert_eq!(r.json["amount"], 300);
    assert_eq!(get_tx(&app, &h).await, r.json);
    assert_eq!(app.balance(&id).await, (1000, 1000));
    assert_eq!(version(&app, &id).await, v + 1);

    // With an empty object body, too.
    let h2 = hold_ok(&app, &id, 1000).await;
    assert_eq!(app.balance(&id).await, (1000, 0));
    let r = app.post(&void_path(&h2), json!({})).send().await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["failure_reason"], "voided");
    assert_eq!(app.balance(&id).await, (1000, 1000));
    let voided = get_json(
        &app,
        &format!("/v1/accounts/{id}/transactions?status=failed"),
    )
    .await;
    assert_eq!(voided["data"].as_array().map(Vec::len), Some(2));
    app.assert_verified().await;
}

#[tokio::test]
async fn capture_or_void_of_anything_but_a_pending_debit_is_invalid_state() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 1000).await;
    let credit = app
        .get(&format!("/v1/accounts/{id}/transactions"))
        .send()
        .await
        .json["data"][0]["id"]
        .as_str()
        .expect("credit id")
        .to_string();
    let completed = app
        .post(&debits(&id), json!({"amount": 100}))
        .send()
        .await
        .id();
    let declined = hold(&app, &id, 5000).await;
    assert_problem(&declined, 422, "insufficient_funds");
    let declined = declined.json["transaction_id"]
        .as_str()
        .expect("transaction_id")
        .to_string();
    let captured = hold_ok(&app, &id, 100).await;
    assert_eq!(post_empty(&app, &capture_path(&captured)).await.status, 200);
    let voided = hold_ok(&app, &id, 100).await;
    assert_eq!(post_empty(&app, &void_path(&voided)).await.status, 200);
    let reversed = app
        .post(&debits(&id), json!({"amount": 50}))
        .send()
        .await
        .id();
    let compensation = post_empty(&app, &format!("/v1/transactions/{reversed}/reverse")).await;
    assert_eq!(compensation.status, 201);
    let before = get_json(&app, &format!("/v1/accounts/{id}/transactions?limit=200")).await;
    let balance = app.balance(&id).await;
    assert_eq!(balance, (800, 800));

    for tx in [
        &credit,
        &completed,
        &declined,
        &captured,
        &voided,
        &reversed,
        &compensation.id(),
    ] {
        for path in [capture_path(tx), void_path(tx)] {
            let r = post_empty(&app, &path).await;
            assert_problem(&r, 409, "invalid_state");
        }
    }
    // Settling twice: capture after capture, void after void too.
    let h = hold_ok(&app, &id, 10).await;
    assert_eq!(post_empty(&app, &capture_path(&h)).await.status, 200);
    assert_problem(
        &post_empty(&app, &capture_path(&h)).await,
        409,
        "invalid_state",
    );
    assert_problem(
        &post_empty(&app, &void_path(&h)).await,
        409,
        "invalid_state",
    );
    let h = hold_ok(&app, &id, 10).await;
    assert_eq!(post_empty(&app, &void_path(&h)).await.status, 200);
    assert_problem(
        &post_empty(&app, &void_path(&h)).await,
        409,
        "invalid_state",
    );
    assert_problem(
        &post_empty(&app, &capture_path(&h)).await,
        409,
        "invalid_state",
    );
    assert_eq!(get_tx(&app, &h).await["status"], "failed");

    let after = get_json(&app, &format!("/v1/accounts/{id}/transactions?limit=200")).await;
    assert_eq!(
        after["data"].as_array().map(Vec::len),
        before["data"].as_array().map(|d| d.len() + 2)
    );
    assert_eq!(app.balance(&id).await, (790, 790));
    app.assert_verified().await;
}

#[tokio::test]
async fn capture_and_void_refusals_404_403_422() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 1000).await;
    let h = hold_ok(&app, &id, 100).await;
    for tx in [Uuid::now_v7().to_string(), "not-a-uuid".to_string()] {
        for path in [capture_path(&tx), void_path(&tx)] {
            assert_problem(&post_empty(&app, &path).await, 404, "not_found");
        }
    }
    let viewer = app.key("viewer", None).await;
    let other = app.funded("USD", 0).await;
    let scoped = app
        .key(
            "operator",
            Some(vec![Uuid::parse_str(&other).expect("uuid")]),
        )
        .await;
    for path in [capture_path(&h), void_path(&h)] {
        let r = app
            .req("POST".parse().expect("method"), &path)
            .key(&viewer)
            .send()
            .await;
        assert_problem(&r, 403, "forbidden");
        let r = app
            .req("POST".parse().expect("method"), &path)
            .key(&scoped)
            .send()
            .await;
        assert_problem(&r, 404, "not_found");
        // The body takes no fields.
        let r = app.post(&path, json!({"amount": 50})).send().await;
        assert_problem(&r, 422, "validation_error");
        assert_eq!(r.json["errors"][0]["field"], "amount");
    }
    assert_eq!(get_tx(&app, &h).await["status"], "pending");
    assert_eq!(app.balance(&id).await, (1000, 900));
}

#[tokio::test]
async fn hold_over_available_is_declined_and_recorded() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 500).await;
    let r = hold(&app, &id, 600).await;
    assert_problem(&r, 422, "insufficient_funds");
    let tx = r.json["transaction_id"]
        .as_str()
        .expect("transaction_id")
        .to_string();
    let t = get_tx(&app, &tx).await;
    assert_eq!(t["type"], "debit");
    assert_eq!(t["amount"], 600);
    assert_eq!(t["status"], "failed");
    assert_eq!(t["failure_reason"], "insufficient_funds");
    assert_eq!(t["balance_after"], Value::Null);
    assert_eq!(t["posted_at"], Value::Null);
    assert_eq!(app.balance(&id).await, (500, 500));

    // Holds count against the available balance, not the balance.
    let _first = hold_ok(&app, &id, 400).await;
    let r = hold(&app, &id, 101).await;
    assert_problem(&r, 422, "insufficient_funds");
    let last = hold_ok(&app, &id, 100).await;
    assert_eq!(app.balance(&id).await, (500, 0));
    let r = hold(&app, &id, 1).await;
    assert_problem(&r, 422, "insufficient_funds");
    assert_eq!(get_tx(&app, &last).await["status"], "pending");
    app.assert_verified().await;
}

#[tokio::test]
async fn debit_cannot_overdraw_the_available_balance() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 1000).await;
    let h = hold_ok(&app, &id, 700).await;
    // The balance (1000) covers 400, the available balance (300) does not.
    let r = app.post(&debits(&id), json!({"amount": 400})).send().await;
    assert_problem(&r, 422, "insufficient_funds");
    let declined = get_tx(&app, r.json["transaction_id"].as_str().expect("id")).await;
    assert_eq!(declined["status"], "failed");
    assert_eq!(declined["failure_reason"], "insufficient_funds");
    assert_eq!(app.balance(&id).await, (1000, 300));

    let ok = app.post(&debits(&id), json!({"amount": 300})).send().await;
    assert_eq!(ok.status, 201, "{}", ok.json);
    assert_eq!(ok.json["balance_after"], 700);
    assert_eq!(app.balance(&id).await, (700, 0));
    // A transfer out is held to the available balance too.
    let other = app.funded("USD", 0).await;
    let t = app
        .post(
            "/v1/transfers",
            json!({"from_account_id": id, "to_account_id": other, "amount": 1}),
        )
        .send()
        .await;
    assert_problem(&t, 422, "insufficient_funds");

    let c = post_empty(&app, &capture_path(&h)).await;
    assert_eq!(c.status, 200, "{}", c.json);
    assert_eq!(c.json["balance_after"], 0);
    assert_eq!(app.balance(&id).await, (0, 0));
    assert_eq!(app.balance(&other).await, (0, 0));
    app.assert_verified().await;
}

#[tokio::test]
async fn frozen_account_refuses_capture_but_allows_void() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 1000).await;
    let a = hold_ok(&app, &id, 400).await;
    let b = hold_ok(&app, &id, 100).await;
    let frozen = set_status(&app, &id, "frozen").await;
    assert_eq!(frozen.status, 200, "{}", frozen.json);
    assert_eq!(frozen.json["status"], "frozen");

    let r = post_empty(&app, &capture_path(&a)).await;
    assert_problem(&r, 422, "account_not_active");
    assert_eq!(get_tx(&app, &a).await["status"], "pending");
    assert_eq!(app.balance(&id).await, (1000, 500));
    // New holds are refused on a frozen account.
    assert_problem(&hold(&app, &id, 1).await, 422, "account_not_active");

    let v = post_empty(&app, &void_path(&a)).await;
    assert_eq!(v.status, 200, "{}", v.json);
    assert_eq!(v.json["status"], "failed");
    assert_eq!(v.json["failure_reason"], "voided");
    assert_eq!(app.balance(&id).await, (1000, 900));
    let account = get_json(&app, &format!("/v1/accounts/{id}")).await;
    assert_eq!(account["status"], "frozen");

    // Active again, the other hold can be captured.
    assert_eq!(set_status(&app, &id, "active").await.status, 200);
    let c = post_empty(&app, &capture_path(&b)).await;
    assert_eq!(c.status, 200, "{}", c.json);
    assert_eq!(app.balance(&id).await, (900, 900));
    app.assert_verified().await;
}

#[tokio::test]
async fn account_with_a_pending_hold_cannot_be_closed() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 500).await;
    let h = hold_ok(&app, &id, 200).await;
    let r = set_status(&app, &id, "closed").await;
    assert_problem(&r, 409, "account_not_empty");
    let account = get_json(&app, &format!("/v1/accounts/{id}")).await;
    assert_eq!(account["status"], "active");
    assert_eq!(account["balance"], 500);
    assert_eq!(account["available_balance"], 300);
    // Holding everything does not empty the account either.
    let rest = hold_ok(&app, &id, 300).await;
    assert_eq!(app.balance(&id).await, (500, 0));
    assert_problem(
        &set_status(&app, &id, "closed").await,
        409,
        "account_not_empty",
    );
    assert_eq!(get_tx(&app, &h).await["status"], "pending");
    assert_eq!(get_tx(&app, &rest).await["status"], "pending");
    app.assert_verified().await;
}

// ----- concurrency -------------------------------------------------------------------------

#[tokio::test]
async fn fifty_concurrent_captures_of_one_hold_capture_once() {
    let app = Arc::new(crate::spawn().await);
    let id = app.funded("USD", 1000).await;
    let h = hold_ok(&app, &id, 400).await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let app = app.clone();
            let path = capture_path(&h);
            tokio::spawn(async move {
                if i % 2 == 0 {
                    app.req("POST".parse().expect("method"), &path).send().await
                } else {
                    app.post(&path, json!({})).send().await
                }
            })
        })
        .collect();
    let (mut ok, mut conflicts) = (0, 0);
    for t in tasks {
        let r = t.await.expect("task");
        match r.status {
            200 => {
                ok += 1;
                assert_eq!(r.json["status"], "completed");
                assert_eq!(r.json["balance_after"], 600);
            }
            409 => {
                assert_eq!(r.code(), "invalid_state", "{}", r.json);
                conflicts += 1;
            }
            other => panic!("unexpected {other}: {}", r.json),
        }
    }
    assert_eq!((ok, conflicts), (1, 49));
    assert_eq!(app.balance(&id).await, (600, 600), "lowered exactly once");
    let completed = get_json(&app, &format!("/v1/accounts/{id}/transactions?type=debit")).await;
    assert_eq!(completed["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(completed["data"][0]["status"], "completed");
    app.assert_verified().await;
}

/// What one task of the mixed workload did to each account: (balance change, still held).
type Deltas = [(i64, i64); 3];
/// Successes per operation: credit, debit, hold+capture, hold+void, hold left pending.
type Done = [usize; 5];

#[tokio::test]
async fn concurrent_holds_captures_voids_and_debits_stay_consistent() {
    let app = Arc::new(crate::spawn().await);
    const START: i64 = 3_000;
    let mut accounts = Vec::new();
    for _ in 0..3 {
        accounts.push(app.funded("USD", START).await);
    }
    let accounts = Arc::new(accounts);
    let tasks: Vec<_> = (0..16_usize)
        .map(|i| {
            let app = app.clone();
            let accounts = accounts.clone();
            tokio::spawn(async move {
                let mut deltas: Deltas = [(0, 0); 3];
                let mut done: Done = [0; 5];
                for j in 0..12_usize {
                    let k = (i + j) % 3;
                    let account = &accounts[k];
                    let amount = 50 + ((i * 7 + j * 13) % 20) as i64 * 25;
                    let op = (i + 2 * j) % 5;
                    if op == 0 {
                        let r = app
                            .post(
                                &format!("/v1/accounts/{account}/credits"),
                                json!({ "amount": amount }),
                            )
                            .send()
                            .await;
                        assert_eq!(r.status, 201, "credit: {}", r.json);
                        deltas[k].0 += amount;
                        done[0] += 1;
                        continue;
                    }
                    let r = app
                        .post(&debits(account), json!({"amount": amount, "hold": op != 1}))
                        .send()
                        .await;
                    match r.status {
                        201 => done[op] += 1,
                        422 => {
                            assert_eq!(r.code(), "insufficient_funds", "{}", r.json);
                            continue;
                        }
                        other => panic!("debit {op}: unexpected {other}: {}", r.json),
                    }
                    match op {
                        1 => {
                            assert_eq!(r.json["status"], "completed");
                            deltas[k].0 -= amount;
                        }
                        2 => {
                            let c = app
                                .req("POST".parse().expect("method"), &capture_path(&r.id()))
                                .send()
                                .await;
                            assert_eq!(c.status, 200, "capture: {}", c.json);
                            assert_eq!(c.json["status"], "completed");
                            deltas[k].0 -= amount;
                        }
                        3 => {
                            let v = app
                                .req("POST".parse().expect("method"), &void_path(&r.id()))
                                .send()
                                .await;
                            assert_eq!(v.status, 200, "void: {}", v.json);
                            assert_eq!(v.json["failure_reason"], "voided");
                        }
                        _ => {
                            assert_eq!(r.json["status"], "pending");
                            deltas[k].1 += amount;
                        }
                    }
                }
                (deltas, done)
            })
        })
        .collect();
    let mut totals: Deltas = [(0, 0); 3];
    let mut done_total: Done = [0; 5];
    for t in tasks {
        let (deltas, done) = t.await.expect("task");
        for (total, n) in done_total.iter_mut().zip(done) {
            *total += n;
        }
        for (total, d) in totals.iter_mut().zip(deltas) {
            total.0 += d.0;
            total.1 += d.1;
        }
    }
    assert!(
        done_total.iter().all(|n| *n > 0),
        "every kind of operation succeeded at least once: {done_total:?}"
    );
    for (account, (change, held)) in accounts.iter().zip(totals) {
        let balance = START + change;
        assert_eq!(
            app.balance(account).await,
            (balance, balance - held),
            "{account}"
        );
        let pending = get_json(
            &app,
            &format!("/v1/accounts/{account}/transactions?status=pending&limit=200"),
        )
        .await;
        let sum: i64 = pending["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|t| t["amount"].as_i64().expect("amount"))
            .sum();
        assert_eq!(sum, held, "{account}: open holds");
    }
    app.assert_verified().await;
}

// ----- history -----------------------------------------------------------------------------

#[tokio::test]
async fn captured_hold_counts_in_history_from_its_capture() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 0).await;
    let funding = app
        .post(
            &format!("/v1/accounts/{id}/credits"),
            json!({"amount": 1000}),
        )
        .send()
        .await;
    assert_eq!(funding.status, 201);
    let funded_at = parse_time(&funding.json["posted_at"]);
    let held = hold(&app, &id, 300).await;
    assert_eq!(held.status, 201);
    let held_at = parse_time(&held.json["created_at"]);
    let top_up = app
        .post(&format!("/v1/accounts/{id}/credits"), json!({"amount": 50}))
        .send()
        .await;
    assert_eq!(top_up.status, 201);
    let topped_at = parse_time(&top_up.json["posted_at"]);
    let captured = post_empty(&app, &capture_path(&held.id())).await;
    assert_eq!(captured.status, 200, "{}", captured.json);
    assert_eq!(captured.json["balance_after"], 750);
    assert_eq!(captured.json["created_at"], held.json["created_at"]);
    let captured_at = parse_time(&captured.json["posted_at"]);
    assert!(funded_at <= held_at && held_at <= topped_at && topped_at <= captured_at);
    assert!(
        held_at < captured_at,
        "posted at the capture, not the creation"
    );

    let micro = time::Duration::microseconds(1);
    let cases = [
        (funded_at - micro, 0),
        (funded_at, 1000),
        // Holding changes no balance.
        (held_at, 1000),
        (topped_at, 1050),
        (captured_at - micro, 1050),
        (captured_at, 750),
        (captured_at + time::Duration::days(365), 750),
    ];
    for (at, expected) in cases {
        assert_eq!(
            balance_at(&app, &id, &format_time(at)).await,
            expected,
            "at {}",
            format_time(at)
        );
    }
    assert_eq!(app.balance(&id).await, (750, 750));
    app.assert_verified().await;
}
