//! Mirror pairs, the engine's service (seed 002, FIG. 3A/3B; table T2:
//! "primary vol#, secondary vol#, pairing status, differential bitmap").
//!
//! ```text
//!   Pairs (own lock, a leaf) ── by S-VOL name: PairRecord + running Pair
//!   pair create:  gates of P and S closed ─> nodes over both volumes,
//!                 bits of P's written tracks ─> record (COPY) ─> gates open
//!                 ─> copy job (PAIR when done)
//!   pair split:   gates closed (every pair of a consistency group first)
//!                 ─> both sides flushed ─> SPLIT recorded ─> gates open
//!   pair resync / restore: SPLIT ─> RESYNC / RESTORE + copy job ─> PAIR
//!   pair delete:  job cancelled ─> nodes removed ─> record and bitmap gone
//! ```
//!
//! Commands run on the pool's commit path, one at a time; a copy job's end
//! changes its pair's status outside it (a command never waits for a job
//! that waits for the commit path). The service's lock is a leaf: nothing
//! else is taken while it is held, and it is never held across an await or
//! a durable commit. The data path (`crate::pair`) does not take it.
//!
//! A paired volume is not in a copy family and is not deleted or grown:
//! those commands refuse and say to delete the pair first. A P-VOL may
//! have several S-VOLs (one pair each, their nodes stacked over it); an
//! S-VOL is in one pair and is not itself a P-VOL. While one pair of a
//! P-VOL restores, the others stay split (their bitmaps get the restored
//! tracks), because the restore rewrites the P-VOL below their nodes.

#![forbid(unsafe_code)]

mod create;
mod job;
mod load;
mod oneway;
mod ops;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::views::PairInfo;
use crate::blockdev::ChangeMap;
use crate::error::{Error, Result};
use crate::meta::diffmap::DiffMap;
use crate::meta::intent::PersistentIntent;
use crate::meta::model::{PairRecord, PairStatus};
use crate::pair::{Pair, Side};
use crate::stack::switch::Switch;

use super::Pool;

/// Width of `pair list`'s bitmap picture, in characters.
const PICTURE: usize = 64;
/// Smallest region of a pair's write-intent log.
const MIN_INTENT_REGION: u64 = 1 << 20;

/// One pair as it runs.
pub(crate) struct PairEntry {
    rec: PairRecord,
    pair: Arc<Pair>,
    intent: Arc<PersistentIntent>,
    /// The copy job running for it.
    job: Option<u64>,
}

/// The pairs of the pool, by S-VOL name.
#[derive(Default)]
pub(crate) struct Pairs {
    st: parking_lot::Mutex<BTreeMap<String, PairEntry>>,
}

impl Pairs {
    /// The pair a volume is in, as (P-VOL, S-VOL), if any.
    pub(crate) fn of_volume(&self, name: &str) -> Option<(String, String)> {
        self.st
            .lock()
            .values()
            .find(|e| e.rec.pvol == name || e.rec.svol == name)
            .map(|e| (e.rec.pvol.clone(), e.rec.svol.clone()))
    }

    /// Why `what` cannot be done to volume `name` while it is paired.
    pub(crate) fn refuse_paired(&self, name: &str, what: &str) -> Result<()> {
        match self.of_volume(name) {
            Some((p, s)) => Err(Error::conflict(format!(
                "volume {name} is in pair {p} -> {s}: it cannot be {what} while paired; delete the pair first (`ferrosan pair delete {p} {s}`)"
            ))),
            None => Ok(()),
        }
    }

    /// Why `pvol` cannot be the P-VOL of one more pair: it is an S-VOL
    /// (pairs do not cascade), or one of its pairs is restoring.
    fn refuse_pvol(&self, pvol: &str) -> Result<()> {
        let st = self.st.lock();
        if let Some(e) = st.get(pvol) {
            return Err(Error::conflict(format!(
                "volume {pvol} is the S-VOL of pair {} -> {pvol}: an S-VOL cannot be a P-VOL too; delete that pair first (`ferrosan pair delete {} {pvol}`)",
                e.rec.pvol, e.rec.pvol
            )));
        }
        if let Some(e) = st
            .values()
            .find(|e| e.rec.pvol == pvol && e.pair.status() == PairStatus::Restore)
        {
            return Err(Error::conflict(format!(
                "pair {pvol} -> {} is restoring {pvol}: pair it again once the restore is done (`ferrosan pair show {}`)",
                e.rec.svol, e.rec.svol
            )));
        }
        Ok(())
    }

    fn view(e: &PairEntry) -> PairInfo {
        let diff = e.pair.diff();
        let (set, tracks) = (diff.count(), diff.tracks());
        PairInfo {
            pvol: e.rec.pvol.clone(),
            svol: e.rec.svol.clone(),
            status: e.pair.status(),
            group: e.rec.group.clone(),
            track_size: e.rec.track,
            tracks,
            tracks_set: set,
            share_set: if tracks == 0 {
                0.0
            } else {
                set as f64 / tracks as f64
            },
            bitmap: diff.picture(PICTURE),
            job: e.job,
            svol_errors: e.pair.s_errors(),
            created: e.rec.created,
            split_at: e.rec.split_at,
        }
    }

    fn list(&self) -> Vec<PairInfo> {
        let st = self.st.lock();
        let mut v: Vec<PairInfo> = st.values().map(Pairs::view).collect();
        v.sort_by(|a, b| (&a.pvol, &a.svol).cmp(&(&b.pvol, &b.svol)));
        v
    }

    /// The pair whose S-VOL is `svol`, checked against `pvol` when given.
    fn get(&self, pvol: Option<&str>, svol: &str) -> Result<PairInfo> {
        self.with_checked(pvol, svol, |e| Pairs::view(e))
    }

    /// Runs `f` on the pair whose S-VOL is `svol`.
    fn with<T>(&self, svol: &str, f: impl FnOnce(&mut PairEntry) -> T) -> Result<T> {
        self.with_checked(None, svol, f)
    }

    /// [`Pairs::with`], the pair's P-VOL checked against `pvol` if given.
    fn with_checked<T>(
        &self,
        pvol: Option<&str>,
        svol: &str,
        f: impl FnOnce(&mut PairEntry) -> T,
    ) -> Result<T> {
        let mut st = self.st.lock();
        let e = st
            .get_mut(svol)
            .filter(|e| pvol.is_none_or(|p| p == e.rec.pvol))
            .ok_or_else(|| unknown(pvol, svol))?;
        Ok(f(e))
    }

    /// The other pairs of P-VOL `pvol` than the one of `svol`: S-VOL,
    /// status and job.
    fn siblings(&self, pvol: &str, svol: &str) -> Vec<(String, PairStatus, Option<u64>)> {
        self.st
            .lock()
            .values()
            .filter(|e| e.rec.pvol == pvol && e.rec.svol != svol)
            .map(|e| (e.rec.svol.clone(), e.pair.status(), e.job))
            .collect()
    }

    /// The bitmaps of the other pairs of P-VOL `pvol` than `svol`'s.
    fn sibling_maps(&self, pvol: &str, svol: &str) -> Vec<Arc<DiffMap>> {
        self.st
            .lock()
            .values()
            .filter(|e| e.rec.pvol == pvol && e.rec.svol != svol)
            .map(|e| Arc::clone(e.pair.diff()))
            .collect()
    }

    /// The S-VOLs of the pairs of consistency group `group`.
    fn in_group(&self, group: &str) -> Vec<String> {
        self.st
            .lock()
            .values()
            .filter(|e| e.rec.group.as_deref() == Some(group))
            .map(|e| e.rec.svol.clone())
            .collect()
    }

    /// Every pair's write-intent log with a flush of both its sides.
    fn logs(&self) -> Vec<(Arc<Pair>, Arc<PersistentIntent>)> {
        self.st
            .lock()
            .values()
            .map(|e| (Arc::clone(&e.pair), Arc::clone(&e.intent)))
            .collect()
    }
}

fn unknown(pvol: Option<&str>, svol: &str) -> Error {
    let what = match pvol {
        Some(p) => format!("no pair {p} -> {svol}"),
        None => format!("no pair with S-VOL {svol}"),
    };
    Error::not_found(format!("{what}: see `ferrosan pair list`"))
}

/// Flushes both sides of a pair: every completed write durable on both
/// (what a split, a delete and the write-intent log's clearing need).
async fn flush_both(pair: Arc<Pair>) -> Result<()> {
    let (p, s) = (pair.side(Side::P), pair.side(Side::S));
    let (p, s) = futures::join!(p.flush(), s.flush());
    p.and(s)
}

impl Pool {
    pub fn pair_list(&self) -> Vec<PairInfo> {
        self.pairs.list()
    }

    pub fn pair_get(&self, pvol: Option<&str>, svol: &str) -> Result<PairInfo> {
        self.pairs.get(pvol, svol)
    }

    /// The differential bitmaps of the pairs `volume` is in, each named
    /// by the other volume of its pair: what the volume's NBD export
    /// offers as `qemu:dirty-bitmap:NAME` (tracks written on either side
    /// since the split, or not yet copied).
    pub fn pair_bitmaps(&self, volume: &str) -> Vec<(String, Arc<dyn ChangeMap>)> {
        self.pairs
            .st
            .lock()
            .values()
            .filter_map(|e| {
                let other = if e.rec.pvol == volume {
                    &e.rec.svol
                } else if e.rec.svol == volume {
                    &e.rec.pvol
                } else {
                    return None;
                };
                let map: Arc<dyn ChangeMap> = Arc::clone(e.pair.diff()) as Arc<DiffMap>;
                Some((other.clone(), map))
            })
            .collect()
    }

    /// The switches of two volumes, P then S.
    fn pair_switches(&self, pvol: &str, svol: &str) -> Result<(Arc<Switch>, Arc<Switch>)> {
        let st = self.lock();
        let sw = |n: &str| {
            st.volumes
                .get(n)
                .map(|v| Arc::clone(&v.dev))
                .ok_or_else(|| Error::not_found(format!("volume {n} of the pair is not available")))
        };
        Ok((sw(pvol)?, sw(svol)?))
    }

    /// Clears idle write-intent regions of every pair (the periodic pass).
    pub(super) async fn clear_pair_intents(&self) {
        for (pair, log) in self.pairs.logs() {
            if let Err(e) = log
                .clear_idle(Box::pin(flush_both(Arc::clone(&pair))))
                .await
            {
                tracing::warn!("clearing a pair's write-intent marks failed: {}", e.chain());
            }
        }
    }

    /// At a clean stop: every pair's marks cleared once both sides are
    /// flushed, so the next start resyncs nothing.
    pub(super) async fn clear_pair_intents_at_stop(&self) -> Result<()> {
        let mut first = None;
        for (pair, log) in self.pairs.logs() {
            if let Err(e) = log
                .clear_quiesced(Box::pin(flush_both(Arc::clone(&pair))))
                .await
            {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// The status a record stores for a pair.
fn stored(rec: &PairRecord, status: PairStatus) -> PairRecord {
    let mut r = rec.clone();
    r.status = status;
    r
}
