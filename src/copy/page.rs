//! Persisted pages of a track map (DESIGN "Metadata and crash
//! consistency": per-track structures are stored as fixed-size pages keyed
//! by (object, page)). Every scheme persists the same way: page `p` holds
//! the entries of tracks `[p * 256, p * 256 + 256)` as `map.get` gives
//! them; the reserved areas are stored beside the pages by the caller and
//! both go back into [`crate::copy::maps::restore_map`].
//!
//! Byte layout, little-endian only, 4096 bytes:
//!
//! ```text
//!   offset              size  field
//!   i * ENTRY_BYTES           entry of track p * 256 + i, i in 0..256:
//!     + SLOT_CODE_OFFSET   8    slot_code  u64 LE  0 = no entry,
//!                                                  u64::MAX = ZERO_SLOT,
//!                                                  else slot + 1
//!     + VALID_OFFSET       8    valid      u64 LE  granule mask; 0 iff
//!                                                  slot_code is 0
//!   ENTRY_BYTES = 16, PAGE_BYTES = 256 * 16 = 4096
//! ```
//!
//! A page of no entries is all zeroes ([`is_empty_page`]): the caller may
//! delete it instead of storing it. Tracks of the last page beyond the map
//! encode as no entry.

#![forbid(unsafe_code)]

use super::map::{Entry, PAGE_ENTRIES, TrackMap, ZERO_SLOT};
use crate::error::{Error, Result};

/// Offset of `slot_code` within an entry.
pub const SLOT_CODE_OFFSET: usize = 0;
/// Offset of `valid` within an entry.
pub const VALID_OFFSET: usize = SLOT_CODE_OFFSET + 8;
/// Bytes per entry.
pub const ENTRY_BYTES: usize = VALID_OFFSET + 8;
/// Bytes per page.
pub const PAGE_BYTES: usize = ENTRY_BYTES * PAGE_ENTRIES as usize;

/// `slot_code` of "no entry".
const NO_ENTRY: u64 = 0;
/// `slot_code` of [`ZERO_SLOT`].
const ZERO_CODE: u64 = u64::MAX;

/// Encodes page `page` of `map`.
pub fn encode_page(map: &dyn TrackMap, page: u64) -> [u8; PAGE_BYTES] {
    let mut out = [0u8; PAGE_BYTES];
    let (entries, _) = out.as_chunks_mut::<ENTRY_BYTES>();
    for (i, bytes) in (0u64..).zip(entries) {
        if let Some(e) = page_track(page, i).and_then(|t| map.get(t)) {
            *bytes = entry_bytes(e);
        }
    }
    out
}

/// The entries stored in page `page`, ascending by track. Not 4096 bytes,
/// an entry with a slot but no granules (or granules but no slot), a slot
/// the encoding cannot hold, or a page beyond the last track number:
/// [`crate::ErrorKind::Corrupt`].
pub fn decode_page(page: u64, bytes: &[u8]) -> Result<Vec<(u64, Entry)>> {
    if bytes.len() != PAGE_BYTES {
        return Err(Error::corrupt(format!(
            "track map page {page} is {} bytes, not {PAGE_BYTES}",
            bytes.len()
        )));
    }
    let (entries, _) = bytes.as_chunks::<ENTRY_BYTES>();
    let mut out = Vec::new();
    for (i, raw) in (0u64..).zip(entries) {
        let t = page_track(page, i).ok_or_else(|| {
            Error::corrupt(format!(
                "track map page {page} is beyond the last track number"
            ))
        })?;
        if let Some(e) = decode_entry(raw)
            .map_err(|m| Error::corrupt(format!("track map page {page}, track {t}: {m}")))?
        {
            out.push((t, e));
        }
    }
    Ok(out)
}

/// Whether a stored page holds no entries (all zero bytes).
pub fn is_empty_page(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Track `i` of page `page`, if the track number exists.
fn page_track(page: u64, i: u64) -> Option<u64> {
    page.checked_mul(PAGE_ENTRIES)?.checked_add(i)
}

/// The bytes of one entry. A slot the encoding cannot hold
/// (`u64::MAX - 1`; no map accepts it) encodes as no entry.
fn entry_bytes(e: Entry) -> [u8; ENTRY_BYTES] {
    let code = match e.slot {
        ZERO_SLOT => ZERO_CODE,
        s => s
            .checked_add(1)
            .filter(|&c| c != ZERO_CODE)
            .unwrap_or(NO_ENTRY),
    };
    let mut b = [0u8; ENTRY_BYTES];
    if code != NO_ENTRY && e.valid != 0 {
        let (c, v) = b.split_at_mut(VALID_OFFSET);
        c.copy_from_slice(&code.to_le_bytes());
        v.copy_from_slice(&e.valid.to_le_bytes());
    }
    b
}

/// One entry from its bytes; `Err` names what is wrong.
fn decode_entry(raw: &[u8; ENTRY_BYTES]) -> Result<Option<Entry>, &'static str> {
    let (c, v) = raw.split_at(VALID_OFFSET);
    let code = u64::from_le_bytes(c.try_into().map_err(|_| "short slot code")?);
    let valid = u64::from_le_bytes(v.try_into().map_err(|_| "short mask")?);
    match (code, valid) {
        (NO_ENTRY, 0) => Ok(None),
        (NO_ENTRY, _) => Err("granules valid but no slot"),
        (_, 0) => Err("a slot but no valid granules"),
        (ZERO_CODE, valid) => Ok(Some(Entry {
            slot: ZERO_SLOT,
            valid,
        })),
        (code, valid) => Ok(Some(Entry {
            slot: code - 1,
            valid,
        })),
    }
}
