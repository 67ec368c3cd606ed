//! engine: the pool — disks, RAID groups and volumes, built from metadata.
//!
//! SKELETON for the API/CLI work: the signatures are final, the bodies are
//! being written on branch `main` and replace this file at merge.

pub mod types;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};
use types::*;

/// An open pool: the daemon's state. Every method is synchronous and may
/// block (database commits, file creation): call it from
/// `tokio::task::spawn_blocking`. Long work is started as a job and returns
/// at once with the job's view.
pub struct Pool {
    dir: PathBuf,
}

fn todo() -> Error {
    Error::new(ErrorKind::Unsupported, "not built yet")
}

impl Pool {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn info(&self) -> PoolInfo {
        unimplemented!()
    }

    pub fn disk_list(&self) -> Vec<DiskInfo> {
        Vec::new()
    }
    pub fn disk_get(&self, _name: &str) -> Result<DiskInfo> {
        Err(todo())
    }
    pub fn disk_add(&self, _req: DiskAddRequest) -> Result<DiskInfo> {
        Err(todo())
    }
    /// Removes a disk that is in no group (deletes the file if the pool created it).
    pub fn disk_remove(&self, _name: &str) -> Result<()> {
        Err(todo())
    }
    pub fn disk_fail(&self, _name: &str) -> Result<DiskInfo> {
        Err(todo())
    }
    /// Starts a rebuild/replace job onto `req.new`.
    pub fn disk_replace(&self, _old: &str, _req: DiskReplaceRequest) -> Result<JobInfo> {
        Err(todo())
    }
    /// Refused with ErrorKind::Invalid unless the daemon runs with --fault-injection.
    pub fn disk_inject(&self, _name: &str, _req: InjectRequest) -> Result<DiskInfo> {
        Err(todo())
    }

    pub fn group_list(&self) -> Vec<GroupInfo> {
        Vec::new()
    }
    pub fn group_get(&self, _name: &str) -> Result<GroupInfo> {
        Err(todo())
    }
    pub fn group_create(&self, _req: GroupCreateRequest) -> Result<GroupInfo> {
        Err(todo())
    }
    pub fn group_delete(&self, _name: &str) -> Result<()> {
        Err(todo())
    }
    pub fn group_extend(&self, _name: &str, _req: GroupExtendRequest) -> Result<GroupInfo> {
        Err(todo())
    }

    pub fn volume_list(&self) -> Vec<VolumeInfo> {
        Vec::new()
    }
    pub fn volume_get(&self, _name: &str) -> Result<VolumeInfo> {
        Err(todo())
    }
    pub fn volume_create(&self, _req: VolumeCreateRequest) -> Result<VolumeInfo> {
        Err(todo())
    }
    /// Refused with ErrorKind::Conflict while NBD clients are connected unless `force`.
    pub fn volume_delete(&self, _name: &str, _force: bool) -> Result<()> {
        Err(todo())
    }
    pub fn volume_grow(&self, _name: &str, _req: VolumeGrowRequest) -> Result<VolumeInfo> {
        Err(todo())
    }

    pub fn job_list(&self) -> Vec<JobInfo> {
        Vec::new()
    }
    pub fn job_get(&self, _id: u64) -> Result<JobInfo> {
        Err(todo())
    }
    pub fn job_pause(&self, _id: u64) -> Result<JobInfo> {
        Err(todo())
    }
    pub fn job_resume(&self, _id: u64) -> Result<JobInfo> {
        Err(todo())
    }
    pub fn job_cancel(&self, _id: u64) -> Result<JobInfo> {
        Err(todo())
    }
    pub fn job_set_rate(&self, _id: u64, _req: JobRateRequest) -> Result<JobInfo> {
        Err(todo())
    }
}
