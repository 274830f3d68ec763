//! Test helpers: a fresh database per test — a PostgreSQL database or a SQLite file — and the
//! whole Zeta app in process.
//!
//! PostgreSQL comes from `TEST_DATABASE_URL` (else `DATABASE_URL`, else the local server at
//! `postgres://postgres@127.0.0.1:5432/postgres`). When it cannot be reached the tests fail —
//! they never skip. The URL may carry Zeta's `pool-mode=transaction` (a PgBouncer in transaction
//! pooling mode in front of the server): the stores honour it, and the helpers' own SQL uses
//! only what such a pooler passes through (see [`connect`]).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection, Row};
use tower::ServiceExt;
use uuid::Uuid;
use zeta_api::AppState;
use zeta_engine::{Engine, EngineSettings};
use zeta_store::{Store, VerifyReport};
use zeta_store_postgres::{PgSettings, PgStore};
use zeta_store_sqlite::{SqliteSettings, SqliteStore};

/// The store a test runs on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

pub const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The server's maintenance URL that tests create their databases on.
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .ok()
        .filter(|u| u.starts_with("postgres"))
        .unwrap_or_else(|| DEFAULT_SERVER.to_string())
}

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let slash = base
        .rfind('/')
        .filter(|i| *i > base.find("://").map_or(0, |s| s + 2));
    let root = slash.map_or(base, |i| &base[..i]);
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

/// A plain connection for direct SQL in tests, also through a transaction pooler (the URL's
/// `pool-mode` is removed, no startup parameter PgBouncer refuses is sent). Behind such a
/// pooler a statement must not leave a named prepared statement on the server connection nor
/// be parsed and executed on different ones: use the simple protocol (a statement without
/// parameters executed as a string: `conn.fetch_one(sql)`), or, with parameters, an unnamed
/// statement (`.persistent(false)`) inside a transaction.
pub async fn connect(url: &str) -> Result<PgConnection, sqlx::Error> {
    let (url, _) = zeta_store_postgres::split_pool_mode(url)
        .map_err(|e| sqlx::Error::Configuration(e.to_string().into()))?;
    let options: PgConnectOptions = url.parse()?;
    PgConnection::connect_with(&options.extra_float_digits(None)).await
}

/// A database of its own for one test; dropped (forcefully) when the test ends.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub name: String,
    server: String,
}

impl TestDb {
    /// A fresh PostgreSQL database.
    pub async fn create() -> Self {
        Self::create_on(Backend::Postgres).await
    }

    pub async fn create_on(backend: Backend) -> Self {
        let name = format!("zeta_test_{}", Uuid::new_v4().simple());
        if backend == Backend::Sqlite {
            let path = std::env::temp_dir().join(format!("{name}.db"));
            return Self {
                backend,
                url: format!("sqlite://{}", path.display()),
                name,
                server: String::new(),
            };
        }
        let server = server_url();
        let mut conn = connect(&server).await.unwrap_or_else(|e| {
            panic!("PostgreSQL is required for this test and cannot be reached at {server}: {e}")
        });
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create test database");
        let _ = conn.close().await;
        Self {
            backend,
            url: with_database(&server, &name),
            name,
            server,
        }
    }

    /// A plain connection to this database for direct SQL (see [`connect`]).
    pub async fn connect(&self) -> PgConnection {
        connect(&self.url)
            .await
            .expect("connect to the test database")
    }

    /// The one `int8` value of a statement without parameters (the simple protocol, so it also
    /// passes through a transaction pooler).
    pub async fn scalar(&self, sql: &str) -> i64 {
        let mut conn = self.connect().await;
        let row = conn
            .fetch_one(sqlx::AssertSqlSafe(sql))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let value = row.try_get(0).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.close().await;
        value
    }

    /// Checks the ledger in SQL, independently of `zeta verify`: balances add up to
    /// `expected_total`, none is negative, every `balance_after` follows the previous one, and
    /// every balance equals the sum of its posted transactions.
    pub async fn assert_ledger_invariants(&self, expected_total: i64) {
        let total = self
            .scalar("SELECT COALESCE(SUM(balance), 0)::int8 FROM accounts")
            .await;
        assert_eq!(total, expected_total, "transfers and debits conserve money");
        let negative = self
            .scalar("SELECT count(*) FROM accounts WHERE balance < 0 OR held < 0")
            .await;
        assert_eq!(negative, 0, "no negative balance");
        let broken_chain = self
            .scalar(
                "SELECT count(*) FROM (
                   SELECT balance_after,
                          LAG(balance_after, 1, 0::int8)
                            OVER (PARTITION BY account_id ORDER BY posted_seq) AS prev,
                          CASE type WHEN 'credit' THEN amount ELSE -amount END AS delta
                     FROM transactions WHERE posted_seq IS NOT NULL) t
                  WHERE balance_after <> prev + delta",
            )
            .await;
        assert_eq!(
            broken_chain, 0,
            "every balance_after follows the previous one"
        );
        let mismatched = self
            .scalar(
                "SELECT count(*) FROM accounts a WHERE a.balance <> (
                   SELECT COALESCE(SUM(CASE type WHEN 'credit' THEN amount ELSE -amount END), 0)
                     FROM transactions t
                    WHERE t.account_id = a.id AND t.status IN ('completed', 'reversed'))",
            )
            .await;
        assert_eq!(mismatched, 0, "balances equal their transactions");
    }

    /// Opens this database's store (migrated).
    pub async fn store(&self) -> Arc<dyn Store> {
        let store: Arc<dyn Store> = match self.backend {
            Backend::Postgres => {
                let settings = PgSettings {
                    max_connections: 8,
                    ..PgSettings::default()
                };
                Arc::new(PgStore::connect(&self.url, &settings).expect("store"))
            }
            Backend::Sqlite => Arc::new(
                SqliteStore::open(&self.url, &SqliteSettings::default())
                    .await
                    .expect("sqlite store"),
            ),
        };
        store.migrate().await.expect("migrations");
        store
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.backend == Backend::Sqlite {
            let path = self.url.trim_start_matches("sqlite://");
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
            return;
        }
        let server = self.server.clone();
        let name = self.name.clone();
        // Drop runs outside async context guarantees; use a private runtime on a thread.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = connect(&server).await {
                    let _ = conn
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A response, with its body read.
#[derive(Debug)]
pub struct TestResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The body as JSON (`Null` when it is not JSON).
    pub json: Value,
}

impl TestResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts that the body shows nothing internal: no SQL, driver, panic or database name.
    #[track_caller]
    pub fn assert_no_leak(&self) {
        let body = String::from_utf8_lossy(&self.body);
        let lower = body.to_lowercase();
        assert!(!body.contains("SELECT"), "SQL leaked: {body}");
        for word in ["sqlx", "panicked", "postgres"] {
            assert!(!lower.contains(word), "{word} leaked: {body}");
        }
    }

    /// The problem `code`, for error responses.
    pub fn code(&self) -> &str {
        self.json["code"].as_str().unwrap_or("")
    }

    pub fn id(&self) -> String {
        self.json["id"]
            .as_str()
            .unwrap_or_else(|| panic!("response has no id: {} {}", self.status, self.json))
            .to_string()
    }
}

/// The Zeta app on its own database, called in process through the full middleware stack.
pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub store: Arc<dyn Store>,
    pub engine: Arc<Engine>,
    /// An unscoped admin key.
    pub admin_key: String,
    pub db: TestDb,
}

impl TestApp {
    /// The app on PostgreSQL.
    pub async fn spawn() -> Self {
        Self::spawn_on(Backend::Postgres).await
    }

    pub async fn spawn_on(backend: Backend) -> Self {
        let settings = match backend {
            // Two writers with two transactions in flight each: harder than the production
            // default of one, because their transactions overlap and conflict on shared
            // accounts and must be retried or ordered.
            Backend::Postgres => EngineSettings {
                writers: 2,
                pipeline: 2,
                ..EngineSettings::default()
            },
            Backend::Sqlite => EngineSettings {
                writers: 1,
                pipeline: 1,
                ..EngineSettings::default()
            },
        };
        Self::spawn_with(backend, settings).await
    }

    pub async fn spawn_with(backend: Backend, engine_settings: EngineSettings) -> Self {
        let db = TestDb::create_on(backend).await;
        let store = db.store().await;
        let engine = Arc::new(Engine::start_observed(
            store.clone(),
            engine_settings,
            Arc::new(zeta_api::telemetry::MetricsObserver),
        ));
        let state = AppState::new(store.clone(), engine.clone());
        let router = zeta_api::router(state.clone());
        let mut app = Self {
            router,
            state,
            store,
            engine,
            admin_key: String::new(),
            db,
        };
        app.admin_key = app.key("admin", None).await;
        app
    }

    /// Creates a key with this role (and account scope, of existing accounts) through the
    /// engine, like `zeta api-key create`, and returns its secret.
    pub async fn key(&self, role: &str, account_ids: Option<Vec<Uuid>>) -> String {
        self.key_and_id(role, account_ids).await.0
    }

    /// [`TestApp::key`], with the key's id.
    pub async fn key_and_id(&self, role: &str, account_ids: Option<Vec<Uuid>>) -> (String, Uuid) {
        let role = zeta_api::auth::Role::parse(role).expect("a role");
        match zeta_api::auth::create_key(
            &self.engine,
            &format!("test {}", role.as_str()),
            role,
            account_ids,
            None,
            false,
        )
        .await
        .expect("create key")
        {
            zeta_api::auth::KeyCreation::Created { secret, key } => (secret, key.id),
            other => panic!("key not created: {other:?}"),
        }
    }

    pub fn req(&self, method: Method, path: &str) -> TestRequest<'_> {
        TestRequest {
            app: self,
            method,
            path: path.to_string(),
            headers: vec![("authorization".into(), format!("Bearer {}", self.admin_key))],
            body: None,
        }
    }

    pub fn get(&self, path: &str) -> TestRequest<'_> {
        self.req(Method::GET, path)
    }

    pub fn post(&self, path: &str, body: Value) -> TestRequest<'_> {
        self.req(Method::POST, path).json(&body)
    }

    /// Creates an account and returns it.
    pub async fn account(&self, currency: &str) -> Value {
        let r = self
            .post(
                "/v1/accounts",
                json!({"owner_name": "Test Owner", "currency": currency}),
            )
            .send()
            .await;
        assert_eq!(r.status, 201, "create account: {}", r.json);
        r.json
    }

    /// Creates an account holding `balance` and returns its id.
    pub async fn funded(&self, currency: &str, balance: i64) -> String {
        let id = self.account(currency).await["id"]
            .as_str()
            .expect("id")
            .to_string();
        if balance > 0 {
            let r = self
                .post(
                    &format!("/v1/accounts/{id}/credits"),
                    json!({"amount": balance}),
                )
                .send()
                .await;
            assert_eq!(r.status, 201, "fund account: {}", r.json);
        }
        id
    }

    pub async fn balance(&self, id: &str) -> (i64, i64) {
        let r = self.get(&format!("/v1/accounts/{id}")).send().await;
        assert_eq!(r.status, 200, "{}", r.json);
        (
            r.json["balance"].as_i64().expect("balance"),
            r.json["available_balance"].as_i64().expect("available"),
        )
    }

    pub async fn verify(&self) -> VerifyReport {
        self.store.verify().await.expect("verify")
    }

    /// Asserts that `zeta verify` finds nothing broken.
    pub async fn assert_verified(&self) {
        let report = self.verify().await;
        assert!(report.problems.is_empty(), "verify: {:?}", report.problems);
    }
}

/// A request being built.
pub struct TestRequest<'a> {
    app: &'a TestApp,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl TestRequest<'_> {
    pub fn json(mut self, body: &Value) -> Self {
        self.body = Some(serde_json::to_vec(body).expect("json"));
        self.header("content-type", "application/json")
    }

    /// A raw body with no content type set.
    pub fn raw(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn key(self, secret: &str) -> Self {
        self.header("authorization", &format!("Bearer {secret}"))
    }

    pub fn no_auth(mut self) -> Self {
        self.headers.retain(|(n, _)| n != "authorization");
        self
    }

    pub fn idempotency(self, key: &str) -> Self {
        self.header("idempotency-key", key)
    }

    pub async fn send(self) -> TestResponse {
        let router = self.app.router.clone();
        self.send_to(&router).await
    }

    /// Sends the request to another app instance (e.g. a second engine on the same database).
    pub async fn send_to(self, router: &Router) -> TestResponse {
        let mut builder = Request::builder().method(self.method).uri(&self.path);
        for (name, value) in &self.headers {
            builder = builder.header(
                name.as_str(),
                HeaderValue::from_bytes(value.as_bytes()).expect("header value"),
            );
        }
        let request = builder
            .body(self.body.map_or_else(Body::empty, Body::from))
            .expect("request");
        let response = router.clone().oneshot(request).await.expect("infallible");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        TestResponse {
            status,
            headers,
            body,
            json,
        }
    }
}
