//! The tracks where an instant copy and the volume it was taken of may
//! differ — what either wrote since the copy point — as a [`ChangeMap`]:
//! each exports' `qemu:dirty-bitmap:NAME` of its copies and its source
//! (the maps of the nodes one image's chain has and the other's has not,
//! as `copy list`'s DIVERGED counts them).

use std::collections::BTreeSet;

use super::*;
use crate::blockdev::ChangeMap;

/// What changed between two images of a family.
pub(in crate::engine) struct CopyBitmap {
    fam: Arc<Family>,
    /// The exported image and the one it is compared with.
    image: String,
    other: String,
    track: u64,
    size: u64,
}

impl CopyBitmap {
    /// The diverged tracks in `t0..t1`; None when either image is gone.
    fn diverged(&self, t0: u64, t1: u64) -> Option<BTreeSet<u64>> {
        let st = self.fam.read_state();
        let a = st.chain(st.image(&self.image).ok()?.head);
        let b = st.chain(st.image(&self.other).ok()?.head);
        let mut set = BTreeSet::new();
        let only = a.iter().filter(|n| !b.contains(n));
        for id in only.chain(b.iter().filter(|n| !a.contains(n))) {
            if let Some(n) = st.nodes.get(id) {
                set.extend(
                    n.map
                        .entries()
                        .map(|(t, _)| t)
                        .filter(|t| (t0..t1).contains(t)),
                );
            }
        }
        Some(set)
    }
}

impl ChangeMap for CopyBitmap {
    fn runs(&self, off: u64, len: u64, max: usize) -> Vec<(u64, bool)> {
        let end = off.saturating_add(len).min(self.size);
        if off >= end {
            return Vec::new();
        }
        let track = self.track.max(1);
        let (t0, t1) = (off / track, end.div_ceil(track));
        // An image gone since the export opened: anything may differ.
        let Some(set) = self.diverged(t0, t1) else {
            return vec![(end - off, true)];
        };
        let mut out: Vec<(u64, bool)> = Vec::new();
        let mut at = off;
        let mut push = |to: u64, changed: bool, out: &mut Vec<(u64, bool)>| {
            let to = to.min(end);
            if to <= at {
                return;
            }
            match out.last_mut() {
                Some(last) if last.1 == changed => last.0 += to - at,
                _ => out.push((to - at, changed)),
            }
            at = to;
        };
        for t in set {
            push(t * track, false, &mut out);
            push((t + 1) * track, true, &mut out);
        }
        push(end, false, &mut out);
        out.truncate(max.max(1));
        out
    }
}

impl Pool {
    /// The copy-point bitmaps volume `name`'s export offers: one per copy
    /// taken of it (named by the copy) and one for its source (named by
    /// the source), if it is a copy.
    pub(in crate::engine) fn copy_bitmaps(&self, name: &str) -> Vec<(String, Arc<dyn ChangeMap>)> {
        let (fam, size) = {
            let st = self.lock();
            let Some(fam) = self.family_of(&st, name) else {
                return Vec::new();
            };
            let size = st.volumes.get(name).map_or(0, |v| v.rec.size);
            (fam, size)
        };
        let others: Vec<String> = {
            let st = fam.read_state();
            let mine = st.image(name).ok().and_then(|i| i.source.clone());
            st.images
                .values()
                .filter(|i| i.name != name && i.source.as_deref() == Some(name))
                .map(|i| i.name.clone())
                .chain(mine)
                .collect()
        };
        let track = fam.read_state().track;
        others
            .into_iter()
            .map(|other| {
                let map: Arc<dyn ChangeMap> = Arc::new(CopyBitmap {
                    fam: Arc::clone(&fam),
                    image: name.to_string(),
                    other: other.clone(),
                    track,
                    size,
                });
                (other, map)
            })
            .collect()
    }

    /// Every changed-block map volume `name`'s export offers: its pairs'
    /// and its copy points'.
    pub fn volume_bitmaps(&self, name: &str) -> Vec<(String, Arc<dyn ChangeMap>)> {
        let mut v = self.pair_bitmaps(name);
        v.extend(self.copy_bitmaps(name));
        v
    }
}
