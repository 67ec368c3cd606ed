//! engine: the pool — disks, RAID groups and volumes, built from metadata.
//!
//! ```text
//!   Pool ── meta (redb): records, write-intent pages, job checkpoints
//!    ├── disks:   DiskRecord + open FileDisk (Counted, FaultDisk) or a problem
//!    ├── groups:  GroupRecord (seed 002 T1) + RaidDev + write-intent log
//!    ├── volumes: VolumeRecord + VolumeDev (extents of a group) = NBD export
//!    └── jobs:    rebuild / replace / resync, resumed after a restart
//! ```
//!
//! Reads (`*_list`, `*_get`) take the pool lock briefly from any thread.
//! Changes run on the commit path (`config.rs`), one at a time: each is
//! validated under the lock, committed durably with no lock held, then
//! applied to the running stacks, so a crash at any point leaves either
//! the old or the new configuration. Long work starts a job and returns
//! its view at once. Lock order: pool, then a family's state, then the
//! space map (`space.rs`).

#![forbid(unsafe_code)]

mod config;
mod copies;
mod copy_room;
mod disks;
mod failing;
mod groups;
mod load;
mod pairs;
mod rebuild;
mod recover;
mod reshape;
mod space;
mod sparing;
mod svol;
mod volumes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::api::views::*;
use crate::blockdev::BlockDev;
use crate::disk::{DiskCounters, FaultDisk, FileDisk};
use crate::error::{Error, Result};
use crate::jobs::Jobs;
use crate::lockorder::{Held, Rank};
use crate::meta::Meta;
use crate::meta::intent::PersistentIntent;
use crate::meta::model::{DiskRecord, GroupRecord, PoolRecord, VolumeRecord};
use crate::rt::Workers;
use crate::stack::raid::{Health, RaidDev};
use crate::stack::switch::Switch;
use crate::stack::volume::VolumeDev;

pub(crate) use crate::api::views::limits::check_name;

/// Name of the pool database inside the pool directory.
pub const DB_FILE: &str = "ferrosan.redb";
/// Folder of the disk files the pool creates.
pub const DISKS_DIR: &str = "disks";

/// How the pool runs.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Build fault-injecting disks (`disk inject` works).
    pub fault_injection: bool,
    /// Open disks with O_DIRECT.
    pub direct_io: bool,
    /// How often idle write-intent regions are cleared.
    pub intent_clear_interval: Duration,
    /// Rate limit of copy-gc jobs (bytes/s, 0 = none).
    pub gc_rate: u64,
    /// Open for `pool recover`: disks, groups and volumes only; no copy
    /// family is loaded, no job resumed, no background work started.
    pub recovering: bool,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            fault_injection: false,
            direct_io: true,
            intent_clear_interval: Duration::from_secs(5),
            gc_rate: 0,
            recovering: false,
        }
    }
}

/// An open disk.
pub(crate) struct OpenDisk {
    file: Arc<FileDisk>,
    /// What RAID uses: counters over (faults over) the file.
    dev: Arc<dyn BlockDev>,
    counters: Arc<DiskCounters>,
    fault: Option<Arc<FaultDisk<Arc<FileDisk>>>>,
}

pub(crate) struct DiskEntry {
    rec: DiskRecord,
    open: Option<OpenDisk>,
    /// Why the disk cannot be used (missing, unusable).
    problem: Option<(DiskStatus, String)>,
}

pub(crate) struct GroupEntry {
    rec: GroupRecord,
    raid: Arc<RaidDev>,
    intent: Option<Arc<PersistentIntent>>,
}

pub(crate) struct VolumeEntry {
    rec: VolumeRecord,
    /// The volume's own extents (its thick layout; an instant copy's base).
    thick: Arc<VolumeDev>,
    /// What NBD serves: a switch over the thick volume or its copy image.
    dev: Arc<Switch>,
    conns: Arc<std::sync::atomic::AtomicUsize>,
}

/// The pool lock, held. A guard through which the state was changed
/// brings the space map up to date when it goes (see `space.rs`), so no
/// change can forget to.
pub(crate) struct StateGuard<'a> {
    inner: parking_lot::MutexGuard<'a, State>,
    owner: &'a Pool,
    changed: bool,
    /// Rank `Pool` of the lock order (the first lock).
    held: Held,
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.inner
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.changed = true;
        &mut self.inner
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        if self.changed {
            self.owner.sync_space(&self.inner);
        }
    }
}

/// The pool's identity and its id counters: a service of its own with
/// no lock (atomics).
struct Ids {
    rec: PoolRecord,
    next_object: AtomicU64,
    next_job: AtomicU64,
}

pub(crate) struct State {
    disks: BTreeMap<String, DiskEntry>,
    groups: BTreeMap<String, GroupEntry>,
    volumes: BTreeMap<String, VolumeEntry>,
    /// Copy families, by object id.
    families: BTreeMap<u64, Arc<crate::copy::image::Family>>,
}

/// An open pool: the daemon's state.
pub struct Pool {
    dir: PathBuf,
    meta: Arc<Meta>,
    workers: Arc<Workers>,
    opts: PoolOptions,
    jobs: Jobs,
    /// The configuration as it runs. Taken briefly; never held across a
    /// durable commit ([`Pool::unlocked`]) or an await.
    st: parking_lot::Mutex<State>,
    ids: Ids,
    me: Weak<Pool>,
    problems: Mutex<Vec<String>>,
    nbd_url: Mutex<Option<String>>,
    nbd_unix: Mutex<PathBuf>,
    /// Group space held outside volume records (copy stores, discards).
    held: Mutex<space::HeldSpace>,
    /// Told when a discard of held space is done (the space is free).
    discarded: tokio::sync::Notify,
    /// The one path configuration changes take (`config.rs`).
    commit: config::CommitPath,
    /// Mirror pairs (`pairs/`): a service with its own (leaf) lock.
    pairs: pairs::Pairs,
    /// S-VOL groups (`svol/`): a service with its own (leaf) lock.
    svols: svol::SvolGroups,
    /// Failure-anticipating sparing (`sparing/`): its own (leaf) lock.
    sparing: sparing::Sparing,
    /// Online restriping (`reshape/`): its own (leaf) lock.
    reshapes: reshape::Reshapes,
}

impl Pool {
    /// Opens (or creates) the pool in `dir`: loads the database, opens the
    /// disks (reporting by name any that are missing, foreign or
    /// truncated), assembles groups and volumes, and resumes jobs. The
    /// caller holds the pool lock.
    pub fn open(dir: &Path, workers: Arc<Workers>, opts: PoolOptions) -> Result<Arc<Pool>> {
        std::fs::create_dir_all(dir.join(DISKS_DIR))
            .map_err(|e| Error::io(format!("cannot create pool directory {}", dir.display()), e))?;
        // Paths shown and recorded are absolute, whatever the daemon's
        // working directory was.
        let dir = &std::fs::canonicalize(dir).map_err(|e| {
            Error::io(
                format!("cannot resolve pool directory {}", dir.display()),
                e,
            )
        })?;
        let (meta, _created) = Meta::open(&dir.join(DB_FILE))?;
        let meta = Arc::new(meta);
        let snap = meta.load()?;
        let mut commit_err = None;
        let pool = Arc::new_cyclic(|me: &Weak<Pool>| Pool {
            dir: dir.to_path_buf(),
            meta: Arc::clone(&meta),
            workers: Arc::clone(&workers),
            opts,
            jobs: Jobs::new(Arc::clone(&meta), Arc::clone(&workers)),
            ids: Ids {
                rec: snap.pool.clone(),
                next_object: AtomicU64::new(snap.pool.next_object),
                next_job: AtomicU64::new(snap.pool.next_job),
            },
            st: parking_lot::Mutex::new(State {
                disks: BTreeMap::new(),
                groups: BTreeMap::new(),
                volumes: BTreeMap::new(),
                families: BTreeMap::new(),
            }),
            me: me.clone(),
            problems: Mutex::new(Vec::new()),
            pairs: pairs::Pairs::default(),
            svols: svol::SvolGroups::default(),
            sparing: sparing::Sparing::default(),
            reshapes: reshape::Reshapes::default(),
            nbd_url: Mutex::new(None),
            nbd_unix: Mutex::new(dir.join("nbd.sock")),
            held: Mutex::new(space::HeldSpace::default()),
            discarded: tokio::sync::Notify::new(),
            commit: config::CommitPath::start(me.clone()).unwrap_or_else(|e| {
                commit_err = Some(e);
                config::CommitPath::closed()
            }),
        });
        if let Some(e) = commit_err {
            return Err(e);
        }
        pool.load(snap)?;
        if !pool.opts.recovering {
            pool.start_background();
            pool.start_sparing_monitor();
        }
        Ok(pool)
    }

    pub(crate) fn lock(&self) -> StateGuard<'_> {
        let held = crate::lockorder::acquire(Rank::Pool);
        StateGuard {
            held,
            inner: self.st.lock(),
            owner: self,
            changed: false,
        }
    }

    /// Applies a committed group record to the running entry.
    pub(crate) fn set_group_rec(st: &mut State, rec: GroupRecord) {
        if let Some(g) = st.groups.get_mut(&rec.name) {
            g.rec = rec;
        }
    }

    /// Runs `f` — a durable commit — with the pool lock let go, and takes
    /// the lock again. Changes run one at a time on the commit path
    /// (`config.rs`), so what a change read before is still what it
    /// changes after; the lock only keeps readers from seeing half an
    /// apply. The borrow checker sees to it that no reference into the
    /// state lives across.
    pub(crate) fn unlocked<T>(st: &mut StateGuard<'_>, f: impl FnOnce() -> T) -> T {
        if std::mem::take(&mut st.changed) {
            st.owner.sync_space(&st.inner);
        }
        let StateGuard { inner, held, .. } = st;
        held.released(|| parking_lot::MutexGuard::unlocked(inner, f))
    }

    fn arc(&self) -> Result<Arc<Pool>> {
        self.me
            .upgrade()
            .ok_or_else(|| Error::new(crate::ErrorKind::Shutdown, "the pool is closing"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn meta(&self) -> &Arc<Meta> {
        &self.meta
    }

    pub fn workers(&self) -> &Arc<Workers> {
        &self.workers
    }

    /// Problems found when the pool was opened.
    pub fn problems(&self) -> Vec<String> {
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn problem(&self, msg: String) {
        tracing::warn!("{msg}");
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg);
    }

    /// Where the daemon serves NBD (for export addresses).
    pub fn set_nbd_addresses(&self, tcp: Option<String>, unix: PathBuf) {
        *self.nbd_url.lock().unwrap_or_else(|p| p.into_inner()) = tcp;
        *self.nbd_unix.lock().unwrap_or_else(|p| p.into_inner()) = unix;
    }

    pub(crate) fn export_url(&self, name: &str) -> String {
        match &*self.nbd_url.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(u) => format!("{u}/{name}"),
            None => format!(
                "nbd+unix:///{name}?socket={}",
                self.nbd_unix
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .display()
            ),
        }
    }

    /// True when the pool holds no disks, groups or volumes.
    pub fn is_empty(&self) -> bool {
        let st = self.lock();
        st.disks.is_empty() && st.groups.is_empty() && st.volumes.is_empty()
    }

    pub fn info(&self) -> PoolInfo {
        let st = self.lock();
        PoolInfo {
            path: self.dir.clone(),
            id: self.ids.rec.id.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            nbd_tcp: self
                .nbd_url
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            nbd_unix: self
                .nbd_unix
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            api_socket: self.dir.join("api.sock"),
            fault_injection: self.opts.fault_injection,
            disks: st.disks.len(),
            groups: st.groups.len(),
            volumes: st.volumes.len(),
            problems: self.problems(),
        }
    }

    /// A new object id (groups, volumes and copy nodes own bitmap pages
    /// by object id). Takes no lock: a copy family takes ids under its own.
    pub(crate) fn next_object(&self) -> u64 {
        self.ids.next_object.fetch_add(1, Ordering::Relaxed)
    }

    /// A new job id.
    pub(crate) fn next_job(&self) -> u64 {
        self.ids.next_job.fetch_add(1, Ordering::Relaxed)
    }

    /// A new running job of `kind` (`total` units of `unit` bytes, `rate`
    /// bytes/s, 0: unlimited), stored with the pool's counters.
    pub(crate) fn store_new_job(
        &self,
        kind: crate::meta::model::JobKind,
        total: u64,
        unit: u64,
        rate: u64,
    ) -> Result<crate::meta::model::JobRecord> {
        let job = crate::meta::model::JobRecord {
            id: self.next_job(),
            kind,
            state: crate::api::views::JobState::Running,
            done: 0,
            total,
            unit_bytes: unit,
            rate_limit: rate,
            rate_floor: 0,
            message: None,
            created: crate::meta::model::now(),
            updated: crate::meta::model::now(),
        };
        let pool_rec = self.pool_record();
        self.meta.write(true, |tx| {
            tx.put_pool(&pool_rec)?;
            tx.put_job(&job)
        })?;
        Ok(job)
    }

    /// The pool record with the counters as they stand: a transaction that
    /// records a new id puts this record, taken after the id (and
    /// `put_pool` never lowers a stored counter).
    pub(crate) fn pool_record(&self) -> PoolRecord {
        PoolRecord {
            next_object: self.ids.next_object.load(Ordering::Relaxed),
            next_job: self.ids.next_job.load(Ordering::Relaxed),
            ..self.ids.rec.clone()
        }
    }

    /// The embedded default of a new pool: 4 sparse 1 GiB disks, a RAID-5
    /// group `g0` and a 2 GiB volume `vol0`.
    pub fn provision_default(&self) -> Result<()> {
        let names = ["d0", "d1", "d2", "d3"];
        for n in names {
            self.disk_add(DiskAddRequest {
                name: n.into(),
                size: Some(1 << 30),
                path: None,
                spare: false,
                force: false,
            })?;
        }
        self.group_create(GroupCreateRequest {
            name: "g0".into(),
            raid: RaidLevelName::Raid5,
            disks: names.iter().map(|s| s.to_string()).collect(),
            stripe_size: None,
        })?;
        self.volume_create(VolumeCreateRequest {
            name: "vol0".into(),
            group: "g0".into(),
            size: 2 << 30,
            track_size: None,
            read_only: false,
        })?;
        Ok(())
    }

    /// Periodic work: clearing idle write-intent regions.
    fn start_background(&self) {
        let me = self.me.clone();
        let every = self.opts.intent_clear_interval;
        self.workers.spawn_on(0, move || async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = me.upgrade() else { return };
                // A group that is not whole keeps its marks: they say what
                // a member that is out has missed (`disk reinstate`).
                let logs: Vec<(Arc<RaidDev>, Arc<PersistentIntent>)> = {
                    let st = pool.lock();
                    st.groups
                        .values()
                        .filter(|g| g.raid.health() == Health::Optimal)
                        .filter_map(|g| {
                            g.intent
                                .as_ref()
                                .map(|i| (Arc::clone(&g.raid), Arc::clone(i)))
                        })
                        .collect()
                };
                pool.settle_copy_space().await;
                pool.reclaim_copy_space();
                pool.start_due_collections();
                pool.clear_pair_intents().await;
                pool.clear_svol_intents().await;
                drop(pool);
                for (raid, log) in logs {
                    if let Err(e) = log.clear_idle(raid.flush()).await {
                        tracing::warn!("clearing write-intent marks failed: {}", e.chain());
                    }
                }
            }
        });
    }

    /// A clean stop, once no request is in flight: flushes every group,
    /// then clears the write-intent marks of every whole group, so the
    /// next start has nothing to resync. A group that is not whole keeps
    /// its marks (they say what a member that is out has missed).
    pub async fn flush_all(&self) -> Result<()> {
        let groups: Vec<(String, Arc<RaidDev>, Option<Arc<PersistentIntent>>)> = self
            .lock()
            .groups
            .values()
            .map(|g| (g.rec.name.clone(), Arc::clone(&g.raid), g.intent.clone()))
            .collect();
        // Pairs first: clearing their marks flushes both their volumes.
        let mut first = self.clear_svol_intents_at_stop().await.err();
        if let Err(e) = self.clear_pair_intents_at_stop().await {
            first.get_or_insert(e);
        }
        for (name, raid, log) in groups {
            let Some(log) = log.filter(|_| raid.health() == Health::Optimal) else {
                if let Err(e) = raid.flush().await {
                    first.get_or_insert(e);
                }
                continue;
            };
            match log.clear_quiesced(raid.flush()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!("group {name}: {n} write-intent regions cleared at stop"),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}
