//! Online restriping's request and view (seed 004): `group reshape` and
//! `group reshape-status`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::limits::{Name, StripeSize};
use crate::json::whole_opt;

/// `group reshape G [--add-disks d4,d5] [--stripe-size S] --bcv-disks
/// b1,b2,b3`: the group's new stripe, and the disks its copy in the
/// original layout is made on (one per member, each at least the
/// member's size; free again when the restripe ends).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReshapeRequest {
    /// Free disks to add as new members.
    #[serde(default)]
    #[schema(value_type = Vec<Name>)]
    pub add_disks: Vec<String>,
    /// The new stripe size; default: unchanged.
    #[serde(default, deserialize_with = "whole_opt")]
    #[schema(value_type = Option<StripeSize>)]
    pub stripe_size: Option<u64>,
    /// Free disks for the copy (the BCV), one per member, in slot order.
    #[schema(value_type = Vec<Name>, min_items = 1)]
    pub bcv_disks: Vec<String>,
}

/// A layout of a restripe.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReshapeLayout {
    pub stripe_size: u64,
    /// Disks by slot.
    pub disks: Vec<String>,
    /// The group's bytes in this layout.
    pub size: u64,
}

/// A restripe under way.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReshapeInfo {
    pub group: String,
    /// establish (the copy onto the BCV disks, the original layout
    /// serving) or transfer (the new layout serving, tracks moving).
    pub phase: String,
    /// The session's column of the PB list (0-15).
    pub session: u8,
    pub old: ReshapeLayout,
    pub new: ReshapeLayout,
    pub bcv_disks: Vec<String>,
    /// The job of the phase (`ferrosan job show`, `job pause`).
    pub job: u64,
    /// Bytes per track of the lists.
    pub track_size: u64,
    /// Bytes of the group on the BCV disks so far.
    pub copied: u64,
    /// Tracks of the new layout, and those not in their place yet.
    pub tracks: u64,
    pub tracks_left: u64,
    /// Bits set in the PB, IND and PS lists, as stored.
    pub pb: u64,
    pub ind: u64,
    pub ps: u64,
    /// Tracks moved by the background, first for a host request, written
    /// whole by a host (no copy), and new tracks zeroed.
    pub moved_background: u64,
    pub moved_on_demand: u64,
    pub overwritten: u64,
    pub zeroed: u64,
    /// Host I/O paused at the switch, microseconds (0 before it).
    pub pause_us: u64,
}
