//! An S-VOL group's data path (seed 003, S-VOL read/write process unit
//! 640 and error process unit 650; FIG. 15-20): split S-VOLs of one
//! P-VOL used as one, each member an export of its own.
//!
//! - **Read process** (FIG. 15/16, table 1200's Freq): a read of an RO
//!   member, or of an RW member's block that is not in its increments, may
//!   be served by any healthy member holding the split image there; the
//!   one with the lowest access frequency (ties: the lowest in the table)
//!   serves it and its Freq counts it, so reads spread over the members.
//! - **Write process and increments write process** (FIG. 18/19): an RO
//!   member refuses writes. A write to the RW member stores its block ids
//!   in table 1300 (the increments map, durable before the data is
//!   written: DESIGN rule 2), then writes the member and its increments
//!   volume (DLV) at the same block id, and is answered when both are
//!   done. The RW member's write-intent log marks the region first, so a
//!   crash between the two writes is found at the next start and the DLV
//!   is brought back to the member there.
//! - **Read error process** (FIG. 17/20): a member whose read fails is
//!   counted and the read goes to the next candidate; the host sees no
//!   error while any member holds the data; the good data is written back
//!   over the failed block (repair). At the error threshold the member is
//!   failed: no read goes to it any more.
//!
//! A spare and an increments volume are not host-accessible: their
//! switches hold an [`Internal`] node that refuses every request.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::blockdev::{
    BlockDev, BufResult, DevFuture, Extent, WriteIntent, ZeroFlags, begin_write,
};
use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result};
use crate::meta::diffmap::DiffMap;
use crate::stack::lock::RangeLock;

/// Read errors after which a member is failed (seed 003: "repeated or
/// device-level" errors; a first one is repaired in place).
pub const ERROR_THRESHOLD: u64 = 8;

/// An RW member's increments: its DLV and the block ids of table 1300.
pub struct Increments {
    pub dlv: Arc<dyn BlockDev>,
    pub bids: Arc<DiffMap>,
    pub intent: Arc<dyn WriteIntent>,
    locks: RangeLock,
}

impl Increments {
    pub fn new(dlv: Arc<dyn BlockDev>, bids: Arc<DiffMap>, intent: Arc<dyn WriteIntent>) -> Self {
        Increments {
            dlv,
            bids,
            intent,
            locks: RangeLock::new(),
        }
    }
}

/// One host-visible member (a row of tables 900/1200 with Attr RO or RW).
pub struct Member {
    pub lid: String,
    /// The device of the member's physical volume (below its switch).
    pub dev: Arc<dyn BlockDev>,
    /// Some for the RW member.
    pub incr: Option<Increments>,
    freq: AtomicU64,
    errors: AtomicU64,
    repaired: AtomicU64,
    failed: AtomicBool,
}

impl Member {
    pub fn new(lid: String, dev: Arc<dyn BlockDev>, incr: Option<Increments>) -> Member {
        Member {
            lid,
            dev,
            incr,
            freq: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            repaired: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        }
    }

    pub fn rw(&self) -> bool {
        self.incr.is_some()
    }

    /// Reads served (table 1200's Freq).
    pub fn freq(&self) -> u64 {
        self.freq.load(Ordering::Relaxed)
    }

    /// Read errors counted against it.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Blocks rewritten with good data after a read error.
    pub fn repaired(&self) -> u64 {
        self.repaired.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Takes the member out of the read candidates (failed before).
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Release);
    }
}

/// The members of one S-VOL group as the data path sees them.
pub struct Group {
    pub name: String,
    pub members: Vec<Member>,
}

impl Group {
    pub fn new(name: String, members: Vec<Member>) -> Arc<Group> {
        Arc::new(Group { name, members })
    }

    /// The node of member `at` for its LID's switch.
    pub fn node(self: &Arc<Self>, at: usize) -> Arc<GroupDev> {
        Arc::new(GroupDev {
            group: Arc::clone(self),
            at,
        })
    }

    /// The member that serves the next read for member `me`: the healthy
    /// one with the lowest Freq among the RO members (and `me` itself if
    /// it is the RW member), not in `tried`. Ties go to the first.
    fn pick(&self, me: usize, tried: &[usize]) -> Option<usize> {
        self.members
            .iter()
            .enumerate()
            .filter(|(i, m)| (!m.rw() || *i == me) && !m.failed() && !tried.contains(i))
            .min_by_key(|(i, m)| (m.freq(), *i))
            .map(|(i, _)| i)
    }

    /// A read error of member `i`: counted; at the threshold the member
    /// is failed.
    fn read_failed(&self, i: usize, e: &Error) {
        let m = &self.members[i];
        let n = m.errors.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(group = %self.name, member = %m.lid, errors = n, "a member's read failed: {}", e.chain());
        if n >= ERROR_THRESHOLD && !m.failed.swap(true, Ordering::AcqRel) {
            tracing::error!(group = %self.name, member = %m.lid, "member failed after {n} read errors: no read goes to it");
        }
    }

    /// Reads for member `me` from the candidates in Freq order; every
    /// member that failed the read gets the good data written back.
    async fn balanced_read(&self, me: usize, off: u64, mut buf: IoBuf) -> BufResult {
        let mut tried: Vec<usize> = Vec::new();
        let mut first: Option<Error> = None;
        while let Some(i) = self.pick(me, &tried) {
            let m = &self.members[i];
            m.freq.fetch_add(1, Ordering::Relaxed);
            let (b, r) = m.dev.read(off, buf).await;
            buf = b;
            match r {
                Ok(()) => {
                    self.repair(&tried, off, &buf).await;
                    return (buf, Ok(()));
                }
                Err(e) => {
                    self.read_failed(i, &e);
                    first.get_or_insert(e);
                    tried.push(i);
                }
            }
        }
        let e = first.unwrap_or_else(|| {
            Error::new(
                ErrorKind::Io,
                format!(
                    "S-VOL group {}: no healthy member holds this block",
                    self.name
                ),
            )
        });
        (buf, Err(e))
    }

    /// Writes good data over the blocks of `bad` members that failed a
    /// read (block reassignment by the disk below).
    async fn repair(&self, bad: &[usize], off: u64, good: &IoBuf) {
        for &i in bad {
            let m = &self.members[i];
            let mut copy = crate::buf::pool::take(good.len());
            copy.as_mut_slice().copy_from_slice(good.as_slice());
            let (copy, r) = m.dev.write(off, copy, true).await;
            crate::buf::pool::give(copy);
            match r {
                Ok(()) => {
                    m.repaired.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => self.read_failed(i, &e),
            }
        }
    }

    /// A read of the RW member `me` over blocks some of which are in its
    /// increments: served by the member; if it fails, block run by block
    /// run from its DLV (increments) or the RO members (the rest).
    async fn rw_read(&self, me: usize, off: u64, buf: IoBuf) -> BufResult {
        let m = &self.members[me];
        m.freq.fetch_add(1, Ordering::Relaxed);
        let (mut buf, r) = m.dev.read(off, buf).await;
        let Err(e) = r else {
            return (buf, Ok(()));
        };
        self.read_failed(me, &e);
        let Some(incr) = &m.incr else {
            return (buf, Err(e));
        };
        let len = buf.len() as u64;
        let mut at = 0u64;
        for (n, set) in incr.bids.runs_of(off, len, usize::MAX) {
            let part = IoBuf::new(usize::try_from(n).unwrap_or(0));
            let (part, r) = if set {
                incr.dlv.read(off + at, part).await
            } else {
                self.balanced_read(usize::MAX, off + at, part).await
            };
            if let Err(e2) = r {
                return (
                    buf,
                    Err(e2.context("the RW member's read failed and so did its recovery")),
                );
            }
            let s = usize::try_from(at).unwrap_or(0);
            buf.as_mut_slice()[s..s + part.len()].copy_from_slice(part.as_slice());
            at += n;
        }
        self.repair(&[me], off, &buf).await;
        (buf, Ok(()))
    }

    /// Brings RW member `me`'s DLV back to the member over `off..off+len`
    /// (a region its write-intent log had marked at a crash): the block
    /// ids are stored first, then the member's data is copied under the
    /// blocks' lock, so no host write lands between the read and write.
    pub async fn resync_dlv(&self, me: usize, off: u64, len: u64) -> Result<()> {
        let m = &self.members[me];
        let Some(incr) = &m.incr else {
            return Ok(());
        };
        let len = len.min(m.dev.size().saturating_sub(off));
        if let Some(w) = incr.bids.mark(off, len) {
            w.await?;
        }
        let tr = incr.bids.tracks_of(off, len);
        let _tracks = incr.locks.lock(tr.start, tr.end).await;
        let buf = IoBuf::new(usize::try_from(len).unwrap_or(0));
        let (buf, r) = m.dev.read(off, buf).await;
        r?;
        let (_, r) = incr.dlv.write(off, buf, true).await;
        r
    }

    /// Flushes every member and DLV (before a write-intent log's regions
    /// are cleared).
    pub async fn flush_all(&self) -> Result<()> {
        let mut first = None;
        for m in &self.members {
            let r = match &m.incr {
                Some(i) => {
                    let (a, b) = futures::join!(m.dev.flush(), i.dlv.flush());
                    a.and(b)
                }
                None => m.dev.flush().await,
            };
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The increments write process: table 1300 stored, then the member
    /// and its DLV written at the same block id.
    async fn rw_write(&self, me: usize, off: u64, buf: IoBuf, fua: bool) -> BufResult {
        let m = &self.members[me];
        let Some(incr) = &m.incr else {
            return (buf, Err(read_only(&self.name, &m.lid)));
        };
        let len = buf.len() as u64;
        let tr = incr.bids.tracks_of(off, len);
        let _tracks = incr.locks.lock(tr.start, tr.end).await;
        let _intent = match begin_write(&*incr.intent, off, len).await {
            Ok(g) => g,
            Err(e) => return (buf, Err(e)),
        };
        if let Some(w) = incr.bids.mark(off, len)
            && let Err(e) = w.await
        {
            return (buf, Err(e));
        }
        let mut copy = crate::buf::pool::take(buf.len());
        copy.as_mut_slice().copy_from_slice(buf.as_slice());
        let ((buf, r), (copy, rd)) =
            futures::join!(m.dev.write(off, buf, fua), incr.dlv.write(off, copy, fua));
        crate::buf::pool::give(copy);
        (
            buf,
            r.and(rd.map_err(|e| e.context("the increments volume's write failed"))),
        )
    }

    async fn rw_zero(&self, me: usize, off: u64, len: u64, flags: ZeroFlags) -> Result<()> {
        let m = &self.members[me];
        let Some(incr) = &m.incr else {
            return Err(read_only(&self.name, &m.lid));
        };
        let tr = incr.bids.tracks_of(off, len);
        let _tracks = incr.locks.lock(tr.start, tr.end).await;
        let _intent = begin_write(&*incr.intent, off, len).await?;
        if let Some(w) = incr.bids.mark(off, len) {
            w.await?;
        }
        let (r, rd) = futures::join!(
            m.dev.write_zeroes(off, len, flags),
            incr.dlv.write_zeroes(off, len, flags)
        );
        r.and(rd)
    }
}

fn read_only(group: &str, lid: &str) -> Error {
    Error::new(
        ErrorKind::ReadOnly,
        format!("{lid} is a read-only (RO) member of S-VOL group {group}: hosts cannot write it"),
    )
}

/// A member's node over its LID.
pub struct GroupDev {
    group: Arc<Group>,
    at: usize,
}

impl GroupDev {
    fn me(&self) -> &Member {
        &self.group.members[self.at]
    }

    pub fn group(&self) -> &Arc<Group> {
        &self.group
    }

    /// The device below the node (the member's physical volume).
    pub fn below(&self) -> Arc<dyn BlockDev> {
        Arc::clone(&self.me().dev)
    }
}

impl BlockDev for GroupDev {
    fn size(&self) -> u64 {
        self.me().dev.size()
    }

    fn block_size(&self) -> u32 {
        self.me().dev.block_size()
    }

    fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
        Box::pin(async move {
            let g = &self.group;
            match &self.me().incr {
                Some(incr) => {
                    let tr = incr.bids.tracks_of(off, buf.len() as u64);
                    if incr.bids.next_set(tr.start).is_some_and(|t| t < tr.end) {
                        g.rw_read(self.at, off, buf).await
                    } else {
                        g.balanced_read(self.at, off, buf).await
                    }
                }
                None => g.balanced_read(self.at, off, buf).await,
            }
        })
    }

    fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        Box::pin(self.group.rw_write(self.at, off, buf, fua))
    }

    fn flush(&self) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            let m = self.me();
            match &m.incr {
                Some(incr) => {
                    let (r, rd) = futures::join!(m.dev.flush(), incr.dlv.flush());
                    r.and(rd)
                }
                None => m.dev.flush().await,
            }
        })
    }

    fn discard(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        // A discarded block of an RW member reads as zeroes on both.
        Box::pin(self.group.rw_zero(self.at, off, len, ZeroFlags::default()))
    }

    fn write_zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        Box::pin(self.group.rw_zero(self.at, off, len, flags))
    }

    fn block_status(&self, off: u64, len: u64) -> DevFuture<'_, Result<Vec<Extent>>> {
        Box::pin(async move { self.me().dev.block_status(off, len).await })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The node of a volume hosts may not use (a spare, an increments
/// volume): every request is refused with `why`.
pub struct Internal {
    pub below: Arc<dyn BlockDev>,
    pub why: String,
}

impl Internal {
    fn refuse(&self) -> Error {
        Error::new(ErrorKind::Invalid, self.why.clone())
    }
}

impl BlockDev for Internal {
    fn size(&self) -> u64 {
        self.below.size()
    }

    fn block_size(&self) -> u32 {
        self.below.block_size()
    }

    fn read(&self, _off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
        Box::pin(async move { (buf, Err(self.refuse())) })
    }

    fn write(&self, _off: u64, buf: IoBuf, _fua: bool) -> DevFuture<'_, BufResult> {
        Box::pin(async move { (buf, Err(self.refuse())) })
    }

    fn flush(&self) -> DevFuture<'_, Result<()>> {
        Box::pin(async move { self.below.flush().await })
    }

    fn discard(&self, _off: u64, _len: u64) -> DevFuture<'_, Result<()>> {
        Box::pin(async move { Err(self.refuse()) })
    }

    fn write_zeroes(&self, _off: u64, _len: u64, _flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        Box::pin(async move { Err(self.refuse()) })
    }

    fn block_status(&self, _off: u64, _len: u64) -> DevFuture<'_, Result<Vec<Extent>>> {
        Box::pin(async move { Err(self.refuse()) })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
