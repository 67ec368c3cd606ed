//! Protocol semantics with a raw client: reply formats, out-of-order
//! completion, pipelining past the in-flight limit, block status, fast
//! zero, FUA/flush across connections, device errors, DISC.

mod nbd_common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ferrosan::blockdev::{BlockDev, write_slice};
use ferrosan::disk::MemDisk;
use ferrosan::nbd::{ServerConfig, StaticExports};
use ferrosan::rt;
use nbd_common::*;

const MIB: u64 = 1 << 20;

struct Setup {
    h: Harness,
    mem: Arc<MemDisk>,
    gate: Arc<GateDisk>,
    plain: Arc<MemDisk>,
}

fn setup() -> Setup {
    let mem = Arc::new(MemDisk::new(8 * MIB));
    rt::block_on(async {
        write_slice(&*mem, 0, &pattern(4 * MIB as usize, 1), false)
            .await
            .unwrap();
        mem.flush().await.unwrap();
    });
    let gate = GateDisk::new(mem.clone(), MIB);
    let plain = Arc::new(MemDisk::new(MIB));
    rt::block_on(async { write_slice(&*plain, 0, &[0x55; 8192], false).await.unwrap() });
    let ex = Arc::new(StaticExports::new());
    ex.add("mem", "", mem.clone(), false);
    ex.add("gate", "", gate.clone(), false);
    ex.add("plain", "", Arc::new(PlainDisk(plain.clone())), false);
    Setup {
        h: Harness::start(ex, ServerConfig::default()),
        mem,
        gate,
        plain,
    }
}

#[test]
fn read_replies_simple_and_structured() {
    let s = setup();
    let mut c = Raw::open(s.h.port, "mem", false);
    c.request(cmd::READ, 0, 0xdead_beef, 8192, 4096);
    let (g, data) = c.reply(4096);
    assert_eq!(
        g,
        Got::Simple {
            errno: 0,
            cookie: 0xdead_beef
        }
    );
    assert_eq!(data, pattern(4 * MIB as usize, 1)[8192..12288]);
    let mut c = Raw::open(s.h.port, "mem", true);
    assert_eq!(
        c.flags & (1 << 7),
        1 << 7,
        "SEND_DF with structured replies"
    );
    c.request(cmd::READ, flag::DF, 42, 65536, 8192);
    let (g, data) = c.reply(0);
    match &g {
        Got::Chunk {
            flags,
            typ,
            cookie,
            payload,
        } => {
            assert_eq!((*flags, *typ, *cookie), (1, 1, 42));
            assert_eq!(u64::from_be_bytes(payload[0..8].try_into().unwrap()), 65536);
            assert_eq!(payload.len(), 8 + 8192);
        }
        g => panic!("{g:?}"),
    }
    assert_eq!(data, pattern(4 * MIB as usize, 1)[65536..65536 + 8192]);
    s.h.stop();
}

#[test]
fn replies_come_back_out_of_order() {
    let s = setup();
    let mut c = Raw::open(s.h.port, "gate", true);
    // Held at the gate, then one that is not.
    c.request(cmd::READ, 0, 1, 0, 4096);
    s.h.wait_until("the first read to reach the gate", || {
        s.gate.waiting.load(Ordering::SeqCst) == 1
    });
    c.request(cmd::READ, 0, 2, 2 * MIB, 4096);
    let (g, data) = c.reply(0);
    assert_eq!(g.cookie(), 2, "the later request is answered first");
    assert_eq!(
        data,
        pattern(4 * MIB as usize, 1)[2 * MIB as usize..][..4096]
    );
    s.gate.open(1);
    let (g, data) = c.reply(0);
    assert_eq!(g.cookie(), 1);
    assert_eq!(data, pattern(4096, 1));
    s.h.stop();
}

#[test]
fn thousands_of_pipelined_requests_all_get_their_reply() {
    let s = setup();
    for structured in [false, true] {
        let mut c = Raw::open(s.h.port, "mem", structured);
        let mut w = c.s.try_clone().unwrap();
        const N: u64 = 2000;
        let sender = std::thread::spawn(move || {
            let mut buf = Vec::new();
            for i in 0..N {
                let off = 4 * MIB + (i % 512) * 4096;
                let mut req = |cmdn: u16, cookie: u64| {
                    buf.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
                    buf.extend_from_slice(&0u16.to_be_bytes());
                    buf.extend_from_slice(&cmdn.to_be_bytes());
                    buf.extend_from_slice(&cookie.to_be_bytes());
                    buf.extend_from_slice(&off.to_be_bytes());
                    buf.extend_from_slice(&4096u32.to_be_bytes());
                };
                if i < 512 {
                    req(cmd::WRITE, i);
                    buf.extend_from_slice(&pattern(4096, i as u8));
                } else {
                    req(cmd::READ, i);
                }
                if buf.len() > 100_000 {
                    w.write_all(&buf).unwrap();
                    buf.clear();
                }
            }
            w.write_all(&buf).unwrap();
        });
        // Reads are pipelined behind the writes of the same blocks, so
        // each returns either the old or the new block, never anything
        // else; afterwards every block holds its new data.
        let mut seen = vec![false; N as usize];
        for _ in 0..N {
            let (g, data) = c.reply_for(|cookie| if cookie < 512 { 0 } else { 4096 });
            assert_eq!(g.errno(), 0);
            let i = g.cookie();
            assert!(!seen[i as usize], "cookie {i} answered twice");
            seen[i as usize] = true;
            if i >= 512 {
                let k = (i % 512) as u8;
                assert!(
                    data == pattern(4096, k) || data.iter().all(|&b| b == 0),
                    "read {i} returned foreign data"
                );
            }
        }
        sender.join().unwrap();
        assert!(seen.iter().all(|&x| x));
        for i in 0..512u64 {
            let off = 4 * MIB + i * 4096;
            assert_eq!(c.read(off, 4096).unwrap(), pattern(4096, i as u8));
        }
    }
    s.h.stop();
}

/// Decodes a BLOCK_STATUS chunk: (context id, [(length, flags)]).
fn status(g: &Got) -> (u32, Vec<(u32, u32)>) {
    match g {
        Got::Chunk {
            typ: 5,
            flags,
            payload,
            ..
        } => {
            assert_eq!(*flags, 1, "one context: the chunk is the last");
            let id = u32::from_be_bytes(payload[0..4].try_into().unwrap());
            let d = payload[4..]
                .chunks(8)
                .map(|c| {
                    (
                        u32::from_be_bytes(c[0..4].try_into().unwrap()),
                        u32::from_be_bytes(c[4..8].try_into().unwrap()),
                    )
                })
                .collect();
            (id, d)
        }
        g => panic!("not a block status chunk: {g:?}"),
    }
}

#[test]
fn block_status_reports_holes_and_honours_req_one() {
    let s = setup();
    let mut c = Raw::start(s.h.port);
    c.option(opt::STRUCTURED_REPLY, &[]);
    c.expect_reply(opt::STRUCTURED_REPLY, rep::ACK);
    c.option(
        opt::SET_META_CONTEXT,
        &Raw::meta_data("mem", &["base:allocation"]),
    );
    let d = c.expect_reply(opt::SET_META_CONTEXT, rep::META_CONTEXT);
    let id = u32::from_be_bytes(d[0..4].try_into().unwrap());
    assert_ne!(id, 0);
    assert_eq!(&d[4..], b"base:allocation");
    c.expect_reply(opt::SET_META_CONTEXT, rep::ACK);
    c.go("mem");
    // Punch 1 MiB at 1 MiB; zero 512 KiB at 3 MiB.
    c.request(cmd::TRIM, 0, 1, MIB, MIB as u32);
    assert_eq!(c.reply(0).0.errno(), 0);
    c.request(cmd::WRITE_ZEROES, 0, 2, 3 * MIB, 512 << 10);
    assert_eq!(c.reply(0).0.errno(), 0);
    c.request(cmd::BLOCK_STATUS, 0, 3, 0, 8 * MIB as u32);
    let (g, _) = c.reply(0);
    assert_eq!(g.cookie(), 3);
    let (got_id, d) = status(&g);
    assert_eq!(got_id, id);
    let m = MIB as u32;
    assert_eq!(
        d,
        [(m, 0), (m, 3), (m, 0), (m / 2, 3), (m / 2, 0), (4 * m, 3)]
    );
    // REQ_ONE: one descriptor, clipped to the request.
    c.request(cmd::BLOCK_STATUS, flag::REQ_ONE, 4, MIB + 4096, 8192);
    let (_, d) = status(&c.reply(0).0);
    assert_eq!(d, [(8192, 3)]);
    c.request(cmd::BLOCK_STATUS, flag::REQ_ONE, 5, 0, 8 * MIB as u32);
    let (_, d) = status(&c.reply(0).0);
    assert_eq!(d, [(m, 0)]);
    // The holes read as zeroes.
    assert_eq!(c.read(MIB, 4096).unwrap(), vec![0; 4096]);
    assert_eq!(c.read(3 * MIB, 4096).unwrap(), vec![0; 4096]);
    s.h.stop();
}

#[test]
fn fast_zero_fails_fast_where_zeroing_is_not_fast() {
    let s = setup();
    let mut c = Raw::open(s.h.port, "plain", true);
    assert_eq!(c.flags & (1 << 11), 1 << 11, "SEND_FAST_ZERO");
    c.request(cmd::WRITE_ZEROES, flag::FAST_ZERO, 1, 0, 8192);
    let (g, _) = c.reply(0);
    assert_eq!((g.cookie(), g.errno()), (1, ENOTSUP));
    assert!(
        s.plain.snapshot()[..8192].iter().all(|&b| b == 0x55),
        "unchanged"
    );
    // Without FAST_ZERO the same device zeroes by writing.
    c.request(cmd::WRITE_ZEROES, flag::NO_HOLE, 2, 0, 8192);
    assert_eq!(c.reply(0).0.errno(), 0);
    assert!(s.plain.snapshot()[..8192].iter().all(|&b| b == 0));
    // A device that can punch serves fast zeroes.
    let mut c = Raw::open(s.h.port, "mem", false);
    c.request(cmd::WRITE_ZEROES, flag::FAST_ZERO | flag::FUA, 3, 0, 8192);
    assert_eq!(c.reply(0).0.errno(), 0);
    assert_eq!(c.read(0, 8192).unwrap(), vec![0; 8192]);
    s.h.stop();
}

#[test]
fn fua_and_flush_reach_the_durable_image_across_connections() {
    let s = setup();
    let mut a = Raw::open(s.h.port, "mem", true);
    let mut b = Raw::open(s.h.port, "mem", false);
    assert_eq!(a.flags & (1 << 8), 1 << 8, "CAN_MULTI_CONN");
    assert_eq!(s.mem.unflushed_writes(), 0);
    assert_eq!(a.write(5 * MIB, &[7u8; 4096], 0), 0);
    assert_eq!(s.mem.unflushed_writes(), 1);
    // A flush on another connection covers it.
    b.request(cmd::FLUSH, 0, 9, 0, 0);
    assert_eq!(
        b.reply(0).0,
        Got::Simple {
            errno: 0,
            cookie: 9
        }
    );
    assert_eq!(s.mem.unflushed_writes(), 0);
    // FUA writes are durable on completion.
    assert_eq!(a.write(6 * MIB, &[8u8; 4096], flag::FUA), 0);
    assert_eq!(s.mem.unflushed_writes(), 0);
    s.mem.crash(|_| false);
    assert_eq!(b.read(5 * MIB, 4096).unwrap(), vec![7; 4096]);
    assert_eq!(b.read(6 * MIB, 4096).unwrap(), vec![8; 4096]);
    // TRIM with FUA flushes too.
    a.request(cmd::TRIM, flag::FUA, 4, 5 * MIB, 4096);
    assert_eq!(a.reply(0).0.errno(), 0);
    assert_eq!(s.mem.unflushed_writes(), 0);
    // CACHE is accepted and reads nothing.
    let reads = s.mem.reads.load(Ordering::SeqCst);
    a.request(cmd::CACHE, 0, 5, 0, MIB as u32);
    assert_eq!(a.reply(0).0.errno(), 0);
    assert_eq!(s.mem.reads.load(Ordering::SeqCst), reads);
    s.h.stop();
}

#[test]
fn device_errors_become_wire_errors() {
    let s = setup();
    let mut c = Raw::open(s.h.port, "mem", true);
    s.mem.add_bad_read(2 * MIB, 512);
    c.request(cmd::READ, 0, 1, 2 * MIB, 4096);
    let (g, _) = c.reply(0);
    assert_eq!((g.cookie(), g.errno()), (1, 5));
    assert!(g.message().contains("read failed"), "{}", g.message());
    let mut simple = Raw::open(s.h.port, "mem", false);
    assert_eq!(simple.read(2 * MIB, 4096), Err(5));
    // The connection goes on: a good read still works.
    assert_eq!(simple.read(0, 512).unwrap(), pattern(512, 1));
    s.mem.fail_writes_after(0);
    assert_eq!(c.write(0, &[1; 512], 0), 5);
    s.mem.set_dead(true);
    c.request(cmd::FLUSH, 0, 3, 0, 0);
    assert_eq!(c.reply(0).0.errno(), 5);
    s.mem.set_dead(false);
    s.h.stop();
}

#[test]
fn disc_answers_what_is_in_flight_then_closes() {
    let s = setup();
    let mut c = Raw::open(s.h.port, "gate", true);
    c.request(cmd::READ, 0, 1, 4096, 4096);
    c.request(cmd::DISC, 0, 2, 0, 0);
    s.h.wait_until("the read to reach the gate", || {
        s.gate.waiting.load(Ordering::SeqCst) == 1
    });
    s.gate.open(1);
    let (g, data) = c.reply(0);
    assert_eq!(g.cookie(), 1);
    assert_eq!(data, pattern(8192, 1)[4096..]);
    let mut rest = Vec::new();
    c.s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "nothing after the last reply");
    s.h.wait_until("the connection to end", || {
        s.h.server.connection_count() == 0
    });
    s.h.stop();
}

#[test]
fn export_name_ends_haggling_with_or_without_zeroes() {
    let s = setup();
    for (cflags, tail) in [(1u32, 134usize), (3, 10)] {
        let mut c = Raw::connect(s.h.port);
        c.send(&cflags.to_be_bytes());
        c.option(opt::EXPORT_NAME, b"mem");
        let mut info = vec![0u8; tail];
        c.s.read_exact(&mut info).unwrap();
        assert_eq!(u64::from_be_bytes(info[0..8].try_into().unwrap()), 8 * MIB);
        assert!(info[10..].iter().all(|&b| b == 0));
        assert_eq!(c.read(0, 4096).unwrap(), pattern(4096, 1));
    }
    // The default export by EXPORT_NAME "".
    let mut c = Raw::start(s.h.port);
    c.option(opt::EXPORT_NAME, b"");
    let mut info = [0u8; 10];
    c.s.read_exact(&mut info).unwrap();
    assert_eq!(u64::from_be_bytes(info[0..8].try_into().unwrap()), 8 * MIB);
    s.h.stop();
}
