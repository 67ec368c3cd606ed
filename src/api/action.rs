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
    GroupReshape(String, reshape::ReshapeRequest),
    GroupReshapeStatus(String),
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
    CopyGc,
    PoolCheck,
    PairList,
    PairGet(String),
    PairCreate(PairCreateRequest),
    PairDelete(String),
    PairSplit(String),
    PairGroupSplit(String),
    PairResync(String, PairCopyRequest),
    PairRestore(String, PairCopyRequest),
    SvolGroupList,
    SvolGroupQuery(String),
    SvolGroupCreate(SvolGroupCreateRequest),
    SvolGroupDelete(String),
    SvolGroupRestore(String, SvolRestoreRequest),
    SparingStatus,
    SparingPolicy(SparingPolicyRequest),
    SparingStart(SparingStartRequest),
    WorkVolumeAdd(WorkVolumeRequest),
    WorkVolumeRemove(String),
    WorkDiskAdd(WorkDiskRequest),
    WorkDiskRemove(String),
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
    Check(PoolCheck),
    Pair(PairInfo),
    Pairs(Vec<PairInfo>),
    SvolGroup(SvolGroupInfo),
    SvolGroups(Vec<SvolGroupInfo>),
    Sparing(SparingStatus),
    SparingStarted(SparingInfo),
    WorkVolumes(Vec<WorkVolumeRow>),
    WorkDisks(Vec<WorkDiskRow>),
    Reshape(reshape::ReshapeInfo),
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
            Reply::Reshape(v) => (status, Json(v)).into_response(),
            Reply::Jobs(v) => (status, Json(v)).into_response(),
            Reply::Copy(v) => (status, Json(v)).into_response(),
            Reply::Copies(v) => (status, Json(v)).into_response(),
            Reply::CopyDeleted(v) => (status, Json(v)).into_response(),
            Reply::CopyRestored(v) => (status, Json(v)).into_response(),
            Reply::Reinstated(v) => (status, Json(v)).into_response(),
            Reply::CopySplit(v) => (status, Json(v)).into_response(),
            Reply::Check(v) => (status, Json(v)).into_response(),
            Reply::Pair(v) => (status, Json(v)).into_response(),
            Reply::Pairs(v) => (status, Json(v)).into_response(),
            Reply::SvolGroup(v) => (status, Json(v)).into_response(),
            Reply::SvolGroups(v) => (status, Json(v)).into_response(),
            Reply::Sparing(v) => (status, Json(v)).into_response(),
            Reply::SparingStarted(v) => (status, Json(v)).into_response(),
            Reply::WorkVolumes(v) => (status, Json(v)).into_response(),
            Reply::WorkDisks(v) => (status, Json(v)).into_response(),
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
        if let Some(reply) = read(self, &action) {
            return reply;
        }
        // A change: it runs on the pool's one commit path, after the
        // changes queued before it.
        self.configure(move |pool| async move { change(&pool, action).await })
    }
}

/// Answers a read-only action at once (it takes only short locks); None
/// for a change.
fn read(p: &Pool, action: &Action) -> Option<Result<Reply>> {
    Some(match action {
        Action::PoolInfo => Ok(Reply::Pool(p.info())),
        Action::DiskList => Ok(Reply::Disks(p.disk_list())),
        Action::DiskGet(name) => p.disk_get(name).map(Reply::Disk),
        Action::GroupList => Ok(Reply::Groups(p.group_list())),
        Action::GroupGet(name) => p.group_get(name).map(Reply::Group),
        Action::GroupReshapeStatus(name) => p.reshape_status(name).map(Reply::Reshape),
        Action::VolumeList => Ok(Reply::Volumes(p.volume_list())),
        Action::VolumeGet(name) => p.volume_get(name).map(Reply::Volume),
        Action::JobList => Ok(Reply::Jobs(p.job_list())),
        Action::JobGet(id) => p.job_get(*id).map(Reply::Job),
        Action::CopyList => Ok(Reply::Copies(p.copy_list())),
        Action::CopyGet(name) => p.copy_get(name).map(Reply::Copy),
        Action::PairList => Ok(Reply::Pairs(p.pair_list())),
        Action::PairGet(svol) => p.pair_get(None, svol).map(Reply::Pair),
        Action::SvolGroupList => Ok(Reply::SvolGroups(p.svol_group_list())),
        Action::SvolGroupQuery(name) => p.svol_group_query(name).map(Reply::SvolGroup),
        Action::SparingStatus => Ok(Reply::Sparing(p.sparing_status())),
        // Job controls and fault injection change no record of the pool's
        // configuration: they need not queue behind a change.
        Action::JobPause(id) => p.job_pause(*id).map(Reply::Job),
        Action::JobResume(id) => p.job_resume(*id).map(Reply::Job),
        Action::JobCancel(id) => p.job_cancel(*id).map(Reply::Job),
        Action::JobRate(id, req) => p.job_set_rate(*id, req.clone()).map(Reply::Job),
        Action::DiskInject(name, req) => p.disk_inject(name, req.clone()).map(Reply::Disk),
        _ => return None,
    })
}

/// Carries out a change, on the commit path.
async fn change(p: &Pool, action: Action) -> Result<Reply> {
    Ok(match action {
        Action::DiskAdd(req) => Reply::Disk(p.disk_add(req)?),
        Action::DiskRemove(name) => p.disk_remove(&name).map(|()| Reply::Deleted)?,
        Action::DiskFail(name, req) => Reply::Disk(p.disk_fail(&name, req.force)?),
        Action::DiskReinstate(name) => Reply::Reinstated(p.disk_reinstate(&name)?),
        Action::DiskReplace(old, req) => Reply::Job(p.disk_replace(&old, req)?),
        Action::GroupCreate(req) => Reply::Group(p.group_create(req)?),
        Action::GroupDelete(name) => p.group_delete(&name).map(|()| Reply::Deleted)?,
        Action::GroupExtend(name, req) => Reply::Group(p.group_extend(&name, req)?),
        Action::GroupReshape(name, req) => Reply::Job(p.reshape_start(&name, req).await?),
        Action::VolumeCreate(req) => Reply::Volume(p.volume_create(req)?),
        Action::VolumeDelete { name, force } => p
            .volume_delete(&name, force)
            .await
            .map(|()| Reply::Deleted)?,
        Action::VolumeGrow(name, req) => Reply::Volume(p.volume_grow(&name, req)?),
        Action::CopyCreate(req) => Reply::Copy(p.copy_create(req).await?),
        Action::CopyDelete(name) => Reply::CopyDeleted(p.copy_delete(&name).await?),
        Action::CopyRestore(name, req) => {
            Reply::CopyRestored(p.copy_restore(&name, req.force).await?)
        }
        Action::CopySplit(name, req) => Reply::CopySplit(p.copy_split(&name, req).await?),
        Action::CopyGc => Reply::Jobs(p.copy_gc().await?),
        Action::PoolCheck => Reply::Check(p.pool_check().await?),
        Action::PairCreate(req) => Reply::Pair(p.pair_create(req).await?),
        Action::PairDelete(svol) => p.pair_delete(None, &svol).await.map(|()| Reply::Deleted)?,
        Action::PairSplit(svol) => Reply::Pairs(p.pair_split(None, Some(&svol), None).await?),
        Action::PairGroupSplit(g) => Reply::Pairs(p.pair_split(None, None, Some(&g)).await?),
        Action::PairResync(svol, req) => {
            Reply::Pair(p.pair_copy_back(None, &svol, false, req.rate).await?)
        }
        Action::PairRestore(svol, req) => {
            Reply::Pair(p.pair_copy_back(None, &svol, true, req.rate).await?)
        }
        Action::SvolGroupCreate(req) => Reply::SvolGroup(p.svol_group_create(req).await?),
        Action::SparingPolicy(req) => Reply::Sparing(p.sparing_policy_set(req)?),
        Action::SparingStart(req) => Reply::SparingStarted(p.sparing_start(req)?),
        Action::WorkVolumeAdd(req) => Reply::WorkVolumes(p.work_volume_add(req).await?),
        Action::WorkVolumeRemove(name) => Reply::WorkVolumes(p.work_volume_remove(&name)?),
        Action::WorkDiskAdd(req) => Reply::WorkDisks(p.work_disk_add(req).await?),
        Action::WorkDiskRemove(name) => Reply::WorkDisks(p.work_disk_remove(&name)?),
        Action::SvolGroupRestore(name, req) => {
            let rate = req.rate.unwrap_or(0);
            Reply::Job(match (req.mode, req.member) {
                (SvolRestoreMode::ToPvol, member) => {
                    p.svol_group_to_pvol(&name, member.as_deref(), rate).await?
                }
                (mode, Some(member)) => {
                    p.svol_group_restore(&name, &member, mode == SvolRestoreMode::Rollback, rate)?
                }
                (_, None) => {
                    return Err(crate::error::Error::invalid(
                        "rollback and rebuild name the member to restore (\"member\")",
                    ));
                }
            })
        }
        Action::SvolGroupDelete(name) => {
            p.svol_group_delete(&name).await.map(|()| Reply::Deleted)?
        }
        other => match read(p, &other) {
            Some(reply) => reply?,
            None => {
                return Err(crate::error::Error::invalid(format!(
                    "{other:?} is not a change"
                )));
            }
        },
    })
}
