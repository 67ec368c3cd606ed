//! An S-VOL group's data path against a reference model (seed 003,
//! SEED-SPECS C.d): in-memory disks (the RW member's behind a
//! fault-injecting wrapper), a real pool database for table 1300. Random
//! writes to the RW member and reads of every LID are checked against the
//! model; the invariants are checked after each phase: the RO members
//! hold the split image, the RW member reads the image overlaid with its
//! DLV at the block ids of table 1300, reads spread evenly. Then the RW
//! member's disk fails writes (takeover, the host sees no error) and the
//! member is rolled back.

use std::sync::{Arc, Mutex};

use super::Rng;
use crate::blockdev::{BlockDev, DevFuture, NoIntent};
use crate::buf::IoBuf;
use crate::disk::MemDisk;
use crate::disk::{FaultDisk, FaultRules};
use crate::error::Result;
use crate::meta::Meta;
use crate::meta::diffmap::DiffMap;
use crate::pair::group::{Change, Group, GroupDev, Hooks, Increments, Member};
use crate::rt::block_on;

const BLOCK: u64 = 4096;
const BLOCKS: u64 = 64;
const SIZE: u64 = BLOCK * BLOCKS;

#[derive(Default)]
struct Recorded(Mutex<Vec<String>>);

impl Hooks for Recorded {
    fn store(&self, _group: &str, change: Change) -> DevFuture<'static, Result<()>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{change:?}"));
        Box::pin(async { Ok(()) })
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    group: Arc<Group>,
    nodes: Vec<Arc<GroupDev>>,
    rw_disk: Arc<FaultDisk<Arc<MemDisk>>>,
    dlv: Arc<MemDisk>,
    dlv_disk: Arc<FaultDisk<Arc<MemDisk>>>,
    hooks: Arc<Recorded>,
}

/// LV0, LV1 (RO) and LV2 (RW, on a fault-injecting disk) holding `image`.
fn fixture(image: &[u8]) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = Arc::new(Meta::open(&dir.path().join("m.redb")).expect("meta").0);
    let disk = |bytes: &[u8]| {
        let d = Arc::new(MemDisk::new(SIZE));
        let (_, r) = block_on(d.write(0, IoBuf::from_slice(bytes), false));
        r.expect("fill");
        d
    };
    let rw_disk = Arc::new(FaultDisk::new(disk(image), "x2"));
    let dlv = Arc::new(MemDisk::new(SIZE));
    let dlv_disk = Arc::new(FaultDisk::new(Arc::clone(&dlv), "x4"));
    let bids = DiffMap::open(Arc::clone(&meta), 7, BLOCK, BLOCKS).expect("bids");
    let incr = Increments::new(
        Arc::clone(&dlv_disk) as Arc<dyn BlockDev>,
        bids,
        Arc::new(NoIntent),
    );
    let member = |lid: &str, dev: Arc<dyn BlockDev>, incr| {
        Member::new(lid.to_string(), Some(dev), SIZE, incr)
    };
    let members = vec![
        member("LV0", disk(image), None),
        member("LV1", disk(image), None),
        member("LV2", Arc::clone(&rw_disk) as Arc<dyn BlockDev>, Some(incr)),
    ];
    let hooks = Arc::new(Recorded::default());
    let group = Group::new("G0".into(), members, Arc::clone(&hooks) as Arc<dyn Hooks>);
    let nodes = (0..3)
        .map(|i| group.node(i, Arc::new(MemDisk::new(SIZE))))
        .collect();
    Fixture {
        _dir: dir,
        group,
        nodes,
        rw_disk,
        dlv,
        dlv_disk,
        hooks,
    }
}

/// A spare put in as the RW member's DLV being filled.
async fn onto_a_spare(f: &Fixture) -> Arc<FaultDisk<Arc<MemDisk>>> {
    let spare = Arc::new(FaultDisk::new(Arc::new(MemDisk::new(SIZE)), "x3"));
    let dev = Arc::clone(&spare) as Arc<dyn BlockDev>;
    f.group
        .rebuild_dlv_onto(2, dev)
        .await
        .expect("onto the spare");
    spare
}

/// Makes every write of `disk` fail.
fn fail_writes(disk: &FaultDisk<Arc<MemDisk>>) {
    disk.set_rules(FaultRules {
        write_errors: vec![(0, SIZE)],
        ..FaultRules::default()
    });
}

/// Where two images first differ, for a short failure message.
fn same(a: &[u8], b: &[u8]) -> std::result::Result<(), String> {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        None if a.len() == b.len() => Ok(()),
        None => Err(format!("lengths {} and {}", a.len(), b.len())),
        Some(i) => Err(format!(
            "first difference at byte {i}: {} vs {}",
            a[i], b[i]
        )),
    }
}

async fn read(dev: &dyn BlockDev, off: u64, len: u64) -> Vec<u8> {
    let (buf, r) = dev.read(off, IoBuf::new(len as usize)).await;
    r.expect("read");
    buf.as_slice().to_vec()
}

/// Random writes to the RW member (into `model` too) and reads of every
/// LID checked against the image or the model.
async fn churn(f: &Fixture, rng: &mut Rng, image: &[u8], model: &mut [u8], ops: usize) {
    for i in 0..ops {
        let off = rng.below(SIZE / 512) * 512;
        let len = (1 + rng.below(16)) * 512;
        let len = len.min(SIZE - off);
        let (o, l) = (off as usize, len as usize);
        if i % 2 == 0 {
            let byte = 1 + (rng.below(250) as u8);
            let (_, r) = f.nodes[2]
                .write(off, IoBuf::from_slice(&vec![byte; l]), false)
                .await;
            r.expect("an RW write never fails for the host");
            model[o..o + l].fill(byte);
        }
        for (n, want) in [
            (0, &image[o..o + l]),
            (1, &image[o..o + l]),
            (2, &model[o..o + l]),
        ] {
            let got = read(&*f.nodes[n], off, len).await;
            if let Err(e) = same(&got, want) {
                panic!("LV{n} at {off}+{len}: {e}");
            }
        }
    }
}

/// RW content = the image overlaid with the DLV at table 1300's blocks,
/// and the DLV holds the member's data there.
async fn check_increments(f: &Fixture, image: &[u8], model: &[u8]) {
    let m = &f.group.members[2];
    let incr = m.incr.as_ref().expect("RW");
    let dlv = read(&*f.dlv, 0, SIZE).await;
    let mut overlay = image.to_vec();
    for b in 0..BLOCKS {
        let r = (b * BLOCK) as usize..((b + 1) * BLOCK) as usize;
        if incr.bids.is_set(b) {
            overlay[r.clone()].copy_from_slice(&dlv[r]);
        } else {
            assert!(
                model[r.clone()] == image[r],
                "block {b} changed but not in table 1300"
            );
        }
    }
    if let Err(e) = same(&overlay, model) {
        panic!("RW = RO overlaid with DLV at table 1300's blocks: {e}");
    }
}

#[test]
fn increments_takeover_and_rollback_keep_the_model() {
    let mut rng = Rng(0x5eed);
    let image: Vec<u8> = (0..SIZE).map(|i| (i / 512 % 251) as u8).collect();
    let f = fixture(&image);
    let mut model = image.clone();
    block_on(async {
        churn(&f, &mut rng, &image, &mut model, 200).await;
        check_increments(&f, &image, &model).await;
        // Reads of RO data spread: LV0 and LV1 within one of each other.
        let (a, b) = (f.group.members[0].freq(), f.group.members[1].freq());
        assert!(a.abs_diff(b) <= 1 && a > 50, "Freq {a} {b}");

        // The RW member's disk fails writes: LV0 takes over, the host
        // sees no error, LV0's LID is vacant and reads from LV1.
        fail_writes(&f.rw_disk);
        churn(&f, &mut rng, &image, &mut model, 100).await;
        let changes = f.hooks.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(
            changes,
            [
                r#"Vacating { lid: "LV0" }"#,
                r#"TookOver { rw: "LV2", from: "LV0" }"#
            ],
        );
        assert!(f.group.members[0].dev().is_none(), "LV0 is vacant");
        check_increments(&f, &image, &model).await;

        // Rollback: the RW member reads the split image again.
        f.group.roll_back(2, 0..BLOCKS).await.expect("rollback");
        let incr = f.group.members[2].incr.as_ref().expect("RW");
        assert_eq!(incr.bids.count(), 0, "table 1300 empties");
        if let Err(e) = same(&read(&*f.nodes[2], 0, SIZE).await, &image) {
            panic!("after the rollback: {e}");
        }
        assert_eq!(read(&*f.dlv, 0, SIZE).await.len(), SIZE as usize);
    });
}

#[test]
fn an_ro_member_refuses_writes_and_a_vacant_lid_still_reads() {
    let image = vec![0x11u8; SIZE as usize];
    let f = fixture(&image);
    block_on(async {
        let (_, r) = f.nodes[0]
            .write(0, IoBuf::from_slice(&[1; 512]), false)
            .await;
        let e = r.expect_err("RO");
        assert_eq!(e.kind(), crate::error::ErrorKind::ReadOnly);
        assert!(
            e.to_string()
                .contains("read-only (RO) member of S-VOL group G0"),
            "{e}"
        );
        assert_eq!(read(&*f.nodes[0], 0, 4096).await, vec![0x11; 4096]);
        f.group.members[0].set_dev(None);
        assert_eq!(read(&*f.nodes[0], 0, 4096).await, vec![0x11; 4096]);
        assert_eq!(f.group.members[1].freq(), 1, "served by LV1");
    });
}

#[test]
fn zeroing_and_discarding_an_rw_member_whose_disk_fails_take_over_too() {
    let image = vec![0x11u8; SIZE as usize];
    let f = fixture(&image);
    block_on(async {
        fail_writes(&f.rw_disk);
        // Half of block 3 zeroed: the host sees no error; LV0 takes over.
        f.nodes[2]
            .write_zeroes(3 * BLOCK, BLOCK / 2, crate::blockdev::ZeroFlags::default())
            .await
            .expect("zeroing taken over");
        let changes = f.hooks.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(
            changes,
            [
                r#"Vacating { lid: "LV0" }"#,
                r#"TookOver { rw: "LV2", from: "LV0" }"#
            ],
        );
        f.nodes[2]
            .discard(9 * BLOCK, BLOCK)
            .await
            .expect("discard on the new PID");
        let mut want = image.clone();
        let b3 = (3 * BLOCK) as usize;
        want[b3..b3 + BLOCK as usize / 2].fill(0);
        let b9 = (9 * BLOCK) as usize;
        want[b9..b9 + BLOCK as usize].fill(0);
        if let Err(e) = same(&read(&*f.nodes[2], 0, SIZE).await, &want) {
            panic!("the RW member after the takeover: {e}");
        }
        // Table 1300 has both blocks; the DLV holds them whole.
        let incr = f.group.members[2].incr.as_ref().expect("RW");
        assert!(incr.bids.is_set(3) && incr.bids.is_set(9) && incr.bids.count() == 2);
        let dlv = read(&*f.dlv, 3 * BLOCK, BLOCK).await;
        assert_eq!(dlv, want[b3..b3 + BLOCK as usize], "the DLV's block 3");
        // The RO member left is still the split image.
        assert_eq!(read(&*f.nodes[1], 0, SIZE).await, image);
    });
}

#[test]
fn a_failed_increments_volume_is_recorded_and_the_member_serves_alone() {
    let image = vec![0x11u8; SIZE as usize];
    let f = fixture(&image);
    let recorded = |f: &Fixture| f.hooks.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    block_on(async {
        fail_writes(&f.dlv_disk);
        // The DLV fails a write the member took: no host error, the
        // failure recorded; later writes go to the member alone.
        let mut want = image.clone();
        for (b, byte) in [(2u64, 0x21u8), (7, 0x22), (2, 0x23)] {
            let (_, r) = f.nodes[2]
                .write(b * BLOCK, IoBuf::from_slice(&[byte; BLOCK as usize]), false)
                .await;
            r.expect("a write with a failed DLV");
            let o = (b * BLOCK) as usize;
            want[o..o + BLOCK as usize].fill(byte);
        }
        f.nodes[2]
            .write_zeroes(9 * BLOCK, BLOCK, crate::blockdev::ZeroFlags::default())
            .await
            .expect("zeroing with a failed DLV");
        want[(9 * BLOCK) as usize..(10 * BLOCK) as usize].fill(0);
        assert_eq!(recorded(&f), [r#"DlvFailed { lid: "LV2" }"#]);
        let incr = f.group.members[2].incr.as_ref().expect("RW");
        assert!(!incr.dlv_ok());
        assert_eq!(incr.bids.count(), 3, "table 1300 still lists the blocks");
        if let Err(e) = same(&read(&*f.nodes[2], 0, SIZE).await, &want) {
            panic!("the RW member: {e}");
        }
        f.group.members[2]
            .flush()
            .await
            .expect("flush skips the DLV");
        // Then the member fails a write: no RO member can be brought up
        // to date, so the host gets the error and no RO member is taken.
        fail_writes(&f.rw_disk);
        let (_, r) = f.nodes[2]
            .write(0, IoBuf::from_slice(&[1; 512]), false)
            .await;
        let e = r.expect_err("a double failure");
        assert!(
            e.to_string().contains("increments volume failed before"),
            "{e}"
        );
        assert_eq!(recorded(&f).len(), 1, "nothing vacated: {:?}", recorded(&f));
        assert!(f.group.members[0].dev().is_some() && f.group.members[1].dev().is_some());
        assert_eq!(read(&*f.nodes[0], 0, SIZE).await, image);
    });
}

#[test]
fn a_new_dlv_filled_from_the_member_takes_every_write_or_is_not_put_in_use() {
    let image = vec![0x11u8; SIZE as usize];
    let f = fixture(&image);
    block_on(async {
        let write = |b: u64, byte: u8| {
            let node = Arc::clone(&f.nodes[2]);
            async move {
                let (_, r) = node
                    .write(b * BLOCK, IoBuf::from_slice(&[byte; BLOCK as usize]), false)
                    .await;
                r
            }
        };
        fail_writes(&f.dlv_disk);
        write(2, 0x21)
            .await
            .expect("the DLV fails, the host does not");
        write(5, 0x22).await.expect("member alone");
        // A spare becomes the DLV being filled: a write during the fill
        // reaches it; the copy brings the blocks written before.
        let spare = onto_a_spare(&f).await;
        write(7, 0x23).await.expect("a write during the fill");
        f.group.copy_to_dlv(2, 0..BLOCKS).await.expect("fill");
        let mut stored = false;
        f.group
            .dlv_rebuilt_with(2, || {
                stored = true;
                Ok(())
            })
            .await
            .expect("whole");
        assert!(stored);
        let incr = f.group.members[2].incr.as_ref().expect("RW");
        assert!(incr.dlv_ok());
        for (b, byte) in [(2u64, 0x21u8), (5, 0x22), (7, 0x23)] {
            let got = read(&*spare, b * BLOCK, BLOCK).await;
            assert_eq!(got, vec![byte; BLOCK as usize], "block {b} on the new DLV");
        }
        // The member fails: LV0 is brought up to date from the new DLV.
        fail_writes(&f.rw_disk);
        write(9, 0x24).await.expect("taken over");
        let got = read(&*f.nodes[2], 0, SIZE).await;
        for (b, byte) in [(2u64, 0x21u8), (5, 0x22), (7, 0x23), (9, 0x24), (3, 0x11)] {
            let o = (b * BLOCK) as usize;
            assert_eq!(got[o], byte, "block {b} after the takeover");
        }
    });
}

#[test]
fn a_new_dlv_that_fails_during_its_fill_is_not_recorded_whole() {
    let image = vec![0x11u8; SIZE as usize];
    let f = fixture(&image);
    block_on(async {
        fail_writes(&f.dlv_disk);
        let (_, r) = f.nodes[2]
            .write(0, IoBuf::from_slice(&[0x21; BLOCK as usize]), false)
            .await;
        r.expect("the DLV fails, the host does not");
        let spare = onto_a_spare(&f).await;
        f.group.copy_to_dlv(2, 0..BLOCKS).await.expect("fill");
        // After the last copy, a host write fails on the new DLV.
        fail_writes(&spare);
        let (_, r) = f.nodes[2]
            .write(BLOCK, IoBuf::from_slice(&[0x22; BLOCK as usize]), false)
            .await;
        r.expect("the member took it");
        let mut stored = false;
        let e = f
            .group
            .dlv_rebuilt_with(2, || {
                stored = true;
                Ok(())
            })
            .await
            .expect_err("not whole");
        assert!(
            e.to_string().contains("failed a write during its fill"),
            "{e}"
        );
        assert!(!stored, "nothing recorded");
        let incr = f.group.members[2].incr.as_ref().expect("RW");
        assert!(!incr.dlv_ok() && !incr.dlv_written());
    });
}
