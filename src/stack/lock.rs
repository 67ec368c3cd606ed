//! Range locks over row numbers: what serialises host I/O against a
//! background copier working on the same rows (DESIGN rule 5), and
//! concurrent partial writes against one raid5 row's parity.
//!
//! A request locks one contiguous range of keys, all at once, so two
//! requests can never wait on each other in a cycle. Waiters are woken
//! when any range is released and retry; there is no queue, so a request
//! that can go ahead never waits behind one that cannot.
//!
//! Uncontended (the usual case: every host write takes one or two of
//! these), a lock and its release are one mutex round each: a request
//! registers for wake-ups only after its first try failed, and a release
//! wakes only when someone waits.

#![forbid(unsafe_code)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use crate::blockdev::probe;

/// A set of held, non-overlapping key ranges.
#[derive(Default)]
pub struct RangeLock {
    held: Mutex<Vec<(u64, u64)>>,
    /// Requests waiting for a range (registered before their retry).
    waiting: AtomicUsize,
    released: Notify,
}

/// Counts one waiter while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Holds keys `start..end` of a [`RangeLock`] until dropped.
#[must_use = "the range is unlocked when the guard is dropped"]
pub struct RangeGuard<'a> {
    lock: &'a RangeLock,
    range: (u64, u64),
}

impl RangeLock {
    pub fn new() -> RangeLock {
        RangeLock::default()
    }

    fn try_take(&self, start: u64, end: u64) -> bool {
        probe::shared_lock(1);
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.iter().any(|&(s, e)| s < end && start < e) {
            return false;
        }
        held.push((start, end));
        true
    }

    /// Locks keys `start..end` (an empty range locks nothing).
    pub async fn lock(&self, start: u64, end: u64) -> RangeGuard<'_> {
        // A guard is made only once the range is ours: a request dropped
        // while it waits must not release a range another one holds.
        if start >= end || self.try_take(start, end) {
            return RangeGuard {
                lock: self,
                range: (start, end),
            };
        }
        // Counted before the retry below: a release that does not see the
        // count happened before that retry's look at the held ranges
        // (both go through `held`), so the retry sees it.
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        loop {
            probe::shared_lock(2);
            let released = self.released.notified();
            tokio::pin!(released);
            // Registered before the check, so a release in between wakes us.
            released.as_mut().enable();
            if self.try_take(start, end) {
                return RangeGuard {
                    lock: self,
                    range: (start, end),
                };
            }
            released.await;
        }
    }

    /// Ranges held now (for tests and diagnostics).
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for RangeGuard<'_> {
    fn drop(&mut self) {
        let (start, end) = self.range;
        if start >= end {
            return;
        }
        probe::shared_lock(1);
        let mut held = self.lock.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = held.iter().position(|&r| r == self.range) {
            held.swap_remove(i);
        }
        drop(held);
        if self.lock.waiting.load(Ordering::SeqCst) > 0 {
            probe::shared_lock(1);
            self.lock.released.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[test]
    fn overlapping_ranges_wait_and_disjoint_do_not() {
        let lock = RangeLock::new();
        let log = RefCell::new(Vec::new());
        crate::rt::block_on(async {
            let g = lock.lock(0, 4).await;
            let a = async {
                let _g = lock.lock(3, 5).await;
                log.borrow_mut().push("overlap");
            };
            let b = async {
                let _g = lock.lock(4, 8).await;
                log.borrow_mut().push("disjoint");
            };
            let c = async {
                tokio::task::yield_now().await;
                log.borrow_mut().push("release");
                drop(g);
            };
            futures::join!(a, b, c);
        });
        assert_eq!(*log.borrow(), vec!["disjoint", "release", "overlap"]);
        assert_eq!(lock.held(), 0);
    }

    /// A request dropped while it waits (its client went away) leaves the
    /// range it waited for with its holder: an identical range asked for
    /// next still waits.
    #[test]
    fn a_waiter_dropped_leaves_the_holders_range_held() {
        use futures::FutureExt;
        let lock = RangeLock::new();
        let g = futures::executor::block_on(lock.lock(3, 5));
        {
            let mut waiter = Box::pin(lock.lock(3, 5));
            assert!(
                (&mut waiter).now_or_never().is_none(),
                "a held range was taken"
            );
        }
        assert_eq!(
            lock.held(),
            1,
            "the dropped waiter released the holder's range"
        );
        assert!(
            lock.lock(3, 5).now_or_never().is_none(),
            "the range is free while held"
        );
        drop(g);
        assert_eq!(lock.held(), 0);
        assert!(
            lock.lock(3, 5).now_or_never().is_some(),
            "the released range is free"
        );
    }
}
