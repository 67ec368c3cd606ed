//! The daemon: `ferrosan serve`.
//!
//! ```text
//!   lock the pool ─> open it (provision the default on a new pool)
//!   ─> bind NBD (TCP + <pool>/nbd.sock) ─> bind the API (<pool>/api.sock)
//!   ─> serve until SIGTERM/SIGINT
//!   ─> stop accepting, drain in-flight NBD requests, flush every group, exit
//! ```

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

mod exports;

use crate::engine::{DB_FILE, Pool, PoolOptions};
use crate::nbd::{Server, ServerConfig};
use crate::rt::Workers;
pub use exports::PoolExports;

/// What `ferrosan serve` was asked to do.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Pool directory (default `./ferrosan-data`).
    pub pool: PathBuf,
    /// NBD TCP address (default 127.0.0.1:10809; port 0 picks a free one).
    pub listen: SocketAddr,
    /// Allow `disk inject`.
    pub fault_injection: bool,
    /// Worker threads (default: number of CPUs).
    pub workers: Option<usize>,
    /// How often idle write-intent regions are cleared.
    pub intent_clear_interval: std::time::Duration,
    /// Rate limit of copy-gc jobs (bytes/s, 0 = none).
    pub gc_rate: u64,
    /// How long a worker under load polls after its last disk operation.
    pub poll: std::time::Duration,
}

/// Default of `serve --poll-us`.
pub const DEFAULT_POLL_US: u64 = crate::rt::DEFAULT_POLL_US;

/// The pool lock: an exclusive `flock` on `<pool>/ferrosan.lock`, held for
/// the daemon's life. It holds the daemon's pid for the message a second
/// daemon prints.
pub struct PoolLock {
    _file: std::fs::File,
}

pub fn lock_pool(dir: &Path) -> anyhow::Result<PoolLock> {
    use std::io::{Read, Seek, Write};
    let path = dir.join("ferrosan.lock");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open the pool lock {}", path.display()))?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            let pid = pid.trim();
            let who = if pid.is_empty() {
                String::new()
            } else {
                format!(" (pid {pid})")
            };
            bail!(
                "pool {} is in use by another ferrosan daemon{who}: stop it first, or use another --pool",
                dir.display()
            );
        }
        Err(e) => bail!("cannot lock pool {}: {e}", dir.display()),
    }
    f.set_len(0)?;
    f.rewind()?;
    writeln!(f, "{}", std::process::id())?;
    Ok(PoolLock { _file: f })
}

fn bind_unix(path: &Path) -> anyhow::Result<std::os::unix::net::UnixListener> {
    if path.exists() {
        // A stale socket of a daemon that died: we hold the pool lock, so
        // nobody else serves it.
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let l = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Binds the NBD TCP address; warns when it is reachable from other
/// machines, since NBD carries no authentication or encryption.
fn bind_nbd(listen: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let tcp = std::net::TcpListener::bind(listen).with_context(|| {
        format!(
            "cannot listen for NBD on {listen} (another NBD server there? choose another address with --listen)"
        )
    })?;
    if !listen.ip().is_loopback() {
        eprintln!(
            "ferrosan: warning: NBD listens on {listen}, reachable from other machines: \
             NBD has no authentication or encryption, so anyone who can reach it can read \
             and write every volume; listen on 127.0.0.1 unless the network is trusted"
        );
    }
    Ok(tcp)
}

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(opts: ServeOptions) -> anyhow::Result<()> {
    let dir = opts.pool.clone();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create pool directory {}", dir.display()))?;
    let _lock = lock_pool(&dir)?;
    // The port first: a pool is not provisioned (4 GiB of disk files on a
    // new one) for a daemon that cannot serve it.
    let tcp = bind_nbd(opts.listen)?;
    let fresh = !dir.join(DB_FILE).exists();
    let n = opts
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    crate::rt::set_poll_window(opts.poll);
    let workers = Workers::start(n).map_err(|e| anyhow::anyhow!(e.chain()))?;
    let pool_opts = PoolOptions {
        fault_injection: opts.fault_injection,
        intent_clear_interval: opts.intent_clear_interval,
        gc_rate: opts.gc_rate,
        ..PoolOptions::default()
    };
    let pool = Pool::open(&dir, Arc::clone(&workers), pool_opts)
        .map_err(|e| anyhow::anyhow!(e.chain()))?;
    if fresh && pool.is_empty() {
        pool.provision_default()
            .map_err(|e| anyhow::anyhow!("provisioning the default pool failed: {}", e.chain()))?;
        println!(
            "ferrosan: new pool {}: provisioned 4 sparse 1 GiB disks, RAID-5 group g0, 2 GiB volume vol0",
            dir.display()
        );
    }
    let addr = tcp.local_addr()?;
    let nbd_sock = dir.join("nbd.sock");
    let unix = bind_unix(&nbd_sock)?;
    let api_sock = dir.join("api.sock");
    let url = format!("nbd://{addr}");
    pool.set_nbd_addresses(Some(url.clone()), nbd_sock.clone());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ferrosan-ctl")
        .enable_all()
        .build()?;
    let server = Server::new(
        Arc::new(PoolExports(Arc::clone(&pool))),
        Arc::clone(&workers),
        ServerConfig::default(),
    );
    let result = rt.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let tcp_task = tokio::spawn(Arc::clone(&server).serve_tcp(tcp));
        let unix_task = tokio::spawn(Arc::clone(&server).serve_unix(unix));
        let mut api_stop = stop_rx.clone();
        let api_pool = Arc::clone(&pool);
        let api_path = api_sock.clone();
        let api_listener = crate::api::bind(&api_sock).map_err(|e| anyhow::anyhow!(e.chain()))?;
        let api_task = tokio::spawn(async move {
            crate::api::serve_bound(api_pool, api_listener, &api_path, async move {
                let _ = api_stop.wait_for(|s| *s).await;
            })
            .await
        });
        // The handlers are in place before the banner says the daemon is
        // up: a SIGTERM right after it is a clean stop, not a kill.
        let signals = Signals::install()?;
        banner(&pool, &dir, &url, &nbd_sock, &api_sock);
        signals.wait().await;
        eprintln!("ferrosan: stopping: draining NBD connections");
        let _ = stop_tx.send(true);
        server.shutdown().await;
        tcp_task.abort();
        unix_task.abort();
        let flush_pool = Arc::clone(&pool);
        let flushed = tokio::time::timeout(
            Duration::from_secs(60),
            workers.run(move || async move { flush_pool.flush_all().await }),
        )
        .await;
        match flushed {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("ferrosan: flushing at stop failed: {}", e.chain()),
            Ok(Err(e)) => eprintln!("ferrosan: flushing at stop failed: {}", e.chain()),
            Err(_) => eprintln!("ferrosan: flushing at stop timed out"),
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), api_task).await;
        anyhow::Ok(())
    });
    remove_socket(&nbd_sock);
    remove_socket(&api_sock);
    workers.stop();
    rt.shutdown_timeout(Duration::from_secs(2));
    eprintln!("ferrosan: stopped");
    result
}

fn banner(pool: &Pool, dir: &Path, url: &str, nbd_sock: &Path, api_sock: &Path) {
    let info = pool.info();
    println!(
        "ferrosan {} serving pool {} ({})",
        info.version,
        dir.display(),
        info.id
    );
    println!(
        "  NBD  {url}/<volume>    unix socket {}",
        nbd_sock.display()
    );
    println!(
        "  API  {}    try: ferrosan --pool {} volume list",
        api_sock.display(),
        dir.display()
    );
    for p in &info.problems {
        println!("  problem: {p}");
    }
    let vols = pool.volume_list();
    if vols.is_empty() {
        println!(
            "  no volumes yet: ferrosan --pool {} volume create NAME --group G --size 1G",
            dir.display()
        );
    }
    for v in vols {
        println!(
            "  volume {:<12} {:>10}  group {:<8}  nbdinfo {}/{}",
            v.name,
            crate::units::format_size(v.size),
            v.group,
            url,
            v.name
        );
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

/// Removes a socket this daemon made. Anything else at that path (a file
/// the daemon refused to replace when it started) is not its to remove.
fn remove_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

/// SIGTERM and SIGINT, caught from the moment they are installed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// `pool recover`: with the daemon stopped, rebuilds the copy maps from
/// the labels of the copy stores (`engine/recover.rs`); what was done.
pub fn recover(dir: &Path) -> anyhow::Result<Vec<String>> {
    if !dir.join(DB_FILE).exists() {
        bail!(
            "{} holds no pool database: recover needs the pool's records (disks, groups, volumes, copy families)",
            dir.display()
        );
    }
    let _lock = lock_pool(dir)?;
    let workers = Workers::start(1).map_err(|e| anyhow::anyhow!(e.chain()))?;
    let opts = PoolOptions {
        recovering: true,
        ..PoolOptions::default()
    };
    let pool =
        Pool::open(dir, Arc::clone(&workers), opts).map_err(|e| anyhow::anyhow!(e.chain()))?;
    let problems = pool.problems();
    let p = Arc::clone(&pool);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let lines = rt
        .block_on(workers.run(move || async move { p.recover_copies().await }))
        .map_err(|e| anyhow::anyhow!(e.chain()))?
        .map_err(|e| anyhow::anyhow!(e.chain()))?;
    Ok(problems
        .into_iter()
        .map(|p| format!("problem at open: {p}"))
        .chain(lines)
        .collect())
}
