//! The SQLite store driven the way the ledger engine drives it, on a temporary database file.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;
use zeta_engine::{Engine, EngineSettings, Reply};
use zeta_ledger::{
    Account, AccountPatch, AccountStatus, Amount, Changes, Command, Effect, Envelope,
    FailureReason, LedgerError, NewAccount, NewApiKey, Outcome, Transaction, TransactionStatus,
    TransactionType, Transfer, TransferSpec, TransferStatus, Working, now_micros,
};
use zeta_store::{
    AccountFilter, ApiKeyRecord, IdempotencyRecord, PURGE_CHUNK, Store, StoreError,
    TransactionFilter,
};
use zeta_store_sqlite::{SqliteSettings, SqliteStore};

// ---- harness ---------------------------------------------------------------------------------

/// A database file in the temp directory, removed (with its WAL files) when dropped.
struct TempDb {
    path: PathBuf,
}

impl TempDb {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("zeta-sqlite-test-{}.db", Uuid::new_v4()));
        Self { path }
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = self.path.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(name));
        }
    }
}

async fn open(db: &TempDb) -> SqliteStore {
    let store = SqliteStore::open(&db.url(), &SqliteSettings::default())
        .await
        .expect("open");
    store.migrate().await.expect("migrate");
    store
}

fn env(command: Command) -> Envelope {
    Envelope {
        command,
        scope: None,
        actor: None,
    }
}

fn amount(n: i64) -> Amount {
    Amount::new(n).expect("valid amount")
}

/// Every row version a batch wrote, latest last: what the database must hold.
#[derive(Default)]
struct Written {
    accounts: BTreeMap<Uuid, Account>,
    transactions: BTreeMap<Uuid, Transaction>,
    transfers: BTreeMap<Uuid, Transfer>,
}

impl Written {
    fn absorb(&mut self, c: &Changes) {
        for a in c.new_accounts.iter().chain(&c.updated_accounts) {
            self.accounts.insert(a.id, a.clone());
        }
        for t in c.new_transactions.iter().chain(&c.updated_transactions) {
            self.transactions.insert(t.id, t.clone());
        }
        for t in c.new_transfers.iter().chain(&c.updated_transfers) {
            self.transfers.insert(t.id, t.clone());
        }
    }
}

/// One batch, step by step as `zeta_engine` runs it: idempotency_lookup → load_refs →
/// lock_accounts → taken_account_numbers → write → commit.
async fn run_batch(
    store: &SqliteStore,
    written: &mut Written,
    envelopes: &[Envelope],
    idempotency: &[IdempotencyRecord],
) -> Vec<Outcome> {
    let mut tx = store.begin().await.expect("begin");
    if !idempotency.is_empty() {
        let keys: Vec<(Uuid, String)> = idempotency
            .iter()
            .map(|r| (r.scope, r.key.clone()))
            .collect();
        let found = tx.idempotency_lookup(&keys).await.expect("lookup");
        assert!(found.is_empty(), "fresh keys: {found:?}");
    }
    let commands = || envelopes.iter().map(|e| &e.command);
    let transaction_ids: Vec<Uuid> = commands().filter_map(Command::transaction_ref).collect();
    let transfer_ids: Vec<Uuid> = commands().filter_map(Command::transfer_ref).collect();
    let (transactions, transfers) = if transaction_ids.is_empty() && transfer_ids.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        tx.load_refs(&transaction_ids, &transfer_ids)
            .await
            .expect("load_refs")
    };
    let mut account_ids = Vec::new();
    for command in commands() {
        command.account_ids(&mut account_ids);
    }
    account_ids.extend(transactions.iter().map(|t| t.account_id));
    account_ids.extend(
        transfers
            .iter()
            .flat_map(|t| [t.from_account_id, t.to_account_id]),
    );
    account_ids.sort_unstable();
    account_ids.dedup();
    let accounts = if account_ids.is_empty() {
        Vec::new()
    } else {
        tx.lock_accounts(&account_ids).await.expect("lock")
    };
    let numbers: Vec<String> = commands()
        .filter_map(|c| match c {
            Command::CreateAccount(new) => new.account_number.clone(),
            _ => None,
        })
        .collect();
    let taken = if numbers.is_empty() {
        Vec::new()
    } else {
        tx.taken_account_numbers(&numbers).await.expect("taken")
    };
    let mut working = Working::new(now_micros(), accounts, transactions, transfers, taken);
    let outcomes: Vec<Outcome> = envelopes.iter().map(|e| working.apply(e)).collect();
    let changes = working.into_changes();
    tx.write(&changes, idempotency, &[]).await.expect("write");
    tx.commit().await.expect("commit");
    written.absorb(&changes);
    outcomes
}

async fn run_one(store: &SqliteStore, written: &mut Written, command: Command) -> Outcome {
    run_batch(store, written, &[env(command)], &[])
        .await
        .remove(0)
}

fn new_account(number: Option<&str>, owner: &str, currency: &str) -> Command {
    let metadata = json!({"owner": owner, "tier": "gold", "nested": {"list": [1, 2.5, "é"]}});
    Command::CreateAccount(NewAccount {
        id: Uuid::now_v7(),
        account_number: number.map(str::to_owned),
        owner_name: owner.to_owned(),
        currency: currency.parse().expect("currency"),
        metadata: metadata.as_object().cloned().unwrap_or_default(),
    })
}

fn account_of(outcome: Outcome) -> Account {
    match outcome {
        Ok(Effect::Account(a)) => a,
        other => panic!("expected an account, got {other:?}"),
    }
}

fn transaction_of(outcome: Outcome) -> Transaction {
    match outcome {
        Ok(Effect::Transaction(t) | Effect::LegReversal { leg: t, .. }) => t,
        other => panic!("expected a transaction, got {other:?}"),
    }
}

fn transfer_of(outcome: Outcome) -> zeta_ledger::TransferView {
    match outcome {
        Ok(Effect::Transfer(v)) => *v,
        other => panic!("expected a transfer, got {other:?}"),
    }
}

fn credit(account_id: Uuid, n: i64) -> Command {
    Command::Credit {
        account_id,
        amount: amount(n),
        description: Some(format!("credit {n}")),
        reference: Some("ref-1".into()),
    }
}

fn transfer(from: Uuid, to: Uuid, n: i64) -> Command {
    Command::Transfer(TransferSpec {
        from_account_id: from,
        to_account_id: to,
        amount: amount(n),
        description: Some("rent".into()),
        reference: None,
    })
}

/// Reads back every row the batches wrote and compares every field.
async fn assert_stored(store: &SqliteStore, written: &Written) {
    for (id, account) in &written.accounts {
        let stored = store.get_account(*id).await.expect("get_account");
        assert_eq!(stored.as_ref(), Some(account), "account {id}");
    }
    for (id, transaction) in &written.transactions {
        let stored = store.get_transaction(*id).await.expect("get_transaction");
        assert_eq!(stored.as_ref(), Some(transaction), "transaction {id}");
    }
    for (id, transfer) in &written.transfers {
        let view = store
            .get_transfer(*id)
            .await
            .expect("get_transfer")
            .expect("transfer exists");
        assert_eq!(&view.transfer, transfer, "transfer {id}");
        assert_eq!(
            Some(&view.debit),
            written.transactions.get(&transfer.debit_id)
        );
        assert_eq!(
            view.credit.as_ref(),
            transfer
                .credit_id
                .and_then(|c| written.transactions.get(&c))
        );
    }
}

fn filter(account_id: Uuid) -> TransactionFilter {
    TransactionFilter {
        account_id,
        status: None,
        kind: None,
        since: None,
        until: None,
        before_seq: None,
        limit: 50,
    }
}

// ---- the story -------------------------------------------------------------------------------

#[tokio::test]
async fn every_operation_round_trips_through_a_reopen() {
    let db = TempDb::new();
    let store = open(&db).await;
    let mut w = Written::default();

    // Accounts, two in one batch.
    let created = run_batch(
        &store,
        &mut w,
        &[
            env(new_account(Some("ACCT00000001"), "Ada Lovelace", "USD")),
            env(new_account(None, "Bob Ünicode ✓", "USD")),
        ],
        &[],
    )
    .await;
    let a = account_of(created[0].clone());
    let b = account_of(created[1].clone());
    assert_eq!(a.account_number, "ACCT00000001");
    let c = account_of(run_one(&store, &mut w, new_account(None, "Carl", "EUR")).await);

    // Credit, transfer, hold + capture, hold + void, a recorded decline.
    let credited = transaction_of(run_one(&store, &mut w, credit(a.id, 10_000)).await);
    assert_eq!(credited.balance_after, Some(10_000));
    let moved = transfer_of(run_one(&store, &mut w, transfer(a.id, b.id, 2_500)).await);
    assert_eq!(moved.transfer.status, TransferStatus::Completed);
    let hold = |n| Command::Debit {
        account_id: a.id,
        amount: amount(n),
        description: None,
        reference: None,
        hold: true,
    };
    let held = transaction_of(run_one(&store, &mut w, hold(1_000)).await);
    assert_eq!(held.status, TransactionStatus::Pending);
    let captured = transaction_of(
        run_one(
            &store,
            &mut w,
            Command::Capture {
                transaction_id: held.id,
            },
        )
        .await,
    );
    assert_eq!(captured.status, TransactionStatus::Completed);
    let held = transaction_of(run_one(&store, &mut w, hold(500)).await);
    let voided = transaction_of(
        run_one(
            &store,
            &mut w,
            Command::Void {
                transaction_id: held.id,
            },
        )
        .await,
    );
    assert_eq!(voided.failure_reason, Some(FailureReason::Voided));
    let short = run_one(
        &store,
        &mut w,
        Command::Debit {
            account_id: a.id,
            amount: amount(1_000_000),
            description: None,
            reference: None,
            hold: false,
        },
    )
    .await;
    assert!(matches!(
        short,
        Err(LedgerError::InsufficientFunds {
            transaction_id: Some(_),
            ..
        })
    ));
    let declined = run_one(&store, &mut w, transfer(b.id, a.id, 1_000_000)).await;
    assert!(matches!(
        declined,
        Err(LedgerError::InsufficientFunds {
            transfer_id: Some(_),
            ..
        })
    ));
    let mismatch = run_one(&store, &mut w, transfer(a.id, c.id, 1)).await;
    assert!(matches!(
        mismatch,
        Err(LedgerError::CurrencyMismatch { .. })
    ));

    // Reversals: a whole transfer through one of its legs, and a plain credit.
    let compensation = transaction_of(
        run_one(
            &store,
            &mut w,
            Command::ReverseTransaction {
                transaction_id: moved.credit.as_ref().expect("credit leg").id,
                reason: Some("mistake".into()),
            },
        )
        .await,
    );
    assert_eq!(compensation.kind, TransactionType::Debit);
    let b_credit = transaction_of(run_one(&store, &mut w, credit(b.id, 300)).await);
    let reversed = transaction_of(
        run_one(
            &store,
            &mut w,
            Command::ReverseTransaction {
                transaction_id: b_credit.id,
                reason: None,
            },
        )
        .await,
    );
    assert_eq!(reversed.reverses_id, Some(b_credit.id));

    // A metadata + status change.
    let a_now = store.get_account(a.id).await.unwrap().unwrap();
    let frozen = account_of(
        run_one(
            &store,
            &mut w,
            Command::UpdateAccount {
                account_id: c.id,
                if_match: 1,
                patch: AccountPatch {
                    owner_name: Some("Carl Jr.".into()),
                    status: Some(AccountStatus::Frozen),
                    metadata: Some(json!({"k": [true, null]}).as_object().cloned().unwrap()),
                },
            },
        )
        .await,
    );
    assert_eq!(frozen.version, 2);

    assert_eq!(a_now.balance, 10_000 - 2_500 - 1_000 + 2_500);
    assert_stored(&store, &w).await;
    let report = store.verify().await.expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.accounts, 3);
    assert_eq!(
        report.transactions,
        i64::try_from(w.transactions.len()).unwrap()
    );
    assert_eq!(report.total_balance, 10_000 + 300 - 300 - 1_000);

    // Reopen the file: everything reads back equal, to the microsecond.
    store.pool().close().await;
    drop(store);
    let store = open(&db).await;
    assert_stored(&store, &w).await;
    let reversed_transfer = store
        .get_transfer(moved.transfer.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reversed_transfer.transfer.status, TransferStatus::Reversed);
    assert!(
        w.transactions
            .values()
            .any(|t| t.created_at.nanosecond() % 1_000_000 != 0)
    );
    assert!(store.get_account(Uuid::now_v7()).await.unwrap().is_none());
    assert!(
        store
            .get_transaction(Uuid::now_v7())
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.get_transfer(Uuid::now_v7()).await.unwrap().is_none());
    store.ping().await.expect("ping");
    // Migrating again is a no-op.
    store.migrate().await.expect("second migrate");
}

/// Batches with more rows per table than one multi-row statement carries (256), where balances
/// and statuses change in the same write: every row reads back exactly.
#[tokio::test]
async fn batches_larger_than_one_statement_round_trip() {
    let db = TempDb::new();
    let store = open(&db).await;
    let mut written = Written::default();
    let creates: Vec<Envelope> = (0..600)
        .map(|i| env(new_account(None, &format!("owner {i}"), "USD")))
        .collect();
    let ids: Vec<Uuid> = run_batch(&store, &mut written, &creates, &[])
        .await
        .into_iter()
        .map(|o| account_of(o).id)
        .collect();
    // 600 updated accounts and 600 new transactions in one write.
    let credits: Vec<Envelope> = ids.iter().map(|&id| env(credit(id, 1_000))).collect();
    for outcome in run_batch(&store, &mut written, &credits, &[]).await {
        assert_eq!(transaction_of(outcome).balance_after, Some(1_000));
    }
    // 300 transfers (600 legs), then every third account frozen: its balance and its status
    // change in the same write.
    let mut batch: Vec<Envelope> = ids
        .chunks(2)
        .map(|pair| env(transfer(pair[0], pair[1], 400)))
        .collect();
    for id in ids.iter().step_by(3) {
        batch.push(env(Command::UpdateAccount {
            account_id: *id,
            if_match: written.accounts[id].version + 1,
            patch: AccountPatch {
                status: Some(AccountStatus::Frozen),
                ..AccountPatch::default()
            },
        }));
    }
    let outcomes = run_batch(&store, &mut written, &batch, &[]).await;
    assert_eq!(outcomes.len(), 500);
    for outcome in outcomes {
        assert!(outcome.is_ok(), "{outcome:?}");
    }
    assert_stored(&store, &written).await;
    for (i, id) in ids.iter().enumerate() {
        let account = store.get_account(*id).await.unwrap().expect("account");
        let balance = if i % 2 == 0 { 600 } else { 1_400 };
        let status = if i % 3 == 0 {
            AccountStatus::Frozen
        } else {
            AccountStatus::Active
        };
        assert_eq!((account.balance, account.status), (balance, status), "{i}");
        assert_eq!(account.version, if i % 3 == 0 { 4 } else { 3 }, "{i}");
    }
    assert_eq!(written.transactions.len(), 1_200);
}

#[tokio::test]
async fn lists_filter_and_paginate() {
    let db = TempDb::new();
    let store = open(&db).await;
    let mut w = Written::default();
    let mut ids = Vec::new();
    for i in 0..5 {
        let number = format!("LIST{i:08}");
        ids.push(
            account_of(run_one(&store, &mut w, new_account(Some(&number), "L", "USD")).await).id,
        );
    }
    run_one(
        &store,
        &mut w,
        Command::UpdateAccount {
            account_id: ids[1],
            if_match: 1,
            patch: AccountPatch {
                status: Some(AccountStatus::Frozen),
                ..AccountPatch::default()
            },
        },
    )
    .await
    .expect("freeze");

    let page = |after: Option<Uuid>, limit: u32| AccountFilter {
        after,
        limit,
        ..AccountFilter::default()
    };
    let first = store.list_accounts(&page(None, 2)).await.unwrap();
    assert_eq!(first.iter().map(|a| a.id).collect::<Vec<_>>(), ids[..2]);
    let second = store.list_accounts(&page(Some(ids[1]), 2)).await.unwrap();
    assert_eq!(second.iter().map(|a| a.id).collect::<Vec<_>>(), ids[2..4]);
    let last = store.list_accounts(&page(Some(ids[3]), 2)).await.unwrap();
    assert_eq!(last.iter().map(|a| a.id).collect::<Vec<_>>(), ids[4..]);
    let by_number = store
        .list_accounts(&AccountFilter {
            account_number: Some("LIST00000003".into()),
            limit: 50,
            ..AccountFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_number.iter().map(|a| a.id).collect::<Vec<_>>(), [ids[3]]);
    let frozen = store
        .list_accounts(&AccountFilter {
            status: Some(AccountStatus::Frozen),
            limit: 50,
            ..AccountFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(frozen.iter().map(|a| a.id).collect::<Vec<_>>(), [ids[1]]);
    let active_scoped = store
        .list_accounts(&AccountFilter {
            status: Some(AccountStatus::Active),
            only: Some(vec![ids[4], ids[1], ids[0]]),
            after: Some(ids[0]),
            limit: 50,
            ..AccountFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        active_scoped.iter().map(|a| a.id).collect::<Vec<_>>(),
        [ids[4]]
    );
    let none = store
        .list_accounts(&AccountFilter {
            only: Some(Vec::new()),
            limit: 50,
            ..AccountFilter::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());

    // History on one account: each movement in its own batch, so created_at grows.
    let acc = ids[0];
    let mut history = Vec::new();
    for n in 1..=6 {
        history.push(transaction_of(
            run_one(&store, &mut w, credit(acc, n * 100)).await,
        ));
    }
    let debit = transaction_of(
        run_one(
            &store,
            &mut w,
            Command::Debit {
                account_id: acc,
                amount: amount(50),
                description: None,
                reference: None,
                hold: false,
            },
        )
        .await,
    );
    let held = transaction_of(
        run_one(
            &store,
            &mut w,
            Command::Debit {
                account_id: acc,
                amount: amount(25),
                description: None,
                reference: None,
                hold: true,
            },
        )
        .await,
    );
    history.push(debit.clone());
    history.push(held.clone());

    let all = store.list_transactions(&filter(acc)).await.unwrap();
    let newest_first: Vec<Uuid> = history.iter().rev().map(|t| t.id).collect();
    assert_eq!(all.iter().map(|t| t.id).collect::<Vec<_>>(), newest_first);
    assert_eq!(&all, &history.iter().rev().cloned().collect::<Vec<_>>());

    // Pages of 3 by the seq cursor.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_transactions(&TransactionFilter {
                before_seq: cursor,
                limit: 3,
                ..filter(acc)
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        cursor = page.last().map(|t| t.seq);
        seen.extend(page.iter().map(|t| t.id));
    }
    assert_eq!(seen, newest_first);

    let only = |f: TransactionFilter| {
        let store = &store;
        async move {
            store
                .list_transactions(&f)
                .await
                .unwrap()
                .iter()
                .map(|t| t.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        only(TransactionFilter {
            kind: Some(TransactionType::Debit),
            ..filter(acc)
        })
        .await,
        [held.id, debit.id]
    );
    assert_eq!(
        only(TransactionFilter {
            status: Some(TransactionStatus::Pending),
            ..filter(acc)
        })
        .await,
        [held.id]
    );
    assert_eq!(
        only(TransactionFilter {
            status: Some(TransactionStatus::Completed),
            kind: Some(TransactionType::Credit),
            limit: 2,
            ..filter(acc)
        })
        .await,
        [history[5].id, history[4].id]
    );
    // since is inclusive, until exclusive, both on created_at.
    assert_eq!(
        only(TransactionFilter {
            since: Some(history[2].created_at),
            until: Some(history[4].created_at),
            ..filter(acc)
        })
        .await,
        [history[3].id, history[2].id]
    );
    assert!(
        only(TransactionFilter {
            until: Some(history[0].created_at),
            ..filter(acc)
        })
        .await
        .is_empty()
    );
    assert!(only(filter(ids[2])).await.is_empty());

    // balance_at: after the movement posted at or before the instant.
    let before_first = history[0].posted_at.unwrap() - time::Duration::microseconds(1);
    assert_eq!(store.balance_at(acc, before_first).await.unwrap(), 0);
    for t in history.iter().filter(|t| t.posted_at.is_some()) {
        let at = t.posted_at.unwrap();
        assert_eq!(
            store.balance_at(acc, at).await.unwrap(),
            t.balance_after.unwrap()
        );
        // Sub-microsecond parts of the bound are cut like PostgreSQL does.
        let later = at + time::Duration::nanoseconds(999);
        assert_eq!(
            store.balance_at(acc, later).await.unwrap(),
            t.balance_after.unwrap()
        );
    }
    let current = store.get_account(acc).await.unwrap().unwrap();
    assert_eq!(current.balance, 2_100 - 50);
    assert_eq!(current.held, 25);
    let future = OffsetDateTime::now_utc() + time::Duration::days(365);
    assert_eq!(
        store.balance_at(acc, future).await.unwrap(),
        current.balance
    );
    assert_eq!(store.balance_at(Uuid::now_v7(), future).await.unwrap(), 0);
}

#[tokio::test]
async fn idempotency_records_round_trip_and_conflict() {
    let db = TempDb::new();
    let store = open(&db).await;
    let mut w = Written::default();
    let scope = Uuid::now_v7();
    let record = |key: &str, status: u16| IdempotencyRecord {
        scope,
        key: key.to_owned(),
        request_hash: vec![0, 1, 2, 255],
        status,
        body: format!("{{\"key\":\"{key}\"}}").into_bytes(),
        created_at: now_micros(),
    };
    let a = record("key-a", 201);
    let b = record("key \"b\" ☃", 422);
    let account = new_account(None, "Idem", "USD");
    run_batch(&store, &mut w, &[env(account)], &[a.clone(), b.clone()]).await;

    assert_eq!(
        store.get_idempotency(scope, "key-a").await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store.get_idempotency(scope, &b.key).await.unwrap(),
        Some(b.clone())
    );
    assert_eq!(
        store
            .get_idempotency(Uuid::now_v7(), "key-a")
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.get_idempotency(scope, "key-c").await.unwrap(), None);

    let mut tx = store.begin().await.unwrap();
    let mut found = tx
        .idempotency_lookup(&[
            (scope, "key-a".into()),
            (scope, "missing".into()),
            (Uuid::now_v7(), b.key.clone()),
            (scope, b.key.clone()),
        ])
        .await
        .unwrap();
    found.sort_by(|x, y| x.key.cmp(&y.key));
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(found, expected);
    // The same key again: a concurrent writer took it; the retry will see it.
    let err = tx
        .write(&Changes::default(), std::slice::from_ref(&a), &[])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    drop(tx);
    assert_eq!(
        store.get_idempotency(scope, "key-a").await.unwrap(),
        Some(a)
    );
}

/// A backlog of several chunks ([`PURGE_CHUNK`] rows per statement) is purged completely in one
/// call, and nothing younger than the cut-off.
#[tokio::test]
async fn a_backlog_of_idempotency_keys_is_purged_in_chunks() {
    let db = TempDb::new();
    let store = open(&db).await;
    let scope = Uuid::now_v7();
    let record = |key: String, age: Duration| IdempotencyRecord {
        scope,
        key,
        request_hash: vec![1],
        status: 201,
        body: b"{}".to_vec(),
        created_at: now_micros() - age,
    };
    let expired = usize::try_from(2 * PURGE_CHUNK + 500).unwrap();
    let old = Duration::from_secs(72 * 3600);
    let mut records: Vec<IdempotencyRecord> = (0..expired)
        .map(|i| record(format!("old-{i}"), old))
        .collect();
    records.extend((0..5).map(|i| record(format!("new-{i}"), Duration::from_secs(3600))));
    let mut tx = store.begin().await.unwrap();
    tx.write(&Changes::default(), &records, &[]).await.unwrap();
    tx.commit().await.unwrap();

    let before = OffsetDateTime::now_utc() - Duration::from_secs(48 * 3600);
    assert_eq!(
        store.purge_expired(before).await.unwrap(),
        u64::try_from(expired).unwrap()
    );
    assert_eq!(store.get_idempotency(scope, "old-0").await.unwrap(), None);
    assert_eq!(
        store.get_idempotency(scope, "old-2499").await.unwrap(),
        None
    );
    for i in 0..5 {
        let key = format!("new-{i}");
        assert!(store.get_idempotency(scope, &key).await.unwrap().is_some());
    }
    assert_eq!(store.purge_expired(before).await.unwrap(), 0);
}

#[tokio::test]
async fn taken_account_number_is_a_conflict() {
    let db = TempDb::new();
    let store = open(&db).await;
    let mut w = Written::default();
    let first = account_of(
        run_one(
            &store,
            &mut w,
            new_account(Some("TAKEN0001"), "First", "USD"),
        )
        .await,
    );

    // The engine's pre-check sees it ...
    let mut tx = store.begin().await.unwrap();
    let taken = tx
        .taken_account_numbers(&["TAKEN0001".into(), "FREE00001".into()])
        .await
        .unwrap();
    assert_eq!(taken, ["TAKEN0001"]);
    // ... and a write that slipped past it is a retryable conflict.
    let mut clash = first.clone();
    clash.id = Uuid::now_v7();
    let changes = Changes {
        new_accounts: vec![clash],
        ..Changes::default()
    };
    let err = tx.write(&changes, &[], &[]).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(err.is_retryable());
    drop(tx);

    // Through the ledger, the number is refused.
    let again = run_one(
        &store,
        &mut w,
        new_account(Some("TAKEN0001"), "Second", "USD"),
    )
    .await;
    assert_eq!(again, Err(LedgerError::AccountNumberTaken));

    // A CHECK violation is not retryable.
    let mut tx = store.begin().await.unwrap();
    let mut bad = first.clone();
    bad.id = Uuid::now_v7();
    bad.account_number = "lower-case".into();
    let err = tx
        .write(
            &Changes {
                new_accounts: vec![bad],
                ..Changes::default()
            },
            &[],
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Other(_)), "{err:?}");
}

/// Frames the WAL file has room for: it is reused from its start after a restart, so its size
/// is the most it ever held (a 32-byte header, then 24 bytes and a 4 KiB page per frame).
fn wal_file_frames(db: &TempDb) -> u64 {
    let mut wal = db.path.clone().into_os_string();
    wal.push("-wal");
    std::fs::metadata(PathBuf::from(wal)).map_or(0, |m| m.len().saturating_sub(32) / 4_120)
}

/// No connection checkpoints inside its COMMIT; a task does it after each commit, and the WAL
/// starts over once it holds `wal_restart_frames` frames instead of growing with every commit.
#[tokio::test]
async fn the_wal_is_checkpointed_beside_the_writer_and_starts_over() {
    let db = TempDb::new();
    let settings = SqliteSettings {
        wal_restart_frames: 64,
        ..SqliteSettings::default()
    };
    let store = SqliteStore::open(&db.url(), &settings).await.unwrap();
    store.migrate().await.unwrap();
    let autocheckpoint: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(autocheckpoint, 0);
    let mut written = Written::default();
    for round in 0..150 {
        let creates: Vec<Envelope> = (0..20)
            .map(|i| env(new_account(None, &format!("owner {round}-{i}"), "USD")))
            .collect();
        run_batch(&store, &mut written, &creates, &[]).await;
    }
    // Each commit writes about 15 frames: without the restart the WAL would hold about 2 250.
    // With it, at most 64 plus what commits while the checkpoint catches up (passes are 10 ms
    // apart; 98–258 frames measured, 2 866 without the restart).
    let most = wal_file_frames(&db);
    assert!(most <= 500, "the WAL grew to {most} frames");
    assert_stored(&store, &written).await;
    assert_eq!(written.accounts.len(), 3_000);
}

#[tokio::test]
async fn a_second_writer_waits_then_gets_unavailable() {
    let db = TempDb::new();
    let store = open(&db).await;
    let other = SqliteStore::open(
        &db.url(),
        &SqliteSettings {
            max_connections: 2,
            busy_timeout: Duration::from_millis(50),
            ..SqliteSettings::default()
        },
    )
    .await
    .unwrap();
    let tx = store.begin().await.unwrap();
    let err = match other.begin().await {
        Ok(_) => panic!("a second immediate transaction began"),
        Err(e) => e,
    };
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
    // Readers are not blocked by the writer.
    assert!(
        other
            .list_accounts(&AccountFilter {
                limit: 1,
                ..AccountFilter::default()
            })
            .await
            .is_ok()
    );
    tx.commit().await.unwrap();
    other.begin().await.expect("free again");
}

/// The writer has a connection of its own: writes neither wait for a reader's connection nor
/// share theirs (a connection's page cache is dropped whenever another one wrote).
#[tokio::test]
async fn writes_have_a_connection_of_their_own() {
    let db = TempDb::new();
    let store = SqliteStore::open(
        &db.url(),
        &SqliteSettings {
            max_connections: 2,
            busy_timeout: Duration::from_millis(200),
            ..SqliteSettings::default()
        },
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    // The writer's connection and one reader's.
    assert_eq!(store.pool_stats().0, 2);
    // Every reader's connection is taken.
    let mut readers = vec![store.pool().acquire().await.unwrap()];
    while let Some(reader) = store.pool().try_acquire() {
        readers.push(reader);
    }
    assert_eq!(readers.len(), 1);
    let mut written = Written::default();
    let creates: Vec<Envelope> = (0..3)
        .map(|i| env(new_account(None, &format!("owner {i}"), "USD")))
        .collect();
    run_batch(&store, &mut written, &creates, &[]).await;
    assert_eq!(
        store
            .purge_expired(OffsetDateTime::now_utc())
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.pool_stats().0, 2);
    drop(readers);
    assert_stored(&store, &written).await;
    assert_eq!(written.accounts.len(), 3);
}

/// Closing the store closes every connection: the last one folds the WAL into the database
/// file and removes it, and the data is all there on the next open.
#[tokio::test]
async fn close_folds_the_wal_into_the_database_file() {
    let db = TempDb::new();
    let store = open(&db).await;
    let mut written = Written::default();
    let creates: Vec<Envelope> = (0..5)
        .map(|i| env(new_account(None, &format!("owner {i}"), "USD")))
        .collect();
    run_batch(&store, &mut written, &creates, &[]).await;
    let mut wal = db.path.clone().into_os_string();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    assert!(wal.exists(), "the WAL exists while the store is open");
    store.close().await;
    assert!(!wal.exists(), "the WAL is gone after close");
    assert!(store.ping().await.is_err(), "closed");
    let store = open(&db).await;
    assert_stored(&store, &written).await;
    assert_eq!(written.accounts.len(), 5);
}

/// A transaction dropped without COMMIT leaves nothing behind and does not keep SQLite's write
/// lock; its rows are never committed with a later write (a batch, the idempotency purge).
#[tokio::test]
async fn a_dropped_write_transaction_is_rolled_back_before_the_next_write() {
    let db = TempDb::new();
    let store = open(&db).await;
    let mut w = Written::default();
    let kept = account_of(run_one(&store, &mut w, new_account(None, "Kept", "USD")).await);
    let mut dropped = kept.clone();
    dropped.id = Uuid::now_v7();
    dropped.account_number = "DROPPED01".into();
    for next in ["purge", "batch"] {
        let mut tx = store.begin().await.unwrap();
        let changes = Changes {
            new_accounts: vec![dropped.clone()],
            ..Changes::default()
        };
        tx.write(&changes, &[], &[]).await.unwrap();
        drop(tx);
        // SQLite's write lock is released at once: another process can write.
        let other = SqliteStore::open(
            &db.url(),
            &SqliteSettings {
                busy_timeout: Duration::from_millis(500),
                ..SqliteSettings::default()
            },
        )
        .await
        .unwrap();
        other
            .begin()
            .await
            .expect("the write lock is free")
            .commit()
            .await
            .unwrap();
        other.close().await;
        if next == "purge" {
            assert_eq!(
                store
                    .purge_expired(OffsetDateTime::now_utc())
                    .await
                    .unwrap(),
                0
            );
        } else {
            run_one(&store, &mut w, new_account(None, "After", "USD"))
                .await
                .unwrap();
        }
        assert_eq!(
            store.get_account(dropped.id).await.unwrap(),
            None,
            "after the {next}"
        );
    }
    store.close().await;
    let store = open(&db).await;
    assert_eq!(store.get_account(dropped.id).await.unwrap(), None);
    assert_stored(&store, &w).await;
    assert_eq!(w.accounts.len(), 2);
}

/// The outcome of one command run through an engine.
async fn outcome_of(engine: &Engine, command: Command) -> Outcome {
    match engine.submit(env(command), None).await.expect("engine") {
        Reply::Applied { outcome, .. } => outcome,
        other => panic!("unexpected reply {other:?}"),
    }
}

fn new_key(role: &str, hash: &[u8], only_if_none: bool, account_ids: Option<Vec<Uuid>>) -> Command {
    Command::CreateApiKey(NewApiKey {
        id: Uuid::now_v7(),
        name: format!("{role} key"),
        role: role.to_owned(),
        account_ids,
        secret_hash: hash.to_vec(),
        only_if_none,
    })
}

fn key_of(outcome: Outcome) -> ApiKeyRecord {
    match outcome {
        Ok(Effect::ApiKey(key)) => key,
        other => panic!("expected an API key, got {other:?}"),
    }
}

#[tokio::test]
async fn api_keys_and_their_audit_chain() {
    let db = TempDb::new();
    let store = Arc::new(open(&db).await);
    let engine = Engine::start(store.clone(), EngineSettings::default());

    // First start: created only when no key exists.
    let admin = key_of(outcome_of(&engine, new_key("admin", b"hash-admin", true, None)).await);
    assert_eq!(
        outcome_of(&engine, new_key("admin", b"hash-other", true, None)).await,
        Err(LedgerError::InvalidState("an API key already exists"))
    );
    // The same secret again: the existing key, nothing created.
    let again = key_of(outcome_of(&engine, new_key("admin", b"hash-admin", false, None)).await);
    assert_eq!(again, admin);
    // A scope must name existing accounts.
    assert_eq!(
        outcome_of(
            &engine,
            new_key("viewer", b"hash-v", false, Some(vec![Uuid::now_v7()]))
        )
        .await,
        Err(LedgerError::NotFound("account"))
    );
    let account = account_of(outcome_of(&engine, new_account(None, "Scoped", "EUR")).await);
    let viewer = key_of(
        outcome_of(
            &engine,
            new_key("viewer", b"hash-v", false, Some(vec![account.id])),
        )
        .await,
    );
    assert_eq!(viewer.account_ids, Some(vec![account.id]));
    assert_eq!(
        store.find_api_key(b"hash-admin").await.unwrap(),
        Some(admin.clone())
    );
    assert_eq!(
        store.find_api_key(b"hash-v").await.unwrap(),
        Some(viewer.clone())
    );
    assert_eq!(store.find_api_key(b"nope").await.unwrap(), None);
    let mut both = store
        .find_api_keys(&[b"hash-v".to_vec(), b"nope".to_vec(), b"hash-admin".to_vec()])
        .await
        .unwrap();
    both.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        both,
        vec![
            (b"hash-admin".to_vec(), admin.clone()),
            (b"hash-v".to_vec(), viewer.clone())
        ]
    );
    assert_eq!(
        store.list_api_keys().await.unwrap(),
        vec![admin.clone(), viewer.clone()]
    );

    // Revocation: gone at once, final, and a second revocation finds nothing.
    let revoked = key_of(outcome_of(&engine, Command::RevokeApiKey { key_id: viewer.id }).await);
    assert!(revoked.revoked_at.is_some());
    assert_eq!(store.find_api_key(b"hash-v").await.unwrap(), None);
    assert_eq!(
        store
            .find_api_keys(&[b"hash-v".to_vec(), b"hash-admin".to_vec()])
            .await
            .unwrap(),
        vec![(b"hash-admin".to_vec(), admin.clone())]
    );
    assert_eq!(store.list_api_keys().await.unwrap(), vec![admin.clone()]);
    assert_eq!(
        outcome_of(&engine, Command::RevokeApiKey { key_id: viewer.id }).await,
        Err(LedgerError::NotFound("api key"))
    );
    assert_eq!(
        outcome_of(&engine, new_key("viewer", b"hash-v", false, None)).await,
        Err(LedgerError::InvalidState(
            "the API key with this secret was revoked"
        ))
    );
    engine.shutdown().await;

    // Four changes, four chained events.
    let events = store.list_audit_events(0, 100).await.unwrap();
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "api_key.create",
            "account.create",
            "api_key.create",
            "api_key.revoke"
        ]
    );
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(events[0].prev_hash, zeta_ledger::audit::GENESIS_HASH);
    assert_eq!(events[3].prev_hash, events[2].hash);
    assert_eq!(events[2].resource_id, viewer.id);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&events[2].details).unwrap(),
        json!({"name": "viewer key", "role": "viewer", "account_ids": [account.id]})
    );
    assert_eq!(
        store.list_audit_events(2, 1).await.unwrap(),
        vec![events[2].clone()]
    );
    let clean = store.verify().await.unwrap();
    assert_eq!(
        (clean.audit_events, clean.problems.len()),
        (4, 0),
        "{:?}",
        clean.problems
    );

    // An edited event is named by verify.
    sqlx::query("UPDATE audit_events SET details = '{\"name\":\"x\"}' WHERE seq = 3")
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(
        store.verify().await.unwrap().problems,
        ["audit event seq 3: hash does not match its contents (the event was altered)"]
    );
    // A deleted one too.
    sqlx::query("DELETE FROM audit_events WHERE seq = 2")
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(
        store.verify().await.unwrap().problems,
        ["audit event seq 3: expected seq 2 next (an event is missing or was inserted)"]
    );
}

#[tokio::test]
async fn verify_names_a_corrupted_account() {
    let db = TempDb::new();
    let store = open(&db).await;
    let mut w = Written::default();
    let a = account_of(run_one(&store, &mut w, new_account(None, "V", "USD")).await);
    let b = account_of(run_one(&store, &mut w, new_account(None, "W", "USD")).await);
    run_one(&store, &mut w, credit(a.id, 1_000)).await.unwrap();
    run_one(&store, &mut w, transfer(a.id, b.id, 400))
        .await
        .unwrap();
    let clean = store.verify().await.unwrap();
    assert!(clean.problems.is_empty(), "{:?}", clean.problems);
    assert_eq!(clean.total_balance, 1_000);

    sqlx::query("UPDATE accounts SET balance = balance + 7 WHERE id = ?1")
        .bind(b.id.hyphenated())
        .execute(store.pool())
        .await
        .unwrap();
    let report = store.verify().await.unwrap();
    assert_eq!(
        report.problems,
        [format!(
            "account {}: account balance or held amount differs from its transactions",
            b.id
        )]
    );
    assert_eq!(report.total_balance, 1_007);

    // A broken balance_after chain is named too.
    sqlx::query("UPDATE accounts SET balance = balance - 7 WHERE id = ?1")
        .bind(b.id.hyphenated())
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE transactions SET balance_after = balance_after + 1 WHERE account_id = ?1")
        .bind(a.id.hyphenated())
        .execute(store.pool())
        .await
        .unwrap();
    let report = store.verify().await.unwrap();
    assert_eq!(
        report.problems,
        [format!("account {}: balance_after chain is broken", a.id)]
    );
}

#[tokio::test]
async fn verify_sums_balances_beyond_i64() {
    let db = TempDb::new();
    let store = open(&db).await;
    let mut w = Written::default();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(account_of(run_one(&store, &mut w, new_account(None, "Rich", "USD")).await).id);
    }
    // Fill each account to i64::MAX with the largest amounts the API allows.
    let max = zeta_ledger::MAX_AMOUNT;
    for id in &ids {
        let mut balance = 0_i64;
        let mut batch = Vec::new();
        while balance < i64::MAX {
            let n = max.min(i64::MAX - balance);
            balance += n;
            batch.push(env(credit(*id, n)));
        }
        for outcome in run_batch(&store, &mut w, &batch, &[]).await {
            outcome.expect("credit");
        }
    }
    let report = store.verify().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.total_balance, 3 * i128::from(i64::MAX));
}

// ---- the engine over SQLite ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engine_commits_concurrent_credits_and_transfers_exactly() {
    const ACCOUNTS: usize = 5;
    const OPERATIONS: usize = 200;
    const INITIAL: i64 = 1_000_000;

    let db = TempDb::new();
    let store = Arc::new(open(&db).await);
    let engine = Arc::new(Engine::start(
        store.clone(),
        EngineSettings {
            writers: 1,
            ..EngineSettings::default()
        },
    ));
    let submit = |engine: Arc<Engine>, command: Command| async move {
        match engine.submit(env(command), None).await {
            Ok(Reply::Applied { outcome, .. }) => outcome,
            other => panic!("unexpected reply {other:?}"),
        }
    };

    let mut ids = Vec::new();
    for _ in 0..ACCOUNTS {
        let account = account_of(submit(engine.clone(), new_account(None, "Engine", "USD")).await);
        submit(engine.clone(), credit(account.id, INITIAL))
            .await
            .expect("initial credit");
        ids.push(account.id);
    }

    // Every transfer fits however the operations interleave: balances stay exact.
    let mut expected: HashMap<Uuid, i64> = ids.iter().map(|id| (*id, INITIAL)).collect();
    let mut tasks = Vec::new();
    for i in 0..OPERATIONS {
        let n = i64::try_from(i % 97 + 1).unwrap();
        let command = if i % 3 == 0 {
            let to = ids[i % ACCOUNTS];
            *expected.get_mut(&to).unwrap() += n;
            credit(to, n)
        } else {
            let from = ids[i % ACCOUNTS];
            let to = ids[(i * 7 + 1) % ACCOUNTS];
            let to = if to == from {
                ids[(i + 1) % ACCOUNTS]
            } else {
                to
            };
            *expected.get_mut(&from).unwrap() -= n;
            *expected.get_mut(&to).unwrap() += n;
            transfer(from, to, n)
        };
        tasks.push(tokio::spawn(submit(engine.clone(), command)));
    }
    for task in tasks {
        task.await.expect("task").expect("operation succeeds");
    }
    engine.shutdown().await;

    let report = store.verify().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let mut total = 0_i128;
    for id in &ids {
        let account = store.get_account(*id).await.unwrap().unwrap();
        assert_eq!(account.balance, expected[id], "account {id}");
        assert_eq!(account.held, 0);
        total += i128::from(account.balance);
    }
    assert_eq!(report.total_balance, total);
    let rows: i64 = sqlx::query("SELECT count(*) FROM transactions")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    let transfers = (0..OPERATIONS).filter(|i| i % 3 != 0).count();
    let credits = OPERATIONS - transfers + ACCOUNTS;
    assert_eq!(rows, i64::try_from(credits + 2 * transfers).unwrap());
}

#[tokio::test]
async fn opens_plain_paths_and_sets_up_the_connection() {
    let db = TempDb::new();
    let store = SqliteStore::open(db.path.to_str().unwrap(), &SqliteSettings::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    assert!(db.path.exists());
    let row = sqlx::query(
        "SELECT (SELECT journal_mode FROM pragma_journal_mode),
                (SELECT synchronous FROM pragma_synchronous),
                (SELECT foreign_keys FROM pragma_foreign_keys),
                (SELECT timeout FROM pragma_busy_timeout),
                (SELECT temp_store FROM pragma_temp_store)",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>(0), "wal");
    assert_eq!(row.get::<i64, _>(1), 2, "synchronous=FULL");
    assert_eq!(row.get::<i64, _>(2), 1);
    assert_eq!(row.get::<i64, _>(3), 5_000);
    assert_eq!(row.get::<i64, _>(4), 2, "temp_store=MEMORY");
    // A bad URL is a plain error.
    let missing_dir = std::env::temp_dir().join(format!("{}/x.db", Uuid::new_v4()));
    let err = SqliteStore::open(
        &format!("sqlite://{}", missing_dir.display()),
        &SqliteSettings::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Other(_)), "{err:?}");
}
