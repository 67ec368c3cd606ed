//! SKELETON of the daemon entry point; the real one is written on `main`.

use std::net::SocketAddr;
use std::path::PathBuf;

/// What `ferrosan serve` was asked to do.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Pool directory (default `./ferrosan-data`).
    pub pool: PathBuf,
    /// NBD TCP address (default 127.0.0.1:10809).
    pub listen: SocketAddr,
    /// Allow `disk inject`.
    pub fault_injection: bool,
    /// Worker threads (default: number of CPUs).
    pub workers: Option<usize>,
}

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(_opts: ServeOptions) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
