//! blockdev: the one block-device trait, at the bottom of the layers.
//!
//! ```text
//!   nbd ──> stack nodes (raid, volume, switch, copy images) ──> disk
//!     \________________ all speak BlockDev ______________________/
//! ```
//!
//! Every node of a volume stack — a disk, a RAID group, a volume slice, an
//! instant copy's image, and later mirrors and reshapes — implements
//! [`BlockDev`]; the NBD server is generic over it. It lives below both
//! `disk` and `stack` so that neither imports the other for it.
//! [`WriteIntent`] is the interface between redundant nodes and the
//! metadata that persists their write-intent marks (DESIGN rule 2).

#![forbid(unsafe_code)]

mod dev;
mod intent;
pub mod probe;

pub use dev::{
    BlockDev, BufResult, ChangeMap, DevFuture, Extent, ZeroFlags, aligned, coalesce, read_vec,
    status, unaligned, write_slice, write_zeroes_by_writing,
};
pub use intent::{EndWrite, IntentGuard, MemIntent, NoIntent, WriteIntent, begin_write};
