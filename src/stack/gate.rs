//! A gate for host I/O: requests pass through freely; a structural change
//! (taking an instant copy, switching a volume to a new configuration)
//! closes the gate, waits for the requests in flight to finish, makes its
//! change, and opens the gate again. Seed 004 calls this the millisecond
//! switch; seeds 000/001 need it to take a copy point.
//!
//! Passing costs two atomic operations on one word (an add to enter, a
//! subtract to leave) and takes no lock while the gate is open: a
//! `Notify`'s waiter list is a mutex shared by every worker, so the open
//! path registers for no wake-up (issue 17 counted two rounds of it per
//! request). Only a closer waits to be woken, and only the request that
//! leaves last while the gate is closed wakes it:
//!
//! ```text
//!   pass:  prev = state += 1 ── CLOSED clear ──> inside
//!                 │ CLOSED set
//!                 v
//!          state -= 1 (the last one out wakes the closer), wait for `opened`
//!   close: state |= CLOSED, wait for `drained` until no request is inside
//! ```

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use crate::blockdev::probe;

const CLOSED: u64 = 1 << 63;

/// The gate.
#[derive(Default)]
pub struct Gate {
    /// Requests inside, plus the `CLOSED` bit.
    state: AtomicU64,
    /// Wakes a closer waiting for the last request to leave.
    drained: Notify,
    /// Wakes requests waiting for the gate to open.
    opened: Notify,
    /// Serialises closers.
    closer: tokio::sync::Mutex<()>,
}

/// A request inside the gate.
pub struct Pass<'a> {
    gate: &'a Gate,
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.gate.leave();
    }
}

/// The gate held closed; it opens when dropped.
pub struct Closed<'a> {
    gate: &'a Gate,
    _one: tokio::sync::MutexGuard<'a, ()>,
}

impl Drop for Closed<'_> {
    fn drop(&mut self) {
        self.gate.state.fetch_and(!CLOSED, Ordering::SeqCst);
        probe::shared_lock(1);
        self.gate.opened.notify_waiters();
    }
}

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Counts one request in unless the gate is closed. `SeqCst` on both
    /// sides (here and in [`Gate::close`]): the add and the closer's `or`
    /// are ordered on one word, so either this request sees `CLOSED` or
    /// the closer sees it inside and waits for it.
    fn try_enter(&self) -> Option<Pass<'_>> {
        let prev = self.state.fetch_add(1, Ordering::SeqCst);
        if prev & CLOSED == 0 {
            return Some(Pass { gate: self });
        }
        // Not in after all; if the closer saw this count, it waits for it.
        self.leave();
        None
    }

    /// One request out; the last one out of a closed gate wakes the
    /// closer (the only time leaving touches the `Notify`).
    fn leave(&self) {
        let prev = self.state.fetch_sub(1, Ordering::SeqCst);
        if prev & CLOSED != 0 && prev & !CLOSED == 1 {
            probe::shared_lock(1);
            self.drained.notify_waiters();
        }
    }

    /// Enters the gate, waiting while it is closed.
    pub async fn pass(&self) -> Pass<'_> {
        if let Some(p) = self.try_enter() {
            return p;
        }
        loop {
            // Registered before the look at the state, so an opening in
            // between wakes us. (enable() and the drop of a registered
            // waiter: two rounds of the waiter list's lock.)
            probe::shared_lock(2);
            let opened = self.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if self.state.load(Ordering::SeqCst) & CLOSED == 0 {
                if let Some(p) = self.try_enter() {
                    return p;
                }
                continue;
            }
            opened.await;
        }
    }

    /// Closes the gate and waits until no request is inside. A close
    /// dropped before it returns opens the gate again.
    pub async fn close(&self) -> Closed<'_> {
        probe::shared_lock(1);
        let one = self.closer.lock().await;
        self.state.fetch_or(CLOSED, Ordering::SeqCst);
        let closed = Closed {
            gate: self,
            _one: one,
        };
        loop {
            probe::shared_lock(2);
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.state.load(Ordering::SeqCst) & !CLOSED == 0 {
                break;
            }
            drained.await;
        }
        closed
    }

    /// Requests inside now.
    pub fn inside(&self) -> u64 {
        self.state.load(Ordering::Acquire) & !CLOSED
    }

    /// Whether the gate is closed now.
    pub fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLOSED != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::sync::Arc;

    #[test]
    fn a_close_waits_for_the_pass_in_flight() {
        let gate = Gate::new();
        let p = gate
            .pass()
            .now_or_never()
            .expect("an open gate lets a request in");
        assert_eq!(gate.inside(), 1);
        let mut close = Box::pin(gate.close());
        assert!(
            (&mut close).now_or_never().is_none(),
            "the close returned with a request inside"
        );
        assert!(gate.is_closed());
        drop(p);
        let closed = (&mut close)
            .now_or_never()
            .expect("the last request out lets the close finish");
        assert_eq!(gate.inside(), 0);
        drop(closed);
        assert!(!gate.is_closed());
        assert!(gate.pass().now_or_never().is_some(), "open again");
    }

    #[test]
    fn a_pass_waits_while_closed_and_enters_when_opened() {
        let gate = Gate::new();
        let closed = gate
            .close()
            .now_or_never()
            .expect("an empty gate closes at once");
        let mut pass = Box::pin(gate.pass());
        assert!(
            (&mut pass).now_or_never().is_none(),
            "a request passed a closed gate"
        );
        assert_eq!(gate.inside(), 0, "a request held outside counts as inside");
        // A second closer waits for the first one.
        let mut second = Box::pin(gate.close());
        assert!((&mut second).now_or_never().is_none());
        drop(second);
        assert!(gate.is_closed(), "a waiting second closer opened the gate");
        drop(closed);
        let p = (&mut pass)
            .now_or_never()
            .expect("the opened gate lets it in");
        assert_eq!(gate.inside(), 1);
        drop(p);
        assert_eq!(gate.inside(), 0);
    }

    #[test]
    fn a_close_dropped_while_it_waits_opens_the_gate_again() {
        let gate = Gate::new();
        let p = gate.pass().now_or_never().expect("open");
        {
            let mut close = Box::pin(gate.close());
            assert!((&mut close).now_or_never().is_none());
            assert!(gate.is_closed());
        }
        assert!(!gate.is_closed(), "an abandoned close left the gate closed");
        let q = gate.pass().now_or_never().expect("the gate is open");
        assert_eq!(gate.inside(), 2);
        drop((p, q));
        assert!(gate.close().now_or_never().is_some());
    }

    #[test]
    fn close_waits_for_requests_inside_and_holds_new_ones() {
        crate::rt::block_on(async {
            let gate = Arc::new(Gate::new());
            let p1 = gate.pass().await;
            let p2 = gate.pass().await;
            assert_eq!(gate.inside(), 2);
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let g = Arc::clone(&gate);
            let tx2 = tx.clone();
            tokio::task::spawn_local(async move {
                let c = g.close().await;
                tx2.send("closed").unwrap();
                // Held closed: a request arriving now waits.
                let g2 = Arc::clone(&g);
                let tx3 = tx2.clone();
                tokio::task::spawn_local(async move {
                    let _p = g2.pass().await;
                    tx3.send("passed").unwrap();
                });
                tokio::task::yield_now().await;
                tx2.send("opening").unwrap();
                drop(c);
            });
            tokio::task::yield_now().await;
            assert!(rx.try_recv().is_err(), "close must wait for the two inside");
            drop(p1);
            tokio::task::yield_now().await;
            assert!(rx.try_recv().is_err(), "one still inside");
            drop(p2);
            assert_eq!(rx.recv().await, Some("closed"));
            assert_eq!(rx.recv().await, Some("opening"));
            assert_eq!(rx.recv().await, Some("passed"));
            drop(tx);
        });
    }
}
