//! Crash consistency: the raid5 write hole (and raid1 legs that differ)
//! after a power cut that kept a random subset of unflushed member
//! writes, closed by resyncing the ranges the write intent had marked.

use proptest::prelude::*;

use super::*;

/// A group filled with flushed data and a clean write intent.
fn settled(level: RaidLevel, n: usize) -> (Rig, Vec<u8>) {
    let rig = Rig::new(level, n, 8, None);
    let data = pattern(21, rig.cap() as usize);
    write(&rig.raid, 0, &data);
    crate::rt::block_on(rig.raid.flush()).unwrap();
    rig.intent.clear();
    (rig, data)
}

fn consistency(raid: &RaidDev, rig: &Rig) -> Vec<u64> {
    inconsistent_rows(
        raid.layout(),
        &snapshots(&rig.disks),
        &vec![true; rig.disks.len()],
    )
}

fn resync_marked(raid: &RaidDev, intent: &MemIntent) {
    for (off, len) in intent.marked() {
        let len = len.min(raid.size().saturating_sub(off));
        crate::rt::block_on(raid.resync(off, len)).unwrap();
    }
}

/// The hole is real: a partial write whose data reached the platter but
/// whose parity did not leaves a row whose parity lies, and a later
/// member loss returns wrong data for a strip nobody wrote. Resync of the
/// marked range repairs it.
#[test]
fn write_hole_is_real_and_resync_closes_it() {
    let (rig, data) = settled(RaidLevel::Raid5, 3);
    let l = rig.raid.layout().clone();
    write(&rig.raid, 0, &[0xee; 1024]);
    let (d0, d1, p) = (
        l.data_member(0, 0).unwrap(),
        l.data_member(0, 1).unwrap(),
        l.parity_member(0).unwrap(),
    );
    rig.disks[d0].crash(|_| true);
    rig.disks[p].crash(|_| false);
    rig.disks[d1].crash(|_| false);
    let mut want = data.clone();
    want[..1024].fill(0xee);
    let raid = rig.reopen();
    assert_eq!(
        consistency(&raid, &rig),
        vec![0],
        "the crash must leave row 0's parity stale"
    );
    raid.fail_member(d1).unwrap();
    let lost = crate::rt::block_on(read_vec(&raid, S, S as usize)).unwrap();
    assert_ne!(
        lost,
        want[S as usize..2 * S as usize],
        "without resync a rebuilt strip is wrong"
    );
    let raid = rig.reopen();
    assert_eq!(rig.intent.marked(), vec![(0, l.lock_grain())]);
    resync_marked(&raid, &rig.intent);
    assert!(consistency(&raid, &rig).is_empty());
    raid.fail_member(d1).unwrap();
    assert_eq!(read_all(&raid), want);
}

/// Runs a crash window: non-overlapping writes, then every member keeps a
/// random subset of its unflushed writes.
fn crash_window(
    level: RaidLevel,
    n: usize,
    writes: Vec<(u64, u64, bool)>,
    keep: u64,
) -> Result<(), TestCaseError> {
    let (rig, old) = settled(level, n);
    let cap = rig.cap();
    let mut new = old.clone();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for (i, (a, b, fua)) in writes.into_iter().enumerate() {
        let off = (a % (cap / 512)) * 512;
        let len = (512 * (1 + b % 24)).min(cap - off);
        if ranges.iter().any(|&(o, l)| off < o + l && o < off + len) {
            continue;
        }
        let d = pattern(300 + i as u64, len as usize);
        crate::rt::block_on(write_slice(&rig.raid, off, &d, fua)).unwrap();
        new[off as usize..(off + len) as usize].copy_from_slice(&d);
        ranges.push((off, len));
    }
    for (m, disk) in rig.disks.iter().enumerate() {
        disk.crash(|i| (keep >> ((m * 17 + i * 5) % 64)) & 1 == 1);
    }
    let raid = rig.reopen();
    let g = raid.layout().lock_grain();
    let marked = rig.intent.marked();
    let in_marks = |row: u64| marked.iter().any(|&(o, l)| o <= row * g && row * g < o + l);
    for row in consistency(&raid, &rig) {
        let addr_row = match level {
            RaidLevel::Raid5 => row,
            _ => row * S / g,
        };
        prop_assert!(
            in_marks(addr_row),
            "row {} is inconsistent but was not marked",
            row
        );
    }
    resync_marked(&raid, &rig.intent);
    prop_assert_eq!(consistency(&raid, &rig), Vec::<u64>::new());
    let got = read_all(&raid);
    for (s, sector) in got.chunks(512).enumerate() {
        let at = s * 512..(s + 1) * 512;
        let row = (s as u64 * 512) / g;
        let touched = ranges
            .iter()
            .any(|&(o, l)| o / g <= row && row <= (o + l - 1) / g);
        if touched {
            prop_assert!(
                sector == &old[at.clone()] || sector == &new[at],
                "sector {} is neither old nor new",
                s
            );
        } else {
            prop_assert!(
                sector == &old[at],
                "sector {} in an unwritten row changed",
                s
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn resync_closes_the_write_hole(
        shape in prop_oneof![
            Just((RaidLevel::Raid5, 3)),
            Just((RaidLevel::Raid5, 4)),
            Just((RaidLevel::Raid1, 2)),
            Just((RaidLevel::Raid1, 3))
        ],
        writes in proptest::collection::vec((any::<u64>(), any::<u64>(), proptest::bool::weighted(0.2)), 1..6),
        keep in any::<u64>(),
    ) {
        crash_window(shape.0, shape.1, writes, keep)?;
    }
}

/// After an unclean stop, raid1 legs may disagree inside marked ranges:
/// until resync, every read there must come from the same leg (the one
/// resync copies from), so two reads never return different data.
#[test]
fn unsynced_mirror_reads_one_leg_until_resynced() {
    let rig = Rig::new(RaidLevel::Raid1, 3, 8, None);
    let len = usize::try_from(S).unwrap();
    // Legs disagree on row 2, as a crash between leg writes leaves them.
    crate::rt::block_on(async {
        for (i, d) in rig.disks.iter().enumerate() {
            let data = vec![i as u8 + 1; len];
            crate::blockdev::write_slice(&**d, 2 * S, &data, false)
                .await
                .unwrap();
        }
    });
    let raid = rig.reopen();
    raid.mark_unsynced(&[(2 * S, S)]);
    crate::rt::block_on(async {
        for _ in 0..12 {
            let got = crate::blockdev::read_vec(&raid, 2 * S, len).await.unwrap();
            assert_eq!(
                got,
                vec![1u8; len],
                "every read comes from leg 0 until resync"
            );
        }
        raid.resync(2 * S, S).await.unwrap();
    });
    let images = snapshots(&rig.disks);
    for img in &images {
        assert_eq!(
            &img[(2 * S) as usize..(3 * S) as usize],
            &vec![1u8; len][..]
        );
    }
    // Without the mark, reads spread over the legs and see the difference:
    // the steering above is what kept them equal.
    let rig2 = Rig::new(RaidLevel::Raid1, 3, 8, None);
    crate::rt::block_on(async {
        for (i, d) in rig2.disks.iter().enumerate() {
            crate::blockdev::write_slice(&**d, 0, &vec![i as u8 + 1; len], false)
                .await
                .unwrap();
        }
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..12 {
            seen.insert(crate::blockdev::read_vec(&rig2.raid, 0, len).await.unwrap()[0]);
        }
        assert!(seen.len() > 1, "legs are read in turn: {seen:?}");
    });
}
