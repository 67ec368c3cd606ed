//! Multi-connection flush (`CAN_MULTI_CONN`): a FLUSH on one connection
//! makes durable every write completed on any connection to the export —
//! on a RAID-5 volume (in-process, over memory disks that lose unflushed
//! writes in a crash) and on an instant copy (the real daemon, where an
//! A2 copy's map entries commit only with a flush, and `kill -9` loses the
//! rest).

mod harness;
mod nbd_common;

use std::sync::Arc;

use ferrosan::blockdev::{BlockDev, NoIntent, WriteIntent};
use ferrosan::disk::MemDisk;
use ferrosan::layout::{Layout, RaidLevel};
use ferrosan::nbd::{ServerConfig, StaticExports};
use ferrosan::stack::{MemberState, NoHooks, RaidDev, RaidHooks};
use nbd_common::{Harness, Raw, cmd, flag, pattern};

const KIB: u64 = 1024;
const MIB: u64 = 1 << 20;
const STRIP: u64 = 64 * KIB;

struct Raid5 {
    h: Harness,
    raid: Arc<RaidDev>,
    disks: Vec<Arc<MemDisk>>,
}

/// A raid5 of three 4 MiB memory disks, 64 KiB strips, exported as "r5".
fn raid5() -> Raid5 {
    let disks: Vec<Arc<MemDisk>> = (0..3).map(|_| Arc::new(MemDisk::new(4 * MIB))).collect();
    let layout = Layout::new(RaidLevel::Raid5, STRIP, &[4 * MIB; 3]).unwrap();
    let raid = Arc::new(
        RaidDev::new(
            layout,
            disks
                .iter()
                .map(|d| Some(Arc::clone(d) as Arc<dyn BlockDev>))
                .collect(),
            vec![MemberState::Ok; 3],
            Arc::new(NoIntent) as Arc<dyn WriteIntent>,
            Arc::new(NoHooks) as Arc<dyn RaidHooks>,
        )
        .unwrap(),
    );
    let ex = Arc::new(StaticExports::new());
    ex.add("r5", "", Arc::clone(&raid) as Arc<dyn BlockDev>, false);
    Raid5 {
        h: Harness::start(ex, ServerConfig::default()),
        raid,
        disks,
    }
}

impl Raid5 {
    /// A power cut: every member loses every write not yet flushed.
    fn crash(&self) {
        for d in &self.disks {
            d.crash(|_| false);
        }
    }
}

/// Writes of connection `a`: whole rows, a strip, pieces of strips (the
/// parity read-modify-written), and a write across a row boundary.
fn writes(seed: u8) -> Vec<(u64, Vec<u8>)> {
    [
        (0, 2 * STRIP),
        (3 * STRIP, STRIP),
        (5 * STRIP + 4 * KIB, 8 * KIB),
        (8 * STRIP - 4 * KIB, 12 * KIB),
        (MIB + 512, 3000),
    ]
    .iter()
    .enumerate()
    .map(|(i, &(off, len))| (off, pattern(len as usize, seed.wrapping_add(i as u8))))
    .collect()
}

#[test]
fn a_flush_on_another_connection_makes_raid5_writes_durable() {
    let r = raid5();
    let mut a = Raw::open(r.h.port, "r5", true);
    let mut b = Raw::open(r.h.port, "r5", false);
    assert_eq!(b.flags & (1 << 8), 1 << 8, "CAN_MULTI_CONN");
    let data = writes(40);
    for (off, d) in &data {
        assert_eq!(a.write(*off, d, 0), 0);
    }
    assert!(
        r.disks.iter().any(|d| d.unflushed_writes() > 0),
        "the writes are not durable yet"
    );
    // b wrote nothing; its flush covers a's writes on every member.
    b.request(cmd::FLUSH, 0, 7, 0, 0);
    assert_eq!(b.reply(0).0.errno(), 0);
    for (i, d) in r.disks.iter().enumerate() {
        assert_eq!(d.unflushed_writes(), 0, "member {i} kept unflushed writes");
    }
    r.crash();
    for (off, d) in &data {
        same(
            &b.read(*off, d.len() as u32).unwrap(),
            d,
            &format!("at {off}"),
        );
    }
    // Parity was flushed too: without a member, every write reads back
    // through reconstruction.
    r.raid.fail_member(1).unwrap();
    for (off, d) in &data {
        same(
            &a.read(*off, d.len() as u32).unwrap(),
            d,
            &format!("degraded, at {off}"),
        );
    }
    r.h.stop();
}

#[test]
fn without_a_flush_a_crash_loses_raid5_writes_and_fua_keeps_them() {
    // The model can tell: what no connection flushed is gone after the
    // crash, so the test above fails when the flush does not reach it.
    let r = raid5();
    let mut a = Raw::open(r.h.port, "r5", true);
    let mut b = Raw::open(r.h.port, "r5", false);
    let data = writes(80);
    for (off, d) in &data {
        assert_eq!(a.write(*off, d, 0), 0);
    }
    r.crash();
    for (off, d) in &data {
        same(
            &b.read(*off, d.len() as u32).unwrap(),
            &vec![0; d.len()],
            &format!("lost, at {off}"),
        );
    }
    // A FUA write on one connection is durable at once, parity included,
    // with no flush.
    let fua = writes(120);
    for (off, d) in &fua {
        assert_eq!(a.write(*off, d, flag::FUA), 0);
    }
    r.crash();
    r.raid.fail_member(0).unwrap();
    for (off, d) in &fua {
        same(
            &b.read(*off, d.len() as u32).unwrap(),
            d,
            &format!("at {off}"),
        );
    }
    r.h.stop();
}

#[test]
fn a_crash_never_puts_an_older_write_over_a_fua_write_on_raid5() {
    let r = raid5();
    let mut a = Raw::open(r.h.port, "r5", true);
    let mut b = Raw::open(r.h.port, "r5", false);
    let (old, new) = (writes(10), writes(20));
    for (off, d) in &old {
        assert_eq!(a.write(*off, d, 0), 0);
    }
    for (off, d) in &new {
        assert_eq!(b.write(*off, d, flag::FUA), 0);
    }
    // Every member keeps every unflushed write it had: they land first,
    // the FUA writes (data and parity) over them.
    for d in &r.disks {
        d.crash(|_| true);
    }
    for (off, d) in &new {
        same(
            &a.read(*off, d.len() as u32).unwrap(),
            d,
            &format!("at {off}"),
        );
    }
    r.raid.fail_member(2).unwrap();
    for (off, d) in &new {
        same(
            &a.read(*off, d.len() as u32).unwrap(),
            d,
            &format!("degraded, at {off}"),
        );
    }
    r.h.stop();
}

#[test]
fn a_torn_crash_leaves_each_sector_old_or_new_and_fua_writes_whole_on_raid5() {
    let r = raid5();
    let mut a = Raw::open(r.h.port, "r5", true);
    let base = pattern(2 * MIB as usize, 99);
    assert_eq!(a.write(0, &base, 0), 0);
    a.request(cmd::FLUSH, 0, 5, 0, 0);
    assert_eq!(a.reply(0).0.errno(), 0);
    // FUA writes in the first MiB, unflushed ones in the second.
    let fua = writes(30);
    // (The first four of them do not overlap: each sector has one new
    // version.)
    let plain: Vec<(u64, Vec<u8>)> = writes(40)
        .into_iter()
        .take(4)
        .map(|(off, d)| (off + MIB, d))
        .collect();
    for (off, d) in &fua {
        assert_eq!(a.write(*off, d, flag::FUA), 0);
    }
    for (off, d) in &plain {
        assert_eq!(a.write(*off, d, 0), 0);
    }
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for (m, d) in r.disks.iter().enumerate() {
        d.crash_torn(|i, s| {
            x ^= x << 13 ^ (m * 7 + i * 31 + s) as u64;
            x ^= x >> 7;
            x ^= x << 17;
            !x.is_multiple_of(3)
        });
    }
    let mut want = base.clone();
    for (off, d) in &fua {
        want[*off as usize..][..d.len()].copy_from_slice(d);
    }
    let got = a.read(0, MIB as u32).unwrap();
    assert!(
        got == want[..MIB as usize],
        "a FUA write did not survive whole"
    );
    let got = a.read(MIB, MIB as u32).unwrap();
    let mut new = want.clone();
    for (off, d) in &plain {
        new[*off as usize..][..d.len()].copy_from_slice(d);
    }
    let (mut olds, mut news) = (0, 0);
    for (s, sector) in got.chunks(512).enumerate() {
        let at = MIB as usize + s * 512;
        let (o, n) = (&want[at..at + 512], &new[at..at + 512]);
        assert!(
            sector == o || sector == n,
            "sector at {at} is neither old nor new"
        );
        if o != n {
            if sector == n {
                news += 1;
            } else {
                olds += 1;
            }
        }
    }
    // The crash tore: some written sectors landed, some did not.
    assert!(olds > 0 && news > 0, "{olds} old, {news} new");
    r.h.stop();
}

/// Asserts `got == want`, naming the first byte that differs (not
/// printing megabytes).
fn same(got: &[u8], want: &[u8], what: &str) {
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: byte {i} is {:#x}, not {:#x}", got[i], want[i]);
    }
    assert_eq!(got.len(), want.len(), "{what}");
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

#[test]
fn a_flush_on_another_connection_makes_a_copys_writes_durable() {
    use harness::{Daemon, pool_dir};
    let dir = pool_dir();
    // No write-intent pass (it flushes groups) during the test.
    let mut d = Daemon::start(dir.path(), &["--intent-clear-interval", "3600"]);
    d.group("g", "raid5", &["x0", "x1", "x2"], "64M");
    d.ok(&["volume", "create", "src", "--group", "g", "--size", "32M"]);
    let port = port_of(&d.url);
    let old = pattern(4 * MIB as usize, 1);
    {
        let mut w = Raw::open(port, "src", false);
        assert_eq!(w.write(0, &old, flag::FUA), 0);
    }
    // An A2 family: new writes of the source and of the copy go to new
    // space, and the map entries saying so commit with a flush.
    d.ok(&["copy", "create", "src", "c", "--mode", "row"]);
    let port = port_of(&d.url);
    let (s1, c1) = (
        pattern(256 * KIB as usize, 50),
        pattern(256 * KIB as usize, 60),
    );
    {
        let mut a = Raw::open(port, "src", true);
        let mut b = Raw::open(port, "src", false);
        let mut ca = Raw::open(port, "c", false);
        let mut cb = Raw::open(port, "c", true);
        assert_eq!(a.write(MIB, &s1, 0), 0);
        assert_eq!(ca.write(2 * MIB, &c1, 0), 0);
        // Each export flushed on the connection that did not write.
        for (conn, cookie) in [(&mut b, 8), (&mut cb, 9)] {
            conn.request(cmd::FLUSH, 0, cookie, 0, 0);
            assert_eq!(conn.reply(0).0.errno(), 0);
        }
    }
    d.kill9();
    d.respawn();
    let port = port_of(&d.url);
    let mut s = Raw::open(port, "src", false);
    let mut c = Raw::open(port, "c", false);
    let at = |r: &mut Raw, off: u64, len: u64| r.read(off, len as u32).unwrap();
    assert!(
        at(&mut s, MIB, 256 * KIB) == s1,
        "src lost its flushed write"
    );
    assert!(
        at(&mut c, 2 * MIB, 256 * KIB) == c1,
        "c lost its flushed write"
    );
    assert!(at(&mut c, MIB, 256 * KIB) == old[MIB as usize..][..256 * KIB as usize]);
    assert!(at(&mut s, 2 * MIB, 256 * KIB) == old[2 * MIB as usize..][..256 * KIB as usize]);
    // The control: writes nobody flushed may be lost (here they are: an
    // A2 write's map entry waits for a flush), so the reads above see a
    // flush that reached them.
    let (s2, c2) = (
        pattern(128 * KIB as usize, 70),
        pattern(128 * KIB as usize, 80),
    );
    assert_eq!(s.write(3 * MIB, &s2, 0), 0);
    assert_eq!(c.write(3 * MIB, &c2, 0), 0);
    drop((s, c));
    d.kill9();
    d.respawn();
    let port = port_of(&d.url);
    let mut s = Raw::open(port, "src", false);
    let mut c = Raw::open(port, "c", false);
    let want = &old[3 * MIB as usize..][..128 * KIB as usize];
    for (name, r) in [("src", &mut s), ("c", &mut c)] {
        assert!(
            at(r, 3 * MIB, 128 * KIB) == want,
            "{name} kept a write nobody flushed across kill -9: if A2 map entries now commit \
             without a flush, this test needs another way to tell a flush that reached them"
        );
    }
    d.stop();
}
