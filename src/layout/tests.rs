//! Unit and property tests of the layout math.

use proptest::prelude::*;

use super::*;
use crate::error::ErrorKind;

const K: u64 = 1024;

fn err_msg(level: RaidLevel, stripe: u64, sizes: &[u64]) -> String {
    match Layout::new(level, stripe, sizes) {
        Ok(_) => String::from("ok"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Invalid);
            e.message().to_string()
        }
    }
}

#[test]
fn validation_messages() {
    let m = 1 << 20;
    assert_eq!(
        err_msg(RaidLevel::Raid5, DEFAULT_STRIPE, &[m, m]),
        "raid5 needs at least 3 disks, got 2"
    );
    assert_eq!(
        err_msg(RaidLevel::Raid1, DEFAULT_STRIPE, &[m]),
        "raid1 needs at least 2 disks, got 1"
    );
    assert_eq!(
        err_msg(RaidLevel::Concat, DEFAULT_STRIPE, &[]),
        "concat needs at least 1 disk, got 0"
    );
    assert!(err_msg(RaidLevel::Raid0, 3 * 4096, &[m, m]).contains("power of two"));
    assert!(err_msg(RaidLevel::Raid0, 2048, &[m, m]).contains("at least 4.0 KiB"));
    assert_eq!(
        err_msg(RaidLevel::Raid0, DEFAULT_STRIPE, &[m, 1000]),
        "disk 1 holds 1000 B, less than one strip (64.0 KiB)"
    );
    assert_eq!(err_msg(RaidLevel::Raid1, 4096, &[m, m]), "ok");
}

#[test]
fn capacities() {
    let s = 64 * K;
    let l = Layout::new(RaidLevel::Concat, s, &[3 * s + 5, 2 * s]).unwrap();
    assert_eq!(l.capacity(), 5 * s);
    let l = Layout::new(RaidLevel::Raid0, s, &[3 * s + 5, 2 * s, 4 * s]).unwrap();
    assert_eq!(l.capacity(), 6 * s);
    let l = Layout::new(RaidLevel::Raid1, s, &[3 * s + 5, 4 * s, 4 * s]).unwrap();
    assert_eq!(l.capacity(), 3 * s);
    let l = Layout::new(RaidLevel::Raid5, s, &[3 * s, 4 * s, 4 * s, 9 * s]).unwrap();
    assert_eq!(l.capacity(), 9 * s);
    assert_eq!(l.rows(), 3);
    assert!(Layout::new(RaidLevel::Raid0, 1 << 62, &[1 << 63, 1 << 63, 1 << 63]).is_err());
}

#[test]
fn raid0_formula() {
    let s = 4096;
    let l = Layout::new(RaidLevel::Raid0, s, &[8 * s; 3]).unwrap();
    let p: Vec<Piece> = l.map(s * 4 + 100, 2 * s).unwrap().collect();
    // chunk 4 -> member 1 at row 1; chunk 5 -> member 2 at row 1; chunk 6 -> member 0 row 2
    assert_eq!(
        p,
        vec![
            Piece {
                addr: 4 * s + 100,
                member: 1,
                member_off: s + 100,
                len: s - 100
            },
            Piece {
                addr: 5 * s,
                member: 2,
                member_off: s,
                len: s
            },
            Piece {
                addr: 6 * s,
                member: 0,
                member_off: 2 * s,
                len: 100
            },
        ]
    );
}

#[test]
fn raid5_left_symmetric() {
    let s = 4096;
    let l = Layout::new(RaidLevel::Raid5, s, &[8 * s; 4]).unwrap();
    // md left-symmetric, 4 disks: parity on 3,2,1,0,3,...; data follows parity.
    let parity: Vec<usize> = (0..5).map(|r| l.parity_member(r).unwrap()).collect();
    assert_eq!(parity, vec![3, 2, 1, 0, 3]);
    let row1: Vec<usize> = (0..3).map(|i| l.data_member(1, i).unwrap()).collect();
    assert_eq!(row1, vec![3, 0, 1]);
    assert_eq!(l.strip_of(1, 2), None);
    assert_eq!(l.strip_of(1, 3), Some(0));
    assert_eq!(l.locate(2, s + 7), Some(Role::Parity { row: 1 }));
    assert_eq!(l.locate(0, s + 7), Some(Role::Data { addr: 4 * s + 7 }));
    assert_eq!(l.locate(0, 8 * s), None);
    assert_eq!(
        Layout::new(RaidLevel::Raid0, s, &[s; 2])
            .unwrap()
            .parity_member(0),
        None
    );
}

#[test]
fn out_of_range() {
    let l = Layout::new(RaidLevel::Raid1, 4096, &[8192, 8192]).unwrap();
    assert_eq!(l.map(4096, 8192).unwrap_err().kind(), ErrorKind::OutOfRange);
    assert_eq!(
        l.map(u64::MAX, 2).unwrap_err().kind(),
        ErrorKind::OutOfRange
    );
    assert_eq!(l.map(8192, 0).unwrap().count(), 0);
}

fn arb_layout() -> impl Strategy<Value = Layout> {
    let level = prop_oneof![
        Just(RaidLevel::Concat),
        Just(RaidLevel::Raid0),
        Just(RaidLevel::Raid1),
        Just(RaidLevel::Raid5)
    ];
    (level, 0u32..3, 3usize..7).prop_flat_map(|(level, shift, n)| {
        let stripe = 4096u64 << shift;
        let sizes = proptest::collection::vec(stripe..stripe * 6 + 3000, level.min_members()..=n);
        sizes.prop_map(move |v| Layout::new(level, stripe, &v).unwrap())
    })
}

/// Owner of each 512-byte sector of member space: None if unused.
fn coverage(l: &Layout) -> Vec<Vec<Option<Role>>> {
    let mut cov: Vec<Vec<Option<Role>>> = (0..l.members())
        .map(|m| vec![None; (l.member_usable(m) / 512) as usize])
        .collect();
    for p in l.map(0, l.capacity()).unwrap() {
        for b in (0..p.len).step_by(512) {
            let slot = &mut cov[p.member][((p.member_off + b) / 512) as usize];
            assert!(slot.is_none(), "two addresses on one member sector: {p:?}");
            *slot = Some(Role::Data { addr: p.addr + b });
        }
    }
    for row in 0..l.rows() {
        if let Some(pm) = l.parity_member(row) {
            let s = l.stripe_size();
            for b in (0..s).step_by(512) {
                let slot = &mut cov[pm][((row * s + b) / 512) as usize];
                assert!(slot.is_none(), "parity overlaps data in row {row}");
                *slot = Some(Role::Parity { row });
            }
        }
    }
    cov
}

proptest! {
    /// The mapping is a bijection between the address space and member
    /// space (plus parity for raid5; leg 0 for raid1), and `locate`
    /// inverts it.
    #[test]
    fn bijection(l in arb_layout()) {
        let cov = coverage(&l);
        for (m, sectors) in cov.iter().enumerate() {
            let used_legs = if l.level() == RaidLevel::Raid1 { 1 } else { l.members() };
            for (i, owner) in sectors.iter().enumerate() {
                let off = i as u64 * 512;
                if m >= used_legs {
                    prop_assert_eq!(l.locate(m, off), cov[0][i]);
                    continue;
                }
                prop_assert!(owner.is_some(), "gap on member {} at {}", m, off);
                prop_assert_eq!(l.locate(m, off), *owner);
            }
        }
    }

    /// Pieces of any range are contiguous, stay inside one strip (or
    /// member), and agree with the byte-wise mapping.
    #[test]
    fn pieces_tile_requests(l in arb_layout(), a in 0u64..1 << 20, b in 0u64..1 << 20) {
        let cap = l.capacity();
        let (off, end) = ((a % (cap + 1)).min(b % (cap + 1)), (a % (cap + 1)).max(b % (cap + 1)));
        let mut pos = off;
        for p in l.map(off, end - off).unwrap() {
            prop_assert_eq!(p.addr, pos);
            prop_assert!(p.len > 0);
            prop_assert!(p.member_off + p.len <= l.member_usable(p.member));
            if matches!(l.level(), RaidLevel::Raid0 | RaidLevel::Raid5) {
                prop_assert!(p.intra(&l) + p.len <= l.stripe_size());
            }
            for x in [0, p.len - 1] {
                prop_assert_eq!(l.locate(p.member, p.member_off + x), Some(Role::Data { addr: p.addr + x }));
            }
            pos += p.len;
        }
        prop_assert_eq!(pos, end);
    }

    /// Parity rotates: over n consecutive rows every member holds parity
    /// exactly once, and a row's data strips are the other members.
    #[test]
    fn parity_rotates(n in 3usize..9, start in 0u64..1000) {
        let l = Layout::new(RaidLevel::Raid5, 4096, &vec![4096 * 2000; n]).unwrap();
        let mut seen = vec![0; n];
        for r in start..start + n as u64 {
            let p = l.parity_member(r).unwrap();
            seen[p] += 1;
            let mut data: Vec<usize> = (0..n - 1).map(|i| l.data_member(r, i).unwrap()).collect();
            data.push(p);
            data.sort_unstable();
            prop_assert_eq!(data, (0..n).collect::<Vec<_>>());
            for i in 0..n - 1 {
                prop_assert_eq!(l.strip_of(r, l.data_member(r, i).unwrap()), Some(i));
            }
        }
        prop_assert!(seen.iter().all(|&c| c == 1));
    }
}
