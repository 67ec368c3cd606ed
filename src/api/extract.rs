//! Extractors whose failures are [`ApiFailure`]s: a request that cannot be
//! parsed gets a 400 JSON body that names the problem, never axum's plain
//! text.

#![forbid(unsafe_code)]

use std::error::Error as _;

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::error::ApiFailure;

/// The largest request body the API reads.
pub const BODY_LIMIT: usize = 2 << 20;

/// A body over [`BODY_LIMIT`] is still read (and dropped) up to this much
/// before the 413 goes out, so that the client, done sending, reads it.
const DRAIN_LIMIT: usize = 64 << 20;

/// Middleware: reads each request's body whole before any route (or the
/// 404 and 405 answers) sees it. An answer given while the client was still
/// sending its body would close the connection under it, and a client or a
/// proxy (socat) that then fails to write may drop the answer unread.
pub async fn read_whole_body(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    match read_body(body).await {
        Ok(bytes) => next.run(Request::from_parts(parts, bytes.into())).await,
        Err(failure) => {
            // What is left of such a body is not read: end the connection.
            let mut answer = failure.into_response();
            let close = axum::http::HeaderValue::from_static("close");
            answer
                .headers_mut()
                .insert(axum::http::header::CONNECTION, close);
            answer
        }
    }
}

async fn read_body(mut body: axum::body::Body) -> Result<Bytes, ApiFailure> {
    use http_body_util::BodyExt;
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiFailure::invalid(format!("cannot read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen <= BODY_LIMIT {
            kept.extend_from_slice(&data);
        } else if seen > DRAIN_LIMIT {
            break;
        }
    }
    if seen > BODY_LIMIT {
        return Err(ApiFailure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid",
            format!("the request body is larger than {} MiB", BODY_LIMIT >> 20),
        ));
    }
    Ok(Bytes::from(kept))
}

/// A JSON request body. The `Content-Type` header is not required, so that
/// `curl -d '{...}'` works as typed.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiFailure;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiFailure> {
        let bytes = body_bytes(req, state).await?;
        if is_blank(&bytes) {
            return Err(ApiFailure::invalid(
                "the request needs a JSON body: see /openapi.json for its fields",
            ));
        }
        require_object(&bytes, false)?;
        parse(&bytes).map(Body)
    }
}

/// A JSON request body that may be left out: an empty body, or `null`, is
/// `T::default()`.
pub struct OptionalBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiFailure;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiFailure> {
        let bytes = body_bytes(req, state).await?;
        if is_blank(&bytes) {
            return Ok(OptionalBody(T::default()));
        }
        require_object(&bytes, true)?;
        let value: Option<T> = parse(&bytes)?;
        Ok(OptionalBody(value.unwrap_or_default()))
    }
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiFailure> {
    Bytes::from_request(req, state).await.map_err(|e| {
        ApiFailure::new(
            e.status(),
            "invalid",
            format!("cannot read the request body: {}", e.body_text()),
        )
    })
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

/// Refuses a body that is not a JSON object (nor `null`, where the body is
/// optional): serde would take an array of a struct's fields in order,
/// which the document does not allow.
fn require_object(bytes: &[u8], or_null: bool) -> Result<(), ApiFailure> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        Some(b'n') if or_null => Ok(()),
        _ => Err(ApiFailure::invalid(
            "invalid JSON body: expected an object (see /openapi.json for its fields)",
        )),
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiFailure> {
    match axum::Json::<T>::from_bytes(bytes) {
        Ok(axum::Json(value)) => Ok(value),
        Err(rejection) => Err(ApiFailure::invalid(format!(
            "invalid JSON body: {}",
            json_problem(&rejection)
        ))),
    }
}

/// serde's own words, with the path of the field (`read_error_at.offset:
/// invalid type...`), without axum's preamble.
fn json_problem(rejection: &JsonRejection) -> String {
    let source = match rejection {
        JsonRejection::JsonDataError(e) => e.source().map(ToString::to_string),
        JsonRejection::JsonSyntaxError(e) => e.source().map(ToString::to_string),
        _ => None,
    };
    source.unwrap_or_else(|| rejection.body_text())
}

/// Path parameters.
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiFailure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiFailure> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| PathParams(v))
            .map_err(|e: PathRejection| {
                ApiFailure::invalid(format!("invalid path: {}", e.body_text()))
            })
    }
}

/// The query string.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiFailure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiFailure> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e: QueryRejection| {
                let detail = e.source().map_or_else(|| e.body_text(), |s| s.to_string());
                ApiFailure::invalid(format!("invalid query string: {detail}"))
            })
    }
}

/// A job id from the path: a number, as `job list` shows it.
pub fn job_id(text: &str) -> Result<u64, ApiFailure> {
    text.parse().map_err(|_| {
        ApiFailure::invalid(format!(
            "invalid job id {text:?}: use the number `ferrosan job list` shows"
        ))
    })
}
