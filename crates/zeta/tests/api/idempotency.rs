//! Idempotency-Key: replay, mismatch, in-flight and exactly-once under concurrency.

use serde_json::json;

#[tokio::test]
async fn replay_is_byte_identical_with_header() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 0).await;
    let path = format!("/v1/accounts/{id}/credits");
    let first = app
        .post(&path, json!({"amount": 500, "description": "pay"}))
        .idempotency("credit-1")
        .send()
        .await;
    assert_eq!(first.status, 201, "{}", first.json);
    assert_eq!(first.header("idempotent-replayed"), None);
    // Same body, keys in another order: JSON-equal, so a replay.
    let again = app
        .post(&path, json!({"description": "pay", "amount": 500}))
        .idempotency("credit-1")
        .header("x-request-id", "second-try")
        .send()
        .await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body, "byte-for-byte equal");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.header("x-request-id"), Some("second-try"));
    assert_eq!(app.balance(&id).await, (500, 500), "applied once");
}

#[tokio::test]
async fn stored_refusals_replay_and_validation_errors_do_not() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 100).await;
    let path = format!("/v1/accounts/{id}/debits");
    let declined = app
        .post(&path, json!({"amount": 700}))
        .idempotency("d-1")
        .send()
        .await;
    assert_eq!(declined.status, 422);
    assert_eq!(declined.code(), "insufficient_funds");
    let replay = app
        .post(&path, json!({"amount": 700}))
        .idempotency("d-1")
        .send()
        .await;
    assert_eq!(replay.status, 422);
    assert_eq!(replay.body, declined.body);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    // Only one failed transaction was recorded.
    let list = app
        .get(&format!("/v1/accounts/{id}/transactions?status=failed"))
        .send()
        .await;
    assert_eq!(list.json["data"].as_array().map(Vec::len), Some(1));

    // A validation error is not stored: the same key then works for a valid request.
    let invalid = app
        .post(&path, json!({"amount": 0}))
        .idempotency("d-2")
        .send()
        .await;
    assert_eq!(invalid.status, 422);
    assert_eq!(invalid.code(), "validation_error");
    let valid = app
        .post(&path, json!({"amount": 40}))
        .idempotency("d-2")
        .send()
        .await;
    assert_eq!(valid.status, 201, "{}", valid.json);
    assert_eq!(valid.header("idempotent-replayed"), None);
}

#[tokio::test]
async fn reused_key_with_other_body_or_path_is_refused() {
    let app = crate::spawn().await;
    let a = app.funded("USD", 0).await;
    let b = app.funded("USD", 0).await;
    let first = app
        .post(&format!("/v1/accounts/{a}/credits"), json!({"amount": 5}))
        .idempotency("k")
        .send()
        .await;
    assert_eq!(first.status, 201);
    let other_body = app
        .post(&format!("/v1/accounts/{a}/credits"), json!({"amount": 6}))
        .idempotency("k")
        .send()
        .await;
    assert_eq!(other_body.status, 422);
    assert_eq!(other_body.code(), "idempotency_key_reused");
    let other_path = app
        .post(&format!("/v1/accounts/{b}/credits"), json!({"amount": 5}))
        .idempotency("k")
        .send()
        .await;
    assert_eq!(other_path.code(), "idempotency_key_reused");
    assert_eq!(app.balance(&a).await.0, 5);
    assert_eq!(app.balance(&b).await.0, 0);

    // Keys are scoped to the API key: another key may use the same string.
    let operator = app.key("operator", None).await;
    let other_key = app
        .post(&format!("/v1/accounts/{b}/credits"), json!({"amount": 5}))
        .idempotency("k")
        .key(&operator)
        .send()
        .await;
    assert_eq!(other_key.status, 201, "{}", other_key.json);
    assert_eq!(app.balance(&b).await.0, 5);
}

#[tokio::test]
async fn bad_idempotency_key_header_is_400() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 0).await;
    let long = "k".repeat(256);
    for bad in [long.as_str(), "has space", "tab\there"] {
        let r = app
            .post(&format!("/v1/accounts/{id}/credits"), json!({"amount": 5}))
            .idempotency(bad)
            .send()
            .await;
        assert_eq!(r.status, 400, "{bad:?}");
        assert_eq!(r.code(), "invalid_header");
    }
    assert_eq!(app.balance(&id).await.0, 0);
}

#[tokio::test]
async fn fifty_concurrent_requests_with_one_key_have_one_effect() {
    let app = std::sync::Arc::new(crate::spawn().await);
    let id = app.funded("USD", 0).await;
    let path = format!("/v1/accounts/{id}/credits");
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let app = app.clone();
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            app.post(&path, json!({"amount": 7}))
                .idempotency("same-key")
                .send()
                .await
        }));
    }
    let mut created = 0;
    let mut bodies = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.expect("task");
        match r.status {
            201 => {
                created += 1;
                bodies.insert(r.body.clone());
            }
            409 => assert_eq!(r.code(), "idempotency_key_in_use"),
            other => panic!("unexpected {other}: {}", r.json),
        }
    }
    assert!(created >= 1);
    assert_eq!(bodies.len(), 1, "every success is the same response");
    assert_eq!(app.balance(&id).await.0, 7, "exactly one effect");
    app.assert_verified().await;
}
