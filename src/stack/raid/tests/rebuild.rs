//! Degraded operation, rebuild interleaved with host I/O, and hot replace.

use futures::future::join_all;

use super::*;
use crate::error::ErrorKind;
use crate::layout::Role;

/// Random aligned writes into the group and the model; `Some(k)` issues
/// them `k` at a time, non-overlapping.
async fn scribble(raid: &RaidDev, model: &mut [u8], rng: &mut Rng, count: usize) {
    let cap = model.len() as u64;
    let mut ops: Vec<(u64, Vec<u8>)> = Vec::new();
    for _ in 0..count {
        let off = rng.below(cap / 512) * 512;
        let len = (512 * (1 + rng.below(3 * S / 512))).min(cap - off);
        if ops
            .iter()
            .all(|(o, d)| off + len <= *o || o + d.len() as u64 <= off)
        {
            ops.push((off, pattern(rng.below(u64::MAX), len as usize)));
        }
    }
    let writes = ops.iter().map(|(o, d)| write_slice(raid, *o, d, false));
    for r in join_all(writes).await {
        r.unwrap();
    }
    for (o, d) in ops {
        model[o as usize..o as usize + d.len()].copy_from_slice(&d);
    }
}

async fn check_reads(raid: &RaidDev, model: &[u8], rng: &mut Rng) {
    for _ in 0..4 {
        let off = rng.below(model.len() as u64 / 512) * 512;
        let len = (512 * (1 + rng.below(4 * S / 512))).min(model.len() as u64 - off);
        let got = read_vec(raid, off, len as usize).await.unwrap();
        assert!(
            got == model[off as usize..(off + len) as usize],
            "read at {off}+{len} differs"
        );
    }
}

/// Fails member `victim` mid-sequence, keeps writing, replaces it and
/// rebuilds in steps interleaved with (and concurrent to) host writes.
fn degrade_and_rebuild(level: RaidLevel, n: usize, seed: u64) {
    let rig = Rig::new(level, n, 16, None);
    let fresh = Arc::new(MemDisk::new(16 * S));
    let mut rng = Rng(seed | 1);
    let victim = rng.below(n as u64) as usize;
    let mut model = vec![0u8; rig.cap() as usize];
    let raid = &rig.raid;
    crate::rt::block_on(async {
        scribble(raid, &mut model, &mut rng, 10).await;
        if seed.is_multiple_of(2) {
            rig.disks[victim].set_dead(true);
            let all = model.clone();
            write_slice(raid, 0, &all, false).await.unwrap();
            assert_eq!(rig.hooks.calls(), vec![victim]);
        } else {
            raid.fail_member(victim).unwrap();
        }
        assert_eq!(raid.health(), Health::Degraded);
        scribble(raid, &mut model, &mut rng, 10).await;
        check_reads(raid, &model, &mut rng).await;
        raid.replace_member(victim, as_dev(&fresh)).unwrap();
        assert_eq!(raid.health(), Health::Rebuilding);
        let mut cursor = 0;
        while cursor < raid.rows() {
            let to = (cursor + 1 + rng.below(4)).min(raid.rows());
            let (r, ()) = futures::join!(
                raid.rebuild_rows(victim, cursor, to),
                scribble(raid, &mut model, &mut rng, 3)
            );
            r.unwrap();
            cursor = to;
            scribble(raid, &mut model, &mut rng, 3).await;
            check_reads(raid, &model, &mut rng).await;
        }
        assert_eq!(raid.member_state(victim), MemberState::Ok);
        assert_eq!(raid.health(), Health::Optimal);
    });
    assert_eq!(read_all(raid), model, "{level} x{n} seed {seed}");
    let mut images = snapshots(&rig.disks);
    images[victim] = fresh.snapshot();
    let bad = inconsistent_rows(raid.layout(), &images, &vec![true; n]);
    assert!(
        bad.is_empty(),
        "{level} x{n} seed {seed}: rows {bad:?} disagree after rebuild"
    );
}

#[test]
fn degraded_then_rebuilt_while_writing() {
    for seed in 1..9 {
        degrade_and_rebuild(RaidLevel::Raid1, 2, seed);
        degrade_and_rebuild(RaidLevel::Raid1, 3, seed);
        degrade_and_rebuild(RaidLevel::Raid5, 3, seed);
        degrade_and_rebuild(RaidLevel::Raid5, 4, seed);
    }
}

/// Hot replace of a concat member while writes continue: afterwards the
/// old member is no longer used and the new one holds its data.
#[test]
fn concat_hot_replace_while_writing() {
    let rig = Rig::new(RaidLevel::Concat, 3, 8, None);
    let raid = &rig.raid;
    let mut rng = Rng(77);
    let mut model = vec![0u8; rig.cap() as usize];
    let new = Arc::new(MemDisk::new(8 * S));
    crate::rt::block_on(async {
        scribble(raid, &mut model, &mut rng, 12).await;
        raid.replace_member(1, as_dev(&new)).unwrap();
        assert_eq!(raid.member_state(1), MemberState::Rebuilding { cursor: 0 });
        for row in 0..raid.rows() {
            let (r, ()) = futures::join!(
                raid.rebuild_rows(1, row, row + 1),
                scribble(raid, &mut model, &mut rng, 4)
            );
            r.unwrap();
            let member1 = model[8 * S as usize..16 * S as usize].to_vec();
            write_slice(raid, 8 * S + row * S, &member1[..512], false)
                .await
                .unwrap();
            check_reads(raid, &model, &mut rng).await;
        }
    });
    assert_eq!(raid.member_state(1), MemberState::Ok);
    assert_eq!(raid.health(), Health::Optimal);
    let old = &rig.disks[1];
    let (reads, writes) = (
        old.reads.load(std::sync::atomic::Ordering::Relaxed),
        old.writes.load(std::sync::atomic::Ordering::Relaxed),
    );
    crate::rt::block_on(async {
        scribble(raid, &mut model, &mut rng, 12).await;
        raid.flush().await.unwrap();
    });
    assert_eq!(read_all(raid), model);
    assert_eq!(
        old.reads.load(std::sync::atomic::Ordering::Relaxed),
        reads,
        "old member still read"
    );
    assert_eq!(
        old.writes.load(std::sync::atomic::Ordering::Relaxed),
        writes,
        "old member still written"
    );
    assert_eq!(new.snapshot(), model[8 * S as usize..16 * S as usize]);
}

/// Hot replace of a raid5 member that fails some reads: those rows come
/// from redundancy, the member is not failed.
#[test]
fn raid5_hot_replace_falls_back_to_reconstruction() {
    let rig = Rig::new(RaidLevel::Raid5, 4, 8, None);
    let raid = &rig.raid;
    let data = pattern(9, rig.cap() as usize);
    write(raid, 0, &data);
    rig.disks[2].add_bad_read(3 * S + 1024, 512);
    let new = Arc::new(MemDisk::new(8 * S));
    raid.replace_member(2, as_dev(&new)).unwrap();
    assert_eq!(read_all(raid), data);
    let reads = |m: usize| {
        rig.disks[m]
            .reads
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before: Vec<u64> = (0..4).map(reads).collect();
    crate::rt::block_on(raid.rebuild_rows(2, 0, raid.rows())).unwrap();
    assert_eq!(raid.member_state(2), MemberState::Ok);
    assert!(rig.hooks.calls().is_empty());
    // The member's 8 rows are one span: read at once, which fails, then
    // row by row; only row 3 comes from the other members.
    let used: Vec<u64> = (0..4).map(|m| reads(m) - before[m]).collect();
    assert_eq!(used, [1, 1, 1 + 8, 1]);
    rig.disks[2].set_dead(true);
    assert_eq!(read_all(raid), data);
    let mut images = snapshots(&rig.disks);
    images[2] = new.snapshot();
    assert!(inconsistent_rows(raid.layout(), &images, &[true; 4]).is_empty());
}

/// A failing replacement of a raid0 member is dropped; the old member
/// keeps serving and nothing is lost.
#[test]
fn raid0_failing_replacement_is_cancelled() {
    let rig = Rig::new(RaidLevel::Raid0, 2, 8, None);
    let raid = &rig.raid;
    let data = pattern(11, rig.cap() as usize);
    write(raid, 0, &data);
    let new = Arc::new(MemDisk::new(8 * S));
    // A copy writes a span of rows at once: the first span succeeds, the
    // second write fails.
    new.fail_writes_after(1);
    raid.replace_member(0, as_dev(&new)).unwrap();
    crate::rt::block_on(raid.rebuild_rows(0, 0, 2)).unwrap();
    let e = crate::rt::block_on(raid.rebuild_rows(0, 2, raid.rows())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert_eq!(raid.member_state(0), MemberState::Ok);
    assert_eq!(read_all(raid), data);
    write(raid, 0, &data[..4096]);
    assert!(rig.hooks.calls().is_empty());
}

#[test]
fn replace_and_rebuild_refuse_what_cannot_work() {
    let concat = Rig::new(RaidLevel::Concat, 2, 8, Some(1));
    let e = concat
        .raid
        .replace_member(1, Arc::new(MemDisk::new(8 * S)))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    let rig = Rig::new(RaidLevel::Raid5, 3, 8, Some(0));
    let small = rig
        .raid
        .replace_member(0, Arc::new(MemDisk::new(4 * S)))
        .unwrap_err();
    assert_eq!(small.kind(), ErrorKind::Invalid);
    rig.raid
        .replace_member(0, Arc::new(MemDisk::new(8 * S)))
        .unwrap();
    let again = rig
        .raid
        .replace_member(0, Arc::new(MemDisk::new(8 * S)))
        .unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Conflict);
    let skip = crate::rt::block_on(rig.raid.rebuild_rows(0, 2, 4)).unwrap_err();
    assert_eq!(skip.kind(), ErrorKind::Invalid);
    let healthy = crate::rt::block_on(rig.raid.rebuild_rows(1, 0, 1)).unwrap_err();
    assert_eq!(healthy.kind(), ErrorKind::Invalid);
    crate::rt::block_on(rig.raid.rebuild_rows(0, 0, 3)).unwrap();
    assert_eq!(
        rig.raid.member_state(0),
        MemberState::Rebuilding { cursor: 3 }
    );
}

/// An admin fail never takes a group below what its level survives: a
/// second raid5 member, a raid1's last leg, any raid0 member, or an Ok
/// member while another is still being rebuilt.
#[test]
fn an_admin_fail_that_would_lose_data_is_refused() {
    let refused = |raid: &RaidDev, idx: usize| {
        let e = raid.fail_member(idx).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
        assert!(e.message().contains("its data would be lost"), "{e}");
    };
    let r5 = Rig::new(RaidLevel::Raid5, 3, 8, None);
    r5.raid.fail_member(1).unwrap();
    r5.raid.fail_member(1).unwrap();
    refused(&r5.raid, 0);
    assert_eq!(r5.raid.health(), Health::Degraded);
    r5.raid
        .replace_member(1, Arc::new(MemDisk::new(8 * S)))
        .unwrap();
    refused(&r5.raid, 2);
    r5.raid.fail_member(1).unwrap();

    let r1 = Rig::new(RaidLevel::Raid1, 3, 8, None);
    r1.raid.fail_member(0).unwrap();
    r1.raid.fail_member(2).unwrap();
    refused(&r1.raid, 1);
    let r0 = Rig::new(RaidLevel::Raid0, 2, 8, None);
    refused(&r0.raid, 0);
    assert_eq!(r0.raid.health(), Health::Optimal);
}

/// Every row is rebuilt while a host write to that same row is in flight:
/// the row lock must keep the copy from overwriting newer data.
#[test]
fn rebuild_races_writes_to_the_same_row() {
    for (level, n) in [
        (RaidLevel::Raid1, 2),
        (RaidLevel::Raid5, 3),
        (RaidLevel::Concat, 2),
    ] {
        let rig = Rig::new(level, n, 16, None);
        let raid = &rig.raid;
        let mut model = pattern(5, rig.cap() as usize);
        write(raid, 0, &model);
        if level != RaidLevel::Concat {
            raid.fail_member(1).unwrap();
        }
        let new = Arc::new(MemDisk::new(16 * S));
        raid.replace_member(1, as_dev(&new)).unwrap();
        let g = raid.layout().lock_grain();
        crate::rt::block_on(async {
            for row in 0..raid.rows() {
                let addr = match raid.layout().locate(1, row * S) {
                    Some(Role::Data { addr }) => addr,
                    _ => row * g,
                };
                let data = pattern(100 + row, 1024);
                let (r, w) = futures::join!(
                    raid.rebuild_rows(1, row, row + 1),
                    write_slice(raid, addr, &data, false)
                );
                r.unwrap();
                w.unwrap();
                model[addr as usize..addr as usize + 1024].copy_from_slice(&data);
            }
        });
        assert_eq!(raid.member_state(1), MemberState::Ok);
        let mut images = snapshots(&rig.disks);
        images[1] = new.snapshot();
        let bad = inconsistent_rows(raid.layout(), &images, &vec![true; n]);
        assert!(bad.is_empty(), "{level}: rows {bad:?} disagree");
        rig.disks[0].set_dead(level != RaidLevel::Concat);
        assert_eq!(read_all(raid), model, "{level}");
    }
}

/// Sparing: while a failing raid5 or raid1 member is copied to its spare,
/// host reads and writes never read it (its rows are rebuilt from the
/// others); only the copy does. When another member is lost meanwhile,
/// the failing one serves again, so nothing becomes unreadable.
#[test]
fn a_spared_member_is_read_only_by_its_copy() {
    for level in [RaidLevel::Raid5, RaidLevel::Raid1] {
        let n = if level == RaidLevel::Raid1 { 2 } else { 4 };
        let rig = Rig::new(level, n, 8, None);
        let raid = &rig.raid;
        let mut rng = Rng(5);
        let mut model = pattern(3, rig.cap() as usize);
        write(raid, 0, &model);
        let new = Arc::new(MemDisk::new(8 * S));
        raid.replace_member(1, as_dev(&new)).unwrap();
        raid.set_spared(Some(1));
        assert_eq!(raid.spared(), Some(1));
        let old = &rig.disks[1];
        let reads = || old.reads.load(std::sync::atomic::Ordering::Relaxed);
        let before = reads();
        crate::rt::block_on(async {
            scribble(raid, &mut model, &mut rng, 12).await;
            check_reads(raid, &model, &mut rng).await;
        });
        assert_eq!(read_all(raid), model, "{level}");
        assert_eq!(reads(), before, "{level}: host I/O read the failing member");
        crate::rt::block_on(raid.rebuild_rows(1, 0, 4)).unwrap();
        let copied = reads();
        assert!(copied > before, "{level}: the copy reads it");
        // A read error on another member past the cursor: the row is
        // rebuilt with the failing member's help, the host sees no error.
        rig.disks[0].add_bad_read(6 * S, 512);
        rig.disks[0].add_bad_read(7 * S + 1024, 512);
        assert_eq!(read_all(raid), model, "{level}: a second error");
        rig.disks[0].add_bad_read(5 * S, S);
        crate::rt::block_on(scribble(raid, &mut model, &mut rng, 12));
        assert_eq!(read_all(raid), model, "{level}: writes past a second error");
        let helped = reads();
        assert!(helped > copied, "{level}: the failing member helped");
        // Another member lost: rows past the cursor need the failing one.
        rig.disks[0].set_dead(true);
        raid.fail_member(0).ok();
        assert_eq!(read_all(raid), model, "{level}: still readable");
        assert!(reads() > helped, "{level}: the failing member served again");
    }
}
