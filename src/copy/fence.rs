//! The read fence: a slot the family stops using is reused only once no
//! read that could have been planned on it is still in flight.
//!
//! Reads take no lock across their disk I/O: a read plans its pieces
//! (which slot holds which granules) under the state's read lock, lets
//! it go, and then reads. Meanwhile a commit may drop the entry it
//! planned on (a collapse, a collection move, a deletion) and free the
//! slot, and a new write may take that slot: without the fence the read
//! would return another track's data.
//!
//! ```text
//!   read:    ticket = readers.enter(store epoch e)   under the read lock,
//!            plan, I/O, drop ticket                   before the plan
//!   commit:  freed slots retired with the epoch of the save that freed them
//!            advance while readers of epoch-1 ended:  reuse slots retired
//!                                                     up to epoch-1; epoch+1
//! ```
//!
//! The epoch lives in the store ([`Store`]) and changes only under the
//! state's write lock; readers count themselves here by the epoch's
//! parity (two counters, so the hot path is one atomic add and one
//! subtract). A read that began in epoch e can only have planned on slots
//! retired in epoch e or later, and the epoch advances past e + 1 only
//! once every read of e ended, so the counter of e's parity never mixes
//! two live epochs. When no read is in flight a save reuses its frees at
//! once, as before the fence.
//!
//! [`Store`]: super::store::Store

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

/// Reads in flight, by the parity of the epoch they began in.
#[derive(Debug, Default)]
pub struct Readers {
    counts: [AtomicU64; 2],
}

/// One read in flight; it ends when dropped.
#[must_use = "a read is in flight only while its ticket lives"]
pub struct Ticket<'a> {
    count: &'a AtomicU64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Readers {
    /// A read begins in `epoch` (the store's, read under the state lock).
    pub fn enter(&self, epoch: u64) -> Ticket<'_> {
        let count = &self.counts[parity(epoch)];
        count.fetch_add(1, Ordering::SeqCst);
        Ticket { count }
    }

    /// Whether every read that began in `epoch` ended (call under the
    /// state's write lock, with `epoch` the store's epoch less one: no
    /// read can begin in it any more).
    pub fn ended(&self, epoch: u64) -> bool {
        self.counts[parity(epoch)].load(Ordering::SeqCst) == 0
    }
}

fn parity(epoch: u64) -> usize {
    usize::from(epoch % 2 == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_counts_until_dropped() {
        let r = Readers::default();
        let a = r.enter(3);
        let b = r.enter(4);
        assert!(!r.ended(3) && !r.ended(5), "odd epochs share a counter");
        assert!(!r.ended(4));
        drop(a);
        assert!(r.ended(3) && !r.ended(4));
        drop(b);
        assert!(r.ended(4));
    }
}
