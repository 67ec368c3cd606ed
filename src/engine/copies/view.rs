//! What `copy list` and `copy show` say of a copy: its source, mode,
//! scheme, diverged tracks, space, cascade level, and the space warning.

use super::*;

impl Pool {
    pub(super) fn copy_view(
        &self,
        fam: &Family,
        name: &str,
        vol: &VolumeRecord,
        group_free: u64,
    ) -> Result<CopyInfo> {
        let st = fam.read_state();
        let img = st.image(name)?.clone();
        let own = st.own_nodes(name);
        let mut slots = 0;
        let mut memory = 0;
        for id in &own {
            if let Some(n) = st.nodes.get(id) {
                memory += n.map.memory_bytes() as u64;
                slots += n.map.held_slots();
            }
        }
        let chain = st.chain(img.head);
        let shared: u64 = (chain.iter())
            .filter(|id| !own.contains(id))
            .filter_map(|id| st.nodes.get(id))
            .map(|n| n.map.held_slots())
            .sum();
        let live = st.live_slots();
        // Diverged: tracks where the copy and its source (or the original,
        // once the source is gone) may differ — what either wrote since
        // the copy point.
        let other = img
            .source
            .as_ref()
            .and_then(|s| st.images.get(s))
            .or_else(|| st.images.get(&st.origin))
            .map(|i| st.chain(i.head))
            .unwrap_or_default();
        let mut diverged = std::collections::BTreeSet::new();
        for id in chain
            .iter()
            .filter(|n| !other.contains(n))
            .chain(other.iter().filter(|n| !chain.contains(n)))
        {
            if let Some(n) = st.nodes.get(id) {
                diverged.extend(n.map.entries().map(|(t, _)| t));
            }
        }
        let tracks = diverged.len() as u64;
        let valid = !chain
            .iter()
            .any(|id| st.nodes.get(id).is_some_and(|n| n.invalid));
        let store_bytes = st.store.bytes();
        let used_bytes = st.store.used_slots() * st.track;
        let room = store_bytes + group_free;
        let warning = if !valid {
            Some(format!(
                "{name} is invalid: its new space ran out while its source was written; delete it"
            ))
        } else if room > 0 && used_bytes as f64 >= WARN_USED * room as f64 {
            Some(format!(
                "the new space of {}'s copies is {:.0}% used ({} held of {}, {} of it read by an image): add disks to group {}, delete copies, or `ferrosan copy gc` to merge copy points no copy reads",
                st.origin,
                used_bytes as f64 * 100.0 / room as f64,
                crate::units::format_size(used_bytes),
                crate::units::format_size(room),
                crate::units::format_size(live * st.track),
                fam.group_name
            ))
        } else {
            None
        };
        Ok(CopyInfo {
            name: name.to_string(),
            source: img.source.clone().unwrap_or_default(),
            origin: st.origin.clone(),
            mode: st.asked,
            scheme: img.scheme,
            read_only: vol.read_only,
            size: vol.size,
            track_size: st.track,
            tracks_diverged: tracks,
            space_used: slots * st.track,
            space_shared: shared * st.track,
            store_live: live * st.track,
            store_held: used_bytes,
            store_chunks: store_bytes,
            metadata_memory: memory,
            depth: st.cascade_level(name),
            valid,
            warning,
            created: img.created,
        })
    }

    pub(in crate::engine) fn group_free(&self, st: &State, group: &str) -> u64 {
        let Some(g) = st.groups.get(group) else {
            return 0;
        };
        let mut used = self.used_in(st, group);
        crate::engine::volumes::free_extents(g.raid.size(), &mut used)
            .iter()
            .map(|f| f.1)
            .sum()
    }

    pub fn copy_list(&self) -> Vec<CopyInfo> {
        self.reclaim_copy_space();
        let items: Vec<(Arc<Family>, VolumeRecord, u64)> = {
            let st = self.lock();
            st.volumes
                .values()
                .filter_map(|v| {
                    let f = v.rec.family.and_then(|f| st.families.get(&f))?;
                    Some((
                        Arc::clone(f),
                        v.rec.clone(),
                        self.group_free(&st, &f.group_name),
                    ))
                })
                .collect()
        };
        items
            .into_iter()
            .filter_map(|(f, v, free)| {
                let is_origin = f.read_state().origin == v.name;
                if is_origin {
                    return None;
                }
                self.copy_view(&f, &v.name, &v, free).ok()
            })
            .collect()
    }

    pub fn copy_get(&self, name: &str) -> Result<CopyInfo> {
        let (f, v, free) = {
            let st = self.lock();
            let v = st.volumes.get(name).ok_or_else(|| {
                Error::not_found(format!("unknown copy {name:?}: see `ferrosan copy list`"))
            })?;
            let f = self
                .family_of(&st, name)
                .ok_or_else(|| Error::not_found(format!("volume {name} is not an instant copy")))?;
            let free = self.group_free(&st, &f.group_name);
            (f, v.rec.clone(), free)
        };
        if f.read_state().origin == name {
            return Err(Error::not_found(format!(
                "volume {name} is the origin of copies, not a copy itself"
            )));
        }
        self.copy_view(&f, name, &v, free)
    }
}
