//! Worker threads: thread-per-core runtimes that run the I/O path.
//!
//! ```text
//!   acceptor ──stream──> worker 0: tokio current-thread + LocalSet + io_uring
//!            ──stream──> worker 1: ...
//!   API / jobs ──run(closure)──> a worker, result back over a oneshot
//! ```
//!
//! Each worker runs a single-threaded tokio runtime with a `LocalSet`, so
//! stack futures need not be `Send`, and owns one io_uring ring (see
//! [`crate::disk::uring`]): a request's network and disk I/O stay on one
//! thread, with no hop and no lock in between. Volume stacks are shared
//! (`Arc<dyn BlockDev>`, `Send + Sync`) and used from any worker.

#![forbid(unsafe_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, ErrorKind, Result};

pub use crate::disk::uring::{DEFAULT_POLL_US, batch, set_poll_window};

type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;
type Task = Box<dyn FnOnce() -> LocalFuture + Send>;

/// The pool of worker threads.
pub struct Workers {
    senders: Vec<mpsc::UnboundedSender<Task>>,
    next: AtomicUsize,
    threads: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Workers {
    /// Starts `n` workers (at least one).
    pub fn start(n: usize) -> Result<Arc<Workers>> {
        let n = n.max(1);
        let mut senders = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = mpsc::unbounded_channel::<Task>();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::io("starting a worker runtime failed", e))?;
            let t = std::thread::Builder::new()
                .name(format!("ferrosan-w{i}"))
                .spawn(move || worker_main(i, rt, rx))
                .map_err(|e| Error::io("starting a worker thread failed", e))?;
            senders.push(tx);
            threads.push(t);
        }
        Ok(Arc::new(Workers {
            senders,
            next: AtomicUsize::new(0),
            threads: std::sync::Mutex::new(threads),
        }))
    }

    pub fn len(&self) -> usize {
        self.senders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Spawns the future made by `f` on the next worker (round robin).
    pub fn spawn<F, Fut>(&self, f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.senders.len();
        self.spawn_on(i, f);
    }

    /// Spawns the future made by `f` on worker `i`.
    pub fn spawn_on<F, Fut>(&self, i: usize, f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let task: Task = Box::new(move || Box::pin(f()) as LocalFuture);
        if let Some(tx) = self.senders.get(i % self.senders.len()) {
            // A closed channel means the worker is shutting down; the task
            // is dropped, as it would be at exit.
            let _ = tx.send(task);
        }
    }

    /// Runs the future made by `f` on a worker and returns its output.
    pub async fn run<F, Fut, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.spawn(move || async move {
            let _ = tx.send(f().await);
        });
        rx.await
            .map_err(|_| Error::new(ErrorKind::Shutdown, "the daemon is shutting down"))
    }

    /// Stops the workers after their queued tasks were handed out; running
    /// tasks are dropped. Call after draining I/O.
    pub fn stop(&self) {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for tx in &self.senders {
            let _ = tx.send(Box::new(|| Box::pin(async {}) as LocalFuture));
        }
        drop(threads);
    }
}

/// Workers that run without an io_uring ring (their disk I/O goes through
/// the synchronous engine): the daemon logs each, and tests look.
static SYNC_WORKERS: AtomicUsize = AtomicUsize::new(0);

/// How many workers of this process fell back to the synchronous disk
/// engine because they have no io_uring ring.
pub fn sync_workers() -> usize {
    SYNC_WORKERS.load(Ordering::Relaxed)
}

fn worker_main(i: usize, rt: tokio::runtime::Runtime, mut rx: mpsc::UnboundedReceiver<Task>) {
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        if !crate::disk::uring::init_thread() {
            SYNC_WORKERS.fetch_add(1, Ordering::Relaxed);
            // Never silent: the fallback costs most of the data path's
            // speed, and CI fails on this line (tests/harness).
            tracing::warn!(
                "worker {i} has no io_uring ring: its disk I/O falls back to the \
                 synchronous disk engine (pread/pwrite on a thread pool)"
            );
        }
        while let Some(task) = rx.recv().await {
            tokio::task::spawn_local(task());
        }
    });
}

/// Runs `fut` to completion on the calling thread, as a worker would: a
/// current-thread runtime, a `LocalSet` and this thread's io_uring ring.
/// For tests, the CLI and tools.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("cannot start a tokio runtime: {e}"),
    };
    let local = tokio::task::LocalSet::new();
    let out = local.block_on(&rt, async move {
        crate::disk::uring::init_thread();
        fut.await
    });
    drop(local);
    crate::disk::uring::release_thread();
    out
}

// ------------------------------------------------------- host activity

/// Each thread's count of host requests, and every thread's counter.
static HOST_IO: std::sync::Mutex<Vec<Arc<std::sync::atomic::AtomicU64>>> =
    std::sync::Mutex::new(Vec::new());

thread_local! {
    static MY_HOST_IO: Arc<std::sync::atomic::AtomicU64> = {
        let c = Arc::new(std::sync::atomic::AtomicU64::new(0));
        HOST_IO
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::clone(&c));
        c
    };
}

/// Counts one host request (the NBD server, per request): a store to
/// this thread's own counter, no write to a line another thread writes.
#[inline]
pub fn host_io() {
    use std::sync::atomic::Ordering::Relaxed;
    MY_HOST_IO.with(|c| c.store(c.load(Relaxed).wrapping_add(1), Relaxed));
}

/// Host requests counted so far, over every thread: jobs with a rate
/// floor compare two readings to tell whether hosts are doing I/O.
pub fn host_io_seen() -> u64 {
    use std::sync::atomic::Ordering::Relaxed;
    HOST_IO
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .fold(0u64, |n, c| n.wrapping_add(c.load(Relaxed)))
}
