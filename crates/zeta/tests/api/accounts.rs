//! Accounts: create, read, list (filters and pagination), update (If-Match, freeze, close) and
//! the balance at an instant — exactly as API.md describes them.

use serde_json::{Value, json};
use uuid::Uuid;
use zeta_testkit::{TestApp, TestRequest, TestResponse};

// ----- helpers -----------------------------------------------------------------------------

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn is_micro_timestamp(s: &str) -> bool {
    let pattern = b"dddd-dd-ddTdd:dd:dd.ddddddZ";
    s.len() == pattern.len()
        && s.bytes().zip(pattern.iter()).all(|(c, p)| match p {
            b'd' => c.is_ascii_digit(),
            other => c == *other,
        })
}

/// `^[A-Z0-9]{8,34}$`.
fn is_account_number(s: &str) -> bool {
    (8..=34).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// Nothing internal leaks into a response body.
/// An error response with this status and code, as problem+json.
#[track_caller]
fn assert_problem(r: &TestResponse, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.json);
    assert_eq!(r.code(), code, "{}", r.json);
    assert_eq!(r.json["status"], json!(status));
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{}",
        r.json
    );
    r.assert_no_leak();
}

/// The `errors[].field` of a validation error.
#[track_caller]
fn error_fields(r: &TestResponse) -> Vec<String> {
    r.json["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors list: {}", r.json))
        .iter()
        .map(|e| e["field"].as_str().expect("field").to_string())
        .collect()
}

/// 422 `validation_error` naming exactly `fields`.
#[track_caller]
fn assert_invalid(r: &TestResponse, fields: &[&str]) {
    assert_problem(r, 422, "validation_error");
    assert_eq!(error_fields(r), fields, "{}", r.json);
}

fn patch<'a>(app: &'a TestApp, path: &str) -> TestRequest<'a> {
    app.req("PATCH".parse().expect("method"), path)
}

fn if_match(version: i64) -> String {
    format!("\"{version}\"")
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data: {page}"))
        .iter()
        .map(|a| a["id"].as_str().expect("id").to_string())
        .collect()
}

async fn create(app: &TestApp, body: Value) -> TestResponse {
    app.post("/v1/accounts", body).send().await
}

async fn version_of(app: &TestApp, id: &str) -> i64 {
    let r = app.get(&format!("/v1/accounts/{id}")).send().await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json["version"].as_i64().expect("version")
}

async fn credit(app: &TestApp, id: &str, amount: i64) -> TestResponse {
    app.post(
        &format!("/v1/accounts/{id}/credits"),
        json!({"amount": amount}),
    )
    .send()
    .await
}

// ----- POST /v1/accounts -------------------------------------------------------------------

#[tokio::test]
async fn create_returns_the_full_account_with_location_and_etag() {
    let app = crate::spawn().await;
    let r = create(
        &app,
        json!({"owner_name": "Ada Lovelace", "currency": "EUR"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let a = r.json.as_object().expect("an object");
    let mut keys: Vec<&str> = a.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "account_number",
            "available_balance",
            "balance",
            "created_at",
            "currency",
            "id",
            "metadata",
            "owner_name",
            "status",
            "updated_at",
            "version"
        ]
    );
    let id = r.id();
    let parsed = Uuid::try_parse(&id).expect("uuid id");
    assert_eq!(parsed.hyphenated().to_string(), id, "lowercase hyphenated");
    assert_eq!(parsed.get_version_num(), 7, "a v7 uuid");
    assert_eq!(r.json["owner_name"], "Ada Lovelace");
    assert_eq!(r.json["currency"], "EUR");
    assert_eq!(r.json["balance"], json!(0));
    assert_eq!(r.json["available_balance"], json!(0));
    assert_eq!(r.json["status"], "active");
    assert_eq!(r.json["version"], json!(1));
    assert_eq!(r.json["metadata"], json!({}));
    let number = r.json["account_number"].as_str().expect("account_number");
    assert!(is_account_number(number), "generated number {number:?}");
    for field in ["created_at", "updated_at"] {
        let t = r.json[field].as_str().expect("timestamp");
        assert!(is_micro_timestamp(t), "{field} = {t:?}");
    }
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/accounts/{id}").as_str())
    );
    assert_eq!(r.header("etag"), Some("\"1\""));

    // It reads back identically.
    let got = app.get(&format!("/v1/accounts/{id}")).send().await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json, r.json);
    app.assert_verified().await;
}

#[tokio::test]
async fn create_keeps_given_number_and_metadata_and_generates_unique_numbers() {
    let app = crate::spawn().await;
    let r = create(
        &app,
        json!({"owner_name": "Bob", "currency": "USD", "account_number": "GB29NWBK60161331926819",
               "metadata": {"tier": "gold", "n": [1, 2, {"x": null}]}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["account_number"], "GB29NWBK60161331926819");
    assert_eq!(
        r.json["metadata"],
        json!({"tier": "gold", "n": [1, 2, {"x": null}]})
    );
    // Boundary lengths 8 and 34 are accepted; metadata null counts as absent.
    let short = create(
        &app,
        json!({"owner_name": "C", "currency": "USD", "account_number": "12345678", "metadata": null}),
    )
    .await;
    assert_eq!(short.status, 201, "{}", short.json);
    assert_eq!(short.json["account_number"], "12345678");
    assert_eq!(short.json["metadata"], json!({}));
    let long_number = "A".repeat(34);
    let long = create(
        &app,
        json!({"owner_name": "D", "currency": "USD", "account_number": long_number}),
    )
    .await;
    assert_eq!(long.status, 201, "{}", long.json);
    assert_eq!(long.json["account_number"], json!(long_number));

    let g1 = app.account("USD").await;
    let g2 = app.account("USD").await;
    let n1 = g1["account_number"].as_str().expect("number");
    let n2 = g2["account_number"].as_str().expect("number");
    assert!(is_account_number(n1) && is_account_number(n2));
    assert_ne!(n1, n2, "generated numbers are unique");
}

#[tokio::test]
async fn taken_account_number_is_409_and_creates_nothing() {
    let app = crate::spawn().await;
    let first = create(
        &app,
        json!({"owner_name": "First", "currency": "USD", "account_number": "ZETA0001"}),
    )
    .await;
    assert_eq!(first.status, 201, "{}", first.json);
    let again = create(
        &app,
        json!({"owner_name": "Second", "currency": "EUR", "account_number": "ZETA0001"}),
    )
    .await;
    assert_problem(&again, 409, "account_number_taken");
    let list = app.get("/v1/accounts?account_number=ZETA0001").send().await;
    assert_eq!(list.status, 200);
    assert_eq!(ids(&list.json), vec![first.id()]);
    assert_eq!(list.json["data"][0]["owner_name"], "First");
    let all = app.get("/v1/accounts").send().await;
    assert_eq!(ids(&all.json).len(), 1, "nothing else was created");

    // Unique forever: a closed account's number stays taken.
    let closed = patch(&app, &format!("/v1/accounts/{}", first.id()))
        .json(&json!({"status": "closed"}))
        .header("if-match", "\"1\"")
        .send()
        .await;
    assert_eq!(closed.status, 200, "{}", closed.json);
    let reuse = create(
        &app,
        json!({"owner_name": "Third", "currency": "USD", "account_number": "ZETA0001"}),
    )
    .await;
    assert_problem(&reuse, 409, "account_number_taken");
    app.assert_verified().await;
}

#[tokio::test]
async fn owner_name_is_required_and_1_to_200_code_points() {
    let app = crate::spawn().await;
    let missing = create(&app, json!({"currency": "USD"})).await;
    assert_invalid(&missing, &["owner_name"]);
    let empty = create(&app, json!({"owner_name": "", "currency": "USD"})).await;
    assert_invalid(&empty, &["owner_name"]);
    let too_long = create(
        &app,
        json!({"owner_name": "a".repeat(201), "currency": "USD"}),
    )
    .await;
    assert_invalid(&too_long, &["owner_name"]);
    let not_string = create(&app, json!({"owner_name": 5, "currency": "USD"})).await;
    assert_invalid(&not_string, &["owner_name"]);
    let null = create(&app, json!({"owner_name": null, "currency": "USD"})).await;
    assert_invalid(&null, &["owner_name"]);

    // Lengths count code points: 200 two-byte characters (400 bytes) are fine.
    let accented = "é".repeat(200);
    let ok = create(&app, json!({"owner_name": accented, "currency": "USD"})).await;
    assert_eq!(ok.status, 201, "{}", ok.json);
    assert_eq!(ok.json["owner_name"], json!(accented));
    let over = create(
        &app,
        json!({"owner_name": "é".repeat(201), "currency": "USD"}),
    )
    .await;
    assert_invalid(&over, &["owner_name"]);
    let one = create(&app, json!({"owner_name": "X", "currency": "USD"})).await;
    assert_eq!(one.status, 201, "{}", one.json);
    let list = app.get("/v1/accounts").send().await;
    assert_eq!(ids(&list.json), vec![ok.id(), one.id()], "only valid ones");
}

#[tokio::test]
async fn currency_must_be_three_upper_case_letters() {
    let app = crate::spawn().await;
    for bad in [
        json!("usd"),
        json!("US"),
        json!("USDX"),
        json!(123),
        json!("U$D"),
        json!(""),
        json!(null),
    ] {
        let r = create(&app, json!({"owner_name": "Ann", "currency": bad})).await;
        assert_invalid(&r, &["currency"]);
    }
    let missing = create(&app, json!({"owner_name": "Ann"})).await;
    assert_invalid(&missing, &["currency"]);
    let ok = create(&app, json!({"owner_name": "Ann", "currency": "JPY"})).await;
    assert_eq!(ok.status, 201, "{}", ok.json);
    assert_eq!(ok.json["currency"], "JPY");
}

#[tokio::test]
async fn account_number_must_be_8_to_34_of_upper_case_letters_and_digits() {
    let app = crate::spawn().await;
    let too_long = "A".repeat(35);
    for bad in [
        json!("1234567"),
        json!(too_long),
        json!("abcdefgh1"),
        json!("ABCD-12345"),
        json!("ABCD 12345"),
        json!("ÄBCDEFGH"),
        json!(12_345_678),
        json!(""),
    ] {
        let r = create(
            &app,
            json!({"owner_name": "Ann", "currency": "USD", "account_number": bad}),
        )
        .await;
        assert_invalid(&r, &["account_number"]);
    }
    let list = app.get("/v1/accounts").send().await;
    assert_eq!(ids(&list.json), Vec::<String>::new(), "nothing created");
}

#[tokio::test]
async fn metadata_must_be_an_object_of_at_most_4096_bytes() {
    let app = crate::spawn().await;
    for bad in [json!([1]), json!("x"), json!(5), json!(true)] {
        let r = create(
            &app,
            json!({"owner_name": "Ann", "currency": "USD", "metadata": bad}),
        )
        .await;
        assert_invalid(&r, &["metadata"]);
    }
    // {"k":"<n x>"} is n + 8 bytes of compact JSON.
    let exact = json!({"k": "x".repeat(4088)});
    assert_eq!(serde_json::to_vec(&exact).expect("json").len(), 4096);
    let ok = create(
        &app,
        json!({"owner_name": "Ann", "currency": "USD", "metadata": exact}),
    )
    .await;
    assert_eq!(ok.status, 201, "{}", ok.json);
    assert_eq!(ok.json["metadata"], exact);
    let over = json!({"k": "x".repeat(4089)});
    let r = create(
        &app,
        json!({"owner_name": "Ann", "currency": "USD", "metadata": over}),
    )
    .await;
    assert_invalid(&r, &["metadata"]);
    // The size is measured in UTF-8 bytes: 2045 two-byte characters + 8 = 4098 bytes.
    let multibyte = json!({"k": "é".repeat(2045)});
    let r = create(
        &app,
        json!({"owner_name": "Ann", "currency": "USD", "metadata": multibyte}),
    )
    .await;
    assert_invalid(&r, &["metadata"]);
    // Whitespace in the request does not count: the compact form does.
    let spaced = format!(
        "{{\"owner_name\": \"Ann\", \"currency\": \"USD\", \"metadata\": {{ \"k\" :   \"{}\" }} }}",
        "y".repeat(4088)
    );
    let r = app
        .req("POST".parse().expect("method"), "/v1/accounts")
        .raw(spaced)
        .header("content-type", "application/json")
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
}

#[tokio::test]
async fn unknown_fields_duplicate_keys_and_nul_are_refused() {
    let app = crate::spawn().await;
    let unknown = create(
        &app,
        json!({"owner_name": "Ann", "currency": "USD", "balance": 1000}),
    )
    .await;
    assert_invalid(&unknown, &["balance"]);
    let raw = |body: &str| {
        app.req("POST".parse().expect("method"), "/v1/accounts")
            .raw(body.to_string())
            .header("content-type", "application/json")
    };
    let dup = raw(r#"{"owner_name":"Ann","currency":"USD","owner_name":"Eve"}"#)
        .send()
        .await;
    assert_invalid(&dup, &["owner_name"]);
    let dup_nested = raw(r#"{"owner_name":"Ann","currency":"USD","metadata":{"a":1,"a":2}}"#)
        .send()
        .await;
    assert_invalid(&dup_nested, &["metadata.a"]);
    let nul = raw(r#"{"owner_name":"An\u0000n","currency":"USD"}"#)
        .send()
        .await;
    assert_invalid(&nul, &["owner_name"]);
    let nul_in_metadata = raw(r#"{"owner_name":"Ann","currency":"USD","metadata":{"k":"\u0000"}}"#)
        .send()
        .await;
    assert_invalid(&nul_in_metadata, &["metadata.k"]);
    let list = app.get("/v1/accounts").send().await;
    assert_eq!(ids(&list.json), Vec::<String>::new(), "nothing created");
}

#[tokio::test]
async fn viewer_and_scoped_keys_cannot_create_accounts() {
    let app = crate::spawn().await;
    let own = app.account("USD").await;
    let own_id = Uuid::try_parse(own["id"].as_str().expect("id")).expect("uuid");
    let viewer = app.key("viewer", None).await;
    let r = app
        .post(
            "/v1/accounts",
            json!({"owner_name": "V", "currency": "USD"}),
        )
        .key(&viewer)
        .send()
        .await;
    assert_problem(&r, 403, "forbidden");
    let scoped_operator = app.key("operator", Some(vec![own_id])).await;
    let r = app
        .post(
            "/v1/accounts",
            json!({"owner_name": "S", "currency": "USD"}),
        )
        .key(&scoped_operator)
        .send()
        .await;
    assert_problem(&r, 403, "forbidden");
    let scoped_admin = app.key("admin", Some(vec![own_id])).await;
    let r = app
        .post(
            "/v1/accounts",
            json!({"owner_name": "S", "currency": "USD"}),
        )
        .key(&scoped_admin)
        .send()
        .await;
    assert_problem(&r, 403, "forbidden");
    // An unscoped operator may.
    let operator = app.key("operator", None).await;
    let r = app
        .post(
            "/v1/accounts",
            json!({"owner_name": "O", "currency": "USD"}),
        )
        .key(&operator)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let list = app.get("/v1/accounts").send().await;
    assert_eq!(ids(&list.json).len(), 2, "the refused ones created nothing");
}

// ----- GET /v1/accounts/{id} ---------------------------------------------------------------

#[tokio::test]
async fn get_account_has_etag_of_its_version() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 0).await;
    let r = app.get(&format!("/v1/accounts/{id}")).send().await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.header("etag"), Some("\"1\""));
    assert_eq!(r.json["id"], json!(id));
    assert_eq!(r.json["version"], json!(1));
    assert_eq!(credit(&app, &id, 250).await.status, 201);
    let r = app.get(&format!("/v1/accounts/{id}")).send().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["version"], json!(2), "a balance change is a change");
    assert_eq!(r.json["balance"], json!(250));
    assert_eq!(r.json["available_balance"], json!(250));
    assert_eq!(r.header("etag"), Some("\"2\""));
    assert_eq!(
        r.header("etag"),
        Some(format!("\"{}\"", r.json["version"]).as_str())
    );
    // A viewer may read.
    let viewer = app.key("viewer", None).await;
    let r = app
        .get(&format!("/v1/accounts/{id}"))
        .key(&viewer)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["balance"], json!(250));
}

#[tokio::test]
async fn get_unknown_or_malformed_account_is_404() {
    let app = crate::spawn().await;
    let r = app
        .get(&format!("/v1/accounts/{}", Uuid::now_v7()))
        .send()
        .await;
    assert_problem(&r, 404, "not_found");
    for bad in ["abc", "123", "00000000-0000-0000-0000-00000000000g"] {
        let r = app.get(&format!("/v1/accounts/{bad}")).send().await;
        assert_problem(&r, 404, "not_found");
    }
}

#[tokio::test]
async fn scoped_key_sees_only_its_accounts() {
    let app = crate::spawn().await;
    let mine = app.funded("USD", 10).await;
    let other = app.funded("USD", 20).await;
    let key = app
        .key("viewer", Some(vec![Uuid::try_parse(&mine).expect("uuid")]))
        .await;
    let r = app
        .get(&format!("/v1/accounts/{mine}"))
        .key(&key)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["balance"], json!(10));
    let r = app
        .get(&format!("/v1/accounts/{other}"))
        .key(&key)
        .send()
        .await;
    assert_problem(&r, 404, "not_found");
    let r = app
        .get(&format!("/v1/accounts/{other}/balance"))
        .key(&key)
        .send()
        .await;
    assert_problem(&r, 404, "not_found");
    // A scoped operator cannot change an account it does not see (404, not 412/428).
    let operator = app
        .key(
            "operator",
            Some(vec![Uuid::try_parse(&mine).expect("uuid")]),
        )
        .await;
    let r = patch(&app, &format!("/v1/accounts/{other}"))
        .key(&operator)
        .json(&json!({"owner_name": "Mallory"}))
        .header("if-match", "\"2\"")
        .send()
        .await;
    assert_problem(&r, 404, "not_found");
    let r = patch(&app, &format!("/v1/accounts/{other}"))
        .key(&operator)
        .json(&json!({"owner_name": "Mallory"}))
        .send()
        .await;
    assert_problem(&r, 404, "not_found");
    let owner = app.get(&format!("/v1/accounts/{other}")).send().await;
    assert_eq!(owner.json["owner_name"], "Test Owner");
}

// ----- GET /v1/accounts --------------------------------------------------------------------

#[tokio::test]
async fn list_is_oldest_first_and_paginates_without_duplicates() {
    let app = crate::spawn().await;
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(app.funded("USD", 0).await);
    }
    let all = app.get("/v1/accounts").send().await;
    assert_eq!(all.status, 200, "{}", all.json);
    assert_eq!(ids(&all.json), created, "oldest first");
    assert_eq!(all.json["next_cursor"], Value::Null);

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut path = "/v1/accounts?limit=2".to_string();
    loop {
        let page = app.get(&path).send().await;
        assert_eq!(page.status, 200, "{}", page.json);
        let page_ids = ids(&page.json);
        sizes.push(page_ids.len());
        seen.extend(page_ids);
        match &page.json["next_cursor"] {
            Value::Null => break,
            Value::String(cursor) => path = format!("/v1/accounts?limit=2&cursor={cursor}"),
            other => panic!("next_cursor must be a string or null: {other}"),
        }
        assert!(sizes.len() <= 3, "pagination does not end");
    }
    assert_eq!(sizes, vec![2, 2, 1]);
    assert_eq!(seen, created, "all five, in order, no duplicates");

    let exactly = app.get("/v1/accounts?limit=5").send().await;
    assert_eq!(ids(&exactly.json), created);
    assert_eq!(
        exactly.json["next_cursor"],
        Value::Null,
        "no empty last page"
    );
    let max = app.get("/v1/accounts?limit=200").send().await;
    assert_eq!(max.status, 200);
    let min = app.get("/v1/accounts?limit=1").send().await;
    assert_eq!(ids(&min.json), vec![created[0].clone()]);
    assert!(min.json["next_cursor"].is_string());
}

#[tokio::test]
async fn list_filters_by_account_number_and_status() {
    let app = crate::spawn().await;
    let a = create(
        &app,
        json!({"owner_name": "A", "currency": "USD", "account_number": "NUMBER0001"}),
    )
    .await;
    let b = create(
        &app,
        json!({"owner_name": "B", "currency": "USD", "account_number": "NUMBER0002"}),
    )
    .await;
    let c = create(&app, json!({"owner_name": "C", "currency": "EUR"})).await;
    assert_eq!((a.status, b.status, c.status), (201, 201, 201));
    let by_number = app
        .get("/v1/accounts?account_number=NUMBER0002")
        .send()
        .await;
    assert_eq!(by_number.status, 200);
    assert_eq!(ids(&by_number.json), vec![b.id()]);
    let none = app
        .get("/v1/accounts?account_number=NUMBER9999")
        .send()
        .await;
    assert_eq!(none.status, 200);
    assert_eq!(ids(&none.json), Vec::<String>::new());
    assert_eq!(none.json["next_cursor"], Value::Null);

    for id in [a.id(), c.id()] {
        let r = patch(&app, &format!("/v1/accounts/{id}"))
            .json(&json!({"status": "frozen"}))
            .header("if-match", "\"1\"")
            .send()
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
    }
    let frozen = app.get("/v1/accounts?status=frozen").send().await;
    assert_eq!(frozen.status, 200);
    assert_eq!(ids(&frozen.json), vec![a.id(), c.id()]);
    let active = app.get("/v1/accounts?status=active").send().await;
    assert_eq!(ids(&active.json), vec![b.id()]);
    let closed = app.get("/v1/accounts?status=closed").send().await;
    assert_eq!(ids(&closed.json), Vec::<String>::new());
    let both = app
        .get("/v1/accounts?status=frozen&account_number=NUMBER0001")
        .send()
        .await;
    assert_eq!(ids(&both.json), vec![a.id()]);
}

#[tokio::test]
async fn list_refuses_bad_query_parameters() {
    let app = crate::spawn().await;
    app.account("USD").await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=1.5", "limit"),
        ("status=bogus", "status"),
        ("status=FROZEN", "status"),
        ("cursor=garbage", "cursor"),
        ("cursor=", "cursor"),
        ("foo=1", "foo"),
    ] {
        let r = app.get(&format!("/v1/accounts?{query}")).send().await;
        assert_invalid(&r, &[field]);
    }
    let dup = app.get("/v1/accounts?limit=1&limit=2").send().await;
    assert_problem(&dup, 422, "validation_error");
    let fields = error_fields(&dup);
    assert!(
        !fields.is_empty() && fields.iter().all(|f| f == "limit"),
        "{}",
        dup.json
    );
    // A cursor of another list is not an account cursor.
    let id = app.funded("USD", 5).await;
    let second = credit(&app, &id, 6).await;
    assert_eq!(second.status, 201);
    let tx_page = app
        .get(&format!("/v1/accounts/{id}/transactions?limit=1"))
        .send()
        .await;
    assert_eq!(tx_page.status, 200, "{}", tx_page.json);
    let cursor = tx_page.json["next_cursor"].as_str().expect("cursor");
    let r = app
        .get(&format!("/v1/accounts?cursor={cursor}"))
        .send()
        .await;
    assert_invalid(&r, &["cursor"]);
}

#[tokio::test]
async fn scoped_key_lists_only_its_accounts() {
    let app = crate::spawn().await;
    let a = app.funded("USD", 0).await;
    let b = app.funded("USD", 0).await;
    let c = app.funded("USD", 0).await;
    let scope = vec![
        Uuid::try_parse(&c).expect("uuid"),
        Uuid::try_parse(&a).expect("uuid"),
    ];
    let key = app.key("viewer", Some(scope)).await;
    let r = app.get("/v1/accounts").key(&key).send().await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(ids(&r.json), vec![a.clone(), c.clone()]);
    let page = app.get("/v1/accounts?limit=1").key(&key).send().await;
    assert_eq!(ids(&page.json), vec![a.clone()]);
    let cursor = page.json["next_cursor"].as_str().expect("cursor");
    let page = app
        .get(&format!("/v1/accounts?limit=1&cursor={cursor}"))
        .key(&key)
        .send()
        .await;
    assert_eq!(ids(&page.json), vec![c.clone()]);
    assert_eq!(page.json["next_cursor"], Value::Null);
    // Filtering by another account's number finds nothing.
    let b_number = app.get(&format!("/v1/accounts/{b}")).send().await.json["account_number"]
        .as_str()
        .expect("number")
        .to_string();
    let r = app
        .get(&format!("/v1/accounts?account_number={b_number}"))
        .key(&key)
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(ids(&r.json), Vec::<String>::new());
}

// ----- PATCH /v1/accounts/{id} -------------------------------------------------------------

#[tokio::test]
async fn patch_needs_a_valid_current_if_match() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 0).await;
    let path = format!("/v1/accounts/{id}");
    let body = json!({"owner_name": "New Name"});
    let none = patch(&app, &path).json(&body).send().await;
    assert_problem(&none, 428, "precondition_required");
    let stale = patch(&app, &path)
        .json(&body)
        .header("if-match", "\"7\"")
        .send()
        .await;
    assert_problem(&stale, 412, "version_mismatch");
    for bad in ["1", "abc", "\"abc\"", "W/\"1\"", "\"1", "*", ""] {
        let r = patch(&app, &path)
            .json(&body)
            .header("if-match", bad)
            .send()
            .await;
        assert_problem(&r, 400, "invalid_header");
    }
    let r = app.get(&path).send().await;
    assert_eq!(r.json["owner_name"], "Test Owner", "nothing changed");
    assert_eq!(r.json["version"], json!(1));

    let ok = patch(&app, &path)
        .json(&body)
        .header("if-match", "\"1\"")
        .send()
        .await;
    assert_eq!(ok.status, 200, "{}", ok.json);
    // The version moved on: "1" is now stale.
    let stale = patch(&app, &path)
        .json(&json!({"owner_name": "Other"}))
        .header("if-match", "\"1\"")
        .send()
        .await;
    assert_problem(&stale, 412, "version_mismatch");
    assert_eq!(app.get(&path).send().await.json["owner_name"], "New Name");
}

#[tokio::test]
async fn patch_owner_name_bumps_version_and_etag() {
    let app = crate::spawn().await;
    let created = app.account("USD").await;
    let id = created["id"].as_str().expect("id");
    let path = format!("/v1/accounts/{id}");
    let r = patch(&app, &path)
        .json(&json!({"owner_name": "Grace Hopper"}))
        .header("if-match", "\"1\"")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["owner_name"], "Grace Hopper");
    assert_eq!(r.json["version"], json!(2));
    assert_eq!(r.header("etag"), Some("\"2\""));
    assert_eq!(r.json["id"], created["id"]);
    assert_eq!(r.json["account_number"], created["account_number"]);
    assert_eq!(r.json["currency"], "USD");
    assert_eq!(r.json["status"], "active");
    assert_eq!(r.json["balance"], json!(0));
    assert_eq!(r.json["metadata"], json!({}));
    assert_eq!(r.json["created_at"], created["created_at"]);
    let updated = r.json["updated_at"].as_str().expect("updated_at");
    assert!(is_micro_timestamp(updated));
    assert!(
        updated >= created["updated_at"].as_str().expect("updated_at"),
        "updated_at does not go back"
    );
    let got = app.get(&path).send().await;
    assert_eq!(got.json, r.json);
    assert_eq!(got.header("etag"), Some("\"2\""));
    // A second change, with the new ETag.
    let r = patch(&app, &path)
        .json(&json!({"owner_name": "G. Hopper"}))
        .header("if-match", "\"2\"")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["version"], json!(3));
    assert_eq!(r.header("etag"), Some("\"3\""));
}

#[tokio::test]
async fn patch_replaces_metadata_as_a_whole() {
    let app = crate::spawn().await;
    let r = create(
        &app,
        json!({"owner_name": "M", "currency": "USD", "metadata": {"a": 1, "b": {"c": 2}}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let path = format!("/v1/accounts/{}", r.id());
    let r = patch(&app, &path)
        .json(&json!({"metadata": {"b": {"d": 3}}}))
        .header("if-match", "\"1\"")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["metadata"], json!({"b": {"d": 3}}), "not merged");
    assert_eq!(r.json["version"], json!(2));
    assert_eq!(r.json["owner_name"], "M", "untouched");
    let r = patch(&app, &path)
        .json(&json!({"metadata": {}}))
        .header("if-match", "\"2\"")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["metadata"], json!({}));
    assert_eq!(app.get(&path).send().await.json["metadata"], json!({}));
    let big = patch(&app, &path)
        .json(&json!({"metadata": {"k": "x".repeat(4089)}}))
        .header("if-match", "\"3\"")
        .send()
        .await;
    assert_invalid(&big, &["metadata"]);
    let not_object = patch(&app, &path)
        .json(&json!({"metadata": [1]}))
        .header("if-match", "\"3\"")
        .send()
        .await;
    assert_invalid(&not_object, &["metadata"]);
}

#[tokio::test]
async fn frozen_account_refuses_money_until_unfrozen() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 1000).await;
    let other = app.funded("USD", 1000).await;
    let path = format!("/v1/accounts/{id}");
    let version = version_of(&app, &id).await;
    assert_eq!(version, 2);
    let r = patch(&app, &path)
        .json(&json!({"status": "frozen"}))
        .header("if-match", &if_match(version))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["status"], "frozen");
    assert_eq!(r.json["version"], json!(3));

    let c = credit(&app, &id, 5).await;
    assert_problem(&c, 422, "account_not_active");
    let d = app
        .post(&format!("{path}/debits"), json!({"amount": 5}))
        .send()
        .await;
    assert_problem(&d, 422, "account_not_active");
    let hold = app
        .post(
            &format!("{path}/debits"),
            json!({"amount": 5, "hold": true}),
        )
        .send()
        .await;
    assert_problem(&hold, 422, "account_not_active");
    let out = app
        .post(
            "/v1/transfers",
            json!({"from_account_id": id, "to_account_id": other, "amount": 5}),
        )
        .send()
        .await;
    assert_problem(&out, 422, "account_not_active");
    let into = app
        .post(
            "/v1/transfers",
            json!({"from_account_id": other, "to_account_id": id, "amount": 5}),
        )
        .send()
        .await;
    assert_problem(&into, 422, "account_not_active");
    assert_eq!(app.balance(&id).await, (1000, 1000));
    assert_eq!(app.balance(&other).await, (1000, 1000));
    let txs = app.get(&format!("{path}/transactions")).send().await;
    assert_eq!(
        txs.json["data"].as_array().map(Vec::len),
        Some(1),
        "refusals record nothing"
    );
    assert_eq!(version_of(&app, &id).await, 3);

    let r = patch(&app, &path)
        .json(&json!({"status": "active"}))
        .header("if-match", "\"3\"")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["status"], "active");
    assert_eq!(r.json["version"], json!(4));
    let c = credit(&app, &id, 5).await;
    assert_eq!(c.status, 201, "{}", c.json);
    let d = app
        .post(&format!("{path}/debits"), json!({"amount": 10}))
        .send()
        .await;
    assert_eq!(d.status, 201, "{}", d.json);
    let t = app
        .post(
            "/v1/transfers",
            json!({"from_account_id": id, "to_account_id": other, "amount": 95}),
        )
        .send()
        .await;
    assert_eq!(t.status, 201, "{}", t.json);
    assert_eq!(app.balance(&id).await, (900, 900));
    assert_eq!(app.balance(&other).await, (1095, 1095));
    app.assert_verified().await;
}

#[tokio::test]
async fn closing_needs_a_zero_balance_and_is_final() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 300).await;
    let path = format!("/v1/accounts/{id}");
    let r = patch(&app, &path)
        .json(&json!({"status": "closed"}))
        .header("if-match", "\"2\"")
        .send()
        .await;
    assert_problem(&r, 409, "account_not_empty");
    let got = app.get(&path).send().await;
    assert_eq!(got.json["status"], "active");
    assert_eq!(got.json["version"], json!(2));

    let d = app
        .post(&format!("{path}/debits"), json!({"amount": 300}))
        .send()
        .await;
    assert_eq!(d.status, 201, "{}", d.json);
    let r = patch(&app, &path)
        .json(&json!({"status": "closed"}))
        .header("if-match", "\"3\"")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["status"], "closed");
    assert_eq!(r.json["balance"], json!(0));
    assert_eq!(r.json["version"], json!(4));
    assert_eq!(r.header("etag"), Some("\"4\""));

    for body in [
        json!({"status": "active"}),
        json!({"status": "frozen"}),
        json!({"status": "closed"}),
        json!({"owner_name": "Reopened"}),
        json!({"metadata": {"a": 1}}),
    ] {
        let r = patch(&app, &path)
            .json(&body)
            .header("if-match", "\"4\"")
            .send()
            .await;
        assert_problem(&r, 409, "invalid_state");
    }
    let c = credit(&app, &id, 1).await;
    assert_problem(&c, 422, "account_not_active");
    let got = app.get(&path).send().await;
    assert_eq!(got.json["status"], "closed");
    assert_eq!(got.json["owner_name"], "Test Owner");
    assert_eq!(got.json["version"], json!(4));
    app.assert_verified().await;
}

#[tokio::test]
async fn patch_validates_its_fields() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 0).await;
    let path = format!("/v1/accounts/{id}");
    for (body, field) in [
        (json!({"balance": 5}), "balance"),
        (json!({"currency": "EUR"}), "currency"),
        (json!({"owner_name": null}), "owner_name"),
        (json!({"owner_name": ""}), "owner_name"),
        (json!({"owner_name": "a".repeat(201)}), "owner_name"),
        (json!({"status": "bogus"}), "status"),
        (json!({"status": null}), "status"),
        (json!({"status": 1}), "status"),
        (json!({"metadata": "x"}), "metadata"),
    ] {
        let r = patch(&app, &path)
            .json(&body)
            .header("if-match", "\"1\"")
            .send()
            .await;
        assert_invalid(&r, &[field]);
        // Validation comes before the precondition.
        let r = patch(&app, &path).json(&body).send().await;
        assert_invalid(&r, &[field]);
    }
    let got = app.get(&path).send().await;
    assert_eq!(got.json["version"], json!(1), "nothing changed");
    assert_eq!(got.json["owner_name"], "Test Owner");
    assert_eq!(got.json["status"], "active");
}

#[tokio::test]
async fn patch_unknown_account_is_404_and_viewer_is_403() {
    let app = crate::spawn().await;
    let unknown = format!("/v1/accounts/{}", Uuid::now_v7());
    let body = json!({"owner_name": "X"});
    let r = patch(&app, &unknown)
        .json(&body)
        .header("if-match", "\"1\"")
        .send()
        .await;
    assert_problem(&r, 404, "not_found");
    let r = patch(&app, &unknown).json(&body).send().await;
    assert_problem(&r, 404, "not_found");
    let r = patch(&app, "/v1/accounts/abc")
        .json(&body)
        .header("if-match", "\"1\"")
        .send()
        .await;
    assert_problem(&r, 404, "not_found");

    let id = app.funded("USD", 0).await;
    let viewer = app.key("viewer", None).await;
    let r = patch(&app, &format!("/v1/accounts/{id}"))
        .json(&body)
        .header("if-match", "\"1\"")
        .key(&viewer)
        .send()
        .await;
    assert_problem(&r, 403, "forbidden");
    let got = app.get(&format!("/v1/accounts/{id}")).send().await;
    assert_eq!(got.json["owner_name"], "Test Owner");
    assert_eq!(got.json["version"], json!(1));
    // An operator may.
    let operator = app.key("operator", None).await;
    let r = patch(&app, &format!("/v1/accounts/{id}"))
        .json(&body)
        .header("if-match", "\"1\"")
        .key(&operator)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["owner_name"], "X");
}

// ----- GET /v1/accounts/{id}/balance -------------------------------------------------------

#[tokio::test]
async fn balance_now_is_the_current_balance() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 0).await;
    let r = app.get(&format!("/v1/accounts/{id}/balance")).send().await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["account_id"], json!(id));
    assert_eq!(r.json["balance"], json!(0));
    let c = credit(&app, &id, 1200).await;
    assert_eq!(c.status, 201);
    let d = app
        .post(&format!("/v1/accounts/{id}/debits"), json!({"amount": 200}))
        .send()
        .await;
    assert_eq!(d.status, 201);
    // A hold lowers the available balance only.
    let hold = app
        .post(
            &format!("/v1/accounts/{id}/debits"),
            json!({"amount": 100, "hold": true}),
        )
        .send()
        .await;
    assert_eq!(hold.status, 201, "{}", hold.json);
    let r = app.get(&format!("/v1/accounts/{id}/balance")).send().await;
    assert_eq!(r.status, 200, "{}", r.json);
    let obj = r.json.as_object().expect("object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["account_id", "as_of", "balance"]);
    assert_eq!(r.json["account_id"], json!(id));
    assert_eq!(r.json["balance"], json!(1000));
    let as_of = r.json["as_of"].as_str().expect("as_of");
    assert!(is_micro_timestamp(as_of), "{as_of}");
    let last_posted = d.json["posted_at"].as_str().expect("posted_at");
    assert!(
        as_of >= last_posted,
        "as_of is now: {as_of} < {last_posted}"
    );
}

#[tokio::test]
async fn balance_at_an_instant() {
    let app = crate::spawn().await;
    let account = app.account("USD").await;
    let id = account["id"].as_str().expect("id").to_string();
    let created_at = account["created_at"].as_str().expect("created_at");
    let first = credit(&app, &id, 500).await;
    assert_eq!(first.status, 201, "{}", first.json);
    let second = credit(&app, &id, 250).await;
    assert_eq!(second.status, 201, "{}", second.json);
    let p1 = first.json["posted_at"].as_str().expect("posted_at");
    let p2 = second.json["posted_at"].as_str().expect("posted_at");
    assert!(is_micro_timestamp(p1) && is_micro_timestamp(p2));
    assert!(p1 < p2, "the credits are ordered in time: {p1} {p2}");
    let at = |instant: &str| format!("/v1/accounts/{id}/balance?at={instant}");

    // Before the first movement.
    let r = app.get(&at(created_at)).send().await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["balance"], json!(0));
    assert_eq!(r.json["as_of"], json!(created_at));
    let r = app.get(&at("2000-01-01T00:00:00Z")).send().await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["balance"], json!(0));
    assert_eq!(r.json["as_of"], "2000-01-01T00:00:00.000000Z");
    assert_eq!(r.json["account_id"], json!(id));

    // At the first credit's posted_at (posted_at <= at): after the first, before the second.
    let r = app.get(&at(p1)).send().await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["balance"], json!(500));
    assert_eq!(r.json["as_of"], json!(p1));
    assert_eq!(first.json["balance_after"], json!(500));

    // At the second: both.
    let r = app.get(&at(p2)).send().await;
    assert_eq!(r.json["balance"], json!(750));
    assert_eq!(r.json["as_of"], json!(p2));

    // A future instant: the current balance.
    let r = app.get(&at("2999-01-01T00:00:00Z")).send().await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["balance"], json!(750));
    assert_eq!(r.json["as_of"], "2999-01-01T00:00:00.000000Z");

    // Another offset is echoed as the same instant in UTC, with microseconds.
    let r = app.get(&at("2000-01-01T02:30:00.5%2B02:00")).send().await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["as_of"], "2000-01-01T00:30:00.500000Z");
    assert_eq!(r.json["balance"], json!(0));
}

#[tokio::test]
async fn balance_refuses_bad_instants_and_unknown_accounts() {
    let app = crate::spawn().await;
    let id = app.funded("USD", 10).await;
    for query in [
        "at=garbage",
        "at=2026-13-01T00:00:00Z",
        "at=2026-01-01",
        "at=",
    ] {
        let r = app
            .get(&format!("/v1/accounts/{id}/balance?{query}"))
            .send()
            .await;
        assert_invalid(&r, &["at"]);
    }
    let r = app
        .get(&format!(
            "/v1/accounts/{id}/balance?since=2026-01-01T00:00:00Z"
        ))
        .send()
        .await;
    assert_invalid(&r, &["since"]);
    let r = app
        .get(&format!("/v1/accounts/{}/balance", Uuid::now_v7()))
        .send()
        .await;
    assert_problem(&r, 404, "not_found");
    let r = app.get("/v1/accounts/abc/balance").send().await;
    assert_problem(&r, 404, "not_found");
    let r = app
        .get(&format!(
            "/v1/accounts/{}/balance?at=2026-01-01T00:00:00Z",
            Uuid::now_v7()
        ))
        .send()
        .await;
    assert_problem(&r, 404, "not_found");
}

/// Numbers the databases could not give back unchanged are refused up front; they must never
/// create an account that then cannot be read.
#[tokio::test]
async fn metadata_numbers_must_round_trip() {
    let app = crate::spawn().await;
    for bad in [
        "1.7976931348623157e308",
        "-1e301",
        "-0.0",
        "2e-301",
        "-5e-310",
    ] {
        let body = format!(
            r#"{{"owner_name":"m","currency":"EUR","metadata":{{"x":{{"y":[1,{bad}]}}}}}}"#
        );
        let r = app
            .req(axum::http::Method::POST, "/v1/accounts")
            .header("content-type", "application/json")
            .raw(body)
            .send()
            .await;
        assert_eq!(r.status, 422, "{bad}: {}", r.json);
        assert_eq!(r.code(), "validation_error");
        assert_eq!(r.json["errors"][0]["field"], "metadata.x.y.1", "{bad}");
    }
    let ok = r#"{"owner_name":"m","currency":"EUR","metadata":{"a":1e300,"b":-2.5e-300,"c":0.1,"d":0,"e":18446744073709551615}}"#;
    let r = app
        .req(axum::http::Method::POST, "/v1/accounts")
        .header("content-type", "application/json")
        .raw(ok)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let id = r.id();
    let read = app.get(&format!("/v1/accounts/{id}")).send().await;
    assert_eq!(read.status, 200, "{}", read.json);
    assert_eq!(
        read.json["metadata"], r.json["metadata"],
        "metadata reads back unchanged"
    );
    assert_eq!(read.json["metadata"]["c"], 0.1);
    // The list that holds it still works.
    assert_eq!(app.get("/v1/accounts").send().await.status, 200);
}

#[tokio::test]
async fn replayed_account_creation_keeps_location_and_etag() {
    let app = crate::spawn().await;
    let body = json!({"owner_name": "Replay", "currency": "USD"});
    let first = app
        .post("/v1/accounts", body.clone())
        .idempotency("acct-1")
        .send()
        .await;
    assert_eq!(first.status, 201);
    let again = app
        .post("/v1/accounts", body)
        .idempotency("acct-1")
        .send()
        .await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(again.header("etag"), Some("\"1\""));
}
