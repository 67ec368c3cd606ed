//! An RW member's increments (seed 003, FIG. 13: table 1300 and the
//! increments volume, DLV, linked by RLID): the block ids written since
//! the split, the DLV that holds those blocks, and the state of the DLV —
//! whole, failed (the member alone holds the increments), or being
//! filled from the member onto a spare that replaces it.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::blockdev::{BlockDev, WriteIntent};
use crate::meta::diffmap::DiffMap;
use crate::stack::lock::RangeLock;

/// The DLV holds every increment.
const DLV_OK: u8 = 0;
/// The DLV failed: the member alone holds the increments.
const DLV_FAILED: u8 = 1;
/// A new DLV is being filled from the member.
pub(super) const DLV_REBUILDING: u8 = 2;

/// An RW member's increments: its DLV and the block ids of table 1300.
pub struct Increments {
    /// The DLV (a spare's device once one replaced a failed DLV).
    dlv: parking_lot::RwLock<Arc<dyn BlockDev>>,
    pub bids: Arc<DiffMap>,
    pub intent: Arc<dyn WriteIntent>,
    pub(super) locks: RangeLock,
    /// Host writes hold it shared; a takeover (write error process)
    /// holds it alone, so no write is in flight while the PID changes.
    pub(super) gate: tokio::sync::RwLock<()>,
    /// [`DLV_OK`], [`DLV_FAILED`] (it failed a write, stored: the member
    /// alone holds the increments; nothing uses the DLV) or
    /// [`DLV_REBUILDING`] (a spare is being filled as the new DLV: writes
    /// go to it, reads and takeovers do not use it yet).
    dlv_state: AtomicU8,
    /// The DLV's failure is stored (a write that skips the DLV may be
    /// answered only then).
    failure_stored: AtomicBool,
}

impl Increments {
    pub fn new(dlv: Arc<dyn BlockDev>, bids: Arc<DiffMap>, intent: Arc<dyn WriteIntent>) -> Self {
        Increments {
            dlv: parking_lot::RwLock::new(dlv),
            bids,
            intent,
            locks: RangeLock::new(),
            gate: tokio::sync::RwLock::new(()),
            dlv_state: AtomicU8::new(DLV_OK),
            failure_stored: AtomicBool::new(false),
        }
    }

    /// The DLV's device.
    pub fn dlv(&self) -> Arc<dyn BlockDev> {
        Arc::clone(&self.dlv.read())
    }

    /// Whether the DLV holds every increment (reads and takeovers may use
    /// it).
    pub fn dlv_ok(&self) -> bool {
        self.dlv_state.load(Ordering::Acquire) == DLV_OK
    }

    /// Whether writes go to the DLV too (it is whole, or being filled).
    pub fn dlv_written(&self) -> bool {
        self.dlv_state.load(Ordering::Acquire) != DLV_FAILED
    }

    /// Whether the DLV's failure is stored.
    pub fn failure_stored(&self) -> bool {
        self.failure_stored.load(Ordering::Acquire)
    }

    /// Notes that the DLV's failure is stored.
    pub fn set_failure_stored(&self) {
        self.failure_stored.store(true, Ordering::Release);
    }

    /// Marks the DLV failed; true if it was not already.
    pub fn fail_dlv(&self) -> bool {
        self.dlv_state.swap(DLV_FAILED, Ordering::AcqRel) != DLV_FAILED
    }

    /// Puts `dev` in as the DLV being filled. Call with the gate held
    /// alone (no write in flight skipped the DLV and lands after this).
    pub(super) fn rebuilding_onto(&self, dev: Arc<dyn BlockDev>) {
        *self.dlv.write() = dev;
        self.dlv_state.store(DLV_REBUILDING, Ordering::Release);
    }

    /// Whether a new DLV is being filled (and has taken every write).
    pub fn rebuilding(&self) -> bool {
        self.dlv_state.load(Ordering::Acquire) == DLV_REBUILDING
    }

    /// The DLV being filled is whole: reads and takeovers use it.
    pub fn dlv_rebuilt(&self) -> bool {
        self.dlv_state
            .compare_exchange(DLV_REBUILDING, DLV_OK, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}
