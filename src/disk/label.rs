//! The on-disk label every ferrosan disk carries: which pool and which disk
//! it is, and where its data area starts.
//!
//! ```text
//!  disk offset   0 ┌──────────────────────────────┐
//!                  │ label copy A (4 KiB)          │
//!             4096 ├──────────────────────────────┤
//!                  │ label copy B (4 KiB)          │
//!             8192 ├──────────────────────────────┤
//!                  │ reserved                      │
//!  DATA_OFFSET 1MiB├──────────────────────────────┤
//!                  │ data area (what RAID maps)    │
//!                  └──────────────────────────────┘
//!
//!  one label copy, little-endian:
//!   MAGIC_OFF      0  [u8; 8]  b"FERROSAN"
//!   VERSION_OFF    8  u32      format version
//!   FLAGS_OFF     12  u32      reserved, zero
//!   POOL_OFF      16  [u8; 16] pool id
//!   DISK_OFF      32  [u8; 16] disk id
//!   DATA_OFF_OFF  48  u64      data area offset
//!   DATA_SIZE_OFF 56  u64      data area size
//!   SEQ_OFF       64  u64      generation; the higher valid copy wins
//!   NAME_LEN_OFF  72  u16      length of the disk name
//!   NAME_OFF      74  [u8; 64] disk name when labelled (informational)
//!   CRC_OFF     4092  u32      crc32c of bytes 0..CRC_OFF
//! ```
//!
//! Two checksummed copies: a torn label write leaves the other copy valid.

#![forbid(unsafe_code)]

use crate::error::{Error, Result};

pub const LABEL_SIZE: usize = 4096;
pub const LABEL_COPIES: usize = 2;
/// Where the data area of a disk starts. 1 MiB keeps it aligned for any
/// disk and leaves room for later on-disk structures.
pub const DATA_OFFSET: u64 = 1 << 20;
pub const MAGIC: [u8; 8] = *b"FERROSAN";
/// Format version of the label; a newer one is refused, never guessed at.
pub const LABEL_VERSION: u32 = 1;
pub const NAME_MAX: usize = 64;

const MAGIC_OFF: usize = 0;
const VERSION_OFF: usize = MAGIC_OFF + 8;
const FLAGS_OFF: usize = VERSION_OFF + 4;
const POOL_OFF: usize = FLAGS_OFF + 4;
const DISK_OFF: usize = POOL_OFF + 16;
const DATA_OFF_OFF: usize = DISK_OFF + 16;
const DATA_SIZE_OFF: usize = DATA_OFF_OFF + 8;
const SEQ_OFF: usize = DATA_SIZE_OFF + 8;
const NAME_LEN_OFF: usize = SEQ_OFF + 8;
const NAME_OFF: usize = NAME_LEN_OFF + 2;
const CRC_OFF: usize = LABEL_SIZE - 4;
const _: () = assert!(NAME_OFF + NAME_MAX <= CRC_OFF);

/// The decoded label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub pool_id: [u8; 16],
    pub disk_id: [u8; 16],
    pub data_offset: u64,
    pub data_size: u64,
    pub seq: u64,
    pub name: String,
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}
fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

impl Label {
    /// Encodes one copy.
    pub fn encode(&self) -> [u8; LABEL_SIZE] {
        let mut b = [0u8; LABEL_SIZE];
        b[MAGIC_OFF..MAGIC_OFF + 8].copy_from_slice(&MAGIC);
        put_u32(&mut b, VERSION_OFF, LABEL_VERSION);
        put_u32(&mut b, FLAGS_OFF, 0);
        b[POOL_OFF..POOL_OFF + 16].copy_from_slice(&self.pool_id);
        b[DISK_OFF..DISK_OFF + 16].copy_from_slice(&self.disk_id);
        put_u64(&mut b, DATA_OFF_OFF, self.data_offset);
        put_u64(&mut b, DATA_SIZE_OFF, self.data_size);
        put_u64(&mut b, SEQ_OFF, self.seq);
        let name = self.name.as_bytes();
        let n = name.len().min(NAME_MAX);
        b[NAME_LEN_OFF..NAME_LEN_OFF + 2].copy_from_slice(&(n as u16).to_le_bytes());
        b[NAME_OFF..NAME_OFF + n].copy_from_slice(&name[..n]);
        let crc = crc32c::crc32c(&b[..CRC_OFF]);
        put_u32(&mut b, CRC_OFF, crc);
        b
    }

    /// Decodes one copy, saying exactly what is wrong with it.
    pub fn decode(b: &[u8]) -> Result<Label, LabelProblem> {
        if b.len() < LABEL_SIZE {
            return Err(LabelProblem::Short);
        }
        if b[MAGIC_OFF..MAGIC_OFF + 8] != MAGIC {
            return Err(if b[..LABEL_SIZE].iter().all(|&x| x == 0) {
                LabelProblem::Blank
            } else {
                LabelProblem::NoMagic
            });
        }
        if crc32c::crc32c(&b[..CRC_OFF]) != get_u32(b, CRC_OFF) {
            return Err(LabelProblem::Checksum);
        }
        let version = get_u32(b, VERSION_OFF);
        if version > LABEL_VERSION {
            return Err(LabelProblem::NewerVersion(version));
        }
        let mut pool_id = [0u8; 16];
        pool_id.copy_from_slice(&b[POOL_OFF..POOL_OFF + 16]);
        let mut disk_id = [0u8; 16];
        disk_id.copy_from_slice(&b[DISK_OFF..DISK_OFF + 16]);
        let n =
            usize::from(u16::from_le_bytes([b[NAME_LEN_OFF], b[NAME_LEN_OFF + 1]])).min(NAME_MAX);
        Ok(Label {
            pool_id,
            disk_id,
            data_offset: get_u64(b, DATA_OFF_OFF),
            data_size: get_u64(b, DATA_SIZE_OFF),
            seq: get_u64(b, SEQ_OFF),
            name: String::from_utf8_lossy(&b[NAME_OFF..NAME_OFF + n]).into_owned(),
        })
    }

    /// Picks the valid copy with the highest generation from the first
    /// `LABEL_COPIES * LABEL_SIZE` bytes of a disk.
    pub fn decode_copies(b: &[u8]) -> Result<Label, LabelProblem> {
        let mut best: Option<Label> = None;
        let mut first_err = LabelProblem::Short;
        for i in 0..LABEL_COPIES {
            let start = i * LABEL_SIZE;
            let Some(copy) = b.get(start..start + LABEL_SIZE) else {
                continue;
            };
            match Label::decode(copy) {
                Ok(l) => {
                    if best.as_ref().is_none_or(|b| l.seq > b.seq) {
                        best = Some(l);
                    }
                }
                Err(e) => {
                    if i == 0 {
                        first_err = e;
                    }
                }
            }
        }
        best.ok_or(first_err)
    }
}

/// Why a label could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelProblem {
    Short,
    Blank,
    NoMagic,
    Checksum,
    NewerVersion(u32),
}

impl LabelProblem {
    pub fn into_error(self, what: &str) -> Error {
        match self {
            LabelProblem::Short => {
                Error::corrupt(format!("{what} is too small to hold a ferrosan label"))
            }
            LabelProblem::Blank => {
                Error::corrupt(format!("{what} has no ferrosan label (it is blank)"))
            }
            LabelProblem::NoMagic => {
                Error::corrupt(format!("{what} is not a ferrosan disk (no label)"))
            }
            LabelProblem::Checksum => Error::corrupt(format!(
                "{what} has a damaged ferrosan label (checksum mismatch in both copies)"
            )),
            LabelProblem::NewerVersion(v) => Error::corrupt(format!(
                "{what} was labelled by a newer ferrosan (label version {v}, this one reads up to {LABEL_VERSION}); upgrade ferrosan"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label() -> Label {
        Label {
            pool_id: [1; 16],
            disk_id: [2; 16],
            data_offset: DATA_OFFSET,
            data_size: 1 << 30,
            seq: 7,
            name: "d0".into(),
        }
    }

    #[test]
    fn round_trip() {
        let l = label();
        assert_eq!(Label::decode(&l.encode()), Ok(l));
    }

    #[test]
    fn torn_copy_falls_back_to_the_other() {
        let l = label();
        let mut both = vec![0u8; 2 * LABEL_SIZE];
        both[..LABEL_SIZE].copy_from_slice(&l.encode());
        let mut newer = l.clone();
        newer.seq = 8;
        both[LABEL_SIZE..].copy_from_slice(&newer.encode());
        assert_eq!(Label::decode_copies(&both).map(|l| l.seq), Ok(8));
        both[LABEL_SIZE + 100] ^= 1;
        assert_eq!(Label::decode_copies(&both).map(|l| l.seq), Ok(7));
        both[100] ^= 1;
        assert_eq!(Label::decode_copies(&both), Err(LabelProblem::Checksum));
    }

    #[test]
    fn foreign_and_newer() {
        let mut b = label().encode();
        b[0] = b'X';
        assert_eq!(Label::decode(&b), Err(LabelProblem::NoMagic));
        let mut b = label().encode();
        put_u32(&mut b, VERSION_OFF, 99);
        let crc = crc32c::crc32c(&b[..CRC_OFF]);
        put_u32(&mut b, CRC_OFF, crc);
        assert_eq!(Label::decode(&b), Err(LabelProblem::NewerVersion(99)));
    }
}
