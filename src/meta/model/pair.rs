//! Mirror pairs' records: the rows of seed 002's table T2 (FIG. 3A/3B:
//! "primary vol#, secondary vol#, pairing status, differential bitmap").
//! The bitmap itself is stored as pages of the pair's object
//! ([`crate::meta::diffmap`]).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A pair's status (T2's "pairing status"; `PAIR` is the seed's DUPLEX).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PairStatus {
    /// The initial copy, P-VOL to S-VOL.
    Copy,
    /// In sync: every write reaches both volumes before it is answered.
    Pair,
    /// Two independent images; writes to either mark the bitmap.
    Split,
    /// Copying the marked tracks P-VOL to S-VOL.
    Resync,
    /// Copying the marked tracks S-VOL to P-VOL, the P-VOL in use.
    Restore,
}

impl PairStatus {
    /// The name tables show.
    pub fn name(self) -> &'static str {
        match self {
            PairStatus::Copy => "COPY",
            PairStatus::Pair => "PAIR",
            PairStatus::Split => "SPLIT",
            PairStatus::Resync => "RESYNC",
            PairStatus::Restore => "RESTORE",
        }
    }

    /// Whether a copier runs in this status (and which way: RESTORE copies
    /// S-VOL to P-VOL).
    pub fn copying(self) -> bool {
        matches!(
            self,
            PairStatus::Copy | PairStatus::Resync | PairStatus::Restore
        )
    }
}

/// One pair: a row of table T2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairRecord {
    /// The pair's object id: its differential bitmap's pages.
    pub object: u64,
    /// The object id of the pair's write-intent log (regions written to
    /// both sides; at a start, marked regions become set bits).
    pub intent: u64,
    pub pvol: String,
    pub svol: String,
    pub status: PairStatus,
    /// Bytes per bit of the differential bitmap.
    pub track: u64,
    /// The consistency group the pair belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Unix seconds of the pair's creation.
    pub created: u64,
    /// Unix seconds of the last split, while split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_at: Option<u64>,
}
