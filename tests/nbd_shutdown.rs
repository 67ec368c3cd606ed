//! Server shutdown: requests in flight are completed and answered, the
//! connections close, new connections are refused, and `shutdown()`
//! resolves only when every connection is gone.

mod nbd_common;

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ferrosan::blockdev::write_slice;
use ferrosan::disk::MemDisk;
use ferrosan::nbd::{ServerConfig, StaticExports};
use ferrosan::rt;
use nbd_common::*;

const MIB: u64 = 1 << 20;

fn gated() -> (Harness, Arc<GateDisk>) {
    let mem = Arc::new(MemDisk::new(4 * MIB));
    rt::block_on(async {
        write_slice(&*mem, 0, &pattern(2 * MIB as usize, 6), false)
            .await
            .unwrap()
    });
    let gate = GateDisk::new(mem, 2 * MIB);
    let ex = Arc::new(StaticExports::new());
    ex.add("gate", "", gate.clone(), false);
    (Harness::start(ex, ServerConfig::default()), gate)
}

#[test]
fn shutdown_completes_in_flight_requests_then_closes() {
    let (h, gate) = gated();
    let mut c = Raw::open(h.port, "gate", true);
    let mut idle = Raw::open(h.port, "gate", false);
    for i in 0..4u64 {
        c.request(cmd::READ, 0, i, i * 65536, 65536);
    }
    h.wait_until("four reads in flight", || {
        gate.waiting.load(Ordering::SeqCst) == 4
    });
    let server = Arc::clone(&h.server);
    let done = h.rt.spawn(async move { server.shutdown().await });
    // The idle connection closes at once; the busy one waits for its reads.
    assert!(idle.closed_within(Duration::from_secs(10)));
    h.wait_until("the busy connection to see the shutdown, alone", || {
        h.server.draining_count() == 1 && h.server.connection_count() == 1
    });
    assert!(
        !done.is_finished(),
        "shutdown must wait for requests in flight"
    );
    // New connections are not served any more.
    h.wait_until("the listener to close", || {
        std::net::TcpStream::connect(("127.0.0.1", h.port)).is_err()
    });
    gate.open(4);
    let mut got = vec![];
    for _ in 0..4 {
        let (g, data) = c.reply(0);
        assert_eq!(g.errno(), 0);
        let i = g.cookie();
        assert_eq!(
            data,
            pattern(2 * MIB as usize, 6)[(i * 65536) as usize..][..65536]
        );
        got.push(i);
    }
    got.sort();
    assert_eq!(got, [0, 1, 2, 3]);
    let mut rest = Vec::new();
    c.s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    h.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), done)
            .await
            .expect("shutdown resolves")
            .unwrap()
    });
    assert_eq!(h.server.connection_count(), 0);
    h.stop();
}

#[test]
fn shutdown_refuses_buffered_requests_with_eshutdown() {
    let (h, gate) = gated();
    let mut c = Raw::open(h.port, "gate", false);
    let mut w = c.s.try_clone().unwrap();
    // More than the per-connection in-flight limit (256): the rest wait
    // unparsed in the connection's buffer.
    const N: u64 = 300;
    let mut buf = Vec::new();
    for i in 0..N {
        buf.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        buf.extend_from_slice(&0u16.to_be_bytes());
        buf.extend_from_slice(&cmd::READ.to_be_bytes());
        buf.extend_from_slice(&i.to_be_bytes());
        buf.extend_from_slice(&((i % 32) * 4096).to_be_bytes());
        buf.extend_from_slice(&4096u32.to_be_bytes());
    }
    std::io::Write::write_all(&mut w, &buf).unwrap();
    h.wait_until("256 reads in flight", || {
        gate.waiting.load(Ordering::SeqCst) == 256
    });
    let server = Arc::clone(&h.server);
    let done = h.rt.spawn(async move { server.shutdown().await });
    h.wait_until("the connection to see the shutdown", || {
        h.server.draining_count() == 1
    });
    gate.open(1000);
    let (mut served, mut refused) = (Vec::new(), Vec::new());
    loop {
        let mut m = [0u8; 16];
        match c.s.read_exact(&mut m) {
            Ok(()) => {}
            Err(_) => break,
        }
        let errno = u32::from_be_bytes(m[4..8].try_into().unwrap());
        let cookie = u64::from_be_bytes(m[8..16].try_into().unwrap());
        if errno == 0 {
            let mut d = vec![0u8; 4096];
            c.s.read_exact(&mut d).unwrap();
            assert_eq!(
                d,
                pattern(2 * MIB as usize, 6)[((cookie % 32) * 4096) as usize..][..4096]
            );
            served.push(cookie);
        } else {
            assert_eq!(errno, ESHUTDOWN, "cookie {cookie}");
            refused.push(cookie);
        }
    }
    // The 256 admitted reads are served, each once. The other 44 came in
    // the same 8400-byte write, one segment on loopback, which the
    // connection's first read took whole into its buffer: each of them
    // is answered ESHUTDOWN, none dropped unanswered.
    served.sort_unstable();
    refused.sort_unstable();
    assert_eq!(served, (0..256).collect::<Vec<u64>>(), "served");
    assert_eq!(
        refused,
        (256..N).collect::<Vec<u64>>(),
        "refused with ESHUTDOWN"
    );
    h.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), done)
            .await
            .expect("shutdown resolves")
            .unwrap()
    });
    h.stop();
}

#[test]
fn shutdown_drops_connections_still_in_handshake() {
    let (h, _gate) = gated();
    let mut a = Raw::connect(h.port);
    let mut b = Raw::start(h.port);
    b.option(opt::STRUCTURED_REPLY, &[]);
    b.expect_reply(opt::STRUCTURED_REPLY, rep::ACK);
    h.wait_until("two connections", || h.server.connection_count() == 2);
    let server = Arc::clone(&h.server);
    h.rt.block_on(async move {
        tokio::time::timeout(Duration::from_secs(10), server.shutdown())
            .await
            .expect("shutdown does not wait for handshakes");
    });
    assert!(a.closed_within(Duration::from_secs(5)));
    assert!(b.closed_within(Duration::from_secs(5)));
    h.stop();
}

#[test]
fn shutdown_does_not_wait_forever_for_a_client_that_stops_reading() {
    let mem = Arc::new(MemDisk::new(64 * MIB));
    let ex = Arc::new(StaticExports::new());
    ex.add("m", "", mem.clone(), false);
    let cfg = ServerConfig {
        payload_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    };
    let h = Harness::start(ex, cfg);
    let mut c = Raw::open(h.port, "m", true);
    // 64 MiB of replies asked for, none read: far more than the socket
    // buffers hold.
    for i in 0..64u64 {
        c.request(cmd::READ, 0, i, i * MIB, MIB as u32);
    }
    h.wait_until("reads served", || mem.reads.load(Ordering::SeqCst) >= 8);
    let server = Arc::clone(&h.server);
    let t = std::time::Instant::now();
    h.rt.block_on(async move {
        tokio::time::timeout(Duration::from_secs(20), server.shutdown())
            .await
            .expect("shutdown gives up on a client that does not read");
    });
    // It waited for the stalled replies, then gave up.
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    assert!(c.closed_within(Duration::from_secs(5)));
    h.stop();
}
