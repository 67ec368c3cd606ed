//! Durable bitmaps: bits kept in memory and stored as pages of one object
//! in the pool database, with group commit (DESIGN rule 2). The
//! write-intent log of a group ([`super::intent`]) and the differential
//! bitmap of a pair ([`super::diffmap`]) are both made of one.
//!
//! ```text
//!   want(bit) ─> desired set, page dirty ─> one commit thread per bitmap:
//!                                           snapshot dirty pages, write
//!                                           them in one durable redb
//!                                           transaction, then set the
//!                                           committed bits still desired
//!   writers wait for the sequence number of the commit that stores them
//! ```
//!
//! Invariant: a *committed* bit is set only after a commit that stored it
//! set, and is cleared in memory before the commit that stores it clear.
//! Its owner lets a write go ahead only on committed bits, so at any crash
//! every bit a write relied on is set in the database.

#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::sync::{Arc, MutexGuard};

use tokio::sync::watch;

use super::{Meta, PAGE_BITS, PAGE_BYTES};
use crate::error::{Error, ErrorKind, Result};

/// Whether bit `r` is set in `bits`.
pub fn get(bits: &[u64], r: u64) -> bool {
    let w = usize::try_from(r / 64).unwrap_or(usize::MAX);
    bits.get(w).is_some_and(|x| x & (1 << (r % 64)) != 0)
}

/// Sets or clears bit `r` of `bits`, growing it as needed.
pub fn set(bits: &mut Vec<u64>, r: u64, v: bool) {
    let w = usize::try_from(r / 64).unwrap_or(usize::MAX);
    if w >= bits.len() {
        if !v {
            return;
        }
        bits.resize(w + 1, 0);
    }
    if v {
        bits[w] |= 1 << (r % 64);
    } else {
        bits[w] &= !(1 << (r % 64));
    }
}

/// The set bits of `bits`, in order.
pub fn ones(bits: &[u64]) -> impl Iterator<Item = u64> + '_ {
    bits.iter().enumerate().flat_map(|(w, &word)| {
        (0..64u64)
            .filter(move |b| word & (1 << b) != 0)
            .map(move |b| (w as u64) * 64 + b)
    })
}

/// Pages of a commit: (page number, bytes).
pub type Pages = Vec<(u64, Vec<u8>)>;

/// The in-memory side of a durable bitmap; its owner keeps it under its
/// own lock.
#[derive(Default)]
pub struct Bits {
    /// What the next commit stores.
    pub desired: Vec<u64>,
    /// What the database holds (or will, for bits being cleared).
    pub committed: Vec<u64>,
    dirty: Dirty,
}

impl Bits {
    /// The bits stored for `object`: desired and committed alike. Bits at
    /// or past `limit` are damage, not state, and refused naming `what`.
    pub fn load(meta: &Meta, object: u64, limit: u64, what: &str) -> Result<Bits> {
        let mut bits = Bits {
            dirty: Dirty::new(),
            ..Bits::default()
        };
        for (page, bytes) in meta.pages(object)? {
            let base = page.saturating_mul(PAGE_BITS);
            for r in ones(&words_of(&bytes)).map(|b| base.saturating_add(b)) {
                if r >= limit {
                    return Err(Error::corrupt(format!(
                        "{what} page {page} of object {object} has bit {r} set, beyond its \
                         {limit} bits: the metadata is damaged"
                    )));
                }
                set(&mut bits.desired, r, true);
                set(&mut bits.committed, r, true);
            }
        }
        Ok(bits)
    }

    /// Whether `r` is stored set.
    pub fn committed(&self, r: u64) -> bool {
        get(&self.committed, r)
    }

    /// Asks for bit `r` to be stored set; true when a commit must store it
    /// before a write may rely on it.
    pub fn want(&mut self, r: u64) -> bool {
        if get(&self.committed, r) {
            return false;
        }
        set(&mut self.desired, r, true);
        // Dirty even when the bit is already desired: it may be in the
        // commit running now, whose number the caller is not told; the
        // caller waits for the next one, which stores the page again.
        self.dirty.pages.insert(r / PAGE_BITS);
        true
    }

    /// Clears bit `r` now; the next commit stores it clear.
    pub fn clear(&mut self, r: u64) {
        if get(&self.desired, r) || get(&self.committed, r) {
            set(&mut self.desired, r, false);
            set(&mut self.committed, r, false);
            self.dirty.pages.insert(r / PAGE_BITS);
        }
    }

    /// Whether anything waits to be stored.
    pub fn dirty(&self) -> bool {
        !self.dirty.pages.is_empty()
    }

    /// The sequence number of a commit running now (its pages taken but
    /// not yet stored), if one is.
    pub fn running(&self) -> Option<u64> {
        self.dirty.running()
    }

    /// The sequence number of the commit that will store what is dirty
    /// now, and whether the caller must start the commit thread.
    pub fn schedule(&mut self) -> (u64, bool) {
        self.dirty.schedule()
    }

    /// After `bytes` (a snapshot of desired bits) is durable for `page`:
    /// set the committed bits that are in the snapshot and still desired.
    fn stored(&mut self, page: u64, bytes: &[u8]) {
        let words_per_page = PAGE_BITS / 64;
        for (i, snap) in words_of(bytes).into_iter().enumerate() {
            let w = usize::try_from(page * words_per_page + i as u64).unwrap_or(usize::MAX);
            let add = snap & self.desired.get(w).copied().unwrap_or(0);
            if add != 0 {
                if w >= self.committed.len() {
                    self.committed.resize(w + 1, 0);
                }
                self.committed[w] |= add;
            }
        }
    }
}

/// What a [`Committer`] stores: pages kept in memory by their owner,
/// some dirty. [`Bits`] is one; a work store's slot map
/// ([`super::slotmap`]) another.
pub trait PageSource {
    /// Takes the dirty pages for a commit: its sequence number and the
    /// pages' bytes, or None (and the commit loop ends) when none are
    /// left.
    fn take_dirty(&mut self) -> Option<(u64, Pages)>;
    /// `bytes` (a snapshot taken by `take_dirty`) is durable for `page`.
    fn stored(&mut self, page: u64, bytes: &[u8]);
    /// The commit of `pages` failed: they are dirty again and the commit
    /// loop ends. Returns the last sequence number promised so far.
    fn failed(&mut self, pages: &Pages) -> u64;
}

/// The bookkeeping of a page source's commits.
#[derive(Default)]
pub struct Dirty {
    pub pages: BTreeSet<u64>,
    /// Sequence number the next commit will take.
    next_seq: u64,
    committing: bool,
}

impl Dirty {
    pub fn new() -> Dirty {
        Dirty {
            next_seq: 1,
            ..Dirty::default()
        }
    }

    /// The sequence number of the commit that will store what is dirty
    /// now, and whether the caller must start the commit loop.
    pub fn schedule(&mut self) -> (u64, bool) {
        let start = !self.committing;
        self.committing = true;
        (self.next_seq, start)
    }

    /// The sequence number of a commit running now (its pages taken but
    /// not yet stored), if one is.
    pub fn running(&self) -> Option<u64> {
        (self.committing && self.next_seq > 1).then(|| self.next_seq - 1)
    }

    /// The pages to store now (their numbers) and the commit's sequence
    /// number, or None when none are left (the loop ends).
    pub fn take(&mut self) -> Option<(u64, BTreeSet<u64>)> {
        if self.pages.is_empty() {
            self.committing = false;
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        Some((seq, std::mem::take(&mut self.pages)))
    }

    /// See [`PageSource::failed`].
    pub fn failed(&mut self, pages: &Pages) -> u64 {
        self.pages.extend(pages.iter().map(|(p, _)| *p));
        self.committing = false;
        let promised = self.next_seq;
        self.next_seq += 1;
        promised
    }
}

impl PageSource for Bits {
    fn take_dirty(&mut self) -> Option<(u64, Pages)> {
        let (seq, pages) = self.dirty.take()?;
        let pages = pages
            .into_iter()
            .map(|p| (p, page_bytes(&self.desired, p)))
            .collect();
        Some((seq, pages))
    }

    fn stored(&mut self, page: u64, bytes: &[u8]) {
        Bits::stored(self, page, bytes);
    }

    fn failed(&mut self, pages: &Pages) -> u64 {
        self.dirty.failed(pages)
    }
}

fn words_of(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(a)
        })
        .collect()
}

fn page_bytes(bits: &[u64], page: u64) -> Vec<u8> {
    let mut out = vec![0u8; PAGE_BYTES];
    let words_per_page = PAGE_BITS / 64;
    for i in 0..words_per_page {
        let w = usize::try_from(page * words_per_page + i).unwrap_or(usize::MAX);
        if let Some(word) = bits.get(w) {
            let o = usize::try_from(i * 8).unwrap_or(0);
            out[o..o + 8].copy_from_slice(&word.to_le_bytes());
        }
    }
    out
}

/// Where the commits are: (every sequence number up to this one is
/// settled, the last one that stored its pages, the last error). A
/// waiter's commit stored its bits if a commit at or after it succeeded:
/// a failed commit's pages go back to dirty, so the next success stores
/// them too.
#[derive(Clone, Default)]
struct Done {
    settled: u64,
    stored: u64,
    error: Option<Arc<str>>,
}

/// The commit side of a durable bitmap: where its pages go and who waits.
pub struct Committer {
    meta: Arc<Meta>,
    object: u64,
    /// What the commits store, for messages ("write-intent log").
    what: &'static str,
    done: watch::Sender<Done>,
}

impl Committer {
    pub fn new(meta: Arc<Meta>, object: u64, what: &'static str) -> Committer {
        let (done, _) = watch::channel(Done::default());
        Committer {
            meta,
            object,
            what,
            done,
        }
    }

    /// Commits dirty pages until none are left; one pass serves every
    /// writer that joined before it took its snapshot. `lock` gives the
    /// owner's state, `bits` the bitmap in it. Runs on its own thread
    /// (a durable commit is never made under a lock or on a worker).
    pub fn run<'a, S: 'a, P: PageSource>(
        &self,
        lock: impl Fn() -> MutexGuard<'a, S>,
        bits: impl Fn(&mut S) -> &mut P,
    ) {
        loop {
            let Some((seq, pages)) = bits(&mut lock()).take_dirty() else {
                return;
            };
            let r = self.meta.write(true, |tx| {
                for (p, bytes) in &pages {
                    tx.put_page(self.object, *p, bytes)?;
                }
                Ok(())
            });
            let mut st = lock();
            let b = bits(&mut st);
            match r {
                Ok(()) => {
                    for (p, bytes) in &pages {
                        b.stored(*p, bytes);
                    }
                    drop(st);
                    self.done.send_modify(|d| {
                        d.settled = d.settled.max(seq);
                        d.stored = d.stored.max(seq);
                    });
                }
                Err(e) => {
                    tracing::error!("{} commit failed: {}", self.what, e.chain());
                    // Every number promised so far fails with it (no
                    // commit runs for them now); later writers get a new
                    // one and start the next commit themselves.
                    let promised = b.failed(&pages);
                    drop(st);
                    let msg: Arc<str> = Arc::from(e.chain());
                    self.done.send_modify(|d| {
                        d.settled = d.settled.max(promised);
                        d.error = Some(msg);
                    });
                    return;
                }
            }
        }
    }

    /// Waits until commit `need` is done; its error if it failed.
    pub async fn wait(&self, need: u64) -> Result<()> {
        let mut rx = self.done.subscribe();
        let r = rx.wait_for(|d| d.settled >= need).await;
        match r {
            Ok(d) if d.stored >= need => Ok(()),
            Ok(d) => Err(Error::new(
                ErrorKind::Io,
                format!(
                    "cannot store the {}: {}",
                    self.what,
                    d.error.as_deref().unwrap_or("a commit failed")
                ),
            )),
            Err(_) => Err(Error::new(
                ErrorKind::Shutdown,
                format!("the {} is closed", self.what),
            )),
        }
    }
}

/// Runs `work` (a commit loop) off the worker: on tokio's blocking pool
/// inside a runtime, else on a thread of its own.
pub fn spawn_commit(work: impl FnOnce() + Send + 'static) {
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::task::spawn_blocking(work);
    } else {
        std::thread::spawn(work);
    }
}
