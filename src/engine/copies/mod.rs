//! Instant copies in the pool (seeds 000/001): creating, listing, deleting
//! copies; their families' records and new space; loading them at start.
//!
//! Taking a copy (SEED-SPECS A.c.1): close the gates of the family's
//! volumes (requests in flight finish, new ones wait), make every completed
//! write durable, change the copy tree (O(1): no data moves), save the tree
//! and the new volume in one durable transaction, open the gates. The pause
//! is a flush and a commit: milliseconds, whatever the size.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Pool, State, VolumeEntry, check_name};
use crate::api::views::*;
use crate::blockdev::{BlockDev, DevFuture};
use crate::copy::dev::ImageDev;
use crate::copy::family::{Head, NodeId, State as FamilyState};
use crate::copy::image::{Family, Persist};
use crate::copy::map::Scheme;
use crate::copy::record::{FamilyRecord, FamilySave};
use crate::copy::store::{Grow, Store};
use crate::error::{Error, ErrorKind, Result};
use crate::jobs::{MakeWork, Work};
use crate::meta::Meta;
use crate::meta::model::{JobKind, JobRecord, VolumeRecord, now};
use crate::stack::gate::Closed;
use crate::stack::switch::Switch;

/// Share of the new space past which `copy list` warns.
const WARN_USED: f64 = 0.8;

/// Saves a family through the pool database.
struct MetaPersist(Arc<Meta>);

impl Persist for MetaPersist {
    fn save(&self, save: &FamilySave) -> Result<()> {
        self.0.write(true, |tx| save_family(tx, save))
    }
}

/// Stores what changed of a family (see [`FamilySave`]).
fn save_family(tx: &mut crate::meta::Tx<'_>, s: &FamilySave) -> Result<()> {
    for id in &s.dropped {
        tx.del_copy_node(*id)?;
    }
    for (id, page, bytes) in &s.pages {
        tx.put_page(*id, *page, bytes)?;
    }
    for (id, first, n) in &s.areas {
        tx.put_copy_area(*id, *first, *n)?;
    }
    for (first, c) in &s.chunks {
        tx.put_copy_chunk(s.rec.object, *first, c.as_ref())?;
    }
    for &slot in &s.described_free {
        tx.put_copy_unfreed(s.rec.object, slot, false)?;
    }
    for &slot in &s.unfreed {
        tx.put_copy_unfreed(s.rec.object, slot, true)?;
    }
    if s.put_rec {
        tx.put_family(&s.rec)?;
    }
    Ok(())
}

/// The default scheme (US 6,804,755: the mechanism follows the source's
/// mapping type): a thick source (load point & offset) gets a bitmap
/// scheme, a source mapped by pointers a pointer scheme.
pub fn default_scheme(pointer_mapped: bool) -> Scheme {
    if pointer_mapped {
        Scheme::ChangedPointer
    } else {
        Scheme::PartialBitmap
    }
}

/// Runs `f` on a worker (where the family's stacks run) and awaits it:
/// the commit path's thread stays free for member failures meanwhile.
async fn on_worker<T: Send + 'static, Fut: std::future::Future<Output = Result<T>> + 'static>(
    pool: &Pool,
    f: impl FnOnce() -> Fut + Send + 'static,
) -> Result<T> {
    pool.workers.run(f).await?
}

mod bitmap;
mod collect;
mod create;
mod delete;
mod load;
mod moves;
mod view;

impl Pool {
    /// Gets `bytes` of group address space for family `family`'s store.
    /// Called on the data path (a copy's first write into a new chunk),
    /// under the family's state lock: it takes only the space map's lock,
    /// never the pool's, so it waits for no configuration change.
    pub(super) fn alloc_copy_space(&self, family: u64, group: &str, bytes: u64) -> Result<u64> {
        let mut h = self.held();
        let (free, unit) = h
            .free_in(group)
            .map_err(|_| Error::not_found(format!("group {group} of a copy family is gone")))?;
        let want = bytes.div_ceil(unit) * unit;
        let Some(off) = super::volumes::allocate(&free, want, unit)
            .filter(|got| got.len() == 1)
            .map(|got| got[0].0)
        else {
            let avail: u64 = free.iter().map(|f| f.1).sum();
            return Err(Error::new(
                ErrorKind::NoSpace,
                format!(
                    "group {group} has no room for {} more of copy space ({} free)",
                    crate::units::format_size(want),
                    crate::units::format_size(avail)
                ),
            ));
        };
        h.copies.push((family, group.to_string(), off, want));
        Ok(off)
    }

    pub(super) fn make_grow(&self, family: u64, group: &str) -> Grow {
        let me = self.me.clone();
        let group = group.to_string();
        Box::new(move |bytes| match me.upgrade() {
            Some(p) => p.alloc_copy_space(family, &group, bytes),
            None => Err(Error::new(ErrorKind::Shutdown, "the pool is closing")),
        })
    }

    /// Lets `fam` give the chunks it empties back to the group at once,
    /// discard awaited, when a write waits for room (`copy/room.rs`); the
    /// hand-back also waits for discards of the group already in flight.
    /// Whether space came.
    pub(super) fn set_hand_back(&self, fam: &Family) {
        let me = self.me.clone();
        let (object, group) = (fam.object, fam.group_name.clone());
        let dev = Arc::clone(fam.group());
        fam.set_hand_back(Box::new(move |gone| {
            let (me, group, dev) = (me.clone(), group.clone(), Arc::clone(&dev));
            Box::pin(async move {
                let Some(p) = me.upgrade() else {
                    return false;
                };
                let handed = !gone.is_empty();
                if handed {
                    p.held().release_chunks(object, &gone);
                    p.discard_held(&group, dev, gone, None).await;
                }
                p.discards_done(&group).await || handed
            })
        }));
    }

    /// Hands back the chunks families emptied: they leave the families'
    /// space and are discarded on the group (sparse files shrink).
    /// Saves every family's removal of the chunks it emptied (they go
    /// back to the group only then).
    pub(crate) async fn settle_copy_space(&self) {
        let fams: Vec<Arc<Family>> = self.lock().families.values().cloned().collect();
        for f in fams {
            if let Err(e) = f.settle_released().await {
                tracing::warn!("saving the copy space given back: {}", e.chain());
            }
        }
    }

    pub(crate) fn reclaim_copy_space(&self) {
        let fams: Vec<Arc<Family>> = self.lock().families.values().cloned().collect();
        for f in fams {
            let gone: Vec<(u64, u64)> = f.take_released();
            if gone.is_empty() {
                continue;
            }
            self.held().release_chunks(f.object, &gone);
            self.discard_held_later(&f.group_name, Arc::clone(f.group()), gone, None);
        }
    }

    pub(in crate::engine) fn family_of(&self, st: &State, name: &str) -> Option<Arc<Family>> {
        st.volumes
            .get(name)
            .and_then(|v| v.rec.family)
            .and_then(|f| st.families.get(&f))
            .cloned()
    }

    /// Volumes whose switches a structural change of a family must pause.
    pub(super) fn family_switches(st: &State, fam: Option<u64>, extra: &str) -> Vec<Arc<Switch>> {
        st.volumes
            .values()
            .filter(|v| v.rec.name == extra || (fam.is_some() && v.rec.family == fam))
            .map(|v| Arc::clone(&v.dev))
            .collect()
    }

    /// The switch of `fam`'s origin volume: a pass through its gate keeps
    /// a copy point, deletion or merge from running meanwhile.
    pub(super) fn origin_switch(&self, fam: &Family) -> Option<Arc<Switch>> {
        let origin = fam.read_state().origin.clone();
        self.lock().volumes.get(&origin).map(|v| Arc::clone(&v.dev))
    }

    /// Whether a volume takes part in a copy family (grow and delete refuse).
    pub(crate) fn in_family(&self, st: &State, name: &str) -> bool {
        st.volumes.get(name).is_some_and(|v| v.rec.family.is_some())
    }

    /// Saves a family's changed tree together with volume records to put,
    /// volume records to delete and a job, in one durable transaction.
    pub(super) async fn save_family_with(
        &self,
        fam: &Arc<Family>,
        puts: Vec<VolumeRecord>,
        dels: Vec<String>,
        job: Option<JobRecord>,
    ) -> Result<()> {
        let pool_rec = self.pool_record();
        let meta = Arc::clone(&self.meta);
        fam.save_with(move |parts| {
            meta.write(true, |tx| {
                tx.put_pool(&pool_rec)?;
                for d in &dels {
                    tx.del_volume(d)?;
                }
                for v in &puts {
                    tx.put_volume(v)?;
                }
                if let Some(j) = &job {
                    tx.put_job(j)?;
                }
                if let Some(save) = parts {
                    save_family(tx, save)?;
                }
                Ok(())
            })
        })
        .await
    }

    /// A family member's family and the switches of every member.
    pub(super) fn family_and_switches(
        &self,
        name: &str,
    ) -> Result<(Arc<Family>, Vec<Arc<Switch>>)> {
        let st = self.lock();
        if !st.volumes.contains_key(name) {
            return Err(Error::not_found(format!(
                "unknown copy {name:?}: see `ferrosan copy list`"
            )));
        }
        let f = self
            .family_of(&st, name)
            .ok_or_else(|| Error::not_found(format!("volume {name} is not an instant copy")))?;
        let sw = Self::family_switches(&st, Some(f.object), name);
        Ok((f, sw))
    }
}
