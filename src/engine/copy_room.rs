//! `copy create` out of room: which metadata scheme reserves how much new
//! space when a copy is made, how much the group has free, and the scheme
//! that fits.
//!
//! ```text
//!   bitmap, multilevel-bitmap   reserve an area the size of the whole volume
//!                               for each map, when the map is made
//!   partial-bitmap              64-track areas, as tracks are first written
//!   changed-pointer,            one track at a time, as tracks are written
//!   full-pointer
//! ```
//!
//! A copy makes one or two maps (`FamilyState::create_copy`): the copy's,
//! and a new one for the source's own writes or for the old data a
//! copy-on-write source keeps for its copies.

#![forbid(unsafe_code)]

use std::sync::Arc;

use super::Pool;
use super::copies::default_scheme;
use crate::api::views::CopyCreateRequest;
use crate::copy::family::{Head, State as FamilyState};
use crate::copy::image::Family;
use crate::copy::map::Scheme;
use crate::error::{Error, ErrorKind};
use crate::units::format_size;

/// What a copy about to be made reserves, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RoomPlan {
    source: String,
    group: String,
    /// Free space of the group before the copy.
    free: u64,
    /// The volume's size in whole tracks: one up-front area.
    area: u64,
    /// The scheme asked for (or the default), and the default.
    scheme: Scheme,
    default: Scheme,
    /// Maps of `scheme` the copy makes.
    copy_maps: u64,
    /// The scheme of a new map for the source's own writes, if one is made.
    source_map: Option<Scheme>,
}

/// Whether `scheme` reserves its whole area when a map is made.
fn up_front(scheme: Scheme) -> bool {
    matches!(scheme, Scheme::Bitmap | Scheme::MultilevelBitmap)
}

/// Maps a copy of `src` makes in an existing family: of the copy's scheme,
/// and the source's new map, if any (as `create_copy` makes them).
fn maps_in_family(st: &FamilyState, src: &str) -> (u64, Option<Scheme>) {
    let Ok(img) = st.image(src) else {
        return (1, None);
    };
    match img.head {
        Head::Base => {
            let view = st.newest_view.and_then(|v| st.nodes.get(&v));
            let shared = view.is_some_and(|n| n.map.is_empty() && !n.invalid);
            (if shared { 1 } else { 2 }, None)
        }
        Head::Leaf(l) => match st.nodes.get(&l) {
            Some(n) if !n.map.is_empty() => (1, Some(n.map.scheme())),
            _ => (1, None),
        },
    }
}

impl RoomPlan {
    /// New space reserved up front if the copy uses `scheme`.
    fn need(&self, scheme: Scheme) -> u64 {
        let areas = self.copy_maps * u64::from(up_front(scheme))
            + u64::from(self.source_map.is_some_and(up_front));
        areas.saturating_mul(self.area)
    }

    /// The message for a copy that ran out of room, if its scheme's
    /// up-front reservation is why.
    fn message(&self) -> Option<String> {
        let need = self.need(self.scheme);
        if need == 0 || need <= self.free {
            return None;
        }
        let (src, group, scheme) = (&self.source, &self.group, self.scheme);
        let free = format_size(self.free);
        if !up_front(scheme) || self.need(self.default) > self.free {
            return Some(self.source_map_message(need));
        }
        let areas = need / self.area.max(1);
        let others = lazy_schemes(self.default);
        Some(format!(
            "no room for a {scheme} copy of {src} in group {group}: {scheme} reserves new space \
             the size of the whole volume up front for each set of changes it tracks \
             ({areas} x {} = {} here), and {group} has {free} free; {others} take new space only \
             as data changes: use --meta {} (the default for {src})",
            format_size(self.area),
            format_size(need),
            self.default,
        ))
    }

    /// The source's own map is what does not fit.
    fn source_map_message(&self, need: u64) -> String {
        let (src, group) = (&self.source, &self.group);
        let theirs = self
            .source_map
            .map_or_else(String::new, |s| format!(" ({s})"));
        format!(
            "no room for a copy of {src} in group {group}: after a copy, {src}'s own writes \
             need a new map of its scheme{theirs}, which reserves new space the size of the \
             whole volume up front ({} in all with the copy's), and {group} has {} free: free \
             space in {group} (delete copies or volumes)",
            format_size(need),
            format_size(self.free),
        )
    }
}

/// The schemes that reserve nothing up front, `first` first:
/// `partial-bitmap, changed-pointer and full-pointer`.
fn lazy_schemes(first: Scheme) -> String {
    let lazy = [
        Scheme::PartialBitmap,
        Scheme::ChangedPointer,
        Scheme::FullPointer,
    ];
    let mut names: Vec<&str> = vec![first.name()];
    names.extend(lazy.into_iter().filter(|s| *s != first).map(Scheme::name));
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

impl Pool {
    /// What a copy for `req` would reserve, taken before it is made (the
    /// group's free space is only exact before the attempt gives anything
    /// back). None when the source or its group is unknown: the copy then
    /// fails with its own message.
    pub(super) fn room_plan(&self, req: &CopyCreateRequest) -> Option<RoomPlan> {
        let (fam, group, free, area): (Option<Arc<Family>>, String, u64, u64) = {
            let st = self.lock();
            let v = st.volumes.get(&req.source)?;
            let fam = self.family_of(&st, &req.source);
            let group = match (&fam, &req.pool_group) {
                (Some(f), _) => f.group_name.clone(),
                (None, Some(g)) => g.clone(),
                (None, None) => v.rec.group.clone(),
            };
            let track = v.rec.track_size.max(1);
            let area = v.rec.size.div_ceil(track).saturating_mul(track);
            let free = self.group_free(&st, &group);
            (fam, group, free, area)
        };
        // The family's state lock only after the pool's is released.
        let (default, copy_maps, source_map) = match &fam {
            None => (default_scheme(false), 2, None),
            Some(f) => {
                let st = f.read_state();
                let (n, theirs) = maps_in_family(&st, &req.source);
                (default_scheme(st.pointer_mapped(&req.source)), n, theirs)
            }
        };
        Some(RoomPlan {
            source: req.source.clone(),
            group,
            free,
            area,
            scheme: req.meta.unwrap_or(default),
            default,
            copy_maps,
            source_map,
        })
    }
}

/// `e` as it is, or, when a copy ran out of room because its scheme
/// reserves space up front, an error saying so and what fits.
pub(super) fn explain_no_room(e: Error, plan: Option<&RoomPlan>) -> Error {
    if e.kind() != ErrorKind::NoSpace {
        return e;
    }
    match plan.and_then(RoomPlan::message) {
        Some(m) => Error::new(ErrorKind::NoSpace, m),
        None => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn plan(scheme: Scheme, copy_maps: u64, source_map: Option<Scheme>) -> RoomPlan {
        RoomPlan {
            source: "vol0".into(),
            group: "g0".into(),
            free: GIB - 64 * 1024 * 1024,
            area: 2 * GIB,
            scheme,
            default: Scheme::PartialBitmap,
            copy_maps,
            source_map,
        }
    }

    #[test]
    fn a_bitmap_copy_names_what_it_reserves_and_the_scheme_that_fits() {
        let m = plan(Scheme::Bitmap, 2, None).message().unwrap();
        assert_eq!(
            m,
            "no room for a bitmap copy of vol0 in group g0: bitmap reserves new space the size \
             of the whole volume up front for each set of changes it tracks (2 x 2.0 GiB = \
             4.0 GiB here), and g0 has 960.0 MiB free; partial-bitmap, changed-pointer and \
             full-pointer take new space only as data changes: use --meta partial-bitmap (the \
             default for vol0)"
        );
        let m = plan(Scheme::MultilevelBitmap, 1, None).message().unwrap();
        assert!(m.contains("(1 x 2.0 GiB = 2.0 GiB here)"), "{m}");
        assert!(m.starts_with("no room for a multilevel-bitmap copy"), "{m}");
    }

    #[test]
    fn schemes_that_reserve_nothing_are_not_explained() {
        for s in [
            Scheme::PartialBitmap,
            Scheme::ChangedPointer,
            Scheme::FullPointer,
        ] {
            assert_eq!(plan(s, 2, None).message(), None, "{s}");
        }
        // Room enough: the failure was something else.
        let mut roomy = plan(Scheme::Bitmap, 2, None);
        roomy.free = 5 * GIB;
        assert_eq!(roomy.message(), None);
        let e = explain_no_room(
            Error::invalid("other"),
            Some(&plan(Scheme::Bitmap, 2, None)),
        );
        assert_eq!(e.message(), "other");
    }

    #[test]
    fn a_source_map_that_does_not_fit_is_named() {
        let m = plan(Scheme::ChangedPointer, 1, Some(Scheme::Bitmap))
            .message()
            .unwrap();
        assert!(
            m.starts_with("no room for a copy of vol0 in group g0:"),
            "{m}"
        );
        assert!(m.contains("need a new map of its scheme (bitmap)"), "{m}");
        assert!(m.contains("(2.0 GiB in all with the copy's)"), "{m}");
        assert!(!m.contains("--meta"), "no scheme of the copy helps: {m}");
    }

    #[test]
    fn lazy_schemes_put_the_suggestion_first() {
        assert_eq!(
            lazy_schemes(Scheme::ChangedPointer),
            "changed-pointer, partial-bitmap and full-pointer"
        );
    }
}
