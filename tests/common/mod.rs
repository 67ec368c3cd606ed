//! Shared by the api_* and cli_* tests: an in-memory dispatcher (a "sim"
//! pool, so API and CLI tests run without disks or root), a server on a
//! temporary socket, a raw HTTP client, and a runner of the binary.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrosan::api::{Action, Dispatch, Reply};

use ferrosan::api::views::*;
use ferrosan::{Error, ErrorKind, Result};

// ---------------------------------------------------------------- sim

/// A pool in memory with just enough rules to give every answer a shape.
/// A disk, group, volume or copy whose name starts with `fail-` followed by
/// an error kind (`fail-no_space`) answers any lookup with that error.
///
/// Instant copies: a copy is also a volume (so it can be copied in turn).
/// Each pretends an eighth of its tracks have diverged, and, in row mode,
/// its original a sixteenth. A copy whose name contains `full` warns that
/// its new space is over 80% full; a cow copy whose name contains `broken`
/// is invalid. Restoring from a cow copy starts a job (the old data moves
/// back); from a row copy it does not (pointers switch). Split moves the
/// set of new data the policy picks, with a job unless that set is empty.
#[derive(Default)]
pub struct Sim {
    state: Mutex<State>,
    /// Every action dispatched, as Debug text.
    pub log: Mutex<Vec<String>>,
}

#[derive(Default)]
struct State {
    disks: BTreeMap<String, DiskInfo>,
    groups: BTreeMap<String, GroupInfo>,
    volumes: BTreeMap<String, VolumeInfo>,
    jobs: BTreeMap<u64, JobInfo>,
    copies: BTreeMap<String, CopyInfo>,
}

pub const KINDS: [(&str, ErrorKind); 11] = [
    ("io", ErrorKind::Io),
    ("out_of_range", ErrorKind::OutOfRange),
    ("invalid", ErrorKind::Invalid),
    ("no_space", ErrorKind::NoSpace),
    ("read_only", ErrorKind::ReadOnly),
    ("not_found", ErrorKind::NotFound),
    ("conflict", ErrorKind::Conflict),
    ("corrupt", ErrorKind::Corrupt),
    ("unsupported", ErrorKind::Unsupported),
    ("shutdown", ErrorKind::Shutdown),
    ("unavailable", ErrorKind::Unavailable),
];

fn forced_error(name: &str) -> Result<()> {
    let Some(kind) = name.strip_prefix("fail-") else {
        return Ok(());
    };
    match KINDS.iter().find(|(k, _)| *k == kind) {
        Some((_, kind)) => Err(Error::new(*kind, format!("{name}: forced {kind:?}"))),
        None => Ok(()),
    }
}

fn missing(what: &str, name: &str) -> Error {
    Error::not_found(format!(
        "no {what} named {name:?}: `ferrosan {what} list` shows them"
    ))
}

impl Dispatch for Sim {
    fn dispatch(&self, action: Action) -> Result<Reply> {
        if let Ok(mut log) = self.log.lock() {
            log.push(format!("{action:?}"));
        }
        let mut st = self
            .state
            .lock()
            .map_err(|_| Error::invalid("sim poisoned"))?;
        st.apply(action)
    }
}

impl Sim {
    pub fn last_action(&self) -> String {
        self.log.lock().unwrap().last().cloned().unwrap_or_default()
    }
}

impl State {
    fn apply(&mut self, action: Action) -> Result<Reply> {
        use Action as A;
        Ok(match action {
            A::PoolInfo => Reply::Pool(self.pool()),
            A::DiskList => Reply::Disks(self.disks.values().cloned().collect()),
            A::DiskGet(n) => Reply::Disk(self.disk(&n)?.clone()),
            A::DiskAdd(req) => Reply::Disk(self.disk_add(req)?),
            A::DiskRemove(n) => {
                if self.disk(&n)?.group.is_some() {
                    return Err(Error::conflict(format!("disk {n} is in a group")));
                }
                self.disks.remove(&n);
                Reply::Deleted
            }
            A::DiskReinstate(n) => {
                let d = self.disk_mut(&n)?;
                d.status = DiskStatus::Ok;
                Reply::Reinstated(DiskReinstateInfo {
                    disk: n,
                    group: d.group.clone(),
                    slot: d.slot,
                    job: None,
                })
            }
            A::DiskFail(n, _) => {
                let d = self.disk_mut(&n)?;
                d.status = DiskStatus::Failed;
                Reply::Disk(d.clone())
            }
            A::DiskReplace(old, req) => Reply::Job(self.replace(&old, &req.new)?),
            A::DiskInject(n, req) => {
                let d = self.disk_mut(&n)?;
                let mut f = FaultRules::default();
                if let Some(r) = req.read_error_at {
                    f.read_errors.push((r.offset, r.length.unwrap_or(512)));
                }
                if let Some(r) = req.write_error_at {
                    f.write_errors.push((r.offset, r.length.unwrap_or(512)));
                }
                f.error_rate = req.error_rate.unwrap_or(0.0);
                f.vanished = req.vanish;
                d.faults = Some(f);
                Reply::Disk(d.clone())
            }
            A::GroupList => Reply::Groups(self.groups.values().cloned().collect()),
            A::GroupGet(n) => Reply::Group(self.group(&n)?.clone()),
            A::GroupCreate(req) => Reply::Group(self.group_create(req)?),
            A::GroupDelete(n) => {
                let g = self.group(&n)?.clone();
                for d in &g.disks {
                    self.disk_mut(d)?.group = None;
                }
                self.groups.remove(&n);
                Reply::Deleted
            }
            A::GroupExtend(n, req) => {
                let g = self.group(&n)?.clone();
                if g.raid != RaidLevelName::Concat {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "group {n} is {}: only concat groups grow by adding disks",
                            g.raid
                        ),
                    ));
                }
                for d in &req.disks {
                    self.disk_mut(d)?.group = Some(n.clone());
                }
                let g = self
                    .groups
                    .get_mut(&n)
                    .ok_or_else(|| missing("group", &n))?;
                g.disks.extend(req.disks);
                Reply::Group(g.clone())
            }
            A::VolumeList => Reply::Volumes(self.volumes.values().cloned().collect()),
            A::VolumeGet(n) => Reply::Volume(self.volume(&n)?.clone()),
            A::VolumeCreate(req) => Reply::Volume(self.volume_create(req)?),
            A::VolumeDelete { name, force } => {
                if self.volume(&name)?.connections > 0 && !force {
                    return Err(Error::conflict(format!("volume {name} is in use")));
                }
                self.volumes.remove(&name);
                Reply::Deleted
            }
            A::VolumeGrow(n, req) => {
                let v = self
                    .volumes
                    .get_mut(&n)
                    .ok_or_else(|| missing("volume", &n))?;
                v.size = req.size;
                Reply::Volume(v.clone())
            }
            A::JobList => Reply::Jobs(self.jobs.values().cloned().collect()),
            A::JobGet(id) => Reply::Job(self.job_step(id)?),
            A::JobPause(id) => Reply::Job(self.job_set(id, JobState::Paused)?),
            A::JobResume(id) => Reply::Job(self.job_set(id, JobState::Running)?),
            A::JobCancel(id) => Reply::Job(self.job_set(id, JobState::Cancelled)?),
            A::JobRate(id, req) => {
                let j = self.job_mut(id)?;
                j.rate_limit = req.bytes_per_sec;
                Reply::Job(j.clone())
            }
            A::CopyList => Reply::Copies(self.copies.values().cloned().collect()),
            A::CopyGet(n) => Reply::Copy(self.copy(&n)?.clone()),
            A::CopyCreate(req) => Reply::Copy(self.copy_create(req)?),
            A::CopyDelete(n) => {
                let c = self.copy(&n)?.clone();
                self.copies.remove(&n);
                self.volumes.remove(&n);
                // The last copy of an A2 original: its new data (1/16 of
                // its tracks, as in `copy_split`) folds back.
                let last = !self.copies.values().any(|o| o.source == c.source);
                let job = (last && c.mode == CopyMode::Row).then(|| {
                    let target = format!(
                        "volume {}: move its new data back into its own space",
                        c.source
                    );
                    self.new_job(
                        "copy-fold",
                        target,
                        c.size / c.track_size / 16,
                        c.track_size,
                    )
                });
                Reply::CopyDeleted(CopyDeleteInfo { name: n, job })
            }
            A::CopyRestore(n, _) => Reply::CopyRestored(self.copy_restore(&n)?),
            A::CopySplit(n, req) => Reply::CopySplit(self.copy_split(&n, req)?),
        })
    }

    fn pool(&self) -> PoolInfo {
        PoolInfo {
            path: "/sim".into(),
            id: "sim".into(),
            version: "0.1.0".into(),
            nbd_tcp: Some("nbd://127.0.0.1:10809".into()),
            nbd_unix: "/sim/nbd.sock".into(),
            api_socket: "/sim/api.sock".into(),
            fault_injection: false,
            disks: self.disks.len(),
            groups: self.groups.len(),
            volumes: self.volumes.len(),
            problems: vec![],
        }
    }

    fn disk(&self, name: &str) -> Result<&DiskInfo> {
        forced_error(name)?;
        self.disks.get(name).ok_or_else(|| missing("disk", name))
    }

    fn disk_mut(&mut self, name: &str) -> Result<&mut DiskInfo> {
        forced_error(name)?;
        self.disks
            .get_mut(name)
            .ok_or_else(|| missing("disk", name))
    }

    fn group(&self, name: &str) -> Result<&GroupInfo> {
        forced_error(name)?;
        self.groups.get(name).ok_or_else(|| missing("group", name))
    }

    fn volume(&self, name: &str) -> Result<&VolumeInfo> {
        forced_error(name)?;
        self.volumes
            .get(name)
            .ok_or_else(|| missing("volume", name))
    }

    fn disk_add(&mut self, req: DiskAddRequest) -> Result<DiskInfo> {
        forced_error(&req.name)?;
        if self.disks.contains_key(&req.name) {
            return Err(Error::conflict(format!("disk {} already exists", req.name)));
        }
        let size = match (req.size, &req.path) {
            (Some(s), None) if s.is_multiple_of(4096) => s,
            (Some(s), None) => {
                return Err(Error::invalid(format!(
                    "disk size {s} is not a multiple of 4096"
                )));
            }
            _ => return Err(Error::invalid("give exactly one of size and path")),
        };
        let d = DiskInfo {
            name: req.name.clone(),
            path: PathBuf::from(format!("/sim/{}.img", req.name)),
            size,
            data_size: size - 4096,
            allocated: 0,
            status: if req.spare {
                DiskStatus::Spare
            } else {
                DiskStatus::Ok
            },
            problem: None,
            group: None,
            slot: None,
            counters: CounterSnapshot::default(),
            faults: None,
        };
        self.disks.insert(req.name, d.clone());
        Ok(d)
    }

    fn group_create(&mut self, req: GroupCreateRequest) -> Result<GroupInfo> {
        if self.groups.contains_key(&req.name) {
            return Err(Error::conflict(format!(
                "group {} already exists",
                req.name
            )));
        }
        let mut capacity = 0;
        for name in &req.disks {
            let d = self.disk(name)?;
            if let Some(g) = &d.group {
                return Err(Error::conflict(format!("disk {name} is in group {g}")));
            }
            capacity += d.data_size;
        }
        for (slot, name) in req.disks.iter().enumerate() {
            let d = self.disk_mut(name)?;
            d.group = Some(req.name.clone());
            d.slot = Some(slot);
        }
        let g = GroupInfo {
            name: req.name.clone(),
            raid: req.raid,
            stripe_size: req.stripe_size.unwrap_or(65536),
            disks: req.disks.clone(),
            volumes: vec![],
            capacity,
            free: capacity,
            health: "optimal".into(),
            members: vec![],
            intent_marked: 0,
        };
        self.groups.insert(req.name, g.clone());
        Ok(g)
    }

    fn volume_create(&mut self, req: VolumeCreateRequest) -> Result<VolumeInfo> {
        if self.volumes.contains_key(&req.name) {
            return Err(Error::conflict(format!(
                "volume {} already exists",
                req.name
            )));
        }
        let track = req.track_size.unwrap_or(65536);
        if !req.size.is_multiple_of(track) {
            return Err(Error::invalid(format!(
                "size {} is not a multiple of the track size, {}",
                ferrosan::units::format_exact(req.size),
                ferrosan::units::format_size(track)
            )));
        }
        let g = self
            .groups
            .get_mut(&req.group)
            .ok_or_else(|| missing("group", &req.group))?;
        if req.size > g.free {
            return Err(Error::new(ErrorKind::NoSpace, "not enough free space"));
        }
        g.free -= req.size;
        g.volumes.push(req.name.clone());
        let v = VolumeInfo {
            name: req.name.clone(),
            group: req.group,
            size: req.size,
            track_size: track,
            read_only: req.read_only,
            connections: 0,
            export: format!("nbd://127.0.0.1:10809/{}", req.name),
            extents: vec![(0, req.size)],
        };
        self.volumes.insert(req.name, v.clone());
        Ok(v)
    }

    /// A job of 4 units that advances 2 units per look; onto a disk whose
    /// name starts with `bad` it fails at the end.
    fn replace(&mut self, old: &str, new: &str) -> Result<JobInfo> {
        let group = self.disk(old)?.group.clone();
        self.disk(new)?;
        let group = group.ok_or_else(|| Error::invalid(format!("disk {old} is in no group")))?;
        let target = format!("group {group} disk {old} -> disk {new}");
        Ok(self.new_job("replace", target, 4, 65536))
    }

    /// A running job of `total` units, advancing 2 units per look.
    fn new_job(&mut self, kind: &str, target: String, total: u64, unit_bytes: u64) -> JobInfo {
        let id = self.jobs.len() as u64 + 1;
        let j = JobInfo {
            id,
            kind: kind.into(),
            target,
            state: JobState::Running,
            done: 0,
            total,
            unit_bytes,
            bytes_per_sec: 1 << 20,
            eta_secs: Some(1),
            rate_limit: 0,
            message: None,
            created: 0,
            updated: 0,
        };
        self.jobs.insert(id, j.clone());
        j
    }

    fn job_mut(&mut self, id: u64) -> Result<&mut JobInfo> {
        self.jobs
            .get_mut(&id)
            .ok_or_else(|| Error::not_found(format!("no job {id}")))
    }

    fn job_step(&mut self, id: u64) -> Result<JobInfo> {
        let j = self.job_mut(id)?;
        if j.state == JobState::Running {
            j.done = (j.done + 2).min(j.total);
            if j.done == j.total {
                if j.target.contains("-> disk bad") {
                    j.state = JobState::Failed;
                    j.message = Some("write error on the new disk at offset 0".into());
                } else {
                    j.state = JobState::Done;
                }
            }
        }
        Ok(j.clone())
    }

    fn job_set(&mut self, id: u64, state: JobState) -> Result<JobInfo> {
        let j = self.job_mut(id)?;
        if j.state.is_finished() {
            return Err(Error::conflict(format!("job {id} has finished")));
        }
        j.state = state;
        Ok(j.clone())
    }
}

// ---------------------------------------------------------------- sim copies

impl State {
    fn copy(&self, name: &str) -> Result<&CopyInfo> {
        forced_error(name)?;
        self.copies.get(name).ok_or_else(|| missing("copy", name))
    }

    fn copy_create(&mut self, req: CopyCreateRequest) -> Result<CopyInfo> {
        forced_error(&req.name)?;
        let src = self.volume(&req.source)?.clone();
        if self.volumes.contains_key(&req.name) {
            return Err(Error::conflict(format!(
                "volume {} already exists",
                req.name
            )));
        }
        if let Some(g) = &req.pool_group {
            self.group(g)?;
        }
        let parent = self.copies.get(&req.source);
        let mode = family_mode(parent, req.mode)?;
        let c = sim_copy(&req, &src, parent, mode);
        let mut v = src;
        v.name = c.name.clone();
        v.read_only = c.read_only;
        v.group = req.pool_group.unwrap_or(v.group);
        v.export = format!("nbd://127.0.0.1:10809/{}", c.name);
        self.volumes.insert(c.name.clone(), v);
        self.copies.insert(c.name.clone(), c.clone());
        Ok(c)
    }

    fn copy_restore(&mut self, name: &str) -> Result<CopyRestoreInfo> {
        let c = self.copy(name)?.clone();
        let job = (c.mode == CopyMode::Cow).then(|| {
            let target = format!("volume {} <- copy {name}", c.source);
            self.new_job("restore", target, c.tracks_diverged, c.track_size)
        });
        Ok(CopyRestoreInfo {
            volume: c.source,
            from: c.name,
            job,
            connections: 0,
        })
    }

    fn copy_split(&mut self, name: &str, req: CopySplitRequest) -> Result<CopySplitInfo> {
        let c = self.copy(name)?.clone();
        let policy = req.policy.unwrap_or(SplitPolicy::MoveSmaller);
        let n_copy = c.tracks_diverged;
        let n_orig = match c.mode {
            CopyMode::Cow => 0,
            CopyMode::Row => c.size / c.track_size / 16,
        };
        let copy_moves = match policy {
            SplitPolicy::MoveSmaller => n_copy <= n_orig,
            SplitPolicy::MoveLarger => n_copy > n_orig,
        };
        let (moving, n) = match copy_moves {
            true => (c.name.clone(), n_copy),
            false => (c.source.clone(), n_orig),
        };
        let job = (n > 0).then(|| {
            let target = format!("copy {name}: new data of {moving} -> shared space");
            self.new_job("split", target, n, c.track_size)
        });
        Ok(CopySplitInfo {
            n_orig,
            n_copy,
            policy,
            moving,
            job,
        })
    }
}

/// The mode of a new copy: asked for, or its family's (default row); a
/// family keeps one mode.
fn family_mode(parent: Option<&CopyInfo>, asked: Option<CopyMode>) -> Result<CopyMode> {
    match (parent.map(|p| p.mode), asked) {
        (Some(has), Some(want)) if has != want => Err(Error::invalid(format!(
            "the copies of this family use {has}: a copy of one of them cannot use {want}"
        ))),
        (Some(has), _) => Ok(has),
        (None, asked) => Ok(asked.unwrap_or(CopyMode::Row)),
    }
}

fn sim_copy(
    req: &CopyCreateRequest,
    src: &VolumeInfo,
    parent: Option<&CopyInfo>,
    mode: CopyMode,
) -> CopyInfo {
    let scheme = req.meta.unwrap_or(Scheme::ChangedPointer);
    let tracks = src.size / src.track_size;
    let diverged = tracks / 8;
    let full = req.name.contains("full");
    let valid = !(mode == CopyMode::Cow && req.name.contains("broken"));
    let warning = match (valid, full) {
        (false, _) => Some("its new space ran out: reads of this copy fail".to_owned()),
        (true, true) => Some("new space is 85% full: free space or delete copies".to_owned()),
        (true, false) => None,
    };
    CopyInfo {
        name: req.name.clone(),
        source: src.name.clone(),
        origin: parent.map_or_else(|| src.name.clone(), |p| p.origin.clone()),
        mode,
        scheme,
        read_only: req.read_only,
        size: src.size,
        track_size: src.track_size,
        tracks_diverged: diverged,
        space_used: diverged * src.track_size,
        metadata_memory: metadata_bytes(scheme, tracks, diverged),
        depth: parent.map_or(1, |p| p.depth + 1),
        valid,
        warning,
        created: 1_700_000_000,
    }
}

/// What each scheme's metadata would take: 16 bytes a pointer, a bit a track.
fn metadata_bytes(scheme: Scheme, tracks: u64, diverged: u64) -> u64 {
    match scheme {
        Scheme::FullPointer => 16 * tracks,
        Scheme::ChangedPointer => 16 * diverged,
        Scheme::Bitmap => tracks.div_ceil(8),
        Scheme::MultilevelBitmap => tracks.div_ceil(64) + diverged.div_ceil(8),
        Scheme::PartialBitmap => 32 + diverged.div_ceil(8),
    }
}

// ---------------------------------------------------------------- server

/// The API over a dispatcher on `<dir>/api.sock`, on its own thread.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Server {
    pub fn start(backend: Arc<dyn Dispatch>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let path = socket.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let router = ferrosan::api::router_with(backend);
            rt.block_on(ferrosan::api::serve_router(router, &path, async {
                let _ = stopped.await;
            }))
        });
        wait_for_socket(&socket, Duration::from_secs(10));
        Server {
            dir,
            socket,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn pool(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server; its result.
    pub fn stop(mut self) -> Result<()> {
        self.halt()
    }

    fn halt(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().unwrap(),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

/// Waits until something listens on `socket`.
pub fn wait_for_socket(socket: &Path, limit: Duration) {
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        assert!(
            start.elapsed() < limit,
            "nothing listens on {} after {limit:?}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------- client

/// A response: status, content type and body text.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// The ApiError body: (kind, message).
    pub fn error(&self) -> (String, String) {
        let e: ApiError = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not an ApiError ({e}): {:?}", self.body));
        (e.kind, e.message)
    }
}

/// One raw HTTP/1.1 request over the socket (any bytes in the body).
pub fn request(socket: &Path, method: &str, path: &str, body: Option<&str>) -> Resp {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    let body = body.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    parse_response(&raw)
}

fn parse_response(raw: &str) -> Resp {
    let (head, body) = raw.split_once("\r\n\r\n").expect("no end of headers");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Resp {
        status,
        content_type,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

// ---------------------------------------------------------------- binary

/// One run of the `ferrosan` binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `ferrosan --pool POOL ARGS...`.
pub fn ferrosan(pool: &Path, args: &[&str]) -> Run {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrosan"))
        .arg("--pool")
        .arg(pool)
        .args(args)
        .env_remove("FERROSAN_POOL")
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Exit 0, nothing on stderr: stdout.
pub fn ok(pool: &Path, args: &[&str]) -> String {
    let r = ferrosan(pool, args);
    assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    assert_eq!(r.stderr, "", "{args:?}");
    r.stdout
}

/// The output of `--json ARGS...`, parsed.
pub fn json(pool: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let text = ok(pool, &all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {text}"))
}

/// exit 1 and `error: <message>` on stderr, nothing on stdout: the message.
pub fn fails(pool: &Path, args: &[&str]) -> String {
    let r = ferrosan(pool, args);
    assert_eq!(r.code, 1, "{args:?}: {} {}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "", "{args:?}");
    r.stderr
        .strip_prefix("error: ")
        .unwrap_or_else(|| panic!("{args:?}: {}", r.stderr))
        .trim_end()
        .to_owned()
}
