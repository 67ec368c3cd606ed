//! Write diversion during a sparing copy, to a work volume (seed 002,
//! second and third control units; second embodiment, T4 of FIG.
//! 11A/11B): the sparing service's part.
//!
//! ```text
//!  sparing work-volume add V ── V set aside: record, slot map object,
//!                               its export refuses hosts
//!  sparing begins on group G ── a free work volume not on G, and every
//!        volume of G plain (nothing stacked on it: no pair, copy, S-VOL
//!        group)? ── a Divert node over each volume's switch (main id =
//!        its index), the record's `divert` stored; else secondary
//!        volumes (`secondary.rs`: one per volume, a direct map each);
//!        else plain sparing, and the reason logged
//!  the copy ends (settle) ───── the spare takes the slot; nodes to
//!        WRITE-BACK, `write_back` stored
//!  monitor pass ────────────── slots written back (host writes win);
//!        when none is left: switches back to the volumes, the record
//!        deleted, the map's pages dropped: T4's row is idle again
//! ```
//!
//! After a restart the nodes are rebuilt from the record (DIVERT or
//! WRITE-BACK) and the map from its pages before any host connects.

#![forbid(unsafe_code)]

use std::sync::Arc;

use crate::api::views::{BackupStorage, WorkVolumeRequest, WorkVolumeRow};
use crate::blockdev::BlockDev;
use crate::divert::{Divert, DivertCounts, Mode};
use crate::engine::Pool;
use crate::error::{Error, Result};
use crate::meta::model::{DivertRecord, SparingRecord, WorkVolumeRecord};
use crate::meta::slotmap::SlotMap;
use crate::pair::group::Internal;

/// A main's backup store, its slot map and unit.
type Store = (Arc<dyn BlockDev>, Arc<SlotMap>, u64);

/// Bytes per slot of a work volume.
const UNIT: u64 = 4096;

fn not_host_secondary(volume: &str) -> String {
    format!(
        "volume {volume} is a secondary volume holding a spared group's diverted writes: \
         not host-accessible; it is deleted after the write-back (`ferrosan sparing status`)"
    )
}

/// Where `d` diverts to, in words.
pub(super) fn backup_name(d: &DivertRecord) -> String {
    if !d.work_disk.is_empty() {
        format!("work disk {}", d.work_disk)
    } else if d.secondaries.is_empty() {
        format!("work volume {}", d.work)
    } else {
        let v: Vec<&str> = d.secondaries.iter().map(|s| s.volume.as_str()).collect();
        format!("secondary volumes {}", v.join(", "))
    }
}

fn not_host(volume: &str) -> String {
    format!(
        "volume {volume} is a work volume of sparing: not host-accessible \
         (`ferrosan sparing work-volume remove {volume}` gives it back)"
    )
}

impl Pool {
    /// `sparing work-volume add VOLUME`: sets an unused volume aside, its
    /// space on the disks allocated first (see `work_disk_add`).
    pub async fn work_volume_add(&self, req: WorkVolumeRequest) -> Result<Vec<WorkVolumeRow>> {
        let name = req.volume;
        let (sw, thick) = {
            let st = self.lock();
            let v = st
                .volumes
                .get(&name)
                .ok_or_else(|| Error::not_found(format!("no volume {name}")))?;
            if v.conns.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                return Err(Error::conflict(format!(
                    "volume {name} is open by a host: disconnect it first"
                )));
            }
            let thick: Arc<dyn BlockDev> = v.thick.clone();
            if !same(&v.dev.current(), &thick) {
                return Err(Error::conflict(format!(
                    "volume {name} is in use by a pair, copy or S-VOL group: a work volume must be a plain volume"
                )));
            }
            (Arc::clone(&v.dev), thick)
        };
        if self.sparing.work(&name).is_some() {
            return Err(Error::conflict(format!(
                "volume {name} is a work volume already"
            )));
        }
        thick
            .preallocate(0, thick.size())
            .await
            .map_err(|e| e.context(format!("allocating the space of volume {name}")))?;
        let rec = WorkVolumeRecord {
            volume: name.clone(),
            object: self.next_object(),
            unit: UNIT,
        };
        let pool_rec = self.pool_record();
        self.meta.write(true, |tx| {
            tx.put_pool(&pool_rec)?;
            tx.del_pages(rec.object)?;
            tx.put_work_volume(&rec)
        })?;
        sw.set(Arc::new(Internal {
            below: thick,
            why: not_host(&name),
        }));
        self.sparing.put_work(rec);
        Ok(self.t4())
    }

    /// `sparing work-volume remove VOLUME`: gives it back to hosts.
    pub fn work_volume_remove(&self, name: &str) -> Result<Vec<WorkVolumeRow>> {
        let Some(rec) = self.sparing.work(name) else {
            return Err(Error::not_found(format!(
                "volume {name} is not a work volume"
            )));
        };
        if let Some(r) = self.sparing.work_users(name).first() {
            return Err(Error::conflict(format!(
                "work volume {name} holds the diverted writes of the sparing of disk {}: \
                 wait for its write-back (`ferrosan sparing status`)",
                r.disk
            )));
        }
        self.meta.write(true, |tx| {
            tx.del_pages(rec.object)?;
            tx.del_work_volume(name)
        })?;
        self.sparing.remove_work(name);
        {
            let st = self.lock();
            if let Some(v) = st.volumes.get(name) {
                v.dev.set(v.thick.clone());
            }
        }
        Ok(self.t4())
    }

    /// At the start: work volumes refuse hosts, and each sparing that
    /// diverts gets its nodes back, before any host connects.
    pub(in crate::engine) fn sparing_load(&self) -> Result<()> {
        self.sparing.load(self.meta.sparing()?);
        for w in self.sparing.works() {
            let st = self.lock();
            if let Some(v) = st.volumes.get(&w.volume) {
                v.dev.set(Arc::new(Internal {
                    below: v.thick.clone(),
                    why: not_host(&w.volume),
                }));
            }
        }
        for r in self.sparing.ops() {
            if let Some(d) = &r.divert
                && let Err(e) = self.divert_install(&r.disk, d)
            {
                self.divert_unreachable(&r, d, &e);
            }
        }
        Ok(())
    }

    /// A diversion whose backup storage cannot be opened at the start (a
    /// work disk missing, a work volume's group not assembled): the
    /// group's volumes would read older data than the host wrote, so they
    /// refuse hosts, saying why; the rest of the pool serves. The record
    /// stays: with the storage back, the next start installs it.
    fn divert_unreachable(&self, r: &SparingRecord, d: &DivertRecord, e: &Error) {
        let why = format!(
            "the writes of group {} diverted to {} while disk {} was spared cannot be read ({}); \
             its volumes are not served until that storage is back and the daemon restarts",
            r.group,
            backup_name(d),
            r.disk,
            e.chain()
        );
        self.problem(why.clone());
        self.sparing.set_unreachable(&r.disk);
        let st = self.lock();
        for v in st.volumes.values().filter(|v| v.rec.group == r.group) {
            v.dev.set(Arc::new(Internal {
                below: v.thick.clone(),
                why: why.clone(),
            }));
        }
    }

    /// Refuses to change volume `name` when it is a work volume or on a
    /// group whose writes are diverted (`what`: "deleted", "grown").
    pub(in crate::engine) fn refuse_diverted(&self, name: &str, what: &str) -> Result<()> {
        if self.sparing.work(name).is_some() {
            return Err(Error::conflict(format!(
                "volume {name} is a work volume of sparing and cannot be {what}: \
                 `ferrosan sparing work-volume remove {name}` first"
            )));
        }
        if let Some(disk) = self.sparing.secondary_user(name) {
            return Err(Error::conflict(format!(
                "volume {name} holds the diverted writes of the sparing of disk {disk} and cannot \
                 be {what}: it is deleted after the write-back (`ferrosan sparing status`)"
            )));
        }
        let group = self.lock().volumes.get(name).map(|v| v.rec.group.clone());
        if group.is_some_and(|g| self.sparing.diverting(&g)) {
            return Err(Error::conflict(format!(
                "volume {name} has its writes diverted while its group is spared and cannot be \
                 {what} now: wait for the write-back (`ferrosan sparing status`)"
            )));
        }
        Ok(())
    }

    /// Whether hosts may not open `volume` (a work volume), and why.
    pub(crate) fn work_volume_refusal(&self, volume: &str) -> Option<Error> {
        if self.sparing.secondary_user(volume).is_some() {
            return Some(Error::invalid(not_host_secondary(volume)));
        }
        self.sparing
            .work(volume)
            .map(|_| Error::invalid(not_host(volume)))
    }

    /// The volumes of `rec.group`, all plain; or why they cannot be
    /// diverted.
    fn divert_mains(&self, group: &str) -> std::result::Result<Vec<String>, String> {
        let st = self.lock();
        let mut mains: Vec<String> = st
            .volumes
            .values()
            .filter(|v| v.rec.group == group)
            .map(|v| v.rec.name.clone())
            .collect();
        mains.sort();
        for m in &mains {
            let v = &st.volumes[m];
            let thick: Arc<dyn BlockDev> = v.thick.clone();
            if !same(&v.dev.current(), &thick) {
                return Err(format!(
                    "volume {m} of group {group} is in a pair, copy or S-VOL group: its writes are not diverted"
                ));
            }
        }
        if mains.is_empty() {
            return Err(format!("group {group} has no volumes"));
        }
        if mains.len() > usize::from(u16::MAX) {
            return Err("too many volumes to divert".into());
        }
        Ok(mains)
    }

    /// A work volume not on `group` and its first free main id: one no
    /// sparing uses, else one shared with the sparings of other groups
    /// (FIG. 20A: one work volume, several main volumes' lists).
    fn free_work_volume(&self, group: &str) -> std::result::Result<(String, u16), String> {
        let on_other = |w: &WorkVolumeRecord| {
            self.lock()
                .volumes
                .get(&w.volume)
                .is_some_and(|v| v.rec.group != group)
        };
        let mut best: Option<(usize, String, u16)> = None;
        for w in self.sparing.works().into_iter().filter(on_other) {
            let users = self.sparing.work_users(&w.volume);
            let next = next_main(&users);
            let Ok(base) = u16::try_from(next) else {
                continue;
            };
            if best.as_ref().is_none_or(|b| users.len() < b.0) {
                best = Some((users.len(), w.volume, base));
            }
        }
        best.map(|(_, v, base)| (v, base)).ok_or_else(|| {
            "no work volume is on another group (`ferrosan sparing work-volume add VOLUME`)".into()
        })
    }

    /// Refuses a sparing of `group` whose backup storage was named and
    /// cannot be had, before anything starts.
    pub(super) fn backup_check(&self, group: &str, backup: Option<BackupStorage>) -> Result<()> {
        let why = match backup {
            None | Some(BackupStorage::None) => return Ok(()),
            Some(BackupStorage::WorkVolume) => self.divert_mains(group).and_then(|m| {
                self.free_work_volume(group)
                    .and_then(|(_, base)| fits(base, m.len()))
            }),
            Some(BackupStorage::WorkDisk) => self
                .group_disks(group)
                .and_then(|d| self.free_work_disk(d.len()).map(drop)),
            Some(BackupStorage::Secondary) => self.divert_mains(group).and_then(|m| {
                let st = self.lock();
                let need = m
                    .iter()
                    .filter_map(|v| st.volumes.get(v))
                    .map(|v| v.rec.size)
                    .sum();
                self.unused_group_for(&st, group, need).map(drop)
            }),
        };
        why.map_err(|w| Error::conflict(format!("cannot divert the writes of group {group}: {w}")))
    }

    /// Chooses and sets up where the writes of `rec`'s group go while its
    /// copy runs (`backup`, or the best available), stores the record,
    /// then puts the nodes in place. On the commit path.
    pub(super) fn divert_start(
        &self,
        rec: &mut SparingRecord,
        backup: Option<BackupStorage>,
    ) -> Result<()> {
        let disk = rec.disk.clone();
        let chosen = if backup == Some(BackupStorage::None) {
            Err("no backup storage was asked for".to_string())
        } else {
            self.divert_choose(rec, backup)
        };
        match chosen {
            Ok(d) => rec.divert = Some(d),
            Err(why) => tracing::warn!(
                "disk {disk}: plain sparing, the host's writes still reach group {}: {why}",
                rec.group
            ),
        }
        // Stored before a write can go to the backup storage, so a restart
        // always finds what was diverted.
        let pool_rec = self.pool_record();
        self.meta.write(true, |tx| {
            tx.put_pool(&pool_rec)?;
            for s in rec.divert.iter().flat_map(|d| &d.secondaries) {
                tx.del_pages(s.object)?;
            }
            tx.put_sparing(rec)
        })?;
        self.sparing.put_op(rec.clone());
        if let Some(d) = rec.divert.clone()
            && let Err(e) = self.divert_install(&disk, &d)
        {
            tracing::warn!(
                "disk {disk}: plain sparing, diverting to {} failed: {}",
                backup_name(&d),
                e.chain()
            );
            self.divert_abandon(&disk);
            rec.divert = None;
            self.meta.write(true, |tx| tx.put_sparing(rec))?;
            self.sparing.put_op(rec.clone());
            self.secondaries_drop(&d.secondaries);
        }
        Ok(())
    }

    /// A work volume (when `backup` allows one, one is free and the
    /// group's volumes are plain), else a work disk, else secondary
    /// volumes (when allowed and an unused group has room).
    fn divert_choose(
        &self,
        rec: &SparingRecord,
        backup: Option<BackupStorage>,
    ) -> std::result::Result<DivertRecord, String> {
        let allows = |b: BackupStorage| backup.is_none_or(|x| x == b);
        let mut why = Vec::new();
        let mains = self.divert_mains(&rec.group);
        if allows(BackupStorage::WorkVolume) {
            let found = mains.clone().and_then(|m| {
                let (work, base) = self.free_work_volume(&rec.group)?;
                fits(base, m.len())?;
                Ok((m, work, base))
            });
            match found {
                Ok((mains, work, main_base)) => {
                    return Ok(DivertRecord {
                        work,
                        mains,
                        write_back: false,
                        secondaries: Vec::new(),
                        main_base,
                        write_back_job: 0,
                        work_disk: String::new(),
                    });
                }
                Err(w) => why.push(w),
            }
        }
        if allows(BackupStorage::WorkDisk) {
            match self.work_disk_divert(rec) {
                Ok(d) => return Ok(d),
                Err(w) => why.push(w),
            }
        }
        if allows(BackupStorage::Secondary) {
            match mains.and_then(|m| Ok((self.secondaries_make(rec, &m)?, m))) {
                Ok((secondaries, mains)) => {
                    return Ok(DivertRecord {
                        work: String::new(),
                        mains,
                        write_back: false,
                        secondaries,
                        main_base: 0,
                        write_back_job: 0,
                        work_disk: String::new(),
                    });
                }
                Err(w) => why.push(w),
            }
        }
        why.dedup();
        Err(why.join("; "))
    }

    /// Puts the diversion nodes of the sparing of `disk` over its volumes'
    /// switches, in the mode `d` says.
    pub(super) fn divert_install(&self, disk: &str, d: &DivertRecord) -> Result<()> {
        if !d.work_disk.is_empty() {
            return self.divert_install_below(disk, d);
        }
        let mode = if d.write_back {
            Mode::WriteBack
        } else {
            Mode::Divert
        };
        let stores = self.divert_stores(d)?;
        let st = self.lock();
        let mut made = Vec::new();
        for (i, (m, (store, map, unit))) in d.mains.iter().zip(stores).enumerate() {
            let Some(v) = st.volumes.get(m) else { continue };
            let main = u16::try_from(i)
                .ok()
                .and_then(|i| i.checked_add(d.main_base))
                .ok_or_else(|| Error::corrupt("a diversion's main ids run past 65535"))?;
            let node = Divert::new(v.dev.current(), store, map, main, unit, mode)?;
            made.push((m.clone(), &v.dev, node));
        }
        // Every node is made before any is put in place.
        let nodes = made
            .into_iter()
            .map(|(m, sw, node)| {
                sw.set(node.clone());
                (m, node)
            })
            .collect();
        drop(st);
        self.sparing.put_nodes(disk, nodes);
        Ok(())
    }

    /// Per main of `d`: its store, slot map and unit. The work volume and
    /// its map are shared; a secondary is its main's alone, and is set
    /// aside from hosts here.
    fn divert_stores(&self, d: &DivertRecord) -> Result<Vec<Store>> {
        let thick = |name: &str| -> Result<Arc<dyn BlockDev>> {
            let st = self.lock();
            let v = st.volumes.get(name).ok_or_else(|| {
                Error::corrupt(format!("backup volume {name} of a sparing is gone"))
            })?;
            if d.secondaries.iter().any(|s| s.volume == name) {
                v.dev.set(Arc::new(Internal {
                    below: v.thick.clone(),
                    why: not_host_secondary(name),
                }));
            }
            Ok(v.thick.clone())
        };
        if !d.secondaries.is_empty() {
            return d
                .secondaries
                .iter()
                .map(|s| {
                    let store = thick(&s.volume)?;
                    let map = SlotMap::open_direct(
                        Arc::clone(&self.meta),
                        s.object,
                        store.size() / s.unit,
                    )?;
                    Ok((store, map, s.unit))
                })
                .collect();
        }
        let w = self
            .sparing
            .work(&d.work)
            .ok_or_else(|| Error::corrupt(format!("work volume {} has no record", d.work)))?;
        let store = thick(&d.work)?;
        let map = match self.sparing.open_map(&d.work) {
            Some(m) => m,
            None => {
                let m = SlotMap::open(Arc::clone(&self.meta), w.object, store.size() / w.unit)?;
                self.sparing.share_map(&d.work, m)
            }
        };
        Ok(d.mains
            .iter()
            .map(|_| (Arc::clone(&store), Arc::clone(&map), w.unit))
            .collect())
    }

    /// Takes the nodes of `disk` off its volumes again.
    pub(super) fn divert_abandon(&self, disk: &str) {
        if let Some(r) = self.sparing.op(disk)
            && r.divert.as_ref().is_some_and(|d| !d.work_disk.is_empty())
        {
            self.divert_remove_below(&r.group);
            self.sparing.take_nodes(disk);
            return;
        }
        let nodes = self.sparing.take_nodes(disk);
        let st = self.lock();
        for (vol, n) in &nodes {
            if let Some(v) = st.volumes.get(vol) {
                v.dev.set(Arc::clone(n.below()));
            }
        }
    }

    /// The copy is done: from now on new units go to the group, and the
    /// slots go back to it. On the commit path.
    pub(super) fn divert_to_write_back(&self, rec: &SparingRecord) -> Result<()> {
        let Some(d) = &rec.divert else { return Ok(()) };
        if d.write_back {
            return Ok(());
        }
        let mut new = rec.clone();
        if let Some(nd) = new.divert.as_mut() {
            nd.write_back = true;
        }
        self.meta.write(true, |tx| tx.put_sparing(&new))?;
        for (_, n) in self.sparing.nodes(&rec.disk) {
            n.set_mode(Mode::WriteBack);
        }
        self.sparing.put_op(new);
        Ok(())
    }

    /// What the diversion nodes of the sparing of `disk` counted, summed.
    pub(super) fn divert_counts(&self, disk: &str) -> DivertCounts {
        let mut t = DivertCounts::default();
        for (_, n) in self.sparing.nodes(disk) {
            let c = n.counts();
            t.diverted += c.diverted;
            t.overflowed += c.overflowed;
            t.written_back += c.written_back;
        }
        t
    }

    /// Raises the alarm of a sparing whose work volume is full: new units
    /// of its group's writes reach the group's disks again.
    pub(super) fn divert_watch(&self, r: &SparingRecord) {
        let Some(d) = &r.divert else { return };
        let c = self.divert_counts(&r.disk);
        if c.overflowed == 0 {
            return;
        }
        let why = format!(
            "{} is full: writes of group {} to blocks not yet diverted reach its disks \
             again ({} units so far); add a larger one for the next sparing",
            backup_name(d),
            r.group,
            c.overflowed
        );
        if self.sparing.alarm_of(&r.disk, "full", why.clone()) {
            tracing::error!("{why}");
        }
    }

    /// The write-back of `disk` is done: switches back to the volumes, the
    /// record and the map's pages gone. On the commit path.
    pub(super) fn divert_end(&self, disk: &str) -> Result<()> {
        let Some(rec) = self.sparing.op(disk) else {
            return Ok(());
        };
        // A shared work volume keeps its map while another sparing uses it.
        let work = rec
            .divert
            .as_ref()
            .map(|d| d.work.clone())
            .unwrap_or_default();
        let last = self.sparing.work_users(&work).len() <= 1;
        let mut objects: Vec<u64> = self
            .sparing
            .work(&work)
            .filter(|_| last)
            .map(|w| w.object)
            .into_iter()
            .collect();
        objects.extend(
            rec.divert
                .iter()
                .flat_map(|d| d.secondaries.iter().map(|s| s.object)),
        );
        let work_disk = rec
            .divert
            .as_ref()
            .map(|d| d.work_disk.clone())
            .unwrap_or_default();
        if !work_disk.is_empty() {
            objects.extend(self.work_disk_objects(&work_disk));
        }
        self.meta.write(true, |tx| {
            for &o in &objects {
                tx.del_pages(o)?;
            }
            tx.del_sparing(disk)
        })?;
        let nodes = self.sparing.take_nodes(disk);
        if !work_disk.is_empty() {
            self.divert_remove_below(&rec.group);
        } else {
            let st = self.lock();
            for (vol, n) in &nodes {
                if let Some(v) = st.volumes.get(vol) {
                    v.dev.set(Arc::clone(n.below()));
                }
            }
        }
        self.sparing.remove_op(disk);
        if last && !work.is_empty() {
            self.sparing.drop_map(&work);
        }
        if !work_disk.is_empty() {
            self.work_disk_drop_map(&work_disk);
        }
        // FIG. 2B back to 2A: the record is gone, so a crash from here
        // leaves at worst volumes nothing uses.
        if let Some(d) = &rec.divert {
            self.secondaries_drop(&d.secondaries);
        }
        self.sparing.clear_alarm_of(disk, "full");
        self.sparing.clear_alarm_of(disk, "double");
        tracing::warn!("the writes diverted during the sparing of disk {disk} are written back");
        Ok(())
    }

    /// Table T4: every work volume, with what it serves now.
    pub(super) fn t4(&self) -> Vec<WorkVolumeRow> {
        let sizes: std::collections::HashMap<String, u64> = {
            let st = self.lock();
            st.volumes
                .iter()
                .map(|(n, v)| (n.clone(), v.rec.size))
                .collect()
        };
        self.sparing
            .works()
            .into_iter()
            .map(|w| {
                let users = self.sparing.work_users(&w.volume);
                let primaries = mains_of(&users);
                let (terminal, used, slots) = match self.sparing.open_map(&w.volume) {
                    Some(m) if !users.is_empty() => (m.terminal(), m.entries(), m.slots()),
                    _ => (0, Vec::new(), 0),
                };
                WorkVolumeRow {
                    capacity: sizes.get(&w.volume).copied().unwrap_or(0),
                    volume: w.volume,
                    primaries,
                    terminal: (terminal > 0).then_some(terminal),
                    slots_used: used.len() as u64,
                    bitmap: usage_picture(&used, slots, 64),
                    sparings: users.into_iter().map(|r| r.disk).collect(),
                }
            })
            .collect()
    }
}

/// The main volumes or disks of `users`, in their main id order.
pub(super) fn mains_of(users: &[SparingRecord]) -> Vec<String> {
    let mut ds: Vec<&DivertRecord> = users.iter().filter_map(|r| r.divert.as_ref()).collect();
    ds.sort_by_key(|d| d.main_base);
    ds.iter().flat_map(|d| d.mains.iter().cloned()).collect()
}

/// The first main id after those `users` hold in their shared store.
pub(super) fn next_main(users: &[SparingRecord]) -> usize {
    users
        .iter()
        .filter_map(|r| r.divert.as_ref())
        .map(|d| usize::from(d.main_base) + d.mains.len())
        .max()
        .unwrap_or(0)
}

/// Whether main ids `base..base+n` fit in 16 bits.
fn fits(base: u16, n: usize) -> std::result::Result<(), String> {
    if usize::from(base) + n > usize::from(u16::MAX) {
        return Err("the work volume serves too many volumes already".into());
    }
    Ok(())
}

/// Whether `a` and `b` are the same device.
fn same(a: &Arc<dyn BlockDev>, b: &Arc<dyn BlockDev>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// T4's usage bitmap: one character per slot (`1` used) for the first
/// `width` slots.
fn usage_picture(used: &[(u64, u64)], slots: u64, width: u64) -> String {
    let n = slots.min(width);
    let mut out = vec![b'0'; usize::try_from(n).unwrap_or(0)];
    for &(_, s) in used {
        if let Some(c) = usize::try_from(s).ok().and_then(|i| out.get_mut(i)) {
            *c = b'1';
        }
    }
    String::from_utf8(out).unwrap_or_default()
}
