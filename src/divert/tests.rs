//! The diversion node against a reference image, with in-memory disks
//! (below: the group; the store: a work volume) and a real pool database
//! for the slot map; crashes are power cuts of the store.

use std::sync::Arc;

use super::{Divert, Mode};
use crate::blockdev::BlockDev;
use crate::buf::IoBuf;
use crate::disk::MemDisk;
use crate::meta::Meta;
use crate::meta::slotmap::SlotMap;

const UNIT: u64 = 4096;
const SIZE: u64 = 64 * UNIT;
const OBJECT: u64 = 11;

struct Fixture {
    _dir: tempfile::TempDir,
    meta: Arc<Meta>,
    below: Arc<MemDisk>,
    store: Arc<MemDisk>,
    slots: u64,
}

impl Fixture {
    fn new(slots: u64) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = Arc::new(Meta::open(&dir.path().join("m.redb")).expect("meta").0);
        Fixture {
            _dir: dir,
            meta,
            below: Arc::new(MemDisk::new(SIZE)),
            store: Arc::new(MemDisk::new(slots * UNIT)),
            slots,
        }
    }

    /// The node as a restart builds it: the map from the database.
    fn node(&self, mode: Mode) -> Arc<Divert> {
        let map = SlotMap::open(Arc::clone(&self.meta), OBJECT, self.slots).expect("map");
        Divert::new(
            Arc::clone(&self.below) as Arc<dyn BlockDev>,
            Arc::clone(&self.store) as Arc<dyn BlockDev>,
            map,
            3,
            UNIT,
            mode,
        )
        .expect("node")
    }
}

fn pattern(len: usize, seed: u8) -> IoBuf {
    let mut b = IoBuf::new(len);
    for (i, x) in b.as_mut_slice().iter_mut().enumerate() {
        *x = seed.wrapping_add((i / 512) as u8);
    }
    b
}

async fn write(d: &Divert, off: u64, len: usize, seed: u8, model: &mut [u8]) {
    let buf = pattern(len, seed);
    let o = off as usize;
    model[o..o + len].copy_from_slice(buf.as_slice());
    let (_, r) = d.write(off, buf, false).await;
    r.expect("write");
}

async fn read_all(d: &Divert) -> Vec<u8> {
    let (buf, r) = d.read(0, IoBuf::new(SIZE as usize)).await;
    r.expect("read");
    buf.as_slice().to_vec()
}

/// The writes of a test: (offset, length), unaligned ones among them.
fn writes() -> Vec<(u64, usize)> {
    vec![
        (0, 4096),
        (UNIT * 5, 8192),
        (UNIT * 5 + 512, 1024),
        (UNIT * 20 + 3584, 1536),
        (UNIT * 63, 4096),
        (0, 512),
        (UNIT * 30, 16384),
    ]
}

#[tokio::test]
async fn diverted_writes_leave_the_group_untouched_and_read_back_from_the_store() {
    let f = Fixture::new(32);
    let d = f.node(Mode::Divert);
    let mut model = vec![0u8; SIZE as usize];
    let (_, r) = d
        .below()
        .write(0, pattern(SIZE as usize, 0x40), false)
        .await;
    r.expect("fill");
    d.below().flush().await.expect("flush");
    model.copy_from_slice(&f.below.snapshot());
    let group = f.below.snapshot();
    for (i, &(off, len)) in writes().iter().enumerate() {
        write(&d, off, len, i as u8 * 16, &mut model).await;
    }
    d.flush().await.expect("flush");
    assert_eq!(f.below.snapshot(), group, "no host write reached the group");
    assert_eq!(f.below.unflushed_writes(), 0);
    assert_eq!(read_all(&d).await, model);
    let c = d.counts();
    // Units 0, 5, 6, 20, 21, 63, 30..34: 10 distinct; unit-writes
    // 1 + 2 + 1 + 2 + 1 + 1 + 4.
    assert_eq!(d.map().len(), 10);
    assert_eq!(d.map().terminal(), 10, "one slot per unit, in order");
    assert_eq!(c.diverted, 12);
    assert_eq!(c.overflowed, 0);
}

#[tokio::test]
async fn a_full_store_sends_new_units_to_the_group_and_keeps_mapped_ones() {
    let f = Fixture::new(2);
    let d = f.node(Mode::Divert);
    let mut model = vec![0u8; SIZE as usize];
    write(&d, 0, 4096, 1, &mut model).await;
    write(&d, UNIT, 4096, 2, &mut model).await;
    write(&d, UNIT * 2, 4096, 3, &mut model).await;
    write(&d, 0, 1024, 4, &mut model).await;
    assert_eq!(d.counts().overflowed, 1);
    assert_eq!(
        &f.below.snapshot()[..UNIT as usize],
        &vec![0u8; UNIT as usize][..]
    );
    assert_eq!(read_all(&d).await, model);
}

#[tokio::test]
async fn flushed_diversions_survive_a_power_cut_and_unflushed_ones_read_old_or_new() {
    let f = Fixture::new(32);
    let mut model = vec![0u8; SIZE as usize];
    {
        let d = f.node(Mode::Divert);
        write(&d, 0, 8192, 1, &mut model).await;
        write(&d, UNIT * 9, 4096, 2, &mut model).await;
        d.flush().await.expect("flush");
        let before = model.clone();
        write(&d, UNIT * 9, 4096, 3, &mut model).await; // a hit: in place
        write(&d, UNIT * 40, 4096, 4, &mut model).await; // new, unflushed
        // The power cut keeps none of the unflushed writes.
        f.store.crash(|_| false);
        model = before;
    }
    let d = f.node(Mode::Divert);
    assert_eq!(
        d.map().len(),
        3,
        "the unflushed unit's entry was never stored"
    );
    assert_eq!(read_all(&d).await, model);
}

#[tokio::test]
async fn a_fua_write_is_durable_with_its_entry_when_it_completes() {
    let f = Fixture::new(8);
    let mut model = vec![0u8; SIZE as usize];
    {
        let d = f.node(Mode::Divert);
        let buf = pattern(4096, 9);
        model[..4096].copy_from_slice(buf.as_slice());
        let (_, r) = d.write(0, buf, true).await;
        r.expect("fua write");
        f.store.crash(|_| false);
    }
    let d = f.node(Mode::Divert);
    assert_eq!(read_all(&d).await, model);
}

/// Zeroes with FUA over units written before: when the request
/// completes the zeroes and their entries are durable, so a power cut of
/// the store then reads zeroes, not the data under them.
#[tokio::test]
async fn fua_zeroes_are_durable_with_their_entries_when_they_complete() {
    let f = Fixture::new(8);
    let mut model = vec![0u8; SIZE as usize];
    {
        let d = f.node(Mode::Divert);
        let (_, r) = d.write(0, pattern(8192, 5), false).await;
        r.expect("write");
        d.flush().await.expect("flush");
        let flags = crate::blockdev::ZeroFlags {
            fua: true,
            ..Default::default()
        };
        d.write_zeroes(UNIT, UNIT, flags).await.expect("zeroes");
        model[..4096].copy_from_slice(pattern(4096, 5).as_slice());
        f.store.crash(|_| false);
    }
    let d = f.node(Mode::Divert);
    assert_eq!(read_all(&d).await, model);
}

#[tokio::test]
async fn write_back_with_host_writes_between_passes_ends_equal_to_the_model() {
    let f = Fixture::new(64);
    let d = f.node(Mode::Divert);
    let mut model = vec![0u8; SIZE as usize];
    for (i, &(off, len)) in writes().iter().enumerate() {
        write(&d, off, len, i as u8 * 16 + 1, &mut model).await;
    }
    d.begin_write_back().await.expect("write-back");
    let mut passes = 0;
    loop {
        // Host writes during write-back: a mapped unit (to its slot) and a
        // new one (to the group).
        write(
            &d,
            UNIT * 5 + 100 * passes,
            512,
            0x90 + passes as u8,
            &mut model,
        )
        .await;
        write(
            &d,
            UNIT * (50 + passes),
            4096,
            0xa0 + passes as u8,
            &mut model,
        )
        .await;
        let n = d.write_back_some(3).await.expect("pass");
        assert_eq!(read_all(&d).await, model, "pass {passes}");
        if n == 0 {
            break;
        }
        passes += 1;
    }
    assert!(d.map().is_empty());
    assert_eq!(d.map().terminal(), 0, "the log starts over");
    assert_eq!(
        f.below.snapshot(),
        model,
        "every diverted write is in the group"
    );
    assert_eq!(d.counts().written_back, 10);
}

#[tokio::test]
async fn a_power_cut_during_write_back_resumes_and_loses_nothing() {
    let f = Fixture::new(64);
    let mut model = vec![0u8; SIZE as usize];
    {
        let d = f.node(Mode::Divert);
        for (i, &(off, len)) in writes().iter().enumerate() {
            write(&d, off, len, i as u8 * 16 + 1, &mut model).await;
        }
        d.begin_write_back().await.expect("write-back");
        d.write_back_some(4).await.expect("pass");
        // A direct write after the pass: its unit's removal is stored.
        write(&d, 0, 4096, 0x77, &mut model).await;
        d.flush().await.expect("flush");
        f.below.crash(|_| false);
        f.store.crash(|_| false);
    }
    let d = f.node(Mode::WriteBack);
    assert_eq!(read_all(&d).await, model, "after the cut, before resuming");
    while d.write_back_some(4).await.expect("pass") > 0 {}
    assert_eq!(f.below.snapshot(), model);
}

/// A FUA write stores its own entries at once, and only its own: another
/// request's slot whose data was never flushed stays unstored, so after a
/// power cut its unit reads its old data, not an empty slot.
#[tokio::test]
async fn a_fua_write_stores_only_its_own_entries() {
    let f = Fixture::new(16);
    let d = f.node(Mode::Divert);
    let (_, r) = d.write(0, pattern(4096, 1), false).await;
    r.expect("plain write");
    let (_, r) = d.write(UNIT * 7, pattern(4096, 2), true).await;
    r.expect("fua write");
    let again = SlotMap::open(Arc::clone(&f.meta), OBJECT, f.slots).expect("map");
    let keys: Vec<u64> = again.entries().iter().map(|e| e.0).collect();
    assert_eq!(
        keys,
        vec![crate::meta::slotmap::key(3, 7)],
        "only the FUA write's unit is stored"
    );
}
