//! Faults between the engine and the database: a COMMIT whose answer is lost, whether or not
//! the commit happened, is resolved exactly once; a lost connection is retried, never a 500.
//! A COMMIT held back also shows how overlapping batches share the audit chain, and that batch
//! requests beyond `ZETA_BATCH_CONCURRENCY` wait their turn.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

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
    /// COMMIT waits until the test releases it.
    Held,
}

/// What the test sees of the wrapped transactions, and the gate of held COMMITs.
#[derive(Default)]
struct Probe {
    /// Signalled when a held COMMIT is reached.
    held: tokio::sync::Notify,
    /// Lets a held COMMIT go on.
    release: tokio::sync::Notify,
    /// Signalled after each `write` without audit events.
    written_without_audit: tokio::sync::Notify,
    /// `write` calls with audit events, and `append_audit` calls.
    writes_with_audit: AtomicU32,
    appends: AtomicU32,
}

/// Wraps a store and injects `fault` into the next `remaining` commits.
struct Faulty {
    inner: Arc<dyn Store>,
    fault: Fault,
    remaining: Arc<AtomicU32>,
    probe: Arc<Probe>,
}

struct FaultyTx {
    inner: Box<dyn LedgerTx>,
    fault: Option<Fault>,
    probe: Arc<Probe>,
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
    async fn write(
        &mut self,
        c: &Changes,
        i: &[IdempotencyRecord],
        a: &[AuditEvent],
    ) -> StoreResult<()> {
        self.inner.write(c, i, a).await?;
        if a.is_empty() {
            self.probe.written_without_audit.notify_one();
        } else {
            self.probe.writes_with_audit.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
    async fn append_audit(&mut self, events: &[AuditEvent]) -> StoreResult<()> {
        self.probe.appends.fetch_add(1, Ordering::SeqCst);
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
            Some(Fault::Held) => {
                self.probe.held.notify_one();
                self.probe.release.notified().await;
                self.inner.commit().await
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
    async fn close(&self) {
        self.inner.close().await
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
            probe: self.probe.clone(),
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

async fn faulty_app(
    app: &TestApp,
    fault: Fault,
    count: u32,
    settings: EngineSettings,
) -> (axum::Router, Arc<Engine>, Arc<Probe>) {
    faulty_app_with(app, fault, count, settings, |state| state).await
}

/// [`faulty_app`] with `configure` applied to the application state.
async fn faulty_app_with(
    app: &TestApp,
    fault: Fault,
    count: u32,
    settings: EngineSettings,
    configure: impl FnOnce(AppState) -> AppState,
) -> (axum::Router, Arc<Engine>, Arc<Probe>) {
    let probe = Arc::new(Probe::default());
    let store: Arc<dyn Store> = Arc::new(Faulty {
        inner: app.store.clone(),
        fault,
        remaining: Arc::new(AtomicU32::new(count)),
        probe: probe.clone(),
    });
    let engine = Arc::new(Engine::start(store.clone(), settings));
    (
        zeta_api::router(configure(AppState::new(store, engine.clone()))),
        engine,
        probe,
    )
}

#[tokio::test]
async fn lost_answer_after_commit_is_applied_exactly_once() {
    let app = TestApp::spawn().await;
    let id = app.funded("USD", 0).await;
    let (router, _engine, _) =
        faulty_app(&app, Fault::LostAfterCommit, 1, EngineSettings::default()).await;
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
    let (router, _engine, _) =
        faulty_app(&app, Fault::LostBeforeCommit, 2, EngineSettings::default()).await;
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
    let (router, _engine, _) = faulty_app(
        &app,
        Fault::LostBeforeCommit,
        u32::MAX,
        EngineSettings::default(),
    )
    .await;
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

/// A batch whose COMMIT is pending holds the audit chain, so its events went with its rows;
/// a batch on other accounts meanwhile writes its rows, waits for the chain, then appends its
/// events after the first batch's: one unbroken chain in commit order.
#[tokio::test]
async fn overlapping_batches_append_to_the_chain_in_commit_order() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.funded("USD", 0).await, app.funded("USD", 0).await);
    let before = app.get("/v1/audit-events?limit=200").send().await;
    let start = before.json["data"].as_array().expect("data").len();
    let (router, probe) = held_with_two_in_flight(&app).await;
    let wait = |n| tokio::time::timeout(Duration::from_secs(10), n);

    let first = app
        .post(&format!("/v1/accounts/{a}/credits"), json!({"amount": 70}))
        .send_to(&router);
    let then_second = async {
        wait(probe.held.notified())
            .await
            .expect("the first COMMIT is held");
        assert_eq!(
            probe.writes_with_audit.load(Ordering::SeqCst),
            1,
            "its events went with its rows"
        );
        let second = app
            .post(&format!("/v1/accounts/{b}/credits"), json!({"amount": 30}))
            .send_to(&router);
        let release = async {
            wait(probe.written_without_audit.notified())
                .await
                .expect("the second batch wrote its rows while the first held the chain");
            assert_eq!(
                probe.appends.load(Ordering::SeqCst),
                0,
                "it waits for the chain"
            );
            probe.release.notify_one();
        };
        tokio::join!(second, release).0
    };
    let (first, second) = tokio::join!(first, then_second);
    assert_eq!(first.status, 201, "{}", first.json);
    assert_eq!(second.status, 201, "{}", second.json);
    assert_eq!(
        probe.appends.load(Ordering::SeqCst),
        1,
        "appended after the first"
    );
    assert_eq!(probe.writes_with_audit.load(Ordering::SeqCst), 1);
    assert_eq!(app.balance(&a).await, (70, 70));
    assert_eq!(app.balance(&b).await, (30, 30));

    let after = app.get("/v1/audit-events?limit=200").send().await;
    let events = after.json["data"].as_array().expect("data");
    let ours: Vec<(&str, &str)> = events[start..]
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or(""),
                e["details"]["account_id"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        ours,
        [
            ("transaction.credit", a.as_str()),
            ("transaction.credit", b.as_str())
        ]
    );
    app.assert_verified().await;
}

/// With one place for batch requests, a second batch request waits, body unread, while the
/// first is committing (even one that is refused at once when read), and is answered when the
/// first is done; other requests do not wait.
#[tokio::test]
async fn batch_requests_beyond_the_concurrency_limit_wait_their_turn() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.funded("USD", 100).await, app.funded("USD", 0).await);
    let (router, _engine, probe) =
        faulty_app_with(&app, Fault::Held, 1, EngineSettings::default(), |state| {
            state.with_batch_concurrency(1)
        })
        .await;
    let wait = |n| tokio::time::timeout(Duration::from_secs(10), n);
    let path = "/v1/transfers/batch";
    let item = json!({"from_account_id": a, "to_account_id": b, "amount": 10});

    let first = app
        .post(path, json!({ "transfers": [item] }))
        .send_to(&router);
    let then_second = async {
        wait(probe.held.notified())
            .await
            .expect("the first batch's COMMIT is held");
        let read = app.get(&format!("/v1/accounts/{a}")).send_to(&router).await;
        assert_eq!(
            read.status, 200,
            "other requests do not wait: {}",
            read.json
        );
        let second = app.post(path, json!({ "transfers": [] })).send_to(&router);
        tokio::pin!(second);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut second)
                .await
                .is_err(),
            "the second batch request waits for the first"
        );
        assert_eq!(waiting(&app, &router).await, 1.0, "and is counted");
        probe.release.notify_one();
        second.await
    };
    let (first, second) = tokio::join!(first, then_second);
    assert_eq!(first.status, 200, "{}", first.json);
    assert_eq!(first.json["results"][0]["status"], json!(201));
    assert_eq!(second.status, 422, "{}", second.json);
    assert_eq!(second.json["code"], json!("validation_error"));
    assert_eq!(waiting(&app, &router).await, 0.0);
    assert_eq!(app.balance(&a).await, (90, 90));
    assert_eq!(app.balance(&b).await, (10, 10));
}

/// The `batch_requests_waiting` gauge of `/metrics`.
async fn waiting(app: &TestApp, router: &axum::Router) -> f64 {
    let m = app
        .req(axum::http::Method::GET, "/metrics")
        .no_auth()
        .send_to(router)
        .await;
    let text = String::from_utf8(m.body).expect("utf8");
    text.lines()
        .find_map(|l| l.strip_prefix("batch_requests_waiting "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("batch_requests_waiting missing from:\n{text}"))
}

/// [`faulty_app`] with the first COMMIT held and two transactions in flight.
async fn held_with_two_in_flight(app: &TestApp) -> (axum::Router, Arc<Probe>) {
    let settings = EngineSettings {
        pipeline: 2,
        ..EngineSettings::default()
    };
    let (router, _engine, probe) = faulty_app(app, Fault::Held, 1, settings).await;
    (router, probe)
}

/// [`faulty_app`] with the first COMMIT held and a request timeout of 100 ms.
async fn held_with_short_timeout(app: &TestApp) -> (axum::Router, Arc<Probe>) {
    let (router, _engine, probe) =
        faulty_app_with(app, Fault::Held, 1, EngineSettings::default(), |state| {
            state.with_request_timeout(Duration::from_millis(100))
        })
        .await;
    (router, probe)
}

/// A request that times out once a batch has taken its command is answered with that batch's
/// outcome, not with a 503 that the commit would contradict.
#[tokio::test]
async fn a_request_timing_out_while_its_batch_commits_gets_the_committed_answer() {
    let app = TestApp::spawn().await;
    let id = app.funded("USD", 0).await;
    let (router, probe) = held_with_short_timeout(&app).await;
    let wait = |n| tokio::time::timeout(Duration::from_secs(10), n);
    let request = app
        .post(&format!("/v1/accounts/{id}/credits"), json!({"amount": 40}))
        .send_to(&router);
    let release = async {
        wait(probe.held.notified())
            .await
            .expect("the COMMIT is held");
        // Three times the request timeout: it has fired by now.
        tokio::time::sleep(Duration::from_millis(300)).await;
        probe.release.notify_one();
    };
    let (r, ()) = tokio::join!(request, release);
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["balance_after"], 40);
    assert_eq!(app.balance(&id).await, (40, 40));
    app.assert_verified().await;
}

/// How a keyed credit's first attempt leaves while its command waits in the queue.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leaves {
    /// Its request times out (503).
    TimesOut,
    /// Its client drops the request, well before the timeout.
    GoesAway,
}

/// A keyed credit queued behind a held batch, whose first attempt leaves as `leaves` says: its
/// command is withdrawn (it never runs) and its key is free at once, so the retry queues too
/// (and times out, withdrawn) instead of being refused as in use; once the engine is free, the
/// same request runs for the first time.
async fn a_queued_keyed_credit_that(leaves: Leaves) {
    let app = TestApp::spawn().await;
    let (a, b) = (app.funded("USD", 0).await, app.funded("USD", 0).await);
    let (router, probe) = held_with_short_timeout(&app).await;
    let wait = |n| tokio::time::timeout(Duration::from_secs(10), n);
    let first = app
        .post(&format!("/v1/accounts/{a}/credits"), json!({"amount": 40}))
        .send_to(&router);
    let keyed = || {
        app.post(&format!("/v1/accounts/{b}/credits"), json!({"amount": 25}))
            .header("idempotency-key", "queued-1")
            .send_to(&router)
    };
    let queued_then_release = async {
        wait(probe.held.notified())
            .await
            .expect("the first COMMIT is held");
        // One transaction at a time: this credit waits in the queue.
        match leaves {
            Leaves::TimesOut => {
                let second = keyed().await;
                assert_eq!(second.status, 503, "{}", second.json);
                assert_eq!(second.code(), "service_unavailable");
            }
            Leaves::GoesAway => assert!(
                tokio::time::timeout(Duration::from_millis(30), keyed())
                    .await
                    .is_err(),
                "it waits in the queue"
            ),
        }
        let retry = keyed().await;
        probe.release.notify_one();
        retry
    };
    let (first, retry) = tokio::join!(first, queued_then_release);
    assert_eq!(first.status, 201, "{}", first.json);
    assert_eq!(retry.status, 503, "{}", retry.json);
    assert_eq!(retry.code(), "service_unavailable");
    let last = keyed().await;
    assert_eq!(last.status, 201, "{}", last.json);
    assert_eq!(last.header("idempotent-replayed"), None);
    assert_eq!(last.json["balance_after"], 25);
    assert_eq!(app.balance(&a).await, (40, 40));
    assert_eq!(app.balance(&b).await, (25, 25));
    app.assert_verified().await;
}

/// A request that times out while its command still waits in the queue withdraws it: the 503
/// is true, the command never runs, and its idempotency key is free again at once.
#[tokio::test]
async fn a_request_timing_out_in_the_queue_changes_nothing() {
    a_queued_keyed_credit_that(Leaves::TimesOut).await;
}

/// A client that goes away while its keyed command still waits in the queue withdraws it: the
/// command never runs and its key is free at once for the retry.
#[tokio::test]
async fn a_client_going_away_in_the_queue_frees_its_key() {
    a_queued_keyed_credit_that(Leaves::GoesAway).await;
}

/// A client that goes away while its keyed command is committing, and retries: the key stays
/// taken (409 `idempotency_key_in_use`) until the command is answered, then the retry replays
/// it. Never two commands with one key in the engine at once.
#[tokio::test]
async fn a_keyed_command_keeps_its_key_after_its_client_went_away() {
    let app = TestApp::spawn().await;
    let id = app.funded("USD", 0).await;
    let (router, _engine, probe) =
        faulty_app(&app, Fault::Held, 1, EngineSettings::default()).await;
    let path = format!("/v1/accounts/{id}/credits");
    let request = || {
        app.post(&path, json!({"amount": 40}))
            .header("idempotency-key", "went-away-1")
            .send_to(&router)
    };
    tokio::select! {
        r = request() => panic!("answered while its COMMIT is held: {}", r.json),
        held = tokio::time::timeout(Duration::from_secs(10), probe.held.notified()) => {
            held.expect("the COMMIT is held");
        }
    }
    // The first request is gone; its command is still committing.
    let retry = tokio::time::timeout(Duration::from_secs(5), request())
        .await
        .expect("the retry is answered at once");
    assert_eq!(retry.status, 409, "{}", retry.json);
    assert_eq!(retry.code(), "idempotency_key_in_use");
    probe.release.notify_one();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let replay = loop {
        let r = request().await;
        if r.status != 409 {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "the key stays in use");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(replay.status, 201, "{}", replay.json);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.json["balance_after"], 40);
    assert_eq!(app.balance(&id).await, (40, 40));
    app.assert_verified().await;
}

/// One key twice in one batch (the engine used directly, without the API's claim): the second
/// is answered from the first, as if it came after it committed, and the batch commits.
#[tokio::test]
async fn one_key_twice_in_a_batch_is_applied_once() {
    let app = TestApp::spawn().await;
    let id: Uuid = app.funded("USD", 0).await.parse().expect("id");
    let (_router, engine, probe) =
        faulty_app(&app, Fault::Held, 1, EngineSettings::default()).await;
    let credit = |amount| zeta_ledger::Envelope {
        command: zeta_ledger::Command::Credit {
            account_id: id,
            amount: zeta_ledger::Amount::new(amount).expect("amount"),
            description: None,
            reference: None,
        },
        scope: None,
        actor: None,
    };
    let spec = |hash: u8| zeta_engine::IdempotencySpec {
        scope: Uuid::nil(),
        key: "twice".into(),
        request_hash: vec![hash],
        render: Arc::new(|_: &zeta_ledger::Outcome| zeta_engine::StoredResponse {
            status: 201,
            body: b"first".to_vec(),
        }),
        claim: None,
    };
    // The first command's COMMIT is held, so the next three queue up for one batch.
    let blocker = engine.enqueue(credit(1), None).await.expect("queued");
    tokio::time::timeout(Duration::from_secs(10), probe.held.notified())
        .await
        .expect("the COMMIT is held");
    let once = engine
        .enqueue(credit(10), Some(spec(1)))
        .await
        .expect("queued");
    let again = engine
        .enqueue(credit(10), Some(spec(1)))
        .await
        .expect("queued");
    let other = engine
        .enqueue(credit(10), Some(spec(2)))
        .await
        .expect("queued");
    probe.release.notify_one();
    assert!(matches!(
        blocker.reply().await,
        Ok(zeta_engine::Reply::Applied { outcome: Ok(_), .. })
    ));
    match once.reply().await {
        Ok(zeta_engine::Reply::Applied {
            outcome: Ok(_),
            stored: Some(stored),
        }) => assert_eq!(stored.body, b"first"),
        other => panic!("the first is applied: {other:?}"),
    }
    match again.reply().await {
        Ok(zeta_engine::Reply::Replay(record)) => assert_eq!(record.body, b"first"),
        other => panic!("the second replays the first: {other:?}"),
    }
    assert!(matches!(
        other.reply().await,
        Ok(zeta_engine::Reply::KeyReused)
    ));
    assert_eq!(app.balance(&id.to_string()).await, (11, 11));
    app.assert_verified().await;
}

/// Sends `method path body` while a credit's COMMIT is held with two transactions in flight,
/// checks that it waited for that batch instead of overlapping it (nothing written until the
/// COMMIT, its audit events then written with its rows), and returns its response.
async fn runs_after_the_held_batch(
    app: &TestApp,
    account: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> zeta_testkit::TestResponse {
    let (router, probe) = held_with_two_in_flight(app).await;
    let wait = |n| tokio::time::timeout(Duration::from_secs(10), n);
    let first = app
        .post(
            &format!("/v1/accounts/{account}/credits"),
            json!({"amount": 70}),
        )
        .send_to(&router);
    let then_second = async {
        wait(probe.held.notified())
            .await
            .expect("the first COMMIT is held");
        let request = app.req(method.parse().expect("method"), path);
        let second = match &body {
            Some(body) => request.json(body),
            None => request,
        }
        .send_to(&router);
        tokio::pin!(second);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut second)
                .await
                .is_err(),
            "{method} {path} waits for the running batch"
        );
        assert!(
            tokio::time::timeout(Duration::ZERO, probe.written_without_audit.notified())
                .await
                .is_err(),
            "and has written nothing"
        );
        probe.release.notify_one();
        second.await
    };
    let (first, second) = tokio::join!(first, then_second);
    assert_eq!(first.status, 201, "{}", first.json);
    assert_eq!(
        probe.appends.load(Ordering::SeqCst),
        0,
        "it ran alone: its events went with its rows"
    );
    assert_eq!(probe.writes_with_audit.load(Ordering::SeqCst), 2);
    second
}

/// A batch that inserts a unique value a client chose (an account number) or changes an API key
/// never overlaps another: were both to insert that value or change that key, the one holding
/// the audit chain would wait in the database for the other, which waits for the chain (until
/// the lock timeout). It starts once the running batch has committed.
#[tokio::test]
async fn batches_creating_chosen_numbers_or_changing_keys_do_not_overlap() {
    let app = TestApp::spawn().await;
    let a = app.funded("USD", 0).await;
    let account =
        json!({"owner_name": "Chosen", "currency": "USD", "account_number": "CHOSEN0001"});
    let created = runs_after_the_held_batch(&app, &a, "POST", "/v1/accounts", Some(account)).await;
    assert_eq!(created.status, 201, "{}", created.json);
    assert_eq!(created.json["account_number"], "CHOSEN0001");

    let (_, viewer) = app.key_and_id("viewer", None).await;
    let path = format!("/v1/api-keys/{viewer}");
    let revoked = runs_after_the_held_batch(&app, &a, "DELETE", &path, None).await;
    assert_eq!(revoked.status, 204, "{}", revoked.json);
    app.assert_verified().await;
}
