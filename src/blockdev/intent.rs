//! The write-intent interface between redundant nodes and the metadata that
//! persists their marks (DESIGN rule 2).
//!
//! Before a RAID-1 or RAID-5 node issues any member write, it calls
//! [`WriteIntent::begin`] for the range of its address space being written
//! and waits for the mark to be durable; the [`IntentGuard`] it gets back
//! ends the write when dropped. After a crash, every range that was marked
//! and not yet cleared is resynced (mirrors copied, parity recomputed),
//! which closes the RAID-5 write hole the way md's bitmap does. Marks cover
//! coarse regions and clear lazily, so most writes find their mark already
//! set and pay nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::blockdev::DevFuture;
use crate::error::Result;

/// Ends a write on drop.
pub struct IntentGuard {
    end: End,
}

enum End {
    Nothing,
    Call(Box<dyn FnOnce() + Send>),
    /// [`EndWrite::end`] of the range: no closure to box, so a write whose
    /// mark is already set allocates nothing for its guard.
    Range(Arc<dyn EndWrite>, u64, u64),
}

/// A log that ends a write of a range itself (see [`IntentGuard::range`]).
pub trait EndWrite: Send + Sync + 'static {
    fn end_write(&self, off: u64, len: u64);
}

impl IntentGuard {
    pub fn new(end: impl FnOnce() + Send + 'static) -> IntentGuard {
        IntentGuard {
            end: End::Call(Box::new(end)),
        }
    }

    /// A guard that calls `log.end_write(off, len)` when dropped.
    pub fn range(log: Arc<dyn EndWrite>, off: u64, len: u64) -> IntentGuard {
        IntentGuard {
            end: End::Range(log, off, len),
        }
    }

    /// A guard with nothing to end.
    pub fn none() -> IntentGuard {
        IntentGuard { end: End::Nothing }
    }

    /// Never ends the write: its range stays marked for as long as the
    /// daemon runs (no clear pass, not even a clean stop's, takes a mark
    /// with a write in progress), so the next start resyncs it. For a
    /// write that left the members disagreeing.
    pub fn keep(mut self) {
        self.end = End::Nothing;
    }
}

impl Drop for IntentGuard {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.end, End::Nothing) {
            End::Nothing => {}
            End::Call(f) => f(),
            End::Range(log, off, len) => log.end_write(off, len),
        }
    }
}

/// A write-intent log over one node's address space.
pub trait WriteIntent: Send + Sync + 'static {
    /// Marks `off..off+len` as being written; resolves once the mark is
    /// durable. Dropping the guard ends the write.
    fn begin(&self, off: u64, len: u64) -> DevFuture<'_, Result<IntentGuard>>;

    /// [`WriteIntent::begin`] where the mark is durable already (most
    /// writes: marks cover coarse regions and clear lazily), without a
    /// future; `None` when the caller must call `begin` and wait.
    fn begin_now(&self, off: u64, len: u64) -> Option<IntentGuard> {
        let _ = (off, len);
        None
    }
}

/// `begin_now`, else `begin` and its wait.
pub async fn begin_write(log: &dyn WriteIntent, off: u64, len: u64) -> Result<IntentGuard> {
    match log.begin_now(off, len) {
        Some(g) => Ok(g),
        None => log.begin(off, len).await,
    }
}

/// No write-intent log (non-redundant layouts, or tests that do not care).
pub struct NoIntent;

impl WriteIntent for NoIntent {
    fn begin(&self, _off: u64, _len: u64) -> DevFuture<'_, Result<IntentGuard>> {
        Box::pin(async { Ok(IntentGuard::none()) })
    }

    fn begin_now(&self, _off: u64, _len: u64) -> Option<IntentGuard> {
        Some(IntentGuard::none())
    }
}

/// An in-memory write-intent log for tests: records which regions are
/// marked and how many writes are in flight in each. Marks are "durable"
/// at once and never cleared, so after a simulated crash
/// [`MemIntent::marked`] lists what must be resynced.
pub struct MemIntent {
    region: u64,
    state: std::sync::Arc<Mutex<BTreeMap<u64, u64>>>,
}

impl MemIntent {
    pub fn new(region: u64) -> MemIntent {
        MemIntent {
            region: region.max(1),
            state: std::sync::Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// Marked regions as (offset, length), in order.
    pub fn marked(&self) -> Vec<(u64, u64)> {
        let g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        g.keys().map(|&r| (r * self.region, self.region)).collect()
    }

    /// Writes in flight, over all regions.
    pub fn in_flight(&self) -> u64 {
        let g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        g.values().sum()
    }

    /// Forgets all marks (after a resync).
    pub fn clear(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl WriteIntent for MemIntent {
    fn begin(&self, off: u64, len: u64) -> DevFuture<'_, Result<IntentGuard>> {
        let first = off / self.region;
        let last = (off + len.max(1) - 1) / self.region;
        {
            let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
            for r in first..=last {
                *g.entry(r).or_insert(0) += 1;
            }
        }
        let state = std::sync::Arc::clone(&self.state);
        Box::pin(async move {
            Ok(IntentGuard::new(move || {
                let mut g = state.lock().unwrap_or_else(|p| p.into_inner());
                for r in first..=last {
                    if let Some(n) = g.get_mut(&r) {
                        *n = n.saturating_sub(1);
                    }
                }
            }))
        })
    }
}
