//! `ferrosan pool recover`: rebuilds the copy maps of every copy family
//! from the labels its store carries on the disks (seed 000 FIG. 13; the
//! labels are `copy/label.rs`, the rebuild `copy/audit.rs`), for a pool
//! whose database lost or damaged its copy tables. The family records
//! (the copy tree and its images) must still be there: they say which
//! nodes exist and how they read through each other.
//!
//! The pool is opened without its copy families and without background
//! work (the daemon is stopped); each family's group is scanned, at its
//! allocation unit, in the space no volume holds, for chunk labels of the
//! family; the rebuilt rows (chunks, areas, map pages) are checked by
//! loading them as the daemon would, then replace the old ones in one
//! transaction per family.

#![forbid(unsafe_code)]

use std::sync::Arc;

use super::Pool;
use crate::blockdev::BlockDev;
use crate::copy::audit::{self, FoundChunk};
use crate::copy::record::FamilyRecord;
use crate::error::{Error, ErrorKind, Result};

/// A group's device, its space no volume holds, its allocation unit.
type ScanSpace = (Arc<dyn BlockDev>, Vec<(u64, u64)>, u64);

impl Pool {
    /// Rebuilds every family's copy maps from its store's labels; what was
    /// done, a line per family and note. The pool must have been opened
    /// with `PoolOptions::recovering`.
    pub async fn recover_copies(&self) -> Result<Vec<String>> {
        let families = self.meta.load()?.families;
        let mut out = Vec::new();
        if families.is_empty() {
            out.push("no copy families: nothing to recover".into());
        }
        for rec in families {
            match self.recover_family(&rec).await {
                Ok(lines) => out.extend(lines),
                Err(e) => out.push(format!(
                    "copies of {}: not recovered: {}",
                    rec.origin,
                    e.chain()
                )),
            }
        }
        Ok(out)
    }

    async fn recover_family(&self, rec: &FamilyRecord) -> Result<Vec<String>> {
        // Chunks the database still lists without a label cannot be found
        // again: recovering would lose them.
        let unlabelled = (self.meta.copy_chunks(rec.object).unwrap_or_default().iter())
            .filter(|c| c.head == 0)
            .count()
            + rec.chunks.iter().filter(|c| c.head == 0).count();
        if unlabelled > 0 {
            return Err(Error::invalid(format!(
                "its store has {unlabelled} chunks made before stores carried labels; they cannot be rebuilt from the disks"
            )));
        }
        let (dev, free, unit) = self.space_to_scan(&rec.group)?;
        let mut found: Vec<FoundChunk> = Vec::new();
        for (off, len) in free {
            let mut at = off.div_ceil(unit) * unit;
            while at + crate::copy::label::BLOCK <= off + len {
                match audit::read_chunk(dev.as_ref(), rec.object, at).await {
                    Ok(Some(f)) => {
                        let bytes = f.head.head_bytes + f.head.slots * f.head.track;
                        at += bytes.div_ceil(unit).max(1) * unit;
                        found.push(f);
                    }
                    Ok(None) => at += unit,
                    Err(e) if e.kind() == ErrorKind::Corrupt => {
                        tracing::warn!("group {}: offset {at}: {e}", rec.group);
                        at += unit;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let chunks_found = found.len();
        let rebuilt = audit::rebuild(rec, found)?;
        self.check_rebuilt(rec, &rebuilt)?;
        let mut rec = rec.clone();
        rec.chunks.clear();
        for n in &mut rec.nodes {
            n.areas.clear();
        }
        self.meta.write(true, |tx| {
            tx.del_family(rec.object)?;
            tx.put_family(&rec)?;
            for n in &rec.nodes {
                tx.del_copy_node(n.id)?;
            }
            for (id, pages) in &rebuilt.pages {
                for (p, bytes) in pages {
                    tx.put_page(*id, *p, bytes)?;
                }
            }
            for (id, areas) in &rebuilt.areas {
                for &(a, k) in areas {
                    tx.put_copy_area(*id, a, Some(k))?;
                }
            }
            for c in &rebuilt.chunks {
                tx.put_copy_chunk(rec.object, c.first_slot, Some(c))?;
            }
            Ok(())
        })?;
        let tracks: usize = rebuilt
            .pages
            .values()
            .flatten()
            .map(|(p, b)| crate::copy::page::decode_page(*p, b).map_or(0, |e| e.len()))
            .sum();
        let mut lines = vec![format!(
            "copies of {}: {chunks_found} chunks found on group {}, {tracks} tracks mapped in {} nodes",
            rec.origin,
            rec.group,
            rec.nodes.len()
        )];
        lines.extend(rebuilt.notes.into_iter().map(|n| format!("  {n}")));
        Ok(lines)
    }

    /// The group's device and the space no volume holds, with the group's
    /// allocation unit (chunks begin on it).
    fn space_to_scan(&self, group: &str) -> Result<ScanSpace> {
        let st = self.lock();
        let g = st.groups.get(group).ok_or_else(|| {
            Error::not_found(format!("group {group} of the copy family is not available"))
        })?;
        let dev = Arc::clone(&g.raid) as Arc<dyn BlockDev>;
        let unit = super::groups::row_bytes(&g.rec).max(crate::copy::label::BLOCK);
        // No family is loaded: what is in use is the volumes' extents.
        let mut used = self.used_in(&st, group);
        let free = super::volumes::free_extents(dev.size(), &mut used);
        Ok((dev, free, unit))
    }

    /// Loads the rebuilt rows as the daemon would: a map the rows cannot
    /// make is refused before anything is written.
    fn check_rebuilt(&self, rec: &FamilyRecord, r: &audit::Rebuilt) -> Result<()> {
        let pages_of = |id: u64| Ok(r.pages.get(&id).cloned().unwrap_or_default());
        let areas_of = |id: u64| Ok(r.areas.get(&id).cloned().unwrap_or_default());
        let rows = crate::copy::Rows {
            chunks: r.chunks.clone(),
            unfreed: Vec::new(),
            pages_of: &pages_of,
            areas_of: &areas_of,
        };
        let grow: crate::copy::store::Grow = Box::new(|_| {
            Err(Error::new(
                ErrorKind::NoSpace,
                "recovering: no space is taken",
            ))
        });
        crate::copy::load_state(rec, rows, grow).map(|_| ())
    }
}
