//! Write diversion to a work disk, below the RAID layer (seed 002, third
//! embodiment: tables T5, T6 and T7 of FIG. 15A-15C and 16; shared by
//! several groups, FIG. 20B).
//!
//! ```text
//!  sparing work-disk add W ── W set aside: record, map object; no group,
//!                             spare or removal may take it
//!  sparing begins on group G (work disk chosen) ── T5: G's disks
//!        RENEWED DATA BEING BACKED UP; T6: W IN USE, main disks = G's
//!        disks by slot (after those of sparings sharing W: `main_base`);
//!        the record stored, then one Divert node per slot of G's RAID
//!        node (`RaidDev::set_member_divert`): every disk-level write the
//!        RAID layer makes for a host, data and parity, is appended to W
//!        at the terminal address (a unit written again overwrites its
//!        slot), each new unit a T7 row; member reads take held units
//!        from W
//!  copy done ── the spare holds the failing disk's slot; nodes to
//!        WRITE-BACK: T7 rows replayed to their slots (a row of the
//!        failing disk's slot reaches the spare), host writes win
//!  nothing held ── the nodes leave the RAID node, T5-T7 idle again
//! ```
//!
//! Unlike work volumes and secondary volumes, the diversion does not sit
//! over the group's volumes, so volumes that carry pairs, copies or
//! S-VOL groups are diverted too: whatever the stack above writes reaches
//! the RAID node as disk-level writes.

#![forbid(unsafe_code)]

use std::sync::Arc;

use crate::api::views::{T7Row, WorkDiskRequest, WorkDiskRow};
use crate::blockdev::BlockDev;
use crate::divert::{Divert, Mode};
use crate::engine::Pool;
use crate::error::{Error, Result};
use crate::meta::model::{DivertRecord, SparingRecord, WorkDiskRecord};
use crate::meta::slotmap::{SlotMap, split_key};
use crate::stack::raid::{RaidDev, SlotDivert};

/// Bytes per unit of a work disk (T7's address unit).
const UNIT: u64 = 4096;
/// T7 rows `sparing status` lists.
const T7_SHOWN: usize = 256;
/// T5's status of a disk whose writes go to a work disk.
pub(super) const RENEWED: &str = "RENEWED DATA BEING BACKED UP";

/// The key of a work disk's map among the service's shared maps.
fn map_key(disk: &str) -> String {
    format!("disk:{disk}")
}

impl Pool {
    /// `sparing work-disk add DISK`: sets a free disk aside. A disk file's
    /// space is allocated first: an append into a hole would make the
    /// kernel allocate under the write (io_uring then hands each write to
    /// a worker thread, one at a time per file), halving the rate a
    /// diverted group writes at.
    pub async fn work_disk_add(&self, req: WorkDiskRequest) -> Result<Vec<WorkDiskRow>> {
        let name = req.disk;
        let dev = {
            let st = self.lock();
            let e = Self::disk_entry(&st, &name)?;
            if let Some((g, s)) = Self::disk_slot(&st, &name) {
                return Err(Error::conflict(format!(
                    "disk {name} is in group {g} (slot {s}): a work disk must be a free disk"
                )));
            }
            if e.rec.spare {
                return Err(Error::conflict(format!(
                    "disk {name} is a spare: a work disk must be a free disk"
                )));
            }
            if let Some((_, why)) = &e.problem {
                return Err(Error::invalid(format!("disk {name} cannot be used: {why}")));
            }
            if let Some(why) = &e.rec.failed {
                return Err(Error::invalid(format!("disk {name} has failed ({why})")));
            }
            match &e.open {
                Some(o) => Arc::clone(&o.dev),
                None => return Err(Error::invalid(format!("disk {name} is not open"))),
            }
        };
        if self.sparing.work_disk(&name).is_some() {
            return Err(Error::conflict(format!(
                "disk {name} is a work disk already"
            )));
        }
        dev.preallocate(0, dev.size())
            .await
            .map_err(|e| e.context(format!("allocating the space of disk {name}")))?;
        let rec = WorkDiskRecord {
            disk: name,
            object: self.next_object(),
            unit: UNIT,
        };
        let pool_rec = self.pool_record();
        self.meta.write(true, |tx| {
            tx.put_pool(&pool_rec)?;
            tx.del_pages(rec.object)?;
            tx.put_work_disk(&rec)
        })?;
        self.sparing.put_work_disk(rec);
        Ok(self.t6())
    }

    /// `sparing work-disk remove DISK`: gives it back.
    pub fn work_disk_remove(&self, name: &str) -> Result<Vec<WorkDiskRow>> {
        let Some(rec) = self.sparing.work_disk(name) else {
            return Err(Error::not_found(format!("disk {name} is not a work disk")));
        };
        if let Some(r) = self.sparing.work_disk_users(name).first() {
            return Err(Error::conflict(format!(
                "work disk {name} holds the diverted writes of the sparing of disk {}: \
                 wait for its write-back (`ferrosan sparing status`)",
                r.disk
            )));
        }
        self.meta.write(true, |tx| {
            tx.del_pages(rec.object)?;
            tx.del_work_disk(name)
        })?;
        self.sparing.remove_work_disk(name);
        Ok(self.t6())
    }

    /// Refuses to put disk `name` in a group, use it as a spare or remove
    /// it while it is a work disk.
    pub(in crate::engine) fn refuse_work_disk(&self, name: &str) -> Result<()> {
        if let Some(g) = self.reshapes_holding(name) {
            return Err(Error::conflict(format!(
                "disk {name} is held by the restripe of group {g} \
                 (`ferrosan group reshape-status {g}`)"
            )));
        }
        match self.sparing.work_disk(name) {
            Some(_) => Err(Error::conflict(format!(
                "disk {name} is a work disk of sparing: `ferrosan sparing work-disk remove {name}` first"
            ))),
            None => Ok(()),
        }
    }

    /// Whether a sparing of `group` is under way (its copy or its
    /// write-back).
    pub(in crate::engine) fn sparing_of_group(&self, group: &str) -> bool {
        self.sparing.of_group(group).is_some()
    }

    /// The disks of `group` by slot (`-` for an empty slot).
    pub(super) fn group_disks(&self, group: &str) -> std::result::Result<Vec<String>, String> {
        let st = self.lock();
        let g = st
            .groups
            .get(group)
            .ok_or_else(|| format!("group {group} is gone"))?;
        Ok(g.rec
            .slots
            .iter()
            .map(|s| s.disk.clone().unwrap_or_else(|| "-".into()))
            .collect())
    }

    /// A work disk and its first free main id: one no sparing uses, else
    /// the least shared (FIG. 20B: one work disk, two groups' disks).
    pub(super) fn free_work_disk(&self, n: usize) -> std::result::Result<(String, u16), String> {
        let mut best: Option<(usize, String, u16)> = None;
        for w in self.sparing.work_disks() {
            let users = self.sparing.work_disk_users(&w.disk);
            let next = super::divert::next_main(&users);
            let fits = next
                .checked_add(n)
                .is_some_and(|end| end <= usize::from(u16::MAX));
            let Ok(base) = u16::try_from(next) else {
                continue;
            };
            if fits && best.as_ref().is_none_or(|b| users.len() < b.0) {
                best = Some((users.len(), w.disk, base));
            }
        }
        best.map(|(_, d, base)| (d, base))
            .ok_or_else(|| "no work disk is free (`ferrosan sparing work-disk add DISK`)".into())
    }

    /// A diversion to a free work disk for the disks of the group of
    /// `rec` (its slot named by the failing disk, as T6 lists it).
    pub(super) fn work_disk_divert(
        &self,
        rec: &SparingRecord,
    ) -> std::result::Result<DivertRecord, String> {
        let mut mains = self.group_disks(&rec.group)?;
        if let Some(m) = mains.get_mut(rec.slot) {
            m.clone_from(&rec.disk);
        }
        let (work_disk, main_base) = self.free_work_disk(mains.len())?;
        Ok(DivertRecord {
            work: String::new(),
            mains,
            write_back: false,
            secondaries: Vec::new(),
            main_base,
            write_back_job: 0,
            work_disk,
        })
    }

    /// Puts one diversion node under each slot of the RAID node of the
    /// group of the sparing of `disk`, in the mode `d` says.
    pub(super) fn divert_install_below(&self, disk: &str, d: &DivertRecord) -> Result<()> {
        let mode = if d.write_back {
            Mode::WriteBack
        } else {
            Mode::Divert
        };
        let rec = self
            .sparing
            .op(disk)
            .ok_or_else(|| Error::corrupt(format!("the sparing of disk {disk} has no record")))?;
        let w = self
            .sparing
            .work_disk(&d.work_disk)
            .ok_or_else(|| Error::corrupt(format!("work disk {} has no record", d.work_disk)))?;
        let (raid, store) = self.raid_and_store(&rec.group, &w.disk)?;
        let key = map_key(&w.disk);
        let map = match self.sparing.open_map(&key) {
            Some(m) => m,
            None => {
                let m = SlotMap::open(Arc::clone(&self.meta), w.object, store.size() / w.unit)?;
                self.sparing.share_map(&key, m)
            }
        };
        if d.mains.len() != raid.layout().members() {
            return Err(Error::corrupt(format!(
                "the sparing of disk {disk} diverts {} disks; group {} has {}",
                d.mains.len(),
                rec.group,
                raid.layout().members()
            )));
        }
        let mut nodes = Vec::with_capacity(d.mains.len());
        for (i, m) in d.mains.iter().enumerate() {
            let main = u16::try_from(i)
                .ok()
                .and_then(|i| i.checked_add(d.main_base))
                .ok_or_else(|| Error::corrupt("a diversion's main ids run past 65535"))?;
            let below = RaidDev::slot_dev(&raid, i);
            let node = Divert::new(
                below,
                Arc::clone(&store),
                Arc::clone(&map),
                main,
                w.unit,
                mode,
            )?;
            nodes.push((m.clone(), node));
        }
        let slots: Vec<Arc<dyn SlotDivert>> = nodes
            .iter()
            .map(|(_, n)| Arc::clone(n) as Arc<dyn SlotDivert>)
            .collect();
        raid.set_member_divert(Some(slots))?;
        self.sparing.put_nodes(disk, nodes);
        Ok(())
    }

    /// The RAID node of `group` and the device of work disk `disk`.
    fn raid_and_store(&self, group: &str, disk: &str) -> Result<(Arc<RaidDev>, Arc<dyn BlockDev>)> {
        let st = self.lock();
        let g = st
            .groups
            .get(group)
            .ok_or_else(|| Error::corrupt(format!("group {group} of a sparing is gone")))?;
        let store = st
            .disks
            .get(disk)
            .and_then(|e| e.open.as_ref())
            .map(|o| Arc::clone(&o.dev))
            .ok_or_else(|| {
                Error::new(
                    crate::error::ErrorKind::Unavailable,
                    format!("work disk {disk} is not open"),
                )
            })?;
        Ok((Arc::clone(&g.raid), store))
    }

    /// Takes the diversion off the RAID node of `group`.
    pub(super) fn divert_remove_below(&self, group: &str) {
        let st = self.lock();
        if let Some(g) = st.groups.get(group)
            && let Err(e) = g.raid.set_member_divert(None)
        {
            tracing::warn!("group {group}: {}", e.chain());
        }
    }

    /// The last sparing using work disk `disk` ended: its map's pages go.
    pub(super) fn work_disk_objects(&self, disk: &str) -> Vec<u64> {
        if self.sparing.work_disk_users(disk).len() > 1 {
            return Vec::new();
        }
        self.sparing
            .work_disk(disk)
            .map(|w| w.object)
            .into_iter()
            .collect()
    }

    pub(super) fn work_disk_drop_map(&self, disk: &str) {
        if self.sparing.work_disk_users(disk).is_empty() {
            self.sparing.drop_map(&map_key(disk));
        }
    }

    /// Table T6: every work disk, with what it serves now.
    pub(super) fn t6(&self) -> Vec<WorkDiskRow> {
        let caps: std::collections::HashMap<String, u64> = {
            let st = self.lock();
            st.disks
                .iter()
                .map(|(n, e)| (n.clone(), e.rec.data_size))
                .collect()
        };
        self.sparing
            .work_disks()
            .into_iter()
            .map(|w| {
                let users = self.sparing.work_disk_users(&w.disk);
                let mains = super::divert::mains_of(&users);
                let map = self
                    .sparing
                    .open_map(&map_key(&w.disk))
                    .filter(|_| !users.is_empty());
                let capacity = caps.get(&w.disk).copied().unwrap_or(0);
                WorkDiskRow {
                    status: if users.is_empty() { "UNUSED" } else { "IN USE" }.into(),
                    main_disks: mains,
                    terminal: map.as_ref().map(|m| m.terminal()).filter(|&t| t > 0),
                    units_used: map.as_ref().map_or(0, |m| m.len() as u64),
                    units: capacity / w.unit,
                    unit: w.unit,
                    sparings: users.into_iter().map(|r| r.disk).collect(),
                    capacity,
                    disk: w.disk,
                }
            })
            .collect()
    }

    /// Table T7: the rows of every work disk in use, in append order (the
    /// first [`T7_SHOWN`]), and how many there are.
    pub(super) fn t7(&self) -> (Vec<T7Row>, u64) {
        let mut rows = Vec::new();
        let mut total = 0u64;
        for w in self.sparing.work_disks() {
            let users = self.sparing.work_disk_users(&w.disk);
            let Some(map) = self.sparing.open_map(&map_key(&w.disk)) else {
                continue;
            };
            if users.is_empty() {
                continue;
            }
            let name_of = |main: u16| -> String {
                users
                    .iter()
                    .filter_map(|r| r.divert.as_ref())
                    .find_map(|d| {
                        let i = usize::from(main.checked_sub(d.main_base)?);
                        d.mains.get(i).cloned()
                    })
                    .unwrap_or_else(|| format!("main {main}"))
            };
            let entries = map.entries();
            total += entries.len() as u64;
            for (k, slot) in entries
                .into_iter()
                .take(T7_SHOWN.saturating_sub(rows.len()))
            {
                let (main, unit) = split_key(k);
                rows.push(T7Row {
                    main_disk: name_of(main),
                    main_address: unit,
                    work_disk: w.disk.clone(),
                    work_address: slot + 1,
                });
            }
        }
        (rows, total)
    }

    /// Table T5's status of `disk`: one of the disks (the failing one
    /// included) whose writes go to a work disk now.
    pub(super) fn t5_status(&self, disk: &str) -> Option<String> {
        let below = self.sparing.ops().into_iter().any(|r| {
            r.divert
                .as_ref()
                .is_some_and(|d| !d.work_disk.is_empty() && d.mains.iter().any(|m| m == disk))
        });
        below.then(|| RENEWED.to_string())
    }
}
