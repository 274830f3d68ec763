//! Faults between the engine and the database: a COMMIT whose answer is lost, whether or not
//! the commit happened, is resolved exactly once; a lost connection is retried, never a 500.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;
use zeta_api::AppState;
use zeta_engine::{Engine, EngineSettings};
use zeta_ledger::audit::{AuditEvent, ChainHead};
use zeta_ledger::{Account, Changes, Transaction, Transfer, TransferView};
use zeta_store::{
    AccountFilter, ApiKeyRecord, IdempotencyRecord, KeyRefs, LedgerTx, Store, StoreError,
    StoreResult, TransactionFilter, VerifyReport,
};
use zeta_testkit::TestApp;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// COMMIT succeeds but the answer is "connection lost".
    LostAfterCommit,
    /// The connection is lost before COMMIT: nothing is committed.
    LostBeforeCommit,
}

/// Wraps a store and injects `fault` into the next `remaining` commits.
struct Faulty {
    inner: Arc<dyn Store>,
    fault: Fault,
    remaining: Arc<AtomicU32>,
}

struct FaultyTx {
    inner: Box<dyn LedgerTx>,
    fault: Option<Fault>,
}

#[async_trait]
impl LedgerTx for FaultyTx {
    async fn idempotency_lookup(
        &mut self,
        k: &[(Uuid, String)],
    ) -> StoreResult<Vec<IdempotencyRecord>> {
        self.inner.idempotency_lookup(k).await
    }
    async fn load_refs(
        &mut self,
        t: &[Uuid],
        tr: &[Uuid],
    ) -> StoreResult<(Vec<Transaction>, Vec<Transfer>)> {
        self.inner.load_refs(t, tr).await
    }
    async fn lock_accounts(&mut self, ids: &[Uuid]) -> StoreResult<Vec<Account>> {
        self.inner.lock_accounts(ids).await
    }
    async fn taken_account_numbers(&mut self, n: &[String]) -> StoreResult<Vec<String>> {
        self.inner.taken_account_numbers(n).await
    }
    async fn api_keys(&mut self, ids: &[Uuid], hashes: &[Vec<u8>]) -> StoreResult<KeyRefs> {
        self.inner.api_keys(ids, hashes).await
    }
    async fn audit_head(&mut self) -> StoreResult<Option<ChainHead>> {
        self.inner.audit_head().await
    }
    async fn write(&mut self, c: &Changes, i: &[IdempotencyRecord]) -> StoreResult<()> {
        self.inner.write(c, i).await
    }
    async fn append_audit(&mut self, events: &[AuditEvent]) -> StoreResult<()> {
        self.inner.append_audit(events).await
    }
    async fn mark_batch(&mut self, id: Uuid) -> StoreResult<()> {
        self.inner.mark_batch(id).await
    }
    async fn commit(self: Box<Self>) -> StoreResult<()> {
        match self.fault {
            None => self.inner.commit().await,
            Some(Fault::LostAfterCommit) => {
                self.inner.commit().await?;
                Err(StoreError::Unavailable(
                    "connection reset (injected)".into(),
                ))
            }
            Some(Fault::LostBeforeCommit) => {
                drop(self.inner);
                Err(StoreError::Unavailable(
                    "connection reset (injected)".into(),
                ))
            }
        }
    }
}

#[async_trait]
impl Store for Faulty {
    async fn migrate(&self) -> StoreResult<()> {
        self.inner.migrate().await
    }
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
    async fn begin(&self) -> StoreResult<Box<dyn LedgerTx>> {
        let fault = self
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
            .then_some(self.fault);
        Ok(Box::new(FaultyTx {
            inner: self.inner.begin().await?,
            fault,
        }))
    }
    async fn get_account(&self, id: Uuid) -> StoreResult<Option<Account>> {
        self.inner.get_account(id).await
    }
    async fn list_accounts(&self, f: &AccountFilter) -> StoreResult<Vec<Account>> {
        self.inner.list_accounts(f).await
    }
    async fn get_transaction(&self, id: Uuid) -> StoreResult<Option<Transaction>> {
        self.inner.get_transaction(id).await
    }
    async fn list_transactions(&self, f: &TransactionFilter) -> StoreResult<Vec<Transaction>> {
        self.inner.list_transactions(f).await
    }
    async fn get_transfer(&self, id: Uuid) -> StoreResult<Option<TransferView>> {
        self.inner.get_transfer(id).await
    }
    async fn balance_at(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<i64> {
        self.inner.balance_at(id, at).await
    }
    async fn get_idempotency(&self, s: Uuid, k: &str) -> StoreResult<Option<IdempotencyRecord>> {
        self.inner.get_idempotency(s, k).await
    }
    async fn find_api_keys(&self, h: &[Vec<u8>]) -> StoreResult<Vec<(Vec<u8>, ApiKeyRecord)>> {
        self.inner.find_api_keys(h).await
    }
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        self.inner.list_api_keys().await
    }
    async fn list_audit_events(&self, after: i64, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        self.inner.list_audit_events(after, limit).await
    }
    async fn verify(&self) -> StoreResult<VerifyReport> {
        self.inner.verify().await
    }
    async fn resolve_batch(&self, id: Uuid) -> StoreResult<Option<bool>> {
        self.inner.resolve_batch(id).await
    }
}

async fn faulty_app(app: &TestApp, fault: Fault, count: u32) -> (axum::Router, Arc<Engine>) {
    let store: Arc<dyn Store> = Arc::new(Faulty {
        inner: app.store.clone(),
        fault,
        remaining: Arc::new(AtomicU32::new(count)),
    });
    let engine = Arc::new(Engine::start(store.clone(), EngineSettings::default()));
    (
        zeta_api::router(AppState::new(store, engine.clone())),
        engine,
    )
}

#[tokio::test]
async fn lost_answer_after_commit_is_applied_exactly_once() {
    let app = TestApp::spawn().await;
    let id = app.funded("USD", 0).await;
    let (router, _engine) = faulty_app(&app, Fault::LostAfterCommit, 1).await;
    let r = app
        .post(
            &format!("/v1/accounts/{id}/credits"),
            json!({"amount": 250}),
        )
        .send_to(&router)
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["balance_after"], 250);
    assert_eq!(
        app.balance(&id).await,
        (250, 250),
        "committed once, not retried"
    );
    app.assert_verified().await;
}

#[tokio::test]
async fn lost_connection_before_commit_is_retried_once() {
    let app = TestApp::spawn().await;
    let id = app.funded("USD", 0).await;
    let (router, _engine) = faulty_app(&app, Fault::LostBeforeCommit, 2).await;
    let r = app
        .post(&format!("/v1/accounts/{id}/credits"), json!({"amount": 90}))
        .send_to(&router)
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(app.balance(&id).await, (90, 90));
    app.assert_verified().await;
}

#[tokio::test]
async fn a_database_that_stays_unreachable_gives_503_with_retry_after() {
    let app = TestApp::spawn().await;
    let id = app.funded("USD", 0).await;
    let (router, _engine) = faulty_app(&app, Fault::LostBeforeCommit, u32::MAX).await;
    let r = app
        .post(&format!("/v1/accounts/{id}/credits"), json!({"amount": 90}))
        .send_to(&router)
        .await;
    assert_eq!(r.status, 503, "{}", r.json);
    assert_eq!(r.code(), "service_unavailable");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        !String::from_utf8_lossy(&r.body).contains("injected"),
        "no internal detail"
    );
    assert_eq!(app.balance(&id).await, (0, 0), "nothing happened");
}
