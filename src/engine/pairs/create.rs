//! `pair create` (seed 002, FIG. 3A: a pair formed, then the initial copy
//! that brings the S-VOL to DUPLEX): the S-VOL's data is replaced by the
//! P-VOL's while the P-VOL stays in use. Only the tracks either volume
//! has written are copied (a fresh P-VOL pairs in seconds, where DRBD
//! copies an empty volume in full).

use std::ops::Range;
use std::sync::Arc;

use super::{MIN_INTENT_REGION, PairEntry};
use crate::api::views::{PairCreateRequest, PairInfo};
use crate::blockdev::{BlockDev, status};
use crate::engine::{Pool, check_name};
use crate::error::{Error, Result};
use crate::meta::diffmap::DiffMap;
use crate::meta::intent::{IntentHandle, PersistentIntent};
use crate::meta::model::{PairRecord, PairStatus, now};
use crate::pair::{Pair, Side};

/// Bytes asked of `block_status` at a time.
const STATUS_SPAN: u64 = 1 << 30;

/// The tracks of `dev` (of `track` bytes) that hold data: every track an
/// extent not known to read as zeroes touches.
pub(super) async fn written_tracks(dev: &dyn BlockDev, track: u64) -> Result<Vec<Range<u64>>> {
    let size = dev.size();
    let mut out: Vec<Range<u64>> = Vec::new();
    let mut add = |off: u64, len: u64| {
        let tr = off / track..(off + len).div_ceil(track);
        match out.last_mut() {
            Some(last) if last.end >= tr.start => last.end = last.end.max(tr.end),
            _ => out.push(tr),
        }
    };
    let mut off = 0;
    while off < size {
        let ext = dev.block_status(off, (size - off).min(STATUS_SPAN)).await?;
        let n: u64 = ext.iter().map(|e| e.len).sum();
        if n == 0 {
            // Nothing said about the rest: data, which is always safe.
            add(off, size - off);
            break;
        }
        for e in ext {
            let len = e.len.min(size - off);
            if e.flags & status::ZERO == 0 {
                add(off, len);
            }
            off += len;
            if off >= size {
                break;
            }
        }
    }
    Ok(out)
}

fn count(ranges: &[Range<u64>]) -> u64 {
    ranges.iter().map(|r| r.end - r.start).sum()
}

impl Pool {
    /// Pairs two volumes and starts the initial copy.
    pub async fn pair_create(&self, req: PairCreateRequest) -> Result<PairInfo> {
        if let Some(g) = &req.group {
            check_name("consistency group", g)?;
        }
        let pool = self.arc()?;
        let svol = req.svol.clone();
        self.workers
            .run(move || async move { pool.pair_create_on_worker(req).await })
            .await??;
        self.pair_get(None, &svol)
    }

    /// Checks what the request names: two distinct volumes of one size,
    /// neither paired nor in a copy family. Returns the track size.
    fn pair_check(&self, req: &PairCreateRequest) -> Result<u64> {
        if req.pvol == req.svol {
            return Err(Error::invalid(format!(
                "a pair needs two volumes: {} was named as both P-VOL and S-VOL",
                req.pvol
            )));
        }
        self.pairs.refuse_paired(&req.svol, "an S-VOL again")?;
        self.svols.refuse_member(&req.svol, "an S-VOL")?;
        self.pairs.refuse_pvol(&req.pvol)?;
        self.refuse_diverted(&req.pvol, "a P-VOL")?;
        self.refuse_diverted(&req.svol, "an S-VOL")?;
        let st = self.lock();
        let get = |n: &str| {
            st.volumes.get(n).ok_or_else(|| {
                Error::not_found(format!("unknown volume {n:?}: see `ferrosan volume list`"))
            })
        };
        let (p, s) = (get(&req.pvol)?, get(&req.svol)?);
        if p.rec.size != s.rec.size {
            return Err(Error::invalid(format!(
                "a pair's volumes must be the same size: {} is {} bytes, {} is {} bytes; create the S-VOL with `--size {}`",
                req.pvol, p.rec.size, req.svol, s.rec.size, p.rec.size
            )));
        }
        for v in [p, s] {
            if v.rec.family.is_some() {
                return Err(Error::conflict(format!(
                    "volume {} has instant copies (or is one): a pair's volumes cannot be in a copy family yet; delete its copies first",
                    v.rec.name
                )));
            }
        }
        if s.rec.read_only {
            return Err(Error::invalid(format!(
                "volume {} is read-only: it cannot receive the P-VOL's data",
                req.svol
            )));
        }
        Ok(p.rec.track_size)
    }

    async fn pair_create_on_worker(self: Arc<Self>, req: PairCreateRequest) -> Result<()> {
        let track = self.pair_check(&req)?;
        let (psw, ssw) = self.pair_switches(&req.pvol, &req.svol)?;
        let s_written = written_tracks(&*ssw.current(), track).await?;
        if !s_written.is_empty() && !req.overwrite {
            return Err(Error::conflict(format!(
                "volume {} holds data ({} tracks written): pairing replaces it with {}'s; give --overwrite to replace it",
                req.svol,
                count(&s_written),
                req.pvol
            )));
        }
        let (pc, sc) = (psw.close().await, ssw.close().await);
        let (p_dev, s_dev) = (psw.current(), ssw.current());
        p_dev.flush().await?;
        // Both again, gates closed: what either holds now is copied.
        let mut tracks = written_tracks(&*p_dev, track).await?;
        tracks.extend(written_tracks(&*s_dev, track).await?);
        let size = p_dev.size();
        let rec = PairRecord {
            object: self.next_object(),
            intent: self.next_object(),
            pvol: req.pvol.clone(),
            svol: req.svol.clone(),
            status: PairStatus::Copy,
            track,
            group: req.group.clone(),
            created: now(),
            split_at: None,
        };
        let diff = DiffMap::open(
            Arc::clone(&self.meta),
            rec.object,
            track,
            size.div_ceil(track),
        )?;
        // Marked all at once and stored in one or two group commits.
        let stored: Vec<_> = tracks
            .iter()
            .filter_map(|r| diff.mark_tracks(r.clone()))
            .collect();
        futures::future::try_join_all(stored).await?;
        let (intent, _) = PersistentIntent::load(
            Arc::clone(&self.meta),
            rec.intent,
            track.max(MIN_INTENT_REGION),
        )?;
        let pair = Pair::new(
            p_dev,
            s_dev,
            diff,
            Arc::new(IntentHandle(Arc::clone(&intent))),
            PairStatus::Copy,
        )?;
        let pool_rec = self.pool_record();
        let saved = rec.clone();
        let stored = self.meta.write(true, |tx| {
            tx.put_pool(&pool_rec)?;
            tx.put_pair(&saved)
        });
        if let Err(e) = stored {
            let _ = self.meta.write(true, |tx| tx.del_pair(&saved));
            return Err(e);
        }
        psw.set(pair.node(Side::P));
        ssw.set(pair.node(Side::S));
        let svol = rec.svol.clone();
        self.pairs.st.lock().insert(
            svol.clone(),
            PairEntry {
                rec,
                pair,
                intent,
                job: None,
            },
        );
        drop((pc, sc));
        tracing::info!(
            "pair {} -> {svol} created: {} tracks to copy",
            req.pvol,
            count(&tracks)
        );
        self.start_pair_copy(&svol, req.rate.unwrap_or(0))?;
        Ok(())
    }
}
