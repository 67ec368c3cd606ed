//! raid5: data strips plus one rotating parity strip per stripe row.
//!
//! A write computes the new parity of the columns `lo..hi` of its row
//! (the intra-strip span it touches) in one of three ways:
//!
//! ```text
//!   read-modify-write   P' = P ^ D_old ^ D_new         reads: touched strips + P
//!   reconstruct-write   P' = XOR of all new columns    reads: strips not fully covered
//!   degraded            the missing strip's column is rebuilt from P and the
//!                       others first, then reconstruct-write
//! ```
//!
//! A full-row write is a reconstruct-write without reads. When the parity
//! member is missing, only data is written. A read error during the
//! parity computation retries it once with that member treated as missing.

use futures::future::join_all;

use super::RaidDev;
use super::target::{Failure, gather, lens_of};
use crate::blockdev::{BufResult, ZeroFlags};
use crate::buf::{IoBuf, pool, xor_into};
use crate::error::{Error, ErrorKind, Result};
use crate::layout::Piece;

/// An error of a parity computation, with the member whose read failed.
type ColErr = (Option<usize>, Error);

/// How a row's new parity is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// The parity member is missing: write data only.
    NoParity,
    ReadModifyWrite,
    /// Reconstruct-write; `Some(strip)`: that strip is unreadable and not
    /// fully overwritten, so its column is rebuilt from parity first.
    Reconstruct(Option<usize>),
}

/// One row of a write: its pieces (within strips of `row`) and new data.
struct RowWrite {
    row: u64,
    pieces: Vec<Piece>,
    bufs: Vec<IoBuf>,
}

fn is_retryable(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Io | ErrorKind::Unavailable)
}

fn slice_at(buf: &mut IoBuf, at: u64, len: u64) -> &mut [u8] {
    let a = usize::try_from(at).unwrap_or(0);
    let l = usize::try_from(len).unwrap_or(0);
    buf.as_mut_slice().get_mut(a..a + l).unwrap_or_default()
}

/// Copies as much of `src` as fits into `dst`.
fn overlay(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    if let (Some(d), Some(s)) = (dst.get_mut(..n), src.get(..n)) {
        d.copy_from_slice(s);
    }
}

impl RaidDev {
    fn intra(&self, p: &Piece) -> u64 {
        p.intra(&self.layout)
    }

    /// The column span `lo..hi` a row write touches.
    fn span(&self, pieces: &[Piece]) -> (u64, u64) {
        let lo = pieces.iter().map(|p| self.intra(p)).min().unwrap_or(0);
        let hi = pieces
            .iter()
            .map(|p| self.intra(p) + p.len)
            .max()
            .unwrap_or(0);
        (lo, hi)
    }

    /// Does a piece overwrite strip `strip` over all of `lo..hi`?
    fn covered(&self, rw: &RowWrite, strip: usize, lo: u64, hi: u64) -> bool {
        rw.pieces.iter().any(|p| {
            self.layout.strip_of(rw.row, p.member) == Some(strip)
                && self.intra(p) <= lo
                && self.intra(p) + p.len >= hi
        })
    }

    fn choose(&self, rw: &RowWrite, avoid: Option<usize>) -> Result<Method, ColErr> {
        let row = rw.row;
        let missing = self.members.missing_in_row(row);
        if missing.len() > self.layout.redundancy() {
            return Err((None, self.unavailable()));
        }
        let p = self.layout.parity_member(row).unwrap_or(usize::MAX);
        if missing.contains(&p) {
            return Ok(Method::NoParity);
        }
        let mut unreadable = missing;
        // A failing member being spared is not read where it need not be.
        let spared = avoid.or_else(|| self.members.spared_in_row(row));
        unreadable.extend(spared.filter(|a| !unreadable.contains(a)));
        let (lo, hi) = self.span(&rw.pieces);
        let k = self.layout.data_strips();
        match unreadable.as_slice() {
            [] => {
                let rcw_reads = (0..k).filter(|&i| !self.covered(rw, i, lo, hi)).count();
                if rcw_reads < rw.pieces.len() + 1 {
                    Ok(Method::Reconstruct(None))
                } else {
                    Ok(Method::ReadModifyWrite)
                }
            }
            [u] if *u == p => Ok(Method::Reconstruct(None)),
            [u] => {
                let strip = self.layout.strip_of(row, *u);
                match strip {
                    Some(s) if !self.covered(rw, s, lo, hi) => Ok(Method::Reconstruct(Some(s))),
                    _ => Ok(Method::Reconstruct(None)),
                }
            }
            _ => Err((None, self.unavailable())),
        }
    }

    /// Reads `len` bytes at member offset `off` of member `m`.
    async fn read_col(&self, m: usize, off: u64, len: u64) -> Result<IoBuf, ColErr> {
        let buf = IoBuf::new(usize::try_from(len).unwrap_or(0));
        let (buf, r) = self.read_slot(m, off, buf).await;
        r.map(|()| buf).map_err(|e| (Some(m), e))
    }

    /// New parity of columns `lo..hi` by read-modify-write.
    async fn parity_rmw(&self, rw: &RowWrite, lo: u64, hi: u64) -> Result<IoBuf, ColErr> {
        let s = self.layout.stripe_size();
        let p = self.layout.parity_member(rw.row).unwrap_or(usize::MAX);
        let old_data = rw
            .pieces
            .iter()
            .map(|pc| self.read_col(pc.member, pc.member_off, pc.len));
        let (par, olds) = futures::join!(
            self.read_col(p, rw.row * s + lo, hi - lo),
            join_all(old_data)
        );
        let mut par = par?;
        for ((pc, new), old) in rw.pieces.iter().zip(&rw.bufs).zip(olds) {
            let old = old?;
            let dst = slice_at(&mut par, self.intra(pc) - lo, pc.len);
            xor_into(dst, old.as_slice());
            xor_into(dst, new.as_slice());
        }
        Ok(par)
    }

    /// New parity of columns `lo..hi` by reconstruct-write; with
    /// `rebuild = Some(strip)`, that strip's old column comes from parity.
    async fn parity_rcw(
        &self,
        rw: &RowWrite,
        lo: u64,
        hi: u64,
        rebuild: Option<usize>,
    ) -> Result<IoBuf, ColErr> {
        let s = self.layout.stripe_size();
        let row = rw.row;
        let k = self.layout.data_strips();
        let len = hi - lo;
        let need = |i: usize| match rebuild {
            Some(r) => i != r,
            None => !self.covered(rw, i, lo, hi),
        };
        let reads = (0..k).map(|i| async move {
            let m = self.layout.data_member(row, i).unwrap_or(usize::MAX);
            if need(i) {
                self.read_col(m, row * s + lo, len).await
            } else {
                Ok(IoBuf::new(usize::try_from(len).unwrap_or(0)))
            }
        });
        let mut cols: Vec<IoBuf> = join_all(reads)
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        if let Some(r) = rebuild {
            let p = self.layout.parity_member(row).unwrap_or(usize::MAX);
            let mut missing = self.read_col(p, row * s + lo, len).await?;
            for (_, c) in cols.iter().enumerate().filter(|(i, _)| *i != r) {
                xor_into(missing.as_mut_slice(), c.as_slice());
            }
            if let Some(slot) = cols.get_mut(r) {
                *slot = missing;
            }
        }
        let mut par = IoBuf::new(usize::try_from(len).unwrap_or(0));
        for (pc, new) in rw.pieces.iter().zip(&rw.bufs) {
            let strip = self.layout.strip_of(row, pc.member).unwrap_or(usize::MAX);
            if let Some(col) = cols.get_mut(strip) {
                overlay(slice_at(col, self.intra(pc) - lo, pc.len), new.as_slice());
            }
        }
        for c in &cols {
            xor_into(par.as_mut_slice(), c.as_slice());
        }
        Ok(par)
    }

    async fn try_parity(
        &self,
        rw: &RowWrite,
        avoid: Option<usize>,
    ) -> Result<Option<IoBuf>, ColErr> {
        let (lo, hi) = self.span(&rw.pieces);
        match self.choose(rw, avoid)? {
            Method::NoParity => Ok(None),
            Method::ReadModifyWrite => self.parity_rmw(rw, lo, hi).await.map(Some),
            Method::Reconstruct(r) => self.parity_rcw(rw, lo, hi, r).await.map(Some),
        }
    }

    /// The new parity of a row write (`None`: no parity member to write).
    async fn row_parity(&self, rw: &RowWrite) -> Result<Option<IoBuf>> {
        match self.try_parity(rw, None).await {
            Err((Some(m), e)) if is_retryable(&e) => {
                tracing::debug!(member = m, error = %e, "raid5 read for parity failed, treating member as missing");
                // A second unreadable member: the first read error says why.
                self.try_parity(rw, Some(m))
                    .await
                    .map_err(|(_, e2)| match e2.kind() {
                        ErrorKind::Unavailable if self.health() != super::Health::Failed => e,
                        _ => e2,
                    })
            }
            r => r.map_err(|(_, e)| e),
        }
    }

    /// Writes one row: parity first computed, then data and parity
    /// written concurrently. Returns the data buffers and failed devices.
    async fn write_row(&self, rw: RowWrite, fua: bool) -> (Vec<IoBuf>, Vec<Failure>, Result<()>) {
        let parity = match self.row_parity(&rw).await {
            Ok(p) => p,
            Err(e) => return (rw.bufs, Vec::new(), Err(e)),
        };
        let (lo, _) = self.span(&rw.pieces);
        let data = rw
            .pieces
            .iter()
            .zip(rw.bufs)
            .map(|(pc, b)| self.write_slot(pc.member, pc.member_off, b, fua));
        let par = async {
            let p = self.layout.parity_member(rw.row).unwrap_or(usize::MAX);
            match parity {
                Some(buf) => {
                    self.write_slot(p, rw.row * self.layout.stripe_size() + lo, buf, fua)
                        .await
                        .1
                }
                None => Vec::new(),
            }
        };
        let (done, mut failed) = futures::join!(join_all(data), par);
        let mut bufs = Vec::with_capacity(done.len());
        for (b, f) in done {
            bufs.push(b);
            failed.extend(f);
        }
        (bufs, failed, Ok(()))
    }

    /// Groups a request's pieces by stripe row.
    fn rows_of(&self, off: u64, buf: IoBuf) -> Result<Vec<RowWrite>, (IoBuf, Error)> {
        let pieces: Vec<Piece> = match self.layout.map(off, buf.len() as u64) {
            Ok(p) => p.collect(),
            Err(e) => return Err((buf, e)),
        };
        let parts = buf.split_many(&lens_of(pieces.iter().map(|p| p.len)));
        let mut rows: Vec<RowWrite> = Vec::new();
        for (p, b) in pieces.into_iter().zip(parts) {
            let row = p.row(&self.layout);
            match rows.last_mut() {
                Some(rw) if rw.row == row => {
                    rw.pieces.push(p);
                    rw.bufs.push(b);
                }
                _ => rows.push(RowWrite {
                    row,
                    pieces: vec![p],
                    bufs: vec![b],
                }),
            }
        }
        Ok(rows)
    }

    /// A raid5 write; the caller holds the row locks and the write intent.
    pub(super) async fn parity_write(&self, off: u64, buf: IoBuf, fua: bool) -> BufResult {
        let len = buf.len() as u64;
        let buf = match self.single_piece(off, len) {
            Some(p) => match self.parity_write_strip(&p, buf, fua).await {
                Ok(done) => return done,
                Err(buf) => buf,
            },
            None => buf,
        };
        let rows = match self.rows_of(off, buf) {
            Ok(r) => r,
            Err((buf, e)) => return (buf, Err(e)),
        };
        let done = join_all(rows.into_iter().map(|rw| self.write_row(rw, fua))).await;
        let mut bufs = Vec::new();
        let mut failed = Vec::new();
        let mut first = Ok(());
        for (b, f, r) in done {
            bufs.extend(b);
            failed.extend(f);
            if first.is_ok() {
                first = r;
            }
        }
        let settled = self.absorb(failed).await;
        let g = self.layout.lock_grain();
        let r = first
            .and(settled)
            .and_then(|()| self.still_served(off / g, (off + len).div_ceil(g)));
        (IoBuf::join(bufs), r)
    }

    /// A write within one strip (every 4 KiB write but those across a
    /// strip's end) of an optimal group with three or more data strips
    /// per row, where [`RaidDev::choose`] would pick read-modify-write:
    /// the old data and parity are read into pooled buffers, and no list
    /// of rows, pieces or futures is built, so the write allocates nothing.
    /// Hands the buffer back (`Err`) for the general path wherever that
    /// one must decide: a degraded or narrow group, or a failed read (it
    /// retries around the member).
    async fn parity_write_strip(
        &self,
        p: &Piece,
        buf: IoBuf,
        fua: bool,
    ) -> Result<BufResult, IoBuf> {
        if self.health() != super::Health::Optimal || self.layout.data_strips() < 3 {
            return Err(buf);
        }
        let row = p.row(&self.layout);
        let Some(pm) = self.layout.parity_member(row) else {
            return Err(buf);
        };
        let par_off = row * self.layout.stripe_size() + self.intra(p);
        let len = buf.len();
        let (old, par) = futures::join!(
            self.read_slot(p.member, p.member_off, pool::take(len)),
            self.read_slot(pm, par_off, pool::take(len))
        );
        let par = match (old, par) {
            ((old, Ok(())), (mut par, Ok(()))) => {
                xor_into(par.as_mut_slice(), old.as_slice());
                xor_into(par.as_mut_slice(), buf.as_slice());
                pool::give(old);
                par
            }
            ((old, _), (par, _)) => {
                pool::give(old);
                pool::give(par);
                return Err(buf);
            }
        };
        let ((buf, mut failed), (par, more)) = futures::join!(
            self.write_slot(p.member, p.member_off, buf, fua),
            self.write_slot(pm, par_off, par, fua)
        );
        pool::give(par);
        failed.extend(more);
        let r = if failed.is_empty() {
            Ok(())
        } else {
            self.absorb(failed).await
        };
        Ok((buf, r.and_then(|()| self.still_served(row, row + 1))))
    }

    pub(super) async fn parity_read(&self, off: u64, buf: IoBuf) -> BufResult {
        if let Some(p) = self.single_piece(off, buf.len() as u64) {
            return self.read_piece(p, buf).await;
        }
        let pieces: Vec<Piece> = match self.layout.map(off, buf.len() as u64) {
            Ok(p) => p.collect(),
            Err(e) => return (buf, Err(e)),
        };
        let parts = buf.split_many(&lens_of(pieces.iter().map(|p| p.len)));
        let reads = pieces
            .into_iter()
            .zip(parts)
            .map(|(p, b)| self.read_piece(p, b));
        gather(join_all(reads).await)
    }

    async fn read_piece(&self, p: Piece, buf: IoBuf) -> BufResult {
        let (buf, r) = self.read_slot_host(p.member, p.member_off, buf).await;
        match r {
            Err(e) if is_retryable(&e) => {
                let repair = e.kind() == ErrorKind::Io;
                let (member, off) = (p.member, p.member_off);
                let (buf, r) = self.degraded_piece(p, buf, repair).await;
                match r {
                    // A failing member being spared was skipped, and the
                    // row cannot be rebuilt without it: read it after all.
                    Err(_) if !repair && self.members.spared() == Some(member) => {
                        self.read_slot(member, off, buf).await
                    }
                    r => (buf, r),
                }
            }
            r => (buf, r),
        }
    }

    /// Rebuilds a piece from the rest of its row, under the row lock; after
    /// a read error the member is repaired with the result.
    async fn degraded_piece(&self, p: Piece, mut buf: IoBuf, repair: bool) -> BufResult {
        let row = p.row(&self.layout);
        let _row = self.locks.lock(row, row + 1).await;
        let r = self
            .reconstruct(p.member, row, p.member_off, &mut buf)
            .await;
        if r.is_ok() && repair {
            self.repair(p.member, p.addr, p.member_off, &buf).await;
        }
        (buf, r)
    }

    /// Fills `buf` with member `idx`'s bytes at `off` (in `row`) as the XOR
    /// of the same range on every other member. The caller holds the row.
    pub(super) async fn reconstruct(
        &self,
        idx: usize,
        row: u64,
        off: u64,
        buf: &mut IoBuf,
    ) -> Result<()> {
        let len = buf.len();
        let others = (0..self.layout.members()).filter(|&m| m != idx);
        let reads = others.map(|m| self.read_slot(m, off, IoBuf::new(len)));
        let done = join_all(reads).await;
        buf.zero();
        for (b, r) in done {
            r.map_err(|e| e.context(format!("cannot rebuild member {idx} in row {row}")))?;
            xor_into(buf.as_mut_slice(), b.as_slice());
        }
        Ok(())
    }

    /// raid5 zeroing: whole rows become zeroes on every member (parity of
    /// zeroes is zero); partial rows are written as zero data (zeroing) or
    /// left alone (discard). The caller holds the row locks.
    pub(super) async fn parity_zeroes(
        &self,
        off: u64,
        len: u64,
        flags: ZeroFlags,
        discard: bool,
    ) -> Result<()> {
        let g = self.layout.lock_grain();
        let end = off + len;
        let (r0, r1) = (off.div_ceil(g), end / g);
        let mut partial = Vec::new();
        if r0 > r1 {
            partial.push((off, len));
        } else {
            partial.extend(
                [(off, r0 * g - off), (r1 * g, end - r1 * g)]
                    .into_iter()
                    .filter(|r| r.1 > 0),
            );
        }
        if flags.fast_only && !partial.is_empty() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "zeroing part of a raid5 stripe row is no faster than writing zeroes",
            ));
        }
        if discard && r0 >= r1 {
            return Ok(());
        }
        let guard = self.intent.begin(off, len).await?;
        let out = self
            .zero_rows_and_parts(r0, r1, &partial, flags, discard)
            .await;
        self.end_write(off, len, guard, &out);
        out?;
        self.still_served(off / g, end.div_ceil(g))
    }

    /// Zeroes whole rows `r0..r1` on every member, then writes zeroes over
    /// the `partial` ranges (host addresses) unless `discard`.
    async fn zero_rows_and_parts(
        &self,
        r0: u64,
        r1: u64,
        partial: &[(u64, u64)],
        flags: ZeroFlags,
        discard: bool,
    ) -> Result<()> {
        let mut failed = Vec::new();
        if r0 < r1 {
            failed = self.zero_rows(r0, r1, flags, discard).await?;
        }
        let mut first = Ok(());
        for &(o, l) in partial.iter().filter(|_| !discard) {
            let zeros = IoBuf::new(usize::try_from(l).unwrap_or(0));
            let (_, r) = self.parity_write(o, zeros, flags.fua).await;
            first = first.and(r);
        }
        self.absorb(failed).await?;
        first
    }

    /// Zeroes rows `r0..r1` on every member.
    async fn zero_rows(
        &self,
        r0: u64,
        r1: u64,
        flags: ZeroFlags,
        discard: bool,
    ) -> Result<Vec<Failure>> {
        let s = self.layout.stripe_size();
        let flags = ZeroFlags {
            may_unmap: flags.may_unmap || discard,
            ..flags
        };
        let runs: Vec<(usize, u64, u64)> = (0..self.layout.members())
            .map(|m| (m, r0 * s, (r1 - r0) * s))
            .collect();
        self.zero_members(&runs, flags).await
    }
}
