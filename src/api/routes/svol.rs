//! Routes of S-VOL groups (seed 003; operation codes 0 initialisation and
//! 3 query; FIG. 8A-8C).

use axum::extract::State;
use axum::http::StatusCode;

use super::super::action::Action;
use super::super::extract::{Body, PathParams};
use super::{Answer, AppState};
use crate::api::views::limits::Name;
use crate::api::views::*;

/// Every S-VOL group, as `query` shows it.
#[utoipa::path(get, path = "/v1/svol-groups", tag = "svol-groups",
    responses((status = 200, description = "The groups", body = [SvolGroupInfo])))]
pub(super) async fn svol_group_list(State(s): State<AppState>) -> Answer {
    s.run(Action::SvolGroupList, StatusCode::OK).await
}

/// Make an S-VOL group (operation code 0) from S-VOLs of one P-VOL in
/// PAIR, split at one instant, and spares: RO members are read-only
/// exports sharing reads, an RW member gets an increments volume.
#[utoipa::path(post, path = "/v1/svol-groups", tag = "svol-groups",
    request_body = SvolGroupCreateRequest,
    responses(
        (status = 201, description = "The group", body = SvolGroupInfo),
        (status = 404, description = "No such volume", body = ApiError),
        (status = 409, description = "The group exists, a member is not in PAIR or is in another group", body = ApiError),
        (status = 422, description = "No RO member, a member is not an S-VOL of the P-VOL, or sizes differ", body = ApiError)))]
pub(super) async fn svol_group_create(
    State(s): State<AppState>,
    Body(req): Body<SvolGroupCreateRequest>,
) -> Answer {
    s.run(Action::SvolGroupCreate(req), StatusCode::CREATED)
        .await
}

/// Query a group (operation code 3): tables 900, 1200 and 1300, members
/// and spares with their health.
#[utoipa::path(get, path = "/v1/svol-groups/{name}", tag = "svol-groups",
    params(("name" = Name, Path, description = "The group")),
    responses(
        (status = 200, description = "The group", body = SvolGroupInfo),
        (status = 404, description = "No such group", body = ApiError)))]
pub(super) async fn svol_group_query(
    State(s): State<AppState>,
    PathParams(name): PathParams<String>,
) -> Answer {
    s.run(Action::SvolGroupQuery(name), StatusCode::OK).await
}

/// Delete a group: its members go on as the split S-VOLs of their pairs,
/// writable; its increments volumes are deleted.
#[utoipa::path(delete, path = "/v1/svol-groups/{name}", tag = "svol-groups",
    params(("name" = Name, Path, description = "The group")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such group", body = ApiError)))]
pub(super) async fn svol_group_delete(
    State(s): State<AppState>,
    PathParams(name): PathParams<String>,
) -> Answer {
    s.run(Action::SvolGroupDelete(name), StatusCode::NO_CONTENT)
        .await
}

/// Restore (operation code 1), as a job: roll an RW member back to the
/// split image, rebuild a repaired RO member from the group (or an RW
/// member's failed increments volume onto a spare), or copy the group's
/// image back onto the P-VOL (only the tracks that differ).
#[utoipa::path(post, path = "/v1/svol-groups/{name}/restore", tag = "svol-groups",
    params(("name" = Name, Path, description = "The group")),
    request_body = SvolRestoreRequest,
    responses(
        (status = 202, description = "The job", body = JobInfo),
        (status = 404, description = "No such group", body = ApiError),
        (status = 409, description = "A job of the group runs, or the member is vacant", body = ApiError),
        (status = 422, description = "The member is not of the kind the mode needs", body = ApiError)))]
pub(super) async fn svol_group_restore(
    State(s): State<AppState>,
    PathParams(name): PathParams<String>,
    Body(req): Body<SvolRestoreRequest>,
) -> Answer {
    s.run(Action::SvolGroupRestore(name, req), StatusCode::ACCEPTED)
        .await
}
