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

use crate::blockdev::{BlockDev, BufResult, DevFuture, Extent, ZeroFlags, begin_write};
use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result};

/// Read errors after which a member is failed (seed 003: "repeated or
/// device-level" errors; a first one is repaired in place).
pub const ERROR_THRESHOLD: u64 = 8;

pub use super::incr::Increments;

/// One host-visible member (a row of tables 900/1200 with Attr RO or RW).
pub struct Member {
    pub lid: String,
    /// The device of the member's physical volume (below its switch);
    /// none while the LID is vacant (its PID took over an RW member's
    /// role, and no spare has filled it yet).
    dev: parking_lot::RwLock<Option<Arc<dyn BlockDev>>>,
    pub(super) size: u64,
    block_size: u32,
    /// Some for the RW member.
    pub incr: Option<Increments>,
    freq: AtomicU64,
    errors: AtomicU64,
    repaired: AtomicU64,
    failed: AtomicBool,
}

impl Member {
    pub fn new(
        lid: String,
        dev: Option<Arc<dyn BlockDev>>,
        size: u64,
        incr: Option<Increments>,
    ) -> Member {
        let block_size = dev.as_ref().map_or(512, |d| d.block_size());
        Member {
            lid,
            dev: parking_lot::RwLock::new(dev),
            size,
            block_size,
            incr,
            freq: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            repaired: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        }
    }

    /// The LID's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The PID's device now, if the LID has one.
    pub fn dev(&self) -> Option<Arc<dyn BlockDev>> {
        self.dev.read().clone()
    }

    /// Gives the LID another PID's device (or none: vacant).
    pub fn set_dev(&self, dev: Option<Arc<dyn BlockDev>>) {
        *self.dev.write() = dev;
    }

    /// The device, or the error of a vacant LID.
    pub(super) fn need_dev(&self) -> Result<Arc<dyn BlockDev>> {
        self.dev().ok_or_else(|| {
            Error::new(
                ErrorKind::Io,
                format!("member {} has no physical volume now (vacant)", self.lid),
            )
        })
    }

    /// Flushes the PID (and the DLV of an RW member).
    pub async fn flush(&self) -> Result<()> {
        let Some(dev) = self.dev() else {
            return Ok(());
        };
        match &self.incr {
            Some(i) if i.dlv_written() => {
                let dlv = i.dlv();
                let (a, b) = futures::join!(dev.flush(), dlv.flush());
                a.and(b)
            }
            _ => dev.flush().await,
        }
    }

    /// Clears the failure (a spare filled the LID).
    pub fn unfail(&self) {
        self.failed.store(false, Ordering::Release);
        self.errors.store(0, Ordering::Relaxed);
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
    /// Where changes of the tables are stored (the engine).
    pub(super) hooks: Arc<dyn Hooks>,
    /// The RO member whose image is being copied onto the P-VOL: it does
    /// not take over the RW role while it is (that would write it).
    held: parking_lot::Mutex<Option<usize>>,
}

/// A change of a group's tables the data path makes (error process unit
/// 650), stored by the engine before the data path goes on.
#[derive(Debug, Clone)]
pub enum Change {
    /// Member `lid` failed (read errors past the threshold).
    Failed { lid: String },
    /// RO member `lid` leaves the read candidates to take over the RW
    /// member's role: from now on it is not the split image.
    Vacating { lid: String },
    /// RW member `lid`'s increments volume failed a write: the member
    /// holds the increments alone (no takeover is possible).
    DlvFailed { lid: String },
    /// RW member `rw` now holds `from`'s PID (brought up to date with the
    /// increments); `from`'s LID is vacant.
    TookOver { rw: String, from: String },
}

/// Stores a group's changes (implemented by the engine).
pub trait Hooks: Send + Sync + 'static {
    fn store(&self, group: &str, change: Change) -> DevFuture<'static, Result<()>>;
}

/// Hooks that store nothing (tests of the data path alone).
pub struct NoHooks;

impl Hooks for NoHooks {
    fn store(&self, _group: &str, _change: Change) -> DevFuture<'static, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

impl Group {
    pub fn new(name: String, members: Vec<Member>, hooks: Arc<dyn Hooks>) -> Arc<Group> {
        Arc::new(Group {
            name,
            members,
            hooks,
            held: parking_lot::Mutex::new(None),
        })
    }

    /// Holds RO member `at` as the source of a copy onto the P-VOL (or
    /// releases it: None).
    pub fn hold(&self, at: Option<usize>) {
        *self.held.lock() = at;
    }

    /// Whether member `i` is held (see [`Group::hold`]).
    pub(super) fn is_held(&self, i: usize) -> bool {
        *self.held.lock() == Some(i)
    }

    /// The node of member `at` for its LID's switch, which held `own`.
    pub fn node(self: &Arc<Self>, at: usize, own: Arc<dyn BlockDev>) -> Arc<GroupDev> {
        Arc::new(GroupDev {
            group: Arc::clone(self),
            at,
            own,
        })
    }

    /// The member that serves the next read for member `me`: the healthy
    /// one with the lowest Freq among the RO members (and `me` itself if
    /// it is the RW member), not in `tried`. Ties go to the first.
    fn pick(&self, me: usize, tried: &[usize]) -> Option<usize> {
        self.members
            .iter()
            .enumerate()
            .filter(|(i, m)| {
                (!m.rw() || *i == me) && !m.failed() && !tried.contains(i) && m.dev.read().is_some()
            })
            .min_by_key(|(i, m)| (m.freq(), *i))
            .map(|(i, _)| i)
    }

    /// A read error of member `i`: counted; at the threshold the member
    /// is failed.
    async fn read_failed(&self, i: usize, e: &Error) {
        let m = &self.members[i];
        let n = m.errors.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(group = %self.name, member = %m.lid, errors = n, "a member's read failed: {}", e.chain());
        if n >= ERROR_THRESHOLD && !m.failed.swap(true, Ordering::AcqRel) {
            tracing::error!(group = %self.name, member = %m.lid, "member failed after {n} read errors: no read goes to it");
            let change = Change::Failed { lid: m.lid.clone() };
            if let Err(e) = self.hooks.store(&self.name, change).await {
                tracing::error!(group = %self.name, member = %m.lid, "storing the failure failed: {}", e.chain());
            }
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
            let (b, r) = match m.dev() {
                Some(d) => d.read(off, buf).await,
                None => (buf, m.need_dev().map(drop)),
            };
            buf = b;
            match r {
                Ok(()) => {
                    self.repair(&tried, off, &buf).await;
                    return (buf, Ok(()));
                }
                Err(e) => {
                    self.read_failed(i, &e).await;
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
            let Some(dev) = m.dev() else { continue };
            let (copy, r) = dev.write(off, copy, true).await;
            crate::buf::pool::give(copy);
            match r {
                Ok(()) => {
                    m.repaired.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => self.read_failed(i, &e).await,
            }
        }
    }

    /// A read of the RW member `me` over blocks some of which are in its
    /// increments: served by the member; if it fails, block run by block
    /// run from its DLV (increments) or the RO members (the rest).
    async fn rw_read(&self, me: usize, off: u64, buf: IoBuf) -> BufResult {
        let m = &self.members[me];
        m.freq.fetch_add(1, Ordering::Relaxed);
        let (mut buf, r) = match m.dev() {
            Some(d) => d.read(off, buf).await,
            None => (buf, m.need_dev().map(drop)),
        };
        let Err(e) = r else {
            return (buf, Ok(()));
        };
        self.read_failed(me, &e).await;
        let Some(incr) = &m.incr else {
            return (buf, Err(e));
        };
        let len = buf.len() as u64;
        let mut at = 0u64;
        for (n, set) in incr.bids.runs_of(off, len, usize::MAX) {
            let part = IoBuf::new(usize::try_from(n).unwrap_or(0));
            let (part, r) = if set && !incr.dlv_ok() {
                let e = Error::new(ErrorKind::Io, "its increments volume failed before");
                (part, Err(e))
            } else if set {
                incr.dlv().read(off + at, part).await
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
        let Some(incr) = m.incr.as_ref().filter(|i| i.dlv_written()) else {
            return Ok(());
        };
        let dev = m.need_dev()?;
        let len = len.min(m.size.saturating_sub(off));
        if let Some(w) = incr.bids.mark(off, len) {
            w.await?;
        }
        let tr = incr.bids.tracks_of(off, len);
        let _tracks = incr.locks.lock(tr.start, tr.end).await;
        let buf = IoBuf::new(usize::try_from(len).unwrap_or(0));
        let (buf, r) = dev.read(off, buf).await;
        r?;
        let (_, r) = incr.dlv().write(off, buf, true).await;
        r
    }

    /// Flushes every member and DLV (before a write-intent log's regions
    /// are cleared).
    pub async fn flush_all(&self) -> Result<()> {
        let mut first = None;
        for m in &self.members {
            let r = m.flush().await;
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The increments write process: table 1300 stored, then the member
    /// and its DLV written at the same block id. If the member's write
    /// fails, the write error process (`recover.rs`) gives the LID an RO
    /// member's PID brought up to date, and the write is issued again
    /// there: the host sees no error.
    async fn rw_write(&self, me: usize, off: u64, buf: IoBuf, fua: bool) -> BufResult {
        let (buf, r) = self.rw_write_once(me, off, buf, fua).await;
        match self.again(me, r).await {
            Ok(false) => (buf, Ok(())),
            Err(e) => (buf, Err(e)),
            Ok(true) => {
                let (buf, r) = self.rw_write_once(me, off, buf, fua).await;
                (buf, r.map_err(Failure::into_error))
            }
        }
    }

    /// After the first try of an RW member's write or zeroing: whether to
    /// issue it again, on the PID the write error process just gave the
    /// member (its side failed); an error is the host's.
    async fn again(&self, me: usize, r: std::result::Result<(), Failure>) -> Result<bool> {
        match r {
            Ok(()) => Ok(false),
            Err(Failure::Other(e)) => Err(e),
            Err(Failure::Member(e, failed)) => match self.take_over(me, &failed, &e).await {
                Ok(()) => Ok(true),
                Err(e2) => Err(e.context(format!("and no member could take over: {}", e2.chain()))),
            },
        }
    }

    async fn rw_write_once(
        &self,
        me: usize,
        off: u64,
        buf: IoBuf,
        fua: bool,
    ) -> (IoBuf, std::result::Result<(), Failure>) {
        let m = &self.members[me];
        let Some(incr) = &m.incr else {
            return (buf, Err(Failure::Other(read_only(&self.name, &m.lid))));
        };
        let _gate = incr.gate.read().await;
        let dev = match m.need_dev() {
            Ok(d) => d,
            Err(e) => return (buf, Err(Failure::Other(e))),
        };
        let (buf, r) = self.rw_write_at(me, incr, &dev, off, buf, fua).await;
        (
            buf,
            r.map_err(|(member, e)| {
                if member {
                    Failure::Member(e, dev)
                } else {
                    Failure::Other(e)
                }
            }),
        )
    }

    /// Writes the member's `dev` and the DLV; an error says whether the
    /// member's side failed.
    async fn rw_write_at(
        &self,
        me: usize,
        incr: &Increments,
        dev: &Arc<dyn BlockDev>,
        off: u64,
        buf: IoBuf,
        fua: bool,
    ) -> (IoBuf, std::result::Result<(), (bool, Error)>) {
        let len = buf.len() as u64;
        let tr = incr.bids.tracks_of(off, len);
        let _tracks = incr.locks.lock(tr.start, tr.end).await;
        let _intent = match begin_write(&*incr.intent, off, len).await {
            Ok(g) => g,
            Err(e) => return (buf, Err((false, e))),
        };
        if let Err(e) = self.prefill(me, incr, dev, off, len).await {
            return (buf, Err((false, e)));
        }
        if let Some(w) = incr.bids.mark(off, len)
            && let Err(e) = w.await
        {
            return (buf, Err((false, e)));
        }
        if !incr.dlv_written() {
            // Answered only once the DLV's failure is stored.
            if !incr.failure_stored()
                && let Err(e) = self
                    .dlv_lost(me, incr, &Error::invalid("failed before"))
                    .await
            {
                return (buf, Err((false, e)));
            }
            let (buf, r) = dev.write(off, buf, fua).await;
            return (buf, r.map_err(|e| (true, e)));
        }
        let mut copy = crate::buf::pool::take(buf.len());
        copy.as_mut_slice().copy_from_slice(buf.as_slice());
        let dlv = incr.dlv();
        let ((buf, r), (copy, rd)) =
            futures::join!(dev.write(off, buf, fua), dlv.write(off, copy, fua));
        crate::buf::pool::give(copy);
        let r = match (r, rd) {
            (Err(e), _) => Err((true, e)),
            (Ok(()), Err(e)) => self.dlv_lost(me, incr, &e).await.map_err(|e| (false, e)),
            (Ok(()), Ok(())) => Ok(()),
        };
        (buf, r)
    }

    /// The DLV of RW member `me` failed a write that reached the member:
    /// the failure is stored (a restart must not trust the DLV), then the
    /// write counts as done — the member holds it. The host sees an error
    /// only if the failure cannot be stored.
    async fn dlv_lost(&self, me: usize, incr: &Increments, e: &Error) -> Result<()> {
        let lid = self.members[me].lid.clone();
        if incr.fail_dlv() {
            tracing::error!(group = %self.name, member = %lid,
                "the increments volume's write failed ({}): the member holds the increments alone; no takeover is possible until the group is remade",
                e.chain());
        }
        self.hooks
            .store(&self.name, Change::DlvFailed { lid })
            .await
            .map_err(|s| {
                s.context(format!(
                    "the increments volume's write failed ({}) and its failure was not stored",
                    e.chain()
                ))
            })?;
        incr.set_failure_stored();
        Ok(())
    }

    /// Zeroing (or discarding) blocks of the RW member: an increments
    /// write of zeroes, taken over like a write when the member fails.
    async fn rw_zero(&self, me: usize, off: u64, len: u64, flags: ZeroFlags) -> Result<()> {
        let r = self.rw_zero_once(me, off, len, flags).await;
        if self.again(me, r).await? {
            self.rw_zero_once(me, off, len, flags)
                .await
                .map_err(Failure::into_error)?;
        }
        Ok(())
    }

    async fn rw_zero_once(
        &self,
        me: usize,
        off: u64,
        len: u64,
        flags: ZeroFlags,
    ) -> std::result::Result<(), Failure> {
        let m = &self.members[me];
        let Some(incr) = &m.incr else {
            return Err(Failure::Other(read_only(&self.name, &m.lid)));
        };
        // The order of rw_write_once: the gate, then the blocks' lock.
        let _gate = incr.gate.read().await;
        let dev = m.need_dev().map_err(Failure::Other)?;
        let tr = incr.bids.tracks_of(off, len);
        let _tracks = incr.locks.lock(tr.start, tr.end).await;
        let _intent = begin_write(&*incr.intent, off, len)
            .await
            .map_err(Failure::Other)?;
        self.prefill(me, incr, &dev, off, len)
            .await
            .map_err(Failure::Other)?;
        if let Some(w) = incr.bids.mark(off, len) {
            w.await.map_err(Failure::Other)?;
        }
        if !incr.dlv_written() {
            if !incr.failure_stored() {
                self.dlv_lost(me, incr, &Error::invalid("failed before"))
                    .await
                    .map_err(Failure::Other)?;
            }
            return dev
                .write_zeroes(off, len, flags)
                .await
                .map_err(|e| Failure::Member(e, dev));
        }
        let dlv = incr.dlv();
        let (r, rd) = futures::join!(
            dev.write_zeroes(off, len, flags),
            dlv.write_zeroes(off, len, flags)
        );
        match (r, rd) {
            (Err(e), _) => Err(Failure::Member(e, dev)),
            (Ok(()), Err(e)) => self.dlv_lost(me, incr, &e).await.map_err(Failure::Other),
            (Ok(()), Ok(())) => Ok(()),
        }
    }
}

impl Group {
    /// Before a write covers part of a block that is not in table 1300
    /// yet: the block's split-image data goes to the DLV first, so the
    /// DLV holds the whole block once its id is in the table (a rollback,
    /// a read of the DLV, a takeover copy whole blocks). The caller holds
    /// the blocks' lock. The data comes from an RO member (the block is
    /// the split image there), or from the member itself.
    async fn prefill(
        &self,
        me: usize,
        incr: &Increments,
        dev: &Arc<dyn BlockDev>,
        off: u64,
        len: u64,
    ) -> Result<()> {
        let block = incr.bids.track();
        let size = self.members[me].size;
        let tr = incr.bids.tracks_of(off, len);
        if tr.is_empty() || !incr.dlv_written() {
            return Ok(());
        }
        let mut ends = vec![tr.start];
        if tr.end - 1 != tr.start {
            ends.push(tr.end - 1);
        }
        for b in ends {
            let bo = b.saturating_mul(block);
            let bl = block.min(size.saturating_sub(bo));
            let covered = off <= bo && off.saturating_add(len) >= bo + bl;
            if covered || incr.bids.is_set(b) {
                continue;
            }
            let src = self
                .source(&self.members[me].lid)
                .unwrap_or_else(|_| Arc::clone(dev));
            let buf = IoBuf::new(usize::try_from(bl).unwrap_or(0));
            let (buf, r) = src.read(bo, buf).await;
            r?;
            let (_, r) = incr.dlv().write(bo, buf, false).await;
            r?;
        }
        Ok(())
    }
}

/// Why an RW write failed: the member's side (the write error process
/// takes over) or anything else.
enum Failure {
    Member(Error, Arc<dyn BlockDev>),
    Other(Error),
}

impl Failure {
    fn into_error(self) -> Error {
        match self {
            Failure::Member(e, _) | Failure::Other(e) => e,
        }
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
    /// What the LID's switch held before (its volume's own device).
    own: Arc<dyn BlockDev>,
}

impl GroupDev {
    fn me(&self) -> &Member {
        &self.group.members[self.at]
    }

    pub fn group(&self) -> &Arc<Group> {
        &self.group
    }

    /// What the LID's switch held before the node (the volume's own
    /// device: after a takeover not the LID's PID).
    pub fn below(&self) -> Arc<dyn BlockDev> {
        Arc::clone(&self.own)
    }
}

impl BlockDev for GroupDev {
    fn size(&self) -> u64 {
        self.me().size
    }

    fn block_size(&self) -> u32 {
        self.me().block_size
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
        Box::pin(self.me().flush())
    }

    fn discard(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        // A discarded block of an RW member reads as zeroes on both.
        Box::pin(self.group.rw_zero(self.at, off, len, ZeroFlags::default()))
    }

    fn write_zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        Box::pin(self.group.rw_zero(self.at, off, len, flags))
    }

    fn block_status(&self, off: u64, len: u64) -> DevFuture<'_, Result<Vec<Extent>>> {
        Box::pin(async move {
            match self.me().dev() {
                Some(d) => d.block_status(off, len).await,
                // Vacant: nothing said, which reads as data.
                None => Ok(Vec::new()),
            }
        })
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
