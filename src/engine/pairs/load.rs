//! Opening a pool's pairs: each pair's nodes go back over its volumes in
//! its recorded status; regions its write-intent log had marked at a crash
//! (written to one side and perhaps not the other) become set bits, and a
//! pair found in PAIR with such bits resyncs them.

use std::sync::Arc;

use super::{MIN_INTENT_REGION, PairEntry};
use crate::engine::Pool;
use crate::error::Result;
use crate::meta::diffmap::DiffMap;
use crate::meta::intent::{IntentHandle, PersistentIntent};
use crate::meta::model::{PairRecord, PairStatus};
use crate::pair::{Pair, Side};

impl Pool {
    /// Assembles every recorded pair. A pair that cannot be assembled
    /// stops both its volumes from being served (served unpaired, a write
    /// to either would go unrecorded) and is reported as a problem.
    pub(in crate::engine) fn load_pairs(&self) -> Result<()> {
        let mut recs = self.meta.pairs()?;
        // Oldest first: several pairs of one P-VOL stack their nodes in
        // the order they were made (any order is correct; this one is
        // the order they ran in before).
        recs.sort_by(|a, b| (a.created, &a.svol).cmp(&(b.created, &b.svol)));
        for rec in recs {
            if let Err(e) = self.load_pair(&rec) {
                self.problem(format!(
                    "pair {} -> {} cannot be assembled: {}; neither volume is served",
                    rec.pvol,
                    rec.svol,
                    e.chain()
                ));
                let st = self.lock();
                for v in [&rec.pvol, &rec.svol] {
                    if let Some(v) = st.volumes.get(v) {
                        v.dev.revoke();
                    }
                }
            }
        }
        Ok(())
    }

    fn load_pair(&self, rec: &PairRecord) -> Result<()> {
        let (psw, ssw) = self.pair_switches(&rec.pvol, &rec.svol)?;
        let (p_dev, s_dev) = (psw.current(), ssw.current());
        let tracks = p_dev.size().div_ceil(rec.track.max(1));
        let diff = DiffMap::open(Arc::clone(&self.meta), rec.object, rec.track, tracks)?;
        let (intent, marked) = PersistentIntent::load(
            Arc::clone(&self.meta),
            rec.intent,
            rec.track.max(MIN_INTENT_REGION),
        )?;
        let mut rec = rec.clone();
        if !marked.is_empty() {
            let bytes: u64 = marked.iter().map(|r| r.1).sum();
            tracing::warn!(
                "pair {} -> {}: {} regions ({}) were being written to both sides at the last stop; their tracks are marked for resync",
                rec.pvol,
                rec.svol,
                marked.len(),
                crate::units::format_size(bytes)
            );
            for &(off, len) in &marked {
                if let Some(w) = diff.mark(off, len.min(p_dev.size().saturating_sub(off))) {
                    futures::executor::block_on(w)?;
                }
                intent.release(off, len);
            }
            if rec.status == PairStatus::Pair {
                rec.status = PairStatus::Resync;
                let saved = rec.clone();
                self.meta.write(true, |tx| tx.put_pair(&saved))?;
            }
        }
        let pair = Pair::new(
            p_dev,
            s_dev,
            diff,
            Arc::new(IntentHandle(Arc::clone(&intent))),
            rec.status,
        )?;
        psw.set(pair.node(Side::P));
        ssw.set(pair.node(Side::S));
        self.pairs.st.lock().insert(
            rec.svol.clone(),
            PairEntry {
                rec,
                pair,
                intent,
                job: None,
            },
        );
        Ok(())
    }

    /// Whether pair copy job `job` of `svol` resumes: its pair is there,
    /// copying, with no other job.
    pub(in crate::engine) fn pair_job_resumes(&self, svol: &str) -> bool {
        self.pairs
            .with(svol, |e| e.pair.status().copying() && e.job.is_none())
            .unwrap_or(false)
    }

    /// Starts the copy of every pair that is copying with no job (its
    /// status changed at this start, or its job record was lost).
    pub(in crate::engine) fn start_idle_pair_copies(&self) -> Result<()> {
        let idle: Vec<String> = self
            .pairs
            .st
            .lock()
            .values()
            .filter(|e| e.pair.status().copying() && e.job.is_none())
            .map(|e| e.rec.svol.clone())
            .collect();
        for svol in idle {
            self.start_pair_copy(&svol, 0)?;
        }
        Ok(())
    }
}
