//! Online restriping (seed 004, EMC, "Method and apparatus for
//! reconfiguring striped logical devices"): a group's layout changes —
//! more disks, another stripe size, or both — while hosts keep using its
//! volumes, with a pause of milliseconds at the switch.
//!
//! ```text
//!   before the switch            the switch (host I/O paused,         after the switch
//!   (FIG. 4A steps 101-113)      no data moved: steps 114-120)        (FIGS. 5-7)
//!
//!   volumes ── Establish ──┐     drain, activate the new layout,      volumes ── Reshape ── new layout
//!             main ◄───────┤     start the instant split and the                    │ not valid yet:
//!             BCV ◄────────┘     transfer, resume                                   └── BCV (old layout)
//! ```
//!
//! This module is the data path's part: [`Establish`] makes the BCV (the
//! replicated copy of the group in its original configuration) while
//! hosts write; [`Reshape`] serves the group in its new configuration and
//! moves each track from the BCV to its new place, in the background or
//! first when a host touches it. Records, the switch and the jobs are the
//! engine's.

#![forbid(unsafe_code)]

pub mod establish;
pub mod node;

pub use establish::Establish;
pub use node::{Lists, Moved, Reshape};

#[cfg(test)]
mod tests;
