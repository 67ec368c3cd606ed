//! Mirror pairs' requests and views: `pair list` is seed 002's table T2
//! (P-VOL, S-VOL, pairing status, differential bitmap).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::limits::Name;
use crate::json::whole_opt;
pub use crate::meta::model::PairStatus;

/// `pair create PVOL SVOL`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairCreateRequest {
    /// The primary volume: stays in use while the S-VOL is filled.
    #[schema(value_type = Name)]
    pub pvol: String,
    /// The secondary volume, the same size: its data is replaced by the
    /// P-VOL's.
    #[schema(value_type = Name)]
    pub svol: String,
    /// A consistency group: `pair split --group` splits all its pairs at
    /// one instant.
    #[schema(value_type = Option<Name>)]
    pub group: Option<String>,
    /// Replace an S-VOL that holds data (refused without it).
    #[serde(default)]
    pub overwrite: bool,
    /// Rate limit of the initial copy in bytes/s (`job rate` changes it);
    /// none or 0: unlimited.
    #[serde(default, deserialize_with = "whole_opt")]
    pub rate: Option<u64>,
}

/// `pair resync` and `pair restore`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairCopyRequest {
    /// Rate limit of the copy in bytes/s (`job rate` changes it); none or
    /// 0: unlimited.
    #[serde(default, deserialize_with = "whole_opt")]
    pub rate: Option<u64>,
}

/// `pair split --group CG`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairGroupSplitRequest {
    #[schema(value_type = Name)]
    pub group: String,
}

/// One pair: a row of table T2.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PairInfo {
    pub pvol: String,
    pub svol: String,
    pub status: PairStatus,
    /// The consistency group, if any.
    pub group: Option<String>,
    /// Bytes per bit of the differential bitmap.
    pub track_size: u64,
    pub tracks: u64,
    /// Tracks whose bit is set: written on either side since the split,
    /// or still to copy.
    pub tracks_set: u64,
    /// `tracks_set` as a share of `tracks` (0 to 1).
    pub share_set: f64,
    /// The bitmap, one character per track (or per bucket of tracks on a
    /// large volume): `1` where a bit is set.
    pub bitmap: String,
    /// The copy job running for the pair, if any.
    pub job: Option<u64>,
    /// Writes whose S-VOL side failed since the daemon started (their
    /// tracks are marked for the next resync).
    pub svol_errors: u64,
    pub created: u64,
    /// When the pair was last split, while split.
    pub split_at: Option<u64>,
}
