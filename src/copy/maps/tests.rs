//! The conformance suite every scheme runs, against a reference
//! `BTreeMap<u64, Entry>`; the page round trip through `restore_map`;
//! rejection of corrupt input; memory of the schemes relative to each
//! other.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;

use super::*;
use crate::copy::map::{PAGE_ENTRIES, PARTIAL_AREA_TRACKS};
use crate::copy::page::{decode_page, encode_page, is_empty_page};

/// A slot source that hands out slots and runs from one counter, records
/// them, and fails on demand.
#[derive(Debug, Default)]
struct TestSource {
    next: u64,
    slots: Vec<u64>,
    areas: Vec<Area>,
    fail: bool,
}

const SOURCE_FULL: &str = "test source is full";

impl TestSource {
    fn new() -> TestSource {
        TestSource {
            next: 1000,
            ..TestSource::default()
        }
    }

    fn take(&mut self, n: u64) -> Result<u64> {
        if self.fail {
            return Err(Error::new(ErrorKind::NoSpace, SOURCE_FULL));
        }
        let first = self.next;
        self.next += n;
        Ok(first)
    }
}

impl SlotSource for TestSource {
    fn alloc_slot(&mut self) -> Result<u64> {
        let s = self.take(1)?;
        self.slots.push(s);
        Ok(s)
    }

    fn alloc_area(&mut self, n: u64) -> Result<u64> {
        let first = self.take(n)?;
        self.areas.push((first, n));
        Ok(first)
    }
}

/// Which track an operation touches, resolved against the map's size so
/// that first, last and area/region boundaries come up often.
#[derive(Debug, Clone, Copy)]
enum Sel {
    First,
    Last,
    /// Just before (`false`) or at (`true`) a multiple of 512 tracks.
    Boundary(u64, bool),
    Any(u64),
}

impl Sel {
    fn track(self, tracks: u64) -> u64 {
        let t = match self {
            Sel::First => 0,
            Sel::Last => tracks - 1,
            Sel::Boundary(k, at) => ((k % (tracks / 512 + 1)) * 512).saturating_sub(u64::from(!at)),
            Sel::Any(x) => x % tracks,
        };
        t.min(tracks - 1)
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    /// place + set with a slot.
    Write(Sel, u64),
    /// set ZERO_SLOT.
    Zero(Sel, u64),
    Remove(Sel),
    Get(Sel),
    /// place with the source failing.
    FailedPlace(Sel),
    /// place/get/accepts/remove `n` tracks past the end.
    Beyond(u64),
}

fn arb_sel() -> impl Strategy<Value = Sel> {
    prop_oneof![
        Just(Sel::First),
        Just(Sel::Last),
        (0u64..160, any::<bool>()).prop_map(|(k, at)| Sel::Boundary(k, at)),
        any::<u64>().prop_map(Sel::Any),
    ]
}

fn arb_mask() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => Just(0xFFFF_u64),
        2 => (0u32..16).prop_map(|g| 1u64 << g),
        1 => Just(u64::MAX),
        1 => 1u64..=u64::MAX,
    ]
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (arb_sel(), arb_mask()).prop_map(|(s, m)| Op::Write(s, m)),
        2 => (arb_sel(), arb_mask()).prop_map(|(s, m)| Op::Zero(s, m)),
        3 => arb_sel().prop_map(Op::Remove),
        3 => arb_sel().prop_map(Op::Get),
        1 => arb_sel().prop_map(Op::FailedPlace),
        1 => (0u64..3).prop_map(Op::Beyond),
    ]
}

fn arb_tracks() -> impl Strategy<Value = u64> {
    prop_oneof![
        1u64..=3,
        Just(PARTIAL_AREA_TRACKS),
        Just(2 * PARTIAL_AREA_TRACKS + 7),
        1u64..5000,
        // past 64 regions of the multi-level bitmap: more than one top word
        Just(64 * 512 + 700),
    ]
}

type Reference = BTreeMap<u64, Entry>;

/// Everything observable about a map, to check that a failed call left it
/// unchanged.
fn snapshot(map: &dyn TrackMap) -> (Vec<(u64, Entry)>, Vec<Area>, u64) {
    (map.entries().collect(), map.areas(), map.len())
}

/// Runs `ops` on `map`, mirroring them in `reference`, then checks every
/// invariant of the contract.
fn conform(map: &mut dyn TrackMap, src: &mut TestSource, reference: &mut Reference, ops: &[Op]) {
    for &op in ops {
        apply(map, src, reference, op);
    }
    check_all(map, src, reference);
}

fn apply(map: &mut dyn TrackMap, src: &mut TestSource, reference: &mut Reference, op: Op) {
    let tracks = map.tracks();
    match op {
        Op::Write(s, valid) => write(map, src, reference, s.track(tracks), valid),
        Op::Zero(s, valid) => {
            let t = s.track(tracks);
            assert!(map.accepts(t, ZERO_SLOT), "{}: zero refused", map.scheme());
            let e = Entry {
                slot: ZERO_SLOT,
                valid,
            };
            map.set(t, e);
            reference.insert(t, e);
        }
        Op::Remove(s) => {
            let t = s.track(tracks);
            assert_eq!(
                map.remove(t),
                reference.remove(&t),
                "{} remove {t}",
                map.scheme()
            );
        }
        Op::Get(s) => {
            let t = s.track(tracks);
            assert_eq!(
                map.get(t),
                reference.get(&t).copied(),
                "{} get {t}",
                map.scheme()
            );
        }
        Op::FailedPlace(s) => failed_place(map, src, s.track(tracks)),
        Op::Beyond(n) => beyond_end(map, src, tracks + n),
    }
    assert_eq!(map.len(), u64::try_from(reference.len()).unwrap());
    assert_eq!(map.is_empty(), reference.is_empty());
}

fn write(
    map: &mut dyn TrackMap,
    src: &mut TestSource,
    reference: &mut Reference,
    t: u64,
    valid: u64,
) {
    let scheme = map.scheme();
    let slot = map.place(t, src).unwrap();
    assert!(
        map.accepts(t, slot),
        "{scheme}: placed slot {slot} of {t} refused"
    );
    if scheme.load_point() {
        assert_eq!(
            map.place(t, src).unwrap(),
            slot,
            "{scheme}: position of {t} moved"
        );
    }
    let e = Entry { slot, valid };
    map.set(t, e);
    reference.insert(t, e);
    assert_eq!(map.get(t), Some(e));
}

fn failed_place(map: &mut dyn TrackMap, src: &mut TestSource, t: u64) {
    let before = snapshot(map);
    let handed = (src.slots.len(), src.areas.len());
    src.fail = true;
    let r = map.place(t, src);
    src.fail = false;
    match r {
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::NoSpace);
            assert_eq!(e.message(), SOURCE_FULL);
        }
        Ok(slot) => {
            assert!(
                map.scheme().load_point(),
                "{}: placed without a source",
                map.scheme()
            );
            assert!(map.accepts(t, slot));
        }
    }
    assert_eq!(
        snapshot(map),
        before,
        "{}: failed place changed the map",
        map.scheme()
    );
    assert_eq!((src.slots.len(), src.areas.len()), handed);
}

fn beyond_end(map: &mut dyn TrackMap, src: &mut TestSource, t: u64) {
    let before = snapshot(map);
    let err = map.place(t, src).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutOfRange);
    assert_eq!(map.get(t), None);
    assert!(!map.accepts(t, ZERO_SLOT));
    assert_eq!(map.remove(t), None);
    assert_eq!(snapshot(map), before);
}

fn check_all(map: &dyn TrackMap, src: &TestSource, reference: &Reference) {
    let scheme = map.scheme();
    let entries: Vec<(u64, Entry)> = map.entries().collect();
    assert!(
        entries.windows(2).all(|w| w[0].0 < w[1].0),
        "{scheme}: entries not ascending"
    );
    let want: Vec<(u64, Entry)> = reference.iter().map(|(&t, &e)| (t, e)).collect();
    assert_eq!(entries, want, "{scheme}: entries differ from the reference");
    assert_eq!(map.len(), u64::try_from(want.len()).unwrap());
    for &(t, e) in &want {
        assert_eq!(map.get(t), Some(e));
    }
    check_areas_reported(map, src);
    if scheme.load_point() {
        check_positions(map, &entries);
    } else {
        check_pointer_slots(map, src, &entries);
    }
}

/// Every area the source handed out is reported (none leaked), sorted and
/// disjoint.
fn check_areas_reported(map: &dyn TrackMap, src: &TestSource) {
    let areas = map.areas();
    let mut handed = src.areas.clone();
    handed.sort_unstable();
    assert_eq!(
        areas,
        handed,
        "{}: areas differ from those reserved",
        map.scheme()
    );
    assert!(areas.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0));
    // Each area with a track to look it up by, found by that one look.
    let tracked = map.area_tracks();
    let mut listed: Vec<Area> = tracked.iter().map(|&(a, _)| a).collect();
    listed.sort_unstable();
    assert_eq!(listed, areas, "{}: area_tracks", map.scheme());
    for &((first, n), t) in &tracked {
        assert!(
            map.lists_area(t, first),
            "{}: area at {first}",
            map.scheme()
        );
        assert!(n < 2 || !map.lists_area(t, first + 1));
    }
    // What is held, against a scan of every area per entry.
    let in_area = |s: u64| areas.iter().any(|&(a, c)| s >= a && s < a + c);
    let singles = (map.entries())
        .filter(|(_, e)| e.slot != ZERO_SLOT && !in_area(e.slot))
        .count() as u64;
    assert_eq!(
        map.held_slots(),
        areas.iter().map(|a| a.1).sum::<u64>() + singles,
        "{}: held slots",
        map.scheme()
    );
}

/// Load-point slots sit at their track's offset inside a reserved area.
fn check_positions(map: &dyn TrackMap, entries: &[(u64, Entry)]) {
    let span = match map.scheme() {
        Scheme::PartialBitmap => PARTIAL_AREA_TRACKS,
        _ => map.tracks(),
    };
    let areas = map.areas();
    for &(t, e) in entries.iter().filter(|(_, e)| e.slot != ZERO_SLOT) {
        let (first, _) = *areas
            .iter()
            .find(|&&(a, n)| a <= e.slot && e.slot < a + n)
            .unwrap_or_else(|| panic!("{}: slot {} of {t} in no area", map.scheme(), e.slot));
        assert_eq!(
            e.slot - first,
            t % span,
            "{}: slot of {t} off its position",
            map.scheme()
        );
    }
}

/// Pointer slots are ones the source handed out, none used twice.
fn check_pointer_slots(map: &dyn TrackMap, src: &TestSource, entries: &[(u64, Entry)]) {
    let handed: BTreeSet<u64> = src.slots.iter().copied().collect();
    let mut seen = BTreeSet::new();
    for &(t, e) in entries.iter().filter(|(_, e)| e.slot != ZERO_SLOT) {
        assert!(
            handed.contains(&e.slot),
            "{}: slot of {t} not from the source",
            map.scheme()
        );
        assert!(
            seen.insert(e.slot),
            "{}: slot {} used twice",
            map.scheme(),
            e.slot
        );
    }
    assert!(map.areas().is_empty());
}

/// Encodes every page of `map` and restores a map from them, checking
/// the pages on the way.
fn round_trip(map: &dyn TrackMap) -> Box<dyn TrackMap> {
    let mut decoded = Vec::new();
    for page in 0..map.tracks().div_ceil(PAGE_ENTRIES) {
        let bytes = encode_page(map, page);
        let entries = decode_page(page, &bytes).unwrap();
        let range = page * PAGE_ENTRIES..(page + 1) * PAGE_ENTRIES;
        let want: Vec<(u64, Entry)> = map.entries().filter(|(t, _)| range.contains(t)).collect();
        assert_eq!(entries, want, "{}: page {page} round trip", map.scheme());
        assert_eq!(is_empty_page(&bytes), want.is_empty());
        decoded.extend(entries);
    }
    let restored = restore_map(map.scheme(), map.tracks(), &map.areas(), decoded).unwrap();
    assert_eq!(
        snapshot(restored.as_ref()),
        snapshot(map),
        "{}: restore differs",
        map.scheme()
    );
    restored
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Every scheme behaves as the reference map under random operations,
    /// survives a page round trip, and keeps behaving after it.
    #[test]
    fn conformance(
        tracks in arb_tracks(),
        before in prop::collection::vec(arb_op(), 0..150),
        after in prop::collection::vec(arb_op(), 0..60),
    ) {
        for scheme in Scheme::ALL {
            let mut src = TestSource::new();
            let mut reference = Reference::new();
            let mut map = new_map(scheme, tracks, &mut src).unwrap();
            prop_assert_eq!(map.scheme(), scheme);
            prop_assert_eq!(map.tracks(), tracks);
            conform(map.as_mut(), &mut src, &mut reference, &before);
            let mut restored = round_trip(map.as_ref());
            conform(restored.as_mut(), &mut src, &mut reference, &after);
            round_trip(restored.as_ref());
        }
    }

    /// The chunked table agrees with a BTreeMap through inserts, removes
    /// and splits: with tiny chunks and groups, so that splits and drops
    /// happen on every few operations, and with the real sizes.
    #[test]
    fn sparse_table_is_a_sorted_map(
        ops in prop::collection::vec((0u64..3000, 0u8..3, any::<u32>()), 0..3000),
    ) {
        sorted_map_ops(SparseTable::<u32, 4, 3>::new(), &ops)?;
        sorted_map_ops(SparseTable::<u32, 2, 2>::new(), &ops)?;
        sorted_map_ops(SparseTable::<u32>::new(), &ops)?;
    }

    /// Restoring arbitrary areas and entries never panics.
    #[test]
    fn restore_is_total(
        tracks in 0u64..3000,
        areas in prop::collection::vec((prop_oneof![0u64..5000, Just(u64::MAX - 3)], 0u64..3000), 0..4),
        entries in prop::collection::vec((0u64..3500, prop_oneof![0u64..8000, Just(ZERO_SLOT)], 0u64..4), 0..40),
    ) {
        let entries: Vec<(u64, Entry)> =
            entries.into_iter().map(|(t, slot, valid)| (t, Entry { slot, valid })).collect();
        for scheme in Scheme::ALL {
            if let Err(e) = restore_map(scheme, tracks, &areas, entries.iter().copied()) {
                prop_assert_eq!(e.kind(), ErrorKind::Corrupt);
            }
        }
    }
}

/// Inserts (op 0, 1), removes (op 2) and lookups on `table` and a
/// reference, compared after every step.
fn sorted_map_ops<const C: usize, const G: usize>(
    mut table: SparseTable<u32, C, G>,
    ops: &[(u64, u8, u32)],
) -> std::result::Result<(), TestCaseError> {
    let mut reference = BTreeMap::new();
    for &(k, op, v) in ops {
        if op < 2 {
            prop_assert_eq!(table.insert(k, v), reference.insert(k, v));
        } else {
            prop_assert_eq!(table.remove(k), reference.remove(&k));
        }
        prop_assert_eq!(table.get(k), reference.get(&k));
        prop_assert_eq!(table.len(), reference.len());
    }
    if let Some(v) = reference.keys().next().and_then(|&k| table.get_mut(k)) {
        *v = v.wrapping_add(1);
    }
    if let Some(v) = reference.values_mut().next() {
        *v = v.wrapping_add(1);
    }
    let all: Vec<(u64, u32)> = table.iter().collect();
    let want: Vec<(u64, u32)> = reference.into_iter().collect();
    prop_assert_eq!(all, want);
    Ok(())
}

/// Ascending and descending runs (the split-on-append path) read back in
/// order.
#[test]
fn sparse_table_runs() {
    let mut table = SparseTable::<u64, 4, 3>::new();
    let keys: Vec<u64> = (0..500)
        .chain((1000..1500).rev())
        .chain((600..700).rev())
        .collect();
    for &k in &keys {
        assert_eq!(table.insert(k, k * 2), None);
    }
    let mut want = keys.clone();
    want.sort_unstable();
    let got: Vec<u64> = table
        .iter()
        .map(|(k, v)| {
            assert_eq!(v, k * 2);
            k
        })
        .collect();
    assert_eq!(got, want);
    for &k in &keys {
        assert_eq!(table.remove(k), Some(k * 2));
    }
    assert!(table.is_empty() && table.iter().next().is_none());
}

#[test]
fn new_map_passes_on_the_source_error() {
    for scheme in Scheme::ALL {
        let mut src = TestSource::new();
        src.fail = true;
        match new_map(scheme, 5000, &mut src) {
            Ok(map) => {
                assert!(!matches!(scheme, Scheme::Bitmap | Scheme::MultilevelBitmap));
                assert!(map.areas().is_empty());
            }
            Err(e) => {
                assert!(matches!(scheme, Scheme::Bitmap | Scheme::MultilevelBitmap));
                assert_eq!(e.message(), SOURCE_FULL);
            }
        }
        assert!(src.areas.is_empty() && src.slots.is_empty());
    }
}

#[test]
fn zero_tracks_is_refused() {
    for scheme in Scheme::ALL {
        let e = new_map(scheme, 0, &mut TestSource::new()).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Invalid);
    }
}

/// Maps too large for the machine are refused, nothing reserved; the
/// sparse schemes need no memory up front.
#[test]
fn huge_maps_are_refused_not_aborted() {
    let tracks = 1u64 << 62;
    for scheme in Scheme::ALL {
        let mut src = TestSource::new();
        match new_map(scheme, tracks, &mut src) {
            Ok(map) => assert!(
                matches!(scheme, Scheme::ChangedPointer | Scheme::PartialBitmap)
                    && map.memory_bytes() == 0
            ),
            Err(e) => assert!(
                matches!(e.kind(), ErrorKind::NoSpace | ErrorKind::Invalid),
                "{scheme}: {e}"
            ),
        }
        assert!(src.areas.is_empty(), "{scheme} reserved an area");
    }
}

/// A slot source that hands out a run ending past the last storable slot.
struct WrappingSource;

impl SlotSource for WrappingSource {
    fn alloc_slot(&mut self) -> Result<u64> {
        Ok(u64::MAX - 1)
    }
    fn alloc_area(&mut self, _n: u64) -> Result<u64> {
        Ok(u64::MAX - 10)
    }
}

#[test]
fn unstorable_slots_from_the_source_are_errors() {
    for scheme in Scheme::ALL {
        let placed = new_map(scheme, 100, &mut WrappingSource)
            .and_then(|mut map| map.place(50, &mut WrappingSource));
        let e = placed.err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{scheme}");
        assert!(
            e.message().contains("beyond the last slot"),
            "{scheme}: {}",
            e.message()
        );
    }
}

/// A set the map does not accept is a caller bug: a panic in debug
/// builds, ignored in release builds.
#[test]
#[cfg_attr(debug_assertions, should_panic(expected = "refuses set"))]
fn refused_set_is_ignored() {
    for scheme in Scheme::ALL {
        let mut src = TestSource::new();
        let mut map = new_map(scheme, 3000, &mut src).unwrap();
        let slot = map.place(7, &mut src).unwrap();
        let bad = [
            (7, Entry { slot, valid: 0 }),
            (3000, Entry { slot, valid: 1 }),
            (8, Entry { slot, valid: 1 }),
            (
                7,
                Entry {
                    slot: MAX_SLOT + 1,
                    valid: 1,
                },
            ),
        ];
        for (t, e) in bad {
            if map.accepts(t, e.slot) && e.valid != 0 {
                continue;
            }
            map.set(t, e);
            assert!(map.is_empty(), "{scheme}: set({t}, {e:?}) stored");
        }
    }
}

/// The error message of restoring a small map of `scheme` after `tamper`
/// changed its areas and entries.
fn tampered(scheme: Scheme, tamper: impl FnOnce(&mut Vec<Area>, &mut Vec<(u64, Entry)>)) -> String {
    let mut src = TestSource::new();
    let mut map = new_map(scheme, 3000, &mut src).unwrap();
    for t in [0, 5, 1500, 2999] {
        let slot = map.place(t, &mut src).unwrap();
        map.set(t, Entry { slot, valid: 0xFF });
    }
    let mut areas = map.areas();
    let mut entries: Vec<(u64, Entry)> = map.entries().collect();
    tamper(&mut areas, &mut entries);
    let e = restore_map(scheme, 3000, &areas, entries).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    e.message().to_string()
}

#[test]
fn restore_rejects_corrupt_input() {
    for scheme in Scheme::ALL {
        let beyond = tampered(scheme, |_, e| e[0].0 = 3000);
        assert!(beyond.contains("beyond the map"), "{beyond}");
        let empty = tampered(scheme, |_, e| e[1].1.valid = 0);
        assert!(empty.contains("no valid granules"), "{empty}");
        let twice = tampered(scheme, |_, e| e.push(e[0]));
        assert!(twice.contains("listed twice"), "{twice}");
        let overlap = tampered(scheme, |a, _| a.extend([(10, 5), (12, 5)]));
        assert!(overlap.contains("overlaps"), "{overlap}");
        let wrapped = tampered(scheme, |a, _| a.push((u64::MAX - 1, 1)));
        assert!(wrapped.contains("beyond the last slot"), "{wrapped}");
    }
}

#[test]
fn restore_rejects_load_point_slots_off_position() {
    for scheme in Scheme::ALL.into_iter().filter(|s| s.load_point()) {
        let moved = tampered(scheme, |_, e| e[1].1.slot += 1);
        assert!(
            moved.contains("not the track's position"),
            "{scheme}: {moved}"
        );
        if scheme == Scheme::PartialBitmap {
            // A slot outside every listed area is a packed extent's single
            // slot (`copy/pack.rs`); one inside another extent's area is
            // not.
            let inside = tampered(scheme, |a, e| e[3].1.slot = a[0].0 + 7);
            assert!(inside.contains("lies in the area"), "{inside}");
            continue;
        }
        let unlisted = tampered(scheme, |a, _| {
            a.pop();
        });
        let why = ["not the track's position", "one area of 3000 slots"];
        assert!(
            why.iter().any(|w| unlisted.contains(w)),
            "{scheme}: {unlisted}"
        );
    }
}

#[test]
fn restore_rejects_areas_of_pointer_schemes() {
    for scheme in [Scheme::FullPointer, Scheme::ChangedPointer] {
        let m = tampered(scheme, |a, _| a.push((1, 1)));
        assert!(m.contains("reserves no areas"), "{m}");
    }
}

#[test]
fn restore_rejects_bitmap_area_of_the_wrong_size() {
    for scheme in [Scheme::Bitmap, Scheme::MultilevelBitmap] {
        let m = tampered(scheme, |a, _| a[0].1 -= 1);
        assert!(m.contains("one area of 3000 slots"), "{m}");
    }
    let m = tampered(Scheme::PartialBitmap, |a, _| a[0].1 = 5);
    assert!(m.contains("fits no extent"), "{m}");
}

/// A partial area whose entries are all gone is still the map's after a
/// restart, and the next extent that needs a run gets it.
#[test]
fn partial_spare_area_is_reused() {
    let mut src = TestSource::new();
    let mut map = new_map(Scheme::PartialBitmap, 4 * PARTIAL_AREA_TRACKS, &mut src).unwrap();
    let slot = map.place(3, &mut src).unwrap();
    map.set(3, Entry { slot, valid: 1 });
    map.remove(3);
    let mut restored = round_trip(map.as_ref());
    assert_eq!(restored.areas(), src.areas);
    let t = 2 * PARTIAL_AREA_TRACKS + 9;
    let reused = restored.place(t, &mut src).unwrap();
    assert_eq!(reused, src.areas[0].0 + 9);
    assert_eq!(src.areas.len(), 1, "a new run was reserved");
}

fn page_error(page: u64, bytes: &[u8]) -> String {
    let e = decode_page(page, bytes).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    e.message().to_string()
}

#[test]
fn decode_rejects_bad_pages() {
    use crate::copy::page::{ENTRY_BYTES, PAGE_BYTES, VALID_OFFSET};
    let short = page_error(0, &[0; PAGE_BYTES - 1]);
    assert!(
        short.contains(&format!("{} bytes", PAGE_BYTES - 1)),
        "{short}"
    );
    let mut slot_only = [0u8; PAGE_BYTES];
    slot_only[3 * ENTRY_BYTES] = 5;
    let m = page_error(1, &slot_only);
    assert!(
        m.contains(&format!("track {}", PAGE_ENTRIES + 3)) && m.contains("no valid"),
        "{m}"
    );
    let mut mask_only = [0u8; PAGE_BYTES];
    mask_only[VALID_OFFSET] = 1;
    assert!(page_error(0, &mask_only).contains("no slot"));
    let past = page_error(u64::MAX / PAGE_ENTRIES + 1, &[0; PAGE_BYTES]);
    assert!(past.contains("beyond the last track"), "{past}");
}

/// Whole-track entries first, then a partial mask: the whole mask is
/// learned from the writes, and earlier entries keep theirs.
#[test]
fn masks_survive_a_wider_whole_mask() {
    for scheme in Scheme::ALL {
        let mut src = TestSource::new();
        let mut map = new_map(scheme, 2000, &mut src).unwrap();
        let masks = [
            (10, 0b1),
            (11, 0b11),
            (600, 0xFFFF),
            (1999, 0xF0),
            (12, 0xFFFF_FFFF),
        ];
        for (t, valid) in masks {
            let slot = map.place(t, &mut src).unwrap();
            map.set(t, Entry { slot, valid });
        }
        for (t, valid) in masks {
            assert_eq!(
                map.get(t).map(|e| e.valid),
                Some(valid),
                "{scheme} track {t}"
            );
        }
    }
}

/// The mask of the `i`th entry written: whole tracks, or one granule
/// each after a first whole track.
type Masks = fn(u64) -> u64;
const WHOLE: Masks = |_| 0xFFFF;
const GRANULE: Masks = |i| if i == 0 { 0xFFFF } else { 1 << (i % 16) };

/// Fills one in `every` of `map`'s tracks: scattered (every `every`th
/// track) or clustered (the first ones).
fn fill(map: &mut dyn TrackMap, src: &mut TestSource, every: u64, clustered: bool, masks: Masks) {
    for i in 0..map.tracks() / every {
        let t = if clustered { i } else { i * every };
        let slot = map.place(t, src).unwrap();
        map.set(
            t,
            Entry {
                slot,
                valid: masks(i),
            },
        );
    }
}

fn memory(scheme: Scheme, tracks: u64, every: u64, clustered: bool, masks: Masks) -> usize {
    let mut src = TestSource::new();
    let mut map = new_map(scheme, tracks, &mut src).unwrap();
    if every > 0 {
        fill(map.as_mut(), &mut src, every, clustered, masks);
    }
    map.memory_bytes()
}

#[test]
fn memory_of_the_schemes() {
    let tracks: u64 = 1 << 20;
    let bytes = |n: u64| usize::try_from(n).unwrap();
    let empty: HashMap<Scheme, usize> = Scheme::ALL
        .into_iter()
        .map(|s| (s, memory(s, tracks, 0, false, WHOLE)))
        .collect();
    let full = empty[&Scheme::FullPointer];
    assert!(
        full >= bytes(tracks * 16),
        "full pointer table is {full} bytes"
    );
    for s in [
        Scheme::ChangedPointer,
        Scheme::MultilevelBitmap,
        Scheme::PartialBitmap,
    ] {
        assert!(
            empty[&s] * 1000 <= full,
            "{s} holds {} bytes empty",
            empty[&s]
        );
    }
    let bitmap = empty[&Scheme::Bitmap];
    assert!(bytes(tracks / 8) <= bitmap && bitmap <= bytes(tracks / 8 + tracks / 64));

    let whole = memory(Scheme::Bitmap, tracks, 2, false, WHOLE);
    assert!(
        whole <= bytes(tracks / 8 + tracks / 64),
        "half-diverged bitmap is {whole} bytes"
    );
    let partial = memory(Scheme::Bitmap, tracks, 16, false, GRANULE);
    let side = (tracks / 16 - 1) * 24;
    assert!(
        partial >= bytes(tracks / 8 + side),
        "partial masks uncounted: {partial}"
    );

    let scattered = memory(Scheme::ChangedPointer, tracks, 10, false, WHOLE);
    assert!(
        scattered >= bytes(tracks / 10 * 24) && scattered < full,
        "changed: {scattered}"
    );
    for s in [Scheme::MultilevelBitmap, Scheme::PartialBitmap] {
        let clustered = memory(s, tracks, 10, true, WHOLE);
        // Partial areas are small (4 MiB at 64 KiB tracks: space is
        // reserved an area at a time), so they cost more than a level.
        let factor = if s == Scheme::PartialBitmap { 2 } else { 4 };
        assert!(
            clustered * factor <= bitmap,
            "{s} clustered 10%: {clustered} bytes"
        );
        let scattered = memory(s, tracks, 2, false, WHOLE);
        assert!(scattered >= bitmap, "{s} scattered 50%: {scattered} bytes");
    }
}
