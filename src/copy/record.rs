//! The persisted form of a copy family: the tree and the images. Node maps
//! are stored separately as pages of entries keyed by (node id, page) —
//! see `copy/page.rs` — and the store's chunks and the nodes' load-point
//! areas as rows of their own (`meta`, tables `copy_chunks` and
//! `copy_areas`), each saved when it changes ([`FamilySave`]).

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

use super::family::{Head, Image, NodeId, NodeKind};
use super::map::{Area, Scheme};
use super::store::Chunk;
use crate::engine::types::CopyMode;

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
    pub mode: CopyMode,
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

impl From<&Image> for ImageRecord {
    fn from(i: &Image) -> ImageRecord {
        ImageRecord {
            name: i.name.clone(),
            head: i.head,
            source: i.source.clone(),
            scheme: i.scheme,
            created: i.created,
        }
    }
}

impl From<&ImageRecord> for Image {
    fn from(i: &ImageRecord) -> Image {
        Image {
            name: i.name.clone(),
            head: i.head,
            source: i.source.clone(),
            scheme: i.scheme,
            created: i.created,
        }
    }
}

/// What one save of a family stores, in one transaction.
#[derive(Debug, Clone)]
pub struct FamilySave {
    /// The record (chunks and areas empty); stored only if `put_rec`.
    pub rec: FamilyRecord,
    /// Whether the record changed since the last save.
    pub put_rec: bool,
    /// Chunks added (`Some`) or given back (`None`), by first slot.
    pub chunks: Vec<(u64, Option<Chunk>)>,
    /// Areas reserved (`Some(slots)`) or given back (`None`): (node, first
    /// slot, slots).
    pub areas: Vec<(NodeId, u64, Option<u64>)>,
    /// Pages of node maps: (node, page, bytes; an all-zero page deletes).
    pub pages: Vec<(NodeId, u64, Vec<u8>)>,
    /// Nodes removed: their pages and areas are deleted.
    pub dropped: Vec<NodeId>,
}
