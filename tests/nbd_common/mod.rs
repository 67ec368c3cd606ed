//! Shared pieces of the NBD tests: a server in-process, a raw protocol
//! client, test devices, and a check for external tools.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferrosan::blockdev::{BlockDev, BufResult, DevFuture};
use ferrosan::nbd::{Server, ServerConfig, StaticExports};
use ferrosan::rt::Workers;
use ferrosan::{IoBuf, Result};

/// A server listening on 127.0.0.1 (random port) and a Unix socket.
pub struct Harness {
    pub server: Arc<Server>,
    pub rt: tokio::runtime::Runtime,
    pub port: u16,
    pub sock: PathBuf,
    pub dir: tempfile::TempDir,
    pub workers: Arc<Workers>,
    loops: Vec<tokio::task::JoinHandle<Result<()>>>,
}

impl Harness {
    pub fn start(exports: Arc<StaticExports>, cfg: ServerConfig) -> Harness {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let workers = Workers::start(2).expect("workers");
        let server = Server::new(exports, Arc::clone(&workers), cfg);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        let sock = dir.path().join("nbd.sock");
        let unix = std::os::unix::net::UnixListener::bind(&sock).expect("bind unix");
        let loops = vec![
            rt.spawn(Arc::clone(&server).serve_tcp(tcp)),
            rt.spawn(Arc::clone(&server).serve_unix(unix)),
        ];
        Harness {
            server,
            rt,
            port,
            sock,
            dir,
            workers,
            loops,
        }
    }

    pub fn uri(&self, name: &str) -> String {
        format!("nbd://127.0.0.1:{}/{name}", self.port)
    }

    pub fn unix_uri(&self, name: &str) -> String {
        format!("nbd+unix:///{name}?socket={}", self.sock.display())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Waits (bounded) until `cond` holds.
    pub fn wait_until(&self, what: &str, cond: impl Fn() -> bool) {
        let t = Instant::now();
        while !cond() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Shuts the server down and checks that the accept loops ended.
    pub fn stop(mut self) {
        let server = Arc::clone(&self.server);
        self.rt.block_on(async move {
            tokio::time::timeout(Duration::from_secs(30), server.shutdown())
                .await
                .expect("shutdown finishes");
        });
        for l in self.loops.drain(..) {
            let r = self.rt.block_on(l).expect("accept loop task");
            r.expect("accept loop result");
        }
        assert_eq!(self.server.connection_count(), 0);
        self.workers.stop();
    }
}

/// Whether an external tool is installed; prints why a test is skipped. In
/// CI (`CI=true`) a missing tool panics instead: CI must never pass by
/// skipping.
pub fn have(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
    if !found {
        skip(&format!(
            "{tool} is not installed (scripts/test.sh installs it)"
        ));
    }
    found
}

/// Whether the tests run in CI (`CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// A test that cannot run here says why; in CI (`CI=true`) it fails
/// instead: CI must never pass by skipping.
pub fn skip(why: &str) {
    assert!(!in_ci(), "CI=true and this test cannot run: {why}");
    eprintln!("SKIPPED: {why}");
}

/// Runs a command, returning (success, stdout + stderr).
pub fn run(cmd: &mut std::process::Command) -> (bool, String) {
    let out = cmd.output().expect("spawn a client tool");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 9) as u8))
        .collect()
}

pub fn file_label(size: u64) -> ferrosan::disk::Label {
    ferrosan::disk::Label {
        pool_id: [7; 16],
        disk_id: [9; 16],
        data_offset: ferrosan::disk::DATA_OFFSET,
        data_size: size,
        seq: 1,
        name: "d0".into(),
    }
}

pub fn write_file(path: &Path, data: &[u8]) {
    std::fs::write(path, data).expect("write a file");
}

/// A device whose reads wait at a gate: lets tests hold requests in
/// flight. Reads at offsets below `gated_below` wait; others do not.
pub struct GateDisk {
    pub inner: Arc<dyn BlockDev>,
    pub gate: Arc<tokio::sync::Semaphore>,
    pub gated_below: u64,
    /// Reads that reached the gate.
    pub waiting: AtomicUsize,
}

impl GateDisk {
    pub fn new(inner: Arc<dyn BlockDev>, gated_below: u64) -> Arc<GateDisk> {
        Arc::new(GateDisk {
            inner,
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
            gated_below,
            waiting: AtomicUsize::new(0),
        })
    }

    pub fn open(&self, n: usize) {
        self.gate.add_permits(n);
    }
}

impl BlockDev for GateDisk {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
        Box::pin(async move {
            if off < self.gated_below {
                self.waiting.fetch_add(1, Ordering::SeqCst);
                if let Ok(p) = self.gate.acquire().await {
                    p.forget();
                }
            }
            self.inner.read(off, buf).await
        })
    }
    fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        self.inner.write(off, buf, fua)
    }
    fn flush(&self) -> DevFuture<'_, Result<()>> {
        self.inner.flush()
    }
}

/// Only the core trait: every optional call takes its default (write
/// zeroes by writing, no fast zero, "all data" status).
pub struct PlainDisk(pub Arc<dyn BlockDev>);

impl BlockDev for PlainDisk {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
        self.0.read(off, buf)
    }
    fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        self.0.write(off, buf, fua)
    }
    fn flush(&self) -> DevFuture<'_, Result<()>> {
        self.0.flush()
    }
}

/// A device that keeps the contract below the top of a stack strictly:
/// unaligned I/O is refused (a test sees EINVAL), so byte-granular
/// requests must reach it as whole blocks. Each read returns what was
/// there when it began, `latency` later (a slow disk: the window between
/// an RMW's read and its write is then wide enough for other connections'
/// writes to land in it).
pub struct StrictDisk {
    pub inner: Arc<dyn BlockDev>,
    pub block: u32,
    pub latency: Duration,
    /// Unaligned requests that reached the device.
    pub unaligned: AtomicUsize,
}

impl StrictDisk {
    pub fn new(inner: Arc<dyn BlockDev>, block: u32, latency: Duration) -> Arc<StrictDisk> {
        Arc::new(StrictDisk {
            inner,
            block,
            latency,
            unaligned: AtomicUsize::new(0),
        })
    }

    fn check(&self, off: u64, len: u64) -> Result<()> {
        let b = u64::from(self.block);
        if off.is_multiple_of(b) && len.is_multiple_of(b) {
            return Ok(());
        }
        self.unaligned.fetch_add(1, Ordering::SeqCst);
        Err(ferrosan::Error::invalid(format!(
            "strict disk: {len} bytes at {off} are not whole blocks"
        )))
    }
}

impl BlockDev for StrictDisk {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn block_size(&self) -> u32 {
        self.block
    }
    fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
        Box::pin(async move {
            let r = match self.check(off, buf.len() as u64) {
                Ok(()) => self.inner.read(off, buf).await,
                Err(e) => (buf, Err(e)),
            };
            // The data is what was there when the read began.
            if !self.latency.is_zero() {
                tokio::time::sleep(self.latency).await;
            }
            r
        })
    }
    fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        Box::pin(async move {
            match self.check(off, buf.len() as u64) {
                Ok(()) => self.inner.write(off, buf, fua).await,
                Err(e) => (buf, Err(e)),
            }
        })
    }
    fn flush(&self) -> DevFuture<'_, Result<()>> {
        self.inner.flush()
    }
    fn discard(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            self.check(off, len)?;
            self.inner.discard(off, len).await
        })
    }
    fn write_zeroes(
        &self,
        off: u64,
        len: u64,
        flags: ferrosan::blockdev::ZeroFlags,
    ) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            self.check(off, len)?;
            self.inner.write_zeroes(off, len, flags).await
        })
    }
    fn block_status(
        &self,
        off: u64,
        len: u64,
    ) -> DevFuture<'_, Result<Vec<ferrosan::blockdev::Extent>>> {
        Box::pin(async move {
            self.check(off, len)?;
            self.inner.block_status(off, len).await
        })
    }
}

// ---------------------------------------------------------------------
// A raw NBD client over std sockets.

pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
pub const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_MAGIC: u32 = 0x6744_6698;
pub const CHUNK_MAGIC: u32 = 0x668e_33ef;

pub mod opt {
    pub const EXPORT_NAME: u32 = 1;
    pub const ABORT: u32 = 2;
    pub const LIST: u32 = 3;
    pub const STARTTLS: u32 = 5;
    pub const INFO: u32 = 6;
    pub const GO: u32 = 7;
    pub const STRUCTURED_REPLY: u32 = 8;
    pub const LIST_META_CONTEXT: u32 = 9;
    pub const SET_META_CONTEXT: u32 = 10;
}

pub mod rep {
    pub const ACK: u32 = 1;
    pub const SERVER: u32 = 2;
    pub const INFO: u32 = 3;
    pub const META_CONTEXT: u32 = 4;
    pub const ERR_UNSUP: u32 = (1 << 31) + 1;
    pub const ERR_POLICY: u32 = (1 << 31) + 2;
    pub const ERR_INVALID: u32 = (1 << 31) + 3;
    pub const ERR_UNKNOWN: u32 = (1 << 31) + 6;
    pub const ERR_TOO_BIG: u32 = (1 << 31) + 9;
}

pub mod cmd {
    pub const READ: u16 = 0;
    pub const WRITE: u16 = 1;
    pub const DISC: u16 = 2;
    pub const FLUSH: u16 = 3;
    pub const TRIM: u16 = 4;
    pub const CACHE: u16 = 5;
    pub const WRITE_ZEROES: u16 = 6;
    pub const BLOCK_STATUS: u16 = 7;
}

pub mod flag {
    pub const FUA: u16 = 1;
    pub const NO_HOLE: u16 = 2;
    pub const DF: u16 = 4;
    pub const REQ_ONE: u16 = 8;
    pub const FAST_ZERO: u16 = 16;
}

pub const EPERM: u32 = 1;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const EOVERFLOW: u32 = 75;
pub const ENOTSUP: u32 = 95;
pub const ESHUTDOWN: u32 = 108;

/// One reply of the transmission phase, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    Simple {
        errno: u32,
        cookie: u64,
    },
    Chunk {
        flags: u16,
        typ: u16,
        cookie: u64,
        payload: Vec<u8>,
    },
}

impl Got {
    pub fn cookie(&self) -> u64 {
        match self {
            Got::Simple { cookie, .. } | Got::Chunk { cookie, .. } => *cookie,
        }
    }

    /// The errno of an error (simple or structured), 0 for success.
    pub fn errno(&self) -> u32 {
        match self {
            Got::Simple { errno, .. } => *errno,
            Got::Chunk { typ, payload, .. } if typ & 0x8000 != 0 => {
                u32::from_be_bytes(payload[0..4].try_into().unwrap())
            }
            Got::Chunk { .. } => 0,
        }
    }

    /// The message of a structured error.
    pub fn message(&self) -> String {
        match self {
            Got::Chunk { typ, payload, .. } if typ & 0x8000 != 0 => {
                let n = u16::from_be_bytes([payload[4], payload[5]]) as usize;
                String::from_utf8_lossy(&payload[6..6 + n]).into_owned()
            }
            _ => String::new(),
        }
    }
}

pub struct Raw {
    pub s: TcpStream,
    pub structured: bool,
    pub size: u64,
    pub flags: u16,
}

impl Raw {
    /// Connects and reads the greeting.
    pub fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_nodelay(true).unwrap();
        let mut r = Raw {
            s,
            structured: false,
            size: 0,
            flags: 0,
        };
        let mut g = [0u8; 18];
        r.s.read_exact(&mut g).expect("greeting");
        assert_eq!(u64::from_be_bytes(g[0..8].try_into().unwrap()), NBDMAGIC);
        assert_eq!(u64::from_be_bytes(g[8..16].try_into().unwrap()), IHAVEOPT);
        assert_eq!(u16::from_be_bytes([g[16], g[17]]), 3);
        r
    }

    /// Connects and sends the usual client flags.
    pub fn start(port: u16) -> Raw {
        let mut r = Raw::connect(port);
        r.send(&3u32.to_be_bytes());
        r
    }

    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).expect("send");
    }

    pub fn option(&mut self, opt: u32, data: &[u8]) {
        let mut v = IHAVEOPT.to_be_bytes().to_vec();
        v.extend_from_slice(&opt.to_be_bytes());
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(data);
        self.send(&v);
    }

    /// Reads one option reply: (option, type, data).
    pub fn opt_reply(&mut self) -> (u32, u32, Vec<u8>) {
        let mut h = [0u8; 20];
        self.s.read_exact(&mut h).expect("option reply");
        assert_eq!(
            u64::from_be_bytes(h[0..8].try_into().unwrap()),
            0x0003_e889_0455_65a9
        );
        let opt = u32::from_be_bytes(h[8..12].try_into().unwrap());
        let typ = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        let mut d = vec![0u8; len as usize];
        self.s.read_exact(&mut d).expect("option reply data");
        (opt, typ, d)
    }

    pub fn expect_reply(&mut self, opt: u32, typ: u32) -> Vec<u8> {
        let (o, t, d) = self.opt_reply();
        assert_eq!(
            (o, t),
            (opt, typ),
            "reply data: {:?}",
            String::from_utf8_lossy(&d)
        );
        d
    }

    pub fn info_data(name: &str, infos: &[u16]) -> Vec<u8> {
        let mut v = (name.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(name.as_bytes());
        v.extend_from_slice(&(infos.len() as u16).to_be_bytes());
        for i in infos {
            v.extend_from_slice(&i.to_be_bytes());
        }
        v
    }

    pub fn meta_data(name: &str, queries: &[&str]) -> Vec<u8> {
        let mut v = (name.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(name.as_bytes());
        v.extend_from_slice(&(queries.len() as u32).to_be_bytes());
        for q in queries {
            v.extend_from_slice(&(q.len() as u32).to_be_bytes());
            v.extend_from_slice(q.as_bytes());
        }
        v
    }

    /// Sends GO for `name` and reads the replies up to ACK.
    pub fn go(&mut self, name: &str) {
        self.option(opt::GO, &Raw::info_data(name, &[3]));
        loop {
            let (o, t, d) = self.opt_reply();
            assert_eq!(o, opt::GO);
            match t {
                rep::INFO => {
                    if u16::from_be_bytes([d[0], d[1]]) == 0 {
                        self.size = u64::from_be_bytes(d[2..10].try_into().unwrap());
                        self.flags = u16::from_be_bytes([d[10], d[11]]);
                    }
                }
                rep::ACK => return,
                t => panic!("GO failed: {t:#x} {:?}", String::from_utf8_lossy(&d)),
            }
        }
    }

    /// The oldest way in: `NBD_OPT_EXPORT_NAME` right after the greeting,
    /// so no block size is agreed (simple replies).
    pub fn export_name(port: u16, name: &str) -> Raw {
        let mut r = Raw::start(port);
        r.option(opt::EXPORT_NAME, name.as_bytes());
        let mut b = [0u8; 10];
        r.s.read_exact(&mut b).expect("export info");
        r.size = u64::from_be_bytes(b[0..8].try_into().unwrap());
        r.flags = u16::from_be_bytes([b[8], b[9]]);
        r
    }

    /// Sends a request without payload and reads its reply; the errno.
    pub fn command(&mut self, cmdn: u16, flags: u16, off: u64, len: u32) -> u32 {
        self.request(cmdn, flags, 3, off, len);
        let (g, _) = self.reply(0);
        assert_eq!(g.cookie(), 3);
        g.errno()
    }

    /// A full handshake: structured replies and base:allocation if asked.
    pub fn open(port: u16, name: &str, structured: bool) -> Raw {
        let mut r = Raw::start(port);
        if structured {
            r.option(opt::STRUCTURED_REPLY, &[]);
            r.expect_reply(opt::STRUCTURED_REPLY, rep::ACK);
            r.option(
                opt::SET_META_CONTEXT,
                &Raw::meta_data(name, &["base:allocation"]),
            );
            r.expect_reply(opt::SET_META_CONTEXT, rep::META_CONTEXT);
            r.expect_reply(opt::SET_META_CONTEXT, rep::ACK);
            r.structured = true;
        }
        r.go(name);
        r
    }

    pub fn request(&mut self, cmd: u16, flags: u16, cookie: u64, off: u64, len: u32) {
        let mut v = REQUEST_MAGIC.to_be_bytes().to_vec();
        v.extend_from_slice(&flags.to_be_bytes());
        v.extend_from_slice(&cmd.to_be_bytes());
        v.extend_from_slice(&cookie.to_be_bytes());
        v.extend_from_slice(&off.to_be_bytes());
        v.extend_from_slice(&len.to_be_bytes());
        self.send(&v);
    }

    /// Reads one reply; for a simple reply, `read_len` bytes of data
    /// follow on success (the caller knows which request it answers).
    pub fn reply(&mut self, read_len: usize) -> (Got, Vec<u8>) {
        self.reply_for(|_| read_len)
    }

    /// Like [`Raw::reply`], with the data length of a simple reply
    /// chosen by cookie.
    pub fn reply_for(&mut self, len_of: impl Fn(u64) -> usize) -> (Got, Vec<u8>) {
        let mut m = [0u8; 4];
        self.s.read_exact(&mut m).expect("reply magic");
        match u32::from_be_bytes(m) {
            SIMPLE_MAGIC => {
                let mut h = [0u8; 12];
                self.s.read_exact(&mut h).expect("simple reply");
                let errno = u32::from_be_bytes(h[0..4].try_into().unwrap());
                let cookie = u64::from_be_bytes(h[4..12].try_into().unwrap());
                let mut data = vec![];
                let read_len = len_of(cookie);
                if errno == 0 && read_len > 0 {
                    data = vec![0; read_len];
                    self.s.read_exact(&mut data).expect("read data");
                }
                (Got::Simple { errno, cookie }, data)
            }
            CHUNK_MAGIC => {
                let mut h = [0u8; 16];
                self.s.read_exact(&mut h).expect("chunk header");
                let flags = u16::from_be_bytes([h[0], h[1]]);
                let typ = u16::from_be_bytes([h[2], h[3]]);
                let cookie = u64::from_be_bytes(h[4..12].try_into().unwrap());
                let len = u32::from_be_bytes(h[12..16].try_into().unwrap());
                let mut payload = vec![0; len as usize];
                self.s.read_exact(&mut payload).expect("chunk payload");
                let data = if typ == 1 {
                    payload[8..].to_vec()
                } else {
                    vec![]
                };
                (
                    Got::Chunk {
                        flags,
                        typ,
                        cookie,
                        payload,
                    },
                    data,
                )
            }
            m => panic!("bad reply magic {m:#x}"),
        }
    }

    /// Reads `len` bytes at `off` (cookie 1) and returns the data, or the
    /// errno.
    pub fn read(&mut self, off: u64, len: u32) -> std::result::Result<Vec<u8>, u32> {
        self.request(cmd::READ, 0, 1, off, len);
        let (g, data) = self.reply(len as usize);
        assert_eq!(g.cookie(), 1);
        match g.errno() {
            0 => Ok(data),
            e => Err(e),
        }
    }

    /// Writes `data` at `off`; returns the errno (0 = success).
    pub fn write(&mut self, off: u64, data: &[u8], flags: u16) -> u32 {
        self.request(cmd::WRITE, flags, 2, off, data.len() as u32);
        self.send(data);
        let (g, _) = self.reply(0);
        assert_eq!(g.cookie(), 2);
        g.errno()
    }

    /// Whether the server closes the connection within `within`.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        self.s.set_read_timeout(Some(within)).unwrap();
        let mut b = [0u8; 4096];
        let t = Instant::now();
        loop {
            match self.s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
            if t.elapsed() > within {
                return false;
            }
        }
    }
}
