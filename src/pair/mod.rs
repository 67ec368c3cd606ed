//! Mirror pairs: a P-VOL and a full, independent S-VOL kept in sync, split
//! at an instant into a usable point-in-time image, resynchronised by
//! copying only the tracks that changed (seed 002, table T2 of FIG. 3A/3B:
//! "primary vol#, secondary vol#, pairing status, differential bitmap";
//! the S-VOLs of seed 003 are made this way).
//!
//! ```text
//!   P-VOL Switch ──> PairDev(P) ─┐                 ┌─> P-VOL's VolumeDev
//!                                ├─> Pair: status, ┤
//!   S-VOL Switch ──> PairDev(S) ─┘   DiffMap,      └─> S-VOL's VolumeDev
//!                                    track locks
//! ```
//!
//! This module is the data path's part (`dev.rs`): what a host read or
//! write of either volume does in each status, and the copier that a
//! resync or restore job drives track by track. Records, commands and jobs
//! are the engine's.

#![forbid(unsafe_code)]

pub mod dev;
pub mod group;
mod incr;
mod recover;

pub use dev::{Pair, PairDev, Side, Status};

#[cfg(test)]
mod tests;
