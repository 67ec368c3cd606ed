//! stack: the nodes that compose volumes.
//!
//! Every node of a volume stack — RAID group, volume slice, the switch at
//! the top, and later mirrors and reshapes — implements
//! [`crate::blockdev::BlockDev`]; nodes compose like device-mapper
//! targets.

#![forbid(unsafe_code)]

pub mod gate;
pub mod grain;
pub mod lock;
pub mod raid;
pub mod switch;
pub mod volume;

pub use raid::{Health, MemberState, NoHooks, RaidDev, RaidHooks};
