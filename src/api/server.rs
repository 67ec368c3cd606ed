//! Serving the API on the pool's Unix socket, mode 0600.

#![forbid(unsafe_code)]

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use axum::Router;
use rustix::fs::Mode;
use tokio::net::UnixListener;

use crate::error::{Error, Result};

/// Serves `router` on a Unix socket at `socket` until `shutdown` resolves,
/// then removes the socket file.
pub async fn serve_router(
    router: Router,
    socket: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = bind(socket)?;
    serve_bound(router, listener, socket, shutdown).await
}

/// Serves `router` on an already bound socket (see [`bind`]) until
/// `shutdown` resolves, then removes the socket file.
pub async fn serve_bound(
    router: Router,
    listener: UnixListener,
    socket: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    tracing::info!("API listening on {}", socket.display());
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await;
    if let Err(e) = std::fs::remove_file(socket)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("cannot remove {}: {e}", socket.display());
    }
    served.map_err(|e| Error::io(format!("the API on {} failed", socket.display()), e))
}

/// Binds `socket` so that only the daemon's user can connect: created under
/// umask 077 (no moment where it is open to others), then set to 0600.
pub fn bind(socket: &Path) -> Result<UnixListener> {
    remove_stale(socket)?;
    let old = rustix::process::umask(Mode::from_raw_mode(0o177));
    let bound = UnixListener::bind(socket);
    rustix::process::umask(old);
    let listener = bound.map_err(|e| {
        Error::io(
            format!("cannot create the API socket {}", socket.display()),
            e,
        )
    })?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("cannot set mode 0600 on {}", socket.display()), e))?;
    Ok(listener)
}

/// Removes a socket file left by a daemon that died; refuses to take over
/// one that still answers, or a path that is not a socket.
fn remove_stale(socket: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(socket) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("cannot inspect {}", socket.display()), e)),
    };
    if !meta.file_type().is_socket() {
        return Err(Error::conflict(format!(
            "{} exists and is not a socket: move it away",
            socket.display()
        )));
    }
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return Err(Error::conflict(format!(
            "another ferrosan daemon is serving this pool on {}: stop it first",
            socket.display()
        )));
    }
    std::fs::remove_file(socket).map_err(|e| {
        Error::io(
            format!("cannot remove the stale socket {}", socket.display()),
            e,
        )
    })
}
