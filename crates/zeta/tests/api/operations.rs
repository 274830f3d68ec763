//! Health, readiness and metrics.

use axum::http::Method;
use serde_json::json;

#[tokio::test]
async fn health_endpoints_need_no_key() {
    let app = crate::spawn().await;
    let live = app.req(Method::GET, "/health/live").no_auth().send().await;
    assert_eq!(live.status, 200);
    assert_eq!(live.json, json!({"status": "ok"}));
    let ready = app.req(Method::GET, "/health/ready").no_auth().send().await;
    assert_eq!(ready.status, 200);
    assert_eq!(
        ready.json,
        json!({"status": "ready", "checks": {"database": "ok"}})
    );
    assert!(ready.header("x-request-id").is_some());
}

#[tokio::test]
async fn readiness_is_503_while_shutting_down() {
    let app = crate::spawn().await;
    app.state.begin_shutdown();
    let ready = app.req(Method::GET, "/health/ready").no_auth().send().await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json["status"], "shutting_down");
}

#[tokio::test]
async fn metrics_carry_the_named_series_by_route_template() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 10).await;
    let r = app.get(&format!("/v1/accounts/{id}")).send().await;
    assert_eq!(r.status, 200);
    let missing = app.get("/v1/accounts/not-a-uuid").send().await;
    assert_eq!(missing.status, 404);
    let m = app.req(Method::GET, "/metrics").no_auth().send().await;
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain"))
    );
    let text = String::from_utf8(m.body).expect("utf8");
    for name in [
        "http_requests_total{",
        "http_request_duration_seconds_bucket{",
        "db_pool_connections{",
        "db_retries_total",
        "ledger_batch_size_bucket",
        "circuit_breaker_state",
        "rate_limited_total",
        "batch_requests_waiting 0",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(
        text.contains(r#"route="/v1/accounts/{id}""#),
        "labelled by route template:\n{text}"
    );
    assert!(!text.contains(&id), "never by raw path");
    assert!(text.contains(r#"status="201""#));
}

/// The app with a bucket of 3 requests per key, refilled at 1 per second.
fn limited_to_3(app: &zeta_testkit::TestApp) -> axum::Router {
    let limits = zeta_api::ratelimit::RateLimitSettings { rps: 1, burst: 3 };
    zeta_api::router(app.state.clone().with_rate_limit(limits))
}

/// Requests refused before they are authenticated (400, 415, 405, an unknown route) carry
/// `RateLimit-*` too and spend a token of the client address's bucket; their own refusal still
/// wins over a 429.
#[tokio::test]
async fn refused_requests_carry_rate_limit_headers_and_spend_a_token() {
    let app = crate::spawn().await;
    let router = limited_to_3(&app);
    let malformed = app
        .req(Method::POST, "/v1/accounts")
        .header("content-type", "application/json")
        .raw("{")
        .send_to(&router)
        .await;
    let unsupported = app
        .req(Method::POST, "/v1/accounts")
        .raw("owner_name=A")
        .send_to(&router)
        .await;
    let unrouted = app.get("/v1/nothing-here").send_to(&router).await;
    let wrong_method = app
        .req(Method::DELETE, "/v1/accounts")
        .send_to(&router)
        .await;
    let seen: Vec<(u16, Option<&str>, Option<&str>)> =
        [&malformed, &unsupported, &unrouted, &wrong_method]
            .iter()
            .map(|r| {
                (
                    r.status,
                    r.header("ratelimit-limit"),
                    r.header("ratelimit-remaining"),
                )
            })
            .collect();
    assert_eq!(
        seen,
        [
            (400, Some("3"), Some("2")),
            (415, Some("3"), Some("1")),
            (404, Some("3"), Some("0")),
            (405, Some("3"), Some("0")),
        ]
    );
    // They spent the client address's bucket (their keys are not looked up): a request without
    // a key is now limited, one with a valid key is not.
    let limited = app.get("/v1/accounts").no_auth().send_to(&router).await;
    assert_eq!(limited.status, 429, "{}", limited.json);
    let keyed = app.get("/v1/accounts").send_to(&router).await;
    assert_eq!(keyed.status, 200, "{}", keyed.json);
    assert_eq!(keyed.header("ratelimit-remaining"), Some("2"));
}

/// A token bucket per API key: `RateLimit-*` on every `/v1` response, 429 with `Retry-After`
/// past the burst, other keys unaffected, operational routes never limited.
#[tokio::test]
async fn rate_limit_per_key_with_headers() {
    let app = crate::spawn().await;
    let router = limited_to_3(&app);
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = app.get("/v1/accounts").send_to(&router).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("ratelimit-limit"), Some("3"));
        remaining.push(r.header("ratelimit-remaining").map(str::to_string));
        assert!(
            r.header("ratelimit-reset")
                .is_some_and(|v| v.parse::<u64>().is_ok())
        );
    }
    assert_eq!(
        remaining,
        vec![Some("2".into()), Some("1".into()), Some("0".into())]
    );
    let limited = app.get("/v1/accounts").send_to(&router).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.code(), "rate_limited");
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(limited.header("ratelimit-remaining"), Some("0"));
    assert_eq!(limited.header("ratelimit-reset"), Some("3"));
    // 429 ranks before 401: a missing key spends the client address's bucket, not this key's.
    let other = app.key("viewer", None).await;
    let r = app.get("/v1/accounts").key(&other).send_to(&router).await;
    assert_eq!(r.status, 200, "another key has its own bucket");
    for _ in 0..5 {
        let r = app
            .req(Method::GET, "/health/live")
            .no_auth()
            .send_to(&router)
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("ratelimit-limit"),
            None,
            "operational routes are not limited"
        );
    }
    let m = app
        .req(Method::GET, "/metrics")
        .no_auth()
        .send_to(&router)
        .await;
    let text = String::from_utf8(m.body).expect("utf8");
    assert!(
        text.lines()
            .any(|l| l.starts_with("rate_limited_total ") && l != "rate_limited_total 0"),
        "rate_limited_total counted:\n{text}"
    );
}
