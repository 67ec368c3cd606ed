//! A counter of shared-lock acquisitions on the data path, for
//! `bench/hotpath.rs`.
//!
//! Every place a request takes a lock that worker threads share (a
//! `Mutex` or `RwLock` of a stack node, the waiter list of a tokio
//! `Notify`) calls [`shared_lock`] with the number of acquisitions it
//! makes. Built with the `lock-count` feature the calls add to one global
//! counter; without it they compile to nothing, so the data path pays no
//! instruction for them.
//!
//! Counted as tokio 1.x takes them: a `Notified` enabled while no
//! notification is stored locks the `Notify`'s waiter list, and locks it
//! again when it is dropped still registered; `notify_waiters` locks it
//! once.

#[cfg(feature = "lock-count")]
static SHARED_LOCKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether this build counts (the `lock-count` feature).
pub const ENABLED: bool = cfg!(feature = "lock-count");

/// Records `n` acquisitions of locks shared between workers.
#[cfg(feature = "lock-count")]
#[inline(always)]
pub fn shared_lock(n: u64) {
    SHARED_LOCKS.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

/// Records nothing: built without `lock-count`.
#[cfg(not(feature = "lock-count"))]
#[inline(always)]
pub fn shared_lock(_n: u64) {}

/// Acquisitions counted since the start.
#[cfg(feature = "lock-count")]
pub fn shared_locks() -> u64 {
    SHARED_LOCKS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Always 0: built without `lock-count`.
#[cfg(not(feature = "lock-count"))]
pub fn shared_locks() -> u64 {
    0
}
