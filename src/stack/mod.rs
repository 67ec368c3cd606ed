//! stack: the block-device trait and the nodes that compose volumes.
//!
//! Every node of a volume stack — disk, RAID group, volume slice, and later
//! copies, mirrors and reshapes — implements [`BlockDev`]; the NBD server
//! is generic over it. Nodes compose like device-mapper targets.

mod dev;
pub mod gate;
pub mod grain;
pub mod intent;
pub mod lock;
pub mod raid;
pub mod switch;
pub mod volume;

pub use dev::{
    BlockDev, BufResult, DevFuture, Extent, ZeroFlags, coalesce, read_vec, status, write_slice,
    write_zeroes_by_writing,
};
pub use intent::{IntentGuard, MemIntent, NoIntent, WriteIntent};
pub use raid::{Health, MemberState, NoHooks, RaidDev, RaidHooks};
