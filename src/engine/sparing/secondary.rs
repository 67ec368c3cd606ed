//! Write diversion to secondary volumes (seed 002, first embodiment: the
//! backup storage is "secondary volumes" made on the fly in an unused
//! RAID group, FIG. 2A -> 2B, registered in table T2 with the status
//! UPDATE DATA BEING BACKED UP and a differential bitmap; no initial
//! copy).
//!
//! ```text
//!  sparing of group G starts, secondary chosen ── a RAID group U that
//!        holds no volume, every slot Ok, room for all of G's volumes
//!        ── per volume V of G: volume V.sec on U (same size and track),
//!        not host-accessible ── the record lists them, then a Divert
//!        node over V writes to V.sec at V's own addresses (a direct
//!        slot map: the unit's slot is the unit; its used slots are T2's
//!        differential bitmap)
//!  write-back done ── record gone, then the secondaries deleted: U is
//!        unused again (FIG. 2A)
//! ```
//!
//! A crash between making the secondaries and storing the record leaves
//! them as ordinary volumes (named `V.sec`, logged): nothing is lost,
//! the administrator deletes them.

#![forbid(unsafe_code)]

use std::sync::Arc;

use crate::api::views::{SparingT2Row, VolumeCreateRequest};
use crate::blockdev::BlockDev;
use crate::engine::{Pool, State};
use crate::meta::model::{SecondaryRecord, SlotState, SparingRecord};

/// Bytes per unit of a secondary volume's differential map: a track.
pub(super) const SECONDARY_UNIT: u64 = 64 * 1024;

impl Pool {
    /// Makes the secondary volumes of `mains` (volumes of `rec.group`), or
    /// says why it cannot. On the commit path.
    pub(super) fn secondaries_make(
        &self,
        rec: &SparingRecord,
        mains: &[String],
    ) -> std::result::Result<Vec<SecondaryRecord>, String> {
        let (group, wants) = {
            let st = self.lock();
            let wants: Vec<(String, u64, u64)> = mains
                .iter()
                .filter_map(|m| st.volumes.get(m))
                .map(|v| (v.rec.name.clone(), v.rec.size, v.rec.track_size))
                .collect();
            let need = wants.iter().map(|w| w.1).sum::<u64>();
            let group = self.unused_group_for(&st, &rec.group, need)?;
            let wants = wants
                .into_iter()
                .map(|(m, size, track)| (secondary_name(&st, &m), size, track))
                .collect::<Vec<_>>();
            (group, wants)
        };
        let mut made = Vec::new();
        for (name, size, track) in wants {
            let req = VolumeCreateRequest {
                name: name.clone(),
                group: group.clone(),
                size,
                track_size: Some(track),
                read_only: false,
            };
            if let Err(e) = self.volume_create(req) {
                self.secondaries_drop(&made);
                return Err(format!(
                    "making secondary volume {name} in group {group}: {}",
                    e.chain()
                ));
            }
            self.preallocate_later(&name);
            made.push(SecondaryRecord {
                volume: name,
                object: self.next_object(),
                unit: SECONDARY_UNIT,
            });
        }
        Ok(made)
    }

    /// Allocates the disk space of volume `name` in the background: the
    /// first writes into holes of a disk file are slow (see
    /// `work_disk_add`); writes meanwhile are only slower, never wrong.
    fn preallocate_later(&self, name: &str) {
        let Some(dev) = self.lock().volumes.get(name).map(|v| Arc::clone(&v.thick)) else {
            return;
        };
        let name = name.to_string();
        self.workers.spawn(move || async move {
            if let Err(e) = dev.preallocate(0, dev.size()).await {
                tracing::warn!("allocating the space of volume {name}: {}", e.chain());
            }
        });
    }

    /// A group other than `not` holding no volume, every slot Ok, with
    /// `need` bytes free (the first by name); or why there is none.
    pub(super) fn unused_group_for(
        &self,
        st: &State,
        not: &str,
        need: u64,
    ) -> std::result::Result<String, String> {
        st.groups
            .values()
            .filter(|g| g.rec.name != not)
            .filter(|g| !st.volumes.values().any(|v| v.rec.group == g.rec.name))
            .filter(|g| g.rec.slots.iter().all(|s| s.state == SlotState::Ok))
            .find(|g| self.group_free(st, &g.rec.name) >= need)
            .map(|g| g.rec.name.clone())
            .ok_or_else(|| {
                format!(
                    "no RAID group holds no volume, has every disk ok and {} free for \
                     secondary volumes (`ferrosan group create`)",
                    crate::units::format_size(need)
                )
            })
    }

    /// Deletes secondary volumes no record names any more.
    pub(super) fn secondaries_drop(&self, secs: &[SecondaryRecord]) {
        for s in secs {
            if let Err(e) = self.plain_volume_delete(&s.volume, true) {
                tracing::warn!(
                    "secondary volume {} was not deleted: {} (delete it by hand)",
                    s.volume,
                    e.chain()
                );
            }
        }
    }

    /// Table T2's rows of the diversions to secondary volumes.
    pub(super) fn sparing_t2(&self) -> Vec<SparingT2Row> {
        let mut rows = Vec::new();
        for r in self.sparing.ops() {
            let Some(d) = &r.divert else { continue };
            let nodes = self.sparing.nodes(&r.disk);
            for (main, sec) in d.mains.iter().zip(&d.secondaries) {
                let map = nodes
                    .iter()
                    .find(|(v, _)| v == main)
                    .map(|(_, n)| std::sync::Arc::clone(n.map()));
                let (units, used) = map.map_or((0, Vec::new()), |m| (m.slots(), m.entries()));
                rows.push(SparingT2Row {
                    pvol: main.clone(),
                    svol: sec.volume.clone(),
                    status: if d.write_back {
                        "WRITING BACK".into()
                    } else {
                        "UPDATE DATA BEING BACKED UP".into()
                    },
                    tracks_set: used.len() as u64,
                    tracks: units,
                    bitmap: picture(&used, units, 64),
                });
            }
        }
        rows
    }
}

/// `MAIN.sec`, or `MAIN.secN` when that name is taken.
fn secondary_name(st: &State, main: &str) -> String {
    let base = format!("{main}.sec");
    (1..)
        .map(|i| {
            if i == 1 {
                base.clone()
            } else {
                format!("{base}{i}")
            }
        })
        .find(|n| !st.volumes.contains_key(n))
        .unwrap_or(base)
}

/// T2's differential bitmap: at most `width` characters, each `1` when a
/// unit it stands for is held by the secondary (one character per unit
/// when there are no more than `width`).
fn picture(used: &[(u64, u64)], units: u64, width: u64) -> String {
    let chars = units.min(width.max(1));
    if chars == 0 {
        return String::new();
    }
    let per = units.div_ceil(chars);
    let mut out = vec![b'0'; usize::try_from(units.div_ceil(per)).unwrap_or(0)];
    for &(_, slot) in used {
        if let Some(c) = usize::try_from(slot / per)
            .ok()
            .and_then(|i| out.get_mut(i))
        {
            *c = b'1';
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bitmap_shows_units_in_buckets() {
        assert_eq!(super::picture(&[(0, 1), (0, 6)], 8, 64), "01000010");
        assert_eq!(super::picture(&[(0, 5)], 256, 4), "1000");
        assert_eq!(super::picture(&[(0, 200)], 256, 4), "0001");
        assert_eq!(super::picture(&[], 0, 64), "");
    }
}
