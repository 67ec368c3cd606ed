//! disk: the bottom of every volume stack.
//!
//! ```text
//!   Counted ──> [FaultDisk, with --fault-injection] ──> FileDisk ──> io_uring ring
//!                                                                └─> sync engine
//! ```
//!
//! A [`FileDisk`] is a file or block device with a [`label`] and a data
//! area, driven with O_DIRECT through this thread's io_uring ring
//! ([`uring`]) or the blocking pool (`sync.rs`). [`Counted`] keeps the
//! per-disk counters `disk list` shows; [`FaultDisk`] injects errors for
//! drills and tests; [`MemDisk`] is the in-memory reference disk of the
//! model and crash tests. `unsafe` is confined to this layer and `buf`.

mod counters;
mod fault;
mod file;
pub mod identity;
mod inline;
pub mod label;
mod mem;
mod sync;
pub mod uring;

pub use counters::{Counted, CounterSnapshot, DiskCounters};
pub use fault::{FaultDisk, FaultRules};
pub use file::{FileDisk, OpenOptions};
pub use identity::Identity;
pub use inline::{read_at, write_at};
pub use label::{DATA_OFFSET, Label};
pub use mem::MemDisk;
