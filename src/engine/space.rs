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

use super::Pool;
use crate::blockdev::BlockDev;
use crate::stack::switch::Switch;

/// What the pool holds, under one lock so space moves from one list to the
/// other atomically.
#[derive(Default)]
pub(crate) struct HeldSpace {
    /// Chunks of copy stores: (family, group, offset, length).
    pub copies: Vec<(u64, String, u64, u64)>,
    /// Space being discarded: (group, offset, length).
    pub discarding: Vec<(String, u64, u64)>,
}

impl HeldSpace {
    /// Everything held in `group`.
    pub fn in_group(&self, group: &str) -> Vec<(u64, u64)> {
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
            .collect()
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
    /// Space held in `group` outside volume records.
    pub(crate) fn held_space_in(&self, group: &str) -> Vec<(u64, u64)> {
        self.held().in_group(group)
    }

    pub(crate) fn held(&self) -> std::sync::MutexGuard<'_, HeldSpace> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::api::views::{
        DiskAddRequest, GroupCreateRequest, RaidLevelName, VolumeCreateRequest,
    };
    use crate::engine::PoolOptions;
    use crate::rt::Workers;

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
        p.volume_delete("a", false).unwrap();
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
