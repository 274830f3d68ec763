//! The posting rules: a batch of commands applied, in arrival order, to the locked state they
//! touch. Each command succeeds or fails on its own; an atomic transfer batch is all or nothing.

use std::collections::{BTreeSet, HashMap, HashSet};

use time::OffsetDateTime;
use uuid::Uuid;

use crate::command::{
    AccountPatch, BatchItem, Command, Envelope, NewAccount, NewApiKey, Scope, TransferSpec,
};
use crate::error::LedgerError;
use crate::model::{
    Account, AccountStatus, ApiKey, FailureReason, Transaction, TransactionStatus, TransactionType,
    Transfer, TransferStatus, TransferView,
};
use crate::money::{Amount, Currency};

/// What a command produced.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    Account(Account),
    Transaction(Transaction),
    /// A transfer's leg was reversed, so the whole transfer was: `leg` is the compensation of
    /// the leg named (what the request answers), `reversal` the compensating transfer.
    LegReversal {
        leg: Transaction,
        reversal: Box<TransferView>,
    },
    Transfer(Box<TransferView>),
    Batch(Vec<ItemResult>),
    ApiKey(ApiKey),
}

pub type Outcome = Result<Effect, LedgerError>;

/// The result of one item of a transfer batch.
#[derive(Clone, Debug, PartialEq)]
pub enum ItemResult {
    Done(Box<TransferView>),
    Failed(LedgerError),
    /// The API refused the item before it reached the ledger.
    Invalid,
    /// Atomic batch: this item was fine but another failed, so nothing was recorded.
    Aborted,
}

/// Everything a batch wrote, ready to persist.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    pub new_accounts: Vec<Account>,
    pub updated_accounts: Vec<Account>,
    pub new_transactions: Vec<Transaction>,
    pub updated_transactions: Vec<Transaction>,
    pub new_transfers: Vec<Transfer>,
    pub updated_transfers: Vec<Transfer>,
    /// New API keys with their secret hashes.
    pub new_api_keys: Vec<(ApiKey, Vec<u8>)>,
    pub revoked_api_keys: Vec<ApiKey>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.new_accounts.is_empty()
            && self.updated_accounts.is_empty()
            && self.new_transactions.is_empty()
            && self.updated_transactions.is_empty()
            && self.new_transfers.is_empty()
            && self.updated_transfers.is_empty()
            && self.new_api_keys.is_empty()
            && self.revoked_api_keys.is_empty()
    }
}

/// The current UTC time at the microsecond precision that is stored and shown.
pub fn now_micros() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .unwrap_or(now)
}

/// The working set of one batch: the locked accounts, the transactions and transfers the batch
/// refers to, and everything the batch has created or changed so far.
#[derive(Clone, Debug)]
pub struct Working {
    now: OffsetDateTime,
    accounts: HashMap<Uuid, Account>,
    transactions: HashMap<Uuid, Transaction>,
    transfers: HashMap<Uuid, Transfer>,
    taken_numbers: HashSet<String>,
    new_accounts: Vec<Uuid>,
    new_transactions: Vec<Uuid>,
    new_transfers: Vec<Uuid>,
    dirty_accounts: BTreeSet<Uuid>,
    dirty_transactions: BTreeSet<Uuid>,
    dirty_transfers: BTreeSet<Uuid>,
    /// API keys the batch refers to (by id or secret hash), with their hashes.
    api_keys: HashMap<Uuid, (ApiKey, Vec<u8>)>,
    /// Whether any API key existed when the batch started.
    any_api_key: bool,
    new_api_keys: Vec<Uuid>,
    revoked_api_keys: Vec<Uuid>,
}

struct Leg<'a> {
    account_id: Uuid,
    kind: TransactionType,
    amount: i64,
    status: TransactionStatus,
    transfer_id: Option<Uuid>,
    reverses_id: Option<Uuid>,
    description: &'a Option<String>,
    reference: &'a Option<String>,
}

impl Working {
    /// `accounts` must be locked for the lifetime of the batch; `taken_numbers` are the account
    /// numbers among those the batch wants that already exist.
    pub fn new(
        now: OffsetDateTime,
        accounts: impl IntoIterator<Item = Account>,
        transactions: impl IntoIterator<Item = Transaction>,
        transfers: impl IntoIterator<Item = Transfer>,
        taken_numbers: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            now,
            accounts: accounts.into_iter().map(|a| (a.id, a)).collect(),
            transactions: transactions.into_iter().map(|t| (t.id, t)).collect(),
            transfers: transfers.into_iter().map(|t| (t.id, t)).collect(),
            taken_numbers: taken_numbers.into_iter().collect(),
            new_accounts: Vec::new(),
            new_transactions: Vec::new(),
            new_transfers: Vec::new(),
            dirty_accounts: BTreeSet::new(),
            dirty_transactions: BTreeSet::new(),
            dirty_transfers: BTreeSet::new(),
            api_keys: HashMap::new(),
            any_api_key: false,
            new_api_keys: Vec::new(),
            revoked_api_keys: Vec::new(),
        }
    }

    /// Adds the API keys the batch refers to (by id or by secret hash, with their hashes), and
    /// whether any key exists at all.
    pub fn with_api_keys(
        mut self,
        keys: impl IntoIterator<Item = (ApiKey, Vec<u8>)>,
        any_api_key: bool,
    ) -> Self {
        self.api_keys = keys.into_iter().map(|k| (k.0.id, k)).collect();
        self.any_api_key = any_api_key;
        self
    }

    pub fn account(&self, id: &Uuid) -> Option<&Account> {
        self.accounts.get(id)
    }

    pub fn transaction(&self, id: &Uuid) -> Option<&Transaction> {
        self.transactions.get(id)
    }

    /// Applies one command. On error nothing of it remains, except a recorded decline.
    pub fn apply(&mut self, envelope: &Envelope) -> Outcome {
        let scope = &envelope.scope;
        match &envelope.command {
            Command::CreateAccount(new) => self.create_account(new).map(Effect::Account),
            Command::UpdateAccount {
                account_id,
                if_match,
                patch,
            } => self
                .update_account(scope, *account_id, *if_match, patch)
                .map(Effect::Account),
            Command::Credit {
                account_id,
                amount,
                description,
                reference,
            } => self
                .credit(scope, *account_id, *amount, description, reference)
                .map(Effect::Transaction),
            Command::Debit {
                account_id,
                amount,
                description,
                reference,
                hold,
            } => self
                .debit(scope, *account_id, *amount, description, reference, *hold)
                .map(Effect::Transaction),
            Command::Capture { transaction_id } => self
                .settle_hold(scope, *transaction_id, true)
                .map(Effect::Transaction),
            Command::Void { transaction_id } => self
                .settle_hold(scope, *transaction_id, false)
                .map(Effect::Transaction),
            Command::ReverseTransaction {
                transaction_id,
                reason,
            } => self.reverse_transaction(scope, *transaction_id, reason),
            Command::ReverseTransfer {
                transfer_id,
                reason,
            } => self
                .reverse_transfer(scope, *transfer_id, reason)
                .map(|v| Effect::Transfer(Box::new(v))),
            Command::Transfer(spec) => self
                .transfer(scope, spec)
                .map(|v| Effect::Transfer(Box::new(v))),
            Command::TransferBatch { items, atomic } => {
                Ok(Effect::Batch(self.transfer_batch(scope, items, *atomic)))
            }
            Command::CreateApiKey(new) => self.create_api_key(scope, new).map(Effect::ApiKey),
            Command::RevokeApiKey { key_id } => self.revoke_api_key(*key_id).map(Effect::ApiKey),
        }
    }

    /// Everything to persist, in a stable order.
    pub fn into_changes(mut self) -> Changes {
        let mut take_accounts = |ids: &mut dyn Iterator<Item = Uuid>| -> Vec<Account> {
            ids.filter_map(|id| self.accounts.remove(&id)).collect()
        };
        let new_set: HashSet<Uuid> = self.new_accounts.iter().copied().collect();
        let new_accounts = take_accounts(&mut self.new_accounts.iter().copied());
        let updated_accounts = take_accounts(
            &mut self
                .dirty_accounts
                .iter()
                .copied()
                .filter(|id| !new_set.contains(id)),
        );
        let new_tx: HashSet<Uuid> = self.new_transactions.iter().copied().collect();
        let new_transactions = self
            .new_transactions
            .iter()
            .filter_map(|id| self.transactions.get(id).cloned())
            .collect();
        let updated_transactions = self
            .dirty_transactions
            .iter()
            .filter(|id| !new_tx.contains(id))
            .filter_map(|id| self.transactions.get(id).cloned())
            .collect();
        let new_tr: HashSet<Uuid> = self.new_transfers.iter().copied().collect();
        let new_transfers = self
            .new_transfers
            .iter()
            .filter_map(|id| self.transfers.get(id).cloned())
            .collect();
        let updated_transfers = self
            .dirty_transfers
            .iter()
            .filter(|id| !new_tr.contains(id))
            .filter_map(|id| self.transfers.get(id).cloned())
            .collect();
        let new_api_keys = self
            .new_api_keys
            .iter()
            .filter_map(|id| self.api_keys.get(id).cloned())
            .collect();
        let revoked_api_keys = self
            .revoked_api_keys
            .iter()
            .filter_map(|id| self.api_keys.get(id).map(|k| k.0.clone()))
            .collect();
        Changes {
            new_accounts,
            updated_accounts,
            new_transactions,
            updated_transactions,
            new_transfers,
            updated_transfers,
            new_api_keys,
            revoked_api_keys,
        }
    }

    // ----- lookups -------------------------------------------------------------------------

    fn visible(scope: &Scope, account_id: Uuid) -> bool {
        scope.as_ref().is_none_or(|ids| ids.contains(&account_id))
    }

    fn find_account(&self, scope: &Scope, id: Uuid) -> Result<&Account, LedgerError> {
        self.accounts
            .get(&id)
            .filter(|a| Self::visible(scope, a.id))
            .ok_or(LedgerError::NotFound("account"))
    }

    fn active(account: &Account) -> Result<(), LedgerError> {
        if account.status == AccountStatus::Active {
            Ok(())
        } else {
            Err(LedgerError::AccountNotActive {
                account_id: account.id,
                status: account.status.as_str(),
            })
        }
    }

    fn acc_mut(&mut self, id: Uuid) -> &mut Account {
        self.dirty_accounts.insert(id);
        // Callers look the account up (find_account) before changing it.
        self.accounts
            .get_mut(&id)
            .expect("account looked up before it is changed")
    }

    fn tx_mut(&mut self, id: Uuid) -> &mut Transaction {
        self.dirty_transactions.insert(id);
        self.transactions
            .get_mut(&id)
            .expect("transaction looked up before it is changed")
    }

    /// A timestamp for a change to `account`, never earlier than its last change, so that an
    /// account's history is ordered in time even when clocks of several instances disagree.
    fn stamp(&self, account_id: Uuid) -> OffsetDateTime {
        self.accounts
            .get(&account_id)
            .map_or(self.now, |a| a.updated_at.max(self.now))
    }

    // ----- primitive moves -----------------------------------------------------------------

    /// Records a transaction on an account; a completed one is posted to the balance (the caller
    /// has checked funds and overflow). Returns its id.
    fn record(&mut self, leg: Leg<'_>) -> Uuid {
        let ts = self.stamp(leg.account_id);
        let id = Uuid::now_v7();
        let account = self.acc_mut(leg.account_id);
        account.seq += 1;
        let seq = account.seq;
        let currency = account.currency;
        let (balance_after, posted_seq, posted_at) = match leg.status {
            TransactionStatus::Completed => {
                account.balance = match leg.kind {
                    TransactionType::Credit => account.balance.checked_add(leg.amount),
                    TransactionType::Debit => account.balance.checked_sub(leg.amount),
                }
                .expect("funds and overflow are checked before posting");
                assert!(
                    account.balance >= account.held,
                    "posting broke held <= balance"
                );
                account.seq += 1;
                account.version += 1;
                account.updated_at = ts;
                (Some(account.balance), Some(account.seq), Some(ts))
            }
            TransactionStatus::Pending => {
                account.held = account
                    .held
                    .checked_add(leg.amount)
                    .expect("a hold is at most the available balance");
                assert!(account.held <= account.balance, "hold over the balance");
                account.version += 1;
                account.updated_at = ts;
                (None, None, None)
            }
            TransactionStatus::Failed | TransactionStatus::Reversed => (None, None, None),
        };
        let failure_reason =
            (leg.status == TransactionStatus::Failed).then_some(FailureReason::InsufficientFunds);
        self.transactions.insert(
            id,
            Transaction {
                id,
                account_id: leg.account_id,
                seq,
                posted_seq,
                kind: leg.kind,
                amount: leg.amount,
                currency,
                status: leg.status,
                balance_after,
                transfer_id: leg.transfer_id,
                reverses_id: leg.reverses_id,
                reversed_by_id: None,
                failure_reason,
                description: leg.description.clone(),
                reference: leg.reference.clone(),
                created_at: ts,
                posted_at,
                updated_at: ts,
            },
        );
        self.new_transactions.push(id);
        id
    }

    fn can_credit(account: &Account, amount: i64) -> Result<(), LedgerError> {
        account
            .balance
            .checked_add(amount)
            .map(|_| ())
            .ok_or(LedgerError::BalanceOverflow)
    }

    // ----- accounts ------------------------------------------------------------------------

    fn create_account(&mut self, new: &NewAccount) -> Result<Account, LedgerError> {
        let number = match &new.account_number {
            Some(number) if self.taken_numbers.contains(number) => {
                return Err(LedgerError::AccountNumberTaken);
            }
            Some(number) => number.clone(),
            None => loop {
                let candidate = generate_account_number();
                if !self.taken_numbers.contains(&candidate) {
                    break candidate;
                }
            },
        };
        self.taken_numbers.insert(number.clone());
        let account = Account {
            id: new.id,
            account_number: number,
            owner_name: new.owner_name.clone(),
            currency: new.currency,
            balance: 0,
            held: 0,
            status: AccountStatus::Active,
            version: 1,
            seq: 0,
            metadata: new.metadata.clone(),
            created_at: self.now,
            updated_at: self.now,
        };
        self.accounts.insert(account.id, account.clone());
        self.new_accounts.push(account.id);
        Ok(account)
    }

    fn update_account(
        &mut self,
        scope: &Scope,
        id: Uuid,
        if_match: i64,
        patch: &AccountPatch,
    ) -> Result<Account, LedgerError> {
        let account = self.find_account(scope, id)?;
        if account.version != if_match {
            return Err(LedgerError::VersionMismatch {
                current: account.version,
                expected: if_match,
            });
        }
        if account.status == AccountStatus::Closed {
            return Err(LedgerError::InvalidState("the account is closed"));
        }
        if patch.status == Some(AccountStatus::Closed) && account.balance != 0 {
            return Err(LedgerError::AccountNotEmpty {
                balance: account.balance,
            });
        }
        let changed = patch
            .owner_name
            .as_ref()
            .is_some_and(|n| *n != account.owner_name)
            || patch.status.is_some_and(|s| s != account.status)
            || patch
                .metadata
                .as_ref()
                .is_some_and(|m| *m != account.metadata);
        if !changed {
            return Ok(account.clone());
        }
        let ts = self.stamp(id);
        let account = self.acc_mut(id);
        if let Some(name) = &patch.owner_name {
            account.owner_name.clone_from(name);
        }
        if let Some(status) = patch.status {
            account.status = status;
        }
        if let Some(metadata) = &patch.metadata {
            account.metadata.clone_from(metadata);
        }
        account.version += 1;
        account.updated_at = ts;
        Ok(account.clone())
    }

    // ----- single-account money ------------------------------------------------------------

    fn credit(
        &mut self,
        scope: &Scope,
        account_id: Uuid,
        amount: Amount,
        description: &Option<String>,
        reference: &Option<String>,
    ) -> Result<Transaction, LedgerError> {
        let account = self.find_account(scope, account_id)?;
        Self::active(account)?;
        Self::can_credit(account, amount.get())?;
        let id = self.record(Leg {
            account_id,
            kind: TransactionType::Credit,
            amount: amount.get(),
            status: TransactionStatus::Completed,
            transfer_id: None,
            reverses_id: None,
            description,
            reference,
        });
        Ok(self.transactions[&id].clone())
    }

    fn debit(
        &mut self,
        scope: &Scope,
        account_id: Uuid,
        amount: Amount,
        description: &Option<String>,
        reference: &Option<String>,
        hold: bool,
    ) -> Result<Transaction, LedgerError> {
        let account = self.find_account(scope, account_id)?;
        Self::active(account)?;
        let available = account.available();
        let short = available < amount.get();
        let status = match (short, hold) {
            (true, _) => TransactionStatus::Failed,
            (false, true) => TransactionStatus::Pending,
            (false, false) => TransactionStatus::Completed,
        };
        let id = self.record(Leg {
            account_id,
            kind: TransactionType::Debit,
            amount: amount.get(),
            status,
            transfer_id: None,
            reverses_id: None,
            description,
            reference,
        });
        if short {
            return Err(LedgerError::InsufficientFunds {
                available,
                amount: amount.get(),
                transaction_id: Some(id),
                transfer_id: None,
            });
        }
        Ok(self.transactions[&id].clone())
    }

    /// Capture (`capture = true`) or void a hold.
    fn settle_hold(
        &mut self,
        scope: &Scope,
        transaction_id: Uuid,
        capture: bool,
    ) -> Result<Transaction, LedgerError> {
        let tx = self
            .transactions
            .get(&transaction_id)
            .filter(|t| Self::visible(scope, t.account_id))
            .ok_or(LedgerError::NotFound("transaction"))?;
        if tx.kind != TransactionType::Debit || tx.status != TransactionStatus::Pending {
            return Err(LedgerError::InvalidState(
                "only a pending debit (a hold) can be captured or voided",
            ));
        }
        let (account_id, amount) = (tx.account_id, tx.amount);
        let account = self.find_account(&None, account_id)?;
        if capture {
            Self::active(account)?;
        }
        let ts = self.stamp(account_id);
        let account = self.acc_mut(account_id);
        account.held = account
            .held
            .checked_sub(amount)
            .filter(|h| *h >= 0)
            .expect("a pending hold is counted in held");
        let mut posted = None;
        if capture {
            account.balance = account
                .balance
                .checked_sub(amount)
                .expect("held <= balance");
            account.seq += 1;
            posted = Some((account.balance, account.seq));
        }
        account.version += 1;
        account.updated_at = ts;
        let tx = self.tx_mut(transaction_id);
        match posted {
            Some((balance_after, posted_seq)) => {
                tx.status = TransactionStatus::Completed;
                tx.balance_after = Some(balance_after);
                tx.posted_seq = Some(posted_seq);
                tx.posted_at = Some(ts);
            }
            None => {
                tx.status = TransactionStatus::Failed;
                tx.failure_reason = Some(FailureReason::Voided);
            }
        }
        tx.updated_at = ts;
        Ok(tx.clone())
    }

    // ----- reversals -----------------------------------------------------------------------

    fn reversible(
        status: TransactionStatus,
        compensating: bool,
        what: &'static str,
    ) -> Result<(), LedgerError> {
        if compensating {
            return Err(LedgerError::InvalidState(what));
        }
        match status {
            TransactionStatus::Completed => Ok(()),
            TransactionStatus::Reversed => Err(LedgerError::AlreadyReversed),
            TransactionStatus::Pending | TransactionStatus::Failed => Err(
                LedgerError::InvalidState("only a completed movement can be reversed"),
            ),
        }
    }

    fn reverse_transaction(
        &mut self,
        scope: &Scope,
        transaction_id: Uuid,
        reason: &Option<String>,
    ) -> Result<Effect, LedgerError> {
        let tx = self
            .transactions
            .get(&transaction_id)
            .filter(|t| Self::visible(scope, t.account_id))
            .ok_or(LedgerError::NotFound("transaction"))?
            .clone();
        if let Some(transfer_id) = tx.transfer_id {
            let view = self.reverse_transfer(scope, transfer_id, reason)?;
            // The compensation of the leg named: the debit leg is compensated by a credit.
            let leg = match tx.kind {
                TransactionType::Debit => view
                    .credit
                    .clone()
                    .expect("a compensating transfer has a credit"),
                TransactionType::Credit => view.debit.clone(),
            };
            return Ok(Effect::LegReversal {
                leg,
                reversal: Box::new(view),
            });
        }
        Self::reversible(
            tx.status,
            tx.reverses_id.is_some(),
            "a compensating transaction cannot be reversed",
        )?;
        let account = self.find_account(scope, tx.account_id)?;
        Self::active(account)?;
        let kind = match tx.kind {
            TransactionType::Credit => {
                if account.available() < tx.amount {
                    return Err(LedgerError::InsufficientFunds {
                        available: account.available(),
                        amount: tx.amount,
                        transaction_id: None,
                        transfer_id: None,
                    });
                }
                TransactionType::Debit
            }
            TransactionType::Debit => {
                Self::can_credit(account, tx.amount)?;
                TransactionType::Credit
            }
        };
        let id = self.record(Leg {
            account_id: tx.account_id,
            kind,
            amount: tx.amount,
            status: TransactionStatus::Completed,
            transfer_id: None,
            reverses_id: Some(tx.id),
            description: reason,
            reference: &None,
        });
        let ts = self.stamp(tx.account_id);
        let original = self.tx_mut(tx.id);
        original.status = TransactionStatus::Reversed;
        original.reversed_by_id = Some(id);
        original.updated_at = ts;
        Ok(Effect::Transaction(self.transactions[&id].clone()))
    }

    fn reverse_transfer(
        &mut self,
        scope: &Scope,
        transfer_id: Uuid,
        reason: &Option<String>,
    ) -> Result<TransferView, LedgerError> {
        let original = self
            .transfers
            .get(&transfer_id)
            .filter(|t| {
                Self::visible(scope, t.from_account_id) && Self::visible(scope, t.to_account_id)
            })
            .ok_or(LedgerError::NotFound("transfer"))?
            .clone();
        if original.status == TransferStatus::Failed {
            return Err(LedgerError::InvalidState(
                "a failed transfer cannot be reversed",
            ));
        }
        let legs = (
            self.transactions.get(&original.debit_id),
            original.credit_id.and_then(|id| self.transactions.get(&id)),
        );
        let (Some(debit_leg), Some(credit_leg)) = legs else {
            return Err(LedgerError::NotFound("transfer"));
        };
        let (debit_leg, credit_leg) = (debit_leg.id, credit_leg.id);
        if original.status == TransferStatus::Reversed {
            return Err(LedgerError::AlreadyReversed);
        }
        Self::reversible(
            TransactionStatus::Completed,
            original.reverses_id.is_some(),
            "a compensating transfer cannot be reversed",
        )?;
        // The compensation moves the money from the original destination back to the source.
        let spec_from = self.find_account(scope, original.to_account_id)?;
        let spec_to = self.find_account(scope, original.from_account_id)?;
        Self::active(spec_from)?;
        Self::active(spec_to)?;
        Self::can_credit(spec_to, original.amount)?;
        if spec_from.available() < original.amount {
            return Err(LedgerError::InsufficientFunds {
                available: spec_from.available(),
                amount: original.amount,
                transaction_id: None,
                transfer_id: None,
            });
        }
        let view = self.post_transfer(
            original.to_account_id,
            original.from_account_id,
            original.amount,
            reason,
            &None,
            Some((original.id, credit_leg, debit_leg)),
        );
        let ts = self.stamp(original.from_account_id);
        for (leg, by) in [
            (debit_leg, view.credit.as_ref().map(|c| c.id)),
            (credit_leg, Some(view.debit.id)),
        ] {
            let tx = self.tx_mut(leg);
            tx.status = TransactionStatus::Reversed;
            tx.reversed_by_id = by;
            tx.updated_at = ts;
        }
        self.dirty_transfers.insert(original.id);
        if let Some(t) = self.transfers.get_mut(&original.id) {
            t.status = TransferStatus::Reversed;
            t.reversed_by_id = Some(view.transfer.id);
            t.updated_at = ts;
        }
        Ok(view)
    }

    // ----- transfers -----------------------------------------------------------------------

    /// Posts a transfer whose checks have passed. `reverses`: (original transfer, leg that the
    /// new debit compensates, leg that the new credit compensates).
    fn post_transfer(
        &mut self,
        from: Uuid,
        to: Uuid,
        amount: i64,
        description: &Option<String>,
        reference: &Option<String>,
        reverses: Option<(Uuid, Uuid, Uuid)>,
    ) -> TransferView {
        let transfer_id = Uuid::now_v7();
        let debit_id = self.record(Leg {
            account_id: from,
            kind: TransactionType::Debit,
            amount,
            status: TransactionStatus::Completed,
            transfer_id: Some(transfer_id),
            reverses_id: reverses.map(|r| r.1),
            description,
            reference,
        });
        let credit_id = self.record(Leg {
            account_id: to,
            kind: TransactionType::Credit,
            amount,
            status: TransactionStatus::Completed,
            transfer_id: Some(transfer_id),
            reverses_id: reverses.map(|r| r.2),
            description,
            reference,
        });
        self.insert_transfer(Transfer {
            id: transfer_id,
            from_account_id: from,
            to_account_id: to,
            amount,
            currency: self.accounts[&from].currency,
            status: TransferStatus::Completed,
            debit_id,
            credit_id: Some(credit_id),
            reverses_id: reverses.map(|r| r.0),
            reversed_by_id: None,
            description: description.clone(),
            reference: reference.clone(),
            created_at: self.transactions[&debit_id].created_at,
            updated_at: self.transactions[&debit_id].created_at,
        })
    }

    fn insert_transfer(&mut self, transfer: Transfer) -> TransferView {
        let view = TransferView {
            debit: self.transactions[&transfer.debit_id].clone(),
            credit: transfer.credit_id.map(|id| self.transactions[&id].clone()),
            transfer,
        };
        self.new_transfers.push(view.transfer.id);
        self.transfers
            .insert(view.transfer.id, view.transfer.clone());
        view
    }

    fn transfer(
        &mut self,
        scope: &Scope,
        spec: &TransferSpec,
    ) -> Result<TransferView, LedgerError> {
        let from = self.find_account(scope, spec.from_account_id)?;
        let to = self.find_account(scope, spec.to_account_id)?;
        if from.id == to.id {
            return Err(LedgerError::SameAccount);
        }
        if from.currency != to.currency {
            return Err(mismatch(from.currency, to.currency));
        }
        Self::active(from)?;
        Self::active(to)?;
        let amount = spec.amount.get();
        Self::can_credit(to, amount)?;
        let available = from.available();
        if available < amount {
            let transfer_id = Uuid::now_v7();
            let debit_id = self.record(Leg {
                account_id: spec.from_account_id,
                kind: TransactionType::Debit,
                amount,
                status: TransactionStatus::Failed,
                transfer_id: Some(transfer_id),
                reverses_id: None,
                description: &spec.description,
                reference: &spec.reference,
            });
            let created_at = self.transactions[&debit_id].created_at;
            let currency = self.accounts[&spec.from_account_id].currency;
            self.insert_transfer(Transfer {
                id: transfer_id,
                from_account_id: spec.from_account_id,
                to_account_id: spec.to_account_id,
                amount,
                currency,
                status: TransferStatus::Failed,
                debit_id,
                credit_id: None,
                reverses_id: None,
                reversed_by_id: None,
                description: spec.description.clone(),
                reference: spec.reference.clone(),
                created_at,
                updated_at: created_at,
            });
            return Err(LedgerError::InsufficientFunds {
                available,
                amount,
                transaction_id: Some(debit_id),
                transfer_id: Some(transfer_id),
            });
        }
        Ok(self.post_transfer(
            spec.from_account_id,
            spec.to_account_id,
            amount,
            &spec.description,
            &spec.reference,
            None,
        ))
    }

    // ----- API keys -----------------------------------------------------------------------

    fn create_api_key(&mut self, scope: &Scope, new: &NewApiKey) -> Result<ApiKey, LedgerError> {
        if let Some((existing, _)) = self
            .api_keys
            .values()
            .find(|(_, hash)| *hash == new.secret_hash)
        {
            // Revocation is final: a revoked secret never works again.
            return match existing.revoked_at {
                None => Ok(existing.clone()),
                Some(_) => Err(LedgerError::InvalidState(
                    "the API key with this secret was revoked",
                )),
            };
        }
        if new.only_if_none && (self.any_api_key || !self.new_api_keys.is_empty()) {
            return Err(LedgerError::InvalidState("an API key already exists"));
        }
        for id in new.account_ids.iter().flatten() {
            self.find_account(scope, *id)?;
        }
        let key = ApiKey {
            id: new.id,
            name: new.name.clone(),
            role: new.role.clone(),
            account_ids: new.account_ids.clone(),
            created_at: self.now,
            revoked_at: None,
        };
        self.api_keys
            .insert(key.id, (key.clone(), new.secret_hash.clone()));
        self.new_api_keys.push(key.id);
        Ok(key)
    }

    fn revoke_api_key(&mut self, key_id: Uuid) -> Result<ApiKey, LedgerError> {
        let Some((key, _)) = self
            .api_keys
            .get_mut(&key_id)
            .filter(|(k, _)| k.revoked_at.is_none())
        else {
            return Err(LedgerError::NotFound("api key"));
        };
        key.revoked_at = Some(self.now);
        let key = key.clone();
        if !self.new_api_keys.contains(&key_id) {
            self.revoked_api_keys.push(key_id);
        }
        Ok(key)
    }

    fn transfer_batch(
        &mut self,
        scope: &Scope,
        items: &[BatchItem],
        atomic: bool,
    ) -> Vec<ItemResult> {
        let before = atomic.then(|| self.clone());
        let mut failed = false;
        let mut results: Vec<ItemResult> = items
            .iter()
            .map(|item| match item {
                BatchItem::Invalid => {
                    failed = true;
                    ItemResult::Invalid
                }
                BatchItem::Valid(spec) => match self.transfer(scope, spec) {
                    Ok(view) => ItemResult::Done(Box::new(view)),
                    Err(e) => {
                        failed = true;
                        ItemResult::Failed(e)
                    }
                },
            })
            .collect();
        if let (Some(before), true) = (before, failed) {
            *self = before;
            for result in &mut results {
                *result = match std::mem::replace(result, ItemResult::Aborted) {
                    ItemResult::Done(_) | ItemResult::Aborted => ItemResult::Aborted,
                    ItemResult::Invalid => ItemResult::Invalid,
                    // Nothing was recorded, so the decline names no transfer.
                    ItemResult::Failed(LedgerError::InsufficientFunds {
                        available,
                        amount,
                        ..
                    }) => ItemResult::Failed(LedgerError::InsufficientFunds {
                        available,
                        amount,
                        transaction_id: None,
                        transfer_id: None,
                    }),
                    ItemResult::Failed(e) => ItemResult::Failed(e),
                };
            }
        }
        results
    }
}

fn mismatch(from: Currency, to: Currency) -> LedgerError {
    LedgerError::CurrencyMismatch {
        from: from.to_string(),
        to: to.to_string(),
    }
}

/// A random 16-digit account number.
fn generate_account_number() -> String {
    let random = Uuid::new_v4().as_u128() % 10_u128.pow(16);
    format!("{random:016}")
}
