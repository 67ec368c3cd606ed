//! Range locks over row numbers: what serialises host I/O against a
//! background copier working on the same rows (DESIGN rule 5), and
//! concurrent partial writes against one raid5 row's parity.
//!
//! A request locks one contiguous range of keys, all at once, so two
//! requests can never wait on each other in a cycle. Waiters are woken
//! when any range is released and retry; there is no queue, so a request
//! that can go ahead never waits behind one that cannot.

#![forbid(unsafe_code)]

use std::sync::Mutex;

use tokio::sync::Notify;

/// A set of held, non-overlapping key ranges.
#[derive(Default)]
pub struct RangeLock {
    held: Mutex<Vec<(u64, u64)>>,
    released: Notify,
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
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.iter().any(|&(s, e)| s < end && start < e) {
            return false;
        }
        held.push((start, end));
        true
    }

    /// Locks keys `start..end` (an empty range locks nothing).
    pub async fn lock(&self, start: u64, end: u64) -> RangeGuard<'_> {
        let guard = RangeGuard {
            lock: self,
            range: (start, end),
        };
        if start >= end {
            return guard;
        }
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Registered before the check, so a release in between wakes us.
            released.as_mut().enable();
            if self.try_take(start, end) {
                return guard;
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
        let mut held = self.lock.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = held.iter().position(|&r| r == self.range) {
            held.swap_remove(i);
        }
        drop(held);
        self.lock.released.notify_waiters();
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
}
