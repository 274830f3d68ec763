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
