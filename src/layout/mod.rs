//! layout: the pure address math of RAID groups: concat, raid0, n-way
//! raid1 and raid5 with rotating parity. No I/O happens here.
//!
//! A group's address space is cut into pieces, each a run of bytes on one
//! member disk:
//!
//! ```text
//!  concat  |--- member 0 ---|--- member 1 ------|-- member 2 --|
//!
//!  raid0   (n = 3, S = stripe size)     member 0  member 1  member 2
//!          row 0 (member off 0..S)        c0        c1        c2
//!          row 1 (member off S..2S)       c3        c4        c5
//!
//!  raid1   every leg holds the whole address space at the same offset
//!
//!  raid5   (n = 4, left-symmetric: md's default)
//!                       member 0  member 1  member 2  member 3
//!          row 0          D0        D1        D2        P
//!          row 1          D4        D5        P         D3
//!          row 2          D8        P         D6        D7
//!          row 3          P         D9        D10       D11
//! ```
//!
//! Words, as in the seeds: a *strip* is `stripe size` bytes on one member;
//! a *row* (stripe row) is the strips at the same member offset on every
//! member; a *piece* is the part of a request that falls in one strip (or,
//! for concat, on one member). Rebuild and resync count progress in rows:
//! row `r` is member offsets `r*S .. (r+1)*S` on every member.
//!
//! Every size is checked at construction ([`Layout::new`]); mapping uses
//! checked arithmetic and never panics.

#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::as_conversions, clippy::cast_possible_truncation)
)]

mod geometry;
mod pieces;

pub use geometry::{DEFAULT_STRIPE, Layout, MAX_MEMBERS, MIN_STRIPE, RaidLevel, Role};
pub use pieces::{Piece, Pieces};

#[cfg(test)]
mod tests;
