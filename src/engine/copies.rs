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
use crate::copy::family::{Head, NodeId, State as FamilyState};
use crate::copy::image::{Family, ImageDev, Persist};
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

impl Pool {
    /// Gets `bytes` of group address space for family `family`'s store.
    /// Called on the data path (a copy's first write into a new chunk),
    /// under the family's state lock: it takes only the space map's lock,
    /// never the pool's, so it waits for no configuration change.
    fn alloc_copy_space(&self, family: u64, group: &str, bytes: u64) -> Result<u64> {
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

    fn make_grow(&self, family: u64, group: &str) -> Grow {
        let me = self.me.clone();
        let group = group.to_string();
        Box::new(move |bytes| match me.upgrade() {
            Some(p) => p.alloc_copy_space(family, &group, bytes),
            None => Err(Error::new(ErrorKind::Shutdown, "the pool is closing")),
        })
    }

    /// Hands back the chunks families emptied: they leave the families'
    /// space and are discarded on the group (sparse files shrink).
    pub(crate) fn reclaim_copy_space(&self) {
        let fams: Vec<Arc<Family>> = self.lock().families.values().cloned().collect();
        for f in fams {
            let gone: Vec<(u64, u64)> =
                std::mem::take(&mut *f.released.lock().unwrap_or_else(|p| p.into_inner()));
            if gone.is_empty() {
                continue;
            }
            self.held().release_chunks(f.object, &gone);
            self.discard_held_later(&f.group_name, Arc::clone(f.group()), gone, None);
        }
    }

    pub(super) fn family_of(&self, st: &State, name: &str) -> Option<Arc<Family>> {
        st.volumes
            .get(name)
            .and_then(|v| v.rec.family)
            .and_then(|f| st.families.get(&f))
            .cloned()
    }

    /// Volumes whose switches a structural change of a family must pause.
    fn family_switches(st: &State, fam: Option<u64>, extra: &str) -> Vec<Arc<Switch>> {
        st.volumes
            .values()
            .filter(|v| v.rec.name == extra || (fam.is_some() && v.rec.family == fam))
            .map(|v| Arc::clone(&v.dev))
            .collect()
    }

    pub async fn copy_create(&self, req: CopyCreateRequest) -> Result<CopyInfo> {
        check_name("copy", &req.name)?;
        let pool = self.arc()?;
        let name = req.name.clone();
        let plan = self.room_plan(&req);
        on_worker(self, move || async move {
            pool.copy_create_on_worker(req).await
        })
        .await
        .map_err(|e| super::copy_room::explain_no_room(e, plan.as_ref()))?;
        self.copy_get(&name)
    }

    async fn copy_create_on_worker(self: Arc<Self>, req: CopyCreateRequest) -> Result<()> {
        // A source whose last copy just went is folding its data back into
        // its extents: let that finish (the family then dissolves), so the
        // new copy starts a family of the mode asked for.
        let folding = {
            let st = self.lock();
            self.family_of(&st, &req.source).and_then(|f| {
                let s = f.read_state();
                if s.images.len() == 1 {
                    s.restore.as_ref().map(|r| r.job)
                } else {
                    None
                }
            })
        };
        if let Some(job) = folding {
            tracing::info!(
                "copy of {}: waiting for job {job} to fold its data back first",
                req.source
            );
            self.jobs.wait(job).await?;
        }
        let (src_rec, src_thick, fam, switches, group_name) = {
            let st = self.lock();
            if st.volumes.contains_key(&req.name) {
                return Err(Error::conflict(format!(
                    "a volume named {} already exists",
                    req.name
                )));
            }
            let v = st.volumes.get(&req.source).ok_or_else(|| {
                Error::not_found(format!(
                    "unknown volume {:?}: see `ferrosan volume list`",
                    req.source
                ))
            })?;
            let fam = self.family_of(&st, &req.source);
            let group_name = match (&fam, &req.pool_group) {
                (Some(f), Some(g)) if *g != f.group_name => {
                    return Err(Error::invalid(format!(
                        "{} already takes its copies' space from group {}; --pool-group {g} cannot change that",
                        req.source, f.group_name
                    )));
                }
                (Some(f), _) => f.group_name.clone(),
                (None, Some(g)) => g.clone(),
                (None, None) => v.rec.group.clone(),
            };
            if !st.groups.contains_key(&group_name) {
                return Err(Error::not_found(format!("unknown group {group_name:?}")));
            }
            let switches = Self::family_switches(&st, v.rec.family, &req.source);
            (
                v.rec.clone(),
                Arc::clone(&v.thick),
                fam,
                switches,
                group_name,
            )
        };
        // Make what is already written durable while I/O still flows, so
        // the pause below only flushes what arrives meanwhile.
        match &fam {
            Some(f) => f.commit().await?,
            None => src_thick.flush().await?,
        }
        let t0 = std::time::Instant::now();
        let mut closed: Vec<Closed<'_>> = Vec::with_capacity(switches.len());
        for s in &switches {
            closed.push(s.close().await);
        }
        let created = now();
        // Everything completed so far is durable before the copy point. A
        // new family is saved only with the copy's records below, so a copy
        // that fails leaves no family behind.
        let (fam, new_family) = match fam {
            Some(f) => {
                f.commit().await?;
                (f, false)
            }
            None => {
                src_thick.flush().await?;
                (
                    self.new_family(&req, &src_rec, src_thick, &group_name)?,
                    true,
                )
            }
        };
        // A new family that fails here gives back whatever its store took.
        let give_back = |fam: &Arc<Family>| {
            if new_family {
                let gone = self.held().release_family(fam.object);
                self.discard_held_later(&fam.group_name, Arc::clone(fam.group()), gone, None);
            }
        };
        let mode = fam.read_state().mode;
        if let Some(m) = req.mode
            && m != mode
        {
            return Err(Error::invalid(format!(
                "the copies of {} are {mode} copies; a {m} copy cannot join them",
                src_rec.name
            )));
        }
        let scheme = req.meta.unwrap_or_else(|| {
            default_scheme(!new_family && fam.read_state().pointer_mapped(&req.source))
        });
        {
            let me = Arc::clone(&self);
            let mut st = fam.write_state();
            let tracks = st.tracks;
            let mut ids = || me.take_object();
            let mut maps =
                |s: Scheme, store: &mut Store| crate::copy::maps::new_map(s, tracks, store);
            let made = st.create_copy(&req.source, &req.name, scheme, created, &mut ids, &mut maps);
            if let Err(e) = made {
                drop(st);
                give_back(&fam);
                return Err(e);
            }
        }
        let copy_rec = VolumeRecord {
            object: self.take_object(),
            name: req.name.clone(),
            group: src_rec.group.clone(),
            size: src_rec.size,
            track_size: src_rec.track_size,
            extents: Vec::new(),
            read_only: req.read_only,
            created,
            family: Some(fam.object),
        };
        let mut src_new = src_rec.clone();
        src_new.family = Some(fam.object);
        let _one = fam.save_lock.lock().await;
        let snap = fam.snapshot(true);
        let pool_rec = self.lock().pool.clone();
        let saved = {
            let meta = Arc::clone(&self.meta);
            let (copy_rec, src_new, snap_save) = (
                copy_rec.clone(),
                src_new.clone(),
                snap.as_ref().map(|s| s.save.clone()),
            );
            tokio::task::spawn_blocking(move || {
                meta.write(true, |tx| {
                    tx.put_pool(&pool_rec)?;
                    tx.put_volume(&copy_rec)?;
                    tx.put_volume(&src_new)?;
                    if let Some(save) = &snap_save {
                        save_family(tx, save)?;
                    }
                    Ok(())
                })
            })
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("saving the copy: {e}")))
            .and_then(|r| r)
        };
        if let Some(snap) = snap {
            fam.saved(snap, saved.as_ref().map(|_| ()).map_err(Clone::clone))?;
        }
        if let Err(e) = saved {
            let _ = fam.write_state().delete_image(&req.name);
            give_back(&fam);
            return Err(e);
        }
        drop(_one);
        // Running stacks: the copy's volume, and the source's switch onto
        // its image if the family is new.
        {
            let mut st = self.lock();
            if new_family {
                st.families.insert(fam.object, Arc::clone(&fam));
                if let Some(v) = st.volumes.get_mut(&src_rec.name) {
                    v.rec = src_new;
                    v.dev.set(Arc::new(ImageDev::new(
                        Arc::clone(&fam),
                        &src_rec.name,
                        src_rec.size,
                        src_rec.read_only,
                    )));
                }
            }
            let image = Arc::new(ImageDev::new(
                Arc::clone(&fam),
                &req.name,
                src_rec.size,
                req.read_only,
            ));
            let entry = VolumeEntry {
                thick: Arc::clone(
                    &st.volumes
                        .get(&src_rec.name)
                        .map(|v| Arc::clone(&v.thick))
                        .ok_or_else(|| Error::not_found("source vanished"))?,
                ),
                dev: Arc::new(Switch::new(image)),
                conns: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
                rec: copy_rec,
            };
            st.volumes.insert(req.name.clone(), entry);
        }
        drop(closed);
        tracing::info!(
            "copy {} of {} taken in {:.2} ms of paused I/O ({scheme})",
            req.name,
            req.source,
            t0.elapsed().as_secs_f64() * 1e3
        );
        Ok(())
    }

    /// An object id, recorded in the pool record with the next commit.
    pub(crate) fn take_object(&self) -> u64 {
        let mut st = self.lock();
        Pool::next_object(&mut st)
    }

    fn new_family(
        &self,
        req: &CopyCreateRequest,
        src: &VolumeRecord,
        thick: Arc<crate::stack::volume::VolumeDev>,
        group_name: &str,
    ) -> Result<Arc<Family>> {
        let object = self.take_object();
        let group: Arc<dyn BlockDev> = {
            let st = self.lock();
            let g = st
                .groups
                .get(group_name)
                .ok_or_else(|| Error::not_found(format!("unknown group {group_name:?}")))?;
            Arc::clone(&g.raid) as Arc<dyn BlockDev>
        };
        let mode = req.mode.unwrap_or(CopyMode::Row);
        let mut store = Store::new(
            src.track_size,
            Vec::new(),
            self.make_grow(object, group_name),
        );
        let tracks = src.size.div_ceil(src.track_size);
        let scheme = req.meta.unwrap_or_else(|| default_scheme(false));
        let origin_leaf = match mode {
            CopyMode::Row => {
                let m = crate::copy::maps::new_map(scheme, tracks, &mut store)?;
                Some((self.take_object(), m))
            }
            CopyMode::Cow => None,
        };
        let st = crate::copy::new_state(
            mode,
            &src.name,
            src.track_size,
            src.size,
            store,
            origin_leaf,
            scheme,
            now(),
        );
        Ok(Family::new(
            object,
            group_name.to_string(),
            thick as Arc<dyn BlockDev>,
            group,
            st,
            Arc::new(MetaPersist(Arc::clone(&self.meta))),
        ))
    }

    fn copy_view(
        &self,
        fam: &Family,
        name: &str,
        vol: &VolumeRecord,
        group_free: u64,
    ) -> Result<CopyInfo> {
        let st = fam.read_state();
        let img = st.image(name)?.clone();
        let own = st.own_nodes(name);
        let mut slots = 0;
        let mut memory = 0;
        for id in &own {
            if let Some(n) = st.nodes.get(id) {
                memory += n.map.memory_bytes() as u64;
                let areas: u64 = n.map.areas().iter().map(|a| a.1).sum();
                let singles = n
                    .map
                    .entries()
                    .filter(|(_, e)| e.slot != crate::copy::map::ZERO_SLOT)
                    .filter(|(_, e)| {
                        !n.map
                            .areas()
                            .iter()
                            .any(|&(a, c)| e.slot >= a && e.slot < a + c)
                    })
                    .count() as u64;
                slots += areas + singles;
            }
        }
        let chain = st.chain(img.head);
        // Diverged: tracks where the copy and its source (or the original,
        // once the source is gone) may differ — what either wrote since
        // the copy point.
        let other = img
            .source
            .as_ref()
            .and_then(|s| st.images.get(s))
            .or_else(|| st.images.get(&st.origin))
            .map(|i| st.chain(i.head))
            .unwrap_or_default();
        let mut diverged = std::collections::BTreeSet::new();
        for id in chain
            .iter()
            .filter(|n| !other.contains(n))
            .chain(other.iter().filter(|n| !chain.contains(n)))
        {
            if let Some(n) = st.nodes.get(id) {
                diverged.extend(n.map.entries().map(|(t, _)| t));
            }
        }
        let tracks = diverged.len() as u64;
        let valid = !chain
            .iter()
            .any(|id| st.nodes.get(id).is_some_and(|n| n.invalid));
        let store_bytes = st.store.bytes();
        let used_bytes = st.store.used_slots() * st.track;
        let room = store_bytes + group_free;
        let warning = if !valid {
            Some(format!(
                "{name} is invalid: its new space ran out while its source was written; delete it"
            ))
        } else if room > 0 && used_bytes as f64 >= WARN_USED * room as f64 {
            Some(format!(
                "the new space of {}'s copies is {:.0}% used ({} of {}): add disks to group {} or delete copies",
                st.origin,
                used_bytes as f64 * 100.0 / room as f64,
                crate::units::format_size(used_bytes),
                crate::units::format_size(room),
                fam.group_name
            ))
        } else {
            None
        };
        Ok(CopyInfo {
            name: name.to_string(),
            source: img.source.clone().unwrap_or_default(),
            origin: st.origin.clone(),
            mode: st.mode,
            scheme: img.scheme,
            read_only: vol.read_only,
            size: vol.size,
            track_size: st.track,
            tracks_diverged: tracks,
            space_used: slots * st.track,
            metadata_memory: memory,
            depth: chain.len() as u64,
            valid,
            warning,
            created: img.created,
        })
    }

    pub(super) fn group_free(&self, st: &State, group: &str) -> u64 {
        let Some(g) = st.groups.get(group) else {
            return 0;
        };
        let mut used = self.used_in(st, group);
        super::volumes::free_extents(g.raid.size(), &mut used)
            .iter()
            .map(|f| f.1)
            .sum()
    }

    pub fn copy_list(&self) -> Vec<CopyInfo> {
        self.reclaim_copy_space();
        let items: Vec<(Arc<Family>, VolumeRecord, u64)> = {
            let st = self.lock();
            st.volumes
                .values()
                .filter_map(|v| {
                    let f = v.rec.family.and_then(|f| st.families.get(&f))?;
                    Some((
                        Arc::clone(f),
                        v.rec.clone(),
                        self.group_free(&st, &f.group_name),
                    ))
                })
                .collect()
        };
        items
            .into_iter()
            .filter_map(|(f, v, free)| {
                let is_origin = f.read_state().origin == v.name;
                if is_origin {
                    return None;
                }
                self.copy_view(&f, &v.name, &v, free).ok()
            })
            .collect()
    }

    pub fn copy_get(&self, name: &str) -> Result<CopyInfo> {
        let (f, v, free) = {
            let st = self.lock();
            let v = st.volumes.get(name).ok_or_else(|| {
                Error::not_found(format!("unknown copy {name:?}: see `ferrosan copy list`"))
            })?;
            let f = self
                .family_of(&st, name)
                .ok_or_else(|| Error::not_found(format!("volume {name} is not an instant copy")))?;
            let free = self.group_free(&st, &f.group_name);
            (f, v.rec.clone(), free)
        };
        if f.read_state().origin == name {
            return Err(Error::not_found(format!(
                "volume {name} is the origin of copies, not a copy itself"
            )));
        }
        self.copy_view(&f, name, &v, free)
    }

    /// Deletes copy `name`; the job folding the original's data back, if
    /// the last copy went and data must move.
    pub async fn copy_delete(&self, name: &str) -> Result<CopyDeleteInfo> {
        let job = self.family_delete(name, false, false).await?;
        Ok(CopyDeleteInfo {
            name: name.to_string(),
            job,
        })
    }

    /// Deletes a volume of a copy family: a copy, or (`origin_too`) the
    /// original, whose initial area then passes to one of its copies.
    /// `force`: even with NBD connections open (their I/O then fails).
    /// Returns the fold job it started (see `copy_delete_on_worker`).
    pub(crate) async fn family_delete(
        &self,
        name: &str,
        origin_too: bool,
        force: bool,
    ) -> Result<Option<JobInfo>> {
        {
            let st = self.lock();
            let v = st.volumes.get(name).ok_or_else(|| {
                Error::not_found(format!("unknown copy {name:?}: see `ferrosan copy list`"))
            })?;
            let conns = v.conns.load(std::sync::atomic::Ordering::SeqCst);
            if conns > 0 && !force {
                let what = if origin_too { "volume" } else { "copy" };
                return Err(Error::conflict(format!(
                    "{what} {name} is in use by {conns} NBD connection(s): disconnect them, or delete with `ferrosan volume delete {name} --force` (their I/O then fails)"
                )));
            }
            let f = self
                .family_of(&st, name)
                .ok_or_else(|| Error::not_found(format!("volume {name} is not an instant copy")))?;
            if f.read_state().origin == name && !origin_too {
                return Err(Error::conflict(format!(
                    "{name} is the original of its copies, not a copy: `ferrosan volume delete {name}` deletes it and its copies keep their data"
                )));
            }
        }
        let pool = self.arc()?;
        let name = name.to_string();
        let job = on_worker(self, move || async move {
            pool.copy_delete_on_worker(&name).await
        })
        .await?;
        self.reclaim_copy_space();
        Ok(job)
    }

    async fn copy_delete_on_worker(self: Arc<Self>, name: &str) -> Result<Option<JobInfo>> {
        let (fam, switches) = {
            let st = self.lock();
            let f = self
                .family_of(&st, name)
                .ok_or_else(|| Error::not_found(format!("volume {name} is not an instant copy")))?;
            (
                Arc::clone(&f),
                Self::family_switches(&st, Some(f.object), name),
            )
        };
        let mut closed = Vec::with_capacity(switches.len());
        for s in &switches {
            closed.push(s.close().await);
        }
        fam.commit().await?;
        // The original goes: its initial area passes to a copy (the first
        // by name), which keeps reading through its own chain.
        let heir = {
            let st = fam.read_state();
            (st.origin == name)
                .then(|| st.images.keys().find(|k| *k != name).cloned())
                .flatten()
        };
        let passed = match &heir {
            Some(h) => Some(self.pass_extents(name, h)?),
            None => None,
        };
        let plan = match &heir {
            Some(h) => fam.write_state().hand_over_base(h)?,
            None => fam.write_state().delete_image(name)?,
        };
        fam.run_merges(&plan).await?;
        // Down to one image: its data in the new space folds back into the
        // initial area in the background, then the family dissolves.
        let fold = if fam.read_state().images.len() == 1 {
            let origin = fam.read_state().origin.clone();
            let job = self.copy_move_job(&fam, &origin, &origin, false);
            let (moving, plan) = fam.write_state().start_fold(job.id)?;
            fam.run_merges(&plan).await?;
            (moving > 0).then_some(job)
        } else {
            None
        };
        // A family down to its origin with nothing of its own goes away:
        // the origin is a thick volume again.
        let dissolve = {
            let st = fam.read_state();
            st.images.len() == 1 && st.nodes.values().all(|n| n.map.is_empty())
        };
        let origin = fam.read_state().origin.clone();
        let _one = fam.save_lock.lock().await;
        let snap = fam.snapshot(true);
        let (mut origin_rec, thick) = {
            let st = self.lock();
            let v = st
                .volumes
                .get(&origin)
                .ok_or_else(|| Error::not_found("origin vanished"))?;
            (v.rec.clone(), Arc::clone(&v.thick))
        };
        let thick = match &passed {
            Some(p) => {
                if let Some(r) = p.iter().find(|r| r.name == origin) {
                    origin_rec = r.clone();
                }
                self.lock()
                    .volumes
                    .get(name)
                    .map(|v| Arc::clone(&v.thick))
                    .unwrap_or(thick)
            }
            None => thick,
        };
        if dissolve {
            origin_rec.family = None;
        }
        let meta = Arc::clone(&self.meta);
        let snap_save = snap.as_ref().map(|s| s.save.clone());
        let (name_s, origin_rec_s, object) = (name.to_string(), origin_rec.clone(), fam.object);
        let fold_s = fold.clone();
        let saved = tokio::task::spawn_blocking(move || {
            meta.write(true, |tx| {
                tx.del_volume(&name_s)?;
                if let Some(save) = &snap_save {
                    if dissolve {
                        for n in &save.rec.nodes {
                            tx.del_copy_node(n.id)?;
                        }
                        for id in &save.dropped {
                            tx.del_copy_node(*id)?;
                        }
                        tx.del_family(object)?;
                    } else {
                        save_family(tx, save)?;
                    }
                }
                if let Some(j) = &fold_s {
                    tx.put_job(j)?;
                }
                tx.put_volume(&origin_rec_s)
            })
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("saving the deletion: {e}")))
        .and_then(|r| r);
        if let Some(snap) = snap {
            fam.saved(snap, saved.as_ref().map(|_| ()).map_err(Clone::clone))?;
        }
        saved?;
        drop(_one);
        {
            let mut st = self.lock();
            if let Some(v) = st.volumes.remove(name) {
                v.dev.revoke();
            }
            if let Some(v) = st.volumes.get_mut(&origin) {
                v.rec = origin_rec.clone();
                v.thick = Arc::clone(&thick);
                if dissolve {
                    v.dev.set(Arc::clone(&thick) as Arc<dyn BlockDev>);
                }
            }
            if dissolve {
                st.families.remove(&fam.object);
            }
        }
        if dissolve {
            // Every chunk of the family goes back.
            let gone = self.held().release_family(fam.object);
            self.discard_held(&fam.group_name, Arc::clone(fam.group()), gone, None)
                .await;
            fam.released
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        drop(closed);
        fold.map(|job| self.start_copy_move(job)).transpose()
    }

    /// Loads the copy families after the volumes (at start).
    pub(super) fn load_families(&self, families: Vec<FamilyRecord>) -> Result<()> {
        for rec in families {
            let (thick, group, sizes) = {
                let st = self.lock();
                let Some(v) = st.volumes.get(&rec.origin) else {
                    self.problem(format!(
                        "copy family {}: its origin {} is gone",
                        rec.object, rec.origin
                    ));
                    continue;
                };
                let Some(g) = st.groups.get(&rec.group) else {
                    self.problem(format!(
                        "copy family {}: its group {} is not available",
                        rec.object, rec.group
                    ));
                    continue;
                };
                let sizes: BTreeMap<String, (u64, bool)> = st
                    .volumes
                    .values()
                    .filter(|x| x.rec.family == Some(rec.object))
                    .map(|x| (x.rec.name.clone(), (x.rec.size, x.rec.read_only)))
                    .collect();
                (
                    Arc::clone(&v.thick),
                    Arc::clone(&g.raid) as Arc<dyn BlockDev>,
                    sizes,
                )
            };
            let (m1, m2) = (Arc::clone(&self.meta), Arc::clone(&self.meta));
            let pages_of = move |id: NodeId| m1.pages(id);
            let areas_of = move |id: NodeId| m2.copy_areas(id);
            let rows = self
                .meta
                .copy_chunks(rec.object)
                .map(|chunks| crate::copy::Rows {
                    chunks,
                    pages_of: &pages_of,
                    areas_of: &areas_of,
                });
            let loaded = rows.and_then(|rows| {
                crate::copy::load_state(&rec, rows, self.make_grow(rec.object, &rec.group))
            });
            let state: FamilyState = match loaded {
                Ok(s) => s,
                Err(e) => {
                    self.problem(format!(
                        "copy family of {} cannot be loaded: {}",
                        rec.origin,
                        e.chain()
                    ));
                    continue;
                }
            };
            {
                let mut held = self.held();
                for c in state.store.chunks() {
                    held.copies.push((
                        rec.object,
                        rec.group.clone(),
                        c.group_off,
                        c.slots * rec.track_size,
                    ));
                }
            }
            let images: Vec<(String, Head)> = state
                .images
                .values()
                .map(|i| (i.name.clone(), i.head))
                .collect();
            let fam = Family::new(
                rec.object,
                rec.group.clone(),
                thick as Arc<dyn BlockDev>,
                group,
                state,
                Arc::new(MetaPersist(Arc::clone(&self.meta))),
            );
            let mut st = self.lock();
            for (name, _) in images {
                let Some(&(size, ro)) = sizes.get(&name) else {
                    self.problem(format!(
                        "copy family of {}: image {name} has no volume",
                        rec.origin
                    ));
                    continue;
                };
                if let Some(v) = st.volumes.get_mut(&name) {
                    v.dev
                        .set(Arc::new(ImageDev::new(Arc::clone(&fam), &name, size, ro)));
                }
            }
            st.families.insert(rec.object, fam);
        }
        Ok(())
    }

    /// Whether a volume takes part in a copy family (grow and delete refuse).
    pub(crate) fn in_family(&self, st: &State, name: &str) -> bool {
        st.volumes.get(name).is_some_and(|v| v.rec.family.is_some())
    }

    /// Saves a family's changed tree together with volume records to put,
    /// volume records to delete and a job, in one durable transaction.
    async fn save_family_with(
        &self,
        fam: &Arc<Family>,
        puts: Vec<VolumeRecord>,
        dels: Vec<String>,
        job: Option<JobRecord>,
    ) -> Result<()> {
        let _one = fam.save_lock.lock().await;
        let snap = fam.snapshot(true);
        let pool_rec = self.lock().pool.clone();
        let meta = Arc::clone(&self.meta);
        let parts = snap.as_ref().map(|s| s.save.clone());
        let saved = tokio::task::spawn_blocking(move || {
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
                if let Some(save) = &parts {
                    save_family(tx, save)?;
                }
                Ok(())
            })
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("saving the copy family: {e}")))
        .and_then(|r| r);
        if let Some(snap) = snap {
            fam.saved(snap, saved.as_ref().map(|_| ()).map_err(Clone::clone))?;
        }
        saved
    }

    /// A family member's family and the switches of every member.
    fn family_and_switches(&self, name: &str) -> Result<(Arc<Family>, Vec<Arc<Switch>>)> {
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

    /// The record of a job moving a family's pending tracks.
    fn copy_move_job(&self, fam: &Family, volume: &str, from: &str, split: bool) -> JobRecord {
        let (tracks, track) = {
            let st = fam.read_state();
            (st.tracks, st.track)
        };
        let id = {
            let mut st = self.lock();
            Pool::next_job(&mut st)
        };
        JobRecord {
            id,
            kind: JobKind::CopyMove {
                group: fam.group_name.clone(),
                family: fam.object,
                volume: volume.to_string(),
                from: from.to_string(),
                split,
            },
            state: JobState::Running,
            done: 0,
            total: tracks,
            unit_bytes: track,
            rate_limit: 0,
            message: None,
            created: now(),
            updated: now(),
        }
    }

    /// `copy restore NAME`: NAME's source shows NAME's image at once. A
    /// source with a leaf moves no data; the A1 origin reads its pending
    /// tracks from the copy while a job moves them into place.
    /// `copy restore NAME`: NAME's source shows NAME's image. Refused while
    /// NBD clients use the source, unless `force`: their volume's contents
    /// would change under them.
    pub async fn copy_restore(&self, name: &str, force: bool) -> Result<CopyRestoreInfo> {
        let pool = self.arc()?;
        let n = name.to_string();
        let (target, job, connections) = on_worker(self, move || async move {
            pool.copy_restore_on_worker(&n, force).await
        })
        .await?;
        let job = match job {
            Some(j) => Some(self.start_copy_move(j)?),
            None => None,
        };
        Ok(CopyRestoreInfo {
            volume: target,
            from: name.to_string(),
            job,
            connections,
        })
    }

    /// Refuses to change what `target` reads while clients use it, unless
    /// `force`; returns its connections.
    fn check_unused(&self, target: &str, force: bool, what: &str) -> Result<usize> {
        let conns = self
            .lock()
            .volumes
            .get(target)
            .map_or(0, |v| v.conns.load(std::sync::atomic::Ordering::SeqCst));
        if conns > 0 && !force {
            return Err(Error::conflict(format!(
                "volume {target} is in use by {conns} NBD connection(s): {what} would change its contents under them; disconnect them first, or add --force (they then read the new contents, and what they wrote since is gone)"
            )));
        }
        Ok(conns)
    }

    async fn copy_restore_on_worker(
        self: Arc<Self>,
        name: &str,
        force: bool,
    ) -> Result<(String, Option<JobRecord>, usize)> {
        let (fam, switches) = self.family_and_switches(name)?;
        let target = {
            let st = fam.read_state();
            if st.origin == name {
                return Err(Error::invalid(format!(
                    "{name} is the original of its copies: restore it from one of them (`ferrosan copy restore COPY`)"
                )));
            }
            let src = st.image(name)?.source.clone().unwrap_or_default();
            if !st.images.contains_key(&src) {
                return Err(Error::conflict(format!(
                    "{name} was copied from {src}, which no longer exists: nothing to restore"
                )));
            }
            src
        };
        if self
            .lock()
            .volumes
            .get(&target)
            .is_some_and(|v| v.rec.read_only)
        {
            return Err(Error::conflict(format!(
                "{target} is read-only: it cannot be restored"
            )));
        }
        let connections =
            self.check_unused(&target, force, &format!("restoring it from copy {name}"))?;
        let mut closed = Vec::with_capacity(switches.len());
        for s in &switches {
            closed.push(s.close().await);
        }
        fam.commit().await?;
        let job = self.copy_move_job(&fam, &target, name, false);
        let (moving, plan) = {
            let me = Arc::clone(&self);
            let mut st = fam.write_state();
            let tracks = st.tracks;
            let mut ids = || me.take_object();
            let mut maps =
                |s: Scheme, store: &mut Store| crate::copy::maps::new_map(s, tracks, store);
            st.restore_from(&target, name, job.id, &mut ids, &mut maps)?
        };
        fam.run_merges(&plan).await?;
        let job = (moving > 0).then_some(job);
        self.save_family_with(&fam, Vec::new(), Vec::new(), job.clone())
            .await?;
        drop(closed);
        tracing::info!(
            "{target} restored from copy {name} ({moving} tracks to move in the background)"
        );
        Ok((target, job, connections))
    }

    /// `copy split NAME` (US 6,779,094 claims 7-9): measures the new data
    /// of the original and of the copy, moves one set into the initial
    /// area by policy, and leaves the two images independent: either can
    /// then be deleted without the other losing anything.
    pub async fn copy_split(&self, name: &str, req: CopySplitRequest) -> Result<CopySplitInfo> {
        let pool = self.arc()?;
        let n = name.to_string();
        let policy = req.policy.unwrap_or(SplitPolicy::MoveSmaller);
        let (n_orig, n_copy, moving, job) = on_worker(self, move || async move {
            pool.copy_split_on_worker(&n, policy).await
        })
        .await?;
        let job = match job {
            Some(j) => Some(self.start_copy_move(j)?),
            None => None,
        };
        Ok(CopySplitInfo {
            n_orig,
            n_copy,
            policy,
            moving,
            job,
        })
    }

    async fn copy_split_on_worker(
        self: Arc<Self>,
        name: &str,
        policy: SplitPolicy,
    ) -> Result<(u64, u64, String, Option<JobRecord>)> {
        let (fam, switches) = self.family_and_switches(name)?;
        let mut closed = Vec::with_capacity(switches.len());
        for s in &switches {
            closed.push(s.close().await);
        }
        fam.commit().await?;
        let (origin, n_orig, n_copy) = {
            let st = fam.read_state();
            if st.origin == name {
                return Err(Error::invalid(format!(
                    "{name} is the original: split its copy (`ferrosan copy split COPY`)"
                )));
            }
            if st.images.len() != 2 {
                let others: Vec<&str> = st
                    .images
                    .keys()
                    .filter(|k| **k != name && **k != st.origin)
                    .map(String::as_str)
                    .collect();
                return Err(Error::conflict(format!(
                    "a split separates an original from its only copy; {} also has {}: delete or split those first",
                    st.origin,
                    others.join(", ")
                )));
            }
            (
                st.origin.clone(),
                st.own_tracks(&st.origin),
                st.own_tracks(name),
            )
        };
        let orig_moves = match policy {
            SplitPolicy::MoveSmaller => n_orig <= n_copy,
            SplitPolicy::MoveLarger => n_orig > n_copy,
        };
        let (into, other) = if orig_moves {
            (origin.clone(), name.to_string())
        } else {
            (name.to_string(), origin.clone())
        };
        let job = self.copy_move_job(&fam, &into, &other, true);
        let (moving, plan) = {
            let me = Arc::clone(&self);
            let mut st = fam.write_state();
            let tracks = st.tracks;
            let mut ids = || me.take_object();
            let mut maps =
                |s: Scheme, store: &mut Store| crate::copy::maps::new_map(s, tracks, store);
            st.start_split(&into, &other, job.id, &mut ids, &mut maps)?
        };
        fam.run_merges(&plan).await?;
        // The image now holding the initial area carries its extents.
        let mut puts = Vec::new();
        if into != origin {
            puts = self.pass_extents(&origin, &into)?;
        }
        let job = (moving > 0).then_some(job);
        self.save_family_with(&fam, puts.clone(), Vec::new(), job.clone())
            .await?;
        self.apply_extents(&puts);
        drop(closed);
        tracing::info!(
            "split {name} from {origin}: new data in {n_orig} tracks of the original, {n_copy} of the copy; {into}'s moves into the space both share ({moving} tracks)"
        );
        Ok((n_orig, n_copy, into, job))
    }

    /// Records moving the initial area's extents from volume `from` to
    /// volume `to` (returned for saving; see [`Pool::apply_extents`]).
    fn pass_extents(&self, from: &str, to: &str) -> Result<Vec<VolumeRecord>> {
        let st = self.lock();
        let a = st
            .volumes
            .get(from)
            .ok_or_else(|| Error::not_found(format!("volume {from} vanished")))?;
        let b = st
            .volumes
            .get(to)
            .ok_or_else(|| Error::not_found(format!("volume {to} vanished")))?;
        let mut ra = a.rec.clone();
        let mut rb = b.rec.clone();
        rb.extents = std::mem::take(&mut ra.extents);
        Ok(vec![ra, rb])
    }

    /// Applies saved volume records to the running entries; the one given
    /// extents takes the thick volume over them.
    fn apply_extents(&self, recs: &[VolumeRecord]) {
        let mut st = self.lock();
        let thick = recs
            .iter()
            .find(|r| r.extents.is_empty())
            .and_then(|r| st.volumes.get(&r.name))
            .map(|v| Arc::clone(&v.thick));
        for r in recs {
            if let Some(v) = st.volumes.get_mut(&r.name) {
                v.rec = r.clone();
                if !r.extents.is_empty()
                    && let Some(t) = &thick
                {
                    v.thick = Arc::clone(t);
                }
            }
        }
    }

    /// Starts (or resumes) a copy move job.
    fn start_copy_move(&self, job: JobRecord) -> Result<JobInfo> {
        let make = self.make_work(&job)?;
        Ok(self.jobs.start(job, make))
    }

    /// The work of a copy move job.
    pub(super) fn copy_move_work(&self, family: u64, job: u64) -> Result<MakeWork> {
        let pool = self.arc()?;
        let fam = self.lock().families.get(&family).cloned().ok_or_else(|| {
            Error::not_found(format!("copy family {family} of job {job} is gone"))
        })?;
        Ok(Box::new(move || {
            Ok(Box::new(CopyMoveWork { pool, fam }) as Box<dyn Work>)
        }))
    }

    /// A copy move job's last step: with the family paused, forget the
    /// finished restore and prune what it read from.
    async fn finish_copy_move(self: Arc<Self>, fam: Arc<Family>) -> Result<()> {
        let switches = {
            let st = self.lock();
            Self::family_switches(&st, Some(fam.object), "")
        };
        let mut closed = Vec::with_capacity(switches.len());
        for s in &switches {
            closed.push(s.close().await);
        }
        fam.commit().await?;
        let plan = fam.write_state().finish_restore()?;
        fam.run_merges(&plan).await?;
        let dissolve = {
            let st = fam.read_state();
            st.images.len() == 1
                && st.restore.is_none()
                && st.nodes.values().all(|n| n.map.is_empty())
        };
        if dissolve {
            self.dissolve_family(&fam).await?;
        } else {
            self.save_family_with(&fam, Vec::new(), Vec::new(), None)
                .await?;
        }
        drop(closed);
        self.reclaim_copy_space();
        Ok(())
    }

    /// A family of one image with nothing in the new space goes away: the
    /// image is a thick volume again and every chunk goes back. Call with
    /// the family's gates closed.
    async fn dissolve_family(&self, fam: &Arc<Family>) -> Result<()> {
        let origin = fam.read_state().origin.clone();
        let _one = fam.save_lock.lock().await;
        let (mut rec, thick) = {
            let st = self.lock();
            let v = st
                .volumes
                .get(&origin)
                .ok_or_else(|| Error::not_found(format!("volume {origin} vanished")))?;
            (v.rec.clone(), Arc::clone(&v.thick))
        };
        rec.family = None;
        let nodes: Vec<NodeId> = {
            let mut st = fam.write_state();
            let mut ids: Vec<NodeId> = st.nodes.keys().copied().collect();
            ids.extend(std::mem::take(&mut st.dropped));
            ids
        };
        let (meta, object, rec_s) = (Arc::clone(&self.meta), fam.object, rec.clone());
        tokio::task::spawn_blocking(move || {
            meta.write(true, |tx| {
                for id in &nodes {
                    tx.del_copy_node(*id)?;
                }
                tx.del_family(object)?;
                tx.put_volume(&rec_s)
            })
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("dissolving the copy family: {e}")))??;
        {
            let mut st = self.lock();
            st.families.remove(&fam.object);
            if let Some(v) = st.volumes.get_mut(&origin) {
                v.rec = rec;
                v.dev.set(Arc::clone(&thick) as Arc<dyn BlockDev>);
            }
        }
        let gone = self.held().release_family(fam.object);
        self.discard_held(&fam.group_name, Arc::clone(fam.group()), gone, None)
            .await;
        fam.released
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        tracing::info!("{origin} has no copies left and is a plain volume again");
        Ok(())
    }

    /// At start: a family whose restore or split is pending with no job
    /// running gets a job again.
    pub(super) fn resume_copy_moves(&self) -> Result<()> {
        let active: Vec<u64> = self.jobs.active().iter().map(|(id, _)| *id).collect();
        let fams: Vec<Arc<Family>> = self.lock().families.values().cloned().collect();
        for fam in fams {
            let pending = fam
                .read_state()
                .restore
                .as_ref()
                .map(|r| (r.job, r.copy.clone(), fam.read_state().origin.clone()));
            let Some((job, from, volume)) = pending else {
                continue;
            };
            if active.contains(&job) {
                continue;
            }
            let rec = self.copy_move_job(&fam, &volume, &from, false);
            let new_id = rec.id;
            if let Some(r) = fam.write_state().restore.as_mut() {
                r.job = new_id;
            }
            {
                let mut st = fam.write_state();
                st.record_dirty = true;
            }
            let pool_rec = self.lock().pool.clone();
            self.meta.write(true, |tx| {
                tx.put_pool(&pool_rec)?;
                tx.put_job(&rec)
            })?;
            tracing::info!("restarting the data move of {volume} from {from} as job {new_id}");
            self.start_copy_move(rec)?;
        }
        Ok(())
    }
}

/// Moves a family's pending tracks into the initial area.
struct CopyMoveWork {
    pool: Arc<Pool>,
    fam: Arc<Family>,
}

impl Work for CopyMoveWork {
    fn step(&mut self, from: u64, n: u64) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            // Track by track inside the origin's gate, as host writes are:
            // a copy point, deletion or merge never runs while a track is
            // half moved (its view preserved into, its pending bit cleared).
            for t in from..from + n {
                let origin = self.fam.read_state().origin.clone();
                let gate = self
                    .pool
                    .lock()
                    .volumes
                    .get(&origin)
                    .map(|v| Arc::clone(&v.dev));
                let _pass = match &gate {
                    Some(g) => Some(g.enter().await),
                    None => None,
                };
                self.fam.restore_tracks(t, t + 1).await?;
            }
            Ok(())
        })
    }

    fn checkpoint(&mut self) -> DevFuture<'_, Result<()>> {
        Box::pin(self.fam.commit())
    }

    fn finish(&mut self) -> DevFuture<'_, Result<()>> {
        let (pool, fam) = (Arc::clone(&self.pool), Arc::clone(&self.fam));
        Box::pin(pool.finish_copy_move(fam))
    }

    fn abort(&mut self, _cancelled: bool) -> DevFuture<'_, Result<()>> {
        // The restore stays pending (its reads stay correct); the next
        // start gives it a job again.
        Box::pin(async { Ok(()) })
    }
}
