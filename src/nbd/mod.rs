//! nbd: the NBD server — protocol only, generic over [`BlockDev`].
//!
//! ```text
//!  client ──TCP / Unix──> accept loop (any runtime) ──round robin──> worker
//!                                                                      │
//!  handshake (handshake.rs)                                            v
//!    S: NBDMAGIC IHAVEOPT FIXED_NEWSTYLE|NO_ZEROES    C: client flags
//!    options: LIST, INFO, GO, EXPORT_NAME, ABORT, STRUCTURED_REPLY,
//!             LIST_/SET_META_CONTEXT (base:allocation, qemu:dirty-bitmap:*),
//!             STARTTLS -> POLICY,
//!             anything else -> ERR_UNSUP
//!        │ GO + ACK / EXPORT_NAME
//!        v
//!  transmission (transmit.rs)      one task per connection on its worker
//!    readv headers ──> check (codec.rs) ──> start at once (exec.rs) ──> BlockDev
//!    writev replies <── in completion order, many per syscall (reply.rs)
//!        │ DISC / EOF / error / shutdown
//!        v
//!  close (after in-flight requests are answered)
//! ```
//!
//! Implemented from `nbd-protocol.md`: fixed newstyle negotiation (no
//! oldstyle, no TLS: NOTLS mode), `NBD_INFO_EXPORT`, `_NAME`,
//! `_DESCRIPTION`, `_BLOCK_SIZE` (minimum 512 or the device's block,
//! preferred 4096, maximum the max payload, 32 MiB; yet any offset and
//! length is served on any connection, unaligned ones by read-modify-write
//! under the volume's range lock); simple and structured replies; READ
//! (`OFFSET_DATA`, DF), WRITE (FUA), FLUSH, TRIM, WRITE_ZEROES (NO_HOLE,
//! FAST_ZERO), BLOCK_STATUS (`base:allocation` and the export's
//! `qemu:dirty-bitmap:NAME` contexts, one chunk per selected context, REQ_ONE), CACHE (accepted,
//! no effect), DISC; CAN_MULTI_CONN (a flush is a flush of the whole
//! device). Not implemented: extended headers, resize, TLS.
//!
//! Every parser is total ([`codec`]); [`proto::wire_errno`] is the one
//! place an [`ErrorKind`](crate::ErrorKind) becomes a wire errno.

#![forbid(unsafe_code)]

pub mod codec;
mod exec;
mod exports;
#[cfg(test)]
mod fuzz;
mod handshake;
pub mod proto;
mod reply;
mod server;
mod transmit;
mod transport;

use std::sync::Arc;
use std::time::Duration;

use crate::blockdev::{BlockDev, ChangeMap};

pub use exports::StaticExports;
pub use handshake::BlockSizes;
pub use server::Server;

/// An export opened for one connection.
pub struct Export {
    pub name: String,
    pub description: String,
    pub dev: Arc<dyn BlockDev>,
    pub read_only: bool,
    /// Held for the life of the connection; the engine counts connections
    /// per volume with it.
    pub guard: Option<Box<dyn std::any::Any + Send + Sync>>,
    /// Changed-block maps offered as the metadata context
    /// `qemu:dirty-bitmap:NAME` (the form qemu's NBD server uses, so
    /// `nbdinfo --map` and `qemu-img map` read them), by NAME.
    pub bitmaps: Vec<(String, Arc<dyn ChangeMap>)>,
}

/// A metadata context selected for a connection.
#[derive(Clone)]
pub struct MetaContext {
    /// Its id on this connection (non-zero).
    pub id: u32,
    /// The changed-block map, or None for `base:allocation`.
    pub map: Option<Arc<dyn ChangeMap>>,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export")
            .field("name", &self.name)
            .field("size", &self.dev.size())
            .field("read_only", &self.read_only)
            .finish()
    }
}

/// Where the server finds its exports (the engine's volumes).
pub trait ExportProvider: Send + Sync + 'static {
    /// (name, description) of every export, for NBD_OPT_LIST.
    fn list(&self) -> Vec<(String, String)>;
    /// Opens an export by name ("" = the default export, if the provider
    /// has one). Err(NotFound) for unknown names.
    fn open(&self, name: &str) -> crate::Result<Export>;
}

/// Limits of the server.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// The whole option haggling must end within this.
    pub handshake_timeout: Duration,
    /// Once a request header started arriving, the rest of it (header and
    /// write payload) must arrive within this; while a connection winds
    /// down, its queued replies must make progress within it.
    pub payload_timeout: Duration,
    /// Largest READ/WRITE payload (advertised as the maximum block size;
    /// kept within 64 KiB..=256 MiB).
    pub max_payload: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            handshake_timeout: Duration::from_secs(30),
            payload_timeout: Duration::from_secs(60),
            max_payload: 32 << 20,
        }
    }
}
