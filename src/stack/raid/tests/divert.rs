//! Member I/O diverted below the RAID layer (a work disk): a diverted
//! write or zeroing that fails on some slots and not others leaves the
//! row's members disagreeing; the range is marked for resync (the intent
//! mark kept) and no member is failed for the work store's error.

use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::blockdev::ZeroFlags;
use crate::error::ErrorKind;
use crate::stack::raid::divert::SlotDivert;

/// A slot's node that writes straight to the slot's disk (standing in
/// for the work store), or fails every write and zeroing while `fail`.
struct Pass {
    dev: Arc<dyn BlockDev>,
    fail: AtomicBool,
}

impl Pass {
    fn refuse(&self) -> Option<Error> {
        self.fail
            .load(Ordering::Relaxed)
            .then(|| Error::new(ErrorKind::Io, "the work store failed"))
    }
}

impl BlockDev for Pass {
    fn size(&self) -> u64 {
        self.dev.size()
    }

    fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
        self.dev.read(off, buf)
    }

    fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        match self.refuse() {
            Some(e) => Box::pin(async move { (buf, Err(e)) }),
            None => self.dev.write(off, buf, fua),
        }
    }

    fn flush(&self) -> DevFuture<'_, Result<()>> {
        self.dev.flush()
    }

    fn write_zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        match self.refuse() {
            Some(e) => Box::pin(async move { Err(e) }),
            None => self.dev.write_zeroes(off, len, flags),
        }
    }
}

impl SlotDivert for Pass {
    fn dev(&self) -> &dyn BlockDev {
        self
    }

    fn holds_all(&self, _off: u64, _len: u64) -> bool {
        false
    }

    fn holds_any(&self, _off: u64, _len: u64) -> bool {
        false
    }

    fn save(&self) -> DevFuture<'_, Result<()>> {
        self.dev.flush()
    }
}

/// `rig`'s member I/O diverted through pass nodes; slot `bad`'s fails.
fn divert(rig: &Rig, bad: usize) {
    let nodes = rig
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            Arc::new(Pass {
                dev: as_dev(d),
                fail: AtomicBool::new(i == bad),
            }) as Arc<dyn SlotDivert>
        })
        .collect();
    rig.raid.set_member_divert(Some(nodes)).unwrap();
}

/// Fails the request on `rig` with the store's error, leaves rows
/// `0..rows` disagreeing and marked; after the diversion ends, a resync
/// of the mark makes them agree again.
fn check_marked_then_resynced(rig: &Rig, rows: u64, res: Result<()>) {
    let g = rig.raid.layout().lock_grain();
    let e = res.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("diverted write"), "{e}");
    assert!(rig.hooks.calls().is_empty(), "no member failed");
    let live = vec![true; rig.disks.len()];
    let bad = inconsistent_rows(rig.raid.layout(), &snapshots(&rig.disks), &live);
    assert!(
        !bad.is_empty(),
        "the failed request left some row disagreeing"
    );
    assert!(
        bad.iter().all(|&r| r < rows),
        "only the request's rows: {bad:?}"
    );
    assert!(rig.raid.unsynced.overlaps(0, rows * g), "marked for resync");
    rig.raid.set_member_divert(None).unwrap();
    crate::rt::block_on(rig.raid.resync(0, rows * g)).unwrap();
    assert_consistent(rig);
    assert!(!rig.raid.unsynced.overlaps(0, rows * g));
}

#[test]
fn raid5_zeroing_that_fails_on_one_diverted_slot_is_marked() {
    let rig = Rig::new(RaidLevel::Raid5, 3, 8, None);
    write(&rig.raid, 0, &pattern(1, rig.cap() as usize));
    divert(&rig, 1);
    let g = rig.raid.layout().lock_grain();
    let res = crate::rt::block_on(rig.raid.write_zeroes(0, 2 * g, ZeroFlags::default()));
    check_marked_then_resynced(&rig, 2, res);
}

#[test]
fn raid1_zeroing_that_fails_on_one_diverted_leg_is_marked() {
    let rig = Rig::new(RaidLevel::Raid1, 2, 8, None);
    write(&rig.raid, 0, &pattern(2, rig.cap() as usize));
    divert(&rig, 0);
    let res = crate::rt::block_on(rig.raid.write_zeroes(0, S, ZeroFlags::default()));
    check_marked_then_resynced(&rig, 1, res);
}

#[test]
fn raid5_write_that_fails_on_one_diverted_slot_is_marked() {
    let rig = Rig::new(RaidLevel::Raid5, 3, 8, None);
    write(&rig.raid, 0, &pattern(3, rig.cap() as usize));
    divert(&rig, 2);
    let res = crate::rt::block_on(write_slice(&rig.raid, 512, &[7u8; 1024], false));
    check_marked_then_resynced(&rig, 1, res);
}
