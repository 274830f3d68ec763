//! WAL checkpoints beside the writer, not in its COMMIT.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT that took the WAL over its threshold: the
//! one writer copied WAL pages into the database file and synced it while every queued command
//! waited (19 % of the server's samples in the uniform benchmark). Here every connection has
//! `wal_autocheckpoint=0`, and a task with a connection of its own runs a `PASSIVE` checkpoint
//! after commits, on the other core; it blocks neither the writer nor the readers. Passes start
//! at least [`PASS_INTERVAL`] apart, so that small, frequent commits (one hot account: 400 a
//! second) do not each pay for two `fsync`s of their own.
//!
//! The WAL starts over from its beginning only when a write transaction begins while every frame
//! in it has been copied. So once a pass has seen `SqliteSettings::wal_restart_frames` frames,
//! [`Checkpointer::before_write`] asks for a pass at once and waits (at most [`RESTART_WAIT`])
//! for the one that follows the last commit. A pass that cannot copy everything (a reader still
//! on an older snapshot) only postpones the restart to a later transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection as _, Row as _};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use zeta_store::StoreResult;

use crate::classify;

/// The default of `SqliteSettings::wal_restart_frames`: about 16 MB of WAL with 4 KiB pages.
pub(crate) const RESTART_FRAMES: i64 = 4096;
/// Passes start at least this far apart, unless a write transaction waits for one.
pub(crate) const PASS_INTERVAL: Duration = Duration::from_millis(10);
/// The longest a write transaction waits for the pass that lets it restart the WAL.
pub(crate) const RESTART_WAIT: Duration = Duration::from_millis(250);

/// What one pass saw: the commits before it and the WAL's frames.
#[derive(Clone, Copy, Debug, Default)]
struct Pass {
    after_commits: u64,
    frames: i64,
}

#[derive(Debug)]
pub(crate) struct Checkpointer {
    commits: Arc<AtomicU64>,
    wake: mpsc::Sender<()>,
    urgent: Arc<Notify>,
    passes: watch::Receiver<Pass>,
    restart_frames: i64,
    /// Ends the task (which closes its connection).
    stop: Arc<Notify>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Checkpointer {
    /// Connects the checkpointing connection and starts its task, which ends (closing the
    /// connection) at [`Checkpointer::close`] or when the checkpointer is dropped.
    pub(crate) async fn start(
        options: &SqliteConnectOptions,
        restart_frames: i64,
    ) -> StoreResult<Self> {
        let mut conn = SqliteConnection::connect_with(options)
            .await
            .map_err(classify)?;
        let commits = Arc::new(AtomicU64::new(0));
        let (wake, mut woken) = mpsc::channel::<()>(1);
        let (publish, passes) = watch::channel(Pass::default());
        let urgent = Arc::new(Notify::new());
        let seen = Arc::clone(&commits);
        let hurry = Arc::clone(&urgent);
        let stop = Arc::new(Notify::new());
        let stopped = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut last = Instant::now();
            loop {
                tokio::select! {
                    woke = woken.recv() => if woke.is_none() { break },
                    () = stopped.notified() => break,
                }
                tokio::select! {
                    () = tokio::time::sleep_until(last + PASS_INTERVAL) => {}
                    () = hurry.notified() => {}
                }
                last = Instant::now();
                let after_commits = seen.load(Ordering::Acquire);
                match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .fetch_one(&mut conn)
                    .await
                {
                    Ok(row) => {
                        // (busy, frames in the WAL, frames copied)
                        publish.send_replace(Pass {
                            after_commits,
                            frames: row.get(1),
                        });
                    }
                    Err(e) => {
                        // Nothing known about the WAL: no write transaction waits for a pass.
                        tracing::warn!(error = %e, "WAL checkpoint failed");
                        publish.send_replace(Pass {
                            after_commits,
                            frames: 0,
                        });
                    }
                }
            }
            let _ = conn.close().await;
        });
        Ok(Self {
            commits,
            wake,
            urgent,
            passes,
            restart_frames,
            stop,
            task: std::sync::Mutex::new(Some(task)),
        })
    }

    /// Ends the task and waits until its connection is closed.
    pub(crate) async fn close(&self) {
        self.stop.notify_one();
        let task = self.task.lock().map(|mut t| t.take()).unwrap_or(None);
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// After a COMMIT: checkpoint what it wrote (with whatever else commits before the pass).
    pub(crate) fn committed(&self) {
        self.commits.fetch_add(1, Ordering::AcqRel);
        let _ = self.wake.try_send(());
    }

    /// Before a write transaction: when the WAL has grown to `restart_frames`, wait for the
    /// pass that follows the last commit, so that this transaction restarts the WAL.
    pub(crate) async fn before_write(&self) {
        let mut passes = self.passes.clone();
        if passes.borrow().frames < self.restart_frames {
            return;
        }
        let target = self.commits.load(Ordering::Acquire);
        self.urgent.notify_one();
        let _ = tokio::time::timeout(RESTART_WAIT, passes.wait_for(|p| p.after_commits >= target))
            .await;
    }
}
