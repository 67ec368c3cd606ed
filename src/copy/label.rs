//! The store's self-description on disk (seed 000 FIG. 13: each stripe of
//! the log-structured array carries a header naming the virtual tracks its
//! units hold, so the structure can be checked and rebuilt from the disks).
//!
//! Every chunk of a copy store begins with a *label*: one head block, then
//! one descriptor per slot, then the slots themselves.
//!
//! ```text
//!   chunk in the group (allocated at A)
//!   ┌──────────┬──────────┬─ ─ ─┬──────────┬──────┬──────┬─ ─ ─┐
//!   │ head     │ desc     │     │ desc     │ pad  │ slot │ slot │
//!   │ block    │ block 0  │     │ block k  │      │ s0   │ s1   │
//!   └──────────┴──────────┴─ ─ ─┴──────────┴──────┴──────┴─ ─ ─┘
//!   A          A+4096     A+4096·(1+b)            A + head bytes (track-aligned)
//! ```
//!
//! All integers little-endian, blocks of [`BLOCK`] bytes.
//!
//! Head block:
//!
//! ```text
//!   offset size field
//!   0      8    magic       "FSCHUNK1"
//!   8      4    crc32c      of bytes 12..4096
//!   12     4    zero
//!   16     8    family      the copy family's pool object id
//!   24     8    first_slot  slot id of s0
//!   32     8    slots
//!   40     8    track       bytes per slot
//!   48     8    head_bytes  where s0 starts, from A
//!   56     8    generation  when the label was first written
//!   64..4096    zero
//! ```
//!
//! Descriptor block `b` (slots `first_slot + b·101 ..`):
//!
//! ```text
//!   0      8    magic       "FSDESCR1"
//!   8      4    crc32c      of bytes 12..4096
//!   12     4    zero
//!   16     8    family
//!   24     8    first slot of the block
//!   32 + 40·i   descriptor of slot first + i, i in 0..101:
//!     +0   8    node        copy tree node holding the slot; 0 = free
//!     +8   8    track       virtual track it holds; u64::MAX = reserved
//!                           (an area's slot not yet written)
//!     +16  8    valid       granule mask of the track's data in the slot
//!     +24  8    area        first slot of the node's area holding it;
//!                           u64::MAX = a single slot
//!     +32  8    generation  when this descriptor was written
//! ```
//!
//! Descriptors are written at the metadata commit that makes their slots'
//! entries durable, after the data's flush and before the commit is
//! acknowledged (`image.rs`); a slot freed is described free one commit
//! later (its freeing is durable by then). Where two slots claim one track
//! of one node, the higher generation is the track's.

#![forbid(unsafe_code)]

use crate::error::{Error, Result};

/// Bytes per label block.
pub const BLOCK: u64 = 4096;
/// Descriptors per descriptor block.
pub const PER_BLOCK: u64 = 101;
const HEAD_MAGIC: &[u8; 8] = b"FSCHUNK1";
const DESC_MAGIC: &[u8; 8] = b"FSDESCR1";
const DESC_BYTES: usize = 40;
const DESC_START: usize = 32;
/// `track` of a reserved slot, `area` of a single slot.
pub const NONE: u64 = u64::MAX;

/// What a chunk's head block says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHead {
    pub family: u64,
    pub first_slot: u64,
    pub slots: u64,
    pub track: u64,
    pub head_bytes: u64,
    pub generation: u64,
}

/// What one slot's descriptor says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Desc {
    /// The node holding the slot; 0 when the slot is free.
    pub node: u64,
    /// The track it holds, or [`NONE`] (reserved in an area, unwritten).
    pub track: u64,
    pub valid: u64,
    /// First slot of the node's area holding it, or [`NONE`].
    pub area: u64,
    pub generation: u64,
}

impl Desc {
    pub const FREE: Desc = Desc {
        node: 0,
        track: NONE,
        valid: 0,
        area: NONE,
        generation: 0,
    };

    pub fn is_free(&self) -> bool {
        self.node == 0
    }
}

/// Bytes of a chunk's label for `slots` slots of `track` bytes: whole
/// tracks, so the slots stay track-aligned.
pub fn head_bytes(slots: u64, track: u64) -> u64 {
    let blocks = 1 + slots.div_ceil(PER_BLOCK);
    (blocks * BLOCK).div_ceil(track.max(1)) * track.max(1)
}

/// Byte offset, from the chunk's start, of the descriptor block holding
/// slot `i` of the chunk (0-based), and the index within it.
pub fn desc_place(i: u64) -> (u64, usize) {
    let b = i / PER_BLOCK;
    (BLOCK * (1 + b), usize::try_from(i % PER_BLOCK).unwrap_or(0))
}

fn put(out: &mut [u8], at: usize, v: u64) {
    if let Some(d) = out.get_mut(at..at + 8) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

fn get(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

fn seal(out: &mut [u8]) {
    let crc = crc32c::crc32c(out.get(12..).unwrap_or(&[]));
    if let Some(d) = out.get_mut(8..12) {
        d.copy_from_slice(&crc.to_le_bytes());
    }
}

/// Whether `b` starts with `magic`: `Ok(false)` if not (never written, or
/// other data), `Err` if it does but the checksum is wrong.
fn sealed(b: &[u8], magic: &[u8; 8], what: &str) -> Result<bool> {
    if b.len() != BLOCK as usize || b.get(..8) != Some(magic.as_slice()) {
        return Ok(false);
    }
    let stored = b
        .get(8..12)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0);
    if crc32c::crc32c(b.get(12..).unwrap_or(&[])) != stored {
        return Err(Error::corrupt(format!("{what}: checksum mismatch")));
    }
    Ok(true)
}

/// The head block of a chunk.
pub fn encode_head(h: &ChunkHead) -> Vec<u8> {
    let mut out = vec![0u8; BLOCK as usize];
    if let Some(d) = out.get_mut(..8) {
        d.copy_from_slice(HEAD_MAGIC);
    }
    for (i, v) in [
        h.family,
        h.first_slot,
        h.slots,
        h.track,
        h.head_bytes,
        h.generation,
    ]
    .into_iter()
    .enumerate()
    {
        put(&mut out, 16 + 8 * i, v);
    }
    seal(&mut out);
    out
}

/// A chunk's head block: `Ok(None)` if `b` is none, `Err` if it is one
/// with a wrong checksum or impossible fields.
pub fn decode_head(b: &[u8]) -> Result<Option<ChunkHead>> {
    if !sealed(b, HEAD_MAGIC, "chunk label")? {
        return Ok(None);
    }
    let h = ChunkHead {
        family: get(b, 16),
        first_slot: get(b, 24),
        slots: get(b, 32),
        track: get(b, 40),
        head_bytes: get(b, 48),
        generation: get(b, 56),
    };
    if h.slots == 0 || h.track == 0 || h.head_bytes != head_bytes(h.slots, h.track) {
        return Err(Error::corrupt(format!(
            "chunk label of slot {}: {} slots of {} bytes cannot have a {}-byte label",
            h.first_slot, h.slots, h.track, h.head_bytes
        )));
    }
    Ok(Some(h))
}

/// A descriptor block of family `family` starting at slot `first`.
pub fn encode_block(family: u64, first: u64, descs: &[Desc]) -> Vec<u8> {
    let mut out = vec![0u8; BLOCK as usize];
    if let Some(d) = out.get_mut(..8) {
        d.copy_from_slice(DESC_MAGIC);
    }
    put(&mut out, 16, family);
    put(&mut out, 24, first);
    for (i, d) in descs.iter().take(PER_BLOCK as usize).enumerate() {
        let at = DESC_START + DESC_BYTES * i;
        for (k, v) in [d.node, d.track, d.valid, d.area, d.generation]
            .into_iter()
            .enumerate()
        {
            put(&mut out, at + 8 * k, v);
        }
    }
    seal(&mut out);
    out
}

/// The descriptors of a block expected to be family `family`'s block
/// starting at slot `first`: `Ok(None)` if `b` is no descriptor block
/// (never written), `Err` if it is damaged or another's.
pub fn decode_block(family: u64, first: u64, b: &[u8]) -> Result<Option<Vec<Desc>>> {
    let what = format!("descriptor block of slot {first}");
    if !sealed(b, DESC_MAGIC, &what)? {
        return Ok(None);
    }
    if get(b, 16) != family || get(b, 24) != first {
        return Err(Error::corrupt(format!(
            "{what} names family {} and slot {}",
            get(b, 16),
            get(b, 24)
        )));
    }
    let descs = (0..PER_BLOCK as usize)
        .map(|i| {
            let at = DESC_START + DESC_BYTES * i;
            Desc {
                node: get(b, at),
                track: get(b, at + 8),
                valid: get(b, at + 16),
                area: get(b, at + 24),
                generation: get(b, at + 32),
            }
        })
        .collect();
    Ok(Some(descs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_damage_is_named() {
        let h = ChunkHead {
            family: 7,
            first_slot: 1024,
            slots: 1024,
            track: 65536,
            head_bytes: head_bytes(1024, 65536),
            generation: 99,
        };
        assert_eq!(h.head_bytes, 65536);
        let mut b = encode_head(&h);
        assert_eq!(decode_head(&b).unwrap(), Some(h));
        assert_eq!(decode_head(&vec![0u8; 4096]).unwrap(), None);
        b[100] ^= 1;
        let e = decode_head(&b).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");

        let d = Desc {
            node: 3,
            track: 17,
            valid: 0b1011,
            area: NONE,
            generation: 5,
        };
        let mut descs = vec![Desc::FREE; PER_BLOCK as usize];
        descs[4] = d;
        let b = encode_block(7, 202, &descs);
        let back = decode_block(7, 202, &b).unwrap().unwrap();
        assert_eq!(back[4], d);
        assert!(back[5].is_free());
        let e = decode_block(7, 303, &b).unwrap_err();
        assert!(e.to_string().contains("names family 7 and slot 202"), "{e}");
        assert_eq!(decode_block(7, 202, &vec![0u8; 4096]).unwrap(), None);
        assert_eq!(desc_place(0), (4096, 0));
        assert_eq!(desc_place(101), (8192, 0));
        assert_eq!(desc_place(205), (8192 + 4096, 3));
    }
}
