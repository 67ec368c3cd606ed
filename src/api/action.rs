//! What a request asks for, parsed: the HTTP layer builds an [`Action`],
//! one [`Dispatch`] implementation (the [`Pool`]) carries it out, and the
//! [`Reply`] goes back as JSON.

#![forbid(unsafe_code)]

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::api::views::*;
use crate::engine::Pool;
use crate::error::Result;

/// One management request, parsed and typed.
#[derive(Debug, Clone)]
pub enum Action {
    PoolInfo,
    DiskList,
    DiskGet(String),
    DiskAdd(DiskAddRequest),
    DiskRemove(String),
    DiskFail(String, DiskFailRequest),
    DiskReinstate(String),
    DiskReplace(String, DiskReplaceRequest),
    DiskInject(String, InjectRequest),
    GroupList,
    GroupGet(String),
    GroupCreate(GroupCreateRequest),
    GroupDelete(String),
    GroupExtend(String, GroupExtendRequest),
    VolumeList,
    VolumeGet(String),
    VolumeCreate(VolumeCreateRequest),
    VolumeDelete { name: String, force: bool },
    VolumeGrow(String, VolumeGrowRequest),
    JobList,
    JobGet(u64),
    JobPause(u64),
    JobResume(u64),
    JobCancel(u64),
    JobRate(u64, JobRateRequest),
    CopyList,
    CopyGet(String),
    CopyCreate(CopyCreateRequest),
    CopyDelete(String),
    CopyRestore(String, CopyRestoreRequest),
    CopySplit(String, CopySplitRequest),
}

/// The view an action returns.
#[derive(Debug, Clone)]
pub enum Reply {
    Pool(PoolInfo),
    Disk(DiskInfo),
    Disks(Vec<DiskInfo>),
    Group(GroupInfo),
    Groups(Vec<GroupInfo>),
    Volume(VolumeInfo),
    Volumes(Vec<VolumeInfo>),
    Job(JobInfo),
    Jobs(Vec<JobInfo>),
    Copy(CopyInfo),
    Copies(Vec<CopyInfo>),
    CopyDeleted(CopyDeleteInfo),
    CopyRestored(CopyRestoreInfo),
    Reinstated(DiskReinstateInfo),
    CopySplit(CopySplitInfo),
    /// The object is gone: 204 No Content.
    Deleted,
}

impl Reply {
    /// The response, with `status` for a reply that has a body.
    pub fn into_response_with(self, status: StatusCode) -> Response {
        match self {
            Reply::Pool(v) => (status, Json(v)).into_response(),
            Reply::Disk(v) => (status, Json(v)).into_response(),
            Reply::Disks(v) => (status, Json(v)).into_response(),
            Reply::Group(v) => (status, Json(v)).into_response(),
            Reply::Groups(v) => (status, Json(v)).into_response(),
            Reply::Volume(v) => (status, Json(v)).into_response(),
            Reply::Volumes(v) => (status, Json(v)).into_response(),
            Reply::Job(v) => (status, Json(v)).into_response(),
            Reply::Jobs(v) => (status, Json(v)).into_response(),
            Reply::Copy(v) => (status, Json(v)).into_response(),
            Reply::Copies(v) => (status, Json(v)).into_response(),
            Reply::CopyDeleted(v) => (status, Json(v)).into_response(),
            Reply::CopyRestored(v) => (status, Json(v)).into_response(),
            Reply::Reinstated(v) => (status, Json(v)).into_response(),
            Reply::CopySplit(v) => (status, Json(v)).into_response(),
            Reply::Deleted => StatusCode::NO_CONTENT.into_response(),
        }
    }
}

/// The one owner of the state that actions change. Called on a blocking
/// thread: it may block.
pub trait Dispatch: Send + Sync + 'static {
    fn dispatch(&self, action: Action) -> Result<Reply>;
}

impl Dispatch for Pool {
    fn dispatch(&self, action: Action) -> Result<Reply> {
        Ok(match action {
            Action::PoolInfo => Reply::Pool(self.info()),
            Action::DiskList => Reply::Disks(self.disk_list()),
            Action::DiskGet(name) => Reply::Disk(self.disk_get(&name)?),
            Action::DiskAdd(req) => Reply::Disk(self.disk_add(req)?),
            Action::DiskRemove(name) => self.disk_remove(&name).map(|()| Reply::Deleted)?,
            Action::DiskFail(name, req) => Reply::Disk(self.disk_fail(&name, req.force)?),
            Action::DiskReinstate(name) => Reply::Reinstated(self.disk_reinstate(&name)?),
            Action::DiskReplace(old, req) => Reply::Job(self.disk_replace(&old, req)?),
            Action::DiskInject(name, req) => Reply::Disk(self.disk_inject(&name, req)?),
            Action::GroupList => Reply::Groups(self.group_list()),
            Action::GroupGet(name) => Reply::Group(self.group_get(&name)?),
            Action::GroupCreate(req) => Reply::Group(self.group_create(req)?),
            Action::GroupDelete(name) => self.group_delete(&name).map(|()| Reply::Deleted)?,
            Action::GroupExtend(name, req) => Reply::Group(self.group_extend(&name, req)?),
            Action::VolumeList => Reply::Volumes(self.volume_list()),
            Action::VolumeGet(name) => Reply::Volume(self.volume_get(&name)?),
            Action::VolumeCreate(req) => Reply::Volume(self.volume_create(req)?),
            Action::VolumeDelete { name, force } => {
                self.volume_delete(&name, force).map(|()| Reply::Deleted)?
            }
            Action::VolumeGrow(name, req) => Reply::Volume(self.volume_grow(&name, req)?),
            Action::JobList => Reply::Jobs(self.job_list()),
            Action::JobGet(id) => Reply::Job(self.job_get(id)?),
            Action::JobPause(id) => Reply::Job(self.job_pause(id)?),
            Action::JobResume(id) => Reply::Job(self.job_resume(id)?),
            Action::JobCancel(id) => Reply::Job(self.job_cancel(id)?),
            Action::JobRate(id, req) => Reply::Job(self.job_set_rate(id, req)?),
            Action::CopyList => Reply::Copies(self.copy_list()),
            Action::CopyGet(name) => Reply::Copy(self.copy_get(&name)?),
            Action::CopyCreate(req) => Reply::Copy(self.copy_create(req)?),
            Action::CopyDelete(name) => Reply::CopyDeleted(self.copy_delete(&name)?),
            Action::CopyRestore(name, req) => {
                Reply::CopyRestored(self.copy_restore(&name, req.force)?)
            }
            Action::CopySplit(name, req) => Reply::CopySplit(self.copy_split(&name, req)?),
        })
    }
}
