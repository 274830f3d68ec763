//! Property tests of the posting rules.
//!
//! A tiny in-memory "database" stands in for the store and is driven the way the ledger engine
//! (`zeta_engine::apply_batch`) drives it: for each batch it loads the accounts the commands name,
//! the transactions and transfers they refer to (with every leg of those transfers and the
//! accounts of all of them), builds a [`Working`], applies the commands in order and merges
//! [`Working::into_changes`] back. After every command the state the database would hold if the
//! batch committed right then is compared with the state before it; after every batch the ledger
//! invariants are checked on the whole database.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Map;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use zeta_ledger::{
    Account, AccountPatch, AccountStatus, Amount, BatchItem, Command, Currency, Effect, Envelope,
    FailureReason, ItemResult, LedgerError, MAX_AMOUNT, NewAccount, Outcome, Scope, Transaction,
    TransactionStatus, TransactionType, Transfer, TransferSpec, TransferStatus, TransferView,
    Working,
};

type Check = Result<(), TestCaseError>;

macro_rules! fail {
    ($($arg:tt)*) => {
        return Err(TestCaseError::fail(format!($($arg)*)))
    };
}

// ----- the in-memory database ------------------------------------------------------------------

#[derive(Clone, Debug, Default, PartialEq)]
struct Db {
    accounts: BTreeMap<Uuid, Account>,
    transactions: BTreeMap<Uuid, Transaction>,
    transfers: BTreeMap<Uuid, Transfer>,
    /// Insertion order, so that a generated index picks the same row on every run.
    tx_order: Vec<Uuid>,
    tr_order: Vec<Uuid>,
}

impl Db {
    /// Persists a batch's changes: new rows must be new, updated rows must exist.
    fn merge(&mut self, changes: &zeta_ledger::Changes) -> Check {
        // A row is either inserted or updated, never both.
        let new_tx: HashSet<Uuid> = changes.new_transactions.iter().map(|t| t.id).collect();
        let new_tr: HashSet<Uuid> = changes.new_transfers.iter().map(|t| t.id).collect();
        let new_acc: HashSet<Uuid> = changes.new_accounts.iter().map(|a| a.id).collect();
        prop_assert!(
            changes
                .updated_accounts
                .iter()
                .all(|a| !new_acc.contains(&a.id))
                && changes
                    .updated_transactions
                    .iter()
                    .all(|t| !new_tx.contains(&t.id))
                && changes
                    .updated_transfers
                    .iter()
                    .all(|t| !new_tr.contains(&t.id)),
            "a row is both new and updated in {:?}",
            changes
        );
        for a in &changes.new_accounts {
            prop_assert!(
                self.accounts.insert(a.id, a.clone()).is_none(),
                "new account {} already stored",
                a.id
            );
        }
        for a in &changes.updated_accounts {
            prop_assert!(
                self.accounts.insert(a.id, a.clone()).is_some(),
                "updated account {} was never stored",
                a.id
            );
        }
        for t in &changes.new_transactions {
            prop_assert!(
                self.transactions.insert(t.id, t.clone()).is_none(),
                "new transaction {} already stored",
                t.id
            );
            self.tx_order.push(t.id);
        }
        for t in &changes.updated_transactions {
            prop_assert!(
                self.transactions.insert(t.id, t.clone()).is_some(),
                "updated transaction {} was never stored",
                t.id
            );
        }
        for t in &changes.new_transfers {
            prop_assert!(
                self.transfers.insert(t.id, t.clone()).is_none(),
                "new transfer {} already stored",
                t.id
            );
            self.tr_order.push(t.id);
        }
        for t in &changes.updated_transfers {
            prop_assert!(
                self.transfers.insert(t.id, t.clone()).is_some(),
                "updated transfer {} was never stored",
                t.id
            );
        }
        Ok(())
    }

    /// What the database would hold if a working set were committed now.
    fn overlay(&self, working: &Working) -> Result<Db, TestCaseError> {
        let mut db = self.clone();
        db.merge(&working.clone().into_changes())?;
        Ok(db)
    }

    /// Loads what a batch needs, exactly like `apply_batch` and `load_refs` do.
    fn working(&self, now: OffsetDateTime, envelopes: &[Envelope]) -> Working {
        let commands = || envelopes.iter().map(|e| &e.command);
        let mut tx_ids: Vec<Uuid> = commands().filter_map(Command::transaction_ref).collect();
        tx_ids.sort_unstable();
        tx_ids.dedup();
        let mut transactions: Vec<Transaction> = tx_ids
            .iter()
            .filter_map(|id| self.transactions.get(id).cloned())
            .collect();
        let mut wanted: Vec<Uuid> = commands().filter_map(Command::transfer_ref).collect();
        wanted.extend(transactions.iter().filter_map(|t| t.transfer_id));
        wanted.sort_unstable();
        wanted.dedup();
        let transfers: Vec<Transfer> = wanted
            .iter()
            .filter_map(|id| self.transfers.get(id).cloned())
            .collect();
        for leg in self.transactions.values() {
            if leg.transfer_id.is_some_and(|t| wanted.contains(&t))
                && !transactions.iter().any(|t| t.id == leg.id)
            {
                transactions.push(leg.clone());
            }
        }
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
        let accounts: Vec<Account> = account_ids
            .iter()
            .filter_map(|id| self.accounts.get(id).cloned())
            .collect();
        let taken: Vec<String> = commands()
            .filter_map(|c| match c {
                Command::CreateAccount(new) => new.account_number.clone(),
                _ => None,
            })
            .filter(|n| self.accounts.values().any(|a| &a.account_number == n))
            .collect();
        Working::new(now, accounts, transactions, transfers, taken)
    }
}

// ----- generated commands ----------------------------------------------------------------------

/// A transaction chosen among those stored when the batch is built, or an unknown id.
#[derive(Clone, Debug)]
enum TxRef {
    Any(Index),
    Pending(Index),
    /// A hold on an account that is not active, if there is one.
    PendingFrozen(Index),
    Posted(Index),
    Unknown,
}

#[derive(Clone, Debug)]
enum TrRef {
    Any(Index),
    Completed(Index),
    Unknown,
}

#[derive(Clone, Debug)]
enum IfMatch {
    /// The account's version when the command is applied.
    Current,
    /// Off by this much.
    Wrong(i64),
}

/// Accounts are named by a small number: below `UNKNOWN` any account (modulo their number),
/// `UNKNOWN` an account that does not exist, above it a USD account (modulo their number).
type Acc = u8;
const UNKNOWN: Acc = 15;
const USD_ONLY: Acc = 16;

/// A debit of the whole available balance, so that holds and spends exhaust accounts.
const EVERYTHING: i64 = 0;

#[derive(Clone, Debug)]
enum Op {
    Create(usize),
    /// Creates another account with the number of an existing one.
    CreateTaken(Acc),
    Credit {
        acc: Acc,
        amount: i64,
    },
    /// `amount` [`EVERYTHING`]: the available balance when the batch is built.
    Debit {
        acc: Acc,
        amount: i64,
        hold: bool,
    },
    Capture(TxRef),
    Void(TxRef),
    Reverse(TxRef),
    ReverseTransfer(TrRef),
    Transfer {
        from: Acc,
        to: Acc,
        amount: i64,
    },
    Batch {
        items: Vec<Option<(Acc, Acc, i64)>>,
        atomic: bool,
    },
    Update {
        acc: Acc,
        status: Option<AccountStatus>,
        rename: bool,
        if_match: IfMatch,
    },
}

#[derive(Clone, Debug)]
struct Step {
    op: Op,
    /// An account the sender's scope excludes.
    hide: Option<Acc>,
}

/// Money in: mostly more than a typical spend, sometimes the largest amount.
fn income() -> impl Strategy<Value = i64> {
    prop_oneof![
        10 => 100..=5_000_i64,
        1 => Just(MAX_AMOUNT),
        1 => 1..=MAX_AMOUNT,
    ]
}

/// Money out: mostly small, sometimes more than anyone has.
fn spend() -> impl Strategy<Value = i64> {
    prop_oneof![
        12 => 1..=400_i64,
        3 => 400..=5_000_i64,
        1 => Just(MAX_AMOUNT),
    ]
}

fn acc() -> impl Strategy<Value = Acc> {
    0..=UNKNOWN
}

/// Two accounts, mostly different ones.
fn pair() -> impl Strategy<Value = (Acc, Acc)> {
    prop_oneof![
        1 => (acc(), acc()),
        3 => (USD_ONLY..USD_ONLY + 15).prop_map(|from| (from, from + 1)),
    ]
}

fn tx_ref(pending: u32, posted: u32) -> impl Strategy<Value = TxRef> {
    prop_oneof![
        3 => any::<Index>().prop_map(TxRef::Any),
        pending => any::<Index>().prop_map(TxRef::Pending),
        pending / 2 => any::<Index>().prop_map(TxRef::PendingFrozen),
        posted => any::<Index>().prop_map(TxRef::Posted),
        1 => Just(TxRef::Unknown),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let item = prop_oneof![
        6 => (pair(), spend()).prop_map(|((from, to), amount)| Some((from, to, amount))),
        1 => Just(None),
    ];
    prop_oneof![
        8 => (acc(), income()).prop_map(|(acc, amount)| Op::Credit { acc, amount }),
        6 => (acc(), spend(), any::<bool>())
            .prop_map(|(acc, amount, hold)| Op::Debit { acc, amount, hold }),
        2 => (acc(), any::<bool>())
            .prop_map(|(acc, hold)| Op::Debit { acc, amount: EVERYTHING, hold }),
        3 => tx_ref(6, 1).prop_map(Op::Capture),
        3 => tx_ref(6, 1).prop_map(Op::Void),
        3 => tx_ref(1, 6).prop_map(Op::Reverse),
        2 => prop_oneof![
            2 => any::<Index>().prop_map(TrRef::Any),
            4 => any::<Index>().prop_map(TrRef::Completed),
            1 => Just(TrRef::Unknown),
        ]
        .prop_map(Op::ReverseTransfer),
        6 => (pair(), spend()).prop_map(|((from, to), amount)| Op::Transfer { from, to, amount }),
        2 => (prop::collection::vec(item, 1..5), any::<bool>())
            .prop_map(|(items, atomic)| Op::Batch { items, atomic }),
        2 => (
            acc(),
            prop_oneof![
                1 => Just(None),
                4 => Just(Some(AccountStatus::Active)),
                3 => Just(Some(AccountStatus::Frozen)),
                1 => Just(Some(AccountStatus::Closed)),
            ],
            any::<bool>(),
            prop_oneof![5 => Just(IfMatch::Current), 1 => prop_oneof![Just(-1_i64), Just(1)].prop_map(IfMatch::Wrong)],
        )
            .prop_map(|(acc, status, rename, if_match)| Op::Update { acc, status, rename, if_match }),
        1 => acc().prop_map(Op::CreateTaken),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (op(), prop::option::weighted(0.12, 0..UNKNOWN)).prop_map(|(op, hide)| Step { op, hide })
}

// ----- the simulated engine --------------------------------------------------------------------

struct Sim {
    db: Db,
    ids: Vec<Uuid>,
    currencies: Vec<Currency>,
    numbers: Vec<Option<String>>,
    batches: i64,
    next_id: u128,
}

const UNKNOWN_ID: Uuid = Uuid::from_u128(0xdead_0000_0000_0000);

fn usd() -> Currency {
    "USD".parse().expect("USD is a currency")
}

fn eur() -> Currency {
    "EUR".parse().expect("EUR is a currency")
}

impl Sim {
    /// `n_usd` USD accounts and one EUR account. The first gets a generated number.
    fn new(n_usd: usize) -> Self {
        let n = n_usd + 1;
        Self {
            db: Db::default(),
            ids: (0..n)
                .map(|i| Uuid::from_u128(0xacc0 + i as u128))
                .collect(),
            currencies: (0..n)
                .map(|i| if i < n_usd { usd() } else { eur() })
                .collect(),
            numbers: (0..n)
                .map(|i| (i > 0).then(|| format!("{:016}", 4_000 + i)))
                .collect(),
            batches: 0,
            next_id: 0,
        }
    }

    fn creates(&self) -> Vec<Step> {
        (0..self.ids.len())
            .map(|i| Step {
                op: Op::Create(i),
                hide: None,
            })
            .collect()
    }

    fn acc(&self, acc: Acc) -> Uuid {
        match acc {
            UNKNOWN => UNKNOWN_ID,
            ..UNKNOWN => self.ids[usize::from(acc) % self.ids.len()],
            // The last account is the EUR one.
            _ => self.ids[usize::from(acc) % (self.ids.len() - 1)],
        }
    }

    fn tx(&self, r: &TxRef) -> Uuid {
        let pick = |filter: &dyn Fn(&Transaction) -> bool, ix: &Index| {
            let ids: Vec<Uuid> = self
                .db
                .tx_order
                .iter()
                .copied()
                .filter(|id| filter(&self.db.transactions[id]))
                .collect();
            (!ids.is_empty()).then(|| ids[ix.index(ids.len())])
        };
        match r {
            TxRef::Any(ix) => pick(&|_| true, ix),
            TxRef::Pending(ix) => pick(&|t| t.status == TransactionStatus::Pending, ix)
                .or_else(|| pick(&|_| true, ix)),
            TxRef::PendingFrozen(ix) => pick(
                &|t| {
                    t.status == TransactionStatus::Pending
                        && self.db.accounts[&t.account_id].status != AccountStatus::Active
                },
                ix,
            )
            .or_else(|| pick(&|t| t.status == TransactionStatus::Pending, ix))
            .or_else(|| pick(&|_| true, ix)),
            TxRef::Posted(ix) => pick(&|t| t.status == TransactionStatus::Completed, ix)
                .or_else(|| pick(&|_| true, ix)),
            TxRef::Unknown => None,
        }
        .unwrap_or(UNKNOWN_ID)
    }

    fn transfer(&self, r: &TrRef) -> Uuid {
        let pick = |completed: bool, ix: &Index| {
            let ids: Vec<Uuid> = self
                .db
                .tr_order
                .iter()
                .copied()
                .filter(|id| {
                    !completed || self.db.transfers[id].status == TransferStatus::Completed
                })
                .collect();
            (!ids.is_empty()).then(|| ids[ix.index(ids.len())])
        };
        match r {
            TrRef::Any(ix) => pick(false, ix),
            TrRef::Completed(ix) => pick(true, ix).or_else(|| pick(false, ix)),
            TrRef::Unknown => None,
        }
        .unwrap_or(UNKNOWN_ID)
    }

    fn spec(&self, from: Acc, to: Acc, amount: i64) -> TransferSpec {
        TransferSpec {
            from_account_id: self.acc(from),
            to_account_id: self.acc(to),
            amount: Amount::new(amount).expect("generated amounts are valid"),
            description: Some("transfer".into()),
            reference: None,
        }
    }

    fn scope(&self, hide: Option<Acc>) -> Scope {
        hide.map(|h| {
            let hidden = self.acc(h);
            Arc::new(
                self.ids
                    .iter()
                    .copied()
                    .filter(|id| *id != hidden)
                    .collect(),
            )
        })
    }

    /// The command as a client would send it, knowing what is stored. `if_match` is resolved
    /// when the command is applied (see [`resolve_if_match`]).
    fn envelope(&mut self, step: &Step) -> (Envelope, Option<IfMatch>) {
        let command = match &step.op {
            Op::Create(i) => Command::CreateAccount(NewAccount {
                id: self.ids[*i],
                account_number: self.numbers[*i].clone(),
                owner_name: format!("owner {i}"),
                currency: self.currencies[*i],
                metadata: Map::new(),
            }),
            Op::CreateTaken(acc) => {
                let i = 1 + usize::from(*acc) % (self.ids.len() - 1);
                self.next_id += 1;
                Command::CreateAccount(NewAccount {
                    id: Uuid::from_u128(0xc0de_0000 + self.next_id),
                    account_number: self.numbers[i].clone(),
                    owner_name: "copycat".into(),
                    currency: self.currencies[i],
                    metadata: Map::new(),
                })
            }
            Op::Credit { acc, amount } => Command::Credit {
                account_id: self.acc(*acc),
                amount: Amount::new(*amount).expect("valid amount"),
                description: None,
                reference: Some("ref".into()),
            },
            Op::Debit { acc, amount, hold } => Command::Debit {
                account_id: self.acc(*acc),
                amount: Amount::new(match *amount {
                    EVERYTHING => self
                        .db
                        .accounts
                        .get(&self.acc(*acc))
                        .map_or(1, |a| a.available().clamp(1, MAX_AMOUNT)),
                    n => n,
                })
                .expect("valid amount"),
                description: Some("debit".into()),
                reference: None,
                hold: *hold,
            },
            Op::Capture(r) => Command::Capture {
                transaction_id: self.tx(r),
            },
            Op::Void(r) => Command::Void {
                transaction_id: self.tx(r),
            },
            Op::Reverse(r) => Command::ReverseTransaction {
                transaction_id: self.tx(r),
                reason: Some("oops".into()),
            },
            Op::ReverseTransfer(r) => Command::ReverseTransfer {
                transfer_id: self.transfer(r),
                reason: None,
            },
            Op::Transfer { from, to, amount } => Command::Transfer(self.spec(*from, *to, *amount)),
            Op::Batch { items, atomic } => Command::TransferBatch {
                items: items
                    .iter()
                    .map(|item| match item {
                        Some((from, to, amount)) => {
                            BatchItem::Valid(self.spec(*from, *to, *amount))
                        }
                        None => BatchItem::Invalid,
                    })
                    .collect(),
                atomic: *atomic,
            },
            Op::Update {
                acc,
                status,
                rename,
                ..
            } => Command::UpdateAccount {
                account_id: self.acc(*acc),
                if_match: 0,
                patch: AccountPatch {
                    owner_name: rename.then(|| "Renamed Owner".to_string()),
                    status: *status,
                    metadata: None,
                },
            },
        };
        let if_match = match &step.op {
            Op::Update { if_match, .. } => Some(if_match.clone()),
            _ => None,
        };
        (
            Envelope {
                command,
                scope: self.scope(step.hide),
                actor: None,
            },
            if_match,
        )
    }

    /// Runs one batch the way the engine does and checks every command and the result.
    fn run_batch(&mut self, steps: &[Step]) -> Result<Vec<(Envelope, Outcome)>, TestCaseError> {
        let envelopes = steps.iter().map(|s| self.envelope(s)).collect();
        self.run_envelopes(envelopes)
    }

    /// Runs commands already built (with how to fill in their `if_match`) as one batch.
    fn run_envelopes(
        &mut self,
        envelopes: Vec<(Envelope, Option<IfMatch>)>,
    ) -> Result<Vec<(Envelope, Outcome)>, TestCaseError> {
        let now = datetime!(2026-01-01 0:00 UTC) + Duration::seconds(self.batches);
        self.batches += 1;
        let plain: Vec<Envelope> = envelopes.iter().map(|(e, _)| e.clone()).collect();
        let mut working = self.db.working(now, &plain);
        let mut state = self.db.clone();
        let mut outcomes = Vec::with_capacity(envelopes.len());
        for (mut envelope, if_match) in envelopes {
            resolve_if_match(&mut envelope, if_match.as_ref(), &working);
            let before_working = working.clone();
            let outcome = working.apply(&envelope);
            let after = self.db.overlay(&working)?;
            check_command(
                &envelope,
                &outcome,
                &state,
                &after,
                &self.db,
                &before_working,
            )?;
            state = after;
            outcomes.push((envelope, outcome));
        }
        let last = working.clone();
        self.db.merge(&working.into_changes())?;
        prop_assert_eq!(&self.db, &state);
        // Nothing the batch changed is missing from its changes.
        for (id, a) in &self.db.accounts {
            if let Some(w) = last.account(id) {
                prop_assert_eq!(w, a, "account {} changed but not persisted", id);
            }
        }
        for (id, t) in &self.db.transactions {
            if let Some(w) = last.transaction(id) {
                prop_assert_eq!(w, t, "transaction {} changed but not persisted", id);
            }
        }
        check_invariants(&self.db)?;
        Ok(outcomes)
    }
}

fn resolve_if_match(envelope: &mut Envelope, how: Option<&IfMatch>, working: &Working) {
    if let (
        Command::UpdateAccount {
            account_id,
            if_match,
            ..
        },
        Some(how),
    ) = (&mut envelope.command, how)
    {
        let current = working.account(account_id).map_or(1, |a| a.version);
        *if_match = match how {
            IfMatch::Current => current,
            IfMatch::Wrong(off) => current + off,
        };
    }
}

// ----- the oracle for refusals -----------------------------------------------------------------

fn visible(scope: &Scope, id: Uuid) -> bool {
    scope.as_ref().is_none_or(|ids| ids.contains(&id))
}

fn find<'a>(db: &'a Db, scope: &Scope, id: Uuid) -> Result<&'a Account, LedgerError> {
    db.accounts
        .get(&id)
        .filter(|a| visible(scope, a.id))
        .ok_or(LedgerError::NotFound("account"))
}

fn active(a: &Account) -> Result<(), LedgerError> {
    if a.status == AccountStatus::Active {
        Ok(())
    } else {
        Err(LedgerError::AccountNotActive {
            account_id: a.id,
            status: a.status.as_str(),
        })
    }
}

fn can_credit(a: &Account, amount: i64) -> Result<(), LedgerError> {
    a.balance
        .checked_add(amount)
        .map(|_| ())
        .ok_or(LedgerError::BalanceOverflow)
}

fn short(available: i64, amount: i64) -> LedgerError {
    LedgerError::InsufficientFunds {
        available,
        amount,
        transaction_id: None,
        transfer_id: None,
    }
}

fn invalid() -> LedgerError {
    LedgerError::InvalidState("")
}

/// What the API contract says a command does to `db`: `Ok` or the refusal.
fn predict(command: &Command, scope: &Scope, db: &Db) -> Result<(), LedgerError> {
    match command {
        Command::CreateAccount(new) => match &new.account_number {
            Some(n) if db.accounts.values().any(|a| &a.account_number == n) => {
                Err(LedgerError::AccountNumberTaken)
            }
            _ => Ok(()),
        },
        Command::UpdateAccount {
            account_id,
            if_match,
            patch,
        } => {
            let a = find(db, scope, *account_id)?;
            if a.version != *if_match {
                return Err(LedgerError::VersionMismatch {
                    current: a.version,
                    expected: *if_match,
                });
            }
            if a.status == AccountStatus::Closed {
                return Err(invalid());
            }
            if patch.status == Some(AccountStatus::Closed) && a.balance != 0 {
                return Err(LedgerError::AccountNotEmpty { balance: a.balance });
            }
            Ok(())
        }
        Command::Credit {
            account_id, amount, ..
        } => {
            let a = find(db, scope, *account_id)?;
            active(a)?;
            can_credit(a, amount.get())
        }
        Command::Debit {
            account_id, amount, ..
        } => {
            let a = find(db, scope, *account_id)?;
            active(a)?;
            if a.available() < amount.get() {
                return Err(short(a.available(), amount.get()));
            }
            Ok(())
        }
        Command::Capture { transaction_id } | Command::Void { transaction_id } => {
            let t = db
                .transactions
                .get(transaction_id)
                .filter(|t| visible(scope, t.account_id))
                .ok_or(LedgerError::NotFound("transaction"))?;
            if t.kind != TransactionType::Debit || t.status != TransactionStatus::Pending {
                return Err(invalid());
            }
            if matches!(command, Command::Capture { .. }) {
                active(&db.accounts[&t.account_id])?;
            }
            Ok(())
        }
        Command::ReverseTransaction { transaction_id, .. } => {
            let t = db
                .transactions
                .get(transaction_id)
                .filter(|t| visible(scope, t.account_id))
                .ok_or(LedgerError::NotFound("transaction"))?;
            if let Some(transfer_id) = t.transfer_id {
                return predict_transfer_reversal(transfer_id, scope, db);
            }
            if t.reverses_id.is_some() {
                return Err(invalid());
            }
            match t.status {
                TransactionStatus::Completed => {}
                TransactionStatus::Reversed => return Err(LedgerError::AlreadyReversed),
                TransactionStatus::Pending | TransactionStatus::Failed => return Err(invalid()),
            }
            let a = find(db, scope, t.account_id)?;
            active(a)?;
            match t.kind {
                TransactionType::Credit if a.available() < t.amount => {
                    Err(short(a.available(), t.amount))
                }
                TransactionType::Credit => Ok(()),
                TransactionType::Debit => can_credit(a, t.amount),
            }
        }
        Command::ReverseTransfer { transfer_id, .. } => {
            predict_transfer_reversal(*transfer_id, scope, db)
        }
        Command::Transfer(spec) => predict_transfer(spec, scope, db),
        Command::TransferBatch { .. } => Ok(()),
        // The generator makes no API-key commands.
        Command::CreateApiKey(_) | Command::RevokeApiKey { .. } => Ok(()),
    }
}

fn predict_transfer(spec: &TransferSpec, scope: &Scope, db: &Db) -> Result<(), LedgerError> {
    let from = find(db, scope, spec.from_account_id)?;
    let to = find(db, scope, spec.to_account_id)?;
    if from.id == to.id {
        return Err(LedgerError::SameAccount);
    }
    if from.currency != to.currency {
        return Err(LedgerError::CurrencyMismatch {
            from: from.currency.to_string(),
            to: to.currency.to_string(),
        });
    }
    active(from)?;
    active(to)?;
    can_credit(to, spec.amount.get())?;
    if from.available() < spec.amount.get() {
        return Err(short(from.available(), spec.amount.get()));
    }
    Ok(())
}

fn predict_transfer_reversal(id: Uuid, scope: &Scope, db: &Db) -> Result<(), LedgerError> {
    let tr = db
        .transfers
        .get(&id)
        .filter(|t| visible(scope, t.from_account_id) && visible(scope, t.to_account_id))
        .ok_or(LedgerError::NotFound("transfer"))?;
    match tr.status {
        TransferStatus::Failed => return Err(invalid()),
        TransferStatus::Reversed => return Err(LedgerError::AlreadyReversed),
        TransferStatus::Completed => {}
    }
    if tr.reverses_id.is_some() {
        return Err(invalid());
    }
    let source = find(db, scope, tr.to_account_id)?;
    let destination = find(db, scope, tr.from_account_id)?;
    active(source)?;
    active(destination)?;
    can_credit(destination, tr.amount)?;
    if source.available() < tr.amount {
        return Err(short(source.available(), tr.amount));
    }
    Ok(())
}

/// Equal refusals; `InvalidState` messages and recorded ids are compared elsewhere.
fn same_error(a: &LedgerError, b: &LedgerError) -> bool {
    match (a, b) {
        (LedgerError::InvalidState(_), LedgerError::InvalidState(_)) => true,
        (
            LedgerError::InsufficientFunds {
                available: a1,
                amount: m1,
                ..
            },
            LedgerError::InsufficientFunds {
                available: a2,
                amount: m2,
                ..
            },
        ) => a1 == a2 && m1 == m2,
        _ => a == b,
    }
}

fn strip_ids(e: &LedgerError) -> LedgerError {
    match e {
        LedgerError::InsufficientFunds {
            available, amount, ..
        } => short(*available, *amount),
        other => other.clone(),
    }
}

// ----- what a command may change ---------------------------------------------------------------

/// The changes one command is allowed to make.
#[derive(Debug, Default)]
struct Expect {
    /// Per account: change of balance, held and version. Absent: all zero.
    deltas: HashMap<Uuid, [i64; 3]>,
    /// Accounts on which a decline was recorded: only their `seq` may change.
    declined_on: HashSet<Uuid>,
    /// The account an update may change.
    patched: Option<Uuid>,
    new_accounts: usize,
    new_transactions: usize,
    new_transfers: usize,
    touched_transactions: HashSet<Uuid>,
    touched_transfers: HashSet<Uuid>,
}

impl Expect {
    fn add(&mut self, id: Uuid, balance: i64, held: i64, version: i64) {
        let d = self.deltas.entry(id).or_default();
        d[0] += balance;
        d[1] += held;
        d[2] += version;
    }

    /// A recorded insufficient-funds decline: a failed debit and, for a transfer, a failed
    /// transfer, both new in `after`.
    fn declined(
        &mut self,
        before: &Db,
        after: &Db,
        spec: (Uuid, Option<Uuid>, i64),
        transaction_id: Uuid,
        transfer_id: Option<Uuid>,
    ) -> Check {
        let (from, to, amount) = spec;
        prop_assert!(!before.transactions.contains_key(&transaction_id));
        let Some(t) = after.transactions.get(&transaction_id) else {
            fail!("the recorded decline {transaction_id} is not persisted");
        };
        prop_assert_eq!(t.account_id, from);
        prop_assert_eq!(t.kind, TransactionType::Debit);
        prop_assert_eq!(t.amount, amount);
        prop_assert_eq!(t.status, TransactionStatus::Failed);
        prop_assert_eq!(t.failure_reason, Some(FailureReason::InsufficientFunds));
        prop_assert_eq!(t.balance_after, None);
        prop_assert_eq!(t.transfer_id, transfer_id);
        self.new_transactions += 1;
        self.declined_on.insert(from);
        if let Some(transfer_id) = transfer_id {
            prop_assert!(!before.transfers.contains_key(&transfer_id));
            let Some(tr) = after.transfers.get(&transfer_id) else {
                fail!("the recorded failed transfer {transfer_id} is not persisted");
            };
            prop_assert_eq!(tr.status, TransferStatus::Failed);
            prop_assert_eq!(tr.debit_id, transaction_id);
            prop_assert_eq!(tr.credit_id, None);
            prop_assert_eq!(tr.from_account_id, from);
            prop_assert_eq!(Some(tr.to_account_id), to);
            prop_assert_eq!(tr.amount, amount);
            self.new_transfers += 1;
        }
        Ok(())
    }

    /// A completed transfer (or compensation) in `view`, as persisted in `after`.
    fn transferred(&mut self, after: &Db, view: &TransferView) -> Check {
        let tr = &view.transfer;
        prop_assert_eq!(tr.status, TransferStatus::Completed);
        prop_assert_eq!(after.transfers.get(&tr.id), Some(tr));
        prop_assert_eq!(after.transactions.get(&view.debit.id), Some(&view.debit));
        let Some(credit) = &view.credit else {
            fail!("a completed transfer without a credit: {view:?}");
        };
        prop_assert_eq!(after.transactions.get(&credit.id), Some(credit));
        prop_assert_eq!(view.debit.account_id, tr.from_account_id);
        prop_assert_eq!(credit.account_id, tr.to_account_id);
        self.add(tr.from_account_id, -tr.amount, 0, 1);
        self.add(tr.to_account_id, tr.amount, 0, 1);
        self.new_transactions += 2;
        self.new_transfers += 1;
        Ok(())
    }

    /// The compensation `view` of the stored transfer `original`.
    fn reversed_transfer(&mut self, after: &Db, original: &Transfer, view: &TransferView) -> Check {
        let c = &view.transfer;
        prop_assert_eq!(c.reverses_id, Some(original.id));
        prop_assert_eq!(c.from_account_id, original.to_account_id);
        prop_assert_eq!(c.to_account_id, original.from_account_id);
        prop_assert_eq!(c.amount, original.amount);
        prop_assert_eq!(view.debit.reverses_id, original.credit_id);
        prop_assert_eq!(
            view.credit.as_ref().and_then(|c| c.reverses_id),
            Some(original.debit_id)
        );
        self.transferred(after, view)?;
        self.touched_transactions.insert(original.debit_id);
        self.touched_transactions.extend(original.credit_id);
        self.touched_transfers.insert(original.id);
        let Some(now) = after.transfers.get(&original.id) else {
            fail!("reversed transfer vanished");
        };
        prop_assert_eq!(now.status, TransferStatus::Reversed);
        prop_assert_eq!(now.reversed_by_id, Some(c.id));
        Ok(())
    }
}

/// Checks one applied command: its outcome against the oracle, its effect against the stored rows,
/// and that it changed nothing but what it may (`before`/`after`: the database as if the batch
/// committed right before/after the command; `base`: the database before the batch).
fn check_command(
    envelope: &Envelope,
    outcome: &Outcome,
    before: &Db,
    after: &Db,
    base: &Db,
    before_working: &Working,
) -> Check {
    let command = &envelope.command;
    let scope = &envelope.scope;
    match (predict(command, scope, before), outcome) {
        (Ok(()), Ok(_)) => {}
        (Err(want), Err(got)) if same_error(&want, got) => {}
        (want, got) => fail!("{command:?} (scope {scope:?}): expected {want:?}, got {got:?}"),
    }
    let expect = expect(command, outcome, before, after)?;
    check_diff(
        before,
        after,
        &expect,
        &format!("{command:?} -> {outcome:?}"),
    )?;
    if let Err(e) = outcome {
        // Property 6: a refused command never changes a version (nor anything but the decline).
        for (id, a) in &before.accounts {
            prop_assert_eq!(
                after.accounts[id].version,
                a.version,
                "{:?} changed a version",
                e
            );
        }
        if !matches!(
            e,
            LedgerError::InsufficientFunds {
                transaction_id: Some(_),
                ..
            }
        ) {
            prop_assert_eq!(
                after,
                before,
                "{:?} -> {:?} changed the database",
                command,
                e
            );
        }
    }
    if let (Command::TransferBatch { items, atomic }, Ok(Effect::Batch(results))) =
        (command, outcome)
    {
        check_batch(
            scope,
            items,
            *atomic,
            results,
            before,
            after,
            base,
            before_working,
        )?;
    }
    Ok(())
}

/// Property 7: a batch is its items applied one by one as separate transfers; an atomic one that
/// fails changes nothing.
#[allow(clippy::too_many_arguments)]
fn check_batch(
    scope: &Scope,
    items: &[BatchItem],
    atomic: bool,
    results: &[ItemResult],
    before: &Db,
    after: &Db,
    base: &Db,
    before_working: &Working,
) -> Check {
    prop_assert_eq!(results.len(), items.len());
    let mut replay = before_working.clone();
    let mut singles = Vec::with_capacity(items.len());
    for item in items {
        singles.push(match item {
            BatchItem::Invalid => ItemResult::Invalid,
            BatchItem::Valid(spec) => match replay.apply(&Envelope {
                command: Command::Transfer(spec.clone()),
                scope: scope.clone(),
                actor: None,
            }) {
                Ok(Effect::Transfer(view)) => ItemResult::Done(view),
                Ok(other) => fail!("a transfer produced {other:?}"),
                Err(e) => ItemResult::Failed(e),
            },
        });
    }
    let replayed = base.overlay(&replay)?;
    let failed = singles.iter().any(|r| !matches!(r, ItemResult::Done(_)));
    if atomic && failed {
        prop_assert_eq!(after, before, "a failed atomic batch changed the database");
        for (got, single) in results.iter().zip(&singles) {
            let want = match single {
                ItemResult::Done(_) | ItemResult::Aborted => ItemResult::Aborted,
                ItemResult::Invalid => ItemResult::Invalid,
                ItemResult::Failed(e) => ItemResult::Failed(strip_ids(e)),
            };
            prop_assert_eq!(got, &want, "atomic batch item");
        }
        return Ok(());
    }
    for (id, r) in &replayed.accounts {
        let Some(a) = after.accounts.get(id) else {
            fail!("batch lost account {id}");
        };
        prop_assert_eq!(
            (a.balance, a.held, a.version, a.seq, a.status),
            (r.balance, r.held, r.version, r.seq, r.status),
            "batch vs. single transfers, account {}",
            id
        );
    }
    prop_assert_eq!(after.accounts.len(), replayed.accounts.len());
    prop_assert_eq!(after.transactions.len(), replayed.transactions.len());
    prop_assert_eq!(after.transfers.len(), replayed.transfers.len());
    for (got, single) in results.iter().zip(&singles) {
        match (got, single) {
            (ItemResult::Invalid, ItemResult::Invalid) => {}
            (ItemResult::Done(g), ItemResult::Done(w)) => {
                prop_assert_eq!(
                    (g.transfer.from_account_id, g.transfer.to_account_id),
                    (w.transfer.from_account_id, w.transfer.to_account_id)
                );
                prop_assert_eq!(g.transfer.amount, w.transfer.amount);
                prop_assert_eq!(g.debit.balance_after, w.debit.balance_after);
                prop_assert_eq!(
                    g.credit.as_ref().map(|c| c.balance_after),
                    w.credit.as_ref().map(|c| c.balance_after)
                );
            }
            (ItemResult::Failed(g), ItemResult::Failed(w)) => {
                prop_assert!(same_error(g, w), "batch item {:?} vs. single {:?}", g, w);
                if let (
                    LedgerError::InsufficientFunds {
                        transaction_id: gt,
                        transfer_id: gr,
                        ..
                    },
                    LedgerError::InsufficientFunds {
                        transaction_id: wt,
                        transfer_id: wr,
                        ..
                    },
                ) = (g, w)
                {
                    prop_assert_eq!((gt.is_some(), gr.is_some()), (wt.is_some(), wr.is_some()));
                }
            }
            (g, w) => fail!("batch item {g:?} but as a single transfer {w:?}"),
        }
    }
    Ok(())
}

/// What `outcome` says the command did, checked against the rows it returned.
fn expect(
    command: &Command,
    outcome: &Outcome,
    before: &Db,
    after: &Db,
) -> Result<Expect, TestCaseError> {
    let mut e = Expect::default();
    let effect = match outcome {
        Err(LedgerError::InsufficientFunds {
            amount,
            transaction_id,
            transfer_id,
            ..
        }) => {
            let spec = match command {
                Command::Debit { account_id, .. } => Some((*account_id, None)),
                Command::Transfer(spec) => Some((spec.from_account_id, Some(spec.to_account_id))),
                _ => None,
            };
            match (spec, transaction_id) {
                (None, _) => {
                    // A reversal short of funds records nothing.
                    prop_assert_eq!((transaction_id, transfer_id), (&None, &None));
                }
                (Some((from, to)), Some(x)) => {
                    prop_assert_eq!(transfer_id.is_some(), to.is_some());
                    e.declined(before, after, (from, to, *amount), *x, *transfer_id)?;
                }
                (Some(_), None) => fail!("a decline of {command:?} names no transaction"),
            }
            return Ok(e);
        }
        Err(_) => return Ok(e),
        Ok(effect) => effect,
    };
    let returned_tx = |t: &Transaction| -> Check {
        prop_assert_eq!(
            after.transactions.get(&t.id),
            Some(t),
            "returned vs. stored"
        );
        Ok(())
    };
    match (command, effect) {
        (Command::CreateAccount(new), Effect::Account(a)) => {
            prop_assert_eq!(a.id, new.id);
            prop_assert_eq!((a.balance, a.held, a.version, a.seq), (0, 0, 1, 0));
            prop_assert_eq!(a.status, AccountStatus::Active);
            prop_assert_eq!(a.currency, new.currency);
            if let Some(n) = &new.account_number {
                prop_assert_eq!(&a.account_number, n);
            }
            prop_assert_eq!(after.accounts.get(&a.id), Some(a));
            e.new_accounts = 1;
        }
        (
            Command::UpdateAccount {
                account_id,
                if_match,
                patch,
            },
            Effect::Account(a),
        ) => {
            let b = &before.accounts[account_id];
            let changed = patch.status.is_some_and(|s| s != b.status)
                || patch
                    .owner_name
                    .as_ref()
                    .is_some_and(|n| *n != b.owner_name);
            prop_assert_eq!(a.version, if_match + i64::from(changed));
            prop_assert_eq!(a.status, patch.status.unwrap_or(b.status));
            prop_assert_eq!(
                &a.owner_name,
                patch.owner_name.as_ref().unwrap_or(&b.owner_name)
            );
            prop_assert_eq!(after.accounts.get(account_id), Some(a));
            if changed {
                e.add(*account_id, 0, 0, 1);
                e.patched = Some(*account_id);
            }
        }
        (
            Command::Credit {
                account_id, amount, ..
            },
            Effect::Transaction(t),
        ) => {
            returned_tx(t)?;
            let b = &before.accounts[account_id];
            prop_assert_eq!(t.account_id, *account_id);
            prop_assert_eq!(
                (t.kind, t.status),
                (TransactionType::Credit, TransactionStatus::Completed)
            );
            prop_assert_eq!(t.amount, amount.get());
            prop_assert_eq!(t.balance_after, Some(b.balance + amount.get()));
            e.add(*account_id, amount.get(), 0, 1);
            e.new_transactions = 1;
        }
        (
            Command::Debit {
                account_id,
                amount,
                hold,
                ..
            },
            Effect::Transaction(t),
        ) => {
            returned_tx(t)?;
            let b = &before.accounts[account_id];
            prop_assert_eq!(t.account_id, *account_id);
            prop_assert_eq!(t.kind, TransactionType::Debit);
            prop_assert_eq!(t.amount, amount.get());
            if *hold {
                prop_assert_eq!(t.status, TransactionStatus::Pending);
                prop_assert_eq!(t.balance_after, None);
                e.add(*account_id, 0, amount.get(), 1);
            } else {
                prop_assert_eq!(t.status, TransactionStatus::Completed);
                prop_assert_eq!(t.balance_after, Some(b.balance - amount.get()));
                e.add(*account_id, -amount.get(), 0, 1);
            }
            e.new_transactions = 1;
        }
        (Command::Capture { transaction_id }, Effect::Transaction(t)) => {
            returned_tx(t)?;
            prop_assert_eq!(t.id, *transaction_id);
            let b = &before.accounts[&t.account_id];
            prop_assert_eq!(t.status, TransactionStatus::Completed);
            prop_assert_eq!(t.balance_after, Some(b.balance - t.amount));
            e.add(t.account_id, -t.amount, -t.amount, 1);
            e.touched_transactions.insert(t.id);
        }
        (Command::Void { transaction_id }, Effect::Transaction(t)) => {
            returned_tx(t)?;
            prop_assert_eq!(t.id, *transaction_id);
            prop_assert_eq!(t.status, TransactionStatus::Failed);
            prop_assert_eq!(t.failure_reason, Some(FailureReason::Voided));
            prop_assert_eq!(t.balance_after, None);
            e.add(t.account_id, 0, -t.amount, 1);
            e.touched_transactions.insert(t.id);
        }
        (
            Command::ReverseTransaction { transaction_id, .. },
            Effect::Transaction(r) | Effect::LegReversal { leg: r, .. },
        ) => {
            returned_tx(r)?;
            let original = &before.transactions[transaction_id];
            // Property 8: the compensation of the transaction named.
            prop_assert_eq!(r.reverses_id, Some(original.id));
            prop_assert_eq!(r.account_id, original.account_id);
            prop_assert_ne!(r.kind, original.kind);
            prop_assert_eq!(r.amount, original.amount);
            prop_assert_eq!(r.status, TransactionStatus::Completed);
            prop_assert_eq!(
                after.transactions[transaction_id].reversed_by_id,
                Some(r.id)
            );
            match original.transfer_id {
                Some(transfer_id) => {
                    let tr = &before.transfers[&transfer_id];
                    let Some(c) = r.transfer_id.and_then(|id| after.transfers.get(&id)) else {
                        fail!("the compensating leg {r:?} has no transfer");
                    };
                    let view = TransferView {
                        transfer: c.clone(),
                        debit: after.transactions[&c.debit_id].clone(),
                        credit: c.credit_id.map(|id| after.transactions[&id].clone()),
                    };
                    e.reversed_transfer(after, tr, &view)?;
                }
                None => {
                    let sign = match original.kind {
                        TransactionType::Credit => -1,
                        TransactionType::Debit => 1,
                    };
                    e.add(original.account_id, sign * original.amount, 0, 1);
                    e.new_transactions = 1;
                    e.touched_transactions.insert(original.id);
                }
            }
        }
        (Command::ReverseTransfer { transfer_id, .. }, Effect::Transfer(view)) => {
            e.reversed_transfer(after, &before.transfers[transfer_id], view)?;
        }
        (Command::Transfer(spec), Effect::Transfer(view)) => {
            prop_assert_eq!(view.transfer.from_account_id, spec.from_account_id);
            prop_assert_eq!(view.transfer.to_account_id, spec.to_account_id);
            prop_assert_eq!(view.transfer.amount, spec.amount.get());
            prop_assert_eq!(view.transfer.reverses_id, None);
            e.transferred(after, view)?;
        }
        (Command::TransferBatch { items, atomic }, Effect::Batch(results)) => {
            for (item, result) in items.iter().zip(results) {
                match (item, result) {
                    (BatchItem::Invalid, ItemResult::Invalid) => {}
                    (BatchItem::Valid(spec), ItemResult::Done(view)) => {
                        prop_assert!(
                            !*atomic || results.iter().all(|r| matches!(r, ItemResult::Done(_)))
                        );
                        prop_assert_eq!(view.transfer.from_account_id, spec.from_account_id);
                        prop_assert_eq!(view.transfer.to_account_id, spec.to_account_id);
                        prop_assert_eq!(view.transfer.amount, spec.amount.get());
                        e.transferred(after, view)?;
                    }
                    (
                        BatchItem::Valid(spec),
                        ItemResult::Failed(LedgerError::InsufficientFunds {
                            amount,
                            transaction_id: Some(x),
                            transfer_id,
                            ..
                        }),
                    ) => {
                        prop_assert!(!*atomic, "an atomic batch recorded a decline");
                        prop_assert!(transfer_id.is_some());
                        e.declined(
                            before,
                            after,
                            (spec.from_account_id, Some(spec.to_account_id), *amount),
                            *x,
                            *transfer_id,
                        )?;
                    }
                    (
                        BatchItem::Valid(_),
                        ItemResult::Failed(LedgerError::InsufficientFunds { transfer_id, .. }),
                    ) => {
                        prop_assert!(
                            *atomic && transfer_id.is_none(),
                            "a decline without its transaction: {:?}",
                            result
                        );
                    }
                    (BatchItem::Valid(_), ItemResult::Failed(_)) => {}
                    (BatchItem::Valid(_), ItemResult::Aborted) => prop_assert!(*atomic),
                    (item, result) => fail!("batch item {item:?} -> {result:?}"),
                }
            }
        }
        (command, effect) => fail!("{command:?} produced {effect:?}"),
    }
    Ok(e)
}

/// Properties 5 and 6: nothing but what `expect` allows changed between `before` and `after`.
fn check_diff(before: &Db, after: &Db, expect: &Expect, what: &str) -> Check {
    prop_assert_eq!(
        after.accounts.len(),
        before.accounts.len() + expect.new_accounts,
        "{}: new accounts",
        what
    );
    for (id, b) in &before.accounts {
        let Some(a) = after.accounts.get(id) else {
            fail!("{what}: account {id} vanished");
        };
        let [balance, held, version] = expect.deltas.get(id).copied().unwrap_or_default();
        prop_assert_eq!(
            a.balance - b.balance,
            balance,
            "{}: balance of {}",
            what,
            id
        );
        prop_assert_eq!(a.held - b.held, held, "{}: held of {}", what, id);
        prop_assert_eq!(
            a.version - b.version,
            version,
            "{}: version of {}",
            what,
            id
        );
        let patched = expect.patched == Some(*id);
        if expect.deltas.contains_key(id) || expect.declined_on.contains(id) || patched {
            prop_assert!(a.seq >= b.seq, "{}: seq of {} went back", what, id);
            prop_assert!(
                a.updated_at >= b.updated_at,
                "{}: updated_at of {} went back",
                what,
                id
            );
            let mask = |x: &Account| Account {
                balance: 0,
                held: 0,
                version: 0,
                seq: 0,
                updated_at: OffsetDateTime::UNIX_EPOCH,
                owner_name: if patched {
                    String::new()
                } else {
                    x.owner_name.clone()
                },
                status: if patched {
                    AccountStatus::Active
                } else {
                    x.status
                },
                metadata: if patched {
                    Map::new()
                } else {
                    x.metadata.clone()
                },
                ..x.clone()
            };
            prop_assert_eq!(mask(a), mask(b), "{}: account {}", what, id);
        } else {
            prop_assert_eq!(a, b, "{}: account {} must not change", what, id);
        }
    }
    prop_assert_eq!(
        after.transactions.len(),
        before.transactions.len() + expect.new_transactions,
        "{}: new transactions",
        what
    );
    for (id, b) in &before.transactions {
        let a = after.transactions.get(id);
        if expect.touched_transactions.contains(id) {
            prop_assert!(a.is_some(), "{}: transaction {} vanished", what, id);
        } else {
            prop_assert_eq!(a, Some(b), "{}: transaction {} must not change", what, id);
        }
    }
    prop_assert_eq!(
        after.transfers.len(),
        before.transfers.len() + expect.new_transfers,
        "{}: new transfers",
        what
    );
    for (id, b) in &before.transfers {
        let a = after.transfers.get(id);
        if expect.touched_transfers.contains(id) {
            prop_assert!(a.is_some(), "{}: transfer {} vanished", what, id);
        } else {
            prop_assert_eq!(a, Some(b), "{}: transfer {} must not change", what, id);
        }
    }
    Ok(())
}

// ----- invariants ------------------------------------------------------------------------------

fn is_posted(t: &Transaction) -> bool {
    matches!(
        t.status,
        TransactionStatus::Completed | TransactionStatus::Reversed
    )
}

fn signed(t: &Transaction) -> i128 {
    match t.kind {
        TransactionType::Credit => i128::from(t.amount),
        TransactionType::Debit => -i128::from(t.amount),
    }
}

/// Properties 1–4 and 8 on the whole database.
fn check_invariants(db: &Db) -> Check {
    let mut by_account: HashMap<Uuid, Vec<&Transaction>> = HashMap::new();
    for t in db.transactions.values() {
        prop_assert!(
            db.accounts.contains_key(&t.account_id),
            "transaction {} on an unknown account",
            t.id
        );
        by_account.entry(t.account_id).or_default().push(t);
        prop_assert!((1..=MAX_AMOUNT).contains(&t.amount), "amount of {:?}", t);
        prop_assert_eq!(
            t.failure_reason.is_some(),
            t.status == TransactionStatus::Failed,
            "failure reason of {:?}",
            t
        );
        prop_assert_eq!(
            t.posted_seq.is_some(),
            is_posted(t),
            "posted_seq of {:?}",
            t
        );
        prop_assert_eq!(
            t.balance_after.is_some(),
            is_posted(t),
            "balance_after of {:?}",
            t
        );
        prop_assert_eq!(t.posted_at.is_some(), is_posted(t), "posted_at of {:?}", t);
        if t.status == TransactionStatus::Pending {
            prop_assert_eq!(t.kind, TransactionType::Debit, "a pending credit: {:?}", t);
            prop_assert_eq!(t.transfer_id, None, "a pending transfer leg: {:?}", t);
        }
        // Property 8.
        prop_assert_eq!(
            t.status == TransactionStatus::Reversed,
            t.reversed_by_id.is_some(),
            "reversed_by_id of {:?}",
            t
        );
        if let Some(r) = t.reversed_by_id {
            let Some(c) = db.transactions.get(&r) else {
                fail!("{t:?} is reversed by a missing transaction");
            };
            prop_assert_eq!(
                c.status,
                TransactionStatus::Completed,
                "compensation {:?}",
                c
            );
            prop_assert_eq!(c.reverses_id, Some(t.id), "compensation {:?}", c);
            prop_assert_ne!(c.kind, t.kind, "compensation {:?}", c);
            prop_assert_eq!(c.amount, t.amount, "compensation {:?}", c);
            prop_assert_eq!(c.account_id, t.account_id, "compensation {:?}", c);
            prop_assert_eq!(c.transfer_id.is_some(), t.transfer_id.is_some());
        }
        if let Some(o) = t.reverses_id {
            let Some(original) = db.transactions.get(&o) else {
                fail!("{t:?} reverses a missing transaction");
            };
            prop_assert_eq!(
                original.reversed_by_id,
                Some(t.id),
                "original {:?}",
                original
            );
        }
        if let Some(transfer_id) = t.transfer_id {
            let Some(tr) = db.transfers.get(&transfer_id) else {
                fail!("{t:?} belongs to a missing transfer");
            };
            prop_assert!(
                tr.debit_id == t.id || tr.credit_id == Some(t.id),
                "{:?} is not a leg of its transfer {:?}",
                t,
                tr
            );
        }
    }

    let mut total: i128 = 0;
    for a in db.accounts.values() {
        let txs = by_account.remove(&a.id).unwrap_or_default();
        // Property 1.
        let posted: i128 = txs.iter().filter(|t| is_posted(t)).map(|t| signed(t)).sum();
        prop_assert_eq!(
            i128::from(a.balance),
            posted,
            "balance of {:?} vs. its postings",
            a
        );
        // Property 2.
        prop_assert!(a.balance >= 0, "negative balance: {:?}", a);
        prop_assert!(
            0 <= a.held && a.held <= a.balance,
            "held out of range: {:?}",
            a
        );
        let pending: i64 = txs
            .iter()
            .filter(|t| t.status == TransactionStatus::Pending)
            .map(|t| t.amount)
            .sum();
        prop_assert_eq!(a.held, pending, "held of {:?} vs. its pending debits", a);
        prop_assert!(a.version >= 1);
        for t in &txs {
            prop_assert_eq!(t.currency, a.currency, "currency of {:?}", t);
        }
        // Property 3.
        let mut chain: Vec<&Transaction> = txs.iter().copied().filter(|t| is_posted(t)).collect();
        chain.sort_by_key(|t| t.posted_seq);
        let mut running: i64 = 0;
        for t in &chain {
            running = match t.kind {
                TransactionType::Credit => running.checked_add(t.amount),
                TransactionType::Debit => running.checked_sub(t.amount),
            }
            .unwrap_or(i64::MIN);
            prop_assert_eq!(
                t.balance_after,
                Some(running),
                "balance_after chain at {:?}",
                t
            );
        }
        prop_assert_eq!(running, a.balance, "last balance_after of {:?}", a);
        // Every event number of the account is used exactly once.
        let mut seqs: Vec<i64> = txs
            .iter()
            .flat_map(|t| std::iter::once(t.seq).chain(t.posted_seq))
            .collect();
        seqs.sort_unstable();
        prop_assert_eq!(
            seqs,
            (1..=a.seq).collect::<Vec<_>>(),
            "event numbers of {:?}",
            a
        );
        total += i128::from(a.balance);
    }
    // Property 1, globally: only external flows create or destroy money.
    let external: i128 = db
        .transactions
        .values()
        .filter(|t| t.transfer_id.is_none() && is_posted(t))
        .map(signed)
        .sum();
    prop_assert_eq!(total, external, "money created or destroyed");

    // Property 4.
    for tr in db.transfers.values() {
        prop_assert_ne!(tr.from_account_id, tr.to_account_id);
        let (Some(from), Some(to)) = (
            db.accounts.get(&tr.from_account_id),
            db.accounts.get(&tr.to_account_id),
        ) else {
            fail!("transfer {tr:?} between unknown accounts");
        };
        prop_assert_eq!(from.currency, tr.currency);
        prop_assert_eq!(to.currency, tr.currency);
        let Some(debit) = db.transactions.get(&tr.debit_id) else {
            fail!("transfer {tr:?} without its debit");
        };
        prop_assert_eq!(
            debit.account_id,
            tr.from_account_id,
            "debit leg of {:?}",
            tr
        );
        prop_assert_eq!(debit.kind, TransactionType::Debit, "debit leg of {:?}", tr);
        prop_assert_eq!(debit.amount, tr.amount, "debit leg of {:?}", tr);
        prop_assert_eq!(debit.transfer_id, Some(tr.id), "debit leg of {:?}", tr);
        match tr.status {
            TransferStatus::Failed => {
                prop_assert_eq!(tr.credit_id, None, "failed transfer {:?}", tr);
                prop_assert_eq!(debit.status, TransactionStatus::Failed);
                prop_assert_eq!(debit.failure_reason, Some(FailureReason::InsufficientFunds));
                prop_assert_eq!((tr.reverses_id, tr.reversed_by_id), (None, None));
            }
            TransferStatus::Completed | TransferStatus::Reversed => {
                let Some(credit) = tr.credit_id.and_then(|id| db.transactions.get(&id)) else {
                    fail!("transfer {tr:?} without its credit");
                };
                prop_assert_eq!(
                    credit.account_id,
                    tr.to_account_id,
                    "credit leg of {:?}",
                    tr
                );
                prop_assert_eq!(
                    credit.kind,
                    TransactionType::Credit,
                    "credit leg of {:?}",
                    tr
                );
                prop_assert_eq!(credit.amount, tr.amount, "credit leg of {:?}", tr);
                prop_assert_eq!(credit.transfer_id, Some(tr.id), "credit leg of {:?}", tr);
                let legs = if tr.status == TransferStatus::Completed {
                    TransactionStatus::Completed
                } else {
                    TransactionStatus::Reversed
                };
                prop_assert_eq!(
                    (debit.status, credit.status),
                    (legs, legs),
                    "legs of {:?}",
                    tr
                );
                prop_assert_eq!(
                    tr.reversed_by_id.is_some(),
                    tr.status == TransferStatus::Reversed
                );
                if let Some(c) = tr.reversed_by_id {
                    let Some(comp) = db.transfers.get(&c) else {
                        fail!("{tr:?} reversed by a missing transfer");
                    };
                    prop_assert_eq!(comp.reverses_id, Some(tr.id));
                    prop_assert_eq!(comp.status, TransferStatus::Completed);
                    prop_assert_eq!(
                        (comp.from_account_id, comp.to_account_id, comp.amount),
                        (tr.to_account_id, tr.from_account_id, tr.amount)
                    );
                    prop_assert_eq!(debit.reversed_by_id, comp.credit_id);
                    prop_assert_eq!(credit.reversed_by_id, Some(comp.debit_id));
                }
                match tr.reverses_id {
                    Some(o) => {
                        let Some(original) = db.transfers.get(&o) else {
                            fail!("{tr:?} reverses a missing transfer");
                        };
                        prop_assert_eq!(original.reversed_by_id, Some(tr.id));
                        prop_assert_eq!(debit.reverses_id, original.credit_id);
                        prop_assert_eq!(credit.reverses_id, Some(original.debit_id));
                    }
                    None => {
                        prop_assert_eq!((debit.reverses_id, credit.reverses_id), (None, None));
                    }
                }
            }
        }
    }
    Ok(())
}

// ----- the properties --------------------------------------------------------------------------

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Random commands in random batches: every command does what the contract says and nothing
    /// else, and the invariants hold after every batch.
    #[test]
    fn random_batches_keep_the_ledger_consistent(
        n_usd in 2..=3_usize,
        steps in prop::collection::vec(step(), 1..40),
        sizes in prop::collection::vec(1..=6_usize, 1..8),
    ) {
        let mut sim = Sim::new(n_usd);
        let all: Vec<Step> = sim.creates().into_iter().chain(steps).collect();
        let mut rest = &all[..];
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (batch, tail) = rest.split_at((*size).min(rest.len()));
            sim.run_batch(batch)?;
            rest = tail;
        }
    }

    /// Property 5, 6 and 8 at the database level: every command alone in its batch. A refusal
    /// changes nothing but a recorded decline, and a successful reversal repeated is refused with
    /// `AlreadyReversed`.
    #[test]
    fn single_command_batches_refusals_change_nothing(
        n_usd in 2..=3_usize,
        steps in prop::collection::vec(step(), 1..40),
    ) {
        let mut sim = Sim::new(n_usd);
        let creates = sim.creates();
        sim.run_batch(&creates)?;
        for step in &steps {
            let before = sim.db.clone();
            let (envelope, outcome) = sim.run_batch(std::slice::from_ref(step))?.remove(0);
            let after = sim.db.clone();
            let expect = expect(&envelope.command, &outcome, &before, &after)?;
            check_diff(&before, &after, &expect, &format!("{envelope:?} -> {outcome:?}"))?;
            match &outcome {
                Err(LedgerError::InsufficientFunds { transaction_id: Some(_), .. }) => {
                    prop_assert!(
                        matches!(envelope.command, Command::Debit { .. } | Command::Transfer(_)),
                        "only debits and transfers record a decline"
                    );
                    for (id, a) in &before.accounts {
                        let b = &after.accounts[id];
                        prop_assert_eq!((a.balance, a.held, a.version, a.status), (b.balance, b.held, b.version, b.status));
                    }
                }
                Err(_) => prop_assert_eq!(&after, &before),
                Ok(_) => {}
            }
            if outcome.is_ok()
                && matches!(
                    envelope.command,
                    Command::ReverseTransaction { .. } | Command::ReverseTransfer { .. }
                )
            {
                let again = sim.run_envelopes(vec![(envelope.clone(), None)])?.remove(0);
                prop_assert_eq!(
                    again.1,
                    Err(LedgerError::AlreadyReversed),
                    "reversing {:?} twice",
                    envelope.command
                );
                prop_assert_eq!(&sim.db, &after);
            }
        }
    }
}

// ----- examples --------------------------------------------------------------------------------

fn now() -> OffsetDateTime {
    datetime!(2026-01-01 0:00 UTC)
}

fn plain(command: Command) -> Envelope {
    Envelope {
        command,
        scope: None,
        actor: None,
    }
}

fn open(working: &mut Working, id: u128, currency: Currency) -> Uuid {
    let id = Uuid::from_u128(id);
    let created = working.apply(&plain(Command::CreateAccount(NewAccount {
        id,
        account_number: None,
        owner_name: "owner".into(),
        currency,
        metadata: Map::new(),
    })));
    assert!(created.is_ok(), "{created:?}");
    id
}

fn amount_of(n: i64) -> Amount {
    Amount::new(n).expect("a valid amount")
}

fn credit(id: Uuid, n: i64) -> Envelope {
    plain(Command::Credit {
        account_id: id,
        amount: amount_of(n),
        description: None,
        reference: None,
    })
}

fn transfer(from: Uuid, to: Uuid, n: i64) -> Envelope {
    plain(Command::Transfer(TransferSpec {
        from_account_id: from,
        to_account_id: to,
        amount: amount_of(n),
        description: None,
        reference: None,
    }))
}

fn tx_of(outcome: Outcome) -> Transaction {
    match outcome {
        Ok(Effect::Transaction(t) | Effect::LegReversal { leg: t, .. }) => t,
        other => panic!("expected a transaction, got {other:?}"),
    }
}

#[test]
fn transfer_short_of_funds_records_a_failed_transfer() {
    let mut w = Working::new(now(), [], [], [], []);
    let a = open(&mut w, 1, usd());
    let b = open(&mut w, 2, usd());
    tx_of(w.apply(&credit(a, 100)));
    let outcome = w.apply(&transfer(a, b, 150));
    let Err(LedgerError::InsufficientFunds {
        available: 100,
        amount: 150,
        transaction_id: Some(debit_id),
        transfer_id: Some(transfer_id),
    }) = outcome
    else {
        panic!("expected a recorded decline, got {outcome:?}");
    };
    assert_eq!(
        w.account(&a).map(|x| (x.balance, x.held, x.version)),
        Some((100, 0, 2))
    );
    assert_eq!(w.account(&b).map(|x| (x.balance, x.version)), Some((0, 1)));
    let debit = w.transaction(&debit_id).expect("the failed debit is kept");
    assert_eq!(debit.status, TransactionStatus::Failed);
    assert_eq!(debit.failure_reason, Some(FailureReason::InsufficientFunds));
    assert_eq!(debit.transfer_id, Some(transfer_id));
    let changes = w.into_changes();
    let [failed] = &changes.new_transfers[..] else {
        panic!("one transfer expected: {:?}", changes.new_transfers);
    };
    assert_eq!(failed.id, transfer_id);
    assert_eq!(failed.status, TransferStatus::Failed);
    assert_eq!(failed.credit_id, None);
    assert_eq!(failed.debit_id, debit_id);
}

#[test]
fn transfer_refusals_in_order() {
    let mut w = Working::new(now(), [], [], [], []);
    let a = open(&mut w, 1, usd());
    let b = open(&mut w, 2, usd());
    let e = open(&mut w, 3, eur());
    // An unknown account is not found before it is found to be the same account.
    assert_eq!(
        w.apply(&transfer(UNKNOWN_ID, UNKNOWN_ID, 1)),
        Err(LedgerError::NotFound("account"))
    );
    assert_eq!(
        w.apply(&transfer(a, UNKNOWN_ID, 1)),
        Err(LedgerError::NotFound("account"))
    );
    assert_eq!(w.apply(&transfer(a, a, 1)), Err(LedgerError::SameAccount));
    assert_eq!(
        w.apply(&transfer(a, e, 1)),
        Err(LedgerError::CurrencyMismatch {
            from: "USD".into(),
            to: "EUR".into()
        })
    );
    // Out of scope looks like unknown.
    let scoped = Envelope {
        scope: Some(Arc::new([a].into_iter().collect())),
        ..transfer(a, b, 1)
    };
    assert_eq!(w.apply(&scoped), Err(LedgerError::NotFound("account")));
    let changes = w.into_changes();
    assert!(changes.new_transactions.is_empty() && changes.new_transfers.is_empty());
}

#[test]
fn hold_capture_and_void() {
    let mut w = Working::new(now(), [], [], [], []);
    let a = open(&mut w, 1, usd());
    tx_of(w.apply(&credit(a, 100)));
    let hold = |n| {
        plain(Command::Debit {
            account_id: a,
            amount: amount_of(n),
            description: None,
            reference: None,
            hold: true,
        })
    };
    let h1 = tx_of(w.apply(&hold(30)));
    let h2 = tx_of(w.apply(&hold(50)));
    assert_eq!(
        (h1.status, h1.balance_after),
        (TransactionStatus::Pending, None)
    );
    assert_eq!(w.account(&a).map(|x| (x.balance, x.held)), Some((100, 80)));
    assert!(matches!(
        w.apply(&hold(21)),
        Err(LedgerError::InsufficientFunds {
            available: 20,
            amount: 21,
            transaction_id: Some(_),
            transfer_id: None
        })
    ));
    let captured = tx_of(w.apply(&plain(Command::Capture {
        transaction_id: h1.id,
    })));
    assert_eq!(
        (captured.status, captured.balance_after),
        (TransactionStatus::Completed, Some(70))
    );
    let voided = tx_of(w.apply(&plain(Command::Void {
        transaction_id: h2.id,
    })));
    assert_eq!(
        (voided.status, voided.failure_reason),
        (TransactionStatus::Failed, Some(FailureReason::Voided))
    );
    assert_eq!(w.account(&a).map(|x| (x.balance, x.held)), Some((70, 0)));
    for settle in [
        Command::Capture {
            transaction_id: h1.id,
        },
        Command::Void {
            transaction_id: h2.id,
        },
    ] {
        assert!(matches!(
            w.apply(&plain(settle)),
            Err(LedgerError::InvalidState(_))
        ));
    }
}

#[test]
fn a_frozen_account_can_void_but_not_capture() {
    let mut w = Working::new(now(), [], [], [], []);
    let a = open(&mut w, 1, usd());
    tx_of(w.apply(&credit(a, 100)));
    let hold = |n| {
        plain(Command::Debit {
            account_id: a,
            amount: amount_of(n),
            description: None,
            reference: None,
            hold: true,
        })
    };
    let h1 = tx_of(w.apply(&hold(30)));
    let h2 = tx_of(w.apply(&hold(20)));
    let frozen = w.apply(&plain(Command::UpdateAccount {
        account_id: a,
        if_match: 4,
        patch: AccountPatch {
            status: Some(AccountStatus::Frozen),
            ..AccountPatch::default()
        },
    }));
    assert!(
        matches!(&frozen, Ok(Effect::Account(x)) if x.version == 5),
        "{frozen:?}"
    );
    assert_eq!(
        w.apply(&plain(Command::Capture {
            transaction_id: h1.id
        })),
        Err(LedgerError::AccountNotActive {
            account_id: a,
            status: "frozen"
        })
    );
    let voided = tx_of(w.apply(&plain(Command::Void {
        transaction_id: h2.id,
    })));
    assert_eq!(voided.failure_reason, Some(FailureReason::Voided));
    assert_eq!(
        w.account(&a).map(|x| (x.balance, x.held, x.version)),
        Some((100, 30, 6))
    );
}

#[test]
fn reversing_twice_and_reversing_a_compensation_are_refused() {
    let mut w = Working::new(now(), [], [], [], []);
    let a = open(&mut w, 1, usd());
    let b = open(&mut w, 2, usd());
    let c = tx_of(w.apply(&credit(a, 100)));
    let reverse = |id| {
        plain(Command::ReverseTransaction {
            transaction_id: id,
            reason: None,
        })
    };
    let r = tx_of(w.apply(&reverse(c.id)));
    assert_eq!(
        (r.kind, r.amount, r.reverses_id, r.balance_after),
        (TransactionType::Debit, 100, Some(c.id), Some(0))
    );
    assert_eq!(w.apply(&reverse(c.id)), Err(LedgerError::AlreadyReversed));
    assert!(matches!(
        w.apply(&reverse(r.id)),
        Err(LedgerError::InvalidState(_))
    ));
    // A transfer leg reverses the whole transfer.
    tx_of(w.apply(&credit(a, 40)));
    let Ok(Effect::Transfer(view)) = w.apply(&transfer(a, b, 40)) else {
        panic!("transfer failed");
    };
    let credit_leg = view.credit.clone().expect("a credit leg");
    let comp = tx_of(w.apply(&reverse(credit_leg.id)));
    assert_eq!(
        (comp.account_id, comp.kind, comp.reverses_id),
        (b, TransactionType::Debit, Some(credit_leg.id))
    );
    assert_eq!(w.account(&a).map(|x| x.balance), Some(40));
    assert_eq!(w.account(&b).map(|x| x.balance), Some(0));
    assert_eq!(
        w.apply(&reverse(view.debit.id)),
        Err(LedgerError::AlreadyReversed)
    );
    assert_eq!(
        w.apply(&plain(Command::ReverseTransfer {
            transfer_id: view.transfer.id,
            reason: None
        })),
        Err(LedgerError::AlreadyReversed)
    );
}

#[test]
fn failed_atomic_batch_records_nothing() {
    let mut w = Working::new(now(), [], [], [], []);
    let a = open(&mut w, 1, usd());
    let b = open(&mut w, 2, usd());
    tx_of(w.apply(&credit(a, 100)));
    let before = w.clone().into_changes();
    let spec = |n| {
        BatchItem::Valid(TransferSpec {
            from_account_id: a,
            to_account_id: b,
            amount: amount_of(n),
            description: None,
            reference: None,
        })
    };
    let outcome = w.apply(&plain(Command::TransferBatch {
        items: vec![spec(60), spec(60), BatchItem::Invalid],
        atomic: true,
    }));
    assert_eq!(
        outcome,
        Ok(Effect::Batch(vec![
            ItemResult::Aborted,
            ItemResult::Failed(short(40, 60)),
            ItemResult::Invalid,
        ]))
    );
    assert_eq!(w.into_changes(), before);
}

#[test]
fn credit_past_the_largest_balance_overflows() {
    let id = Uuid::from_u128(7);
    let rich = Account {
        id,
        account_number: "0000000000000007".into(),
        owner_name: "rich".into(),
        currency: usd(),
        balance: i64::MAX - 5,
        held: 0,
        status: AccountStatus::Active,
        version: 9,
        seq: 9,
        metadata: Map::new(),
        created_at: now(),
        updated_at: now(),
    };
    let mut w = Working::new(now(), [rich], [], [], []);
    assert_eq!(w.apply(&credit(id, 10)), Err(LedgerError::BalanceOverflow));
    assert!(w.into_changes().is_empty());
}
