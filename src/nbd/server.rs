//! Accept loops, connection bookkeeping and shutdown.
//!
//! ```text
//!   serve_tcp / serve_unix (any tokio runtime)
//!      accept -> TCP_NODELAY -> std stream ──Workers::spawn (round robin)──> worker
//!   worker: stream -> tokio stream on its reactor -> handshake (timeout)
//!           -> transmission (until DISC / EOF / error / shutdown) -> close
//! ```
//!
//! Shutdown: accept loops stop; each connection stops reading, refuses
//! requests already buffered with `ESHUTDOWN`, lets the ones in flight
//! finish and their replies go out, then closes. [`Server::shutdown`]
//! resolves when the last connection is gone.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::handshake;
use super::transmit::{self, End, Settings};
use super::transport::Transport;
use super::{ExportProvider, ServerConfig};
use crate::error::{Error, Result};
use crate::rt::Workers;

/// Pause after a failed `accept` (for example out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The NBD server: accept loops and the connections they started.
pub struct Server {
    provider: Arc<dyn ExportProvider>,
    workers: Arc<Workers>,
    cfg: ServerConfig,
    stop: watch::Sender<bool>,
    conns: watch::Sender<usize>,
    /// Connections that saw the shutdown and are finishing their work.
    draining: AtomicUsize,
}

/// A std stream an accept loop hands to a worker.
trait StdStream: Send + 'static {
    type Tokio: Transport;
    fn into_tokio(self) -> io::Result<Self::Tokio>;
}

impl StdStream for std::net::TcpStream {
    type Tokio = tokio::net::TcpStream;
    fn into_tokio(self) -> io::Result<Self::Tokio> {
        self.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(self)
    }
}

impl StdStream for std::os::unix::net::UnixStream {
    type Tokio = tokio::net::UnixStream;
    fn into_tokio(self) -> io::Result<Self::Tokio> {
        self.set_nonblocking(true)?;
        tokio::net::UnixStream::from_std(self)
    }
}

/// Counts a connection for as long as it lives (including while its
/// task waits to start on a worker).
struct ConnGuard(Arc<Server>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.conns.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Server {
    /// A server; `cfg.max_payload` is kept within 64 KiB (at least the
    /// largest preferred block) and 256 MiB.
    pub fn new(
        provider: Arc<dyn ExportProvider>,
        workers: Arc<Workers>,
        mut cfg: ServerConfig,
    ) -> Arc<Server> {
        cfg.max_payload = cfg.max_payload.clamp(1 << 16, 256 << 20);
        Arc::new(Server {
            provider,
            workers,
            cfg,
            stop: watch::Sender::new(false),
            conns: watch::Sender::new(0),
            draining: AtomicUsize::new(0),
        })
    }

    /// Accept loop for TCP; returns when the server shuts down.
    pub async fn serve_tcp(self: Arc<Self>, listener: std::net::TcpListener) -> Result<()> {
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("cannot make the NBD listener non-blocking", e))?;
        let l = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| Error::io("cannot register the NBD listener", e))?;
        let l = &l;
        self.accept_loop(move || async move {
            let (s, _) = l.accept().await?;
            s.set_nodelay(true)?;
            s.into_std()
        })
        .await
    }

    /// Accept loop for a Unix socket; returns when the server shuts down.
    pub async fn serve_unix(
        self: Arc<Self>,
        listener: std::os::unix::net::UnixListener,
    ) -> Result<()> {
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("cannot make the NBD listener non-blocking", e))?;
        let l = tokio::net::UnixListener::from_std(listener)
            .map_err(|e| Error::io("cannot register the NBD listener", e))?;
        let l = &l;
        self.accept_loop(move || async move { l.accept().await?.0.into_std() })
            .await
    }

    async fn accept_loop<S, F, Fut>(self: Arc<Self>, accept: F) -> Result<()>
    where
        S: StdStream,
        F: Fn() -> Fut,
        Fut: Future<Output = io::Result<S>>,
    {
        let mut stop = self.stop.subscribe();
        loop {
            tokio::select! {
                () = stopped(&mut stop) => return Ok(()),
                r = accept() => match r {
                    Ok(s) => self.start(s),
                    Err(e) => {
                        tracing::warn!("nbd: accepting a connection failed: {e}");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        }
    }

    /// Hands an accepted stream to the next worker.
    fn start<S: StdStream>(self: &Arc<Self>, stream: S) {
        self.conns.send_modify(|n| *n += 1);
        let guard = ConnGuard(Arc::clone(self));
        // Counted before this check, so `shutdown` either sees the
        // connection or the connection sees the shutdown.
        if *self.stop.borrow() {
            return;
        }
        let server = Arc::clone(self);
        self.workers.spawn(move || async move {
            let _guard = guard;
            match stream.into_tokio() {
                Ok(io) => server.connection(io).await,
                Err(e) => tracing::warn!("nbd: cannot set up a connection: {e}"),
            }
        });
    }

    /// Runs one connection on this worker, handshake to close.
    async fn connection<S: Transport>(self: Arc<Self>, mut io: S) {
        let mut stop_rx = self.stop.subscribe();
        let saw_stop = Cell::new(false);
        let mut stop = std::pin::pin!(async {
            stopped(&mut stop_rx).await;
            saw_stop.set(true);
            self.draining.fetch_add(1, Ordering::SeqCst);
        });
        let hs = handshake::negotiate(&mut io, &*self.provider, self.cfg.max_payload);
        let neg = tokio::select! {
            r = tokio::time::timeout(self.cfg.handshake_timeout, hs) => match r {
                Ok(Ok(Some(neg))) => neg,
                Ok(Ok(None)) => return,
                Ok(Err(e)) => {
                    tracing::debug!("nbd: handshake ended: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!("nbd: handshake timed out");
                    return;
                }
            },
            _ = stop.as_mut() => {
                self.draining.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        };
        let name = neg.export.name.clone();
        let set = Settings {
            payload_timeout: self.cfg.payload_timeout,
            max_payload: self.cfg.max_payload,
        };
        let end = transmit::serve(io, neg, set, stop.as_mut()).await;
        if saw_stop.get() {
            self.draining.fetch_sub(1, Ordering::SeqCst);
        }
        match end {
            End::Disc | End::Eof | End::Shutdown => {
                tracing::debug!("nbd: connection to {name:?} closed")
            }
            End::Io(e) => tracing::debug!("nbd: connection to {name:?} failed: {e}"),
            End::Protocol(m) => tracing::info!("nbd: dropped a client of {name:?}: {m}"),
            End::Timeout(m) => tracing::info!("nbd: dropped a client of {name:?}: {m}"),
        }
    }

    /// Stops accepting, lets every connection finish what it has in
    /// flight, and resolves when all are closed.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let mut n = self.conns.subscribe();
        // An error means the sender is gone, which it is not while `self` lives.
        let _ = n.wait_for(|n| *n == 0).await.map(drop);
    }

    /// Connections that saw the shutdown and are still finishing the
    /// requests they had in flight.
    pub fn draining_count(&self) -> usize {
        self.draining.load(Ordering::SeqCst)
    }

    /// Connections alive (in handshake or transmission).
    pub fn connection_count(&self) -> usize {
        *self.conns.borrow()
    }
}

/// Resolves once the server is shutting down.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    // Drop the `Ref` at once: it holds a lock and is not `Send`.
    let _ = rx.wait_for(|s| *s).await.map(drop);
}
