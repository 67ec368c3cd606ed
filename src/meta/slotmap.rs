//! The slot map of a work store (seed 002, second embodiment, table T4 of
//! FIG. 11A/11B; the disk-level T7 of FIG. 16 has the same shape): the
//! store is filled like a log, one slot after the other up to its
//! terminal address, and each used slot holds the latest data of one unit
//! of a main device — keyed by (main id, unit), so several main devices
//! can share one store (FIG. 20A/20B).
//!
//! ```text
//!   assign(key) ─> slot = terminal, terminal += 1    (memory only)
//!   the data write of the slot completes ─> written(slot)
//!   the owner flushes the store ─> persist(slots written before the flush)
//!                                   ─> the entries' pages, one durable commit
//!   remove(key) (write-back) ─> stored clear with the next commit
//! ```
//!
//! Order: an entry is stored only after its slot's data is durable on the
//! store, so after a crash every stored entry points at the data it
//! names; an entry not yet stored is lost with the unflushed write it
//! belongs to, and the unit reads as it did before — what a disk does with
//! an unflushed write. (Storing the entry first, as the write-intent rule
//! does for a bit, would point at a slot that may hold nothing yet.) A
//! removal is stored before a host write that relies on it (the owner
//! waits for [`SlotMap::commit`]), so a write-back never replays old data
//! over a newer direct write after a crash.
//!
//! Each slot takes 8 bytes in the pages of its object: key + 1, 0 for a
//! free slot.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::bits::{Committer, Dirty, PageSource, Pages, spawn_commit};
use super::{Meta, PAGE_BYTES};
use crate::error::{Error, Result};

/// Slots per page.
const PER_PAGE: u64 = (PAGE_BYTES / 8) as u64;

/// A key: the main device's id in the top 16 bits, its unit below.
pub fn key(main: u16, unit: u64) -> u64 {
    (u64::from(main) << 48) | (unit & ((1 << 48) - 1))
}

/// The (main id, unit) of `key`.
pub fn split_key(key: u64) -> (u16, u64) {
    ((key >> 48) as u16, key & ((1 << 48) - 1))
}

#[derive(Default)]
struct St {
    /// Per slot: key + 1 of its entry (0: free), as hosts see it now.
    live: Vec<u64>,
    /// Per slot: what the next commit stores.
    durable: Vec<u64>,
    index: HashMap<u64, u64>,
    /// Entries by main id.
    per_main: HashMap<u16, u64>,
    /// Slots used so far (the seed's terminal address, 1-based, is this).
    terminal: u64,
    /// Slots whose data write completed since the last `take_written`.
    written: Vec<u64>,
    dirty: Dirty,
}

impl PageSource for St {
    fn take_dirty(&mut self) -> Option<(u64, Pages)> {
        let (seq, pages) = self.dirty.take()?;
        let pages = pages
            .into_iter()
            .map(|p| (p, page_bytes(&self.durable, p)))
            .collect();
        Some((seq, pages))
    }

    fn stored(&mut self, _page: u64, _bytes: &[u8]) {}

    fn failed(&mut self, pages: &Pages) -> u64 {
        self.dirty.failed(pages)
    }
}

/// Starts the log over (T4's terminal back to NULL) when it is empty and
/// every removal is stored: no commit pending, none running beyond
/// `committed` (one the caller waited for). Before that a stored entry
/// may still name a freed slot, and data of a new unit written there
/// would be replayed over the old unit's address after a crash.
fn restart_if_clear(st: &mut St, committed: u64) {
    if st.index.is_empty()
        && st.dirty.pages.is_empty()
        && st.dirty.running().is_none_or(|r| r <= committed)
    {
        st.terminal = 0;
        st.written.clear();
    }
}

fn page_bytes(entries: &[u64], page: u64) -> Vec<u8> {
    let mut out = vec![0u8; PAGE_BYTES];
    let first = page.saturating_mul(PER_PAGE);
    for i in 0..PER_PAGE {
        let v = usize::try_from(first + i)
            .ok()
            .and_then(|s| entries.get(s))
            .copied()
            .unwrap_or(0);
        let o = (i * 8) as usize;
        out[o..o + 8].copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// The durable slot map of one work store.
pub struct SlotMap {
    slots: u64,
    /// A unit's slot is its own number (a secondary volume written at the
    /// main volume's addresses; the map is then T2's differential bitmap).
    direct: bool,
    st: Mutex<St>,
    commits: Arc<Committer>,
}

impl SlotMap {
    /// The map stored for `object`, of a store of `slots` slots filled
    /// like a log.
    pub fn open(meta: Arc<Meta>, object: u64, slots: u64) -> Result<Arc<SlotMap>> {
        Self::open_as(meta, object, slots, false)
    }

    /// The map stored for `object` of a store written at its main's
    /// addresses: unit u's slot is u.
    pub fn open_direct(meta: Arc<Meta>, object: u64, slots: u64) -> Result<Arc<SlotMap>> {
        Self::open_as(meta, object, slots, true)
    }

    fn open_as(meta: Arc<Meta>, object: u64, slots: u64, direct: bool) -> Result<Arc<SlotMap>> {
        let n = usize::try_from(slots)
            .map_err(|_| Error::invalid(format!("a work store of {slots} slots is too big")))?;
        let mut st = St {
            live: vec![0; n],
            durable: vec![0; n],
            dirty: Dirty::new(),
            ..St::default()
        };
        for (page, bytes) in meta.pages(object)? {
            for (i, c) in bytes.chunks_exact(8).enumerate() {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                let v = u64::from_le_bytes(a);
                if v == 0 {
                    continue;
                }
                let slot = page.saturating_mul(PER_PAGE).saturating_add(i as u64);
                let Some(s) = usize::try_from(slot).ok().filter(|&s| s < n) else {
                    return Err(Error::corrupt(format!(
                        "work store map {object}: slot {slot} is used, beyond its {slots} slots: \
                         the metadata is damaged"
                    )));
                };
                if direct && split_key(v - 1).1 != slot {
                    return Err(Error::corrupt(format!(
                        "secondary volume map {object}: slot {slot} holds unit {}: \
                         the metadata is damaged",
                        split_key(v - 1).1
                    )));
                }
                if st.index.insert(v - 1, slot).is_some() {
                    return Err(Error::corrupt(format!(
                        "work store map {object}: two slots hold the same unit (key {}): \
                         the metadata is damaged",
                        v - 1
                    )));
                }
                *st.per_main.entry(split_key(v - 1).0).or_default() += 1;
                st.live[s] = v;
                st.durable[s] = v;
                st.terminal = st.terminal.max(slot + 1);
            }
        }
        Ok(Arc::new(SlotMap {
            slots,
            direct,
            st: Mutex::new(st),
            commits: Arc::new(Committer::new(meta, object, "work store map")),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, St> {
        crate::blockdev::probe::shared_lock(1);
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn slots(&self) -> u64 {
        self.slots
    }

    /// The slot holding `key`, if any.
    pub fn lookup(&self, key: u64) -> Option<u64> {
        self.lock().index.get(&key).copied()
    }

    /// A new slot for `key` at the terminal address (None when the store
    /// is full). Memory only: stored by a later [`SlotMap::persist`].
    pub fn assign(&self, key: u64) -> Option<u64> {
        let mut st = self.lock();
        if let Some(&s) = st.index.get(&key) {
            return Some(s);
        }
        if st.index.is_empty() && st.terminal > 0 {
            restart_if_clear(&mut st, 0);
        }
        let slot = if self.direct {
            split_key(key).1
        } else {
            st.terminal
        };
        let i = usize::try_from(slot)
            .ok()
            .filter(|&i| i < st.live.len() && st.live[i] == 0)?;
        st.live[i] = key + 1;
        st.index.insert(key, slot);
        *st.per_main.entry(split_key(key).0).or_default() += 1;
        st.terminal = st.terminal.max(slot + 1);
        Some(slot)
    }

    /// The data write of `slot` completed.
    pub fn written(&self, slot: u64) {
        self.lock().written.push(slot);
    }

    /// The slots written since the last call; the caller flushes the
    /// store, then hands them to [`SlotMap::persist`].
    pub fn take_written(&self) -> Vec<u64> {
        std::mem::take(&mut self.lock().written)
    }

    /// Stores the entries of `slots` (their data is durable now) and waits
    /// until a commit holds them.
    pub async fn persist(self: &Arc<Self>, slots: Vec<u64>) -> Result<()> {
        let need = {
            let mut st = self.lock();
            let mut any = false;
            for s in slots {
                let Some(i) = usize::try_from(s).ok().filter(|&i| i < st.live.len()) else {
                    continue;
                };
                if st.live[i] != 0 && st.durable[i] != st.live[i] {
                    st.durable[i] = st.live[i];
                    st.dirty.pages.insert(s / PER_PAGE);
                    any = true;
                }
            }
            if !any {
                return Ok(());
            }
            self.schedule(&mut st)
        };
        self.commits.wait(need).await
    }

    /// Drops the entry of `key` (its data was written back); the removal
    /// is stored by the next [`SlotMap::commit`].
    pub fn remove(&self, key: u64) {
        let mut st = self.lock();
        let Some(slot) = st.index.remove(&key) else {
            return;
        };
        let main = split_key(key).0;
        if let Some(n) = st.per_main.get_mut(&main) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.per_main.remove(&main);
            }
        }
        if let Some(i) = usize::try_from(slot).ok().filter(|&i| i < st.live.len()) {
            st.live[i] = 0;
            if st.durable[i] != 0 {
                st.durable[i] = 0;
                st.dirty.pages.insert(slot / PER_PAGE);
            }
        }
        restart_if_clear(&mut st, 0);
    }

    /// Stores every removal made so far; waits until it is durable.
    pub async fn commit(self: &Arc<Self>) -> Result<()> {
        let need = {
            let mut st = self.lock();
            if st.dirty.pages.is_empty() {
                restart_if_clear(&mut st, 0);
                return Ok(());
            }
            self.schedule(&mut st)
        };
        self.commits.wait(need).await?;
        restart_if_clear(&mut self.lock(), need);
        Ok(())
    }

    fn schedule(self: &Arc<Self>, st: &mut St) -> u64 {
        let (seq, start) = st.dirty.schedule();
        if start {
            let me = Arc::clone(self);
            spawn_commit(move || me.commits.run(|| me.lock(), |s| s));
        }
        seq
    }

    /// Units mapped now (stored or not), as (key, slot), in slot order.
    pub fn entries(&self) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = {
            let st = self.lock();
            st.index.iter().map(|(&k, &s)| (k, s)).collect()
        };
        // Sorted with the lock let go: hosts' writes assign slots meanwhile.
        v.sort_unstable_by_key(|&(_, s)| s);
        v
    }

    /// Slots used so far (the terminal address, 1-based; 0: none).
    pub fn terminal(&self) -> u64 {
        self.lock().terminal
    }

    /// Entries of main id `main` mapped now.
    pub fn held_by(&self, main: u16) -> u64 {
        self.lock().per_main.get(&main).copied().unwrap_or(0)
    }

    /// Up to `max` entries of main id `main` (key, slot), in no order.
    pub fn some_of(&self, main: u16, max: usize) -> Vec<(u64, u64)> {
        let st = self.lock();
        st.index
            .iter()
            .filter(|&(&k, _)| split_key(k).0 == main)
            .take(max)
            .map(|(&k, &s)| (k, s))
            .collect()
    }

    /// Entries mapped now.
    pub fn len(&self) -> usize {
        self.lock().index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(dir: &std::path::Path) -> Arc<Meta> {
        Arc::new(Meta::open(&dir.join("m.redb")).expect("meta").0)
    }

    #[tokio::test]
    async fn entries_are_stored_only_when_persisted_and_removals_with_the_next_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = meta(dir.path());
        let map = SlotMap::open(Arc::clone(&m), 7, 1000).expect("open");
        let (a, b, c) = (key(1, 10), key(1, 2), key(2, 10));
        assert_eq!(map.assign(a), Some(0));
        assert_eq!(map.assign(b), Some(1));
        assert_eq!(map.assign(a), Some(0), "a hit keeps its slot");
        assert_eq!(
            map.assign(c),
            Some(2),
            "another main's unit 10 is another key"
        );
        map.written(0);
        map.written(1);
        let w = map.take_written();
        assert_eq!(w, vec![0, 1]);
        map.persist(w).await.expect("persist");
        // Slot 2 was never persisted: a crash forgets it.
        let again = SlotMap::open(Arc::clone(&m), 7, 1000).expect("reopen");
        assert_eq!(again.entries(), vec![(a, 0), (b, 1)]);
        assert_eq!(again.terminal(), 2);
        assert_eq!(
            (again.held_by(1), again.held_by(2)),
            (2, 0),
            "counted at load"
        );
        assert_eq!((map.held_by(1), map.held_by(2)), (2, 1));
        let mut some = map.some_of(1, 5);
        some.sort_unstable();
        assert_eq!(some, vec![(b, 1), (a, 0)]);
        assert_eq!(map.some_of(1, 1).len(), 1);
        map.remove(a);
        map.commit().await.expect("commit");
        let again = SlotMap::open(Arc::clone(&m), 7, 1000).expect("reopen");
        assert_eq!(again.entries(), vec![(b, 1)]);
        assert_eq!(map.held_by(1), 1, "removed: counted out");
        assert_eq!(split_key(c), (2, 10));
    }

    #[test]
    fn a_full_store_assigns_nothing_and_an_empty_one_starts_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let map = SlotMap::open(meta(dir.path()), 3, 2).expect("open");
        assert_eq!(map.assign(key(0, 5)), Some(0));
        assert_eq!(map.assign(key(0, 6)), Some(1));
        assert_eq!(map.assign(key(0, 7)), None, "full");
        map.remove(key(0, 5));
        assert_eq!(
            map.assign(key(0, 7)),
            None,
            "a log: freed slots wait for the end"
        );
        map.remove(key(0, 6));
        assert_eq!(map.terminal(), 0);
        assert_eq!(map.assign(key(0, 7)), Some(0));
    }

    /// A shared store emptied by one main's write-back while the removal
    /// of its last entry is not yet stored: another main's new unit must
    /// not reuse the freed slot (after a crash the stored entry would
    /// replay the new data over the old unit); once the removal is
    /// stored, the log starts over.
    #[tokio::test]
    async fn an_emptied_log_starts_over_only_once_its_removals_are_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = meta(dir.path());
        let map = SlotMap::open(Arc::clone(&m), 5, 8).expect("open");
        assert_eq!(map.assign(key(1, 5)), Some(0));
        map.written(0);
        map.persist(map.take_written()).await.expect("persist");
        map.remove(key(1, 5));
        assert_eq!(map.terminal(), 1, "the removal is not stored yet");
        assert_eq!(map.assign(key(2, 9)), Some(1), "not the freed slot 0");
        let again = SlotMap::open(Arc::clone(&m), 5, 8).expect("reopen");
        assert_eq!(again.entries(), vec![(key(1, 5), 0)], "as a crash finds it");
        map.remove(key(2, 9));
        map.commit().await.expect("commit");
        assert_eq!(map.terminal(), 0, "stored empty: T4's terminal is NULL");
        assert_eq!(map.assign(key(2, 9)), Some(0));
        let again = SlotMap::open(m, 5, 8).expect("reopen");
        assert_eq!(again.entries(), vec![], "the removals are stored");
    }

    #[test]
    fn a_stored_slot_beyond_the_store_or_a_unit_twice_is_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = meta(dir.path());
        let mut page = vec![0u8; PAGE_BYTES];
        page[8 * 5..8 * 6].copy_from_slice(&4u64.to_le_bytes());
        m.write(true, |tx| tx.put_page(3, 0, &page)).expect("write");
        let e = SlotMap::open(Arc::clone(&m), 3, 4).err().expect("refused");
        assert!(e.to_string().contains("beyond its 4 slots"), "{e}");
        page[8..16].copy_from_slice(&4u64.to_le_bytes());
        m.write(true, |tx| tx.put_page(3, 0, &page)).expect("write");
        let e = SlotMap::open(m, 3, 100).err().expect("refused");
        assert!(e.to_string().contains("same unit"), "{e}");
    }

    #[tokio::test]
    async fn a_direct_map_puts_each_unit_in_its_own_slot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = meta(dir.path());
        let map = SlotMap::open_direct(Arc::clone(&m), 9, 100).expect("open");
        assert_eq!(map.assign(key(0, 42)), Some(42));
        assert_eq!(map.assign(key(0, 7)), Some(7));
        assert_eq!(map.assign(key(0, 100)), None, "beyond the volume");
        assert_eq!(map.assign(key(1, 7)), None, "slot 7 is taken");
        map.written(42);
        map.persist(map.take_written()).await.expect("persist");
        let again = SlotMap::open_direct(Arc::clone(&m), 9, 100).expect("reopen");
        assert_eq!(again.entries(), vec![(key(0, 42), 42)]);
        // A log map's entries are not a direct map's.
        let log = SlotMap::open(Arc::clone(&m), 10, 100).expect("open");
        assert_eq!(log.assign(key(0, 42)), Some(0));
        log.written(0);
        log.persist(log.take_written()).await.expect("persist");
        let e = SlotMap::open_direct(m, 10, 100).err().expect("refused");
        assert!(e.to_string().contains("slot 0 holds unit 42"), "{e}");
    }
}
