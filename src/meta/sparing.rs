//! The sparing table: the policy (key `policy`), one record per sparing
//! under way (key `disk/<failing disk>`), one per work volume (key
//! `work/<volume>`) and one per work disk (key `workdisk/<disk>`), JSON
//! values.

#![forbid(unsafe_code)]

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::model::sparing::{SparingPolicy, SparingRecord, WorkDiskRecord, WorkVolumeRecord};
use super::{Meta, Tx, db_err, decode, encode};
use crate::error::Result;

pub(super) const SPARING: TableDefinition<&str, &[u8]> = TableDefinition::new("sparing");

const POLICY: &str = "policy";
const OP_PREFIX: &str = "disk/";
const WORK_PREFIX: &str = "work/";
const WORK_DISK_PREFIX: &str = "workdisk/";

/// What the sparing table holds.
pub struct SparingTable {
    pub policy: SparingPolicy,
    pub ops: Vec<SparingRecord>,
    pub work: Vec<WorkVolumeRecord>,
    pub work_disks: Vec<WorkDiskRecord>,
}

impl Meta {
    /// The stored policy (the default if none was set), every sparing
    /// under way and every work volume.
    pub fn sparing(&self) -> Result<SparingTable> {
        let db = self.db()?;
        let txn = db
            .begin_read()
            .map_err(|e| db_err("a read transaction", e))?;
        let t = txn
            .open_table(SPARING)
            .map_err(|e| db_err("opening a table", e))?;
        let mut policy = SparingPolicy::default();
        let mut ops = Vec::new();
        let mut work = Vec::new();
        let mut work_disks = Vec::new();
        for item in t.iter().map_err(|e| db_err("a scan", e))? {
            let (k, v) = item.map_err(|e| db_err("a scan", e))?;
            let key = k.value();
            if key == POLICY {
                policy = decode("sparing policy", key, v.value())?;
            } else if key.starts_with(OP_PREFIX) {
                ops.push(decode("sparing", key, v.value())?);
            } else if key.starts_with(WORK_PREFIX) {
                work.push(decode("work volume", key, v.value())?);
            } else if key.starts_with(WORK_DISK_PREFIX) {
                work_disks.push(decode("work disk", key, v.value())?);
            }
        }
        Ok(SparingTable {
            policy,
            ops,
            work,
            work_disks,
        })
    }
}

impl Tx<'_> {
    fn sparing_put(&mut self, key: &str, bytes: &[u8]) -> Result<()> {
        let mut t = self
            .txn
            .open_table(SPARING)
            .map_err(|e| db_err("opening a table", e))?;
        t.insert(key, bytes).map_err(|e| db_err("a write", e))?;
        Ok(())
    }

    pub fn put_sparing_policy(&mut self, p: &SparingPolicy) -> Result<()> {
        self.sparing_put(POLICY, &encode(p)?)
    }

    pub fn put_sparing(&mut self, r: &SparingRecord) -> Result<()> {
        self.sparing_put(&format!("{OP_PREFIX}{}", r.disk), &encode(r)?)
    }

    pub fn del_sparing(&mut self, disk: &str) -> Result<()> {
        self.sparing_del(&format!("{OP_PREFIX}{disk}"))
    }

    pub fn put_work_volume(&mut self, r: &WorkVolumeRecord) -> Result<()> {
        self.sparing_put(&format!("{WORK_PREFIX}{}", r.volume), &encode(r)?)
    }

    pub fn del_work_volume(&mut self, volume: &str) -> Result<()> {
        self.sparing_del(&format!("{WORK_PREFIX}{volume}"))
    }

    pub fn put_work_disk(&mut self, r: &WorkDiskRecord) -> Result<()> {
        self.sparing_put(&format!("{WORK_DISK_PREFIX}{}", r.disk), &encode(r)?)
    }

    pub fn del_work_disk(&mut self, disk: &str) -> Result<()> {
        self.sparing_del(&format!("{WORK_DISK_PREFIX}{disk}"))
    }

    fn sparing_del(&mut self, key: &str) -> Result<()> {
        let mut t = self
            .txn
            .open_table(SPARING)
            .map_err(|e| db_err("opening a table", e))?;
        t.remove(key).map_err(|e| db_err("a delete", e))?;
        Ok(())
    }
}
