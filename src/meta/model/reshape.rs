//! Records of online restriping (seed 004, EMC, "Reconfiguring striped
//! logical devices"): one session per group being restriped.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

/// Where a restripe is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReshapePhase {
    /// ESTABLISH (FIG. 4A steps 101-113): the BCV is being copied while
    /// the group serves in its original layout (the group record's).
    Establish,
    /// After the switch (steps 114-120): the group record holds the new
    /// layout; tracks move from the BCV (FIGS. 5-7).
    Transfer,
}

/// One restripe of group `group`, stored when it starts and deleted when
/// every track is in its new place and the BCV is released (step 124).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReshapeRecord {
    pub group: String,
    /// The session's PB column (0..16, seed 004's PB header 89).
    pub column: u8,
    pub phase: ReshapePhase,
    /// The original layout: stripe, member sizes and disks by slot.
    pub old_stripe: u64,
    pub old_member_sizes: Vec<u64>,
    pub old_disks: Vec<String>,
    /// The group's size in its original layout.
    pub old_size: u64,
    /// The new layout: the stripe, and the disks appended as new slots.
    pub new_stripe: u64,
    pub added: Vec<String>,
    pub new_member_sizes: Vec<u64>,
    /// The BCV's disks, one per original slot, in slot order.
    pub bcv_disks: Vec<String>,
    /// Bytes per track of the lists (the new layout's lock grain).
    pub track: u64,
    /// Objects of the PB, IND and PS bitmaps (pages in the pool database).
    pub pb: u64,
    pub ind: u64,
    pub ps: u64,
    /// The job of the phase (the copy, then the transfer).
    pub job: u64,
    /// Host I/O paused at the switch, microseconds (0 before it).
    #[serde(default)]
    pub pause_us: u64,
    pub created: u64,
}
