//! S-VOL groups' records (seed 003, FIG. 9: S-VOL group management table
//! 900 — GrpID, LID, Attr, PID, RLID; FIG. 12: table 1200 adds Freq, which
//! is counted in memory; FIG. 13: table 1300, the increments' block ids,
//! is stored as pages of the RW member's object, [`crate::meta::diffmap`]).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A member's attribute (table 900's Attr; table 1200 shows a spare's as
/// "—": no host access).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SvolAttr {
    /// Read-only: write-inhibited, holds the split image.
    Ro,
    /// Read and write: its writes since the split are its increments.
    Rw,
    /// Not host-accessible until it replaces a member.
    Spare,
}

impl SvolAttr {
    pub fn name(self) -> &'static str {
        match self {
            SvolAttr::Ro => "RO",
            SvolAttr::Rw => "RW",
            SvolAttr::Spare => "SPARE",
        }
    }
}

/// One LID of a group: a member, a spare or an increments volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SvolMemberRecord {
    /// The logical volume (the volume's name; its export).
    pub lid: String,
    pub attr: SvolAttr,
    /// The volume whose storage holds the LID's data now (the LID's own
    /// at first).
    pub pid: String,
    /// An RW member's increments volume (DLV).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlid: Option<String>,
    /// An RW member's table 1300 (object of its block-id bitmap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bids: Option<u64>,
    /// An RW member's write-intent log (member and DLV written at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<u64>,
    /// Failed (too many errors): no I/O goes to its PID.
    #[serde(default)]
    pub failed: bool,
    /// An RW member whose increments volume failed a write: the member
    /// holds the increments alone, the DLV is not used.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dlv_failed: bool,
}

/// One S-VOL group: split S-VOLs of one P-VOL used as one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SvolGroupRecord {
    /// GrpID.
    pub name: String,
    pub pvol: String,
    /// Members (RO, RW) and spares, in the order given at creation.
    pub members: Vec<SvolMemberRecord>,
    /// Bytes per block id (the P-VOL's track).
    pub block: u64,
    /// Unix seconds of the split that made the image.
    pub split_at: u64,
    pub created: u64,
    /// A copy of the group's image back onto the P-VOL, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_pvol: Option<ToPvolRecord>,
}

/// `svol-group restore --to-pvol`: the pair of an RO member restores the
/// P-VOL one way (the member is not written; hosts keep reading it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToPvolRecord {
    /// The RO member (LID) whose image is copied.
    pub lid: String,
    /// Its physical volume: the S-VOL of the pair that restores.
    pub svol: String,
    /// The object of the after map (tracks hosts wrote on the P-VOL
    /// during the restore).
    pub after: u64,
    /// The restore is done and the pair split again; the after map is
    /// being merged into its differential bitmap.
    #[serde(default)]
    pub merging: bool,
}
