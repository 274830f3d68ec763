//! The request itself: media type, size, JSON syntax, authentication, routing, problem+json
//! bodies, request ids and the order in which refusals win.

use serde_json::{Value, json};
use uuid::Uuid;
use zeta_testkit::{TestApp, TestRequest, TestResponse};

// ----- helpers -----------------------------------------------------------------------------

/// Nothing internal leaks into a response body.
/// A complete RFC 9457 problem for `path` (the request path, without its query).
#[track_caller]
fn assert_problem(r: &TestResponse, status: u16, code: &str, path: &str) {
    assert_eq!(r.status, status, "{} {}", r.status, r.json);
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{}",
        r.json
    );
    let p = r
        .json
        .as_object()
        .unwrap_or_else(|| panic!("problem body is not a JSON object: {:?}", r.body));
    assert_eq!(r.json["code"], json!(code), "{}", r.json);
    assert_eq!(
        r.json["type"],
        json!(format!(
            "https://zeta.example/problems/{}",
            code.replace('_', "-")
        ))
    );
    assert_eq!(r.json["status"], json!(status));
    for field in ["title", "detail"] {
        let v = p
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{field} missing: {}", r.json));
        assert!(!v.is_empty(), "{field} is empty");
    }
    let request_id = r.header("x-request-id").expect("X-Request-Id header");
    assert!(!request_id.is_empty());
    assert_eq!(r.json["request_id"], json!(request_id));
    assert_eq!(r.json["instance"], json!(path));
    r.assert_no_leak();
}

#[track_caller]
fn error_fields(r: &TestResponse) -> Vec<String> {
    r.json["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors list: {}", r.json))
        .iter()
        .map(|e| e["field"].as_str().expect("field").to_string())
        .collect()
}

fn method<'a>(app: &'a TestApp, name: &str, path: &str) -> TestRequest<'a> {
    app.req(name.parse().expect("method"), path)
}

/// A POST of these exact bytes as `application/json`.
fn raw_json<'a>(app: &'a TestApp, path: &str, body: impl Into<Vec<u8>>) -> TestRequest<'a> {
    method(app, "POST", path)
        .raw(body)
        .header("content-type", "application/json")
}

/// `body` padded with trailing whitespace (still valid JSON) to exactly `len` bytes.
fn padded(body: &Value, len: usize) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(body).expect("json");
    assert!(bytes.len() <= len);
    bytes.resize(len, b' ');
    bytes
}

async fn account_count(app: &TestApp) -> usize {
    let r = app.get("/v1/accounts?limit=200").send().await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json["data"].as_array().expect("data").len()
}

/// `header` as the Authorization header, or none at all.
fn with_authorization<'a>(r: TestRequest<'a>, header: Option<&str>) -> TestRequest<'a> {
    match header {
        None => r.no_auth(),
        Some(h) => r.header("authorization", h),
    }
}

const ACCOUNT: &str = r#"{"owner_name":"Ann","currency":"USD"}"#;

// ----- 415 ---------------------------------------------------------------------------------

#[tokio::test]
async fn body_must_be_sent_as_application_json() {
    let app = crate::spawn().await;
    let text = method(&app, "POST", "/v1/accounts")
        .raw(ACCOUNT)
        .header("content-type", "text/plain")
        .send()
        .await;
    assert_problem(&text, 415, "unsupported_media_type", "/v1/accounts");
    let none = method(&app, "POST", "/v1/accounts")
        .raw(ACCOUNT)
        .send()
        .await;
    assert_problem(&none, 415, "unsupported_media_type", "/v1/accounts");
    let form = method(&app, "POST", "/v1/accounts")
        .raw("owner_name=Ann&currency=USD")
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await;
    assert_problem(&form, 415, "unsupported_media_type", "/v1/accounts");
    let id = app.funded("USD", 0).await;
    let credit_path = format!("/v1/accounts/{id}/credits");
    let credit = method(&app, "POST", &credit_path)
        .raw(r#"{"amount":5}"#)
        .header("content-type", "text/plain")
        .send()
        .await;
    assert_problem(&credit, 415, "unsupported_media_type", &credit_path);
    let patch_path = format!("/v1/accounts/{id}");
    let patch = method(&app, "PATCH", &patch_path)
        .raw(r#"{"owner_name":"B"}"#)
        .header("if-match", "\"1\"")
        .send()
        .await;
    assert_problem(&patch, 415, "unsupported_media_type", &patch_path);
    assert_eq!(app.balance(&id).await, (0, 0));
    assert_eq!(account_count(&app).await, 1, "nothing created");

    for content_type in [
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "Application/JSON",
    ] {
        let ok = method(&app, "POST", "/v1/accounts")
            .raw(ACCOUNT)
            .header("content-type", content_type)
            .send()
            .await;
        assert_eq!(ok.status, 201, "{content_type}: {}", ok.json);
        assert_eq!(ok.json["owner_name"], "Ann");
    }
    assert_eq!(account_count(&app).await, 4);
}

// ----- 413 ---------------------------------------------------------------------------------

#[tokio::test]
async fn bodies_over_64_kib_are_413() {
    let app = crate::spawn().await;
    let huge = app
        .post(
            "/v1/accounts",
            json!({"owner_name": "x".repeat(70_000), "currency": "USD"}),
        )
        .send()
        .await;
    assert_problem(&huge, 413, "payload_too_large", "/v1/accounts");
    // Exactly 64 KiB is accepted, one byte more is not.
    let body = json!({"owner_name": "Ann", "currency": "USD"});
    let at_limit = raw_json(&app, "/v1/accounts", padded(&body, 64 * 1024))
        .send()
        .await;
    assert_eq!(at_limit.status, 201, "{}", at_limit.json);
    let over = raw_json(&app, "/v1/accounts", padded(&body, 64 * 1024 + 1))
        .send()
        .await;
    assert_problem(&over, 413, "payload_too_large", "/v1/accounts");
    // Also on the other endpoints with a 64 KiB limit.
    let id = app.funded("USD", 0).await;
    let path = format!("/v1/accounts/{id}/credits");
    let credit = raw_json(&app, &path, padded(&json!({"amount": 5}), 64 * 1024 + 1))
        .send()
        .await;
    assert_problem(&credit, 413, "payload_too_large", &path);
    let transfer = raw_json(
        &app,
        "/v1/transfers",
        padded(&json!({"amount": 5}), 100 * 1024),
    )
    .send()
    .await;
    assert_problem(&transfer, 413, "payload_too_large", "/v1/transfers");
    assert_eq!(app.balance(&id).await, (0, 0));
    assert_eq!(account_count(&app).await, 2);
}

#[tokio::test]
async fn batch_bodies_may_be_up_to_1_mib() {
    let app = crate::spawn().await;
    let a = app.funded("USD", 100).await;
    let b = app.funded("USD", 0).await;
    let batch = json!({"transfers": [{"from_account_id": a, "to_account_id": b, "amount": 10}]});
    let path = "/v1/transfers/batch";
    let medium = raw_json(&app, path, padded(&batch, 200 * 1024))
        .send()
        .await;
    assert_eq!(medium.status, 200, "{}", medium.json);
    assert_eq!(medium.json["results"][0]["status"], json!(201));
    let at_limit = raw_json(&app, path, padded(&batch, 1024 * 1024))
        .send()
        .await;
    assert_eq!(at_limit.status, 200, "{}", at_limit.json);
    assert_eq!(at_limit.json["results"][0]["status"], json!(201));
    assert_eq!(at_limit.json["results"][0]["transfer"]["amount"], json!(10));
    let over = raw_json(&app, path, padded(&batch, 1024 * 1024 + 1))
        .send()
        .await;
    assert_problem(&over, 413, "payload_too_large", path);
    // A large body of real content: an item's own unknown field fails that item only.
    let big_item = json!({"transfers": [
        {"from_account_id": a, "to_account_id": b, "amount": 10, "pad": "p".repeat(900_000)},
        {"from_account_id": a, "to_account_id": b, "amount": 10}
    ]});
    let r = app.post(path, big_item).send().await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["results"][0]["status"], json!(422));
    assert_eq!(
        r.json["results"][0]["error"]["code"],
        json!("validation_error")
    );
    assert_eq!(
        r.json["results"][0]["error"]["errors"][0]["field"],
        json!("transfers.0.pad")
    );
    assert_eq!(r.json["results"][1]["status"], json!(201));
    let too_big = app
        .post(
            path,
            json!({"transfers": [
                {"from_account_id": a, "to_account_id": b, "amount": 10,
                 "pad": "p".repeat(1024 * 1024)}
            ]}),
        )
        .send()
        .await;
    assert_problem(&too_big, 413, "payload_too_large", path);
    assert_eq!(app.balance(&a).await, (70, 70));
    assert_eq!(app.balance(&b).await, (30, 30));
    app.assert_verified().await;
}

// ----- 400 malformed_json and non-objects --------------------------------------------------

#[tokio::test]
async fn unparsable_json_is_400_malformed_json() {
    let app = crate::spawn().await;
    let deep65 = format!("{}{}", "[".repeat(65), "]".repeat(65));
    let deep_in_object = format!("{{\"x\":{}{}}}", "[".repeat(64), "]".repeat(64));
    let bodies: Vec<Vec<u8>> = vec![
        br#"{"owner_name":"Ann","currency":"USD""#.to_vec(),
        br#"{"owner_name":"Ann","#.to_vec(),
        br#"{"owner_name":"Ann","currency":"USD"}x"#.to_vec(),
        br#"{"owner_name":"Ann","currency":"USD"}{}"#.to_vec(),
        br#"{"owner_name":"\ud800","currency":"USD"}"#.to_vec(),
        br#"{"owner_name":"\udc00x","currency":"USD"}"#.to_vec(),
        br#"{"owner_name":"Ann","currency":"USD",}"#.to_vec(),
        br#"{'owner_name':'Ann'}"#.to_vec(),
        b"{\"owner_name\":\"\xff\xfe\",\"currency\":\"USD\"}".to_vec(),
        b"".to_vec(),
        b"   ".to_vec(),
        deep65.into_bytes(),
        deep_in_object.into_bytes(),
    ];
    for body in bodies {
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(60)
            .collect::<String>();
        let r = raw_json(&app, "/v1/accounts", body).send().await;
        assert_eq!(r.status, 400, "{shown:?}: {}", r.json);
        assert_problem(&r, 400, "malformed_json", "/v1/accounts");
    }
    assert_eq!(account_count(&app).await, 0, "nothing created");
    // A proper surrogate pair is fine.
    let pair = raw_json(
        &app,
        "/v1/accounts",
        r#"{"owner_name":"\ud83d\ude00","currency":"USD"}"#,
    )
    .send()
    .await;
    assert_eq!(pair.status, 201, "{}", pair.json);
    assert_eq!(pair.json["owner_name"], "\u{1F600}");
}

#[tokio::test]
async fn json_that_is_not_an_object_is_422() {
    let app = crate::spawn().await;
    for body in ["[1]", "\"x\"", "1", "null", "true", "[]"] {
        let r = raw_json(&app, "/v1/accounts", body).send().await;
        assert_problem(&r, 422, "validation_error", "/v1/accounts");
        assert_eq!(error_fields(&r), vec!["body"], "{body}");
    }
    // 64 levels of nesting still parse: then it is 422, not 400.
    let deep64 = format!("{}{}", "[".repeat(64), "]".repeat(64));
    let r = raw_json(&app, "/v1/accounts", deep64).send().await;
    assert_problem(&r, 422, "validation_error", "/v1/accounts");
    assert_eq!(error_fields(&r), vec!["body"]);
    let in_object = format!(
        "{{\"owner_name\":\"Ann\",\"currency\":\"USD\",\"x\":{}{}}}",
        "[".repeat(63),
        "]".repeat(63)
    );
    let r = raw_json(&app, "/v1/accounts", in_object).send().await;
    assert_problem(&r, 422, "validation_error", "/v1/accounts");
    assert_eq!(error_fields(&r), vec!["x"]);
    let id = app.funded("USD", 0).await;
    let path = format!("/v1/accounts/{id}/credits");
    let r = raw_json(&app, &path, "[{\"amount\":5}]").send().await;
    assert_problem(&r, 422, "validation_error", &path);
    assert_eq!(app.balance(&id).await, (0, 0));
}

// ----- 401 ---------------------------------------------------------------------------------

#[tokio::test]
async fn missing_or_invalid_keys_are_401_with_www_authenticate() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 0).await;
    let get_path = format!("/v1/accounts/{id}");
    let credit_path = format!("/v1/accounts/{id}/credits");
    let admin = app.admin_key.clone();
    let variants: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("wrong key", Some("Bearer zeta_not_a_real_key".into())),
        ("basic scheme", Some("Basic dXNlcjpwYXNzd29yZA==".into())),
        ("basic with a real key", Some(format!("Basic {admin}"))),
        ("bare key", Some(admin.clone())),
        ("empty bearer", Some("Bearer ".into())),
    ];
    for (what, header) in variants {
        let with = |r| with_authorization(r, header.as_deref());
        let requests = [
            (with(app.get("/v1/accounts")).send().await, "/v1/accounts"),
            (with(app.get(&get_path)).send().await, get_path.as_str()),
            (
                with(app.post(
                    "/v1/accounts",
                    json!({"owner_name": "A", "currency": "USD"}),
                ))
                .send()
                .await,
                "/v1/accounts",
            ),
            (
                with(app.post(&credit_path, json!({"amount": 5})))
                    .send()
                    .await,
                credit_path.as_str(),
            ),
        ];
        for (r, path) in requests {
            assert_eq!(r.status, 401, "{what} on {path}: {}", r.json);
            assert_problem(&r, 401, "unauthorized", path);
            assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{what}");
        }
    }
    // A real key works on the same requests.
    let operator = app.key("operator", None).await;
    let ok = app.get("/v1/accounts").key(&operator).send().await;
    assert_eq!(ok.status, 200);
    assert_eq!(app.balance(&id).await, (0, 0));
    assert_eq!(account_count(&app).await, 1);
}

// ----- 404 / 405 ---------------------------------------------------------------------------

#[tokio::test]
async fn unknown_routes_are_404_with_or_without_a_key() {
    let app = crate::spawn().await;
    for path in [
        "/v1/nope",
        "/nope",
        "/v1/accounts/abc/nope",
        "/v2/accounts",
        "/",
    ] {
        let with_key = app.get(path).send().await;
        assert_problem(&with_key, 404, "not_found", path);
        let without_key = app.get(path).no_auth().send().await;
        assert_problem(&without_key, 404, "not_found", path);
        let bad_key = app.get(path).key("zeta_wrong").send().await;
        assert_problem(&bad_key, 404, "not_found", path);
    }
    let post = app.post("/v1/nope", json!({})).send().await;
    assert_problem(&post, 404, "not_found", "/v1/nope");
}

#[tokio::test]
async fn wrong_methods_are_405_with_allow() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 0).await;
    let account_path = format!("/v1/accounts/{id}");
    let cases: [(&str, &str, &[&str]); 5] = [
        ("DELETE", "/v1/accounts", &["GET", "POST"]),
        ("PUT", "/v1/transfers", &["POST"]),
        ("GET", "/v1/transfers", &["POST"]),
        ("DELETE", account_path.as_str(), &["GET", "PATCH"]),
        ("PUT", "/v1/transfers/batch", &["POST"]),
    ];
    for (verb, path, allowed) in cases {
        let r = method(&app, verb, path).send().await;
        assert_problem(&r, 405, "method_not_allowed", path);
        let allow = r
            .header("allow")
            .unwrap_or_else(|| panic!("{verb} {path}: no Allow header"));
        let listed: Vec<&str> = allow.split(',').map(str::trim).collect();
        for m in allowed {
            assert!(
                listed.contains(m),
                "{verb} {path}: Allow {allow:?} lacks {m}"
            );
        }
        assert!(!listed.contains(&verb), "{verb} {path}: Allow {allow:?}");
    }
    assert_eq!(app.balance(&id).await, (0, 0));
    assert_eq!(account_count(&app).await, 1, "DELETE removed nothing");
}

// ----- problem bodies ----------------------------------------------------------------------

#[tokio::test]
async fn every_error_is_a_complete_problem() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 100).await;
    let viewer = app.key("viewer", None).await;
    let account_path = format!("/v1/accounts/{id}");
    let debit_path = format!("/v1/accounts/{id}/debits");
    let unknown_path = format!("/v1/accounts/{}", Uuid::now_v7());

    let r = raw_json(&app, "/v1/accounts", "{").send().await;
    assert_problem(&r, 400, "malformed_json", "/v1/accounts");
    let r = app.get("/v1/accounts").no_auth().send().await;
    assert_problem(&r, 401, "unauthorized", "/v1/accounts");
    let r = app
        .post(
            "/v1/accounts",
            json!({"owner_name": "V", "currency": "USD"}),
        )
        .key(&viewer)
        .send()
        .await;
    assert_problem(&r, 403, "forbidden", "/v1/accounts");
    let r = app.get(&unknown_path).send().await;
    assert_problem(&r, 404, "not_found", &unknown_path);
    let r = app.get("/v1/accounts?limit=0").send().await;
    assert_problem(&r, 422, "validation_error", "/v1/accounts");
    assert_eq!(error_fields(&r), vec!["limit"]);
    let messages: Vec<&str> = r.json["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["message"].as_str().expect("message"))
        .collect();
    assert!(messages.iter().all(|m| !m.is_empty()));
    let r = app.post(&debit_path, json!({"amount": 700})).send().await;
    assert_problem(&r, 422, "insufficient_funds", &debit_path);
    assert!(Uuid::try_parse(r.json["transaction_id"].as_str().expect("transaction_id")).is_ok());
    let r = method(&app, "PATCH", &account_path)
        .json(&json!({"owner_name": "Z"}))
        .send()
        .await;
    assert_problem(&r, 428, "precondition_required", &account_path);
    let r = method(&app, "PATCH", &account_path)
        .json(&json!({"owner_name": "Z"}))
        .header("if-match", "\"9\"")
        .send()
        .await;
    assert_problem(&r, 412, "version_mismatch", &account_path);
    let r = method(&app, "PATCH", &account_path)
        .json(&json!({"owner_name": "Z"}))
        .header("if-match", "nine")
        .send()
        .await;
    assert_problem(&r, 400, "invalid_header", &account_path);
    let r = method(&app, "PATCH", &account_path)
        .json(&json!({"status": "closed"}))
        .header("if-match", "\"2\"")
        .send()
        .await;
    assert_problem(&r, 409, "account_not_empty", &account_path);
    let r = method(&app, "DELETE", "/v1/accounts").send().await;
    assert_problem(&r, 405, "method_not_allowed", "/v1/accounts");
    let r = method(&app, "POST", "/v1/accounts").raw("{}").send().await;
    assert_problem(&r, 415, "unsupported_media_type", "/v1/accounts");
    let r = app
        .post(
            "/v1/accounts",
            json!({"owner_name": "x".repeat(70_000), "currency": "USD"}),
        )
        .send()
        .await;
    assert_problem(&r, 413, "payload_too_large", "/v1/accounts");
}

// ----- request ids -------------------------------------------------------------------------

#[tokio::test]
async fn valid_client_request_ids_are_echoed() {
    let app = crate::spawn().await;
    let ok = app
        .get("/v1/accounts")
        .header("x-request-id", "abc-123")
        .send()
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-request-id"), Some("abc-123"));
    let created = app
        .post(
            "/v1/accounts",
            json!({"owner_name": "A", "currency": "USD"}),
        )
        .header("x-request-id", "abc-123")
        .send()
        .await;
    assert_eq!(created.status, 201);
    assert_eq!(created.header("x-request-id"), Some("abc-123"));
    let missing = app
        .get(&format!("/v1/accounts/{}", Uuid::now_v7()))
        .header("x-request-id", "abc-123")
        .send()
        .await;
    assert_eq!(missing.header("x-request-id"), Some("abc-123"));
    assert_eq!(missing.json["request_id"], "abc-123");
    let unauthorized = app
        .get("/v1/accounts")
        .no_auth()
        .header("x-request-id", "abc-123")
        .send()
        .await;
    assert_problem(&unauthorized, 401, "unauthorized", "/v1/accounts");
    assert_eq!(unauthorized.json["request_id"], "abc-123");
    let malformed = raw_json(&app, "/v1/accounts", "{")
        .header("x-request-id", "abc-123")
        .send()
        .await;
    assert_problem(&malformed, 400, "malformed_json", "/v1/accounts");
    assert_eq!(malformed.json["request_id"], "abc-123");
    let route = app
        .get("/nope")
        .header("x-request-id", "abc-123")
        .send()
        .await;
    assert_problem(&route, 404, "not_found", "/nope");
    assert_eq!(route.json["request_id"], "abc-123");
    // 1 and 128 visible ASCII characters are the bounds.
    let max = "~".repeat(128);
    for id in ["x", max.as_str(), "!#$%&'()*+,-./:;<=>?@[]^_`{|}~"] {
        let r = app.get("/v1/nope").header("x-request-id", id).send().await;
        assert_eq!(r.header("x-request-id"), Some(id));
        assert_eq!(r.json["request_id"], json!(id));
    }
}

#[tokio::test]
async fn invalid_or_absent_request_ids_are_generated() {
    let app = crate::spawn().await;
    let too_long = "a".repeat(129);
    for bad in [too_long.as_str(), "abc 123", "tab\tid", "é-id", ""] {
        let ok = app
            .get("/v1/accounts")
            .header("x-request-id", bad)
            .send()
            .await;
        assert_eq!(ok.status, 200);
        let id = ok.header("x-request-id").expect("generated id");
        assert!(!id.is_empty());
        assert_ne!(id, bad);
        let err = app.get("/v1/nope").header("x-request-id", bad).send().await;
        assert_problem(&err, 404, "not_found", "/v1/nope");
        let id = err.header("x-request-id").expect("generated id");
        assert_ne!(id, bad);
        assert_eq!(err.json["request_id"], json!(id));
    }
    let a = app.get("/v1/accounts").send().await;
    let b = app.get("/v1/accounts").send().await;
    let (a, b) = (
        a.header("x-request-id").expect("id").to_string(),
        b.header("x-request-id").expect("id").to_string(),
    );
    assert!(!a.is_empty() && !b.is_empty());
    assert_ne!(a, b, "each request gets its own id");
    let err = app.get("/v1/accounts").no_auth().send().await;
    assert_problem(&err, 401, "unauthorized", "/v1/accounts");
    assert_ne!(err.header("x-request-id"), Some(a.as_str()));
    // Operational routes carry one too.
    let live = app.get("/health/live").no_auth().send().await;
    assert_eq!(live.status, 200);
    assert!(!live.header("x-request-id").expect("id").is_empty());
}

// ----- precedence --------------------------------------------------------------------------

#[tokio::test]
async fn request_errors_come_before_authentication() {
    let app = crate::spawn().await;
    // Malformed JSON without a key: 400, not 401.
    let r = raw_json(&app, "/v1/accounts", r#"{"owner_name":"#)
        .no_auth()
        .send()
        .await;
    assert_problem(&r, 400, "malformed_json", "/v1/accounts");
    let r = raw_json(&app, "/v1/accounts", r#"{"owner_name":"\ud800"}"#)
        .key("zeta_wrong")
        .send()
        .await;
    assert_problem(&r, 400, "malformed_json", "/v1/accounts");
    // Wrong media type or oversized body without a key: 415 / 413.
    let r = method(&app, "POST", "/v1/accounts")
        .raw(ACCOUNT)
        .header("content-type", "text/plain")
        .no_auth()
        .send()
        .await;
    assert_problem(&r, 415, "unsupported_media_type", "/v1/accounts");
    let r = app
        .post(
            "/v1/accounts",
            json!({"owner_name": "x".repeat(70_000), "currency": "USD"}),
        )
        .no_auth()
        .send()
        .await;
    assert_problem(&r, 413, "payload_too_large", "/v1/accounts");
    assert_eq!(account_count(&app).await, 0);
}

#[tokio::test]
async fn bad_headers_are_request_errors_before_authentication_and_validation() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 0).await;
    let path = format!("/v1/accounts/{id}");
    // A malformed If-Match is 400 invalid_header: it outranks 401 ...
    let r = method(&app, "PATCH", &path)
        .json(&json!({"owner_name": "X"}))
        .header("if-match", "abc")
        .no_auth()
        .send()
        .await;
    assert_problem(&r, 400, "invalid_header", &path);
    // ... and 422 validation errors, also those found while parsing (duplicate keys).
    let r = method(&app, "PATCH", &path)
        .raw(r#"{"owner_name":"X","owner_name":"Y"}"#)
        .header("content-type", "application/json")
        .header("if-match", "abc")
        .send()
        .await;
    assert_problem(&r, 400, "invalid_header", &path);
    let r = method(&app, "PATCH", &path)
        .json(&json!({"bogus": 1}))
        .header("if-match", "abc")
        .send()
        .await;
    assert_problem(&r, 400, "invalid_header", &path);
    // A malformed Idempotency-Key likewise outranks 401.
    let credit_path = format!("/v1/accounts/{id}/credits");
    let r = app
        .post(&credit_path, json!({"amount": 5}))
        .idempotency("has space")
        .no_auth()
        .send()
        .await;
    assert_problem(&r, 400, "invalid_header", &credit_path);
    let got = app.get(&path).send().await;
    assert_eq!(got.json["owner_name"], "Test Owner");
    assert_eq!(got.json["version"], json!(1));
}

#[tokio::test]
async fn authentication_comes_before_validation() {
    let app = crate::spawn().await;
    // Valid JSON, no key, invalid fields: 401.
    let r = app
        .post(
            "/v1/accounts",
            json!({"owner_name": "", "currency": "usd", "x": 1}),
        )
        .no_auth()
        .send()
        .await;
    assert_problem(&r, 401, "unauthorized", "/v1/accounts");
    assert_eq!(r.json.get("errors"), None);
    // Duplicate keys and NUL are 422s, so they rank after authentication too.
    let r = raw_json(
        &app,
        "/v1/accounts",
        r#"{"owner_name":"A","owner_name":"B"}"#,
    )
    .no_auth()
    .send()
    .await;
    assert_problem(&r, 401, "unauthorized", "/v1/accounts");
    let r = raw_json(
        &app,
        "/v1/accounts",
        r#"{"owner_name":"A\u0000","currency":"USD"}"#,
    )
    .key("zeta_wrong")
    .send()
    .await;
    assert_problem(&r, 401, "unauthorized", "/v1/accounts");
    let r = app.get("/v1/accounts?limit=abc").no_auth().send().await;
    assert_problem(&r, 401, "unauthorized", "/v1/accounts");
    assert_eq!(account_count(&app).await, 0);
}

/// Routes that take no query parameters refuse any (after authentication, like every 422),
/// and change nothing.
#[tokio::test]
async fn unknown_query_parameters_are_422_on_every_route() {
    let app = crate::spawn().await;
    let a = app.funded("USD", 100).await;
    let b = app.funded("USD", 0).await;
    let t = app
        .post(
            "/v1/transfers",
            json!({"from_account_id": a, "to_account_id": b, "amount": 10}),
        )
        .send()
        .await;
    assert_eq!(t.status, 201, "{}", t.json);
    let transfer = t.json["id"].as_str().expect("id").to_string();
    let leg = t.json["debit"]["id"].as_str().expect("id").to_string();
    let (viewer, key_id) = app.key_and_id("viewer", None).await;
    let accounts = account_count(&app).await;

    let credit = json!({"amount": 5});
    let cases = [
        ("GET", format!("/v1/accounts/{a}?foo=1"), None),
        (
            "POST",
            "/v1/accounts?foo=1".to_string(),
            Some(json!({"owner_name": "Q", "currency": "USD"})),
        ),
        (
            "POST",
            format!("/v1/accounts/{a}/credits?foo=1"),
            Some(credit.clone()),
        ),
        (
            "POST",
            format!("/v1/accounts/{a}/debits?foo=1"),
            Some(credit.clone()),
        ),
        ("GET", format!("/v1/transactions/{leg}?foo=1"), None),
        (
            "POST",
            format!("/v1/transactions/{leg}/reverse?foo=1"),
            None,
        ),
        ("GET", format!("/v1/transfers/{transfer}?foo=1"), None),
        (
            "POST",
            format!("/v1/transfers/{transfer}/reverse?foo=1"),
            None,
        ),
        (
            "POST",
            "/v1/transfers?foo=1".to_string(),
            Some(json!({"from_account_id": a, "to_account_id": b, "amount": 1})),
        ),
        (
            "POST",
            "/v1/transfers/batch?foo=1".to_string(),
            Some(json!({"transfers": [{"from_account_id": a, "to_account_id": b, "amount": 1}]})),
        ),
        ("DELETE", format!("/v1/api-keys/{key_id}?foo=1"), None),
    ];
    for (name, path, body) in cases {
        let request = || {
            let r = method(&app, name, &path);
            match &body {
                Some(body) => r.json(body),
                None => r,
            }
        };
        let r = request().send().await;
        let bare = path.split('?').next().expect("path");
        assert_problem(&r, 422, "validation_error", bare);
        assert_eq!(error_fields(&r), ["foo"], "{name} {path}");
        // A valid key comes first: without one, 401.
        let r = request().no_auth().send().await;
        assert_problem(&r, 401, "unauthorized", bare);
    }
    let r = app.get(&format!("/v1/accounts/{a}?")).send().await;
    assert_eq!(r.status, 200, "an empty query is no parameter: {}", r.json);

    // Nothing changed.
    assert_eq!(app.balance(&a).await, (90, 90));
    assert_eq!(app.balance(&b).await, (10, 10));
    assert_eq!(account_count(&app).await, accounts);
    let r = app
        .get(&format!("/v1/accounts/{a}"))
        .key(&viewer)
        .send()
        .await;
    assert_eq!(r.status, 200, "the key is not revoked: {}", r.json);
}

#[tokio::test]
async fn undecodable_path_id_is_404_but_only_after_authentication() {
    let app = crate::spawn().await;
    // `%FF` does not decode to UTF-8: a malformed id, so 404 for a valid key ...
    let path = "/v1/accounts/%FF";
    let r = app.get(path).send().await;
    assert_problem(&r, 404, "not_found", path);
    let r = app.get("/v1/accounts/abc").no_auth().send().await;
    assert_problem(&r, 401, "unauthorized", "/v1/accounts/abc");
    // ... and 401 without one (401 ranks before 404), like any other malformed id.
    let r = app.get(path).no_auth().send().await;
    assert_problem(&r, 401, "unauthorized", path);
}

#[tokio::test]
async fn validation_before_forbidden_before_not_found() {
    let app = crate::spawn().await;
    let viewer = app.key("viewer", None).await;
    // A viewer with invalid fields: 422 (validation before 403).
    let r = app
        .post("/v1/accounts", json!({"owner_name": "", "currency": "USD"}))
        .key(&viewer)
        .send()
        .await;
    assert_problem(&r, 422, "validation_error", "/v1/accounts");
    assert_eq!(error_fields(&r), vec!["owner_name"]);
    let unknown = Uuid::now_v7();
    let credit_path = format!("/v1/accounts/{unknown}/credits");
    let r = app
        .post(&credit_path, json!({"amount": 0}))
        .key(&viewer)
        .send()
        .await;
    assert_problem(&r, 422, "validation_error", &credit_path);
    assert_eq!(error_fields(&r), vec!["amount"]);
    // A viewer with a valid body on an unknown account: 403 (before 404).
    let r = app
        .post(&credit_path, json!({"amount": 5}))
        .key(&viewer)
        .send()
        .await;
    assert_problem(&r, 403, "forbidden", &credit_path);
    let r = app
        .post(
            "/v1/transfers",
            json!({"from_account_id": unknown, "to_account_id": Uuid::now_v7(), "amount": 5}),
        )
        .key(&viewer)
        .send()
        .await;
    assert_problem(&r, 403, "forbidden", "/v1/transfers");
    let patch_path = format!("/v1/accounts/{unknown}");
    let r = method(&app, "PATCH", &patch_path)
        .json(&json!({"owner_name": "X"}))
        .header("if-match", "\"1\"")
        .key(&viewer)
        .send()
        .await;
    assert_problem(&r, 403, "forbidden", &patch_path);
    // An operator with a valid body on a malformed path id: 404.
    let operator = app.key("operator", None).await;
    for path in ["/v1/accounts/abc/credits", "/v1/accounts/abc/debits"] {
        let r = app
            .post(path, json!({"amount": 5}))
            .key(&operator)
            .send()
            .await;
        assert_problem(&r, 404, "not_found", path);
    }
    let r = app
        .post(&credit_path, json!({"amount": 5}))
        .key(&operator)
        .send()
        .await;
    assert_problem(&r, 404, "not_found", &credit_path);
    let r = method(&app, "PATCH", "/v1/accounts/abc")
        .json(&json!({"owner_name": "X"}))
        .header("if-match", "\"1\"")
        .key(&operator)
        .send()
        .await;
    assert_problem(&r, 404, "not_found", "/v1/accounts/abc");
    // A 404 in the body (unknown account named in a transfer).
    let a = app.funded("USD", 10).await;
    let r = app
        .post(
            "/v1/transfers",
            json!({"from_account_id": a, "to_account_id": unknown, "amount": 5}),
        )
        .key(&operator)
        .send()
        .await;
    assert_problem(&r, 404, "not_found", "/v1/transfers");
    assert_eq!(app.balance(&a).await, (10, 10));
}

// ----- no leaks ----------------------------------------------------------------------------

#[tokio::test]
async fn error_bodies_leak_nothing_internal() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 5).await;
    let taken = app.get(&format!("/v1/accounts/{id}")).send().await.json["account_number"]
        .as_str()
        .expect("number")
        .to_string();
    let responses = vec![
        raw_json(&app, "/v1/accounts", "{\"a\":").send().await,
        raw_json(&app, "/v1/accounts", r#"{"a":"\ud800"}"#)
            .send()
            .await,
        app.post(
            "/v1/accounts",
            json!({"owner_name": "A", "currency": "USD", "account_number": taken}),
        )
        .send()
        .await,
        app.post(
            "/v1/accounts",
            json!({"owner_name": "A'; DROP TABLE accounts; --", "currency": "USD",
                   "account_number": "'; SELECT 1; --"}),
        )
        .send()
        .await,
        app.get("/v1/accounts?cursor=zz").send().await,
        app.get("/v1/accounts?status='%20OR%201=1").send().await,
        app.get("/v1/accounts/'%20OR%201=1").send().await,
        app.get(&format!(
            "/v1/accounts/{id}/balance?at=9999999-01-01T00:00:00Z"
        ))
        .send()
        .await,
        app.post(
            &format!("/v1/accounts/{id}/credits"),
            json!({"amount": 9_007_199_254_740_992_u64}),
        )
        .send()
        .await,
        app.post(&format!("/v1/accounts/{id}/debits"), json!({"amount": 50}))
            .send()
            .await,
        app.get("/v1/accounts").key("zeta_wrong").send().await,
        method(&app, "PUT", "/v1/transfers").send().await,
    ];
    let expected = [
        (400, "malformed_json"),
        (400, "malformed_json"),
        (409, "account_number_taken"),
        (422, "validation_error"),
        (422, "validation_error"),
        (422, "validation_error"),
        (404, "not_found"),
        (422, "validation_error"),
        (422, "validation_error"),
        (422, "insufficient_funds"),
        (401, "unauthorized"),
        (405, "method_not_allowed"),
    ];
    assert_eq!(responses.len(), expected.len());
    for (r, (status, code)) in responses.iter().zip(expected) {
        assert_eq!(r.status, status, "{}", r.json);
        assert_eq!(r.code(), code, "{}", r.json);
        r.assert_no_leak();
    }
    assert_eq!(app.balance(&id).await, (5, 5));
    assert_eq!(account_count(&app).await, 1);
}
