//! Diversion below the RAID layer (seed 002, third embodiment: a work
//! disk, tables T5-T7 of FIG. 15A-16). While it is set, every member
//! read and write the group makes for its hosts (data and parity alike)
//! goes through a per-slot node instead of the slot's devices: the node
//! appends each disk-level write to the work disk and reads a unit it
//! holds from there. The copiers of a rebuild or sparing copy read the old
//! member and write the new one directly, so the copy moves the disk's
//! own content; what the hosts wrote meanwhile is written back after.
//!
//! ```text
//!   host I/O ── RaidDev ── read_slot / write_slot / zero_slot (slot i)
//!                              │ diverting?
//!                  no ─────────┴──────── yes: node i (a SlotDivert)
//!                  │                        │ unit held / new write: work disk
//!             slot i's devices  <── SlotDev(i) ── the rest: the slot's devices
//! ```
//!
//! [`SlotDev`] is the node's view of its slot without the diversion: it
//! is how a unit not held is read, and how the write-back reaches the
//! slot (after the sparing, the spare that took the failing disk's slot).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use super::RaidDev;
use crate::blockdev::{BlockDev, BufResult, DevFuture, ZeroFlags};
use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result};

/// A slot's diversion node, as the RAID layer uses it.
pub trait SlotDivert: Send + Sync {
    /// The node: reads and writes of the slot's member range.
    fn dev(&self) -> &dyn BlockDev;
    /// Whether every unit of `off..off+len` is held by the work store.
    fn holds_all(&self, off: u64, len: u64) -> bool;
    /// Whether any unit of `off..off+len` is.
    fn holds_any(&self, off: u64, len: u64) -> bool;
    /// Makes what the node wrote durable, its map included.
    fn save(&self) -> DevFuture<'_, Result<()>>;
}

/// One node per slot, in slot order.
type Nodes = Arc<Vec<Arc<dyn SlotDivert>>>;

/// The nodes of every slot, while diverting.
#[derive(Default)]
pub(super) struct Diversion {
    on: AtomicBool,
    nodes: parking_lot::RwLock<Option<Nodes>>,
}

impl Diversion {
    /// Slot `idx`'s node, when diverting.
    pub(super) fn node(&self, idx: usize) -> Option<Arc<dyn SlotDivert>> {
        if !self.on.load(Ordering::Acquire) {
            return None;
        }
        self.nodes.read().as_ref()?.get(idx).cloned()
    }

    pub(super) fn all(&self) -> Option<Nodes> {
        if !self.on.load(Ordering::Acquire) {
            return None;
        }
        self.nodes.read().clone()
    }
}

impl RaidDev {
    /// Diverts the group's member I/O through `nodes` (one per slot, in
    /// slot order), or stops (`None`). Requests already past the switch
    /// finish as they began.
    pub fn set_member_divert(&self, nodes: Option<Vec<Arc<dyn SlotDivert>>>) -> Result<()> {
        if let Some(n) = &nodes
            && n.len() != self.layout.members()
        {
            return Err(Error::invalid(format!(
                "a diversion of {} slots for a group of {}",
                n.len(),
                self.layout.members()
            )));
        }
        let on = nodes.is_some();
        *self.divert.nodes.write() = nodes.map(Arc::new);
        self.divert.on.store(on, Ordering::Release);
        Ok(())
    }

    /// Whether member I/O is diverted now.
    pub fn member_diverted(&self) -> bool {
        self.divert.on.load(Ordering::Acquire)
    }

    /// Slot `idx` of `raid` as a device, without the diversion: member
    /// offsets; reads from the devices holding current data, writes to
    /// every device of the slot (a device that fails is failed as a member
    /// would be).
    pub fn slot_dev(raid: &Arc<RaidDev>, idx: usize) -> Arc<dyn BlockDev> {
        Arc::new(SlotDev {
            raid: Arc::downgrade(raid),
            idx,
            size: raid.layout.member_usable(idx),
            block_size: raid.block_size,
        })
    }

    /// A diverted read of slot `idx`. A host read of the failing member
    /// being spared is refused (`Unavailable`: rebuilt from the others)
    /// unless the work store holds all of it.
    pub(super) async fn read_diverted(
        &self,
        node: &dyn SlotDivert,
        idx: usize,
        off: u64,
        buf: IoBuf,
        host: bool,
    ) -> BufResult {
        let len = buf.len() as u64;
        if host && self.members.spared() == Some(idx) && !node.holds_all(off, len) {
            if node.holds_any(off, len) {
                return (buf, Err(super::target::no_source(idx, off)));
            }
            return self.read_slot_direct(idx, off, buf, true).await;
        }
        node.dev().read(off, buf).await
    }
}

/// The error a diverted write fails with: not an I/O error of the slot's
/// devices, so no member is failed for it.
pub(super) fn store_failed(idx: usize, e: Error) -> Error {
    let kind = if e.kind() == ErrorKind::Io {
        ErrorKind::Unavailable
    } else {
        e.kind()
    };
    Error::new(
        kind,
        format!("the diverted write of member {idx} failed: {}", e.chain()),
    )
}

/// Stands for "no member device" in a failure that names none (a
/// diverted write's, whose error is never an I/O error of the slot).
pub(super) fn no_device() -> Arc<dyn BlockDev> {
    Arc::new(NoDevice)
}

struct NoDevice;

impl BlockDev for NoDevice {
    fn size(&self) -> u64 {
        0
    }

    fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
        Box::pin(async move { (buf, Err(no_device_error(off))) })
    }

    fn write(&self, off: u64, buf: IoBuf, _fua: bool) -> DevFuture<'_, BufResult> {
        Box::pin(async move { (buf, Err(no_device_error(off))) })
    }

    fn flush(&self) -> DevFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

fn no_device_error(off: u64) -> Error {
    Error::new(ErrorKind::Unavailable, format!("no device at {off}"))
}

/// One slot of a group without its diversion (see [`RaidDev::slot_dev`]).
struct SlotDev {
    raid: Weak<RaidDev>,
    idx: usize,
    size: u64,
    block_size: u32,
}

impl SlotDev {
    fn raid(&self) -> Result<Arc<RaidDev>> {
        self.raid
            .upgrade()
            .ok_or_else(|| Error::new(ErrorKind::Unavailable, "the RAID group is closed"))
    }
}

impl BlockDev for SlotDev {
    fn size(&self) -> u64 {
        self.size
    }

    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
        Box::pin(async move {
            match self.raid() {
                Ok(r) => r.read_slot_direct(self.idx, off, buf, false).await,
                Err(e) => (buf, Err(e)),
            }
        })
    }

    fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        Box::pin(async move {
            let r = match self.raid() {
                Ok(r) => r,
                Err(e) => return (buf, Err(e)),
            };
            let (buf, failed) = r.write_slot_direct(self.idx, off, buf, fua).await;
            let res = r.absorb(failed).await;
            (buf, res)
        })
    }

    fn flush(&self) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            let r = self.raid()?;
            let devs = r.members.targets(self.idx);
            let mut failed = Vec::new();
            for d in devs {
                if let Err(e) = d.flush().await {
                    failed.push((self.idx, d, e));
                }
            }
            r.absorb(failed).await
        })
    }

    fn discard(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            let r = self.raid()?;
            let failed = r
                .zero_slot_direct(self.idx, off, len, ZeroFlags::default(), true)
                .await;
            r.absorb(failed).await
        })
    }

    fn write_zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            let r = self.raid()?;
            let failed = r.zero_slot_direct(self.idx, off, len, flags, false).await;
            r.absorb(failed).await
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
