//! Many concurrent clients on a few hot accounts: every invariant holds afterwards, checked by
//! `verify` and by direct SQL, and no request fails with a 5xx (no serialization or deadlock
//! error ever reaches a client).

use std::sync::Arc;

use serde_json::json;
use zeta_testkit::{Backend, TestApp};

const CLIENTS: usize = 32;
const REQUESTS_PER_CLIENT: usize = 40;
const START_BALANCE: i64 = 10_000;

/// A tiny deterministic generator (no sleeps, no real randomness needed for coverage).
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Random transfers among a few accounts plus racing debits on one account, through `apps`
/// (one or more app instances sharing the database).
pub(crate) async fn hammer(app: &Arc<TestApp>, instances: Vec<axum::Router>) {
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(app.funded("USD", START_BALANCE).await);
    }
    let hot = app.funded("USD", 5_000).await;
    let ids = Arc::new(ids);
    let expected_total = 4 * START_BALANCE + 5_000;
    let debited = Arc::new(std::sync::atomic::AtomicI64::new(0));

    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let app = app.clone();
        let ids = ids.clone();
        let hot = hot.clone();
        let router = instances[client % instances.len()].clone();
        let debited = debited.clone();
        tasks.push(tokio::spawn(async move {
            let mut seed = 0x9E37_79B9_7F4A_7C15_u64 ^ (client as u64 + 1);
            let mut statuses = Vec::new();
            for i in 0..REQUESTS_PER_CLIENT {
                let r = next(&mut seed);
                let request = if client % 4 == 0 && i % 2 == 0 {
                    // Racing debits on the one hot account.
                    app.post(&format!("/v1/accounts/{hot}/debits"), json!({"amount": 37}))
                } else {
                    let from = &ids[(r % 4) as usize];
                    let to = &ids[((r >> 8) % 4) as usize];
                    let amount = 1 + (r >> 16) % 900;
                    app.post(
                        "/v1/transfers",
                        json!({"from_account_id": from, "to_account_id": to, "amount": amount}),
                    )
                };
                let response = request.send_to(&router).await;
                if response.status == 201
                    && response.json["type"] == "debit"
                    && response.json["account_id"] == hot.as_str()
                {
                    debited.fetch_add(37, std::sync::atomic::Ordering::Relaxed);
                }
                statuses.push((response.status, response.code().to_string()));
            }
            statuses
        }));
    }
    let mut created = 0;
    for t in tasks {
        for (status, code) in t.await.expect("client task") {
            match (status, code.as_str()) {
                (201, _) => created += 1,
                (422, "insufficient_funds" | "same_account") => {}
                other => panic!("unexpected response {other:?}"),
            }
        }
    }
    assert!(
        created > CLIENTS * REQUESTS_PER_CLIENT / 2,
        "most requests succeed: {created}"
    );
    let debited = debited.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(app.balance(&hot).await.0, 5_000 - debited);
    app.assert_verified().await;
    // `verify` ran the same checks through the store; PostgreSQL is also checked directly.
    if app.db.backend == Backend::Postgres {
        app.db
            .assert_ledger_invariants(expected_total - debited)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_clients_keep_every_invariant() {
    let app = Arc::new(crate::spawn().await);
    let routers = vec![app.router.clone()];
    hammer(&app, routers).await;
}
