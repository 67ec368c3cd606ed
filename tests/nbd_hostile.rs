//! Hostile input: a raw client sends every kind of bad message; each gets
//! its exact reply or a closed connection within a bounded time, while a
//! well-behaved client on another connection keeps reading back what it
//! wrote, and a fresh client afterwards still reads correct data. No
//! worker thread may panic.

mod nbd_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferrosan::blockdev::{BlockDev, write_slice};
use ferrosan::disk::MemDisk;
use ferrosan::nbd::{ServerConfig, StaticExports};
use ferrosan::rt;
use nbd_common::*;
use proptest::prelude::*;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 16 * MIB;
/// Where the well-behaved client works.
const GOOD: u64 = 8 * MIB;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(1500);
const PAYLOAD_TIMEOUT: Duration = Duration::from_millis(800);
/// Ample time for an expected close.
const BOUND: Duration = Duration::from_secs(10);

static WORKER_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_worker_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let t = std::thread::current();
            if t.name().is_some_and(|n| n.starts_with("ferrosan-w")) {
                WORKER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            prev(info);
        }));
    });
}

struct World {
    h: Harness,
    mem: Arc<MemDisk>,
    ro: Arc<MemDisk>,
    stop: Arc<AtomicBool>,
    good: Option<std::thread::JoinHandle<usize>>,
}

impl World {
    fn new() -> World {
        count_worker_panics();
        let mem = Arc::new(MemDisk::new(SIZE));
        let ro = Arc::new(MemDisk::new(MIB));
        rt::block_on(async {
            write_slice(&*mem, 0, &pattern(MIB as usize, 1), false)
                .await
                .unwrap();
            write_slice(&*ro, 0, &pattern(MIB as usize, 2), false)
                .await
                .unwrap();
        });
        let ex = Arc::new(StaticExports::new());
        ex.add("mem", "memory", mem.clone(), false);
        ex.add("ro", "read-only", ro.clone(), true);
        ex.add(
            "plain",
            "",
            Arc::new(PlainDisk(Arc::new(MemDisk::new(MIB)))),
            false,
        );
        let cfg = ServerConfig {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            payload_timeout: PAYLOAD_TIMEOUT,
            ..ServerConfig::default()
        };
        let h = Harness::start(ex, cfg);
        let stop = Arc::new(AtomicBool::new(false));
        let good = Some(good_client(h.port, stop.clone()));
        h.wait_until("the good client", || h.server.connection_count() == 1);
        World {
            h,
            mem,
            ro,
            stop,
            good,
        }
    }

    fn port(&self) -> u16 {
        self.h.port
    }

    /// Stops the good client, checks it and a fresh client, and that no
    /// worker panicked.
    fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let rounds = self.good.take().unwrap().join().expect("good client");
        assert!(rounds > 0);
        let mut c = Raw::open(self.port(), "mem", false);
        assert_eq!(c.read(0, MIB as u32).unwrap(), pattern(MIB as usize, 1));
        let mut c = Raw::open(self.port(), "ro", true);
        assert_eq!(c.read(0, MIB as u32).unwrap(), pattern(MIB as usize, 2));
        assert_eq!(self.ro.snapshot(), pattern(MIB as usize, 2));
        assert_eq!(WORKER_PANICS.load(Ordering::SeqCst), 0, "a worker panicked");
        drop(c);
        self.h.stop();
    }
}

/// Writes and reads back its own region until told to stop.
fn good_client(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut c = Raw::open(port, "mem", true);
        let mut n = 0usize;
        while !stop.load(Ordering::SeqCst) || n == 0 {
            let data = pattern(65536, n as u8);
            let off = GOOD + (n as u64 % 16) * 65536;
            assert_eq!(c.write(off, &data, 0), 0);
            assert_eq!(c.read(off, 65536).unwrap(), data);
            n += 1;
        }
        n
    })
}

fn assert_closed(c: &mut Raw, what: &str) {
    assert!(
        c.closed_within(BOUND),
        "{what}: the connection was not closed"
    );
}

fn header(opt: u32, len: u32) -> Vec<u8> {
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&opt.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v
}

// ---------------------------------------------------------------------
// Handshake.

#[test]
fn handshake_violations_close_the_connection() {
    let w = World::new();
    // Unknown client flags.
    let mut c = Raw::connect(w.port());
    c.send(&0x0000_0007u32.to_be_bytes());
    assert_closed(&mut c, "unknown client flags");
    // Wrong option magic.
    let mut c = Raw::start(w.port());
    c.send(&[0x12; 16]);
    assert_closed(&mut c, "bad option magic");
    // 4 GiB of option data, announced.
    let mut c = Raw::start(w.port());
    c.send(&header(opt::GO, u32::MAX));
    assert_closed(&mut c, "4 GiB option");
    let mut c = Raw::start(w.port());
    c.send(&header(opt::EXPORT_NAME, u32::MAX));
    assert_closed(&mut c, "4 GiB export name");
    // EXPORT_NAME of an unknown export cannot fail politely.
    let mut c = Raw::start(w.port());
    c.option(opt::EXPORT_NAME, b"nope");
    assert_closed(&mut c, "unknown EXPORT_NAME");
    // Garbage instead of options.
    let mut c = Raw::start(w.port());
    c.send(&pattern(300, 5));
    assert_closed(&mut c, "garbage");
    // ABORT is acknowledged, then the connection ends.
    let mut c = Raw::start(w.port());
    c.option(opt::ABORT, &[]);
    c.expect_reply(opt::ABORT, rep::ACK);
    assert_closed(&mut c, "abort");
    w.finish();
}

#[test]
fn handshake_timeout_closes_silent_clients() {
    let w = World::new();
    let t = Instant::now();
    let mut c = Raw::connect(w.port());
    assert_closed(&mut c, "silent client");
    assert!(
        t.elapsed() >= HANDSHAKE_TIMEOUT / 2,
        "closed too early: {:?}",
        t.elapsed()
    );
    // Slow option haggling counts too.
    let mut c = Raw::start(w.port());
    c.option(opt::LIST, &[]);
    c.expect_reply(opt::LIST, rep::SERVER);
    assert_closed(&mut c, "client stuck in haggling");
    w.finish();
}

#[test]
fn bad_options_get_error_replies_and_haggling_goes_on() {
    let w = World::new();
    let mut c = Raw::start(w.port());
    // Unknown options.
    c.option(99, b"0123456789");
    c.expect_reply(99, rep::ERR_UNSUP);
    c.option(0x7fff_ffff, &[]);
    c.expect_reply(0x7fff_ffff, rep::ERR_UNSUP);
    // Too large, but small enough to skip.
    c.send(&header(opt::INFO, 100 << 10));
    c.send(&vec![0xee; 100 << 10]);
    c.expect_reply(opt::INFO, rep::ERR_TOO_BIG);
    // TLS is not offered.
    c.option(opt::STARTTLS, &[]);
    c.expect_reply(opt::STARTTLS, rep::ERR_POLICY);
    // Options that take no data.
    c.option(opt::LIST, b"x");
    c.expect_reply(opt::LIST, rep::ERR_INVALID);
    c.option(opt::STRUCTURED_REPLY, b"x");
    c.expect_reply(opt::STRUCTURED_REPLY, rep::ERR_INVALID);
    // Malformed GO / INFO.
    c.option(opt::GO, &[0, 0, 0, 200, b'm', b'e', b'm', 0, 0]);
    c.expect_reply(opt::GO, rep::ERR_INVALID);
    c.option(opt::INFO, &[0, 0, 0, 3, b'm', b'e', b'm', 0, 5, 0, 1]);
    c.expect_reply(opt::INFO, rep::ERR_INVALID);
    c.option(opt::GO, &[0xff, 0xff, 0xff, 0xff, 0, 0]);
    c.expect_reply(opt::GO, rep::ERR_INVALID);
    c.option(opt::GO, &[0, 0]);
    c.expect_reply(opt::GO, rep::ERR_INVALID);
    c.option(opt::GO, &Raw::info_data("nope", &[]));
    c.expect_reply(opt::GO, rep::ERR_UNKNOWN);
    // Meta contexts: SET needs structured replies first.
    c.option(
        opt::SET_META_CONTEXT,
        &Raw::meta_data("mem", &["base:allocation"]),
    );
    c.expect_reply(opt::SET_META_CONTEXT, rep::ERR_INVALID);
    c.option(opt::STRUCTURED_REPLY, &[]);
    c.expect_reply(opt::STRUCTURED_REPLY, rep::ACK);
    // Malformed meta payloads.
    let mut bad = Raw::meta_data("mem", &["base:allocation"]);
    bad.truncate(bad.len() - 3);
    c.option(opt::SET_META_CONTEXT, &bad);
    c.expect_reply(opt::SET_META_CONTEXT, rep::ERR_INVALID);
    c.option(
        opt::LIST_META_CONTEXT,
        &[0, 0, 0, 3, b'm', b'e', b'm', 0xff, 0xff, 0xff, 0xff],
    );
    c.expect_reply(opt::LIST_META_CONTEXT, rep::ERR_INVALID);
    c.option(opt::LIST_META_CONTEXT, &[0, 0, 0, 9, b'm']);
    c.expect_reply(opt::LIST_META_CONTEXT, rep::ERR_INVALID);
    c.option(opt::LIST_META_CONTEXT, &Raw::meta_data("nope", &[]));
    c.expect_reply(opt::LIST_META_CONTEXT, rep::ERR_UNKNOWN);
    // Well-formed ones: the wildcard lists base:allocation, unknown
    // namespaces are ignored.
    for q in [
        &[][..],
        &["base:"][..],
        &["x-foo:bar", "base:allocation"][..],
    ] {
        c.option(opt::LIST_META_CONTEXT, &Raw::meta_data("mem", q));
        let d = c.expect_reply(opt::LIST_META_CONTEXT, rep::META_CONTEXT);
        assert_eq!(&d[4..], b"base:allocation");
        c.expect_reply(opt::LIST_META_CONTEXT, rep::ACK);
    }
    c.option(
        opt::LIST_META_CONTEXT,
        &Raw::meta_data("mem", &["qemu:dirty-bitmap:x"]),
    );
    c.expect_reply(opt::LIST_META_CONTEXT, rep::ACK);
    // SET selecting nothing: block status is then refused.
    c.option(
        opt::SET_META_CONTEXT,
        &Raw::meta_data("mem", &["base:", "x-a:b"]),
    );
    c.expect_reply(opt::SET_META_CONTEXT, rep::ACK);
    c.go("mem");
    c.structured = true;
    c.request(cmd::BLOCK_STATUS, 0, 5, 0, 4096);
    let (g, _) = c.reply(0);
    assert_eq!((g.cookie(), g.errno()), (5, EINVAL));
    assert!(g.message().contains("metadata context"), "{}", g.message());
    // And the connection serves data.
    assert_eq!(c.read(0, 4096).unwrap(), pattern(MIB as usize, 1)[..4096]);
    w.finish();
}

#[test]
fn list_and_info_answer_exactly() {
    let w = World::new();
    let mut c = Raw::start(w.port());
    c.option(opt::LIST, &[]);
    let mut names = vec![];
    loop {
        let (o, t, d) = c.opt_reply();
        assert_eq!(o, opt::LIST);
        if t == rep::ACK {
            break;
        }
        assert_eq!(t, rep::SERVER);
        let n = u32::from_be_bytes(d[0..4].try_into().unwrap()) as usize;
        names.push((
            String::from_utf8(d[4..4 + n].to_vec()).unwrap(),
            String::from_utf8(d[4 + n..].to_vec()).unwrap(),
        ));
    }
    assert_eq!(names[0], ("mem".to_string(), "memory".to_string()));
    assert_eq!(names[1], ("ro".to_string(), "read-only".to_string()));
    c.option(opt::INFO, &Raw::info_data("", &[1, 2, 3]));
    let mut seen = vec![];
    loop {
        let (_, t, d) = c.opt_reply();
        if t == rep::ACK {
            break;
        }
        assert_eq!(t, rep::INFO);
        let typ = u16::from_be_bytes([d[0], d[1]]);
        match typ {
            0 => {
                assert_eq!(u64::from_be_bytes(d[2..10].try_into().unwrap()), SIZE);
                let f = u16::from_be_bytes([d[10], d[11]]);
                // HAS_FLAGS, FLUSH, FUA, TRIM, WRITE_ZEROES, MULTI_CONN,
                // CACHE, FAST_ZERO; no DF (no structured replies yet).
                assert_eq!(f, 1 | 4 | 8 | 32 | 64 | 256 | 1024 | 2048);
            }
            1 => assert_eq!(&d[2..], b"mem"),
            2 => assert_eq!(&d[2..], b"memory"),
            3 => {
                let v: Vec<u32> = d[2..]
                    .chunks(4)
                    .map(|x| u32::from_be_bytes(x.try_into().unwrap()))
                    .collect();
                assert_eq!(v, [512, 4096, 32 << 20]);
            }
            t => panic!("unexpected info {t}"),
        }
        seen.push(typ);
    }
    seen.sort();
    assert_eq!(seen, [0, 1, 2, 3]);
    // The read-only export's flags.
    c.option(opt::INFO, &Raw::info_data("ro", &[]));
    let d = c.expect_reply(opt::INFO, rep::INFO);
    assert_eq!(u16::from_be_bytes([d[10], d[11]]), 1 | 2 | 4 | 256 | 1024);
    w.finish();
}

// ---------------------------------------------------------------------
// Transmission.

fn both() -> [bool; 2] {
    [false, true]
}

#[test]
fn bad_requests_get_exact_errors_and_the_stream_stays_in_sync() {
    let w = World::new();
    for structured in both() {
        let mut c = Raw::open(w.port(), "mem", structured);
        let expect = |c: &mut Raw,
                      cmdn: u16,
                      flags: u16,
                      off: u64,
                      len: u32,
                      payload: Option<&[u8]>,
                      errno: u32,
                      msg: &str| {
            c.request(cmdn, flags, 9, off, len);
            if let Some(p) = payload {
                c.send(p);
            }
            let (g, _) = c.reply(0);
            assert_eq!(g.cookie(), 9);
            assert_eq!(
                g.errno(),
                errno,
                "cmd {cmdn} flags {flags:#x} off {off} len {len}"
            );
            if structured {
                assert!(g.message().contains(msg), "{:?} lacks {msg:?}", g.message());
                assert!(
                    matches!(
                        g,
                        Got::Chunk {
                            flags: 1,
                            typ: 0x8001,
                            ..
                        }
                    ),
                    "{g:?}"
                );
            } else {
                assert!(matches!(g, Got::Simple { .. }));
            }
            // The next request is understood.
            assert_eq!(
                c.read(4096, 512).unwrap(),
                pattern(MIB as usize, 1)[4096..4608]
            );
        };
        let big = vec![0x66u8; 8192];
        expect(&mut c, 42, 0, 0, 512, None, EINVAL, "unknown command 42");
        expect(&mut c, cmd::READ, 0x100, 0, 512, None, EINVAL, "flags");
        expect(
            &mut c,
            cmd::WRITE,
            flag::REQ_ONE,
            0,
            8192,
            Some(&big),
            EINVAL,
            "flags",
        );
        expect(&mut c, cmd::READ, 0, SIZE, 512, None, EINVAL, "export size");
        expect(
            &mut c,
            cmd::READ,
            0,
            SIZE - 512,
            1024,
            None,
            EINVAL,
            "export size",
        );
        expect(
            &mut c,
            cmd::WRITE,
            0,
            SIZE - 4096,
            8192,
            Some(&big),
            ENOSPC,
            "export size",
        );
        expect(
            &mut c,
            cmd::WRITE_ZEROES,
            0,
            SIZE,
            512,
            None,
            ENOSPC,
            "export size",
        );
        expect(&mut c, cmd::TRIM, 0, SIZE, 512, None, EINVAL, "export size");
        expect(
            &mut c,
            cmd::CACHE,
            0,
            SIZE,
            512,
            None,
            EINVAL,
            "export size",
        );
        expect(
            &mut c,
            cmd::TRIM,
            0,
            u64::MAX - 511,
            1024,
            None,
            EINVAL,
            "overflows",
        );
        expect(
            &mut c,
            cmd::READ,
            0,
            u64::MAX - 511,
            1024,
            None,
            EINVAL,
            "overflows",
        );
        // Unaligned requests are served (no block size was negotiated; the
        // advertised minimum is 1): a write of the bytes already there
        // leaves the image as it was.
        let image = pattern(MIB as usize, 1);
        assert_eq!(c.read(100, 512).unwrap(), image[100..612]);
        assert_eq!(c.read(0, 100).unwrap(), image[..100]);
        assert_eq!(c.write(1, &image[1..101], 0), 0);
        let (read_big, bs_flags) = if structured {
            (EOVERFLOW, EINVAL)
        } else {
            (EINVAL, EINVAL)
        };
        expect(
            &mut c,
            cmd::READ,
            0,
            0,
            u32::MAX,
            None,
            read_big,
            "maximum payload",
        );
        expect(
            &mut c,
            cmd::READ,
            0,
            0,
            (32 << 20) + 512,
            None,
            read_big,
            "maximum payload",
        );
        if structured {
            expect(
                &mut c,
                cmd::BLOCK_STATUS,
                flag::FAST_ZERO,
                0,
                512,
                None,
                bs_flags,
                "flags",
            );
            expect(
                &mut c,
                cmd::BLOCK_STATUS,
                0,
                SIZE,
                512,
                None,
                EINVAL,
                "export size",
            );
            expect(&mut c, cmd::BLOCK_STATUS, 0, 0, 0, None, EINVAL, "0 bytes");
        } else {
            // No structured replies: no DF, no block status.
            expect(&mut c, cmd::READ, flag::DF, 0, 512, None, EINVAL, "flags");
            expect(
                &mut c,
                cmd::BLOCK_STATUS,
                0,
                0,
                512,
                None,
                EINVAL,
                "metadata",
            );
        }
        // Nothing was written.
        assert_eq!(
            w.mem.snapshot()[..MIB as usize],
            pattern(MIB as usize, 1)[..]
        );
        assert!(
            w.mem.snapshot()[SIZE as usize - 8192..]
                .iter()
                .all(|&b| b == 0)
        );
    }
    w.finish();
}

#[test]
fn read_only_export_refuses_writes_with_eperm() {
    let w = World::new();
    for structured in both() {
        let mut c = Raw::open(w.port(), "ro", structured);
        assert_eq!(c.flags & 2, 2, "READ_ONLY flag");
        assert_eq!(c.write(0, &[0u8; 4096], 0), EPERM);
        for (cm, fl) in [
            (cmd::TRIM, 0),
            (cmd::WRITE_ZEROES, 0),
            (cmd::WRITE_ZEROES, flag::FAST_ZERO),
        ] {
            c.request(cm, fl, 3, 0, 4096);
            let (g, _) = c.reply(0);
            assert_eq!((g.cookie(), g.errno()), (3, EPERM));
        }
        assert_eq!(c.read(0, 4096).unwrap(), pattern(4096, 2));
    }
    w.finish();
}

#[test]
fn fatal_requests_close_the_connection() {
    let w = World::new();
    for structured in both() {
        // Wrong request magic.
        let mut c = Raw::open(w.port(), "mem", structured);
        c.send(&[0u8; 28]);
        assert_closed(&mut c, "bad request magic");
        // A 4 GiB write cannot be skipped.
        let mut c = Raw::open(w.port(), "mem", structured);
        c.request(cmd::WRITE, 0, 1, 0, u32::MAX);
        assert_closed(&mut c, "4 GiB write");
        // Garbage.
        let mut c = Raw::open(w.port(), "mem", structured);
        c.send(&pattern(1000, 77));
        assert_closed(&mut c, "garbage");
    }
    w.finish();
}

#[test]
fn stalled_requests_time_out() {
    let w = World::new();
    // A write whose payload never (fully) arrives.
    let mut c = Raw::open(w.port(), "mem", true);
    let t = Instant::now();
    c.request(cmd::WRITE, 0, 1, 0, 65536);
    c.send(&[1u8; 1000]);
    assert_closed(&mut c, "write payload never arrives");
    assert!(
        t.elapsed() >= PAYLOAD_TIMEOUT / 2,
        "closed too early: {:?}",
        t.elapsed()
    );
    // Half a request header.
    let mut c = Raw::open(w.port(), "mem", false);
    let t = Instant::now();
    c.send(&REQUEST_MAGIC.to_be_bytes());
    c.send(&[0, 0, 0]);
    assert_closed(&mut c, "half a header");
    assert!(
        t.elapsed() >= PAYLOAD_TIMEOUT / 2,
        "closed too early: {:?}",
        t.elapsed()
    );
    // The skipped payload of a refused write must arrive too.
    let mut c = Raw::open(w.port(), "mem", false);
    c.request(cmd::WRITE, 0, 1, SIZE, 4096);
    assert_closed(&mut c, "refused write payload never arrives");
    // An idle connection is not a stalled one.
    let mut c = Raw::open(w.port(), "mem", true);
    assert!(!c.closed_within(PAYLOAD_TIMEOUT * 2), "idle client dropped");
    c.s.set_read_timeout(Some(BOUND)).unwrap();
    assert_eq!(c.read(0, 512).unwrap(), pattern(512, 1));
    // Nothing of the stalled writes reached the device.
    assert_eq!(
        w.mem.snapshot()[..MIB as usize],
        pattern(MIB as usize, 1)[..]
    );
    w.finish();
}

#[test]
fn client_vanishing_with_requests_in_flight() {
    let w = World::new();
    let base = w.h.server.connection_count();
    for i in 0..8u64 {
        let mut c = Raw::open(w.port(), "mem", i % 2 == 0);
        for k in 0..64u64 {
            c.request(cmd::READ, 0, k, (k % 16) * 65536, 65536);
            c.request(cmd::WRITE, 0, 1000 + k, MIB + k * 4096, 4096);
            c.send(&[0x5c; 4096]);
        }
        // Half a write, then gone.
        c.request(cmd::WRITE, 0, 7, 0, 65536);
        c.send(&[0x11; 100]);
        drop(c);
    }
    w.h.wait_until("connections to close", || {
        w.h.server.connection_count() == base
    });
    // Whatever was written is whole 4 KiB blocks of the pattern.
    let img = w.mem.snapshot();
    for k in 0..64usize {
        let b = &img[MIB as usize + k * 4096..MIB as usize + (k + 1) * 4096];
        assert!(
            b.iter().all(|&x| x == 0x5c) || b.iter().all(|&x| x == 0),
            "block {k}"
        );
    }
    // The half write did not land.
    assert_eq!(img[..MIB as usize], pattern(MIB as usize, 1)[..]);
    w.finish();
}

#[test]
fn zero_length_requests_never_touch_the_device() {
    let w = World::new();
    for structured in both() {
        let mut c = Raw::open(w.port(), "mem", structured);
        for (cm, cookie) in [
            (cmd::READ, 11),
            (cmd::WRITE, 12),
            (cmd::TRIM, 13),
            (cmd::WRITE_ZEROES, 14),
            (cmd::CACHE, 15),
        ] {
            c.request(cm, 0, cookie, 4096, 0);
            let (g, data) = c.reply(0);
            assert_eq!((g.cookie(), g.errno()), (cookie, 0));
            assert!(data.is_empty());
            if structured && cm == cmd::READ {
                assert!(
                    matches!(
                        g,
                        Got::Chunk {
                            flags: 1,
                            typ: 0,
                            ..
                        }
                    ),
                    "{g:?}"
                );
            }
        }
    }
    assert_eq!(
        w.mem.snapshot()[..MIB as usize],
        pattern(MIB as usize, 1)[..]
    );
    w.finish();
}

/// A connection of its own to a quiet export, to count device calls.
#[test]
fn zero_length_requests_count_no_device_calls() {
    count_worker_panics();
    let mem = Arc::new(MemDisk::new(MIB));
    let ex = Arc::new(StaticExports::new());
    ex.add("m", "", mem.clone(), false);
    let h = Harness::start(ex, ServerConfig::default());
    let mut c = Raw::open(h.port, "m", true);
    for cm in [
        cmd::READ,
        cmd::WRITE,
        cmd::TRIM,
        cmd::WRITE_ZEROES,
        cmd::CACHE,
    ] {
        c.request(cm, 0, 1, 0, 0);
        assert_eq!(c.reply(0).0.errno(), 0);
    }
    assert_eq!(mem.reads.load(Ordering::SeqCst), 0);
    assert_eq!(mem.writes.load(Ordering::SeqCst), 0);
    assert_eq!(mem.size(), MIB);
    drop(c);
    h.stop();
}

// ---------------------------------------------------------------------
// Random bytes.

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Random bytes at any point of the protocol: the server answers or
    /// closes, never panics, and keeps serving others.
    #[test]
    fn random_bytes_never_break_the_server(
        phase in 0u8..3,
        junk in proptest::collection::vec(any::<u8>(), 1..600),
    ) {
        let w = fuzz_world();
        let mut c = match phase {
            0 => Raw::connect(w.port),
            1 => Raw::start(w.port),
            _ => Raw::open(w.port, "m", true),
        };
        c.send(&junk);
        // Then the client goes away; the server must let go of it.
        drop(c);
        let mut g = Raw::open(w.port, "r", true);
        prop_assert_eq!(g.read(0, 512).unwrap(), pattern(512, 4));
        prop_assert_eq!(WORKER_PANICS.load(Ordering::SeqCst), 0);
    }

    /// Random but well-framed requests: every one gets a reply with its
    /// cookie, or the connection closes; the export size is never
    /// exceeded.
    #[test]
    fn random_requests_get_replies(
        reqs in proptest::collection::vec((0u16..10, any::<u16>(), 0u64..(3 * MIB), prop_oneof![0u32..(2 * MIB as u32), any::<u32>()]), 1..20),
    ) {
        let w = fuzz_world();
        let mut c = Raw::open(w.port, "w", true);
        for (i, (cm, flags, off, len)) in reqs.into_iter().enumerate() {
            let cm = if cm == cmd::DISC { cmd::FLUSH } else { cm };
            let len = if cm == cmd::WRITE { len.min(1 << 20) } else { len };
            c.request(cm, flags, i as u64, off, len);
            if cm == cmd::WRITE {
                c.send(&vec![0xabu8; len as usize]);
            }
            let (g, _) = c.reply(len as usize);
            prop_assert_eq!(g.cookie(), i as u64);
        }
        prop_assert_eq!(WORKER_PANICS.load(Ordering::SeqCst), 0);
    }
}

struct FuzzWorld {
    port: u16,
}

/// One server for all the random cases (started once).
fn fuzz_world() -> FuzzWorld {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    count_worker_panics();
    let port = *PORT.get_or_init(|| {
        let ex = Arc::new(StaticExports::new());
        ex.add("m", "", Arc::new(MemDisk::new(2 * MIB)), false);
        ex.add("w", "", Arc::new(MemDisk::new(2 * MIB)), false);
        let r = Arc::new(MemDisk::new(MIB));
        rt::block_on(async { write_slice(&*r, 0, &pattern(512, 4), false).await.unwrap() });
        ex.add("r", "", r, true);
        let cfg = ServerConfig {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            payload_timeout: PAYLOAD_TIMEOUT,
            ..ServerConfig::default()
        };
        let h = Harness::start(ex, cfg);
        let port = h.port;
        // Lives for the rest of the test process.
        std::mem::forget(h);
        port
    });
    FuzzWorld { port }
}
