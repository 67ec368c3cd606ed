//! The differential bitmap of a mirror pair (seed 002, table T2 of
//! FIG. 3A/3B: "differential bitmap"): one bit per track of the P-VOL, set
//! when the track was written on either side since the pair was split (or
//! still has to be copied), so a resync or restore copies only the tracks
//! whose bit is set.
//!
//! A bit is stored set before the data write that makes it true is issued
//! (DESIGN rule 2): [`DiffMap::mark`] returns a future that resolves once
//! a commit holds the bit, and writers marking at once share one commit
//! ([`super::bits`]). A bit already stored costs one lock and a look, no
//! commit. Clearing is lazy: a copier clears the bit of a track it has
//! copied; the clear is stored with the next commit, and a crash before it
//! only costs copying the track again.

#![forbid(unsafe_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use super::Meta;
use super::bits::{Bits, Committer, get, ones, spawn_commit};
use crate::error::{Error, Result};

/// A future that resolves once the bits it waits for are stored.
pub type Stored = Pin<Box<dyn Future<Output = Result<()>> + Send + 'static>>;

/// The differential bitmap of one pair, stored as pages of its object.
pub struct DiffMap {
    track: u64,
    tracks: u64,
    st: Mutex<Bits>,
    commits: Committer,
}

impl DiffMap {
    /// The bitmap stored for `object`, `tracks` bits of `track` bytes each.
    pub fn open(meta: Arc<Meta>, object: u64, track: u64, tracks: u64) -> Result<Arc<DiffMap>> {
        if track == 0 {
            return Err(Error::corrupt(format!(
                "differential bitmap {object}: a track of 0 bytes"
            )));
        }
        let bits = Bits::load(&meta, object, tracks, "differential bitmap")?;
        Ok(Arc::new(DiffMap {
            track,
            tracks,
            st: Mutex::new(bits),
            commits: Committer::new(meta, object, "differential bitmap"),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Bits> {
        crate::blockdev::probe::shared_lock(1);
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes per bit.
    pub fn track(&self) -> u64 {
        self.track
    }

    /// Bits in the map.
    pub fn tracks(&self) -> u64 {
        self.tracks
    }

    /// The tracks `off..off+len` touches (none for an empty range), within
    /// the map.
    pub fn tracks_of(&self, off: u64, len: u64) -> std::ops::Range<u64> {
        if len == 0 {
            return 0..0;
        }
        let first = off / self.track;
        let end = off.saturating_add(len - 1) / self.track + 1;
        first.min(self.tracks)..end.min(self.tracks)
    }

    /// Sets the bits of the tracks `off..off+len` touches. None when every
    /// one is stored set already; else a future that resolves once they
    /// are (the data write waits for it: DESIGN rule 2).
    pub fn mark(self: &Arc<Self>, off: u64, len: u64) -> Option<Stored> {
        self.mark_tracks(self.tracks_of(off, len))
    }

    /// Sets the bits of `tracks`, as [`DiffMap::mark`].
    pub fn mark_tracks(self: &Arc<Self>, tracks: std::ops::Range<u64>) -> Option<Stored> {
        let need = {
            let mut st = self.lock();
            let mut need = false;
            for t in tracks {
                need |= st.want(t);
            }
            if !need {
                return None;
            }
            self.start_commit(&mut st)
        };
        let me = Arc::clone(self);
        Some(Box::pin(async move { me.commits.wait(need).await }))
    }

    /// Clears the bit of track `t` (its copy is done); stored lazily.
    pub fn clear(self: &Arc<Self>, t: u64) {
        self.clear_tracks(t..t + 1);
    }

    /// Clears the bits of `tracks`, as [`DiffMap::clear`]: one lock and
    /// one commit scheduled for all of them.
    pub fn clear_tracks(self: &Arc<Self>, tracks: std::ops::Range<u64>) {
        let mut st = self.lock();
        for t in tracks {
            st.clear(t);
        }
        self.start_commit(&mut st);
    }

    /// Stores every change made so far (clears included).
    pub async fn sync(self: &Arc<Self>) -> Result<()> {
        let need = {
            let mut st = self.lock();
            if st.dirty() {
                self.start_commit(&mut st)
            } else if let Some(seq) = st.running() {
                seq
            } else {
                return Ok(());
            }
        };
        self.commits.wait(need).await
    }

    fn start_commit(self: &Arc<Self>, st: &mut Bits) -> u64 {
        let (need, start) = st.schedule();
        if start {
            let me = Arc::clone(self);
            spawn_commit(move || me.commits.run(|| me.lock(), |b: &mut Bits| b));
        }
        need
    }

    /// Whether track `t`'s bit is set (stored or being stored).
    pub fn is_set(&self, t: u64) -> bool {
        get(&self.lock().desired, t)
    }

    /// The first set track at or after `from`.
    pub fn next_set(&self, from: u64) -> Option<u64> {
        let st = self.lock();
        let w0 = usize::try_from(from / 64).ok()?;
        let mut w = w0;
        while let Some(&word) = st.desired.get(w) {
            let word = if w == w0 {
                word & (u64::MAX << (from % 64))
            } else {
                word
            };
            if word != 0 {
                let t = (w as u64) * 64 + u64::from(word.trailing_zeros());
                return (t < self.tracks).then_some(t);
            }
            w += 1;
        }
        None
    }

    /// The map over bytes `off..off+len` as runs of (bytes, set), in
    /// order, at most `max` of them (the last may end before `off+len`);
    /// empty past the map's end. Time goes with the runs and the words
    /// between them, not with the bytes.
    pub fn runs_of(&self, off: u64, len: u64, max: usize) -> Vec<(u64, bool)> {
        let end = off
            .saturating_add(len)
            .min(self.tracks.saturating_mul(self.track));
        let mut out = Vec::new();
        if off >= end {
            return out;
        }
        let st = self.lock();
        let mut at = off;
        while at < end && out.len() < max.max(1) {
            let t = at / self.track;
            let set = get(&st.desired, t);
            let next = next_other(&st.desired, t + 1, set, self.tracks);
            let stop = next.saturating_mul(self.track).min(end);
            out.push((stop - at, set));
            at = stop;
        }
        out
    }

    /// The runs of set tracks now, in order.
    pub fn set_runs(&self) -> Vec<std::ops::Range<u64>> {
        let mut runs = Vec::new();
        let mut t = 0;
        while let Some(a) = self.next_set(t) {
            let mut b = a + 1;
            while b < self.tracks && self.is_set(b) {
                b += 1;
            }
            runs.push(a..b);
            t = b;
        }
        runs
    }

    /// Set bits now.
    pub fn count(&self) -> u64 {
        self.lock()
            .desired
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum()
    }

    /// The map as table T2 draws it: `width` characters at most, each `1`
    /// when a track it stands for is set (one character per track when
    /// the map has no more than `width` tracks).
    pub fn picture(&self, width: usize) -> String {
        let width = u64::try_from(width.max(1)).unwrap_or(u64::MAX);
        let chars = self.tracks.min(width);
        if chars == 0 {
            return String::new();
        }
        let per = self.tracks.div_ceil(chars);
        let mut out = vec![b'0'; usize::try_from(self.tracks.div_ceil(per)).unwrap_or(0)];
        for t in ones(&self.lock().desired) {
            if let Some(c) = usize::try_from(t / per).ok().and_then(|i| out.get_mut(i)) {
                *c = b'1';
            }
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl crate::blockdev::ChangeMap for DiffMap {
    fn runs(&self, off: u64, len: u64, max: usize) -> Vec<(u64, bool)> {
        self.runs_of(off, len, max)
    }
}

/// The first track at or after `from` (before `limit`, else `limit`)
/// whose bit is not `set`, a word at a time.
fn next_other(bits: &[u64], from: u64, set: bool, limit: u64) -> u64 {
    let mut t = from;
    while t < limit {
        let w = usize::try_from(t / 64).unwrap_or(usize::MAX);
        let word = bits.get(w).copied().unwrap_or(0);
        let word = if set { !word } else { word } & (u64::MAX << (t % 64));
        if word != 0 {
            return ((w as u64) * 64 + u64::from(word.trailing_zeros())).min(limit);
        }
        if !set && w >= bits.len() {
            return limit;
        }
        t = (w as u64 + 1) * 64;
    }
    limit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(dir: &std::path::Path) -> Arc<Meta> {
        Arc::new(Meta::open(&dir.join("m.redb")).expect("open").0)
    }

    #[test]
    fn marks_are_stored_before_they_resolve_and_clears_with_the_next_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = meta(dir.path());
        crate::rt::block_on(async {
            let map = DiffMap::open(Arc::clone(&m), 7, 65536, 1000).expect("open");
            let wait = map.mark(65536 * 3 + 10, 65536).expect("a new mark waits");
            wait.await.expect("stored");
            assert!(
                map.mark(65536 * 3, 1).is_none(),
                "stored marks need no commit"
            );
            // What a crash now would find: the stored pages.
            let again = DiffMap::open(Arc::clone(&m), 7, 65536, 1000).expect("reopen");
            assert_eq!((again.next_set(0), again.count()), (Some(3), 2));
            assert_eq!(again.next_set(4), Some(4));
            assert_eq!(again.next_set(5), None);
            map.clear(3);
            map.sync().await.expect("sync");
            let again = DiffMap::open(Arc::clone(&m), 7, 65536, 1000).expect("reopen");
            assert_eq!((again.next_set(0), again.count()), (Some(4), 1));
            // After a clear, a new write marks (and waits) again.
            assert!(map.mark(65536 * 3, 1).is_some());
        });
    }

    /// A second write of a track whose bit is in the commit running now
    /// waits for a commit that stores it, and that commit happens (it
    /// once waited for a number no commit would take).
    #[test]
    fn a_mark_joining_a_running_commit_is_stored_and_not_left_waiting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = Meta::open(&dir.path().join("m.redb")).expect("open").0;
        m.slow_commits(std::time::Duration::from_millis(50));
        let m = Arc::new(m);
        crate::rt::block_on(async {
            let map = DiffMap::open(Arc::clone(&m), 3, 4096, 100).expect("open");
            let first = map.mark_tracks(5..6).expect("new");
            // Wait (bounded by time, not by a count of yields: a loaded
            // machine may not run the commit thread for a while) until the
            // commit thread has taken the page.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while map.lock().running().is_none() && std::time::Instant::now() < deadline {
                std::thread::yield_now();
                tokio::task::yield_now().await;
            }
            assert!(map.lock().running().is_some(), "the commit did not start");
            let second = map.mark_tracks(5..6).expect("not stored yet");
            let both = async { (first.await, second.await) };
            let (a, b) = tokio::time::timeout(std::time::Duration::from_secs(10), both)
                .await
                .expect("the second mark was left waiting");
            a.expect("first");
            b.expect("second");
            let again = DiffMap::open(Arc::clone(&m), 3, 4096, 100).expect("reopen");
            assert_eq!(again.next_set(0), Some(5));
        });
    }

    #[test]
    fn runs_say_which_bytes_are_set_in_order_and_stop_at_max() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = meta(dir.path());
        crate::rt::block_on(async {
            let map = DiffMap::open(Arc::clone(&m), 1, 4096, 300).expect("open");
            for r in [2..4, 63..66, 299..300] {
                map.mark_tracks(r).expect("new").await.expect("stored");
            }
            let k = 4096;
            assert_eq!(
                map.runs_of(k + 100, 299 * k, 100),
                vec![
                    (k - 100, false),
                    (2 * k, true),
                    (59 * k, false),
                    (3 * k, true),
                    (233 * k, false),
                    (k, true)
                ]
            );
            assert_eq!(map.runs_of(0, 3 * k, 1), vec![(2 * k, false)]);
            assert_eq!(map.runs_of(300 * k, k, 10), vec![]);
            // A run is cut at the end asked for.
            assert_eq!(map.runs_of(64 * k, 10, 10), vec![(10, true)]);
        });
    }

    #[test]
    fn the_picture_shows_set_tracks_one_character_each_or_in_buckets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = meta(dir.path());
        crate::rt::block_on(async {
            let map = DiffMap::open(Arc::clone(&m), 1, 4096, 12).expect("open");
            for t in [1, 6, 10, 11] {
                map.mark_tracks(t..t + 1)
                    .expect("new")
                    .await
                    .expect("stored");
            }
            // Table T2's first pair, pair 1 -> 13 of FIG. 3B.
            assert_eq!(map.picture(80), "010000100011");
            assert_eq!(map.picture(6), "100101");
            assert_eq!(map.count(), 4);
        });
    }

    #[test]
    fn a_stored_bit_beyond_the_map_is_refused_as_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = meta(dir.path());
        crate::rt::block_on(async {
            let map = DiffMap::open(Arc::clone(&m), 2, 4096, 100).expect("open");
            map.mark_tracks(99..100)
                .expect("new")
                .await
                .expect("stored");
        });
        let Err(e) = DiffMap::open(Arc::clone(&m), 2, 4096, 99) else {
            panic!("a bit past the map was accepted");
        };
        assert!(e.to_string().contains("beyond its 99 bits"), "{e}");
    }
}
