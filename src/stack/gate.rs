//! A gate for host I/O: requests pass through freely; a structural change
//! (taking an instant copy, switching a volume to a new configuration)
//! closes the gate, waits for the requests in flight to finish, makes its
//! change, and opens the gate again. Seed 004 calls this the millisecond
//! switch; seeds 000/001 need it to take a copy point.
//!
//! Passing costs two atomic operations; nothing waits unless the gate is
//! closed.

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
        let prev = self.gate.state.fetch_sub(1, Ordering::AcqRel);
        if prev & CLOSED != 0 && prev & !CLOSED == 1 {
            probe::shared_lock(1);
            self.gate.drained.notify_waiters();
        }
    }
}

/// The gate held closed; it opens when dropped.
pub struct Closed<'a> {
    gate: &'a Gate,
    _one: tokio::sync::MutexGuard<'a, ()>,
}

impl Drop for Closed<'_> {
    fn drop(&mut self) {
        self.gate.state.fetch_and(!CLOSED, Ordering::AcqRel);
        probe::shared_lock(1);
        self.gate.opened.notify_waiters();
    }
}

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Enters the gate, waiting while it is closed.
    pub async fn pass(&self) -> Pass<'_> {
        loop {
            // enable() and dropping the registered future: two rounds of
            // the Notify's waiter list lock.
            probe::shared_lock(2);
            let opened = self.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            let s = self.state.load(Ordering::Acquire);
            if s & CLOSED == 0 {
                if self
                    .state
                    .compare_exchange_weak(s, s + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Pass { gate: self };
                }
                continue;
            }
            opened.await;
        }
    }

    /// Closes the gate and waits until no request is inside.
    pub async fn close(&self) -> Closed<'_> {
        probe::shared_lock(1);
        let one = self.closer.lock().await;
        self.state.fetch_or(CLOSED, Ordering::AcqRel);
        loop {
            probe::shared_lock(2);
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.state.load(Ordering::Acquire) & !CLOSED == 0 {
                break;
            }
            drained.await;
        }
        Closed {
            gate: self,
            _one: one,
        }
    }

    /// Requests inside now.
    pub fn inside(&self) -> u64 {
        self.state.load(Ordering::Acquire) & !CLOSED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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
