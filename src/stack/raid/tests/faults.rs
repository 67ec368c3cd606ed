//! Read errors, write errors, flush errors, dead groups, fast zeroes and
//! allocation status.

use futures::future::join_all;

use super::*;
use crate::blockdev::{ZeroFlags, status};
use crate::error::ErrorKind;
use crate::layout::Role;

/// A group filled with pattern data (flushed); returns the data.
fn filled(rig: &Rig, seed: u64) -> Vec<u8> {
    let data = pattern(seed, rig.cap() as usize);
    write(&rig.raid, 0, &data);
    crate::rt::block_on(rig.raid.flush()).unwrap();
    data
}

/// Overwrites member bytes behind the group's back.
fn corrupt(disk: &MemDisk, off: u64, len: u64) {
    crate::rt::block_on(write_slice(disk, off, &vec![0xa5; len as usize], false)).unwrap();
}

#[test]
fn raid1_read_error_is_answered_and_repaired() {
    let rig = Rig::new(RaidLevel::Raid1, 2, 8, None);
    let data = filled(&rig, 1);
    corrupt(&rig.disks[0], S, S);
    rig.disks[0].add_bad_read(S + 512, 512);
    for _ in 0..4 {
        let got = crate::rt::block_on(read_vec(&rig.raid, S, S as usize)).unwrap();
        assert_eq!(got, data[S as usize..2 * S as usize]);
    }
    assert_eq!(read_all(&rig.raid), data);
    assert_eq!(
        rig.disks[0].snapshot()[S as usize..2 * S as usize],
        data[S as usize..2 * S as usize],
        "leg 0 was not repaired"
    );
    assert_eq!(rig.raid.member_state(0), MemberState::Ok);
    assert!(rig.hooks.calls().is_empty());
}

#[test]
fn raid1_failed_repair_fails_the_leg() {
    let rig = Rig::new(RaidLevel::Raid1, 2, 8, None);
    let data = filled(&rig, 2);
    rig.disks[0].add_bad_read(0, 512);
    rig.disks[0].fail_writes_after(0);
    for _ in 0..3 {
        assert_eq!(
            crate::rt::block_on(read_vec(&rig.raid, 0, 4096)).unwrap(),
            data[..4096]
        );
    }
    assert_eq!(rig.raid.member_state(0), MemberState::Failed);
    assert_eq!(rig.hooks.calls(), vec![0]);
    assert_eq!(rig.raid.health(), Health::Degraded);
    assert_eq!(read_all(&rig.raid), data);
}

#[test]
fn raid5_read_error_is_rebuilt_and_repaired() {
    let rig = Rig::new(RaidLevel::Raid5, 4, 8, None);
    let data = filled(&rig, 3);
    let l = rig.raid.layout().clone();
    let m = l.data_member(2, 1).unwrap();
    corrupt(&rig.disks[m], 2 * S, S);
    rig.disks[m].add_bad_read(2 * S + 512, 1024);
    assert_eq!(read_all(&rig.raid), data);
    let Some(Role::Data { addr }) = l.locate(m, 2 * S) else {
        panic!("not data")
    };
    let strip = &rig.disks[m].snapshot()[2 * S as usize..3 * S as usize];
    assert_eq!(
        strip,
        &data[addr as usize..(addr + S) as usize],
        "strip was not repaired"
    );
    assert_eq!(rig.raid.member_state(m), MemberState::Ok);
    assert!(rig.hooks.calls().is_empty());
    assert_consistent(&rig);
}

fn write_error_case(level: RaidLevel, n: usize) {
    let rig = Rig::new(level, n, 8, None);
    let mut model = filled(&rig, 4);
    rig.disks[1].fail_writes_after(0);
    let cap = rig.cap();
    let ranges: Vec<(u64, u64)> = (0..6)
        .map(|i| {
            (
                i * cap / 6 / 512 * 512,
                (3 * 512 + i * 1024).min(cap / 6 / 512 * 512),
            )
        })
        .collect();
    let writes = ranges.iter().enumerate().map(|(i, &(o, l))| {
        let d = pattern(10 + i as u64, l as usize);
        let raid = &rig.raid;
        async move { write_slice(raid, o, &d, false).await.map(|()| (o, d)) }
    });
    for r in crate::rt::block_on(join_all(writes)) {
        let (o, d) = r.unwrap();
        model[o as usize..o as usize + d.len()].copy_from_slice(&d);
    }
    write(&rig.raid, 0, &model[..8192]);
    assert_eq!(
        rig.hooks.calls(),
        vec![1],
        "member 1 must be failed exactly once"
    );
    assert_eq!(rig.raid.member_state(1), MemberState::Failed);
    assert_eq!(rig.raid.health(), Health::Degraded);
    assert_eq!(read_all(&rig.raid), model);
    assert_consistent(&rig);
}

#[test]
fn write_errors_fail_the_member_once() {
    write_error_case(RaidLevel::Raid1, 2);
    write_error_case(RaidLevel::Raid1, 3);
    write_error_case(RaidLevel::Raid5, 3);
    write_error_case(RaidLevel::Raid5, 4);
}

#[test]
fn write_errors_fail_the_request_without_redundancy() {
    for level in [RaidLevel::Raid0, RaidLevel::Concat] {
        let rig = Rig::new(level, 3, 8, None);
        rig.disks[1].fail_writes_after(0);
        let r = crate::rt::block_on(write_slice(
            &rig.raid,
            0,
            &vec![1; rig.cap() as usize],
            false,
        ));
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Io, "{level}");
        assert!(rig.hooks.calls().is_empty());
        assert_eq!(rig.raid.member_state(1), MemberState::Ok);
    }
}

#[test]
fn too_many_missing_members_make_the_group_unavailable() {
    let rig = Rig::new(RaidLevel::Raid5, 3, 8, None);
    rig.disks[1].set_dead(true);
    rig.disks[2].set_dead(true);
    let r = crate::rt::block_on(write_slice(&rig.raid, 0, &[7; 16384], false));
    let e = r.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{}", e.chain());
    assert_eq!(rig.raid.health(), Health::Failed);
    let e = crate::rt::block_on(read_vec(&rig.raid, 0, 512)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(
        e.message().contains("raid5 group has failed"),
        "{}",
        e.message()
    );
    assert_eq!(
        crate::rt::block_on(rig.raid.flush()).unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    let concat = Rig::new(RaidLevel::Concat, 2, 8, Some(0));
    let e = crate::rt::block_on(read_vec(&concat.raid, 8 * S, 512)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
}

#[test]
fn flush_error_fails_a_redundant_member() {
    let rig = Rig::new(RaidLevel::Raid1, 2, 8, None);
    let data = filled(&rig, 5);
    rig.disks[1].set_dead(true);
    crate::rt::block_on(rig.raid.flush()).unwrap();
    assert_eq!(rig.hooks.calls(), vec![1]);
    assert_eq!(read_all(&rig.raid), data);
    let raid0 = Rig::new(RaidLevel::Raid0, 2, 8, None);
    raid0.disks[0].set_dead(true);
    assert_eq!(
        crate::rt::block_on(raid0.raid.flush()).unwrap_err().kind(),
        ErrorKind::Io
    );
}

#[test]
fn raid5_fast_zero_of_a_partial_row_is_refused_up_front() {
    let rig = Rig::new(RaidLevel::Raid5, 3, 8, None);
    let data = filled(&rig, 6);
    let fast = ZeroFlags {
        fast_only: true,
        ..ZeroFlags::default()
    };
    let g = rig.raid.layout().lock_grain();
    let e = crate::rt::block_on(rig.raid.write_zeroes(512, 2 * g, fast)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert_eq!(read_all(&rig.raid), data);
    crate::rt::block_on(rig.raid.write_zeroes(g, 2 * g, fast)).unwrap();
    let mut want = data;
    want[g as usize..3 * g as usize].fill(0);
    assert_eq!(read_all(&rig.raid), want);
    assert_consistent(&rig);
}

#[test]
fn block_status_follows_members() {
    for level in [
        RaidLevel::Concat,
        RaidLevel::Raid0,
        RaidLevel::Raid1,
        RaidLevel::Raid5,
    ] {
        let rig = Rig::new(level, 3, 8, None);
        let cap = rig.cap();
        let st = crate::rt::block_on(rig.raid.block_status(0, cap)).unwrap();
        assert_eq!(
            st,
            vec![Extent {
                len: cap,
                flags: status::HOLE | status::ZERO
            }],
            "{level}"
        );
        write(&rig.raid, S, &[1; 4096]);
        let st = crate::rt::block_on(rig.raid.block_status(0, 3 * S)).unwrap();
        assert_eq!(
            st[0],
            Extent {
                len: S,
                flags: status::HOLE | status::ZERO
            },
            "{level}"
        );
        assert_eq!(st[1], Extent { len: S, flags: 0 }, "{level}");
    }
}

#[test]
fn raid1_reads_spread_over_legs() {
    let rig = Rig::new(RaidLevel::Raid1, 3, 8, None);
    let data = filled(&rig, 7);
    let before: Vec<u64> = rig
        .disks
        .iter()
        .map(|d| d.reads.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    for i in 0..12 {
        let got = crate::rt::block_on(read_vec(&rig.raid, i * 512, 512)).unwrap();
        assert_eq!(got, data[i as usize * 512..(i as usize + 1) * 512]);
    }
    for (d, b) in rig.disks.iter().zip(before) {
        assert!(
            d.reads.load(std::sync::atomic::Ordering::Relaxed) > b,
            "a leg was never read"
        );
    }
}

#[test]
fn new_checks_members_and_states() {
    let layout = Layout::new(RaidLevel::Raid5, S, &[8 * S; 3]).unwrap();
    let disk = || Some(Arc::new(MemDisk::new(8 * S)) as Arc<dyn BlockDev>);
    let intent = || Arc::new(crate::blockdev::NoIntent) as Arc<dyn WriteIntent>;
    let hooks = || Arc::new(NoHooks) as Arc<dyn RaidHooks>;
    let ok = vec![MemberState::Ok; 3];
    let short = RaidDev::new(
        layout.clone(),
        vec![disk(), disk()],
        ok.clone(),
        intent(),
        hooks(),
    );
    assert_eq!(short.err().unwrap().kind(), ErrorKind::Invalid);
    let missing = RaidDev::new(
        layout.clone(),
        vec![disk(), None, disk()],
        ok.clone(),
        intent(),
        hooks(),
    );
    assert_eq!(missing.err().unwrap().kind(), ErrorKind::Invalid);
    let small = Some(Arc::new(MemDisk::new(4 * S)) as Arc<dyn BlockDev>);
    let e = RaidDev::new(
        layout.clone(),
        vec![disk(), small, disk()],
        ok,
        intent(),
        hooks(),
    );
    assert!(
        e.err()
            .unwrap()
            .message()
            .contains("member 1 holds 16384 bytes")
    );
    let states = vec![
        MemberState::Ok,
        MemberState::Rebuilding { cursor: 3 },
        MemberState::Ok,
    ];
    let resumed = RaidDev::new(
        layout,
        vec![disk(), disk(), disk()],
        states,
        intent(),
        hooks(),
    )
    .unwrap();
    assert_eq!(resumed.health(), Health::Rebuilding);
    crate::rt::block_on(resumed.rebuild_rows(1, 3, resumed.rows())).unwrap();
    assert_eq!(resumed.health(), Health::Optimal);
}

/// The group's health is kept in an atomic (no lock per request): every
/// way a member changes must update it, and I/O must follow it.
#[test]
fn the_cached_health_follows_every_member_change() {
    let rig = Rig::new(RaidLevel::Raid5, 4, 16, None);
    let raid = &rig.raid;
    assert_eq!(raid.health(), Health::Optimal);
    crate::rt::block_on(async {
        let data: Vec<u8> = (0..3 * S as usize).map(|i| (i % 251) as u8).collect();
        write_slice(raid, 0, &data, false).await.unwrap();
        // An I/O error fails the member inside a write.
        rig.disks[1].set_dead(true);
        write_slice(raid, 0, &data, false).await.unwrap();
        assert_eq!(rig.hooks.calls(), vec![1]);
        assert_eq!(raid.health(), Health::Degraded);
        assert_eq!(read_vec(raid, 0, data.len()).await.unwrap(), data);
        // A second member out: the group stops, and I/O says so.
        raid.force_fail_member(2).unwrap();
        assert_eq!(raid.health(), Health::Failed);
        let e = read_vec(raid, 0, 4096).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        // The disk that failed last comes back as it was.
        raid.reinstate_member(2, as_dev(&rig.disks[2])).unwrap();
        assert_eq!(raid.health(), Health::Degraded);
        assert_eq!(read_vec(raid, 0, data.len()).await.unwrap(), data);
        // A new member being rebuilt, then current.
        let fresh = Arc::new(MemDisk::new(16 * S));
        raid.replace_member(1, as_dev(&fresh)).unwrap();
        assert_eq!(raid.health(), Health::Rebuilding);
        raid.rebuild_rows(1, 0, raid.rows()).await.unwrap();
        assert_eq!(raid.health(), Health::Optimal);
        rig.disks[3].set_dead(true);
        assert_eq!(read_vec(raid, 0, data.len()).await.unwrap(), data);
    });
}
