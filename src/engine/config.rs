//! The one commit path for configuration changes.
//!
//! ```text
//!  API request (blocking thread) ──┐  changes lane
//!  a job's end (rebuild, move) ────┴──────────────▶ thread "ferrosan-config":
//!                                                    one change at a time:
//!                                                      read state (short lock)
//!                                                      commit   (no lock held)
//!                                                      apply    (short lock)
//!  RAID hook: a member failed ──── urgent lane ───▶ same thread, run between
//!                                                    a change's awaits
//! ```
//!
//! Every change to the pool's records — disks, groups, volumes, copy
//! families' structure, the pool record — runs on this one thread. So a
//! change can read what it needs under a short lock, commit durably with no
//! lock held, and apply the result under a short lock again: no other
//! change comes between, and nothing else (the data path, a `list` or
//! `show`, a background pass) ever waits for a commit to take a lock.
//!
//! A member failure cannot wait behind a change: a change such as taking a
//! copy closes a volume's gate and waits for the requests inside, and one
//! of those may be the write whose member failed, waiting for the failure
//! to be recorded. So failures take the urgent lane: they run on the same
//! thread (so records are still written by one thread only) whenever the
//! running change awaits. The rule that keeps this sound: a change reads a
//! group's record and commits it with no await between (every group change
//! is synchronous), so a failure never slips between its read and its
//! write.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::mpsc;

use super::Pool;
use crate::error::{Error, ErrorKind, Result};

/// One change, as the commit path runs it.
type Change = Box<dyn FnOnce(Arc<Pool>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

thread_local! {
    static ON_PATH: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread is the commit path's.
pub(crate) fn on_path() -> bool {
    ON_PATH.with(|p| p.get())
}

struct Lanes {
    changes: mpsc::UnboundedSender<Change>,
    urgent: mpsc::UnboundedSender<Change>,
}

/// The commit path's thread and the channels to it.
pub(crate) struct CommitPath {
    lanes: Mutex<Option<Lanes>>,
}

fn closing() -> Error {
    Error::new(ErrorKind::Shutdown, "the pool is closing")
}

fn start_error(e: std::io::Error) -> Error {
    Error::io("cannot start the configuration thread", e)
}

impl CommitPath {
    /// Starts the thread. It holds the pool only while a change runs, so
    /// the pool can close; dropping the path ends the thread.
    pub(crate) fn start(pool: Weak<Pool>) -> Result<CommitPath> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Change>();
        let (utx, mut urx) = mpsc::unbounded_channel::<Change>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(start_error)?;
        std::thread::Builder::new()
            .name("ferrosan-config".into())
            .spawn(move || {
                ON_PATH.with(|p| p.set(true));
                let local = tokio::task::LocalSet::new();
                let upool = pool.clone();
                local.spawn_local(async move {
                    while let Some(urgent) = urx.recv().await {
                        let Some(pool) = upool.upgrade() else { return };
                        tokio::task::spawn_local(urgent(pool));
                    }
                });
                local.block_on(&rt, async move {
                    while let Some(change) = rx.recv().await {
                        let Some(pool) = pool.upgrade() else { return };
                        change(pool).await;
                    }
                });
            })
            .map_err(start_error)?;
        Ok(CommitPath {
            lanes: Mutex::new(Some(Lanes {
                changes: tx,
                urgent: utx,
            })),
        })
    }

    /// A path that takes no change (the thread could not start).
    pub(crate) fn closed() -> CommitPath {
        CommitPath {
            lanes: Mutex::new(None),
        }
    }

    fn send(&self, change: Change, urgent: bool) -> Result<()> {
        let lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let Some(l) = lanes.as_ref() else {
            return Err(closing());
        };
        let tx = if urgent { &l.urgent } else { &l.changes };
        tx.send(change).map_err(|_| closing())
    }
}

/// Wraps `f` as a change that sends its outcome to `done`.
fn boxed<T, F, Fut>(f: F, done: impl FnOnce(Result<T>) + Send + 'static) -> Change
where
    T: Send + 'static,
    F: FnOnce(Arc<Pool>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>> + 'static,
{
    Box::new(move |pool| Box::pin(async move { done(f(pool).await) }))
}

impl Pool {
    /// Runs a configuration change on the commit path and waits for its
    /// outcome, from a thread that may block (an API request's). On the
    /// commit path itself (a change calling another's parts) it runs `f`
    /// in place, on the path's runtime.
    pub fn configure<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Pool>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + 'static,
    {
        if on_path() {
            return Err(Error::new(
                ErrorKind::Invalid,
                "a configuration change waited for another one on the commit path",
            ));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        self.commit.send(
            boxed(f, move |r| {
                let _ = tx.send(r);
            }),
            false,
        )?;
        rx.recv().map_err(|_| closing())?
    }

    /// [`Pool::configure`] from async code (a job's end): awaits the
    /// outcome without blocking its thread.
    pub(crate) async fn configure_async<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Pool>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + 'static,
    {
        self.send_async(f, false).await
    }

    /// The urgent lane (see the module comment): a member failure, recorded
    /// while a change may be waiting for the very request that failed.
    pub(crate) async fn urgent<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Pool>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + 'static,
    {
        self.send_async(f, true).await
    }

    /// Sends `f` down a lane and awaits its outcome; on the commit path
    /// itself it runs `f` in place (queueing it would wait for itself).
    async fn send_async<T, F, Fut>(&self, f: F, urgent: bool) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Pool>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + 'static,
    {
        if on_path() {
            return f(self.arc()?).await;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.commit.send(
            boxed(f, move |r| {
                let _ = tx.send(r);
            }),
            urgent,
        )?;
        rx.await.map_err(|_| closing())?
    }
}
