//! What one 4 KiB request costs the data path, counted (issue 17, item 4):
//! heap allocations and acquisitions of locks shared between workers, per
//! read and per write, through the NBD server on a plain volume (a
//! single-disk concat group), a raid5 volume (4 disks) and a copy (A2) of
//! another volume of that group.
//!
//! A pool is opened in process (`target/hotpath`), its volumes served by
//! the real NBD server on a Unix socket, and a minimal client in this
//! program (blocking, its buffers made before the loop) sends random 4 KiB
//! reads, then writes, 32 in flight, within a region written once before
//! (so the raid5 write-intent regions are committed and the copy's tracks
//! are its own: the steady state, no first writes). A counting global
//! allocator counts every allocation (`alloc`, `alloc_zeroed`, `realloc`)
//! of every thread but the client's while a measured loop runs, so what
//! the server allocates counts, the accept loop's and the workers' alike;
//! background work of the pool (the write-intent pass, set to an hour
//! here) could add to it, and none runs. Shared-lock acquisitions are
//! counted by `ferrosan::blockdev::probe` at the data path's locks: build
//! with `--features lock-count`, else that column says `-`.
//!
//!   cargo bench --bench hotpath --features lock-count
//!
//! Counts, not times: they are the same on every run and machine (up to
//! a few requests' noise), so they can be compared before and after a
//! change. `HOTPATH_REQUESTS` sets the requests per measurement (20000).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferrosan::api::views::{
    CopyCreateRequest, CopyMode, DiskAddRequest, GroupCreateRequest, RaidLevelName,
    VolumeCreateRequest,
};
use ferrosan::blockdev::probe;
use ferrosan::daemon::PoolExports;
use ferrosan::engine::{Pool, PoolOptions};
use ferrosan::nbd::{Server, ServerConfig};
use ferrosan::rt::Workers;

/// Counts allocations while `COUNTING` is on, except on threads marked as
/// the client's.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static CLIENT: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if COUNTING.load(Ordering::Relaxed) && !CLIENT.try_with(Cell::get).unwrap_or(true) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed to the system allocator unchanged; the
// counter neither allocates nor touches the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: the caller's contract is System's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BLOCK: usize = 4096;
/// The region requests fall in (written once first).
const REGION: u64 = 64 << 20;
const QD: usize = 32;

const REQUEST_MAGIC: u32 = 0x2560_9513;
const REPLY_MAGIC: u32 = 0x6744_6698;
const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;

/// A minimal NBD client: fixed newstyle, `NBD_OPT_EXPORT_NAME`, simple
/// replies. Nothing in its request loop allocates.
struct Client {
    s: UnixStream,
    req: [u8; 28 + BLOCK],
    reply: [u8; 16 + BLOCK],
    rng: u64,
}

impl Client {
    fn connect(sock: &Path, export: &str) -> std::io::Result<Client> {
        let mut s = UnixStream::connect(sock)?;
        let mut hello = [0u8; 18];
        s.read_exact(&mut hello)?;
        if &hello[..8] != b"NBDMAGIC" || &hello[8..16] != b"IHAVEOPT" {
            return Err(std::io::Error::other("not an NBD server"));
        }
        // FIXED_NEWSTYLE | NO_ZEROES
        s.write_all(&3u32.to_be_bytes())?;
        let mut opt = Vec::new();
        opt.extend_from_slice(b"IHAVEOPT");
        opt.extend_from_slice(&1u32.to_be_bytes()); // EXPORT_NAME
        opt.extend_from_slice(&(export.len() as u32).to_be_bytes());
        opt.extend_from_slice(export.as_bytes());
        s.write_all(&opt)?;
        let mut info = [0u8; 10];
        s.read_exact(&mut info)?;
        Ok(Client {
            s,
            req: [0; 28 + BLOCK],
            reply: [0; 16 + BLOCK],
            rng: 0x9e37_79b9_7f4a_7c15,
        })
    }

    fn next_off(&mut self) -> u64 {
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % (REGION / BLOCK as u64)) * BLOCK as u64
    }

    fn send(&mut self, cmd: u16, off: u64, len: usize, handle: u64) -> std::io::Result<()> {
        let r = &mut self.req;
        r[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        r[4..6].copy_from_slice(&0u16.to_be_bytes());
        r[6..8].copy_from_slice(&cmd.to_be_bytes());
        r[8..16].copy_from_slice(&handle.to_be_bytes());
        r[16..24].copy_from_slice(&off.to_be_bytes());
        r[24..28].copy_from_slice(&(len as u32).to_be_bytes());
        let n = if cmd == CMD_WRITE { 28 + len } else { 28 };
        if cmd == CMD_WRITE {
            r[28..28 + len].fill((handle as u8) | 1);
        }
        self.s.write_all(&r[..n])
    }

    fn receive(&mut self, cmd: u16, len: usize) -> std::io::Result<()> {
        let n = if cmd == CMD_READ { 16 + len } else { 16 };
        self.s.read_exact(&mut self.reply[..n])?;
        let magic =
            u32::from_be_bytes([self.reply[0], self.reply[1], self.reply[2], self.reply[3]]);
        let err = u32::from_be_bytes([self.reply[4], self.reply[5], self.reply[6], self.reply[7]]);
        if magic != REPLY_MAGIC || err != 0 {
            return Err(std::io::Error::other(format!(
                "bad reply: magic {magic:#x} error {err}"
            )));
        }
        Ok(())
    }

    /// `n` requests of `cmd`, `QD` in flight, at random offsets of the
    /// region (or in order with `seq`, `len` bytes each).
    fn run(&mut self, cmd: u16, n: usize, len: usize, seq: bool) -> std::io::Result<()> {
        let mut sent = 0;
        let mut done = 0;
        while done < n {
            while sent < n && sent - done < QD {
                let off = if seq {
                    (sent * len) as u64 % REGION
                } else {
                    self.next_off()
                };
                self.send(cmd, off, len, sent as u64)?;
                sent += 1;
            }
            self.receive(cmd, len)?;
            done += 1;
        }
        Ok(())
    }
}

/// Counts of one measured loop.
struct Counts {
    allocs: f64,
    locks: f64,
    iops: f64,
}

fn measure(c: &mut Client, cmd: u16, n: usize) -> std::io::Result<Counts> {
    let locks0 = probe::shared_locks();
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let t = Instant::now();
    c.run(cmd, n, BLOCK, false)?;
    let secs = t.elapsed().as_secs_f64();
    COUNTING.store(false, Ordering::SeqCst);
    let allocs = ALLOCS.load(Ordering::SeqCst) as f64 / n as f64;
    let locks = (probe::shared_locks() - locks0) as f64 / n as f64;
    Ok(Counts {
        allocs,
        locks,
        iops: n as f64 / secs,
    })
}

fn setup(dir: &Path, workers: &Arc<Workers>) -> ferrosan::Result<Arc<Pool>> {
    let opts = PoolOptions {
        intent_clear_interval: Duration::from_secs(3600),
        ..PoolOptions::default()
    };
    let pool = Pool::open(dir, Arc::clone(workers), opts)?;
    let disk = |name: &str, size: u64| DiskAddRequest {
        name: name.into(),
        size: Some(size),
        path: None,
        spare: false,
        force: false,
    };
    pool.disk_add(disk("p0", 640 << 20))?;
    for i in 0..4 {
        pool.disk_add(disk(&format!("r{i}"), 128 << 20))?;
    }
    let group = |name: &str, raid, disks: &[&str]| GroupCreateRequest {
        name: name.into(),
        raid,
        disks: disks.iter().map(|d| d.to_string()).collect(),
        stripe_size: None,
    };
    pool.group_create(group("plain", RaidLevelName::Concat, &["p0"]))?;
    pool.group_create(group("r5", RaidLevelName::Raid5, &["r0", "r1", "r2", "r3"]))?;
    let volume = |name: &str, group: &str| VolumeCreateRequest {
        name: name.into(),
        group: group.into(),
        size: 128 << 20,
        track_size: None,
        read_only: false,
    };
    pool.volume_create(volume("plain", "plain"))?;
    pool.volume_create(volume("raid5", "r5"))?;
    pool.volume_create(volume("origin", "plain"))?;
    let req = CopyCreateRequest {
        source: "origin".into(),
        name: "copy".into(),
        mode: Some(CopyMode::Row),
        meta: None,
        read_only: false,
        pool_group: None,
    };
    // A change: it runs on the pool's commit path, as the API's do.
    pool.configure(move |p| async move { p.copy_create(req).await })?;
    Ok(pool)
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`. Anything else (`cargo test
    // --all-targets` runs bench targets too) only checks it was built.
    if !std::env::args().any(|a| a == "--bench") {
        println!("hotpath: run it with `cargo bench --bench hotpath --features lock-count`");
        return Ok(());
    }
    let n: usize = std::env::var("HOTPATH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/hotpath");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let workers = Workers::start(2).map_err(|e| anyhow::anyhow!(e.chain()))?;
    let pool = setup(&dir, &workers).map_err(|e| anyhow::anyhow!(e.chain()))?;
    let sock = dir.join("nbd.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock)?;
    let server = Server::new(
        Arc::new(PoolExports(Arc::clone(&pool))),
        Arc::clone(&workers),
        ServerConfig::default(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.spawn(Arc::clone(&server).serve_unix(listener));
    CLIENT.with(|c| c.set(true));

    println!(
        "4 KiB requests through the NBD server (unix socket), qd {QD}, {n} per row; \
         locks counted: {}",
        if probe::ENABLED {
            "yes"
        } else {
            "no (--features lock-count)"
        }
    );
    println!(
        "{:<8} {:<6} {:>12} {:>11} {:>10}",
        "volume", "op", "allocs/req", "locks/req", "IOPS"
    );
    for export in ["plain", "raid5", "copy"] {
        let mut c = Client::connect(&sock, export)?;
        // Written once (the whole region, in order), then warmed up.
        c.run(CMD_WRITE, (REGION / BLOCK as u64) as usize, BLOCK, true)?;
        c.run(CMD_READ, 2000, BLOCK, false)?;
        c.run(CMD_WRITE, 2000, BLOCK, false)?;
        for (name, cmd) in [("read", CMD_READ), ("write", CMD_WRITE)] {
            let k = measure(&mut c, cmd, n)?;
            let locks = if probe::ENABLED {
                format!("{:.2}", k.locks)
            } else {
                "-".into()
            };
            println!(
                "{export:<8} {name:<6} {:>12.2} {locks:>11} {:>10.0}",
                k.allocs, k.iops
            );
        }
    }
    rt.block_on(server.shutdown());
    workers.stop();
    drop(pool);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
