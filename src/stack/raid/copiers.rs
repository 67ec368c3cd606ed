//! Whether a host write to a concat or raid0 group locks its rows.
//!
//! Row locks keep host writes off the row a background copier is copying
//! (DESIGN rule 5: rebuild, hot replace). On raid1 and raid5 they also
//! order host writes among themselves (mirror legs agree, a row's parity
//! stays the XOR of its data), so those levels always take them. On
//! concat and raid0 only a copier needs them, and one seldom runs: there
//! a write locks its rows only while a copier is active, and otherwise
//! pays two atomic operations instead of two rounds of the lock's mutex.
//!
//! A copier that starts must not miss a write already in flight without
//! its lock, so the word counts those writes as well as the copiers:
//!
//! ```text
//!   write:  prev = state += 1 ── no copier ──> unlocked (state -= 1 when done)
//!                  │ a copier
//!                  v
//!           state -= 1, lock the rows
//!   copier: state += COPIER, wait until no unlocked write is in flight
//! ```
//!
//! Both sides change one word with `SeqCst`, so either the write sees the
//! copier or the copier sees the write and waits for it; the last
//! unlocked write out wakes the copier (only then is the `Notify` used).

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use crate::blockdev::probe;

/// One active copier in `state`; below it, unlocked writes in flight.
const COPIER: u64 = 1 << 32;
/// The bits of `state` that count unlocked writes.
const WRITES: u64 = COPIER - 1;

#[derive(Default)]
pub(super) struct Copiers {
    state: AtomicU64,
    drained: Notify,
}

/// A host write going without its row lock.
pub(super) struct Unlocked<'a>(&'a Copiers);

impl Drop for Unlocked<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// A copier at work: host writes lock their rows until it is dropped.
pub(super) struct Active<'a>(&'a Copiers);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.state.fetch_sub(COPIER, Ordering::SeqCst);
    }
}

impl Copiers {
    /// Lets a host write go without its row lock, unless a copier is
    /// active (then `None`: lock the rows).
    pub(super) fn unlocked(&self) -> Option<Unlocked<'_>> {
        let prev = self.state.fetch_add(1, Ordering::SeqCst);
        if prev < COPIER {
            return Some(Unlocked(self));
        }
        self.leave();
        None
    }

    fn leave(&self) {
        let prev = self.state.fetch_sub(1, Ordering::SeqCst);
        if prev >= COPIER && prev & WRITES == 1 {
            probe::shared_lock(1);
            self.drained.notify_waiters();
        }
    }

    /// A copier starts: from now on host writes lock their rows; resolves
    /// once every write that did not has finished. Dropped before that,
    /// or after, it stops counting as a copier.
    pub(super) async fn start(&self) -> Active<'_> {
        self.state.fetch_add(COPIER, Ordering::SeqCst);
        let active = Active(self);
        loop {
            probe::shared_lock(2);
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.state.load(Ordering::SeqCst) & WRITES == 0 {
                return active;
            }
            drained.await;
        }
    }

    /// Whether a copier is active now (tests).
    #[cfg(test)]
    pub(super) fn active(&self) -> bool {
        self.state.load(Ordering::SeqCst) >= COPIER
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[test]
    fn a_copier_waits_for_unlocked_writes_and_later_writes_lock() {
        let c = Copiers::default();
        let w = c.unlocked().expect("no copier: the write goes unlocked");
        let mut start = Box::pin(c.start());
        assert!(
            (&mut start).now_or_never().is_none(),
            "the copier started with an unlocked write in flight"
        );
        assert!(
            c.unlocked().is_none(),
            "a write after the copier came unlocked"
        );
        drop(w);
        let active = (&mut start)
            .now_or_never()
            .expect("the last unlocked write out lets the copier start");
        assert!(
            c.unlocked().is_none(),
            "a write while copying went unlocked"
        );
        drop(active);
        assert!(!c.active());
        assert!(
            c.unlocked().is_some(),
            "no copier: writes go unlocked again"
        );
    }

    #[test]
    fn a_copier_dropped_while_it_waits_counts_no_more() {
        let c = Copiers::default();
        let w = c.unlocked().expect("unlocked");
        {
            let mut start = Box::pin(c.start());
            assert!((&mut start).now_or_never().is_none());
            assert!(c.active());
        }
        assert!(!c.active());
        drop(w);
        assert!(c.unlocked().is_some());
    }
}
