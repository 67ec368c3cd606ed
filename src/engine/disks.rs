//! Disks: adding, opening, checking labels, listing, failing, fault rules.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{DISKS_DIR, DiskEntry, OpenDisk, Pool, State, check_name};
use crate::api::views::*;
use crate::blockdev::BlockDev;
use crate::disk::identity::{first_data, identify, read_label};
use crate::disk::{
    Counted, DATA_OFFSET, DiskCounters, FaultDisk, FaultRules, FileDisk, Label, OpenOptions,
};
use crate::error::{Error, ErrorKind, Result};
use crate::meta::model::{DiskRecord, SlotState, now};
use crate::units::format_size;

/// Smallest disk ferrosan accepts: label area plus 1 MiB of data.
const MIN_DISK: u64 = DATA_OFFSET + (1 << 20);
/// Largest disk file ferrosan makes: 1 EiB (a sparse file's limit on ext4
/// is 16 TiB, on XFS 8 EiB; the filesystem refuses what it cannot hold).
const MAX_DISK: u64 = 1 << 60;

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
        let path = self.disk_path(rec);
        let shown = path.display();
        let (open, problem) = match FileDisk::open(&path, self.disk_options()) {
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
                                "disk {name}: {shown} is truncated: its label says {} of data, the pool recorded {}",
                                crate::units::format_exact(label.data_size),
                                crate::units::format_exact(rec.data_size)
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
            path: self.disk_path(&e.rec),
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
                .map(|o| counters_view(o.counters.snapshot()))
                .unwrap_or_default(),
            recent_errors: self.sparing.recent_errors(&e.rec.name),
            faults: e
                .open
                .as_ref()
                .and_then(|o| o.fault.as_ref())
                .map(|f| faults_view(f.rules())),
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
        if req.size.is_some() && req.path.is_some() {
            return Err(Error::invalid(
                "give either --size (a new file) or --path (an existing file or device), not both",
            ));
        }
        // Checked under a short lock; the file work and the commit run with
        // none held (changes run one at a time on the commit path).
        let (pool_id, adopt) = {
            let st = self.lock();
            if st.disks.contains_key(&req.name) {
                return Err(Error::conflict(format!("disk {} already exists", req.name)));
            }
            let adopt = match (req.size, &req.path) {
                (None, Some(path)) => Some(self.check_adoptable(&st, path, req.force)?),
                _ => None,
            };
            (self.ids.rec.id, adopt)
        };
        let id = uuid::Uuid::new_v4();
        let label = |data_size: u64| Label {
            pool_id: *pool_id.as_bytes(),
            disk_id: *id.as_bytes(),
            data_offset: DATA_OFFSET,
            data_size,
            seq: 1,
            name: req.name.clone(),
        };
        let (file, path, owned) = match (req.size, adopt) {
            (Some(size), _) => {
                let (file, path) = self.new_disk_file(&req.name, size, label)?;
                (file, path, true)
            }
            (None, Some(path)) => {
                let file = FileDisk::adopt(&path, label, self.disk_options())?;
                (file, path, false)
            }
            (None, None) => {
                return Err(Error::invalid(
                    "give --size to create a disk file, or --path to adopt a file or block device",
                ));
            }
        };
        let rec = DiskRecord {
            id,
            name: req.name.clone(),
            path,
            total_size: DATA_OFFSET + file.size(),
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
        let view = {
            let mut st = self.lock();
            let view = self.disk_view(&st, &entry);
            st.disks.insert(req.name.clone(), entry);
            view
        };
        if req.spare {
            self.use_spares();
        }
        Ok(view)
    }

    /// A new sparse disk file of `size` bytes in the pool's disk folder.
    fn new_disk_file(
        &self,
        name: &str,
        size: u64,
        label: impl Fn(u64) -> Label,
    ) -> Result<(FileDisk, PathBuf)> {
        if size < MIN_DISK {
            return Err(Error::invalid(format!(
                "disk size {} is too small: a disk needs at least {}",
                format_size(size),
                format_size(MIN_DISK)
            )));
        }
        if size > MAX_DISK {
            return Err(Error::invalid(format!(
                "disk size {} is too large: a disk file holds at most {}",
                format_size(size),
                format_size(MAX_DISK)
            )));
        }
        let data = (size - DATA_OFFSET) / (1 << 20) * (1 << 20);
        let path = self.dir.join(DISKS_DIR).join(format!("{name}.img"));
        if path.exists() {
            return Err(Error::conflict(format!(
                "{} already exists: remove it or adopt it with --path",
                path.display()
            )));
        }
        let file = FileDisk::create(&path, data, &label(data), self.disk_options())?;
        Ok((file, path))
    }

    /// Checks a file or block device before it is labelled for this pool,
    /// and returns its canonical path. Refuses (always) anything this pool
    /// already uses, by any path: the same file or device or a partition
    /// of it (identity), a disk recorded at that path (even missing or
    /// failed), a device whose label names a disk of this pool. Refuses
    /// unless `force` a device that holds another pool's label or other
    /// data where signatures live.
    fn check_adoptable(&self, st: &State, path: &Path, force: bool) -> Result<PathBuf> {
        // The daemon's working directory means nothing to the user:
        // a relative path could name (and label) an unrelated file.
        if !path.is_absolute() {
            return Err(Error::invalid(format!(
                "disk path {} is relative: give an absolute path",
                path.display()
            )));
        }
        let (ident, _) = identify(path)?;
        let path = std::fs::canonicalize(path)
            .map_err(|e| Error::io(format!("cannot adopt {}", path.display()), e))?;
        let shown = path.display();
        for e in st.disks.values() {
            let same_path = self.disk_path(&e.rec) == path;
            let same_dev = e
                .open
                .as_ref()
                .and_then(|o| o.file.identity().ok())
                .is_some_and(|i| i.overlaps(&ident));
            if same_path || same_dev {
                return Err(Error::conflict(format!(
                    "{shown} is already disk {} of this pool (at {}): refusing to relabel it",
                    e.rec.name,
                    self.disk_path(&e.rec).display()
                )));
            }
        }
        match read_label(&path)? {
            Some(label) if label.pool_id == *self.ids.rec.id.as_bytes() => {
                let id = uuid::Uuid::from_bytes(label.disk_id);
                if let Some(e) = st.disks.values().find(|e| e.rec.id == id) {
                    return Err(Error::conflict(format!(
                        "{shown} is disk {} of this pool (its label says so; the pool knows it at {}): refusing to relabel it",
                        e.rec.name,
                        self.disk_path(&e.rec).display()
                    )));
                }
                // A disk this pool removed earlier: free to adopt again.
            }
            Some(label) if !force => {
                return Err(Error::conflict(format!(
                    "{shown} is a disk of another ferrosan pool ({}): adopting it loses that pool's data on it; add --force if that pool is gone",
                    uuid::Uuid::from_bytes(label.pool_id)
                )));
            }
            None if !force => {
                if let Some(off) = first_data(&path)? {
                    return Err(Error::conflict(format!(
                        "{shown} holds data (a nonzero byte at offset {off}, where partition tables, filesystems and RAID labels live) and no ferrosan label: adopting it overwrites it; add --force if nothing on it is needed"
                    )));
                }
            }
            _ => {}
        }
        Ok(path)
    }

    /// Where a recorded disk is: a disk file the pool made lives in the
    /// pool's own disk folder (wherever the pool directory is now, and
    /// however the daemon that made it named the pool); an adopted one at
    /// its recorded, canonical path.
    pub(super) fn disk_path(&self, rec: &DiskRecord) -> PathBuf {
        match rec.path.file_name() {
            Some(file) if rec.owned_file => self.dir.join(DISKS_DIR).join(file),
            _ => rec.path.clone(),
        }
    }

    pub fn disk_remove(&self, name: &str) -> Result<()> {
        self.refuse_work_disk(name)?;
        let rec = {
            let st = self.lock();
            let e = Self::disk_entry(&st, name)?;
            if let Some((g, slot)) = Self::disk_slot(&st, name) {
                return Err(Error::conflict(format!(
                    "disk {name} is in group {g} (slot {slot}): replace it first with `ferrosan disk replace {name} NEW`"
                )));
            }
            e.rec.clone()
        };
        let path = self.disk_path(&rec);
        self.meta.write(true, |tx| tx.del_disk(name))?;
        self.lock().disks.remove(name);
        if rec.owned_file
            && let Err(e) = std::fs::remove_file(&path)
        {
            tracing::warn!(
                "disk {name} removed, but deleting {} failed: {e}",
                path.display()
            );
        }
        Ok(())
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
        if let Some(n) = req.iops {
            rules.iops = n;
            changed = true;
        }
        if !changed {
            return Err(Error::invalid(
                "nothing to inject: give --read-error-at, --write-error-at, --error-rate, --vanish, --iops or --clear",
            ));
        }
        fault.set_rules(rules);
        Ok(self.disk_view(&st, e))
    }
}

fn counters_view(c: crate::disk::CounterSnapshot) -> CounterSnapshot {
    CounterSnapshot {
        reads: c.reads,
        writes: c.writes,
        bytes_read: c.bytes_read,
        bytes_written: c.bytes_written,
        read_errors: c.read_errors,
        write_errors: c.write_errors,
        flushes: c.flushes,
    }
}

fn faults_view(f: FaultRules) -> crate::api::views::FaultRules {
    crate::api::views::FaultRules {
        read_errors: f.read_errors,
        write_errors: f.write_errors,
        error_rate: f.error_rate,
        vanished: f.vanished,
        iops: f.iops,
    }
}
