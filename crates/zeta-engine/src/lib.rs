//! The ledger engine: group commit.
//!
//! Money commands are queued to a small number of writer tasks. Each writer takes everything
//! queued so far (up to `max_batch`) and applies it in one database transaction: idempotency
//! keys looked up, referenced rows loaded, the touched accounts locked once in id order, the
//! commands applied in arrival order by [`zeta_ledger::Working`] (each succeeding or failing on
//! its own), all rows written with a handful of set-based statements, one COMMIT, then every
//! waiter answered. Serialization failures, deadlocks and lost connections re-run the whole batch
//! with capped, jittered exponential backoff; a batch that hits any other error is split and its
//! commands retried one by one, so one bad command cannot fail its neighbours.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rand::Rng;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;
use zeta_ledger::audit::{self, AuditDraft, AuditEvent, ChainHead};
use zeta_ledger::{Actor, Command, Envelope, Outcome, Working, now_micros};
use zeta_store::{IdempotencyRecord, KeyRefs, LedgerTx, Store, StoreError};

/// Engine limits; every one is explicit.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// Writer tasks; commands on the same account go to the same writer.
    pub writers: usize,
    /// Most commands applied in one database transaction.
    pub max_batch: usize,
    /// Most work (transfers, counting each item of a batch request) in one database transaction;
    /// a single command heavier than this still runs, alone.
    pub max_batch_weight: usize,
    /// Commands that may wait per writer before submitters wait for room.
    pub queue_capacity: usize,
    /// Transactions one writer may have in flight at once. A batch starts while earlier ones
    /// are still committing only when it touches none of their accounts (and refers to no
    /// transaction or transfer by id), so commands on one account still run in order and never
    /// conflict with each other.
    pub pipeline: usize,
    pub retry: RetryPolicy,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            writers: 1,
            max_batch: 512,
            max_batch_weight: 2048,
            queue_capacity: 8192,
            pipeline: 1,
            retry: RetryPolicy::default(),
        }
    }
}

/// Capped, jittered exponential backoff with a budget of attempts.
///
/// Conflicts (serialization failures, deadlocks) are cheap to retry and expected under
/// contention from other instances, so they get a larger budget than an unreachable database,
/// where every attempt may wait for a connection.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts of a batch that keeps hitting conflicts.
    pub max_attempts: u32,
    /// Attempts of a batch while the database is unreachable.
    pub max_unavailable_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 40,
            max_unavailable_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(100),
        }
    }
}

impl RetryPolicy {
    /// "Full jitter": a random delay up to `min(max, base * 2^attempt)`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1_u32 << attempt.min(16))
            .min(self.max_delay);
        let micros = u64::try_from(ceiling.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        Duration::from_micros(rand::rng().random_range(micros / 2..=micros))
    }
}

/// What the response to a stored idempotent request is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Renders an outcome into the response that is stored with the key (and sent).
pub type Renderer = Arc<dyn Fn(&Outcome) -> StoredResponse + Send + Sync>;

/// An idempotency key with the request it was first used for.
#[derive(Clone)]
pub struct IdempotencySpec {
    pub scope: Uuid,
    pub key: String,
    pub request_hash: Vec<u8>,
    pub render: Renderer,
    /// Held until the engine has answered the command, dropped it unrun, or the command was
    /// withdrawn: the caller's claim on the key, so that the key stays taken for as long as the
    /// command may still commit, even when the caller stopped waiting for it.
    pub claim: Option<Claim>,
}

/// Something a caller holds for as long as its command may still run (see
/// [`IdempotencySpec::claim`]); released by being dropped.
pub type Claim = Arc<dyn std::any::Any + Send + Sync>;

#[derive(Clone, Debug)]
pub enum Reply {
    /// The command ran; `stored` is the response stored with its idempotency key, if any.
    Applied {
        outcome: Outcome,
        stored: Option<StoredResponse>,
    },
    /// The key was already used for this same request: the stored response.
    Replay(IdempotencyRecord),
    /// The key was already used for another request.
    KeyReused,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The database stayed unreachable or contended through the retry budget, or the engine is
    /// shut down. Nothing was committed.
    #[error("the ledger is unavailable: {0}")]
    Unavailable(String),
    /// A bug: an unexpected database error on a single command. Nothing was committed.
    #[error("internal ledger error: {0}")]
    Internal(String),
}

struct Job {
    envelope: Envelope,
    idempotency: Option<IdempotencySpec>,
    reply: oneshot::Sender<Result<Reply, EngineError>>,
    shared: JobShare,
}

/// What a job and its caller share: where the job is, and the caller's claim.
struct JobShared {
    state: AtomicU8,
    claim: std::sync::Mutex<Option<Claim>>,
}

impl JobShared {
    fn release_claim(&self) {
        drop(self.claim.lock().unwrap_or_else(|e| e.into_inner()).take());
    }

    /// See [`Withdrawal::withdraw`].
    fn withdraw(&self) -> bool {
        let withdrawn = match self.state.compare_exchange(
            QUEUED,
            WITHDRAWN,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => true,
            Err(state) => state == WITHDRAWN,
        };
        if withdrawn {
            self.release_claim();
        }
        withdrawn
    }
}

/// The job's side of [`JobShared`]: the claim is released when the job is dropped (answered, or
/// dropped unrun).
struct JobShare(Arc<JobShared>);

impl Drop for JobShare {
    fn drop(&mut self) {
        self.0.release_claim();
    }
}

/// A job's [`JobShared::state`]: waiting in the queue, taken into a batch, or withdrawn before
/// that.
const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const WITHDRAWN: u8 = 2;

impl Job {
    /// Takes the job into a batch, unless it was withdrawn or nobody waits for its reply any
    /// more (the caller went away before it ran: it never runs).
    fn take(&self) -> bool {
        !self.reply.is_closed()
            && self
                .shared
                .0
                .state
                .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }
}

/// A queued command's answer to come.
///
/// Dropped before its reply (the caller went away), it withdraws the command if no batch has
/// taken it yet, releasing the caller's claim at once.
pub struct Queued {
    rx: oneshot::Receiver<Result<Reply, EngineError>>,
    on_drop: WithdrawOnDrop,
}

/// Withdraws its command when dropped (a no-op once a batch has taken it).
struct WithdrawOnDrop(Arc<JobShared>);

impl Drop for WithdrawOnDrop {
    fn drop(&mut self) {
        self.0.withdraw();
    }
}

impl Queued {
    /// Waits for the command's committed result.
    pub async fn reply(self) -> Result<Reply, EngineError> {
        let Queued { rx, on_drop } = self;
        let reply = rx.await;
        // Answered, so taken: this withdraws nothing. Had this future been dropped while
        // waiting, `on_drop` would have gone with it and withdrawn the command.
        drop(on_drop);
        reply.map_err(|_| EngineError::Internal("writer stopped before answering".into()))?
    }

    /// A handle that can withdraw the command while it waits in the queue.
    pub fn withdrawal(&self) -> Withdrawal {
        Withdrawal(self.on_drop.0.clone())
    }
}

/// Withdraws a queued command that no batch has taken yet.
#[derive(Clone)]
pub struct Withdrawal(Arc<JobShared>);

impl std::fmt::Debug for Withdrawal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Withdrawal")
            .field(&self.0.state.load(Ordering::Relaxed))
            .finish()
    }
}

impl Withdrawal {
    /// True when the command was still waiting: it will never run, and the caller's claim is
    /// released at once. False when a batch has taken it: it may commit, and its reply will
    /// come (within the batch's retry budget).
    pub fn withdraw(&self) -> bool {
        self.0.withdraw()
    }
}

/// Observes the engine (metrics live outside this crate).
pub trait EngineObserver: Send + Sync + 'static {
    fn batch_committed(&self, _size: usize) {}
    fn retried(&self, _error: &StoreError) {}
}

struct NoObserver;
impl EngineObserver for NoObserver {}

pub struct Engine {
    senders: RwLock<Vec<mpsc::Sender<Job>>>,
    writers: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Engine {
    pub fn start(store: Arc<dyn Store>, settings: EngineSettings) -> Self {
        Self::start_observed(store, settings, Arc::new(NoObserver))
    }

    pub fn start_observed(
        store: Arc<dyn Store>,
        settings: EngineSettings,
        observer: Arc<dyn EngineObserver>,
    ) -> Self {
        assert!(settings.writers >= 1 && settings.max_batch >= 1 && settings.queue_capacity >= 1);
        let mut senders = Vec::with_capacity(settings.writers);
        let mut writers = Vec::with_capacity(settings.writers);
        let chain = Arc::new(tokio::sync::Mutex::new(None));
        for _ in 0..settings.writers {
            let (tx, rx) = mpsc::channel(settings.queue_capacity);
            senders.push(tx);
            let writer = Writer {
                store: store.clone(),
                settings: settings.clone(),
                observer: observer.clone(),
                chain: chain.clone(),
            };
            writers.push(tokio::spawn(Arc::new(writer).run(rx)));
        }
        Self {
            senders: RwLock::new(senders),
            writers: std::sync::Mutex::new(writers),
        }
    }

    /// Queues a command and waits for its committed result.
    pub async fn submit(
        &self,
        envelope: Envelope,
        idempotency: Option<IdempotencySpec>,
    ) -> Result<Reply, EngineError> {
        self.enqueue(envelope, idempotency).await?.reply().await
    }

    /// Queues a command (waiting for room in the queue). Once this returns, the command will run
    /// whether or not anyone waits for its reply.
    pub async fn enqueue(
        &self,
        envelope: Envelope,
        idempotency: Option<IdempotencySpec>,
    ) -> Result<Queued, EngineError> {
        let mut idempotency = idempotency;
        let shared = Arc::new(JobShared {
            state: AtomicU8::new(QUEUED),
            claim: std::sync::Mutex::new(idempotency.as_mut().and_then(|spec| spec.claim.take())),
        });
        let sender = {
            let senders = self.senders.read().unwrap_or_else(|e| e.into_inner());
            if senders.is_empty() {
                return Err(EngineError::Unavailable("shutting down".into()));
            }
            let key = envelope.command.routing_key().as_u128();
            let index = ((key as u64) ^ ((key >> 64) as u64)) % senders.len() as u64;
            senders[usize::try_from(index).unwrap_or(0)].clone()
        };
        let (reply, rx) = oneshot::channel();
        sender
            .send(Job {
                envelope,
                idempotency,
                reply,
                shared: JobShare(shared.clone()),
            })
            .await
            .map_err(|_| EngineError::Unavailable("shutting down".into()))?;
        Ok(Queued {
            rx,
            on_drop: WithdrawOnDrop(shared),
        })
    }

    /// Stops accepting commands and waits until every queued command is committed and answered.
    pub async fn shutdown(&self) {
        self.senders
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let writers = std::mem::take(&mut *self.writers.lock().unwrap_or_else(|e| e.into_inner()));
        for writer in writers {
            let _ = writer.await;
        }
    }
}

struct Writer {
    store: Arc<dyn Store>,
    settings: EngineSettings,
    observer: Arc<dyn EngineObserver>,
    /// The audit chain's head as last committed by this process (`None`: read it from the
    /// database). Shared by the writers: a batch with audit events holds it from writing its
    /// events until its COMMIT is answered, so this process appends to the chain in order and
    /// never conflicts with itself; another instance's append shows up as a duplicate `seq`, a
    /// conflict that re-runs the batch with the head read afresh.
    chain: Arc<tokio::sync::Mutex<Option<ChainHead>>>,
}

impl Writer {
    async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<Job>) {
        let mut pending: VecDeque<Job> = VecDeque::new();
        let mut in_flight: InFlight = VecDeque::new();
        let depth = self.settings.pipeline.max(1);
        let mut last_size = 0;
        loop {
            if pending.is_empty() {
                match rx.recv().await {
                    Some(job) => pending.push_back(job),
                    // Closed and drained: wait for the running batches, then stop.
                    None => {
                        for (task, _) in in_flight {
                            let _ = task.await;
                        }
                        return;
                    }
                }
            }
            // Group commit: a batch takes everything queued by the time it can start, so first
            // wait for room in the pipeline.
            in_flight.retain(|(task, _)| !task.is_finished());
            while in_flight.len() >= depth {
                if let Some((task, _)) = in_flight.pop_front() {
                    let _ = task.await;
                }
            }
            let mut jobs = Vec::new();
            let mut weight = 0;
            self.fill(&mut rx, &mut pending, &mut jobs, &mut weight);
            // Account sets only matter when batches can overlap (pipeline > 1).
            let touched = |jobs: &[Job]| {
                if depth > 1 {
                    touched_accounts(jobs)
                } else {
                    None
                }
            };
            let mut accounts = touched(&jobs);
            // Overlapping a running batch pays only when this one is not much smaller than the
            // last: a batch of the first few arrivals would double the transactions. Until the
            // queue has grown to that or the running batch ends, keep gathering.
            if !in_flight.is_empty()
                && jobs.len() * 2 < last_size
                && !overlaps_running(&in_flight, &accounts)
            {
                self.gather(
                    &mut rx,
                    &mut pending,
                    &mut jobs,
                    &mut weight,
                    &mut in_flight,
                    last_size,
                )
                .await;
                in_flight.retain(|(task, _)| !task.is_finished());
                accounts = touched(&jobs);
            }
            if overlaps_running(&in_flight, &accounts) {
                // It must follow the running batches: wait for them, then take what queued
                // meanwhile too.
                for (task, _) in in_flight.drain(..) {
                    let _ = task.await;
                }
                self.fill(&mut rx, &mut pending, &mut jobs, &mut weight);
                accounts = touched(&jobs);
            }
            if jobs.is_empty() {
                // Every job taken up was withdrawn.
                continue;
            }
            last_size = jobs.len();
            let writer = self.clone();
            let task = tokio::spawn(async move { writer.run_batch(jobs).await });
            in_flight.push_back((task, accounts));
        }
    }

    /// Adds arriving jobs to `jobs` until it holds half of `last_size`, the oldest running
    /// batch ends, or the queue closes.
    async fn gather(
        &self,
        rx: &mut mpsc::Receiver<Job>,
        pending: &mut VecDeque<Job>,
        jobs: &mut Vec<Job>,
        weight: &mut usize,
        in_flight: &mut InFlight,
        last_size: usize,
    ) {
        let Some((oldest, _)) = in_flight.front_mut() else {
            return;
        };
        while jobs.len() * 2 < last_size && jobs.len() < self.settings.max_batch {
            tokio::select! {
                _ = &mut *oldest => break,
                job = rx.recv() => match job {
                    Some(job) => {
                        pending.push_back(job);
                        self.fill(rx, pending, jobs, weight);
                    }
                    None => break,
                },
            }
        }
    }

    /// Moves queued jobs into `jobs` up to the batch limits.
    fn fill(
        &self,
        rx: &mut mpsc::Receiver<Job>,
        pending: &mut VecDeque<Job>,
        jobs: &mut Vec<Job>,
        weight: &mut usize,
    ) {
        while pending.len() < self.settings.max_batch {
            match rx.try_recv() {
                Ok(job) => pending.push_back(job),
                Err(_) => break,
            }
        }
        while let Some(job) = pending.front() {
            let w = job.envelope.command.weight();
            if !jobs.is_empty()
                && (jobs.len() >= self.settings.max_batch
                    || *weight + w > self.settings.max_batch_weight)
            {
                break;
            }
            let Some(job) = pending.pop_front() else {
                break;
            };
            // A withdrawn job, or one nobody waits for, is dropped here unrun.
            if job.take() {
                *weight += w;
                jobs.push(job);
            }
        }
    }

    async fn run_batch(&self, mut jobs: Vec<Job>) {
        match self.execute(&jobs).await {
            Ok(replies) => answer(&mut jobs, replies),
            Err(EngineError::Internal(e)) if jobs.len() > 1 => {
                tracing::warn!(error = %e, size = jobs.len(), "batch failed; retrying its commands one by one");
                for job in jobs.drain(..) {
                    let result = self
                        .execute(std::slice::from_ref(&job))
                        .await
                        .map(|mut r| r.remove(0));
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Runs the jobs as one transaction, retrying transient failures within the budget.
    async fn execute(&self, jobs: &[Job]) -> Result<Vec<Reply>, EngineError> {
        let policy = &self.settings.retry;
        let (mut conflicts, mut outages) = (0, 0);
        loop {
            let error = match apply_batch(self.store.as_ref(), &self.chain, jobs).await {
                Ok(replies) => {
                    self.observer.batch_committed(jobs.len());
                    return Ok(replies);
                }
                Err(BatchFailure {
                    error,
                    in_doubt: Some((batch_id, replies)),
                }) => {
                    // The COMMIT's answer was lost: find out whether it happened.
                    tracing::warn!(error = %error, %batch_id, "commit outcome unknown; resolving");
                    match self.resolve(batch_id).await? {
                        true => {
                            self.observer.batch_committed(jobs.len());
                            return Ok(replies);
                        }
                        false => error,
                    }
                }
                Err(BatchFailure { error, .. }) => error,
            };
            if !error.is_retryable() {
                return Err(EngineError::Internal(error.to_string()));
            }
            self.observer.retried(&error);
            let (attempt, budget) = match error {
                StoreError::Conflict(_) => {
                    conflicts += 1;
                    (conflicts, policy.max_attempts)
                }
                _ => {
                    outages += 1;
                    (outages, policy.max_unavailable_attempts)
                }
            };
            if attempt >= budget {
                tracing::warn!(error = %error, attempts = attempt, "retry budget exhausted");
                return Err(EngineError::Unavailable(error.to_string()));
            }
            tracing::debug!(error = %error, attempt, "retrying batch");
            tokio::time::sleep(policy.delay(attempt)).await;
        }
    }

    /// Whether an in-doubt batch committed, asking the store within the retry budget.
    async fn resolve(&self, batch_id: Uuid) -> Result<bool, EngineError> {
        let policy = &self.settings.retry;
        for attempt in 0..policy.max_attempts {
            match self.store.resolve_batch(batch_id).await {
                Ok(Some(committed)) => return Ok(committed),
                Ok(None) => break,
                Err(e) if e.is_retryable() => tokio::time::sleep(policy.delay(attempt + 1)).await,
                Err(e) => return Err(EngineError::Internal(e.to_string())),
            }
        }
        Err(EngineError::Unavailable(format!(
            "the outcome of batch {batch_id} is unknown"
        )))
    }
}

/// A failed attempt. `in_doubt`: the COMMIT was sent but its answer lost — the batch id and the
/// replies that stand if it did commit.
struct BatchFailure {
    error: StoreError,
    in_doubt: Option<(Uuid, Vec<Reply>)>,
}

impl From<StoreError> for BatchFailure {
    fn from(error: StoreError) -> Self {
        Self {
            error,
            in_doubt: None,
        }
    }
}

/// Batches still running: their task and the accounts they touch (None: unknown).
type InFlight = VecDeque<(JoinHandle<()>, Option<HashSet<Uuid>>)>;

/// Whether a batch touching `accounts` may share an account with a running batch.
fn overlaps_running(in_flight: &InFlight, accounts: &Option<HashSet<Uuid>>) -> bool {
    in_flight
        .iter()
        .any(|(_, other)| !matches!((accounts, other), (Some(a), Some(b)) if a.is_disjoint(b)))
}

/// The accounts a batch names; `None` when it must not overlap anything: it refers to rows by
/// id (whose accounts are only known inside the transaction), inserts a unique value a client
/// chose (an account number, an API key's secret) that another batch may insert too, or changes
/// an API key (another batch may change the same one). Two overlapping batches must never wait
/// on each other in the database: the one holding the audit chain would wait there while the
/// other waits for the chain, a cycle the database cannot see (it ends only at the lock
/// timeout).
fn touched_accounts(jobs: &[Job]) -> Option<HashSet<Uuid>> {
    let mut ids = Vec::new();
    for job in jobs {
        let command = &job.envelope.command;
        if command.transaction_ref().is_some()
            || command.transfer_ref().is_some()
            || matches!(
                command,
                Command::CreateApiKey(_) | Command::RevokeApiKey { .. }
            )
            || matches!(command, Command::CreateAccount(new) if new.account_number.is_some())
        {
            return None;
        }
        if let Command::CreateAccount(new) = command {
            ids.push(new.id);
        }
        command.account_ids(&mut ids);
    }
    Some(ids.into_iter().collect())
}

/// Seals `drafts` onto the chain head (the cached one, else the database's), into `events`.
async fn seal(
    tx: &mut dyn LedgerTx,
    cached: &mut Option<ChainHead>,
    now: OffsetDateTime,
    drafts: Vec<(Option<&Actor>, Vec<AuditDraft>)>,
    events: &mut Vec<AuditEvent>,
) -> Result<ChainHead, StoreError> {
    let mut head = match cached.take() {
        Some(head) => head,
        None => tx.audit_head().await?.unwrap_or_else(ChainHead::genesis),
    };
    for (actor, drafts) in drafts {
        audit::seal(&mut head, now, actor, drafts, events);
    }
    Ok(head)
}

fn answer(jobs: &mut Vec<Job>, replies: Vec<Reply>) {
    debug_assert_eq!(jobs.len(), replies.len());
    for (job, reply) in jobs.drain(..).zip(replies) {
        let _ = job.reply.send(Ok(reply));
    }
}

/// One attempt at a batch: one database transaction.
async fn apply_batch(
    store: &dyn Store,
    chain: &tokio::sync::Mutex<Option<ChainHead>>,
    jobs: &[Job],
) -> Result<Vec<Reply>, BatchFailure> {
    let mut tx = store.begin().await?;
    let mut replies: Vec<Option<Reply>> = vec![None; jobs.len()];

    let keys: Vec<(Uuid, String)> = jobs
        .iter()
        .filter_map(|j| j.idempotency.as_ref().map(|i| (i.scope, i.key.clone())))
        .collect();
    if !keys.is_empty() {
        let found = tx.idempotency_lookup(&keys).await?;
        for (job, reply) in jobs.iter().zip(replies.iter_mut()) {
            let Some(spec) = &job.idempotency else {
                continue;
            };
            if let Some(record) = found
                .iter()
                .find(|r| r.scope == spec.scope && r.key == spec.key)
            {
                *reply = Some(if record.request_hash == spec.request_hash {
                    Reply::Replay(record.clone())
                } else {
                    Reply::KeyReused
                });
            }
        }
    }
    let pending = || {
        jobs.iter()
            .zip(replies.iter())
            .filter(|(_, r)| r.is_none())
            .map(|(j, _)| &j.envelope.command)
    };

    let transaction_ids: Vec<Uuid> = pending().filter_map(Command::transaction_ref).collect();
    let transfer_ids: Vec<Uuid> = pending().filter_map(Command::transfer_ref).collect();
    let (transactions, transfers) = if transaction_ids.is_empty() && transfer_ids.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        tx.load_refs(&transaction_ids, &transfer_ids).await?
    };

    let mut account_ids = Vec::new();
    for command in pending() {
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
        tx.lock_accounts(&account_ids).await?
    };

    let numbers: Vec<String> = pending()
        .filter_map(|c| match c {
            Command::CreateAccount(new) => new.account_number.clone(),
            _ => None,
        })
        .collect();
    let taken = if numbers.is_empty() {
        Vec::new()
    } else {
        tx.taken_account_numbers(&numbers).await?
    };

    let (mut key_ids, mut key_hashes) = (Vec::new(), Vec::new());
    for command in pending() {
        match command {
            Command::CreateApiKey(new) => key_hashes.push(new.secret_hash.clone()),
            Command::RevokeApiKey { key_id } => key_ids.push(*key_id),
            _ => {}
        }
    }
    let keys = if key_ids.is_empty() && key_hashes.is_empty() {
        KeyRefs::default()
    } else {
        tx.api_keys(&key_ids, &key_hashes).await?
    };

    let now = now_micros();
    let mut working = Working::new(now, accounts, transactions, transfers, taken)
        .with_api_keys(keys.keys, keys.any);
    let mut records: Vec<IdempotencyRecord> = Vec::new();
    // Where each key applied in this batch has its record: a key that comes again in the same
    // batch is answered as if it came after the first one committed (the caller's claim keeps
    // one instance from queueing a key twice; this keeps one batch from inserting it twice).
    let mut recorded: HashMap<(Uuid, &str), usize> = HashMap::new();
    let mut drafts: Vec<(Option<&Actor>, Vec<AuditDraft>)> = Vec::new();
    for (job, reply) in jobs.iter().zip(replies.iter_mut()) {
        if reply.is_some() {
            continue;
        }
        if let Some(spec) = &job.idempotency
            && let Some(&i) = recorded.get(&(spec.scope, spec.key.as_str()))
        {
            let first = &records[i];
            *reply = Some(if first.request_hash == spec.request_hash {
                Reply::Replay(first.clone())
            } else {
                Reply::KeyReused
            });
            continue;
        }
        let outcome = working.apply(&job.envelope);
        let events = audit::events_for(&job.envelope, &outcome);
        if !events.is_empty() {
            drafts.push((job.envelope.actor.as_ref(), events));
        }
        let stored = job.idempotency.as_ref().map(|spec| {
            let response = (spec.render)(&outcome);
            recorded.insert((spec.scope, spec.key.as_str()), records.len());
            records.push(IdempotencyRecord {
                scope: spec.scope,
                key: spec.key.clone(),
                request_hash: spec.request_hash.clone(),
                status: response.status,
                body: response.body.clone(),
                created_at: now,
            });
            response
        });
        *reply = Some(Reply::Applied { outcome, stored });
    }
    let changes = working.into_changes();
    let replies: Vec<Reply> = replies
        .into_iter()
        .map(|r| r.expect("every job has a reply"))
        .collect();
    if changes.is_empty() && records.is_empty() {
        // Nothing to write: whether the COMMIT lands changes nothing.
        let _ = tx.commit().await;
        return Ok(replies);
    }
    let batch_id = Uuid::now_v7();
    tx.mark_batch(batch_id).await?;
    // The audit events join the chain under the chain lock, held until the COMMIT is answered,
    // so the chain is appended in commit order. When no other batch holds it, the events are
    // sealed now and go with the rows in one statement; otherwise the rows are written first
    // and the events after the lock is free, so overlapping batches serialize only on that
    // insert and the COMMIT. The cached head is taken out: on any failure it stays empty and
    // the next batch reads it from the database.
    let mut sealed = None;
    let mut events = Vec::new();
    if !drafts.is_empty()
        && let Ok(mut cached) = chain.try_lock()
    {
        let head = seal(
            tx.as_mut(),
            &mut cached,
            now,
            std::mem::take(&mut drafts),
            &mut events,
        )
        .await?;
        sealed = Some((cached, head));
    }
    tx.write(&changes, &records, &events).await?;
    if !drafts.is_empty() {
        let mut cached = chain.lock().await;
        let head = seal(tx.as_mut(), &mut cached, now, drafts, &mut events).await?;
        tx.append_audit(&events).await?;
        sealed = Some((cached, head));
    }
    match tx.commit().await {
        Ok(()) => {
            if let Some((mut cached, head)) = sealed {
                *cached = Some(head);
            }
            Ok(replies)
        }
        Err(error @ StoreError::Unavailable(_)) => Err(BatchFailure {
            error,
            in_doubt: Some((batch_id, replies)),
        }),
        Err(error) => Err(error.into()),
    }
}
