//! api: the management interface, REST/JSON on `<pool>/api.sock`.
//!
//! ```text
//!  HTTP request --> route (routes.rs) --> extractors (extract.rs): parse or 400
//!                                   |
//!                                   v
//!                         Action (action.rs), typed
//!                                   |  spawn_blocking
//!                                   v
//!                         Dispatch::dispatch (the Pool) --> Reply --> JSON
//!                                   |
//!                                   +-- Error --> status_of(kind) + ApiError (error.rs)
//! ```
//!
//! The OpenAPI document is generated from the route annotations; the copy
//! checked in as `openapi.json` at the repository root must match it
//! (`ferrosan openapi > openapi.json` regenerates it).

#![forbid(unsafe_code)]

mod action;
mod doc;
mod error;
mod extract;
mod links;
mod routes;
mod server;
pub mod views;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::header;
use axum::routing::get;

use crate::engine::Pool;

pub use action::{Action, Dispatch, Reply};
pub use error::{ApiFailure, kind_name, status_of};
pub use server::{bind, serve_router};

/// The API router over the pool.
pub fn router(pool: Arc<Pool>) -> axum::Router {
    router_with(pool)
}

/// The API router over any dispatcher (the pool, or a simulation in tests).
pub fn router_with(backend: Arc<dyn Dispatch>) -> axum::Router {
    let (router, mut doc) = routes::api_router().split_for_parts();
    finish(&mut doc);
    let doc = Bytes::from(render(&doc));
    let serve_doc = move || {
        let doc = doc.clone();
        async move { ([(header::CONTENT_TYPE, "application/json")], doc) }
    };
    router
        .route("/openapi.json", get(serve_doc))
        .fallback(routes::no_route)
        .method_not_allowed_fallback(routes::wrong_method)
        .layer(axum::middleware::from_fn(extract::read_whole_body))
        .with_state(routes::AppState::new(backend))
}

/// Serves the pool's API on `socket` until `shutdown` resolves.
pub async fn serve(
    pool: Arc<Pool>,
    socket: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    serve_router(router(pool), socket, shutdown).await
}

/// Serves the pool's API on a socket bound earlier with [`bind`] (the
/// daemon binds every socket before it announces itself).
pub async fn serve_bound(
    pool: Arc<Pool>,
    listener: tokio::net::UnixListener,
    socket: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    server::serve_bound(router(pool), listener, socket, shutdown).await
}

/// The OpenAPI document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = routes::api_router().into_openapi();
    finish(&mut doc);
    doc
}

/// What the route annotations cannot say: the answers every operation
/// shares, and how operations chain.
fn finish(doc: &mut utoipa::openapi::OpenApi) {
    doc::add_common_answers(doc);
    links::add_links(doc);
}

/// The OpenAPI document as checked in: pretty JSON with a final newline.
pub fn openapi_json() -> String {
    render(&openapi())
}

fn render(doc: &utoipa::openapi::OpenApi) -> String {
    match doc.to_pretty_json() {
        Ok(mut s) => {
            s.push('\n');
            s
        }
        Err(e) => format!("{{\"error\": \"cannot render the OpenAPI document: {e}\"}}\n"),
    }
}
