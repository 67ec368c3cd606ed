//! The persisted form of a copy family (seeds 000/001): the tree and the
//! images, the store's chunks and the nodes' reserved areas, and the enums
//! they hold. Node maps are stored as pages of entries keyed by (node id,
//! page) — see `copy/page.rs` — and chunks and areas as rows of their own
//! (tables `copy_chunks` and `copy_areas`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A node of a family's copy tree: a pool object id.
pub type NodeId = u64;

/// A reserved run of slots: (first slot, count).
pub type Area = (u64, u64);

/// How an instant copy keeps the two images apart (seed 000/001 FIG. 17).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CopyMode {
    /// A1, "old data to new memory space": before a source track is first
    /// overwritten, its old contents go to new space for the copy.
    Cow,
    /// A2, "new data to new memory space": new writes of either image go
    /// to new space; the initial area stays as it was.
    Row,
}

impl std::fmt::Display for CopyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CopyMode::Cow => "cow",
            CopyMode::Row => "row",
        })
    }
}

impl std::str::FromStr for CopyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "cow" | "a1" => Ok(CopyMode::Cow),
            "row" | "a2" => Ok(CopyMode::Row),
            other => Err(format!("unknown copy mode {other:?}: use cow or row")),
        }
    }
}

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// An image's own new data; the only kind written by hosts.
    Leaf,
    /// A leaf frozen at a copy point: shared, never written again.
    Frozen,
    /// A1: old data of the base preserved for the copies taken at one copy
    /// point, as the origin overwrote it.
    View,
}

/// Where an image starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "head", content = "node")]
pub enum Head {
    /// A1 origin: the base itself.
    Base,
    Leaf(NodeId),
}

/// The five metadata schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    FullPointer,
    ChangedPointer,
    Bitmap,
    MultilevelBitmap,
    PartialBitmap,
}

impl Scheme {
    pub const ALL: [Scheme; 5] = [
        Scheme::FullPointer,
        Scheme::ChangedPointer,
        Scheme::Bitmap,
        Scheme::MultilevelBitmap,
        Scheme::PartialBitmap,
    ];

    /// Load point & offset: each track's slot is fixed by the map.
    pub fn load_point(self) -> bool {
        matches!(
            self,
            Scheme::Bitmap | Scheme::MultilevelBitmap | Scheme::PartialBitmap
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Scheme::FullPointer => "full-pointer",
            Scheme::ChangedPointer => "changed-pointer",
            Scheme::Bitmap => "bitmap",
            Scheme::MultilevelBitmap => "multilevel-bitmap",
            Scheme::PartialBitmap => "partial-bitmap",
        }
    }
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Scheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Scheme, String> {
        Scheme::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown metadata scheme {s:?}: use full-pointer, changed-pointer, bitmap, multilevel-bitmap or partial-bitmap"
                )
            })
    }
}

/// One chunk of the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub first_slot: u64,
    /// Group offset of the first slot.
    pub group_off: u64,
    pub slots: u64,
    /// Bytes of the chunk's label before its first slot (`copy/label.rs`);
    /// 0 for chunks made before stores described themselves.
    #[serde(default)]
    pub head: u64,
}

/// One node of the copy tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    pub parent: Option<NodeId>,
    pub kind: NodeKind,
    pub scheme: Scheme,
    /// Areas a load-point map reserved (load points): only in records
    /// of pool format 1; since format 2 they are rows of their own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub areas: Vec<Area>,
    pub invalid: bool,
}

/// An A1 restore in progress: the origin shows node `from`'s image; the
/// tracks still to copy are pages of object `pending_object`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRecord {
    pub from: NodeId,
    pub copy: String,
    pub job: u64,
    pub pending: Vec<(u64, u64)>,
}

/// A copy family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyRecord {
    pub object: u64,
    /// How the family works now (a split or a fold turns an A2 family
    /// into A1).
    pub mode: CopyMode,
    /// The mode its copies were made with, as the user sees it (absent in
    /// records written before it was kept: then `mode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked: Option<CopyMode>,
    /// The image holding the initial area.
    pub origin: String,
    /// The group the new space comes from.
    pub group: String,
    pub track_size: u64,
    pub tracks: u64,
    /// The store's chunks: only in records of pool format 1; since
    /// format 2 they are rows of their own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<Chunk>,
    pub nodes: Vec<NodeRecord>,
    pub images: Vec<ImageRecord>,
    pub newest_view: Option<NodeId>,
    pub restore: Option<RestoreRecord>,
}

/// An image of the family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub name: String,
    pub head: Head,
    pub source: Option<String>,
    pub scheme: Scheme,
    pub created: u64,
}
