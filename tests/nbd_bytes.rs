//! Byte-granular NBD (issue 16): clients that negotiated no block size
//! (`NBD_OPT_EXPORT_NAME`) read, write, zero and trim any offset and
//! length, checked against a reference image — through the real server
//! over a socket on a device that refuses anything but whole blocks, and
//! through the real daemon on a RAID-5 volume and an instant copy.
//! Concurrent overlapping aligned and unaligned writes from several
//! connections land whole, in some order; qemu-io's unaligned I/O works;
//! the handshake advertises minimum 512, preferred 4096, maximum 32 MiB.

mod harness;
mod nbd_common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use ferrosan::blockdev::BlockDev;
use ferrosan::disk::MemDisk;
use ferrosan::nbd::{ServerConfig, StaticExports};
use nbd_common::*;

const MIB: u64 = 1 << 20;
const TRACK: u64 = 64 << 10;

/// An in-process server exporting "b" over a strict disk of `size` (whole
/// blocks of `block` only) on a memory disk.
fn server(size: u64, block: u32, latency_us: u64) -> (Harness, Arc<MemDisk>, Arc<StrictDisk>) {
    let mem = Arc::new(MemDisk::new(size));
    let latency = Duration::from_micros(latency_us);
    let strict = StrictDisk::new(mem.clone() as Arc<dyn BlockDev>, block, latency);
    let ex = Arc::new(StaticExports::new());
    ex.add("b", "strict", strict.clone(), false);
    (Harness::start(ex, ServerConfig::default()), mem, strict)
}

/// (offset, length) of every class: offsets 0, 1, 511, 512, 4095,
/// 4096 + 1, just before and across track (64 KiB) and RAID-5 row
/// (3 x 64 KiB) boundaries, and at the very end; lengths 1, 14, 511,
/// 513, 4096, a track + 14, 1 MiB + 14.
fn cases(size: u64) -> Vec<(u64, u32)> {
    let offs = [0, 1, 511, 512, 4095, 4097, TRACK - 7, 3 * TRACK - 1];
    let lens: [u32; 7] = [1, 14, 511, 513, 4096, TRACK as u32 + 14, MIB as u32 + 14];
    let mut v = Vec::new();
    for off in offs {
        for len in lens {
            v.push((off, len));
        }
    }
    for len in [1u32, 14, 511, 513, MIB as u32 + 14] {
        v.push((size - u64::from(len), len));
        v.push((size - u64::from(len) - 1, len));
    }
    v
}

fn fill(len: usize, seed: u64) -> Vec<u8> {
    let s = seed as u8;
    (0..len)
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(s) ^ ((i >> 10) as u8) ^ 0xA5)
        .collect()
}

/// Writes, write-zeroes and trims every case through `c`, keeping
/// `reference` in step, and reads each range and its neighbourhood back.
/// `trim_zeroes`: whether a discarded block reads as zeroes afterwards
/// (the memory disk), else trims are not checked beyond the edges.
fn every_offset_class(c: &mut Raw, reference: &mut [u8], seed: u64, trim_zeroes: bool) {
    let size = reference.len() as u64;
    for (i, (off, len)) in cases(size).into_iter().enumerate() {
        let (o, n) = (off as usize, len as usize);
        let flags = if i % 2 == 0 { flag::FUA } else { 0 };
        match i % 5 {
            3 => {
                let e = c.command(cmd::WRITE_ZEROES, flags, off, len);
                assert_eq!(e, 0, "write-zeroes of {len} at {off}");
                reference[o..o + n].fill(0);
            }
            4 if trim_zeroes => {
                assert_eq!(c.command(cmd::TRIM, 0, off, len), 0, "trim {len} at {off}");
                // Only the 512-byte blocks wholly inside are discarded.
                let (a, b) = (
                    off.next_multiple_of(512),
                    (off + u64::from(len)) / 512 * 512,
                );
                if a < b {
                    reference[a as usize..b as usize].fill(0);
                }
            }
            _ => {
                let data = fill(n, seed + i as u64);
                assert_eq!(c.write(off, &data, flags), 0, "write {len} at {off}");
                reference[o..o + n].copy_from_slice(&data);
            }
        }
        let got = c
            .read(off, len)
            .unwrap_or_else(|e| panic!("read {len} at {off}: {e}"));
        assert!(got == reference[o..o + n], "read {len} at {off} differs");
        let lo = off.saturating_sub(1000);
        let hi = (off + u64::from(len) + 1000).min(size);
        let got = c.read(lo, (hi - lo) as u32).unwrap();
        assert!(
            got == reference[lo as usize..hi as usize],
            "the bytes around {len} at {off} changed"
        );
    }
    assert_eq!(c.command(cmd::CACHE, 0, 3, 1001), 0);
    assert_eq!(c.command(cmd::FLUSH, 0, 0, 0), 0);
}

#[test]
fn byte_granular_requests_on_an_export_name_connection_match_a_reference_image() {
    for block in [512u32, 4096] {
        let size = 8 * MIB;
        let (h, mem, strict) = server(size, block, 0);
        let mut c = Raw::export_name(h.port, "b");
        assert_eq!(c.size, size);
        let mut reference = vec![0u8; size as usize];
        every_offset_class(&mut c, &mut reference, 1, block == 512);
        assert_eq!(strict.unaligned.load(Ordering::SeqCst), 0);
        assert!(mem.snapshot() == reference, "block {block}: the image");
        assert_eq!(mem.unflushed_writes(), 0);
        drop(c);
        h.stop();
    }
}

/// Requests past the end are still refused, aligned or not.
#[test]
fn unaligned_requests_past_the_end_are_refused() {
    let (h, mem, _) = server(MIB, 512, 0);
    let mut c = Raw::export_name(h.port, "b");
    assert_eq!(c.read(MIB - 10, 11), Err(EINVAL));
    assert_eq!(c.write(MIB - 1, &[1, 2], 0), ENOSPC);
    assert_eq!(c.command(cmd::WRITE_ZEROES, 0, MIB - 3, 4), ENOSPC);
    assert_eq!(c.command(cmd::TRIM, 0, 1, MIB as u32), EINVAL);
    assert!(mem.snapshot().iter().all(|&b| b == 0));
    drop(c);
    h.stop();
}

/// Block status of an unaligned range describes exactly the bytes asked
/// for, from the byte asked for.
#[test]
fn block_status_of_an_unaligned_range_starts_at_its_byte() {
    let (h, _, _) = server(4 * MIB, 512, 0);
    let mut c = Raw::open(h.port, "b", true);
    assert_eq!(c.write(0, &[7u8; 8192], 0), 0);
    assert_eq!(c.command(cmd::TRIM, 0, 4096, 4096), 0);
    c.request(cmd::BLOCK_STATUS, 0, 4, 4000, 1000);
    let (g, _) = c.reply(0);
    let Got::Chunk {
        typ: 5, payload, ..
    } = g
    else {
        panic!("{g:?}")
    };
    let d: Vec<(u32, u32)> = payload[4..]
        .chunks(8)
        .map(|x| {
            (
                u32::from_be_bytes(x[0..4].try_into().unwrap()),
                u32::from_be_bytes(x[4..8].try_into().unwrap()),
            )
        })
        .collect();
    assert_eq!(d, [(96, 0), (904, 3)]);
    drop(c);
    h.stop();
}

/// The writes of one round, by connection: aligned and unaligned, every
/// one touching 512-byte blocks the others touch.
fn round_writes(round: u64) -> Vec<(u64, Vec<u8>)> {
    let shapes: [(u64, usize); 4] = [(0, 8192), (1, 8190), (511, 1026), (4096, 8192)];
    shapes
        .iter()
        .enumerate()
        .map(|(k, &(off, len))| {
            let v = ((round * 4 + k as u64) % 251 + 1) as u8;
            let off = if round % 2 == 1 && k == 1 {
                off + 4000
            } else {
                off
            };
            (off, vec![v; len])
        })
        .collect()
}

/// Whether `got` is `before` with the writes applied in some order.
fn some_order(before: &[u8], writes: &[(u64, Vec<u8>)], got: &[u8]) -> bool {
    fn go(img: &mut Vec<u8>, left: &mut Vec<usize>, w: &[(u64, Vec<u8>)], got: &[u8]) -> bool {
        if left.is_empty() {
            return img == got;
        }
        for i in 0..left.len() {
            let k = left.remove(i);
            let (off, data) = &w[k];
            let o = *off as usize;
            let saved = img[o..o + data.len()].to_vec();
            img[o..o + data.len()].copy_from_slice(data);
            let ok = go(img, left, w, got);
            img[o..o + data.len()].copy_from_slice(&saved);
            left.insert(i, k);
            if ok {
                return true;
            }
        }
        false
    }
    let mut img = before.to_vec();
    go(&mut img, &mut (0..writes.len()).collect(), writes, got)
}

/// Several connections write overlapping aligned and unaligned ranges of
/// the same blocks at once, round after round; after each round the
/// image is the one before with the round's writes applied whole in some
/// order. Without the range lock an aligned write lands between an RMW's
/// read and its write and the RMW puts old bytes back around its own.
#[test]
fn concurrent_overlapping_writes_from_many_connections_land_whole() {
    const ROUNDS: u64 = 150;
    const REGION: usize = 16384;
    // Reads take 1 ms: an RMW's read-to-write window that the other
    // connections' writes, sent at the same moment, fall into.
    let (h, _, strict) = server(4 * MIB, 512, 1000);
    let port = h.port;
    let start = Arc::new(Barrier::new(4));
    let end = Arc::new(Barrier::new(4));
    let checked = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|k| {
            let (start, end, checked) = (start.clone(), end.clone(), checked.clone());
            std::thread::spawn(move || {
                let mut c = Raw::export_name(port, "b");
                let mut image = vec![0u8; REGION];
                let mut bad = Vec::new();
                for r in 0..ROUNDS {
                    let writes = round_writes(r);
                    start.wait();
                    let (off, data) = &writes[k];
                    assert_eq!(c.write(*off, data, 0), 0);
                    end.wait();
                    if k == 0 {
                        let got = c.read(0, REGION as u32).unwrap();
                        if !some_order(&image, &writes, &got) {
                            bad.push(r);
                        }
                        image = got;
                    }
                    checked.wait();
                }
                bad
            })
        })
        .collect();
    let bad: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("a writer"))
        .collect();
    assert!(bad.is_empty(), "rounds whose writes mixed: {bad:?}");
    assert_eq!(strict.unaligned.load(Ordering::SeqCst), 0);
    h.stop();
}

/// Reads the values of an `NBD_INFO_BLOCK_SIZE` reply to `opt`.
fn block_sizes(c: &mut Raw, opt: u32, name: &str) -> Vec<u32> {
    c.option(opt, &Raw::info_data(name, &[3]));
    let mut sizes = vec![];
    loop {
        let (o, t, d) = c.opt_reply();
        assert_eq!(o, opt);
        match t {
            rep::ACK => return sizes,
            rep::INFO if u16::from_be_bytes([d[0], d[1]]) == 3 => {
                assert_eq!(d.len(), 14);
                sizes = d[2..]
                    .chunks(4)
                    .map(|x| u32::from_be_bytes(x.try_into().unwrap()))
                    .collect();
            }
            rep::INFO => {}
            t => panic!("{t:#x}"),
        }
    }
}

#[test]
fn go_and_info_advertise_minimum_512_preferred_4096_maximum_32_mib() {
    let ex = Arc::new(StaticExports::new());
    ex.add("m", "", Arc::new(MemDisk::new(MIB)), false);
    let big = StrictDisk::new(Arc::new(MemDisk::new(MIB)), 8192, Duration::ZERO);
    ex.add("big", "", big, false);
    let h = Harness::start(ex, ServerConfig::default());
    let mut c = Raw::start(h.port);
    assert_eq!(block_sizes(&mut c, opt::INFO, "m"), [512, 4096, 32 << 20]);
    // A device with larger blocks asks for them.
    assert_eq!(
        block_sizes(&mut c, opt::INFO, "big"),
        [8192, 8192, 32 << 20]
    );
    assert_eq!(block_sizes(&mut c, opt::GO, "m"), [512, 4096, 32 << 20]);
    // Unaligned requests are served even after GO.
    assert_eq!(c.write(3, &[9; 5], flag::FUA), 0);
    assert_eq!(c.read(0, 10).unwrap(), [0, 0, 0, 9, 9, 9, 9, 9, 0, 0]);
    drop(c);
    h.stop();
}

/// qemu-io's unaligned writes and zeroes (it aligns them to the advertised
/// minimum of 512 by read-modify-write of its own) read back exactly.
#[test]
fn qemu_io_unaligned_writes_and_zeroes_read_back() {
    if !have("qemu-io") {
        return;
    }
    let (h, mem, strict) = server(4 * MIB, 512, 0);
    let url = h.uri("b");
    let cmds = [
        "write -P 0x5a 1 1000",
        "read -P 0x5a 1 1000",
        "read -P 0 0 1",
        "read -P 0 1001 23",
        "write -P 0x33 4095 70000",
        "write -z 4097 513",
        "read -P 0 4097 513",
        "read -P 0x33 4610 69485",
        "read -P 0x33 4095 2",
    ];
    let mut args = vec!["-f", "raw"];
    for c in &cmds {
        args.extend(["-c", c]);
    }
    args.push(&url);
    let (ok, out) = run(std::process::Command::new("qemu-io").args(&args));
    assert!(ok, "{out}");
    assert!(!out.contains("Pattern verification failed"), "{out}");
    assert!(!out.to_lowercase().contains("error"), "{out}");
    let img = mem.snapshot();
    assert_eq!(img[0], 0);
    assert!(img[1..1001].iter().all(|&b| b == 0x5a));
    assert!(img[1001..4095].iter().all(|&b| b == 0));
    assert!(img[4095..4097].iter().all(|&b| b == 0x33));
    assert!(img[4097..4610].iter().all(|&b| b == 0));
    assert!(img[4610..74095].iter().all(|&b| b == 0x33));
    assert!(img[74095..].iter().all(|&b| b == 0));
    assert_eq!(strict.unaligned.load(Ordering::SeqCst), 0);
    h.stop();
}

/// The real daemon: every offset class on a RAID-5 volume (64 KiB strips,
/// so the cases cross strip and row boundaries), then on an instant copy
/// of it and on the source after the copy point, each against its own
/// reference.
#[test]
fn daemon_raid5_volume_and_instant_copy_serve_every_offset_class() {
    if !harness::have(&["qemu-io"]) {
        return;
    }
    let dir = harness::pool_dir();
    let d = harness::Daemon::start(dir.path(), &[]);
    d.group("g5", "raid5", &["e0", "e1", "e2", "e3"], "40M");
    let port: u16 = d.url.rsplit(':').next().unwrap().parse().unwrap();
    for (i, mode) in ["row", "cow"].into_iter().enumerate() {
        let (src, copy) = (format!("v{mode}"), format!("c{mode}"));
        d.ok(&["volume", "create", &src, "--group", "g5", "--size", "12M"]);
        let mut c = Raw::export_name(port, &src);
        let mut reference = vec![0u8; c.size as usize];
        every_offset_class(&mut c, &mut reference, 3 + i as u64, false);
        d.json(&["copy", "create", &src, &copy, "--mode", mode]);
        let mut copy_ref = reference.clone();
        let mut cc = Raw::export_name(port, &copy);
        every_offset_class(&mut cc, &mut copy_ref, 50, false);
        every_offset_class(&mut c, &mut reference, 90, false);
        let whole = 12 * MIB as u32;
        assert!(c.read(0, whole).unwrap() == reference, "{mode}: the source");
        assert!(cc.read(0, whole).unwrap() == copy_ref, "{mode}: the copy");
    }
}
