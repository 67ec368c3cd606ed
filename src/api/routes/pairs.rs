//! Routes of mirror pairs (seed 002, table T2). A pair is named by its
//! S-VOL: a volume is the S-VOL of at most one pair (a P-VOL may have several).

use axum::extract::State;
use axum::http::StatusCode;

use super::super::action::Action;
use super::super::extract::{Body, OptionalBody, PathParams};
use super::{Answer, AppState};
use crate::api::views::limits::Name;
use crate::api::views::*;

/// Every pair: table T2 (P-VOL, S-VOL, status, differential bitmap).
#[utoipa::path(get, path = "/v1/pairs", tag = "pairs",
    responses((status = 200, description = "The pairs", body = [PairInfo])))]
pub(super) async fn pair_list(State(s): State<AppState>) -> Answer {
    s.run(Action::PairList, StatusCode::OK).await
}

/// Pair two volumes of one size: the S-VOL's data is replaced by the
/// P-VOL's in a copy job (status COPY, then PAIR), the P-VOL in use.
#[utoipa::path(post, path = "/v1/pairs", tag = "pairs", request_body = PairCreateRequest,
    responses(
        (status = 201, description = "The pair, copying", body = PairInfo),
        (status = 404, description = "No such volume", body = ApiError),
        (status = 409, description = "A volume is paired, in a copy family, or the S-VOL holds data (use overwrite)", body = ApiError),
        (status = 422, description = "The volumes differ in size, are one, or the S-VOL is read-only", body = ApiError)))]
pub(super) async fn pair_create(
    State(s): State<AppState>,
    Body(req): Body<PairCreateRequest>,
) -> Answer {
    s.run(Action::PairCreate(req), StatusCode::CREATED).await
}

/// One pair, by its S-VOL.
#[utoipa::path(get, path = "/v1/pairs/{name}", tag = "pairs",
    params(("name" = Name, Path, description = "The pair's S-VOL")),
    responses(
        (status = 200, description = "The pair", body = PairInfo),
        (status = 404, description = "No such pair", body = ApiError)))]
pub(super) async fn pair_get(
    State(s): State<AppState>,
    PathParams(svol): PathParams<String>,
) -> Answer {
    s.run(Action::PairGet(svol), StatusCode::OK).await
}

/// Delete a pair in any status (its copy job is cancelled): both volumes
/// keep their data and go on unpaired.
#[utoipa::path(delete, path = "/v1/pairs/{name}", tag = "pairs",
    params(("name" = Name, Path, description = "The pair's S-VOL")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such pair", body = ApiError)))]
pub(super) async fn pair_delete(
    State(s): State<AppState>,
    PathParams(svol): PathParams<String>,
) -> Answer {
    s.run(Action::PairDelete(svol), StatusCode::NO_CONTENT)
        .await
}

/// Split a pair in PAIR: the S-VOL becomes an independent, writable
/// point-in-time image at once; writes to either side mark the bitmap.
#[utoipa::path(post, path = "/v1/pairs/{name}/split", tag = "pairs",
    params(("name" = Name, Path, description = "The pair's S-VOL")),
    responses(
        (status = 200, description = "The pair, split", body = [PairInfo]),
        (status = 404, description = "No such pair", body = ApiError),
        (status = 409, description = "The pair is not in PAIR", body = ApiError)))]
pub(super) async fn pair_split(
    State(s): State<AppState>,
    PathParams(svol): PathParams<String>,
) -> Answer {
    s.run(Action::PairSplit(svol), StatusCode::OK).await
}

/// Split every pair of a consistency group at one instant.
#[utoipa::path(post, path = "/v1/pair-groups/{name}/split", tag = "pairs",
    params(("name" = Name, Path, description = "The consistency group")),
    responses(
        (status = 200, description = "The pairs, split", body = [PairInfo]),
        (status = 404, description = "No pair is in the group", body = ApiError),
        (status = 409, description = "A pair of the group is not in PAIR", body = ApiError)))]
pub(super) async fn pair_group_split(
    State(s): State<AppState>,
    PathParams(group): PathParams<String>,
) -> Answer {
    s.run(Action::PairGroupSplit(group), StatusCode::OK).await
}

/// Resynchronise a split pair: copy the tracks marked since the split,
/// P-VOL to S-VOL (status RESYNC, then PAIR).
#[utoipa::path(post, path = "/v1/pairs/{name}/resync", tag = "pairs",
    params(("name" = Name, Path, description = "The pair's S-VOL")),
    request_body = Option<PairCopyRequest>,
    responses(
        (status = 202, description = "The pair, resyncing", body = PairInfo),
        (status = 404, description = "No such pair", body = ApiError),
        (status = 409, description = "The pair is not split", body = ApiError)))]
pub(super) async fn pair_resync(
    State(s): State<AppState>,
    PathParams(svol): PathParams<String>,
    OptionalBody(req): OptionalBody<PairCopyRequest>,
) -> Answer {
    s.run(Action::PairResync(svol, req), StatusCode::ACCEPTED)
        .await
}

/// Restore a split pair: copy the marked tracks S-VOL to P-VOL while the
/// P-VOL stays in use (status RESTORE, then PAIR).
#[utoipa::path(post, path = "/v1/pairs/{name}/restore", tag = "pairs",
    params(("name" = Name, Path, description = "The pair's S-VOL")),
    request_body = Option<PairCopyRequest>,
    responses(
        (status = 202, description = "The pair, restoring", body = PairInfo),
        (status = 404, description = "No such pair", body = ApiError),
        (status = 409, description = "The pair is not split", body = ApiError)))]
pub(super) async fn pair_restore(
    State(s): State<AppState>,
    PathParams(svol): PathParams<String>,
    OptionalBody(req): OptionalBody<PairCopyRequest>,
) -> Answer {
    s.run(Action::PairRestore(svol, req), StatusCode::ACCEPTED)
        .await
}
