//! The crash model: what a power cut keeps of flushed, FUA, unflushed and
//! torn writes.

use super::*;
use crate::blockdev::{read_vec, write_slice};
use crate::rt::block_on;

const K4: u64 = 4096;

fn write(d: &MemDisk, off: u64, byte: u8, len: u64, fua: bool) {
    block_on(write_slice(d, off, &vec![byte; len as usize], fua)).unwrap();
}

fn read(d: &MemDisk, off: u64, len: u64) -> Vec<u8> {
    block_on(read_vec(d, off, len as usize)).unwrap()
}

fn all(d: &MemDisk, off: u64, len: u64, byte: u8) -> bool {
    read(d, off, len).iter().all(|&b| b == byte)
}

#[test]
fn an_older_unflushed_write_never_lands_over_a_newer_fua_write() {
    let d = MemDisk::new(64 * K4);
    write(&d, 0, 0x11, K4, false);
    write(&d, 0, 0x22, K4, true);
    assert_eq!(d.unflushed_writes(), 1);
    // However the crash goes, the FUA write is what the sector holds.
    d.crash(|_| true);
    assert!(
        all(&d, 0, K4, 0x22),
        "an older write replayed over a FUA write"
    );
    write(&d, 0, 0x33, K4, false);
    write(&d, 0, 0x44, K4, true);
    d.crash(|_| false);
    assert!(all(&d, 0, K4, 0x44));
}

#[test]
fn a_fua_write_makes_only_itself_durable() {
    let d = MemDisk::new(64 * K4);
    write(&d, 8 * K4, 0x11, K4, false);
    write(&d, 0, 0x22, K4, true);
    d.crash(|_| false);
    assert!(all(&d, 0, K4, 0x22));
    assert!(
        all(&d, 8 * K4, K4, 0),
        "an earlier unflushed write became durable"
    );
}

#[test]
fn a_newer_unflushed_write_over_a_fua_write_may_land_or_not() {
    for keep in [false, true] {
        let d = MemDisk::new(64 * K4);
        write(&d, 0, 0x22, K4, true);
        write(&d, 0, 0x33, K4, false);
        d.crash(|_| keep);
        let want = if keep { 0x33 } else { 0x22 };
        assert!(all(&d, 0, K4, want), "keep {keep}");
    }
}

#[test]
fn keep_counts_only_the_unflushed_writes_once_each() {
    let d = MemDisk::new(64 * K4);
    write(&d, 0, 0x11, K4, false); // unflushed 0
    write(&d, K4, 0x22, K4, true); // FUA: not counted
    write(&d, 2 * K4, 0x33, K4, false); // unflushed 1
    let mut asked = Vec::new();
    d.crash(|i| {
        asked.push(i);
        i == 1
    });
    assert_eq!(asked, [0, 1]);
    assert!(all(&d, 0, K4, 0));
    assert!(all(&d, K4, K4, 0x22));
    assert!(all(&d, 2 * K4, K4, 0x33));
    assert_eq!(d.unflushed_writes(), 0);
}

#[test]
fn a_flush_makes_everything_before_it_durable() {
    let d = MemDisk::new(64 * K4);
    write(&d, 0, 0x11, K4, false);
    block_on(d.flush()).unwrap();
    write(&d, 0, 0x22, K4, false);
    d.crash(|_| false);
    assert!(all(&d, 0, K4, 0x11));
}

#[test]
fn fua_write_zeroes_are_durable_with_everything_before_them() {
    let d = MemDisk::new(64 * K4);
    write(&d, 0, 0x11, 2 * K4, false);
    block_on(d.flush()).unwrap();
    write(&d, 8 * K4, 0x22, K4, false);
    let fua = ZeroFlags {
        fua: true,
        ..ZeroFlags::default()
    };
    block_on(d.write_zeroes(0, K4, fua)).unwrap();
    write(&d, 9 * K4, 0x33, K4, false);
    d.crash(|_| false);
    assert!(all(&d, 0, K4, 0), "FUA zeroes are durable");
    assert!(all(&d, K4, K4, 0x11));
    assert!(all(&d, 8 * K4, K4, 0x22), "flushed with the zeroes");
    assert!(all(&d, 9 * K4, K4, 0), "written after them, not flushed");
}

#[test]
fn a_torn_write_keeps_whole_sectors_old_or_new() {
    let d = MemDisk::new(64 * K4);
    write(&d, 0, 0x11, 2 * K4, false);
    block_on(d.flush()).unwrap();
    // 4 KiB at 1 KiB + 256: a partial sector at each end, 8 pieces.
    let off = 1280;
    block_on(write_slice(&d, off, &[0x22; K4 as usize], false)).unwrap();
    write(&d, 6 * K4, 0x33, K4, true);
    let mut asked = Vec::new();
    d.crash_torn(|i, s| {
        asked.push((i, s));
        s % 2 == 0
    });
    assert_eq!(asked, (0..9).map(|s| (0, s)).collect::<Vec<_>>());
    let img = read(&d, 0, 2 * K4);
    for (s, chunk) in img.chunks(512).enumerate() {
        let sector = (s as u64 * 512, (s as u64 + 1) * 512);
        let written = sector.0 < off + K4 && off < sector.1;
        let piece = (s as u64).saturating_sub(off / 512) as usize;
        for (b, &byte) in chunk.iter().enumerate() {
            let at = sector.0 + b as u64;
            let inside = at >= off && at < off + K4;
            let want = if inside && written && piece.is_multiple_of(2) {
                0x22
            } else {
                0x11
            };
            assert_eq!(byte, want, "byte {at}");
        }
    }
    // The FUA write is never torn.
    assert!(all(&d, 6 * K4, K4, 0x33));
}
