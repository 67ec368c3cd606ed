//! concat and raid0: data pieces on one member each, no redundancy. A
//! member's error is the request's error (except for a failing
//! hot-replacement, which is dropped and the old member kept).

use futures::future::join_all;

use super::RaidDev;
use super::target::{Failure, gather, lens_of};
use crate::blockdev::{BufResult, ZeroFlags};
use crate::buf::IoBuf;
use crate::error::Result;
use crate::layout::Piece;

impl RaidDev {
    fn pieces(&self, off: u64, len: u64) -> Result<Vec<Piece>> {
        Ok(self.layout.map(off, len)?.collect())
    }

    /// The one piece `off..off+len` maps to, if it lies within one strip
    /// (every 4 KiB request but those across a strip's end): the request
    /// then needs no list of pieces, no split and no join.
    pub(super) fn single_piece(&self, off: u64, len: u64) -> Option<Piece> {
        let p = self.layout.map(off, len).ok()?.next()?;
        (p.len == len).then_some(p)
    }

    pub(super) async fn striped_read(&self, off: u64, buf: IoBuf) -> BufResult {
        if let Some(p) = self.single_piece(off, buf.len() as u64) {
            return self.read_slot(p.member, p.member_off, buf).await;
        }
        let pieces = match self.pieces(off, buf.len() as u64) {
            Ok(p) => p,
            Err(e) => return (buf, Err(e)),
        };
        let parts = buf.split_many(&lens_of(pieces.iter().map(|p| p.len)));
        let reads = pieces
            .iter()
            .zip(parts)
            .map(|(p, part)| self.read_slot(p.member, p.member_off, part));
        gather(join_all(reads).await)
    }

    pub(super) async fn striped_write(&self, off: u64, buf: IoBuf, fua: bool) -> BufResult {
        if let Some(p) = self.single_piece(off, buf.len() as u64) {
            let (buf, failed) = self.write_slot(p.member, p.member_off, buf, fua).await;
            let r = if failed.is_empty() && self.health() != super::Health::Failed {
                Ok(())
            } else {
                self.striped_settle(failed).await
            };
            return (buf, r);
        }
        let pieces = match self.pieces(off, buf.len() as u64) {
            Ok(p) => p,
            Err(e) => return (buf, Err(e)),
        };
        let parts = buf.split_many(&lens_of(pieces.iter().map(|p| p.len)));
        let writes = pieces
            .iter()
            .zip(parts)
            .map(|(p, part)| self.write_slot(p.member, p.member_off, part, fua));
        let mut parts = Vec::with_capacity(pieces.len());
        let mut failed = Vec::new();
        for (part, f) in join_all(writes).await {
            parts.push(part);
            failed.extend(f);
        }
        let r = self.striped_settle(failed).await;
        (IoBuf::join(parts), r)
    }

    /// A non-redundant group's verdict on its failed devices.
    async fn striped_settle(&self, failed: Vec<Failure>) -> Result<()> {
        self.absorb(failed).await?;
        if self.health() == super::Health::Failed {
            return Err(self.unavailable());
        }
        Ok(())
    }

    pub(super) async fn striped_zeroes(
        &self,
        off: u64,
        len: u64,
        flags: ZeroFlags,
        discard: bool,
    ) -> Result<()> {
        let runs = merge_runs(self.pieces(off, len)?);
        let ops = runs
            .iter()
            .map(|&(m, o, l)| self.zero_slot(m, o, l, flags, discard));
        let failed = join_all(ops).await.into_iter().flatten().collect();
        self.striped_settle(failed).await
    }
}

/// Pieces merged into runs per member where they are adjacent in member
/// space (raid0: one run per member for a range of whole rows).
pub(super) fn merge_runs(pieces: Vec<Piece>) -> Vec<(usize, u64, u64)> {
    let mut runs: Vec<(usize, u64, u64)> = Vec::new();
    for p in pieces {
        let adjacent = runs
            .iter_mut()
            .find(|r| r.0 == p.member && r.1 + r.2 == p.member_off);
        match adjacent {
            Some(r) => r.2 += p.len,
            None => runs.push((p.member, p.member_off, p.len)),
        }
    }
    runs
}
