//! PostgreSQL only: several API instances (engines and pools) on one database. Three real `zeta`
//! processes on one database: `three_processes_on_one_database_keep_every_invariant` in
//! `tests/process.rs`.

use std::sync::Arc;

use axum::http::Method;
use zeta_api::AppState;
use zeta_engine::{Engine, EngineSettings};
use zeta_store::Store;

/// Two API instances (two engines, two pools) on one database: row locks and retries keep it
/// correct, and no serialization failure reaches a client.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_database_keep_every_invariant() {
    let app = Arc::new(zeta_testkit::TestApp::spawn().await);
    let store: Arc<dyn Store> = app.store.clone();
    let second =
        zeta_store_postgres::PgStore::connect(&app.db.url, &Default::default()).expect("store");
    let second: Arc<dyn Store> = Arc::new(second);
    let engine = Arc::new(Engine::start(second.clone(), EngineSettings::default()));
    let other = zeta_api::router(AppState::new(second, engine.clone()));
    let _ = store;
    crate::concurrency::hammer(&app, vec![app.router.clone(), other]).await;
    engine.shutdown().await;
    let r = app.req(Method::GET, "/health/ready").no_auth().send().await;
    assert_eq!(r.status, 200);
}

/// A key revoked through one instance is refused by another on its very next request (no
/// per-instance key cache), and both instances append to one unbroken audit chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_and_the_audit_chain_span_instances() {
    let app = Arc::new(zeta_testkit::TestApp::spawn().await);
    let second: Arc<dyn Store> = Arc::new(
        zeta_store_postgres::PgStore::connect(&app.db.url, &Default::default()).expect("store"),
    );
    let engine = Arc::new(Engine::start(second.clone(), EngineSettings::default()));
    let other = zeta_api::router(AppState::new(second, engine.clone()));

    let key = app
        .post(
            "/v1/api-keys",
            serde_json::json!({"name": "roaming", "role": "operator"}),
        )
        .send()
        .await;
    let (id, secret) = (key.id(), key.json["key"].as_str().expect("key").to_string());
    let r = app.get("/v1/accounts").key(&secret).send_to(&other).await;
    assert_eq!(r.status, 200);
    // Both instances append events at the same time.
    let a = app.funded("USD", 1_000).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let router = if i % 2 == 0 {
            app.router.clone()
        } else {
            other.clone()
        };
        let (app, path) = (app.clone(), format!("/v1/accounts/{a}/credits"));
        tasks.spawn(async move {
            app.post(&path, serde_json::json!({"amount": 1}))
                .send_to(&router)
                .await
                .status
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.expect("task"), 201);
    }
    let revoked = app
        .req(Method::DELETE, &format!("/v1/api-keys/{id}"))
        .send()
        .await;
    assert_eq!(revoked.status, 204);
    let r = app.get("/v1/accounts").key(&secret).send_to(&other).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "unauthorized");
    engine.shutdown().await;
    assert_eq!(app.balance(&a).await, (1_040, 1_040));
    let report = app.verify().await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    // key create, account create, funding credit, 40 credits, revoke — and the test's admin key.
    assert_eq!(report.audit_events, 45);
}

/// Closing a store (at shutdown) ends its connections; another instance's are untouched.
#[tokio::test]
async fn a_closed_store_has_no_connection_left() {
    let app = zeta_testkit::TestApp::spawn().await;
    let second =
        zeta_store_postgres::PgStore::connect(&app.db.url, &Default::default()).expect("store");
    second.ping().await.expect("open");
    assert_eq!(second.pool_stats().0, 1);
    second.close().await;
    assert_eq!(second.pool_stats().0, 0);
    let err = second.ping().await.expect_err("closed");
    assert!(
        matches!(err, zeta_store::StoreError::Unavailable(_)),
        "{err:?}"
    );
    app.store.ping().await.expect("the other instance");
}
