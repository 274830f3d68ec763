//! `/openapi.json` and `/docs`: the document is OpenAPI 3.1, describes exactly the `/v1` routes
//! the router serves, and the documentation page works offline.

use std::collections::BTreeSet;

use axum::http::Method;
use serde_json::Value;
use zeta_testkit::{TestApp, TestResponse};

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The exact policy of `/docs` and its assets.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

async fn document(app: &TestApp) -> Value {
    let r = app.req(Method::GET, "/openapi.json").no_auth().send().await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json
}

/// (METHOD, path template) of every operation of the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if METHODS.contains(&method.as_str()) {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// (METHOD, path template) of every `/v1` route the router serves.
fn served() -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for r in zeta_api::V1_ROUTES {
        assert!(
            routes.insert((r.method.to_string(), r.path.to_string())),
            "{} {} is in V1_ROUTES twice",
            r.method,
            r.path
        );
    }
    routes
}

fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    op
}

/// Resolves a `$ref` within the document.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => doc
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling {r}")),
        None => v,
    }
}

fn parameter_names(doc: &Value, op: &Value) -> Vec<String> {
    op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            resolve(doc, p)["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_needs_no_key() {
    let app = crate::spawn().await;
    let doc = document(&app).await;
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1."), "openapi {version}");
    assert_eq!(doc["info"]["title"], "Zeta Banking API");
    assert!(doc["info"]["version"].is_string());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["security"], serde_json::json!([{"bearer": []}]));
    // A bad key does not matter either: the document is public.
    let r = app
        .req(Method::GET, "/openapi.json")
        .key("not-a-key")
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert!(r.header("x-request-id").is_some());
}

#[tokio::test]
async fn the_document_describes_exactly_the_routes_of_the_router() {
    let app = crate::spawn().await;
    let doc = document(&app).await;
    let documented = documented(&doc);
    let served = served();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let not_served: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "routes of the router missing from /openapi.json: {undocumented:?}"
    );
    assert!(
        not_served.is_empty(),
        "operations of /openapi.json the router does not serve: {not_served:?}"
    );
    assert!(served.iter().all(|(_, p)| p.starts_with("/v1/")));

    // And the router really answers each documented operation: without a key a matched `/v1`
    // route is 401 (or 415 for a body without a content type), an unmatched one 404 or 405.
    let id = uuid::Uuid::now_v7().to_string();
    for (method, path) in &documented {
        let concrete = path.replace("{id}", &id);
        let m = Method::from_bytes(method.as_bytes()).expect("method");
        let r = app.req(m, &concrete).no_auth().send().await;
        assert!(
            [401, 415].contains(&r.status),
            "{method} {concrete}: {} {}",
            r.status,
            r.json
        );
    }
    // The probe tells an unrouted request apart.
    let r = app
        .req(Method::GET, "/v1/nothing-here")
        .no_auth()
        .send()
        .await;
    assert_eq!(r.status, 404);
    let r = app
        .req(Method::DELETE, "/v1/accounts")
        .no_auth()
        .send()
        .await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn every_operation_documents_errors_headers_and_examples() {
    let app = crate::spawn().await;
    let doc = document(&app).await;
    for (method, path) in documented(&doc) {
        let m = method.to_lowercase();
        let op = operation(&doc, &m, &path);
        let what = format!("{method} {path}");
        let responses = op["responses"].as_object().expect("responses");
        for status in ["401", "429", "500", "503"] {
            assert!(responses.contains_key(status), "{what}: no {status}");
        }
        if path.contains("{id}") {
            assert!(responses.contains_key("404"), "{what}: no 404");
        }
        if method == "POST" || method == "PATCH" {
            for status in ["400", "413", "415", "422"] {
                assert!(responses.contains_key(status), "{what}: no {status}");
            }
            let body = &op["requestBody"]["content"]["application/json"];
            let schema = resolve(&doc, &body["schema"]);
            assert_eq!(
                schema["additionalProperties"],
                Value::Bool(false),
                "{what}: unknown fields are refused"
            );
            assert!(
                body.get("example").is_some() || body.get("examples").is_some(),
                "{what}: no request example"
            );
        }
        if method == "POST" {
            assert!(
                parameter_names(&doc, op).contains(&"Idempotency-Key".to_string()),
                "{what}: no Idempotency-Key"
            );
        }
        for (status, response) in responses {
            let response = resolve(&doc, response);
            assert!(
                response["headers"].get("X-Request-Id").is_some(),
                "{what} {status}: no X-Request-Id"
            );
            if status.as_str() >= "400" {
                let media = &response["content"]["application/problem+json"];
                assert_eq!(
                    media["schema"]["$ref"], "#/components/schemas/Problem",
                    "{what} {status}"
                );
                let examples = media["examples"].as_object().expect("problem examples");
                assert!(!examples.is_empty(), "{what} {status}: no example");
                for (code, example) in examples {
                    assert!(
                        response["description"]
                            .as_str()
                            .is_some_and(|d| d.contains(&format!("`{code}`"))),
                        "{what} {status}: {code} is not described"
                    );
                    assert_eq!(example["value"]["code"], code.as_str());
                    assert_eq!(example["value"]["status"].as_u64(), status.parse().ok());
                }
            } else if status == "204" {
                assert!(response.get("content").is_none(), "{what} 204 has no body");
            } else {
                let media = &response["content"]["application/json"];
                assert!(
                    media.get("example").is_some() || media.get("examples").is_some(),
                    "{what} {status}: no response example"
                );
            }
            if ["429", "503"].contains(&status.as_str()) {
                assert!(response["headers"].get("Retry-After").is_some());
            }
        }
    }

    // Route-specific headers.
    let patch = operation(&doc, "patch", "/v1/accounts/{id}");
    assert!(parameter_names(&doc, patch).contains(&"If-Match".to_string()));
    for status in ["412", "428"] {
        assert!(
            patch["responses"].get(status).is_some(),
            "PATCH: no {status}"
        );
    }
    let get = operation(&doc, "get", "/v1/accounts/{id}");
    assert!(get["responses"]["200"]["headers"].get("ETag").is_some());
    let create = operation(&doc, "post", "/v1/accounts");
    assert!(
        create["responses"]["201"]["headers"]
            .get("Location")
            .is_some()
    );
    assert!(create["responses"]["201"]["headers"].get("ETag").is_some());
    assert!(
        create["responses"]["201"]["headers"]
            .get("Idempotent-Replayed")
            .is_some()
    );

    // The fields the features hinge on.
    let schemas = &doc["components"]["schemas"];
    for (schema, field) in [
        ("Debit", "hold"),
        ("TransferBatch", "atomic"),
        ("Reverse", "reason"),
        ("Problem", "errors"),
        ("Problem", "transaction_id"),
        ("Problem", "transfer_id"),
        ("Account", "available_balance"),
        ("Balance", "as_of"),
        ("BatchResult", "results"),
    ] {
        assert!(
            schemas[schema]["properties"].get(field).is_some(),
            "{schema}.{field} is not documented"
        );
    }
    for list in ["/v1/accounts", "/v1/accounts/{id}/transactions"] {
        let names = parameter_names(&doc, operation(&doc, "get", list));
        for p in ["limit", "cursor", "status"] {
            assert!(names.contains(&p.to_string()), "GET {list}: no {p}");
        }
    }
    let balance = operation(&doc, "get", "/v1/accounts/{id}/balance");
    assert!(parameter_names(&doc, balance).contains(&"at".to_string()));

    // Holds, the historical balance and the batch are explained, with examples of each case.
    let debit = operation(&doc, "post", "/v1/accounts/{id}/debits");
    let holds_and_batch = [
        (debit, "hold"),
        (
            operation(&doc, "post", "/v1/transactions/{id}/capture"),
            "hold",
        ),
        (
            operation(&doc, "post", "/v1/transactions/{id}/void"),
            "hold",
        ),
        (balance, "`at`"),
        (operation(&doc, "post", "/v1/transfers/batch"), "atomic"),
    ];
    for (op, word) in holds_and_batch {
        let description = op["description"].as_str().unwrap_or_default();
        assert!(description.contains(word), "{description}");
    }
    let debit_examples = &debit["requestBody"]["content"]["application/json"]["examples"];
    assert_eq!(debit_examples["hold"]["value"]["hold"], true);
    assert_eq!(
        debit["responses"]["201"]["content"]["application/json"]["examples"]["hold"]["value"]["status"],
        "pending"
    );
    let batch = operation(&doc, "post", "/v1/transfers/batch");
    let batch_examples = &batch["requestBody"]["content"]["application/json"]["examples"];
    assert_eq!(batch_examples["atomic"]["value"]["atomic"], true);
    assert!(
        batch_examples["not atomic"]["value"]
            .get("atomic")
            .is_none()
    );
    let atomic_results = &batch["responses"]["200"]["content"]["application/json"]["examples"]["atomic"]
        ["value"]["results"];
    assert_eq!(atomic_results[0]["status"], 424);
    assert_eq!(atomic_results[0]["error"]["code"], "batch_failed");
}

/// The `http://` and `https://` URLs in a text, with their hosts.
fn urls(text: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for scheme in ["http://", "https://"] {
        for (at, _) in text.match_indices(scheme) {
            let rest = &text[at + scheme.len()..];
            let host: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == '.')
                .collect();
            let url: String = text[at..]
                .chars()
                .take_while(|c| !c.is_whitespace() && !"\"'`()<>\\".contains(*c))
                .collect();
            found.push((url, host));
        }
    }
    found
}

/// The values of `src="…"` and `href="…"` attributes.
fn references(html: &str) -> Vec<String> {
    let mut refs = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for (at, _) in html.match_indices(attr) {
            let rest = &html[at + attr.len()..];
            let end = rest.find('"').expect("closed attribute");
            refs.push(rest[..end].to_string());
        }
    }
    refs
}

fn assert_docs_headers(r: &TestResponse, what: &str) {
    assert_eq!(r.header("content-security-policy"), Some(CSP), "{what}");
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "{what}");
}

/// Hosts named in the vendored Swagger UI bundles. None is ever fetched: they are XML
/// namespaces and JSON Schema / OpenAPI dialect ids, links in library error messages and spec
/// comments, the default online validator (turned off by our configuration, asserted below),
/// and linkify's examples; and the CSP above would block any load from them anyway. A new host
/// in a Swagger UI upgrade fails this test, to be looked at.
const VENDORED_JS_HOSTS: &[&str] = &[
    "",
    "base",
    "datatracker.ietf.org",
    "example.com",
    "fb.me",
    "github.com",
    "instagram.com",
    "json-schema.org",
    "reactjs.org",
    "redux.js.org",
    "soundcloud.com",
    "spdx.org",
    "spec.openapis.org",
    "swagger.io",
    "twitter.com",
    "validator.swagger.io",
    "vladimirgorej.com",
    "www.facebook.com",
    "www.rfc-editor.org",
    "www.tiktok.com",
    "www.w3.org",
    "실례.com",
];

/// The SVG namespace, in the data: URIs of Swagger UI's CSS icons: not a fetch.
const SVG_NAMESPACE: &str = "http://www.w3.org/2000/svg";

#[tokio::test]
async fn the_docs_page_loads_only_from_this_server() {
    let app = crate::spawn().await;
    for page in ["/docs", "/docs/"] {
        let r = app.req(Method::GET, page).no_auth().send().await;
        assert_eq!(r.status, 200, "{page}");
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        assert_docs_headers(&r, page);
        let html = String::from_utf8(r.body.clone()).expect("utf-8");
        assert!(html.contains("<div id=\"swagger-ui\">"), "{html}");
        // Not a single absolute URL in the page itself (license comments included: there are
        // none in our own HTML).
        assert_eq!(urls(&html), Vec::new(), "{page}");
        assert!(
            !html.contains("//"),
            "no protocol-relative URL either: {html}"
        );
        assert!(
            !html.contains("<script>"),
            "no inline script (the CSP forbids it)"
        );
        assert!(!html.contains("<style"), "no inline style element");

        let refs = references(&html);
        assert!(refs.len() >= 5, "{refs:?}");
        for asset in refs {
            assert!(asset.starts_with("/docs/"), "{asset} is not on this server");
            let r = app.req(Method::GET, &asset).no_auth().send().await;
            assert_eq!(r.status, 200, "{asset}");
            assert!(!r.body.is_empty(), "{asset} is empty");
            assert_docs_headers(&r, &asset);
            let content_type = r.header("content-type").unwrap_or_default();
            let text = String::from_utf8_lossy(&r.body);
            if asset.ends_with(".js") {
                assert_eq!(content_type, "text/javascript; charset=utf-8", "{asset}");
            } else if asset.ends_with(".css") {
                assert_eq!(content_type, "text/css; charset=utf-8", "{asset}");
            } else {
                assert_eq!(content_type, "image/png", "{asset}");
                continue;
            }
            if asset.ends_with("/swagger-initializer.js") {
                // Our configuration: the document of this server, no online validator.
                assert!(text.contains("\"url\": \"/openapi.json\""), "{text}");
                assert!(text.contains("\"validatorUrl\": \"none\""), "{text}");
                assert_eq!(urls(&text), Vec::new(), "{asset}");
            } else if asset.ends_with(".css") {
                for (url, _) in urls(&text) {
                    assert_eq!(url, SVG_NAMESPACE, "{asset}");
                }
            } else {
                for (url, host) in urls(&text) {
                    assert!(
                        VENDORED_JS_HOSTS.contains(&host.as_str()),
                        "{asset} names {url}, a host not reviewed"
                    );
                }
            }
        }
    }
    // Only the files the page uses are served.
    for other in [
        "/docs/oauth2-redirect.html",
        "/docs/swagger-ui.js",
        "/docs/index.html",
    ] {
        let r = app.req(Method::GET, other).no_auth().send().await;
        assert_eq!(r.status, 404, "{other}");
    }
}
