//! The data path never waits for an unrelated configuration commit.
//!
//! The daemon runs with a test hook that makes every durable commit 200 ms
//! slower. One thread makes 4 KiB random reads and writes, one request at
//! a time, on an instant copy's source — so its copy-on-write writes take
//! new chunks of copy space now and then — and times each. Another thread
//! meanwhile creates and deletes volumes, disks, groups and copies of
//! other volumes as fast as the commits let it. Every request must be
//! answered within 100 ms: none may wait for one of those commits (they
//! take 200 ms each).

mod harness;
mod nbd_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use harness::*;
use nbd_common::Raw;

const COMMIT_DELAY_MS: &str = "200";
const LIMIT: Duration = Duration::from_millis(100);
const RUN: Duration = Duration::from_secs(30);

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// xorshift: a cheap reproducible offset stream.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Creates and deletes things unrelated to `busy` until `stop`; returns
/// how many changes it committed.
fn churn(d: &Daemon, stop: &AtomicBool) -> u64 {
    let mut n = 0;
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let (v, c, k, g) = (
            format!("v{i}"),
            format!("c{i}"),
            format!("k{i}"),
            format!("h{i}"),
        );
        d.ok(&["volume", "create", &v, "--group", "g0", "--size", "16M"]);
        d.ok(&["copy", "create", &v, &c]);
        d.ok(&["copy", "delete", &c]);
        d.ok(&["volume", "delete", &v]);
        d.ok(&["disk", "add", &k, "--size", "64M"]);
        d.ok(&["group", "create", &g, "--raid", "concat", "--disks", &k]);
        d.ok(&["group", "delete", &g]);
        d.ok(&["disk", "remove", &k]);
        n += 8;
    }
    n
}

#[test]
fn requests_never_wait_for_an_unrelated_commit() {
    let dir = pool_dir();
    let d = Daemon::start_env(
        None,
        dir.path(),
        &[],
        &[("FERROSAN_TEST_COMMIT_DELAY_MS", COMMIT_DELAY_MS)],
    );
    d.ok(&["disk", "add", "x0", "--size", "4G"]);
    d.ok(&["group", "create", "gc", "--raid", "concat", "--disks", "x0"]);
    d.ok(&["volume", "create", "busy", "--group", "gc", "--size", "1G"]);
    // A copy of it: the source's first write to a track preserves the old
    // data in the family's new space, which grows chunk by chunk.
    d.ok(&["copy", "create", "busy", "busy-snap", "--mode", "row"]);
    let port = port_of(&d.url);
    let stop = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(AtomicU64::new(0));
    let io = {
        let (stop, worst) = (Arc::clone(&stop), Arc::clone(&worst));
        std::thread::spawn(move || {
            let mut c = Raw::open(port, "busy", false);
            let size = c.size;
            let data = vec![0x5au8; 4096];
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let (mut reqs, mut slow) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let off = next(&mut x) % (size / 4096) * 4096;
                let t = Instant::now();
                if next(&mut x).is_multiple_of(2) {
                    assert_eq!(c.write(off, &data, 0), 0, "write at {off} failed");
                } else {
                    c.read(off, 4096)
                        .unwrap_or_else(|e| panic!("read at {off} failed: errno {e}"));
                }
                let took = t.elapsed();
                worst.fetch_max(took.as_micros() as u64, Ordering::Relaxed);
                if took > LIMIT {
                    slow.push((off, took));
                }
                reqs += 1;
            }
            (reqs, slow)
        })
    };
    let t = Instant::now();
    let changes = {
        let stop2 = Arc::clone(&stop);
        let timer = std::thread::spawn(move || {
            std::thread::sleep(RUN);
            stop2.store(true, Ordering::Relaxed);
        });
        let n = churn(&d, &stop);
        timer.join().unwrap();
        n
    };
    let (reqs, slow) = io.join().unwrap();
    let secs = t.elapsed().as_secs_f64();
    let info = d.json(&["copy", "show", "busy-snap"]);
    eprintln!(
        "stall test: {reqs} requests, {changes} changes in {secs:.0} s; worst request {} µs; {} tracks diverged",
        worst.load(Ordering::Relaxed),
        info["tracks_diverged"]
    );
    // The hook worked: every change paid for its commit.
    assert!(
        changes as f64 * 0.2 <= secs * 1.05,
        "{changes} changes in {secs:.1} s: the commits were not slowed down"
    );
    assert!(changes >= 16, "only {changes} changes ran in {secs:.1} s");
    // The source took new chunks of copy space meanwhile.
    let diverged = info["tracks_diverged"].as_u64().unwrap_or(0);
    assert!(
        diverged > 1024,
        "only {diverged} tracks diverged: no new chunk was needed"
    );
    assert!(
        slow.is_empty(),
        "{} of {reqs} requests took over {LIMIT:?}: {:?}",
        slow.len(),
        &slow[..slow.len().min(10)]
    );
}
