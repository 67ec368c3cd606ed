//! Disks: adding, opening, checking labels, listing, failing, fault rules.

use std::path::Path;
use std::sync::Arc;

use super::types::*;
use super::{DISKS_DIR, DiskEntry, OpenDisk, Pool, State, check_name};
use crate::disk::{
    Counted, DATA_OFFSET, DiskCounters, FaultDisk, FaultRules, FileDisk, Label, OpenOptions,
};
use crate::error::{Error, ErrorKind, Result};
use crate::meta::records::{DiskRecord, SlotState, now};
use crate::stack::BlockDev;

/// Smallest disk ferrosan accepts: label area plus 1 MiB of data.
const MIN_DISK: u64 = DATA_OFFSET + (1 << 20);

impl Pool {
    fn disk_options(&self) -> OpenOptions {
        OpenOptions {
            direct: self.opts.direct_io,
        }
    }

    fn wrap(&self, name: &str, file: FileDisk) -> OpenDisk {
        let file = Arc::new(file);
        let counters = Arc::new(DiskCounters::default());
        let (inner, fault): (Arc<dyn BlockDev>, _) = if self.opts.fault_injection {
            let f = Arc::new(FaultDisk::new(Arc::clone(&file), name));
            (Arc::clone(&f) as Arc<dyn BlockDev>, Some(f))
        } else {
            (Arc::clone(&file) as Arc<dyn BlockDev>, None)
        };
        OpenDisk {
            dev: Arc::new(Counted::new(inner, Arc::clone(&counters))),
            file,
            counters,
            fault,
        }
    }

    /// Opens a recorded disk and checks its label against the record.
    pub(super) fn open_recorded(&self, rec: &DiskRecord, pool_id: uuid::Uuid) -> DiskEntry {
        let name = &rec.name;
        let shown = rec.path.display();
        let (open, problem) = match FileDisk::open(&rec.path, self.disk_options()) {
            Err(e) if e.kind() == ErrorKind::NotFound => (
                None,
                Some((
                    DiskStatus::Missing,
                    format!("disk {name}: {shown} is missing"),
                )),
            ),
            Err(e) => (
                None,
                Some((DiskStatus::Unusable, format!("disk {name}: {}", e.chain()))),
            ),
            Ok((file, label)) => {
                if label.pool_id != *pool_id.as_bytes() {
                    let other = uuid::Uuid::from_bytes(label.pool_id);
                    (
                        None,
                        Some((
                            DiskStatus::Unusable,
                            format!(
                                "disk {name}: {shown} belongs to another pool ({other}), not this one ({pool_id})"
                            ),
                        )),
                    )
                } else if label.disk_id != *rec.id.as_bytes() {
                    (
                        None,
                        Some((
                            DiskStatus::Unusable,
                            format!(
                                "disk {name}: {shown} holds another disk of this pool ({:?})",
                                label.name
                            ),
                        )),
                    )
                } else if label.data_size < rec.data_size {
                    (
                        None,
                        Some((
                            DiskStatus::Unusable,
                            format!(
                                "disk {name}: {shown} is truncated: {} data bytes, {} recorded",
                                label.data_size, rec.data_size
                            ),
                        )),
                    )
                } else {
                    (Some(self.wrap(name, file)), None)
                }
            }
        };
        if let Some((_, msg)) = &problem {
            self.problem(msg.clone());
        }
        DiskEntry {
            rec: rec.clone(),
            open,
            problem,
        }
    }

    /// Where a disk is used: (group, slot).
    pub(super) fn disk_slot(st: &State, name: &str) -> Option<(String, usize)> {
        st.groups.values().find_map(|g| {
            g.rec
                .slots
                .iter()
                .position(|s| s.disk.as_deref() == Some(name))
                .map(|i| (g.rec.name.clone(), i))
        })
    }

    pub(super) fn disk_view(&self, st: &State, e: &DiskEntry) -> DiskInfo {
        let slot = Self::disk_slot(st, &e.rec.name);
        let slot_state = slot.as_ref().and_then(|(g, i)| {
            st.groups
                .get(g)
                .and_then(|g| g.rec.slots.get(*i))
                .map(|s| s.state.clone())
        });
        let status = if let Some((s, _)) = &e.problem {
            *s
        } else if e.rec.failed.is_some() || slot_state == Some(SlotState::Failed) {
            DiskStatus::Failed
        } else if matches!(slot_state, Some(SlotState::Rebuilding { .. })) {
            DiskStatus::Rebuilding
        } else if e.rec.spare {
            DiskStatus::Spare
        } else {
            DiskStatus::Ok
        };
        let problem = e
            .problem
            .as_ref()
            .map(|p| p.1.clone())
            .or_else(|| e.rec.failed.clone());
        DiskInfo {
            name: e.rec.name.clone(),
            path: e.rec.path.clone(),
            size: e.rec.total_size,
            data_size: e.rec.data_size,
            allocated: e.open.as_ref().map_or(0, |o| o.file.allocated_bytes()),
            status,
            problem,
            group: slot.as_ref().map(|s| s.0.clone()),
            slot: slot.map(|s| s.1),
            counters: e
                .open
                .as_ref()
                .map(|o| o.counters.snapshot())
                .unwrap_or_default(),
            faults: e
                .open
                .as_ref()
                .and_then(|o| o.fault.as_ref())
                .map(|f| f.rules()),
        }
    }

    pub fn disk_list(&self) -> Vec<DiskInfo> {
        let st = self.lock();
        st.disks.values().map(|e| self.disk_view(&st, e)).collect()
    }

    pub fn disk_get(&self, name: &str) -> Result<DiskInfo> {
        let st = self.lock();
        let e = Self::disk_entry(&st, name)?;
        Ok(self.disk_view(&st, e))
    }

    pub(super) fn disk_entry<'a>(st: &'a State, name: &str) -> Result<&'a DiskEntry> {
        st.disks.get(name).ok_or_else(|| {
            Error::not_found(format!("unknown disk {name:?}: see `ferrosan disk list`"))
        })
    }

    pub fn disk_add(&self, req: DiskAddRequest) -> Result<DiskInfo> {
        check_name("disk", &req.name)?;
        let mut st = self.lock();
        if st.disks.contains_key(&req.name) {
            return Err(Error::conflict(format!("disk {} already exists", req.name)));
        }
        let pool_id = st.pool.id;
        let id = uuid::Uuid::new_v4();
        let label = |data_size: u64| Label {
            pool_id: *pool_id.as_bytes(),
            disk_id: *id.as_bytes(),
            data_offset: DATA_OFFSET,
            data_size,
            seq: 1,
            name: req.name.clone(),
        };
        let (file, path, total, owned) = match (&req.size, &req.path) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "give either --size (a new file) or --path (an existing file or device), not both",
                ));
            }
            (None, None) => {
                return Err(Error::invalid(
                    "give --size to create a disk file, or --path to adopt a file or block device",
                ));
            }
            (Some(size), None) => {
                let size = *size;
                if size < MIN_DISK {
                    return Err(Error::invalid(format!(
                        "disk size {size} is too small: a disk needs at least {MIN_DISK} bytes (2 MiB)"
                    )));
                }
                let data = (size - DATA_OFFSET) / (1 << 20) * (1 << 20);
                let path = self.dir.join(DISKS_DIR).join(format!("{}.img", req.name));
                if path.exists() {
                    return Err(Error::conflict(format!(
                        "{} already exists: remove it or adopt it with --path",
                        path.display()
                    )));
                }
                let file = FileDisk::create(&path, data, &label(data), self.disk_options())?;
                (file, path, DATA_OFFSET + data, true)
            }
            (None, Some(path)) => {
                // The daemon's working directory means nothing to the user:
                // a relative path could name (and label) an unrelated file.
                if !path.is_absolute() {
                    return Err(Error::invalid(format!(
                        "disk path {} is relative: give an absolute path",
                        path.display()
                    )));
                }
                let path = std::fs::canonicalize(path)
                    .map_err(|e| Error::io(format!("cannot adopt {}", path.display()), e))?;
                self.check_adoptable(&st, &path, pool_id)?;
                let file = FileDisk::adopt(&path, label, self.disk_options())?;
                let total = DATA_OFFSET + file.size();
                (file, path, total, false)
            }
        };
        let rec = DiskRecord {
            id,
            name: req.name.clone(),
            path,
            total_size: total,
            data_size: file.size(),
            owned_file: owned,
            spare: req.spare,
            failed: None,
            created: now(),
        };
        if let Err(e) = self.meta.write(true, |tx| tx.put_disk(&rec)) {
            if owned {
                let _ = std::fs::remove_file(&rec.path);
            }
            return Err(e);
        }
        let open = self.wrap(&req.name, file);
        let entry = DiskEntry {
            rec,
            open: Some(open),
            problem: None,
        };
        let view = self.disk_view(&st, &entry);
        st.disks.insert(req.name.clone(), entry);
        drop(st);
        if req.spare {
            self.use_spares();
        }
        Ok(view)
    }

    /// Refuses to adopt a device that another pool, or another disk of this
    /// pool, already uses.
    fn check_adoptable(&self, st: &State, path: &Path, pool_id: uuid::Uuid) -> Result<()> {
        if let Some(e) = st.disks.values().find(|e| e.rec.path == path) {
            return Err(Error::conflict(format!(
                "{} is already disk {} of this pool",
                path.display(),
                e.rec.name
            )));
        }
        if let Ok((_, label)) = FileDisk::open(path, OpenOptions { direct: false })
            && label.pool_id != *pool_id.as_bytes()
        {
            return Err(Error::conflict(format!(
                "{} is a disk of another ferrosan pool ({}): refusing to overwrite it; wipe its first 8 KiB if you mean to reuse it",
                path.display(),
                uuid::Uuid::from_bytes(label.pool_id)
            )));
        }
        Ok(())
    }

    pub fn disk_remove(&self, name: &str) -> Result<()> {
        let mut st = self.lock();
        let e = Self::disk_entry(&st, name)?;
        if let Some((g, slot)) = Self::disk_slot(&st, name) {
            return Err(Error::conflict(format!(
                "disk {name} is in group {g} (slot {slot}): replace it first with `ferrosan disk replace {name} NEW`"
            )));
        }
        let rec = e.rec.clone();
        self.meta.write(true, |tx| tx.del_disk(name))?;
        st.disks.remove(name);
        drop(st);
        if rec.owned_file
            && let Err(e) = std::fs::remove_file(&rec.path)
        {
            tracing::warn!(
                "disk {name} removed, but deleting {} failed: {e}",
                rec.path.display()
            );
        }
        Ok(())
    }

    /// Marks a member failed, as a drill: the group goes degraded (and a
    /// spare, if any, takes its place).
    pub fn disk_fail(&self, name: &str) -> Result<DiskInfo> {
        let (group, slot) = {
            let st = self.lock();
            Self::disk_entry(&st, name)?;
            Self::disk_slot(&st, name).ok_or_else(|| {
                Error::invalid(format!(
                    "disk {name} is in no group: only a group member can be failed"
                ))
            })?
        };
        let raid = {
            let st = self.group_entry_locked(&group)?;
            st.groups
                .get(&group)
                .map(|g| Arc::clone(&g.raid))
                .ok_or_else(|| Error::not_found(format!("group {group} is gone")))?
        };
        raid.fail_member(slot)?;
        self.record_member_failed(&group, slot, "failed by the administrator (disk fail)")?;
        self.disk_get(name)
    }

    pub fn disk_inject(&self, name: &str, req: InjectRequest) -> Result<DiskInfo> {
        if !self.opts.fault_injection {
            return Err(Error::invalid(
                "fault injection is off: start the daemon with `ferrosan serve --fault-injection` to use disk inject",
            ));
        }
        let st = self.lock();
        let e = Self::disk_entry(&st, name)?;
        let fault = e
            .open
            .as_ref()
            .and_then(|o| o.fault.as_ref())
            .ok_or_else(|| {
                Error::invalid(format!("disk {name} is not open (missing or unusable)"))
            })?;
        let mut rules = if req.clear {
            FaultRules::default()
        } else {
            fault.rules()
        };
        let mut changed = req.clear;
        if let Some(r) = req.read_error_at {
            rules.read_errors.push((r.offset, r.length.unwrap_or(512)));
            changed = true;
        }
        if let Some(r) = req.write_error_at {
            rules.write_errors.push((r.offset, r.length.unwrap_or(512)));
            changed = true;
        }
        if let Some(p) = req.error_rate {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::invalid(format!(
                    "error rate {p} is not between 0 and 1"
                )));
            }
            rules.error_rate = p;
            changed = true;
        }
        if req.vanish {
            rules.vanished = true;
            changed = true;
        }
        if !changed {
            return Err(Error::invalid(
                "nothing to inject: give --read-error-at, --write-error-at, --error-rate, --vanish or --clear",
            ));
        }
        fault.set_rules(rules);
        Ok(self.disk_view(&st, e))
    }
}
