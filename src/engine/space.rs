//! Group address space held outside volume records: the chunks of copy
//! families' stores, and space given back whose discard has not finished.
//!
//! ```text
//!   volume deleted / chunk emptied / family dissolved
//!        │  (under the lock that held it: no window where it is free)
//!        ▼
//!   discarding ── discard(off, len) on the group ──▶ free
//! ```
//!
//! Space given back stays reserved until its discard has completed: the
//! next owner's writes can never be punched out by a late discard of the
//! previous owner's (rule 1 of DESIGN.md: never another volume's data).
//! After a crash nothing is held: the database says the space is free, and
//! a discard that never ran only leaves the disk file less sparse.

#![forbid(unsafe_code)]

use std::sync::Arc;

use super::volumes::{allocate, free_extents};
use super::{Pool, State};
use crate::blockdev::BlockDev;
use crate::error::{Error, Result};
use crate::lockorder::{Guard, Rank};
use crate::stack::switch::Switch;

/// Bytes zeroed at the start of space given back: a chunk label's head.
const WIPE: u64 = 4096;

/// Who uses which group addresses, under one lock of its own so space
/// moves from one list to the other atomically — and so a copy's first
/// write (which may need a new chunk) never takes the pool lock.
///
/// Lock order: the pool lock, then a family's state, then this; nothing
/// is called while it is held.
#[derive(Default)]
pub(crate) struct HeldSpace {
    /// Chunks of copy stores: (family, group, offset, length).
    pub copies: Vec<(u64, String, u64, u64)>,
    /// Space being discarded: (group, offset, length).
    pub discarding: Vec<(String, u64, u64)>,
    /// Space taken for a volume whose record is being committed:
    /// (token, group, offset, length).
    pending: Vec<(u64, String, u64, u64)>,
    next_token: u64,
    /// The pool's volumes' extents and groups' sizes, as the pool state
    /// last said (kept by [`Pool::sync_space`] whenever the state changes).
    volumes: std::collections::BTreeMap<String, Vec<(u64, u64)>>,
    /// Group: (capacity, allocation unit).
    groups: std::collections::BTreeMap<String, (u64, u64)>,
}

/// Space taken for a volume while its record commits; give it back with
/// [`HeldSpace::settle`] once the volume is in the state (or the commit
/// failed).
#[must_use]
pub(crate) struct Pending(u64);

/// Space taken for a volume (and the extents), or the bytes free when
/// there was not enough.
pub(crate) type Taken = std::result::Result<(Pending, Vec<(u64, u64)>), u64>;

impl HeldSpace {
    /// Everything in use in `group`.
    pub fn in_group(&self, group: &str) -> Vec<(u64, u64)> {
        let mut all = self.held_in(group);
        all.extend(self.volumes.get(group).into_iter().flatten().copied());
        all
    }

    /// What is in use in `group` outside volume records.
    pub fn held_in(&self, group: &str) -> Vec<(u64, u64)> {
        self.copies
            .iter()
            .filter(|c| c.1 == group)
            .map(|c| (c.2, c.3))
            .chain(
                self.discarding
                    .iter()
                    .filter(|d| d.0 == group)
                    .map(|d| (d.1, d.2)),
            )
            .chain(
                self.pending
                    .iter()
                    .filter(|p| p.1 == group)
                    .map(|p| (p.2, p.3)),
            )
            .collect()
    }

    /// Free pieces of `group`, with its allocation unit.
    pub fn free_in(&self, group: &str) -> Result<(Vec<(u64, u64)>, u64)> {
        let &(capacity, unit) = self
            .groups
            .get(group)
            .ok_or_else(|| Error::not_found(format!("group {group} is gone")))?;
        Ok((free_extents(capacity, &mut self.in_group(group)), unit))
    }

    /// Takes `want` bytes of `group` (first fit, whole units) for a
    /// volume record about to be committed; `Ok(Err(free))` when the group
    /// has only `free` bytes.
    pub fn take_pending(&mut self, group: &str, want: u64) -> Result<Taken> {
        let (free, unit) = self.free_in(group)?;
        let want = want.div_ceil(unit) * unit;
        let Some(got) = allocate(&free, want, unit) else {
            return Ok(Err(free.iter().map(|f| f.1).sum()));
        };
        self.next_token += 1;
        let t = self.next_token;
        self.pending
            .extend(got.iter().map(|&(o, l)| (t, group.to_string(), o, l)));
        Ok(Ok((Pending(t), got)))
    }

    /// Ends a pending take: its space is the volume's now (the state has
    /// it), or free again (the commit failed).
    pub fn settle(&mut self, p: Pending) {
        self.pending.retain(|x| x.0 != p.0);
    }

    /// Moves every chunk of `family` to the discarding list; returns them.
    pub fn release_family(&mut self, family: u64) -> Vec<(u64, u64)> {
        let mut gone = Vec::new();
        self.copies.retain(|c| {
            if c.0 == family {
                gone.push((c.2, c.3));
                self.discarding.push((c.1.clone(), c.2, c.3));
                false
            } else {
                true
            }
        });
        gone
    }

    /// Moves the chunks of `family` at the group offsets of `chunks` to the
    /// discarding list.
    pub fn release_chunks(&mut self, family: u64, chunks: &[(u64, u64)]) {
        self.copies.retain(|c| {
            if c.0 == family && chunks.iter().any(|g| g.0 == c.2) {
                self.discarding.push((c.1.clone(), c.2, c.3));
                false
            } else {
                true
            }
        });
    }
}

impl Pool {
    /// Copies what the space map needs of the pool state: every volume's
    /// extents and every group's size. Runs whenever a guard of the pool
    /// lock that changed the state goes ([`super::StateGuard`]).
    pub(crate) fn sync_space(&self, st: &State) {
        let mut volumes: std::collections::BTreeMap<String, Vec<(u64, u64)>> = Default::default();
        for v in st.volumes.values() {
            volumes
                .entry(v.rec.group.clone())
                .or_default()
                .extend(v.rec.extents.iter().copied());
        }
        let groups = st
            .groups
            .values()
            .map(|g| {
                let unit = super::groups::row_bytes(&g.rec);
                (g.rec.name.clone(), (g.raid.size(), unit))
            })
            .collect();
        let mut h = self.held();
        h.volumes = volumes;
        h.groups = groups;
    }

    /// Space held in `group` outside volume records.
    pub(crate) fn held_space_in(&self, group: &str) -> Vec<(u64, u64)> {
        self.held().held_in(group)
    }

    /// The space map (rank `Space` of the lock order: the last lock).
    pub(crate) fn held(&self) -> Guard<std::sync::MutexGuard<'_, HeldSpace>> {
        Guard::take(Rank::Space, || {
            self.held.lock().unwrap_or_else(|p| p.into_inner())
        })
    }

    /// Reserves `extents` of `group` for discarding. Call while whatever
    /// held them (a volume record, a store chunk) still does, under the
    /// pool lock, then [`Pool::discard_held`].
    pub(crate) fn hold_for_discard(&self, group: &str, extents: &[(u64, u64)]) {
        let mut h = self.held();
        h.discarding
            .extend(extents.iter().map(|&(o, l)| (group.to_string(), o, l)));
    }

    /// Discards `extents` of `group` (held by [`Pool::hold_for_discard`]
    /// or a `release_*`), then frees them. `drain`: a revoked volume whose
    /// requests in flight must end before its space is touched.
    pub(crate) async fn discard_held(
        &self,
        group: &str,
        raid: Arc<dyn BlockDev>,
        extents: Vec<(u64, u64)>,
        drain: Option<Arc<Switch>>,
    ) {
        if let Some(s) = drain {
            // Revoked first: every request that passes the gate after this
            // fails, so the gate held closed for a moment is enough.
            drop(s.close().await);
        }
        for &(off, len) in &extents {
            // A copy store's chunk begins with its label (`copy/label.rs`):
            // zeroed first, so no label of space given back is read again,
            // whether or not the discard zeroes.
            if len >= WIPE {
                let (_, r) = raid
                    .write(off, crate::buf::IoBuf::new(WIPE as usize), false)
                    .await;
                if let Err(e) = r {
                    tracing::warn!(
                        "wiping the label of freed space of group {group} failed: {}",
                        e.chain()
                    );
                }
            }
        }
        // One discard per run of adjacent extents: each discard of a file
        // stops the file's other writes while it runs, whatever its length.
        for (off, len) in runs_of(&extents) {
            if let Err(e) = raid.discard(off, len).await {
                tracing::warn!(
                    "discarding freed space of group {group} failed: {}",
                    e.chain()
                );
            }
        }
        let mut h = self.held();
        for (off, len) in extents {
            if let Some(i) = h
                .discarding
                .iter()
                .position(|d| d.0 == group && d.1 == off && d.2 == len)
            {
                h.discarding.swap_remove(i);
            }
        }
        drop(h);
        self.discarded.notify_waiters();
    }

    /// Waits until no discard of `group`'s space is in flight; whether one
    /// was.
    pub(crate) async fn discards_done(&self, group: &str) -> bool {
        let mut waited = false;
        loop {
            let done = self.discarded.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if !self.held().discarding.iter().any(|d| d.0 == group) {
                return waited;
            }
            waited = true;
            done.await;
        }
    }

    /// [`Pool::discard_held`] on a worker, in the background.
    pub(crate) fn discard_held_later(
        &self,
        group: &str,
        raid: Arc<dyn BlockDev>,
        extents: Vec<(u64, u64)>,
        drain: Option<Arc<Switch>>,
    ) {
        let me = self.me.clone();
        let group = group.to_string();
        self.workers.spawn(move || async move {
            if let Some(p) = me.upgrade() {
                p.discard_held(&group, raid, extents, drain).await;
            }
        });
    }
}

/// `extents` sorted, adjacent ones joined.
fn runs_of(extents: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut sorted = extents.to_vec();
    sorted.sort_unstable();
    let mut runs: Vec<(u64, u64)> = Vec::with_capacity(sorted.len());
    for (off, len) in sorted {
        match runs.last_mut() {
            Some(r) if r.0 + r.1 == off => r.1 += len,
            _ => runs.push((off, len)),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::api::views::{
        DiskAddRequest, GroupCreateRequest, RaidLevelName, VolumeCreateRequest,
    };
    use crate::engine::PoolOptions;
    use crate::rt::Workers;

    #[test]
    fn adjacent_extents_are_discarded_as_one_run() {
        let runs = runs_of(&[(192, 64), (0, 64), (64, 64), (512, 64), (256, 32)]);
        assert_eq!(runs, vec![(0, 128), (192, 96), (512, 64)]);
        assert!(runs_of(&[]).is_empty());
    }

    fn overlaps(a: &[(u64, u64)], b: &[(u64, u64)]) -> bool {
        a.iter()
            .any(|&(o, l)| b.iter().any(|&(p, m)| o < p + m && p < o + l))
    }

    #[test]
    fn space_being_discarded_is_handed_out_only_after_the_discard() {
        let dir = tempfile::tempdir().unwrap();
        let workers = Workers::start(1).unwrap();
        let opts = PoolOptions {
            fault_injection: false,
            direct_io: false,
            intent_clear_interval: Duration::from_secs(5),
            gc_rate: 0,
            recovering: false,
        };
        let p = Pool::open(dir.path(), workers, opts).unwrap();
        p.disk_add(DiskAddRequest {
            name: "d0".into(),
            size: Some(64 << 20),
            path: None,
            spare: false,
            force: false,
        })
        .unwrap();
        p.group_create(GroupCreateRequest {
            name: "g".into(),
            raid: RaidLevelName::Concat,
            disks: vec!["d0".into()],
            stripe_size: None,
        })
        .unwrap();
        let vol = |name: &str| {
            p.volume_create(VolumeCreateRequest {
                name: name.into(),
                group: "g".into(),
                size: 16 << 20,
                track_size: None,
                read_only: false,
            })
            .unwrap()
            .extents
        };
        let a = vol("a");
        // What a deleted volume's space goes through: held, then discarded.
        futures::executor::block_on(p.volume_delete("a", false)).unwrap();
        let held: Vec<(u64, u64)> = a.clone();
        p.hold_for_discard("g", &held);
        let b = vol("b");
        assert!(
            !overlaps(&a, &b),
            "a volume got space still being discarded: a {a:?}, b {b:?}"
        );
        assert!(overlaps(&p.held_space_in("g"), &a));
        let raid: Arc<dyn BlockDev> = Arc::clone(&p.lock().groups["g"].raid) as Arc<dyn BlockDev>;
        let p2 = Arc::clone(&p);
        futures::executor::block_on(p.workers.run(move || async move {
            p2.discard_held("g", raid, held, None).await;
        }))
        .unwrap();
        // Drained: the deletion's own background discard may still hold it
        // for a moment; once nothing is held, the space is free again.
        for _ in 0..1000 {
            if p.held_space_in("g").is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(p.held_space_in("g"), Vec::<(u64, u64)>::new());
        let c = vol("c");
        assert!(
            overlaps(&a, &c),
            "the discarded space is free again: a {a:?}, c {c:?}"
        );
    }
}
