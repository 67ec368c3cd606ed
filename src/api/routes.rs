//! The routes: each handler parses its request into an [`Action`] and hands
//! it to the dispatcher on a blocking thread. Nothing here decides anything.

#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod pairs;
mod sparing;
mod svol;

use super::action::{Action, Dispatch};
use super::error::ApiFailure;
use super::extract::{Body, OptionalBody, PathParams, Query, job_id};
use super::views::limits::Name;
use crate::api::views::*;

/// What every handler shares: the dispatcher.
#[derive(Clone)]
pub struct AppState {
    backend: Arc<dyn Dispatch>,
}

impl AppState {
    pub fn new(backend: Arc<dyn Dispatch>) -> AppState {
        AppState { backend }
    }

    /// Runs `action` on a blocking thread; `status` is the success status.
    async fn run(&self, action: Action, status: StatusCode) -> Result<Response, ApiFailure> {
        tracing::debug!(?action, "API request");
        let backend = Arc::clone(&self.backend);
        let outcome = tokio::task::spawn_blocking(move || backend.dispatch(action))
            .await
            .map_err(|e| {
                tracing::error!("API handler failed: {e}");
                ApiFailure::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the daemon failed while handling this request: see its log",
                )
            })?;
        match outcome {
            Ok(reply) => Ok(reply.into_response_with(status)),
            Err(err) => {
                let failure = ApiFailure::from(err);
                if failure.status.is_server_error() {
                    tracing::warn!(kind = %failure.body.kind, "API: {}", failure.body.message);
                }
                Err(failure)
            }
        }
    }
}

type Answer = Result<Response, ApiFailure>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ferrosan",
        description = "Management API of a ferrosan pool, served on `<pool>/api.sock`. \
            Every failed request answers with an `ApiError` body.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    components(schemas(ApiError)),
    tags(
        (name = "pool", description = "The pool as a whole"),
        (name = "disks", description = "Disks: files or block devices the pool owns"),
        (name = "groups", description = "RAID groups (seed 002, table T1)"),
        (name = "volumes", description = "Volumes: the NBD exports"),
        (name = "jobs", description = "Background jobs: rebuilds, copies, resyncs"),
        (name = "copies", description = "Instant copies (seeds 000/001): point-in-time images \
            of a volume, usable at once, that share the tracks neither side has rewritten"),
        (name = "pairs", description = "Mirror pairs (seed 002, table T2): a full S-VOL kept in \
            sync with its P-VOL, split into a point-in-time image, resynced by bitmap"),
        (name = "svol-groups", description = "S-VOL groups (seed 003): split S-VOLs of one P-VOL \
            used as one, RO members sharing reads, an RW member's writes kept in its increments")
    )
)]
struct ApiDoc;

/// Every documented route, with the OpenAPI document they make.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(pool_info))
        .routes(routes!(pool_gc))
        .routes(routes!(pool_check))
        .routes(routes!(disk_list, disk_add))
        .routes(routes!(disk_get, disk_remove))
        .routes(routes!(disk_fail))
        .routes(routes!(disk_reinstate))
        .routes(routes!(disk_replace))
        .routes(routes!(disk_inject))
        .routes(routes!(group_list, group_create))
        .routes(routes!(group_get, group_delete))
        .routes(routes!(group_extend))
        .routes(routes!(group_reshape, group_reshape_status))
        .routes(routes!(volume_list, volume_create))
        .routes(routes!(volume_get, volume_delete))
        .routes(routes!(volume_grow))
        .routes(routes!(job_list))
        .routes(routes!(job_get))
        .routes(routes!(job_pause))
        .routes(routes!(job_resume))
        .routes(routes!(job_cancel))
        .routes(routes!(job_rate))
        .routes(routes!(copy_list, copy_create))
        .routes(routes!(copy_get, copy_delete))
        .routes(routes!(copy_restore))
        .routes(routes!(copy_split))
        .routes(routes!(pairs::pair_list, pairs::pair_create))
        .routes(routes!(pairs::pair_get, pairs::pair_delete))
        .routes(routes!(pairs::pair_split))
        .routes(routes!(pairs::pair_group_split))
        .routes(routes!(pairs::pair_resync))
        .routes(routes!(pairs::pair_restore))
        .routes(routes!(svol::svol_group_list, svol::svol_group_create))
        .routes(routes!(svol::svol_group_query, svol::svol_group_delete))
        .routes(routes!(svol::svol_group_restore))
        .routes(routes!(sparing::sparing_status))
        .routes(routes!(sparing::sparing_policy))
        .routes(routes!(sparing::sparing_start))
        .routes(routes!(sparing::work_volume_add))
        .routes(routes!(sparing::work_volume_remove))
        .routes(routes!(sparing::work_disk_add))
        .routes(routes!(sparing::work_disk_remove))
}

/// Answer for a path no route matches.
pub async fn no_route(method: Method, uri: Uri) -> ApiFailure {
    ApiFailure::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no such route: {method} {}; the routes are listed at /openapi.json",
            uri.path()
        ),
    )
}

/// Answer for a method a path does not take.
pub async fn wrong_method(method: Method, uri: Uri) -> ApiFailure {
    ApiFailure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid",
        format!(
            "{method} is not allowed on {}; the methods of each path are listed at /openapi.json",
            uri.path()
        ),
    )
}

// ---------------------------------------------------------------- pool

/// The pool and how to reach it.
#[utoipa::path(get, path = "/v1/pool", tag = "pool",
    responses((status = 200, description = "The pool", body = PoolInfo)))]
async fn pool_info(State(s): State<AppState>) -> Answer {
    s.run(Action::PoolInfo, StatusCode::OK).await
}

/// Collect the free space of instant copies: every copy family with a copy
/// point that only one line of images still reads gets a job merging it
/// (or the job already at it is returned). Host I/O goes on meanwhile.
#[utoipa::path(post, path = "/v1/pool/gc", tag = "pool",
    responses((status = 202, description = "The collection jobs (empty: nothing to collect)", body = [JobInfo])))]
async fn pool_gc(State(s): State<AppState>) -> Answer {
    s.run(Action::CopyGc, StatusCode::ACCEPTED).await
}

/// Check the copy families' maps against the labels their stores carry
/// on the disks (every map entry's slot must say it holds that track);
/// reads only. Differences are named.
#[utoipa::path(post, path = "/v1/pool/check", tag = "pool",
    responses((status = 200, description = "What the check found", body = PoolCheck)))]
async fn pool_check(State(s): State<AppState>) -> Answer {
    s.run(Action::PoolCheck, StatusCode::OK).await
}

// ---------------------------------------------------------------- disks

/// Every disk of the pool.
#[utoipa::path(get, path = "/v1/disks", tag = "disks",
    responses((status = 200, description = "The disks", body = [DiskInfo])))]
async fn disk_list(State(s): State<AppState>) -> Answer {
    s.run(Action::DiskList, StatusCode::OK).await
}

/// Add a disk: a new sparse file of `size` bytes, or an existing `path`.
#[utoipa::path(post, path = "/v1/disks", tag = "disks", request_body = DiskAddRequest,
    responses(
        (status = 201, description = "The disk, added", body = DiskInfo),
        (status = 409, description = "A disk of that name or path exists, or no space for the disk file", body = ApiError),
        (status = 422, description = "Neither or both of size and path, a size too small, a bad name", body = ApiError)))]
async fn disk_add(State(s): State<AppState>, Body(req): Body<DiskAddRequest>) -> Answer {
    s.run(Action::DiskAdd(req), StatusCode::CREATED).await
}

/// One disk.
#[utoipa::path(get, path = "/v1/disks/{name}", tag = "disks",
    params(("name" = Name, Path, description = "Disk name")),
    responses(
        (status = 200, description = "The disk", body = DiskInfo),
        (status = 404, description = "No such disk", body = ApiError)))]
async fn disk_get(State(s): State<AppState>, PathParams(name): PathParams<String>) -> Answer {
    s.run(Action::DiskGet(name), StatusCode::OK).await
}

/// Remove a disk that is in no group.
#[utoipa::path(delete, path = "/v1/disks/{name}", tag = "disks",
    params(("name" = Name, Path, description = "Disk name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such disk", body = ApiError),
        (status = 409, description = "The disk is a group member", body = ApiError)))]
async fn disk_remove(State(s): State<AppState>, PathParams(name): PathParams<String>) -> Answer {
    s.run(Action::DiskRemove(name), StatusCode::NO_CONTENT)
        .await
}

/// Mark a disk failed: its group runs degraded. Refused (409) when the
/// group would stop serving, unless `force`.
#[utoipa::path(post, path = "/v1/disks/{name}/fail", tag = "disks",
    params(("name" = Name, Path, description = "Disk name")),
    request_body = Option<DiskFailRequest>,
    responses(
        (status = 200, description = "The disk, failed", body = DiskInfo),
        (status = 404, description = "No such disk", body = ApiError),
        (status = 409, description = "Failing it would stop its group (use force), or it has failed already", body = ApiError),
        (status = 422, description = "The disk is in no group", body = ApiError)))]
async fn disk_fail(
    State(s): State<AppState>,
    PathParams(name): PathParams<String>,
    OptionalBody(req): OptionalBody<DiskFailRequest>,
) -> Answer {
    s.run(Action::DiskFail(name, req), StatusCode::OK).await
}

/// Take back a disk that failed while its data was current: it rejoins its
/// slot, and a job resyncs only what was written while it was out.
#[utoipa::path(post, path = "/v1/disks/{name}/reinstate", tag = "disks",
    params(("name" = Name, Path, description = "Disk name")),
    responses(
        (status = 202, description = "Reinstated; the resync job, if anything was written meanwhile", body = DiskReinstateInfo),
        (status = 404, description = "No such disk", body = ApiError),
        (status = 409, description = "Its data is incomplete, or another disk must come back first", body = ApiError),
        (status = 422, description = "The disk is missing or unusable, or has nothing to reinstate", body = ApiError)))]
async fn disk_reinstate(State(s): State<AppState>, PathParams(name): PathParams<String>) -> Answer {
    s.run(Action::DiskReinstate(name), StatusCode::ACCEPTED)
        .await
}

/// Replace a group member by another disk: starts a rebuild or copy job.
#[utoipa::path(post, path = "/v1/disks/{name}/replace", tag = "disks",
    params(("name" = Name, Path, description = "The disk to replace")),
    request_body = DiskReplaceRequest,
    responses(
        (status = 202, description = "The job, started", body = JobInfo),
        (status = 404, description = "No such disk", body = ApiError),
        (status = 409, description = "A disk is busy", body = ApiError),
        (status = 422, description = "The new disk is not there or cannot take the old one's place", body = ApiError)))]
async fn disk_replace(
    State(s): State<AppState>,
    PathParams(name): PathParams<String>,
    Body(req): Body<DiskReplaceRequest>,
) -> Answer {
    s.run(Action::DiskReplace(name, req), StatusCode::ACCEPTED)
        .await
}

/// Change a disk's fault rules (daemon started with `--fault-injection`).
#[utoipa::path(post, path = "/v1/disks/{name}/inject", tag = "disks",
    params(("name" = Name, Path, description = "Disk name")),
    request_body = InjectRequest,
    responses(
        (status = 200, description = "The disk with its rules", body = DiskInfo),
        (status = 404, description = "No such disk", body = ApiError),
        (status = 422, description = "Bad rule, or fault injection is off", body = ApiError)))]
async fn disk_inject(
    State(s): State<AppState>,
    PathParams(name): PathParams<String>,
    Body(req): Body<InjectRequest>,
) -> Answer {
    s.run(Action::DiskInject(name, req), StatusCode::OK).await
}

// ---------------------------------------------------------------- groups

/// Every RAID group: seed 002's table T1.
#[utoipa::path(get, path = "/v1/groups", tag = "groups",
    responses((status = 200, description = "The groups", body = [GroupInfo])))]
async fn group_list(State(s): State<AppState>) -> Answer {
    s.run(Action::GroupList, StatusCode::OK).await
}

/// Create a RAID group from free disks.
#[utoipa::path(post, path = "/v1/groups", tag = "groups", request_body = GroupCreateRequest,
    responses(
        (status = 201, description = "The group, created", body = GroupInfo),
        (status = 404, description = "A disk named does not exist", body = ApiError),
        (status = 409, description = "The name exists, or a disk is in use", body = ApiError),
        (status = 422, description = "Wrong number of disks for the level, a disk named twice, failed or too small", body = ApiError)))]
async fn group_create(State(s): State<AppState>, Body(req): Body<GroupCreateRequest>) -> Answer {
    s.run(Action::GroupCreate(req), StatusCode::CREATED).await
}

/// One RAID group with its members.
#[utoipa::path(get, path = "/v1/groups/{name}", tag = "groups",
    params(("name" = Name, Path, description = "Group name")),
    responses(
        (status = 200, description = "The group", body = GroupInfo),
        (status = 404, description = "No such group", body = ApiError)))]
async fn group_get(State(s): State<AppState>, PathParams(name): PathParams<String>) -> Answer {
    s.run(Action::GroupGet(name), StatusCode::OK).await
}

/// Delete a group that holds no volume; its disks become free.
#[utoipa::path(delete, path = "/v1/groups/{name}", tag = "groups",
    params(("name" = Name, Path, description = "Group name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such group", body = ApiError),
        (status = 409, description = "The group holds volumes", body = ApiError)))]
async fn group_delete(State(s): State<AppState>, PathParams(name): PathParams<String>) -> Answer {
    s.run(Action::GroupDelete(name), StatusCode::NO_CONTENT)
        .await
}

/// Append disks to a concat group.
#[utoipa::path(post, path = "/v1/groups/{name}/extend", tag = "groups",
    params(("name" = Name, Path, description = "Group name")),
    request_body = GroupExtendRequest,
    responses(
        (status = 200, description = "The group, extended", body = GroupInfo),
        (status = 404, description = "No such group", body = ApiError),
        (status = 409, description = "A disk is in use, or the group has a job running", body = ApiError),
        (status = 422, description = "Not a concat group, or a disk not there, named twice or failed", body = ApiError)))]
async fn group_extend(
    State(s): State<AppState>,
    PathParams(name): PathParams<String>,
    Body(req): Body<GroupExtendRequest>,
) -> Answer {
    s.run(Action::GroupExtend(name, req), StatusCode::OK).await
}

/// Restripe a group online (seed 004): add disks, change the stripe
/// size, or both, while its volumes keep serving. The group is copied
/// onto the BCV disks in its current layout (job reshape-copy), switched
/// to the new layout with host I/O paused for milliseconds, then each
/// track is moved to its new place (job reshape-transfer).
#[utoipa::path(post, path = "/v1/groups/{name}/reshape", tag = "groups",
    params(("name" = Name, Path, description = "Group name")),
    request_body = reshape::ReshapeRequest,
    responses(
        (status = 202, description = "The copy's job, started", body = JobInfo),
        (status = 404, description = "No such group or disk", body = ApiError),
        (status = 409, description = "A disk is in use; the group is being restriped, has a job running, or holds copies, pairs or S-VOL groups; 16 restripes run already", body = ApiError),
        (status = 422, description = "Not a striped group, nothing to change, a bad stripe size, the wrong number of BCV disks, or a disk too small", body = ApiError)))]
async fn group_reshape(
    State(s): State<AppState>,
    PathParams(name): PathParams<String>,
    Body(req): Body<reshape::ReshapeRequest>,
) -> Answer {
    s.run(Action::GroupReshape(name, req), StatusCode::ACCEPTED)
        .await
}

/// The restripe of a group under way: phase, layouts, progress, lists
/// and the pause measured at the switch.
#[utoipa::path(get, path = "/v1/groups/{name}/reshape", tag = "groups",
    params(("name" = Name, Path, description = "Group name")),
    responses(
        (status = 200, description = "The restripe", body = reshape::ReshapeInfo),
        (status = 404, description = "No such group, or it is not being restriped", body = ApiError)))]
async fn group_reshape_status(
    State(s): State<AppState>,
    PathParams(name): PathParams<String>,
) -> Answer {
    s.run(Action::GroupReshapeStatus(name), StatusCode::OK)
        .await
}

// ---------------------------------------------------------------- volumes

/// Every volume.
#[utoipa::path(get, path = "/v1/volumes", tag = "volumes",
    responses((status = 200, description = "The volumes", body = [VolumeInfo])))]
async fn volume_list(State(s): State<AppState>) -> Answer {
    s.run(Action::VolumeList, StatusCode::OK).await
}

/// Create a volume in a group; it is exported over NBD at once.
#[utoipa::path(post, path = "/v1/volumes", tag = "volumes", request_body = VolumeCreateRequest,
    responses(
        (status = 201, description = "The volume, created", body = VolumeInfo),
        (status = 404, description = "No such group", body = ApiError),
        (status = 409, description = "A volume of that name exists, or the group has not that much free space", body = ApiError),
        (status = 422, description = "The size is not a whole number of tracks", body = ApiError)))]
async fn volume_create(State(s): State<AppState>, Body(req): Body<VolumeCreateRequest>) -> Answer {
    s.run(Action::VolumeCreate(req), StatusCode::CREATED).await
}

/// One volume.
#[utoipa::path(get, path = "/v1/volumes/{name}", tag = "volumes",
    params(("name" = Name, Path, description = "Volume name")),
    responses(
        (status = 200, description = "The volume", body = VolumeInfo),
        (status = 404, description = "No such volume", body = ApiError)))]
async fn volume_get(State(s): State<AppState>, PathParams(name): PathParams<String>) -> Answer {
    s.run(Action::VolumeGet(name), StatusCode::OK).await
}

/// Query of `DELETE /v1/volumes/{name}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeleteVolumeQuery {
    /// Delete even while NBD clients are connected (they are cut off).
    #[serde(default)]
    force: bool,
}

/// Delete a volume and its data.
#[utoipa::path(delete, path = "/v1/volumes/{name}", tag = "volumes",
    params(("name" = Name, Path, description = "Volume name"), DeleteVolumeQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such volume", body = ApiError),
        (status = 409, description = "NBD clients are connected: use force=true", body = ApiError)))]
async fn volume_delete(
    State(s): State<AppState>,
    PathParams(name): PathParams<String>,
    Query(q): Query<DeleteVolumeQuery>,
) -> Answer {
    let action = Action::VolumeDelete {
        name,
        force: q.force,
    };
    s.run(action, StatusCode::NO_CONTENT).await
}

/// Grow a volume to a new size.
#[utoipa::path(post, path = "/v1/volumes/{name}/grow", tag = "volumes",
    params(("name" = Name, Path, description = "Volume name")),
    request_body = VolumeGrowRequest,
    responses(
        (status = 200, description = "The volume, grown", body = VolumeInfo),
        (status = 404, description = "No such volume", body = ApiError),
        (status = 409, description = "The group has not that much free space, or the volume has instant copies", body = ApiError),
        (status = 422, description = "The new size is smaller, or not a whole number of tracks", body = ApiError)))]
async fn volume_grow(
    State(s): State<AppState>,
    PathParams(name): PathParams<String>,
    Body(req): Body<VolumeGrowRequest>,
) -> Answer {
    s.run(Action::VolumeGrow(name, req), StatusCode::OK).await
}

// ---------------------------------------------------------------- jobs

/// Every job, running or finished.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs",
    responses((status = 200, description = "The jobs", body = [JobInfo])))]
async fn job_list(State(s): State<AppState>) -> Answer {
    s.run(Action::JobList, StatusCode::OK).await
}

/// One job, with its progress, rate and ETA.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = u64, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = JobInfo),
        (status = 400, description = "The id is not a number", body = ApiError),
        (status = 404, description = "No such job", body = ApiError)))]
async fn job_get(State(s): State<AppState>, PathParams(id): PathParams<String>) -> Answer {
    s.run(Action::JobGet(job_id(&id)?), StatusCode::OK).await
}

/// Pause a running job; it keeps its checkpoint.
#[utoipa::path(post, path = "/v1/jobs/{id}/pause", tag = "jobs",
    params(("id" = u64, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job, paused", body = JobInfo),
        (status = 400, description = "The id is not a number", body = ApiError),
        (status = 404, description = "No such job", body = ApiError),
        (status = 409, description = "The job has finished", body = ApiError)))]
async fn job_pause(State(s): State<AppState>, PathParams(id): PathParams<String>) -> Answer {
    s.run(Action::JobPause(job_id(&id)?), StatusCode::OK).await
}

/// Resume a paused job.
#[utoipa::path(post, path = "/v1/jobs/{id}/resume", tag = "jobs",
    params(("id" = u64, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job, running", body = JobInfo),
        (status = 400, description = "The id is not a number", body = ApiError),
        (status = 404, description = "No such job", body = ApiError),
        (status = 409, description = "The job has finished", body = ApiError)))]
async fn job_resume(State(s): State<AppState>, PathParams(id): PathParams<String>) -> Answer {
    s.run(Action::JobResume(job_id(&id)?), StatusCode::OK).await
}

/// Cancel a job.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = u64, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job, cancelled", body = JobInfo),
        (status = 400, description = "The id is not a number", body = ApiError),
        (status = 404, description = "No such job", body = ApiError),
        (status = 409, description = "The job has finished", body = ApiError)))]
async fn job_cancel(State(s): State<AppState>, PathParams(id): PathParams<String>) -> Answer {
    s.run(Action::JobCancel(job_id(&id)?), StatusCode::OK).await
}

/// Set a job's rate limit in bytes per second (0: unlimited).
#[utoipa::path(post, path = "/v1/jobs/{id}/rate", tag = "jobs",
    params(("id" = u64, Path, description = "Job id")),
    request_body = JobRateRequest,
    responses(
        (status = 200, description = "The job with its new limit", body = JobInfo),
        (status = 400, description = "The id is not a number", body = ApiError),
        (status = 404, description = "No such job", body = ApiError),
        (status = 409, description = "The job has finished", body = ApiError)))]
async fn job_rate(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
    Body(req): Body<JobRateRequest>,
) -> Answer {
    s.run(Action::JobRate(job_id(&id)?, req), StatusCode::OK)
        .await
}

// ---------------------------------------------------------------- copies

/// Every instant copy, with the tracks it holds and the space it uses.
#[utoipa::path(get, path = "/v1/copies", tag = "copies",
    responses((status = 200, description = "The copies", body = [CopyInfo])))]
async fn copy_list(State(s): State<AppState>) -> Answer {
    s.run(Action::CopyList, StatusCode::OK).await
}

/// Make an instant copy of a volume (or of a copy): a new volume holding
/// the source's image now; no data moves.
#[utoipa::path(post, path = "/v1/copies", tag = "copies", request_body = CopyCreateRequest,
    responses(
        (status = 201, description = "The copy, created", body = CopyInfo),
        (status = 404, description = "No such source volume or group", body = ApiError),
        (status = 409, description = "A volume of that name exists, or no space for the copy's metadata or new space", body = ApiError),
        (status = 422, description = "A mode the source's family does not use, or a bad name", body = ApiError)))]
async fn copy_create(State(s): State<AppState>, Body(req): Body<CopyCreateRequest>) -> Answer {
    s.run(Action::CopyCreate(req), StatusCode::CREATED).await
}

/// One instant copy.
#[utoipa::path(get, path = "/v1/copies/{name}", tag = "copies",
    params(("name" = Name, Path, description = "Copy name")),
    responses(
        (status = 200, description = "The copy", body = CopyInfo),
        (status = 404, description = "No such copy", body = ApiError)))]
async fn copy_get(State(s): State<AppState>, PathParams(name): PathParams<String>) -> Answer {
    s.run(Action::CopyGet(name), StatusCode::OK).await
}

/// Delete an instant copy (any copy, in any order); its new space goes back.
/// When the last copy goes, a job folds the original's data back into its
/// initial area: the answer names it.
#[utoipa::path(delete, path = "/v1/copies/{name}", tag = "copies",
    params(("name" = Name, Path, description = "Copy name")),
    responses(
        (status = 200, description = "Deleted; the job folding data back, if any", body = CopyDeleteInfo),
        (status = 404, description = "No such copy", body = ApiError),
        (status = 409, description = "The copy is in use", body = ApiError)))]
async fn copy_delete(State(s): State<AppState>, PathParams(name): PathParams<String>) -> Answer {
    s.run(Action::CopyDelete(name), StatusCode::OK).await
}

/// Return the copy's source to the copy's image, at once; a job moves the
/// data that must move.
#[utoipa::path(post, path = "/v1/copies/{name}/restore", tag = "copies",
    params(("name" = Name, Path, description = "Copy name")),
    request_body = Option<CopyRestoreRequest>,
    responses(
        (status = 202, description = "Restored; the job moving data, if any", body = CopyRestoreInfo),
        (status = 404, description = "No such copy", body = ApiError),
        (status = 409, description = "The source or the copy is busy, or NBD clients use the source: use force", body = ApiError),
        (status = 422, description = "The copy cannot be restored onto its source", body = ApiError)))]
async fn copy_restore(
    State(s): State<AppState>,
    PathParams(name): PathParams<String>,
    OptionalBody(req): OptionalBody<CopyRestoreRequest>,
) -> Answer {
    s.run(Action::CopyRestore(name, req), StatusCode::ACCEPTED)
        .await
}

/// Separate a copy from its original: measures N_orig and N_copy, the
/// tracks of new data of each, and starts a job moving one set into the
/// initial area (US 6,779,094 claims 7-9).
#[utoipa::path(post, path = "/v1/copies/{name}/split", tag = "copies",
    params(("name" = Name, Path, description = "Copy name")),
    request_body = Option<CopySplitRequest>,
    responses(
        (status = 202, description = "What was measured; the job, if anything moves", body = CopySplitInfo),
        (status = 404, description = "No such copy", body = ApiError),
        (status = 409, description = "The copy is busy or already separate", body = ApiError),
        (status = 422, description = "The copy cannot be split from its original", body = ApiError)))]
async fn copy_split(
    State(s): State<AppState>,
    PathParams(name): PathParams<String>,
    OptionalBody(req): OptionalBody<CopySplitRequest>,
) -> Answer {
    s.run(Action::CopySplit(name, req), StatusCode::ACCEPTED)
        .await
}
