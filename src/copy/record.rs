//! The persisted form of a copy family: the tree and the images. Node maps
//! are stored separately as pages of entries keyed by (node id, page) —
//! see `copy/page.rs` — and the store's chunks and the nodes' load-point
//! areas as rows of their own (`meta`, tables `copy_chunks` and
//! `copy_areas`), each saved when it changes ([`FamilySave`]).

#![forbid(unsafe_code)]

use super::family::{Image, NodeId};
use super::store::Chunk;
pub use crate::meta::model::copy::{FamilyRecord, ImageRecord, NodeRecord, RestoreRecord};

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
    /// Slots this save frees, whose labels the next save describes free
    /// (`copy/describe.rs`), and slots this save's labels described free.
    pub unfreed: Vec<u64>,
    pub described_free: Vec<u64>,
}
