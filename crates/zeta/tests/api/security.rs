//! API keys, roles, account scopes (BOLA) and the audit log over HTTP.

use axum::http::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeta_testkit::{TestApp, TestResponse};

fn assert_problem(r: &TestResponse, status: u16, code: &str) {
    assert_eq!((r.status, r.code()), (status, code), "{}", r.json);
}

fn uuid(s: &str) -> Uuid {
    Uuid::parse_str(s).expect("uuid")
}

async fn create_key(app: &TestApp, body: Value) -> TestResponse {
    app.post("/v1/api-keys", body).send().await
}

async fn delete(app: &TestApp, path: &str, key: &str) -> TestResponse {
    app.req(Method::DELETE, path).key(key).send().await
}

#[tokio::test]
async fn api_key_lifecycle_create_list_use_revoke() {
    let app = crate::spawn().await;
    let created = create_key(&app, json!({"name": "payments", "role": "operator"})).await;
    assert_eq!(created.status, 201, "{}", created.json);
    let secret = created.json["key"].as_str().expect("secret").to_string();
    assert!(
        secret.starts_with("zeta_")
            && secret.len() == 69
            && secret[5..].bytes().all(|b| b.is_ascii_hexdigit()),
        "{secret}"
    );
    let id = created.id();
    let mut fields: Vec<&str> = created
        .json
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["account_ids", "created_at", "id", "key", "name", "role"]
    );
    assert_eq!(created.json["name"], "payments");
    assert_eq!(created.json["role"], "operator");
    assert_eq!(created.json["account_ids"], Value::Null);

    // The new key works at once, with its role.
    let account = app
        .post(
            "/v1/accounts",
            json!({"owner_name": "K", "currency": "EUR"}),
        )
        .key(&secret)
        .send()
        .await;
    assert_eq!(account.status, 201);

    // Listed without its secret (oldest first: the test's admin key, then this one).
    let list = app.get("/v1/api-keys").send().await;
    assert_eq!(list.status, 200);
    let data = list.json["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["role"], "admin");
    assert_eq!(data[1]["id"], id.as_str());
    assert_eq!(data[1].get("key"), None);
    assert_eq!(list.json["next_cursor"], Value::Null);
    // Pages of one.
    let first = app.get("/v1/api-keys?limit=1").send().await;
    assert_eq!(first.json["data"].as_array().map(Vec::len), Some(1));
    let cursor = first.json["next_cursor"].as_str().expect("cursor");
    let second = app
        .get(&format!("/v1/api-keys?limit=1&cursor={cursor}"))
        .send()
        .await;
    assert_eq!(second.json["data"][0]["id"], id.as_str());
    assert_eq!(second.json["next_cursor"], Value::Null);

    // Revoked: 204 with no body, and the key stops working on the next request.
    let revoked = delete(&app, &format!("/v1/api-keys/{id}"), &app.admin_key).await;
    assert_eq!(revoked.status, 204);
    assert!(revoked.body.is_empty());
    let after = app.get("/v1/accounts").key(&secret).send().await;
    assert_problem(&after, 401, "unauthorized");
    assert_eq!(after.header("www-authenticate"), Some("Bearer"));
    // Gone from the list; a second revocation finds nothing.
    let list = app.get("/v1/api-keys").send().await;
    assert_eq!(list.json["data"].as_array().map(Vec::len), Some(1));
    let again = delete(&app, &format!("/v1/api-keys/{id}"), &app.admin_key).await;
    assert_problem(&again, 404, "not_found");
    for path in [
        "/v1/api-keys/not-a-uuid",
        &format!("/v1/api-keys/{}", Uuid::now_v7()),
    ] {
        assert_problem(&delete(&app, path, &app.admin_key).await, 404, "not_found");
    }
}

#[tokio::test]
async fn api_key_requests_are_validated_and_change_nothing() {
    let app = crate::spawn().await;
    let a = app.funded("USD", 0).await;
    for (body, field) in [
        (json!({"role": "viewer"}), "name"),
        (json!({"name": "", "role": "viewer"}), "name"),
        (json!({"name": "x".repeat(201), "role": "viewer"}), "name"),
        (json!({"name": "n"}), "role"),
        (json!({"name": "n", "role": "root"}), "role"),
        (json!({"name": "n", "role": "Admin"}), "role"),
        (json!({"name": "n", "role": 1}), "role"),
        (
            json!({"name": "n", "role": "viewer", "account_ids": []}),
            "account_ids",
        ),
        (
            json!({"name": "n", "role": "viewer", "account_ids": a}),
            "account_ids",
        ),
        (
            json!({"name": "n", "role": "viewer", "account_ids": ["nope"]}),
            "account_ids.0",
        ),
        (
            json!({"name": "n", "role": "viewer", "account_ids": [a, a]}),
            "account_ids.1",
        ),
        (
            json!({"name": "n", "role": "viewer", "key": "zeta_mine"}),
            "key",
        ),
    ] {
        let r = create_key(&app, body.clone()).await;
        assert_problem(&r, 422, "validation_error");
        assert!(
            r.json["errors"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["field"] == field)),
            "{body}: {}",
            r.json
        );
    }
    let too_many: Vec<String> = (0..1001).map(|_| Uuid::now_v7().to_string()).collect();
    let r = create_key(
        &app,
        json!({"name": "n", "role": "viewer", "account_ids": too_many}),
    )
    .await;
    assert_problem(&r, 422, "validation_error");
    // An account that does not exist: 404, like any account named in a body.
    let r = create_key(
        &app,
        json!({"name": "n", "role": "viewer", "account_ids": [a, Uuid::now_v7()]}),
    )
    .await;
    assert_problem(&r, 404, "not_found");
    // Nothing was created.
    let list = app.get("/v1/api-keys").send().await;
    assert_eq!(list.json["data"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_retried_key_creation_replays_without_the_secret() {
    let app = crate::spawn().await;
    let body = json!({"name": "retry", "role": "viewer"});
    let first = app
        .post("/v1/api-keys", body.clone())
        .idempotency("create-key-1")
        .send()
        .await;
    assert_eq!(first.status, 201);
    assert!(first.json["key"].is_string());
    let replay = app
        .post("/v1/api-keys", body)
        .idempotency("create-key-1")
        .send()
        .await;
    assert_eq!(replay.status, 201);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.json["id"], first.json["id"]);
    assert_eq!(replay.json.get("key"), None, "the secret is never stored");
    let mut expected = first.json.clone();
    expected.as_object_mut().expect("object").remove("key");
    assert_eq!(replay.json, expected);
    // One key was made, not two.
    let list = app.get("/v1/api-keys").send().await;
    assert_eq!(list.json["data"].as_array().map(Vec::len), Some(2));
}

/// Each role against each class of route: reads, account writes, money, keys, audit.
#[tokio::test]
async fn every_role_against_every_route_class() {
    let app = crate::spawn().await;
    let a = app.funded("USD", 1_000).await;
    let b = app.funded("USD", 0).await;
    let viewer = app.key("viewer", None).await;
    let operator = app.key("operator", None).await;
    let admin = app.admin_key.clone();
    let scoped_admin = app.key("admin", Some(vec![uuid(&a), uuid(&b)])).await;
    let victim = create_key(&app, json!({"name": "victim", "role": "viewer"}))
        .await
        .id();

    // (key, read, create account, move money, manage keys, read audit)
    let table: [(&str, &str, u16, u16, u16, u16, u16); 4] = [
        ("viewer", viewer.as_str(), 200, 403, 403, 403, 403),
        ("operator", operator.as_str(), 200, 201, 201, 403, 403),
        ("admin", admin.as_str(), 200, 201, 201, 201, 200),
        (
            "scoped admin",
            scoped_admin.as_str(),
            200,
            403,
            201,
            403,
            403,
        ),
    ];
    for (who, key, read, create, money, keys, audit) in table {
        let r = app.get(&format!("/v1/accounts/{a}")).key(key).send().await;
        assert_eq!(r.status, read, "{who} read");
        let r = app
            .get(&format!("/v1/accounts/{a}/transactions"))
            .key(key)
            .send()
            .await;
        assert_eq!(r.status, read, "{who} history");
        let r = app
            .post(
                "/v1/accounts",
                json!({"owner_name": "R", "currency": "USD"}),
            )
            .key(key)
            .send()
            .await;
        assert_eq!(r.status, create, "{who} create account {}", r.json);
        let r = app
            .post(
                "/v1/transfers",
                json!({"from_account_id": a, "to_account_id": b, "amount": 1}),
            )
            .key(key)
            .send()
            .await;
        assert_eq!(r.status, money, "{who} transfer {}", r.json);
        let r = app
            .post(&format!("/v1/accounts/{b}/credits"), json!({"amount": 1}))
            .key(key)
            .send()
            .await;
        assert_eq!(r.status, money, "{who} credit");
        let r = app
            .post("/v1/api-keys", json!({"name": "n", "role": "admin"}))
            .key(key)
            .send()
            .await;
        assert_eq!(r.status, keys, "{who} create key {}", r.json);
        let list = if keys == 201 { 200 } else { keys };
        let r = app.get("/v1/api-keys").key(key).send().await;
        assert_eq!(r.status, list, "{who} list keys");
        let r = app.get("/v1/audit-events").key(key).send().await;
        assert_eq!(r.status, audit, "{who} audit");
        if keys == 403 {
            assert_problem(&r, 403, "forbidden");
            let r = delete(&app, &format!("/v1/api-keys/{victim}"), key).await;
            assert_problem(&r, 403, "forbidden");
        }
    }
    // The victim key survived every refused revocation.
    let list = app.get("/v1/api-keys").send().await;
    assert!(
        list.json["data"]
            .as_array()
            .is_some_and(|keys| keys.iter().any(|k| k["id"] == victim.as_str()))
    );
    // Viewers may not PATCH either.
    let r = app
        .req(Method::PATCH, &format!("/v1/accounts/{a}"))
        .key(&viewer)
        .header("if-match", "\"1\"")
        .json(&json!({"owner_name": "X"}))
        .send()
        .await;
    assert_problem(&r, 403, "forbidden");
}

/// A key limited to account A cannot see or touch account B, its transactions or its transfers:
/// all of it looks missing (404), lists stop at A, and nothing changes.
/// Concurrent requests share key lookups: each is still answered for its own key — a
/// viewer, a key scoped to one account, a revoked key and an unknown secret, all at once.
#[tokio::test]
async fn concurrent_requests_are_each_answered_for_their_own_key() {
    let app = crate::spawn().await;
    let a = app.funded("USD", 1_000).await;
    let b = app.funded("USD", 1_000).await;
    let viewer = app.key("viewer", None).await;
    let only_a = app.key("operator", Some(vec![uuid(&a)])).await;
    let revoked = create_key(&app, json!({"name": "gone", "role": "admin"})).await;
    let revoked_secret = revoked.json["key"].as_str().expect("secret").to_string();
    let gone = delete(
        &app,
        &format!("/v1/api-keys/{}", revoked.id()),
        &app.admin_key,
    )
    .await;
    assert_eq!(gone.status, 204);
    let unknown = format!("zeta_{}", "0".repeat(64));
    let app = std::sync::Arc::new(app);

    let cases = [
        (viewer.clone(), a.clone(), 200, ""),
        (viewer, b.clone(), 200, ""),
        (only_a.clone(), a.clone(), 200, ""),
        (only_a, b.clone(), 404, "not_found"),
        (revoked_secret, a.clone(), 401, "unauthorized"),
        (unknown, b, 401, "unauthorized"),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..10 {
        for (case, (key, account, status, code)) in cases.iter().cloned().enumerate() {
            let app = app.clone();
            tasks.spawn(async move {
                let r = app
                    .get(&format!("/v1/accounts/{account}"))
                    .key(&key)
                    .send()
                    .await;
                let got = (
                    r.status,
                    if r.status == 200 {
                        String::new()
                    } else {
                        r.code().to_string()
                    },
                );
                (round, case, got, (status, code.to_string()), r.json)
            });
        }
    }
    let mut answered = 0;
    while let Some(done) = tasks.join_next().await {
        let (round, case, got, expected, body) = done.expect("task");
        assert_eq!(got, expected, "round {round}, case {case}: {body}");
        if expected.0 == 200 {
            assert_eq!(body["balance"], 1_000, "round {round}, case {case}");
        }
        answered += 1;
    }
    assert_eq!(answered, 60);
}

#[tokio::test]
async fn a_scoped_key_sees_nothing_outside_its_accounts() {
    let app = crate::spawn().await;
    let a = app.funded("USD", 1_000).await;
    let b = app.funded("USD", 1_000).await;
    let c = app.funded("USD", 0).await;
    // B's history: a credit, a hold, a transfer B -> C.
    let b_credit = app
        .post(&format!("/v1/accounts/{b}/credits"), json!({"amount": 5}))
        .send()
        .await
        .id();
    let b_hold = app
        .post(
            &format!("/v1/accounts/{b}/debits"),
            json!({"amount": 7, "hold": true}),
        )
        .send()
        .await
        .id();
    let b_to_c = app
        .post(
            "/v1/transfers",
            json!({"from_account_id": b, "to_account_id": c, "amount": 3}),
        )
        .send()
        .await
        .id();
    let a_to_b = app
        .post(
            "/v1/transfers",
            json!({"from_account_id": a, "to_account_id": b, "amount": 2}),
        )
        .send()
        .await
        .id();
    let only_a = app.key("operator", Some(vec![uuid(&a)])).await;
    let before = (app.balance(&a).await, app.balance(&b).await);

    let get = |path: String| {
        let key = only_a.clone();
        let app = &app;
        async move { app.get(&path).key(&key).send().await }
    };
    assert_eq!(get(format!("/v1/accounts/{a}")).await.status, 200);
    for path in [
        format!("/v1/accounts/{b}"),
        format!("/v1/accounts/{b}/balance"),
        format!("/v1/accounts/{b}/transactions"),
        format!("/v1/transactions/{b_credit}"),
        format!("/v1/transactions/{b_hold}"),
        format!("/v1/transfers/{b_to_c}"),
        // A transfer with one leg in scope is still another account's business.
        format!("/v1/transfers/{a_to_b}"),
    ] {
        assert_problem(&get(path.clone()).await, 404, "not_found");
    }
    let listed = get("/v1/accounts?limit=200".into()).await;
    let ids: Vec<&str> = listed.json["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|x| x["id"].as_str())
        .collect();
    assert_eq!(ids, [a.as_str()]);
    let number = app.get(&format!("/v1/accounts/{b}")).send().await.json["account_number"].clone();
    let by_number = get(format!(
        "/v1/accounts?account_number={}",
        number.as_str().unwrap_or("")
    ))
    .await;
    assert_eq!(by_number.json["data"], json!([]));

    // Money paths that name B: 404, and nothing moves.
    let post = |path: String, body: Value| {
        let key = only_a.clone();
        let app = &app;
        async move { app.post(&path, body).key(&key).send().await }
    };
    for (path, body) in [
        (format!("/v1/accounts/{b}/credits"), json!({"amount": 1})),
        (format!("/v1/accounts/{b}/debits"), json!({"amount": 1})),
        (format!("/v1/transactions/{b_hold}/capture"), Value::Null),
        (format!("/v1/transactions/{b_hold}/void"), Value::Null),
        (format!("/v1/transactions/{b_credit}/reverse"), Value::Null),
        (format!("/v1/transfers/{b_to_c}/reverse"), Value::Null),
        (format!("/v1/transfers/{a_to_b}/reverse"), Value::Null),
        (
            "/v1/transfers".to_string(),
            json!({"from_account_id": a, "to_account_id": b, "amount": 1}),
        ),
        (
            "/v1/transfers".to_string(),
            json!({"from_account_id": b, "to_account_id": a, "amount": 1}),
        ),
    ] {
        let r = if body.is_null() {
            app.req(Method::POST, &path).key(&only_a).send().await
        } else {
            post(path.clone(), body).await
        };
        assert_problem(&r, 404, "not_found");
    }
    let patch = app
        .req(Method::PATCH, &format!("/v1/accounts/{b}"))
        .key(&only_a)
        .header("if-match", "\"1\"")
        .json(&json!({"status": "frozen"}))
        .send()
        .await;
    assert_problem(&patch, 404, "not_found");
    // In a batch, only the item naming B fails, with the same 404.
    let batch = post(
        "/v1/transfers/batch".into(),
        json!({"transfers": [
            {"from_account_id": a, "to_account_id": b, "amount": 1},
            {"from_account_id": b, "to_account_id": a, "amount": 1},
        ]}),
    )
    .await;
    assert_eq!(batch.status, 200);
    for item in batch.json["results"].as_array().expect("results") {
        assert_eq!(item["status"], 404, "{item}");
        assert_eq!(item["error"]["code"], "not_found");
    }
    assert_eq!((app.balance(&a).await, app.balance(&b).await), before);
    // B's hold is still open.
    let hold = app.get(&format!("/v1/transactions/{b_hold}")).send().await;
    assert_eq!(hold.json["status"], "pending");
    app.assert_verified().await;
}

/// The independent check of the documented chain: SHA-256 of `prev_hash`, a newline and the
/// canonical JSON (sorted keys, no whitespace) of the other fields.
fn expected_hash(event: &Value) -> String {
    fn canonical(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    canonical(&map[k], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut body = event.clone();
    let map = body.as_object_mut().expect("event");
    let prev = map.remove("prev_hash").expect("prev_hash");
    map.remove("hash");
    let mut text = format!("{}\n", prev.as_str().expect("prev"));
    canonical(&body, &mut text);
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn every_change_is_in_the_audit_chain_with_its_actor_and_request() {
    let app = crate::spawn().await;
    let admin_id = app.get("/v1/api-keys").send().await.json["data"][0]["id"]
        .as_str()
        .expect("admin id")
        .to_string();
    let before = app.get("/v1/audit-events?limit=200").send().await;
    // The test's own admin key was made outside a request.
    let first = &before.json["data"][0];
    assert_eq!(first["action"], "api_key.create");
    assert_eq!(first["actor_key_id"], Value::Null);
    assert_eq!(first["request_id"], Value::Null);
    assert_eq!(first["seq"], 1);
    let start = before.json["data"].as_array().map_or(0, Vec::len);

    let created = app
        .post(
            "/v1/accounts",
            json!({"owner_name": "Audited", "currency": "EUR"}),
        )
        .header("x-request-id", "audit-req-1")
        .send()
        .await;
    let a = created.id();
    let b = app.account("EUR").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let credit = app
        .post(&format!("/v1/accounts/{a}/credits"), json!({"amount": 100}))
        .send()
        .await
        .id();
    // A recorded decline is audited too; a refusal that records nothing is not.
    let declined = app
        .post(
            &format!("/v1/accounts/{a}/debits"),
            json!({"amount": 1_000}),
        )
        .send()
        .await;
    assert_problem(&declined, 422, "insufficient_funds");
    let not_found = app
        .post(
            &format!("/v1/accounts/{}/credits", Uuid::now_v7()),
            json!({"amount": 1}),
        )
        .send()
        .await;
    assert_problem(&not_found, 404, "not_found");
    let hold = app
        .post(
            &format!("/v1/accounts/{a}/debits"),
            json!({"amount": 10, "hold": true}),
        )
        .send()
        .await
        .id();
    app.req(Method::POST, &format!("/v1/transactions/{hold}/capture"))
        .send()
        .await;
    let transfer = app
        .post(
            "/v1/transfers",
            json!({"from_account_id": a, "to_account_id": b, "amount": 30}),
        )
        .send()
        .await
        .id();
    app.req(Method::POST, &format!("/v1/transfers/{transfer}/reverse"))
        .send()
        .await;
    let version = app.get(&format!("/v1/accounts/{a}")).send().await.json["version"]
        .as_i64()
        .expect("version");
    let patched = app
        .req(Method::PATCH, &format!("/v1/accounts/{a}"))
        .header("if-match", &format!("\"{version}\""))
        .json(&json!({"owner_name": "Renamed"}))
        .send()
        .await;
    assert_eq!(patched.status, 200);
    let key = create_key(&app, json!({"name": "audited", "role": "viewer"}))
        .await
        .id();
    delete(&app, &format!("/v1/api-keys/{key}"), &app.admin_key).await;

    let all = app.get("/v1/audit-events?limit=200").send().await;
    assert_eq!(all.status, 200);
    let events = all.json["data"].as_array().expect("data");
    let ours: Vec<(&str, &str)> = events[start..]
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or(""),
                e["resource_type"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        ours,
        [
            ("account.create", "account"),
            ("account.create", "account"),
            ("transaction.credit", "transaction"),
            ("transaction.debit", "transaction"),
            ("transaction.hold", "transaction"),
            ("transaction.capture", "transaction"),
            ("transfer.create", "transfer"),
            ("transfer.reverse", "transfer"),
            ("account.update", "account"),
            ("api_key.create", "api_key"),
            ("api_key.revoke", "api_key"),
        ]
    );
    let ours = &events[start..];
    assert_eq!(ours[0]["resource_id"], a.as_str());
    assert_eq!(ours[0]["request_id"], "audit-req-1");
    assert_eq!(ours[0]["actor_key_id"], admin_id.as_str());
    assert_eq!(
        ours[0]["details"],
        json!({"account_number": created.json["account_number"], "owner_name": "Audited",
               "currency": "EUR", "metadata": {}})
    );
    assert_eq!(ours[2]["resource_id"], credit.as_str());
    assert_eq!(
        ours[2]["details"],
        json!({"account_id": a, "amount": 100, "currency": "EUR", "status": "completed",
               "balance_after": 100, "reverses_id": null})
    );
    assert_eq!(
        ours[3]["details"],
        json!({"account_id": a, "amount": 1000, "status": "failed",
               "failure_reason": "insufficient_funds"})
    );
    assert_eq!(ours[6]["resource_id"], transfer.as_str());
    assert_eq!(ours[7]["resource_id"], transfer.as_str());
    assert_eq!(
        ours[8]["details"],
        json!({"changes": {"owner_name": "Renamed"}, "version": version + 1})
    );
    assert_eq!(ours[10]["resource_id"], key.as_str());

    // The chain: consecutive seq, each prev_hash the previous hash, each hash recomputable.
    let mut prev = "0".repeat(64);
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["seq"].as_u64(), Some(i as u64 + 1));
        assert_eq!(
            event["prev_hash"].as_str(),
            Some(prev.as_str()),
            "seq {}",
            i + 1
        );
        assert_eq!(event["hash"].as_str(), Some(expected_hash(event).as_str()));
        assert!(event["request_id"].is_string() || i == 0);
        prev = event["hash"].as_str().expect("hash").to_string();
    }

    // Paging: after_seq, limit and the cursor.
    let page = app.get("/v1/audit-events?after_seq=2&limit=3").send().await;
    let seqs: Vec<u64> = page.json["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    let cursor = page.json["next_cursor"].as_str().expect("cursor");
    let next = app
        .get(&format!(
            "/v1/audit-events?after_seq=2&limit=3&cursor={cursor}"
        ))
        .send()
        .await;
    assert_eq!(next.json["data"][0]["seq"], 6);
    let end = app
        .get(&format!("/v1/audit-events?after_seq={}", events.len()))
        .send()
        .await;
    assert_eq!(end.json, json!({"data": [], "next_cursor": null}));
    for bad in [
        "after_seq=-1",
        "after_seq=x",
        "limit=0",
        "limit=201",
        "cursor=zz",
        "seq=1",
    ] {
        let r = app.get(&format!("/v1/audit-events?{bad}")).send().await;
        assert_problem(&r, 422, "validation_error");
    }
    app.assert_verified().await;
}
