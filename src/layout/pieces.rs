//! Cutting a request of the group's address space into member pieces.

use super::geometry::Layout;
use crate::error::Result;

/// One run of a request on one member: `len` bytes at group address
/// `addr` live at `member_off` on `member`.
///
/// A piece never crosses a strip (raid0, raid5) or a member's end
/// (concat). For raid1 the piece is leg 0's; every leg holds the same bytes
/// at the same offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub addr: u64,
    pub member: usize,
    pub member_off: u64,
    pub len: u64,
}

impl Piece {
    /// The row (member offset / stripe size) the piece starts in.
    pub fn row(&self, layout: &Layout) -> u64 {
        layout.row_of(self.member_off)
    }

    /// Offset of the piece within its strip.
    pub fn intra(&self, layout: &Layout) -> u64 {
        self.member_off % layout.stripe_size()
    }
}

/// The pieces of a request, in address order.
#[derive(Debug, Clone)]
pub struct Pieces<'a> {
    layout: &'a Layout,
    pos: u64,
    end: u64,
}

impl Iterator for Pieces<'_> {
    type Item = Piece;

    fn next(&mut self) -> Option<Piece> {
        if self.pos >= self.end {
            return None;
        }
        let (member, member_off, room) = self.layout.place(self.pos);
        let len = room.min(self.end - self.pos);
        if len == 0 {
            return None;
        }
        let p = Piece {
            addr: self.pos,
            member,
            member_off,
            len,
        };
        self.pos += len;
        Some(p)
    }
}

impl Layout {
    /// Maps `off..off+len` of the address space to member pieces.
    pub fn map(&self, off: u64, len: u64) -> Result<Pieces<'_>> {
        self.check(off, len)?;
        Ok(Pieces {
            layout: self,
            pos: off,
            end: off + len,
        })
    }
}
