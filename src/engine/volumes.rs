//! Volumes: extents of a group's address space, each one an NBD export.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Pool, State, VolumeEntry, check_name};
use crate::api::views::limits::{TRACK_SIZES, is_power_in};
use crate::api::views::*;
use crate::blockdev::BlockDev;
use crate::error::{Error, ErrorKind, Result};
use crate::meta::model::{VolumeRecord, now};
use crate::stack::switch::Switch;
use crate::stack::volume::{VolumeDev, extents_from};
use crate::units::{format_exact, format_size};

/// Default track size: the grain of copies and bitmaps (DESIGN "Granules").
pub const DEFAULT_TRACK: u64 = 64 << 10;

/// Free pieces of a group's address space, as (offset, length), in order.
pub(crate) fn free_extents(capacity: u64, used: &mut [(u64, u64)]) -> Vec<(u64, u64)> {
    used.sort_unstable();
    let mut out = Vec::new();
    let mut pos = 0;
    for &(off, len) in used.iter() {
        if off > pos {
            out.push((pos, off - pos));
        }
        pos = pos.max(off + len);
    }
    if pos < capacity {
        out.push((pos, capacity - pos));
    }
    out
}

/// Takes `want` bytes from `free` (first fit, whole `unit`s, aligned to
/// `unit`), preferring one piece; None if the group is too full.
pub(crate) fn allocate(free: &[(u64, u64)], want: u64, unit: u64) -> Option<Vec<(u64, u64)>> {
    let align = |x: u64| x.div_ceil(unit) * unit;
    let usable: Vec<(u64, u64)> = free
        .iter()
        .filter_map(|&(off, len)| {
            let start = align(off);
            let end = (off + len) / unit * unit;
            (end > start).then_some((start, end - start))
        })
        .collect();
    if let Some(&(off, _)) = usable.iter().find(|&&(_, len)| len >= want) {
        return Some(vec![(off, want)]);
    }
    let mut out = Vec::new();
    let mut left = want;
    for &(off, len) in &usable {
        let take = len.min(left);
        out.push((off, take));
        left -= take;
        if left == 0 {
            return Some(out);
        }
    }
    None
}

struct ConnGuard(Arc<AtomicUsize>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Pool {
    /// Group space in use: volumes' extents and copy families' space.
    pub(crate) fn used_in(&self, st: &State, group: &str) -> Vec<(u64, u64)> {
        let mut used: Vec<(u64, u64)> = st
            .volumes
            .values()
            .filter(|v| v.rec.group == group)
            .flat_map(|v| v.rec.extents.iter().copied())
            .collect();
        used.extend(self.held_space_in(group));
        used
    }

    pub(super) fn volume_view(&self, v: &VolumeEntry) -> VolumeInfo {
        VolumeInfo {
            name: v.rec.name.clone(),
            group: v.rec.group.clone(),
            size: v.rec.size,
            track_size: v.rec.track_size,
            read_only: v.rec.read_only,
            connections: v.conns.load(Ordering::SeqCst),
            export: self.export_url(&v.rec.name),
            extents: v.rec.extents.clone(),
        }
    }

    pub(super) fn volume_entry(&self, rec: &VolumeRecord, raid: Arc<dyn BlockDev>) -> VolumeEntry {
        let thick = Arc::new(VolumeDev::new(
            raid,
            extents_from(&rec.extents),
            rec.size,
            rec.read_only,
        ));
        VolumeEntry {
            rec: rec.clone(),
            dev: Arc::new(Switch::new(Arc::clone(&thick) as Arc<dyn BlockDev>)),
            thick,
            conns: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn volume_list(&self) -> Vec<VolumeInfo> {
        let st = self.lock();
        st.volumes.values().map(|v| self.volume_view(v)).collect()
    }

    pub fn volume_get(&self, name: &str) -> Result<VolumeInfo> {
        let st = self.lock();
        let v = st.volumes.get(name).ok_or_else(|| {
            Error::not_found(format!(
                "unknown volume {name:?}: see `ferrosan volume list`"
            ))
        })?;
        Ok(self.volume_view(v))
    }

    fn check_size(size: u64, track: u64) -> Result<()> {
        if size == 0 {
            return Err(Error::invalid("a volume needs a size above zero"));
        }
        if !size.is_multiple_of(track) {
            return Err(Error::invalid(format!(
                "size {} is not a multiple of the track size, {}",
                format_exact(size),
                format_size(track)
            )));
        }
        Ok(())
    }

    pub fn volume_create(&self, req: VolumeCreateRequest) -> Result<VolumeInfo> {
        check_name("volume", &req.name)?;
        if self.sparing.diverting(&req.group) {
            return Err(Error::conflict(format!(
                "group {} is being spared with its writes diverted: create the volume once \
                 the write-back is done (`ferrosan sparing status`)",
                req.group
            )));
        }
        let track = req.track_size.unwrap_or(DEFAULT_TRACK);
        if !is_power_in(track, &TRACK_SIZES) {
            return Err(Error::invalid(format!(
                "track size {} must be a power of two between 4 KiB and 1 MiB",
                format_exact(track)
            )));
        }
        Self::check_size(req.size, track)?;
        let mut st = self.lock();
        if st.volumes.contains_key(&req.name) {
            return Err(Error::conflict(format!(
                "volume {} already exists",
                req.name
            )));
        }
        let g = st.groups.get(&req.group).ok_or_else(|| {
            Error::not_found(format!(
                "unknown group {:?}: see `ferrosan group list`",
                req.group
            ))
        })?;
        let raid: Arc<dyn BlockDev> = g.raid.clone();
        // Taken from the space map at once: a copy's chunk allocation
        // cannot take it while the record commits.
        let taken = self.held().take_pending(&req.group, req.size)?;
        let (pending, extents) = taken.map_err(|avail| {
            Error::new(
                ErrorKind::NoSpace,
                format!(
                    "group {} has not enough free space: {} free, {} asked; add disks or pick a smaller size",
                    req.group,
                    format_size(avail),
                    format_size(req.size)
                ),
            )
        })?;
        let object = self.next_object();
        let rec = VolumeRecord {
            object,
            name: req.name.clone(),
            group: req.group.clone(),
            size: req.size,
            track_size: track,
            extents,
            read_only: req.read_only,
            created: now(),
            family: None,
        };
        let pool_rec = self.pool_record();
        let committed = Pool::unlocked(&mut st, || {
            self.meta.write(true, |tx| {
                tx.put_pool(&pool_rec)?;
                tx.put_volume(&rec)
            })
        });
        if let Err(e) = committed {
            drop(st);
            self.held().settle(pending);
            return Err(e);
        }
        let entry = self.volume_entry(&rec, raid);
        let view = self.volume_view(&entry);
        st.volumes.insert(rec.name.clone(), entry);
        // The space map has the volume once the guard goes.
        drop(st);
        self.held().settle(pending);
        Ok(view)
    }

    pub async fn volume_delete(&self, name: &str, force: bool) -> Result<()> {
        self.pairs.refuse_paired(name, "deleted")?;
        self.svols.refuse_member(name, "deleted")?;
        self.refuse_diverted(name, "deleted")?;
        let in_family = self.in_family(&self.lock(), name);
        if in_family {
            return self.family_delete(name, true, force).await.map(drop);
        }
        self.plain_volume_delete(name, force)
    }

    /// Deletes volume `name`, which belongs to no copy family.
    pub(in crate::engine) fn plain_volume_delete(&self, name: &str, force: bool) -> Result<()> {
        let mut st = self.lock();
        let v = st.volumes.get(name).ok_or_else(|| {
            Error::not_found(format!(
                "unknown volume {name:?}: see `ferrosan volume list`"
            ))
        })?;
        let conns = v.conns.load(Ordering::SeqCst);
        if conns > 0 && !force {
            return Err(Error::conflict(format!(
                "volume {name} is in use by {conns} NBD connection(s): disconnect them, or delete with --force (their I/O then fails)"
            )));
        }
        let object = v.rec.object;
        let extents = v.rec.extents.clone();
        let group_name = v.rec.group.clone();
        let group = st.groups.get(&v.rec.group).map(|g| Arc::clone(&g.raid));
        Pool::unlocked(&mut st, || {
            self.meta.write(true, |tx| {
                tx.del_pages(object)?;
                tx.del_volume(name)
            })
        })?;
        // Give the space back to the disks (sparse files shrink again); it
        // stays reserved until the volume's requests in flight have ended
        // and the discard is done, so the next volume there loses nothing.
        if group.is_some() {
            self.hold_for_discard(&group_name, &extents);
        }
        let Some(v) = st.volumes.remove(name) else {
            return Ok(());
        };
        v.dev.revoke();
        v.thick.revoke();
        drop(st);
        if let Some(raid) = group {
            self.discard_held_later(&group_name, raid, extents, Some(Arc::clone(&v.dev)));
        }
        Ok(())
    }

    /// Grows a volume to `req.size`: new extents are appended, no data
    /// moves, clients see the new size on their next connection.
    pub fn volume_grow(&self, name: &str, req: VolumeGrowRequest) -> Result<VolumeInfo> {
        self.pairs.refuse_paired(name, "grown")?;
        self.svols.refuse_member(name, "grown")?;
        self.refuse_diverted(name, "grown")?;
        let mut st = self.lock();
        let v = st.volumes.get(name).ok_or_else(|| {
            Error::not_found(format!(
                "unknown volume {name:?}: see `ferrosan volume list`"
            ))
        })?;
        let mut rec = v.rec.clone();
        if rec.family.is_some() {
            return Err(Error::conflict(format!(
                "volume {name} takes part in instant copies: its size is fixed while they exist"
            )));
        }
        if req.size < rec.size {
            return Err(Error::invalid(format!(
                "volume {name} is {}; shrinking it to {} is not supported",
                format_exact(rec.size),
                format_exact(req.size)
            )));
        }
        if req.size == rec.size {
            return Ok(self.volume_view(v));
        }
        Self::check_size(req.size, rec.track_size)?;
        if !st.groups.contains_key(&rec.group) {
            return Err(Error::not_found(format!(
                "group {} of volume {name} is gone",
                rec.group
            )));
        }
        let have: u64 = rec.extents.iter().map(|e| e.1).sum();
        let mut pending = None;
        if req.size > have {
            let taken = self.held().take_pending(&rec.group, req.size - have)?;
            let (p, more) = taken.map_err(|avail| {
                Error::new(
                    ErrorKind::NoSpace,
                    format!(
                        "group {} has not enough free space: {} free, {} more needed; add disks (`group extend` on concat groups)",
                        rec.group,
                        format_size(avail),
                        format_size(req.size - have)
                    ),
                )
            })?;
            pending = Some(p);
            // Merge a new extent that directly follows the last one.
            for (off, len) in more {
                match rec.extents.last_mut() {
                    Some(last) if last.0 + last.1 == off => last.1 += len,
                    _ => rec.extents.push((off, len)),
                }
            }
        }
        rec.size = req.size;
        let committed = Pool::unlocked(&mut st, || self.meta.write(true, |tx| tx.put_volume(&rec)));
        let view = committed.and_then(|()| {
            let v = st
                .volumes
                .get_mut(name)
                .ok_or_else(|| Error::not_found(name.to_string()))?;
            v.thick.remap(extents_from(&rec.extents), rec.size);
            v.rec = rec;
            Ok(self.volume_view(v))
        });
        // The space map has the new extents once the guard goes.
        drop(st);
        if let Some(p) = pending {
            self.held().settle(p);
        }
        view
    }

    /// Opens a volume for an NBD connection; the guard counts it.
    pub(crate) fn open_volume(
        &self,
        name: &str,
    ) -> Result<(
        VolumeInfo,
        Arc<Switch>,
        Box<dyn std::any::Any + Send + Sync>,
    )> {
        let ro = self.svols.access(name)?;
        if let Some(e) = self.work_volume_refusal(name) {
            return Err(e);
        }
        let st = self.lock();
        let name = if name.is_empty() {
            let mut names = st.volumes.keys();
            match (names.next(), names.next()) {
                (Some(only), None) => only.clone(),
                _ => {
                    let all: Vec<&str> = st.volumes.keys().map(|s| s.as_str()).collect();
                    return Err(Error::not_found(format!(
                        "no default export: name one of {}",
                        all.join(", ")
                    )));
                }
            }
        } else {
            name.to_string()
        };
        let v = st
            .volumes
            .get(&name)
            .ok_or_else(|| Error::not_found(format!("no volume named {name:?}")))?;
        v.conns.fetch_add(1, Ordering::SeqCst);
        let guard = Box::new(ConnGuard(Arc::clone(&v.conns)));
        let mut view = self.volume_view(v);
        // An RO member of an S-VOL group is a read-only export.
        view.read_only |= ro == Some(true);
        Ok((view, Arc::clone(&v.dev), guard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_and_first_fit() {
        let mut used = vec![(4 << 20, 1 << 20), (0, 1 << 20)];
        let free = free_extents(8 << 20, &mut used);
        assert_eq!(free, vec![(1 << 20, 3 << 20), (5 << 20, 3 << 20)]);
        // Fits in one piece: the first that is big enough.
        assert_eq!(
            allocate(&free, 2 << 20, 1 << 20),
            Some(vec![(1 << 20, 2 << 20)])
        );
        // Needs both pieces.
        assert_eq!(
            allocate(&free, 5 << 20, 1 << 20),
            Some(vec![(1 << 20, 3 << 20), (5 << 20, 2 << 20)])
        );
        assert_eq!(allocate(&free, 7 << 20, 1 << 20), None);
        // Alignment to a 192 KiB row.
        let row = 192 << 10;
        let got = allocate(&[(100, 10 * row)], 2 * row, row).unwrap();
        assert_eq!(got, vec![(row, 2 * row)]);
    }
}
