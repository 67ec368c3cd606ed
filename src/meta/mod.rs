//! meta: the pool database — one redb file per pool.
//!
//! ```text
//!   table      key              value
//!   pool       "format"         u32 format version (refuse newer)
//!              "pool"           PoolRecord (JSON)
//!   disks      name             DiskRecord
//!   groups     name             GroupRecord      (seed 002 table T1)
//!   volumes    name             VolumeRecord
//!   jobs       id               JobRecord        (state + checkpoint)
//!   families   object           copy FamilyRecord: copy tree, images
//!   pages      (object, page)   PAGE_BYTES of a per-track/per-region bitmap
//!                               or of a copy node's track map
//!   copy_chunks (family, first slot)  (group offset, slots): the store's
//!                               chunks of new space
//!   copy_areas  (node, first slot)    slots: the areas a load-point map
//!                               reserved (load points)
//!   copy_heads (family, first slot)   bytes of the chunk's label before
//!                               its first slot (none: an unlabelled chunk)
//!   copy_unfreed (family, slot) ()    slots freed whose labels do not say
//!                               so yet (the next commit writes them)
//!   sparing    "policy"         SparingPolicy (seed 002: when a disk fails)
//!              "disk/<name>"    SparingRecord: a sparing under way
//! ```
//!
//! A copy family's chunks and areas have rows of their own, not fields of
//! its record: a save stores the rows that changed since the last one, so
//! what a metadata commit writes does not grow with the number of copies
//! or with the new space they took (format 1 kept both in the record, and
//! a family of 64 copies rewrote a record of about a megabyte at every
//! commit; format 1 records are read and moved to the rows at the next
//! save).
//!
//! Configuration changes commit durably (`Durability::Immediate`) before the
//! API answers. Per-track and per-region bitmaps live in memory and are
//! stored as fixed-size pages keyed by (object, page); the write-intent log
//! ([`intent`]) commits its pages in groups.

#![forbid(unsafe_code)]

pub mod bits;
pub mod diffmap;
pub mod intent;
pub mod model;
mod pairs;
pub mod slotmap;
mod sparing;
pub use sparing::SparingTable;
mod reshape;
mod svol;

use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind, Result};
use model::*;

/// Bytes per bitmap page.
pub const PAGE_BYTES: usize = 4096;
/// Bits per bitmap page.
pub const PAGE_BITS: u64 = (PAGE_BYTES as u64) * 8;

const POOL: TableDefinition<&str, &[u8]> = TableDefinition::new("pool");
const DISKS: TableDefinition<&str, &[u8]> = TableDefinition::new("disks");
const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");
const VOLUMES: TableDefinition<&str, &[u8]> = TableDefinition::new("volumes");
const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
const PAGES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("pages");
const FAMILIES: TableDefinition<u64, &[u8]> = TableDefinition::new("families");
const COPY_CHUNKS: TableDefinition<(u64, u64), (u64, u64)> = TableDefinition::new("copy_chunks");
const COPY_AREAS: TableDefinition<(u64, u64), u64> = TableDefinition::new("copy_areas");
const COPY_HEADS: TableDefinition<(u64, u64), u64> = TableDefinition::new("copy_heads");
const COPY_UNFREED: TableDefinition<(u64, u64), ()> = TableDefinition::new("copy_unfreed");

fn db_err(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(ErrorKind::Io, format!("pool database: {what} failed"), e)
}

/// A storage error of a write: a full filesystem is `NoSpace` and says
/// where room is needed.
fn storage_err(path: &Path, what: &str, e: redb::StorageError) -> Error {
    if let redb::StorageError::Io(io) = &e
        && io.raw_os_error() == Some(28)
    {
        return Error::with_source(
            ErrorKind::NoSpace,
            format!(
                "pool database: {what} failed: the filesystem of {} is full; free space there",
                path.display()
            ),
            e,
        );
    }
    db_err(what, e)
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v)
        .map_err(|e| Error::with_source(ErrorKind::Invalid, "encoding a record failed", e))
}

fn decode<T: DeserializeOwned>(what: &str, key: &str, b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| {
        Error::with_source(
            ErrorKind::Corrupt,
            format!("pool database: the {what} record {key:?} cannot be read"),
            e,
        )
    })
}

/// Everything the pool database holds, loaded at start.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub pool: PoolRecord,
    pub disks: Vec<DiskRecord>,
    pub groups: Vec<GroupRecord>,
    pub volumes: Vec<VolumeRecord>,
    pub jobs: Vec<JobRecord>,
    pub families: Vec<crate::meta::model::copy::FamilyRecord>,
}

/// The open pool database.
pub struct Meta {
    /// The redb database; `None` while it could not be opened again after
    /// a failed write (see [`Meta::write`]). Transactions hold the read
    /// side; reopening takes the write side.
    db: parking_lot::RwLock<Option<Database>>,
    path: PathBuf,
    /// Test hook: every durable commit takes this much longer (set by
    /// [`COMMIT_DELAY_ENV`]), so tests can show who waits for commits.
    commit_delay: Option<std::time::Duration>,
}

/// Environment variable of the test hook that slows every durable commit
/// down by this many milliseconds (the stall test sets it; nothing else
/// should).
pub const COMMIT_DELAY_ENV: &str = "FERROSAN_TEST_COMMIT_DELAY_MS";

impl Meta {
    /// Test hook: every durable commit of this database takes `d` longer.
    #[cfg(test)]
    pub(crate) fn slow_commits(&mut self, d: std::time::Duration) {
        self.commit_delay = Some(d);
    }
}

fn commit_delay_from_env() -> Option<std::time::Duration> {
    let ms: u64 = std::env::var(COMMIT_DELAY_ENV).ok()?.parse().ok()?;
    tracing::warn!("test hook {COMMIT_DELAY_ENV}: every durable commit sleeps {ms} ms");
    Some(std::time::Duration::from_millis(ms))
}

impl Meta {
    /// Opens the database at `path`, creating it (with a new pool record)
    /// when absent. Refuses a database written by a newer format.
    pub fn open(path: &Path) -> Result<(Meta, bool)> {
        let existed = path.exists();
        let db = if existed {
            Database::open(path)
        } else {
            Database::create(path)
        }
        .map_err(|e| db_err(&format!("opening {}", path.display()), e))?;
        let meta = Meta {
            db: parking_lot::RwLock::new(Some(db)),
            path: path.to_path_buf(),
            commit_delay: commit_delay_from_env(),
        };
        let created = meta.init()?;
        Ok((meta, created))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks the format; writes the pool record if there is none.
    fn init(&self) -> Result<bool> {
        let db = self.db()?;
        let txn = db.begin_write().map_err(|e| db_err("a transaction", e))?;
        let created;
        {
            let mut t = txn
                .open_table(POOL)
                .map_err(|e| db_err("opening a table", e))?;
            let format = match t.get("format").map_err(|e| db_err("a read", e))? {
                Some(v) => {
                    let b = v.value();
                    let mut a = [0u8; 4];
                    if b.len() != 4 {
                        return Err(Error::corrupt(
                            "pool database: the format record is damaged",
                        ));
                    }
                    a.copy_from_slice(b);
                    Some(u32::from_le_bytes(a))
                }
                None => None,
            };
            match format {
                Some(v) if v > FORMAT_VERSION => {
                    return Err(Error::corrupt(format!(
                        "pool database {} was written by a newer ferrosan (format {v}; this one reads up to {FORMAT_VERSION}): upgrade ferrosan",
                        self.path.display()
                    )));
                }
                Some(v) => {
                    // An older format is read as it is; from now on it is
                    // written in this one, which the older ferrosan must
                    // not open.
                    if v < FORMAT_VERSION {
                        t.insert("format", FORMAT_VERSION.to_le_bytes().as_slice())
                            .map_err(|e| db_err("a write", e))?;
                    }
                    created = false;
                }
                None => {
                    t.insert("format", FORMAT_VERSION.to_le_bytes().as_slice())
                        .map_err(|e| db_err("a write", e))?;
                    let rec = PoolRecord {
                        id: uuid::Uuid::new_v4(),
                        created: now(),
                        next_object: 1,
                        next_job: 1,
                    };
                    t.insert("pool", encode(&rec)?.as_slice())
                        .map_err(|e| db_err("a write", e))?;
                    created = true;
                }
            }
            // Make sure every table exists, so readers never miss one.
            txn.open_table(DISKS)
                .map_err(|e| db_err("opening a table", e))?;
            txn.open_table(GROUPS)
                .map_err(|e| db_err("opening a table", e))?;
            txn.open_table(VOLUMES)
                .map_err(|e| db_err("opening a table", e))?;
            txn.open_table(JOBS)
                .map_err(|e| db_err("opening a table", e))?;
            txn.open_table(PAGES)
                .map_err(|e| db_err("opening a table", e))?;
            txn.open_table(FAMILIES)
                .map_err(|e| db_err("opening a table", e))?;
            txn.open_table(COPY_CHUNKS)
                .map_err(|e| db_err("opening a table", e))?;
            txn.open_table(COPY_AREAS)
                .map_err(|e| db_err("opening a table", e))?;
            txn.open_table(COPY_HEADS)
                .map_err(|e| db_err("opening a table", e))?;
            txn.open_table(COPY_UNFREED)
                .map_err(|e| db_err("opening a table", e))?;
            txn.open_table(pairs::PAIRS)
                .map_err(|e| db_err("opening a table", e))?;
            txn.open_table(svol::SVOL_GROUPS)
                .map_err(|e| db_err("opening a table", e))?;
            txn.open_table(sparing::SPARING)
                .map_err(|e| db_err("opening a table", e))?;
            txn.open_table(reshape::RESHAPES)
                .map_err(|e| db_err("opening a table", e))?;
        }
        txn.commit().map_err(|e| db_err("a commit", e))?;
        Ok(created)
    }

    /// Loads every record.
    pub fn load(&self) -> Result<Snapshot> {
        let db = self.db()?;
        let txn = db
            .begin_read()
            .map_err(|e| db_err("a read transaction", e))?;
        let pool_t = txn
            .open_table(POOL)
            .map_err(|e| db_err("opening a table", e))?;
        let pool: PoolRecord = match pool_t.get("pool").map_err(|e| db_err("a read", e))? {
            Some(v) => decode("pool", "pool", v.value())?,
            None => return Err(Error::corrupt("pool database: the pool record is missing")),
        };
        fn all<T: DeserializeOwned>(
            txn: &redb::ReadTransaction,
            def: TableDefinition<&str, &[u8]>,
            what: &str,
        ) -> Result<Vec<T>> {
            let t = txn
                .open_table(def)
                .map_err(|e| db_err("opening a table", e))?;
            let mut out = Vec::new();
            for item in t.iter().map_err(|e| db_err("a scan", e))? {
                let (k, v) = item.map_err(|e| db_err("a scan", e))?;
                out.push(decode(what, k.value(), v.value())?);
            }
            Ok(out)
        }
        let disks = all(&txn, DISKS, "disk")?;
        let groups = all(&txn, GROUPS, "group")?;
        let volumes = all(&txn, VOLUMES, "volume")?;
        let mut jobs = Vec::new();
        let t = txn
            .open_table(JOBS)
            .map_err(|e| db_err("opening a table", e))?;
        for item in t.iter().map_err(|e| db_err("a scan", e))? {
            let (k, v) = item.map_err(|e| db_err("a scan", e))?;
            jobs.push(decode("job", &k.value().to_string(), v.value())?);
        }
        let mut families = Vec::new();
        let t = txn
            .open_table(FAMILIES)
            .map_err(|e| db_err("opening a table", e))?;
        for item in t.iter().map_err(|e| db_err("a scan", e))? {
            let (k, v) = item.map_err(|e| db_err("a scan", e))?;
            families.push(decode("copy family", &k.value().to_string(), v.value())?);
        }
        Ok(Snapshot {
            pool,
            disks,
            groups,
            volumes,
            jobs,
            families,
        })
    }

    /// Runs `f` in one write transaction and commits it; durably unless
    /// `durable` is false (then it becomes durable with the next durable
    /// commit, or is lost in a crash).
    ///
    /// A write that fails on the file (its filesystem full, an I/O error)
    /// leaves redb refusing every later transaction until it is closed and
    /// opened again; so the database is reopened at once (redb goes back to
    /// its last commit, as after a crash), and again at the next
    /// transaction while that fails. What is lost is what a crash would
    /// lose: the non-durable commits since the last durable one (job
    /// progress only; see `jobs`).
    pub fn write<T>(&self, durable: bool, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        let out = self.write_once(durable, f);
        if out.is_err()
            && self.broken()
            && let Err(e) = self.reopen()
        {
            tracing::error!("{}", e.chain());
        }
        out
    }

    fn write_once<T>(&self, durable: bool, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        crate::lockorder::assert_none_held("a commit of the pool database");
        let db = self.db()?;
        let mut txn = db.begin_write().map_err(|e| match e {
            redb::TransactionError::Storage(e) => storage_err(&self.path, "a transaction", e),
            e => db_err("a transaction", e),
        })?;
        if !durable {
            txn.set_durability(Durability::None)
                .map_err(|e| db_err("setting durability", e))?;
        }
        let out = {
            let mut tx = Tx { txn: &txn };
            f(&mut tx)?
        };
        if let (true, Some(d)) = (durable, self.commit_delay) {
            std::thread::sleep(d);
        }
        txn.commit().map_err(|e| match e {
            redb::CommitError::Storage(e) => storage_err(&self.path, "a commit", e),
            e => db_err("a commit", e),
        })?;
        Ok(out)
    }

    /// The open database, opened again first if a failed write closed it.
    fn db(&self) -> Result<parking_lot::MappedRwLockReadGuard<'_, Database>> {
        let open = || parking_lot::RwLockReadGuard::try_map(self.db.read(), Option::as_ref);
        if let Ok(g) = open() {
            return Ok(g);
        }
        self.reopen()?;
        open().map_err(|_| {
            Error::new(
                ErrorKind::Unavailable,
                format!(
                    "pool database {}: closed after a failed write and not open again",
                    self.path.display()
                ),
            )
        })
    }

    /// Whether redb refuses transactions after a failed write.
    fn broken(&self) -> bool {
        let g = self.db.read();
        let Some(db) = g.as_ref() else {
            return true;
        };
        matches!(
            db.begin_write(),
            Err(redb::TransactionError::Storage(
                redb::StorageError::PreviousIo | redb::StorageError::Io(_)
            ))
        )
    }

    /// Closes the database and opens it again (redb repairs it to its last
    /// commit). Waits for the transactions under way to end.
    fn reopen(&self) -> Result<()> {
        let mut g = self.db.write();
        if g.is_some() {
            drop(g.take());
            tracing::warn!(
                "pool database {}: a write failed; closing and opening it again",
                self.path.display()
            );
        }
        let db = Database::open(&self.path)
            .map_err(|e| db_err(&format!("opening {} again", self.path.display()), e))?;
        *g = Some(db);
        tracing::info!("pool database {}: open again", self.path.display());
        Ok(())
    }

    /// Reads the rows of `object` in a table keyed by (object, n), as
    /// `f(n, value)` in ascending n.
    fn rows<V: redb::Value + 'static, T>(
        &self,
        def: TableDefinition<(u64, u64), V>,
        object: u64,
        f: impl Fn(u64, V::SelfType<'_>) -> T,
    ) -> Result<Vec<T>> {
        let db = self.db()?;
        let txn = db
            .begin_read()
            .map_err(|e| db_err("a read transaction", e))?;
        let t = txn
            .open_table(def)
            .map_err(|e| db_err("opening a table", e))?;
        let mut out = Vec::new();
        for item in t
            .range((object, 0)..=(object, u64::MAX))
            .map_err(|e| db_err("a scan", e))?
        {
            let (k, v) = item.map_err(|e| db_err("a scan", e))?;
            out.push(f(k.value().1, v.value()));
        }
        Ok(out)
    }

    /// Reads the pages of `object`, as (page number, bytes).
    pub fn pages(&self, object: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        self.rows(PAGES, object, |page, b| (page, b.to_vec()))
    }

    /// Reads the store chunks of copy family `object`, by first slot.
    pub fn copy_chunks(&self, object: u64) -> Result<Vec<crate::meta::model::copy::Chunk>> {
        let heads: std::collections::BTreeMap<u64, u64> = self
            .rows(COPY_HEADS, object, |first, head| (first, head))?
            .into_iter()
            .collect();
        self.rows(COPY_CHUNKS, object, |first_slot, (group_off, slots)| {
            crate::meta::model::copy::Chunk {
                first_slot,
                group_off,
                slots,
                head: heads.get(&first_slot).copied().unwrap_or(0),
            }
        })
    }

    /// Slots of copy family `object` freed whose labels do not say so yet.
    pub fn copy_unfreed(&self, object: u64) -> Result<Vec<u64>> {
        self.rows(COPY_UNFREED, object, |slot, ()| slot)
    }

    /// Reads the areas copy node `node` reserved, as (first slot, slots).
    pub fn copy_areas(&self, node: u64) -> Result<Vec<(u64, u64)>> {
        self.rows(COPY_AREAS, node, |first, n| (first, n))
    }
}

/// A write transaction in progress.
pub struct Tx<'a> {
    txn: &'a redb::WriteTransaction,
}

impl Tx<'_> {
    fn put(
        &mut self,
        def: TableDefinition<&str, &[u8]>,
        key: &str,
        v: &impl Serialize,
    ) -> Result<()> {
        let bytes = encode(v)?;
        let mut t = self
            .txn
            .open_table(def)
            .map_err(|e| db_err("opening a table", e))?;
        t.insert(key, bytes.as_slice())
            .map_err(|e| db_err("a write", e))?;
        Ok(())
    }

    fn del(&mut self, def: TableDefinition<&str, &[u8]>, key: &str) -> Result<()> {
        let mut t = self
            .txn
            .open_table(def)
            .map_err(|e| db_err("opening a table", e))?;
        t.remove(key).map_err(|e| db_err("a delete", e))?;
        Ok(())
    }

    /// Stores the pool record. Its id counters never go down: records
    /// taken at different times may commit in either order, and a lower
    /// counter would hand out an id again after a restart.
    pub fn put_pool(&mut self, p: &PoolRecord) -> Result<()> {
        let stored: Option<PoolRecord> = {
            let t = self
                .txn
                .open_table(POOL)
                .map_err(|e| db_err("opening a table", e))?;
            let v = t.get("pool").map_err(|e| db_err("a read", e))?;
            match v {
                Some(v) => Some(decode("pool", "pool", v.value())?),
                None => None,
            }
        };
        let mut p = p.clone();
        if let Some(s) = stored {
            p.next_object = p.next_object.max(s.next_object);
            p.next_job = p.next_job.max(s.next_job);
        }
        self.put(POOL, "pool", &p)
    }
    pub fn put_disk(&mut self, d: &DiskRecord) -> Result<()> {
        self.put(DISKS, &d.name, d)
    }
    pub fn del_disk(&mut self, name: &str) -> Result<()> {
        self.del(DISKS, name)
    }
    pub fn put_group(&mut self, g: &GroupRecord) -> Result<()> {
        self.put(GROUPS, &g.name, g)
    }
    pub fn del_group(&mut self, name: &str) -> Result<()> {
        self.del(GROUPS, name)
    }
    pub fn put_volume(&mut self, v: &VolumeRecord) -> Result<()> {
        self.put(VOLUMES, &v.name, v)
    }
    pub fn del_volume(&mut self, name: &str) -> Result<()> {
        self.del(VOLUMES, name)
    }

    pub fn put_job(&mut self, j: &JobRecord) -> Result<()> {
        let bytes = encode(j)?;
        let mut t = self
            .txn
            .open_table(JOBS)
            .map_err(|e| db_err("opening a table", e))?;
        t.insert(j.id, bytes.as_slice())
            .map_err(|e| db_err("a write", e))?;
        Ok(())
    }

    pub fn del_job(&mut self, id: u64) -> Result<()> {
        let mut t = self
            .txn
            .open_table(JOBS)
            .map_err(|e| db_err("opening a table", e))?;
        t.remove(id).map_err(|e| db_err("a delete", e))?;
        Ok(())
    }

    pub fn put_family(&mut self, f: &crate::meta::model::copy::FamilyRecord) -> Result<()> {
        let bytes = encode(f)?;
        let mut t = self
            .txn
            .open_table(FAMILIES)
            .map_err(|e| db_err("opening a table", e))?;
        t.insert(f.object, bytes.as_slice())
            .map_err(|e| db_err("a write", e))?;
        Ok(())
    }

    /// Deletes copy family `object`'s record and its chunks (its nodes'
    /// pages and areas go with [`Tx::del_copy_node`]).
    pub fn del_family(&mut self, object: u64) -> Result<()> {
        let mut t = self
            .txn
            .open_table(FAMILIES)
            .map_err(|e| db_err("opening a table", e))?;
        t.remove(object).map_err(|e| db_err("a delete", e))?;
        let mut c = self
            .txn
            .open_table(COPY_CHUNKS)
            .map_err(|e| db_err("opening a table", e))?;
        c.retain_in((object, 0)..=(object, u64::MAX), |_, _| false)
            .map_err(|e| db_err("a delete", e))?;
        let mut h = self
            .txn
            .open_table(COPY_HEADS)
            .map_err(|e| db_err("opening a table", e))?;
        h.retain_in((object, 0)..=(object, u64::MAX), |_, _| false)
            .map_err(|e| db_err("a delete", e))?;
        let mut u = self
            .txn
            .open_table(COPY_UNFREED)
            .map_err(|e| db_err("opening a table", e))?;
        u.retain_in((object, 0)..=(object, u64::MAX), |_, _| false)
            .map_err(|e| db_err("a delete", e))?;
        Ok(())
    }

    /// Notes (`true`) or forgets (`false`) that slot `slot` of copy family
    /// `object` is free but not yet described so.
    pub fn put_copy_unfreed(&mut self, object: u64, slot: u64, on: bool) -> Result<()> {
        let mut t = self
            .txn
            .open_table(COPY_UNFREED)
            .map_err(|e| db_err("opening a table", e))?;
        if on {
            t.insert((object, slot), ())
                .map_err(|e| db_err("a write", e))?;
        } else {
            t.remove((object, slot))
                .map_err(|e| db_err("a delete", e))?;
        }
        Ok(())
    }

    /// Stores (`Some(chunk)`) or deletes (`None`) the chunk of copy family
    /// `object` starting at slot `first`.
    pub fn put_copy_chunk(
        &mut self,
        object: u64,
        first: u64,
        chunk: Option<&crate::meta::model::copy::Chunk>,
    ) -> Result<()> {
        let mut t = self
            .txn
            .open_table(COPY_CHUNKS)
            .map_err(|e| db_err("opening a table", e))?;
        let mut h = self
            .txn
            .open_table(COPY_HEADS)
            .map_err(|e| db_err("opening a table", e))?;
        match chunk {
            Some(c) => {
                t.insert((object, first), (c.group_off, c.slots))
                    .map_err(|e| db_err("a write", e))?;
                if c.head > 0 {
                    h.insert((object, first), c.head)
                        .map_err(|e| db_err("a write", e))?;
                } else {
                    h.remove((object, first))
                        .map_err(|e| db_err("a delete", e))?;
                }
                Ok(())
            }
            None => {
                t.remove((object, first))
                    .map_err(|e| db_err("a delete", e))?;
                h.remove((object, first))
                    .map_err(|e| db_err("a delete", e))?;
                Ok(())
            }
        }
    }

    /// Stores (`Some(slots)`) or deletes (`None`) the area of copy node
    /// `node` starting at slot `first`.
    pub fn put_copy_area(&mut self, node: u64, first: u64, slots: Option<u64>) -> Result<()> {
        let mut t = self
            .txn
            .open_table(COPY_AREAS)
            .map_err(|e| db_err("opening a table", e))?;
        match slots {
            Some(n) => t
                .insert((node, first), n)
                .map(|_| ())
                .map_err(|e| db_err("a write", e)),
            None => t
                .remove((node, first))
                .map(|_| ())
                .map_err(|e| db_err("a delete", e)),
        }
    }

    /// Deletes everything of copy node `node`: its map pages and areas.
    pub fn del_copy_node(&mut self, node: u64) -> Result<()> {
        self.del_pages(node)?;
        let mut t = self
            .txn
            .open_table(COPY_AREAS)
            .map_err(|e| db_err("opening a table", e))?;
        t.retain_in((node, 0)..=(node, u64::MAX), |_, _| false)
            .map_err(|e| db_err("a delete", e))?;
        Ok(())
    }

    /// Stores one page; an all-zero page is deleted instead.
    pub fn put_page(&mut self, object: u64, page: u64, bytes: &[u8]) -> Result<()> {
        let mut t = self
            .txn
            .open_table(PAGES)
            .map_err(|e| db_err("opening a table", e))?;
        if bytes.iter().all(|&b| b == 0) {
            t.remove((object, page))
                .map_err(|e| db_err("a delete", e))?;
        } else {
            t.insert((object, page), bytes)
                .map_err(|e| db_err("a write", e))?;
        }
        Ok(())
    }

    /// Deletes every page of `object`.
    pub fn del_pages(&mut self, object: u64) -> Result<()> {
        let mut t = self
            .txn
            .open_table(PAGES)
            .map_err(|e| db_err("opening a table", e))?;
        t.retain_in((object, 0)..=(object, u64::MAX), |_, _| false)
            .map_err(|e| db_err("a delete", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
