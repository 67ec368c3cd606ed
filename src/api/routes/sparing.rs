//! Routes of failure-anticipating sparing (seed 002, section B).

use axum::extract::State;
use axum::http::StatusCode;

use super::super::action::Action;
use super::super::extract::{Body, PathParams};
use super::{Answer, AppState};
use crate::api::views::limits::Name;
use crate::api::views::*;

/// Table T1 (RAID groups), every disk's errors against the policy, the
/// sparings under way and the alarms.
#[utoipa::path(get, path = "/v1/sparing", tag = "sparing",
    responses((status = 200, description = "Sparing status", body = SparingStatus)))]
pub(super) async fn sparing_status(State(s): State<AppState>) -> Answer {
    s.run(Action::SparingStatus, StatusCode::OK).await
}

/// Set when a member disk counts as failing: `threshold` errors within
/// `window_secs` (what is not given stays).
#[utoipa::path(put, path = "/v1/sparing/policy", tag = "sparing", request_body = SparingPolicyRequest,
    responses(
        (status = 200, description = "Sparing status, with the new policy", body = SparingStatus),
        (status = 422, description = "A threshold of 0, or a window out of 1 s to 30 days", body = ApiError)))]
pub(super) async fn sparing_policy(
    State(s): State<AppState>,
    Body(req): Body<SparingPolicyRequest>,
) -> Answer {
    s.run(Action::SparingPolicy(req), StatusCode::OK).await
}

/// Copy a member disk to a spare now (a drill, or a disk you distrust):
/// the disk keeps serving until the spare takes its place, then it is
/// marked failed.
#[utoipa::path(post, path = "/v1/sparing/start", tag = "sparing", request_body = SparingStartRequest,
    responses(
        (status = 201, description = "The sparing, copying", body = SparingInfo),
        (status = 404, description = "No such disk", body = ApiError),
        (status = 409, description = "The disk is already being spared, has failed, its group is rebuilding, or no spare is free", body = ApiError),
        (status = 422, description = "The disk is in no group, or the spare named cannot be used", body = ApiError)))]
pub(super) async fn sparing_start(
    State(s): State<AppState>,
    Body(req): Body<SparingStartRequest>,
) -> Answer {
    s.run(Action::SparingStart(req), StatusCode::CREATED).await
}

/// Set a volume aside as a work volume (table T4): while a group on
/// another group's disks is spared, its hosts' writes go there and are
/// written back when the copy is done. The volume stops being an export.
#[utoipa::path(post, path = "/v1/sparing/work-volumes", tag = "sparing", request_body = WorkVolumeRequest,
    responses(
        (status = 201, description = "Table T4", body = Vec<WorkVolumeRow>),
        (status = 404, description = "No such volume", body = ApiError),
        (status = 409, description = "The volume is open, in a pair, copy or S-VOL group, or a work volume already", body = ApiError)))]
pub(super) async fn work_volume_add(
    State(s): State<AppState>,
    Body(req): Body<WorkVolumeRequest>,
) -> Answer {
    s.run(Action::WorkVolumeAdd(req), StatusCode::CREATED).await
}

/// Give a work volume back to hosts (refused while it holds diverted
/// writes).
#[utoipa::path(delete, path = "/v1/sparing/work-volumes/{volume}", tag = "sparing",
    params(("volume" = Name, Path, description = "The work volume")),
    responses(
        (status = 200, description = "Table T4", body = Vec<WorkVolumeRow>),
        (status = 404, description = "Not a work volume", body = ApiError),
        (status = 409, description = "It holds the diverted writes of a sparing", body = ApiError)))]
pub(super) async fn work_volume_remove(
    State(s): State<AppState>,
    PathParams(volume): PathParams<String>,
) -> Answer {
    s.run(Action::WorkVolumeRemove(volume), StatusCode::OK)
        .await
}

/// Set a free disk aside as a work disk (table T6): while a group is
/// spared, the disk-level writes its RAID layer makes for hosts (data and
/// parity) are appended to it, and written back when the copy is done.
/// Several groups sparing at once may share one.
#[utoipa::path(post, path = "/v1/sparing/work-disks", tag = "sparing", request_body = WorkDiskRequest,
    responses(
        (status = 201, description = "Table T6", body = Vec<WorkDiskRow>),
        (status = 404, description = "No such disk", body = ApiError),
        (status = 409, description = "The disk is in a group, a spare, or a work disk already", body = ApiError),
        (status = 422, description = "The disk has failed or is not open", body = ApiError)))]
pub(super) async fn work_disk_add(
    State(s): State<AppState>,
    Body(req): Body<WorkDiskRequest>,
) -> Answer {
    s.run(Action::WorkDiskAdd(req), StatusCode::CREATED).await
}

/// Give a work disk back (refused while it holds diverted writes).
#[utoipa::path(delete, path = "/v1/sparing/work-disks/{disk}", tag = "sparing",
    params(("disk" = Name, Path, description = "The work disk")),
    responses(
        (status = 200, description = "Table T6", body = Vec<WorkDiskRow>),
        (status = 404, description = "Not a work disk", body = ApiError),
        (status = 409, description = "It holds the diverted writes of a sparing", body = ApiError)))]
pub(super) async fn work_disk_remove(
    State(s): State<AppState>,
    PathParams(disk): PathParams<String>,
) -> Answer {
    s.run(Action::WorkDiskRemove(disk), StatusCode::OK).await
}
