//! The one mapping from [`ErrorKind`] to an HTTP status, and the JSON body
//! every failed request gets.
//!
//! A client's mistake is a 4xx, whatever it is; a 5xx says the machine
//! failed (a disk, the daemon), never the request. 400 is kept for requests
//! that do not match the OpenAPI document, so a 400 to a request that does
//! match it is a bug of the document or the parser (the contract check,
//! `scripts/api-contract.sh`, looks for exactly that).
//!
//! | kind          | status                      | why                                               |
//! |---------------|-----------------------------|---------------------------------------------------|
//! | `not_found`   | 404 Not Found               | the disk, group, volume or job named is not there (where the URL names an object, a missing object named in the body is 422 instead, so 404 always means the URL's object) |
//! | `invalid`     | 422 Unprocessable Content   | well-formed, but the pool cannot do it as asked: values that do not fit together or this object (a size not a whole number of tracks, a raid5 of two disks): fix the request |
//! | `out_of_range`| 422 Unprocessable Content   | an offset or size outside the object: fix it       |
//! | `conflict`    | 409 Conflict                | exists already or in use: change the state first   |
//! | `read_only`   | 409 Conflict                | the object's state forbids it, not the caller's rights (403 would say that) |
//! | `no_space`    | 409 Conflict                | the group (or the filesystem under the pool) has less free space than asked: a state the client sees (`free` in `group show`) and can change, or ask for less; not a fault of the machine, so not 507 |
//! | `unsupported` | 501 Not Implemented         | the daemon cannot do this at all; no other body helps |
//! | `io`          | 500 Internal Server Error   | a disk failed under the request                    |
//! | `corrupt`     | 500 Internal Server Error   | stored metadata fails its checks                   |
//! | `unavailable` | 503 Service Unavailable     | too many members missing to serve data             |
//! | `shutdown`    | 503 Service Unavailable     | the daemon is stopping; retry on the next one      |
//!
//! Failures of the HTTP layer itself use the same body: unparsable JSON,
//! unknown fields, wrong types, numbers out of the document's range and bad
//! path or query values are 400 `invalid`; a body over the size limit is
//! 413 `invalid`; an unknown route is 404 `not_found`; a method a path does
//! not take is 405 `invalid` (with `Allow`); a handler that panicked is 500
//! `internal`.

#![forbid(unsafe_code)]

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::api::views::ApiError;
use crate::error::{Error, ErrorKind};

/// The HTTP status for an error kind.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Invalid | ErrorKind::OutOfRange => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Conflict | ErrorKind::ReadOnly | ErrorKind::NoSpace => StatusCode::CONFLICT,
        ErrorKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
        ErrorKind::Io | ErrorKind::Corrupt => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::Unavailable | ErrorKind::Shutdown => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The name of a kind as the API spells it (`not_found`, `no_space`...):
/// the same as its serde form, so logs and the API agree.
pub fn kind_name(kind: ErrorKind) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{kind:?}"),
    }
}

/// A failed request: its status and JSON body.
#[derive(Debug, Clone)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub body: ApiError,
}

impl ApiFailure {
    pub fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> ApiFailure {
        ApiFailure {
            status,
            body: ApiError {
                kind: kind.to_owned(),
                message: message.into(),
            },
        }
    }

    /// A 400 `invalid` answer: the request does not match the document.
    pub fn invalid(message: impl Into<String>) -> ApiFailure {
        ApiFailure::new(StatusCode::BAD_REQUEST, "invalid", message)
    }
}

impl From<Error> for ApiFailure {
    fn from(err: Error) -> ApiFailure {
        let kind = err.kind();
        ApiFailure::new(status_of(kind), &kind_name(kind), err.chain())
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}
