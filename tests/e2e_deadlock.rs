//! Deadlock watchdog: copy-on-write traffic that takes new chunks of copy
//! space, on several connections, while copies are created, restored,
//! split and deleted as fast as the daemon allows, for 60 s. Every NBD
//! request and every API call must be answered within 10 s; if one is not,
//! the test prints every thread's stack of the daemon (gdb), which shows
//! who holds and who waits for which lock, and fails.

mod harness;
mod nbd_common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use harness::*;
use nbd_common::Raw;

const RUN: Duration = Duration::from_secs(60);
const STUCK: Duration = Duration::from_secs(10);

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// Milliseconds since `t0`: a heartbeat.
fn beat(t0: Instant, at: &AtomicU64) {
    at.store(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
}

/// The daemon's threads' stacks, for the failure message.
fn stacks(pid: u32) -> String {
    match Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt 30",
        ])
        .output()
    {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("(gdb could not run: {e}; install gdb to see the stacks)"),
    }
}

/// One API call, refused if unanswered within [`STUCK`]; whether it
/// succeeded (refusals such as "in use" are part of the churn).
fn call(pool: &std::path::Path, args: &[&str]) -> bool {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferrosan"))
        .arg("--pool")
        .arg(pool)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run ferrosan");
    match wait_timeout(&mut c, STUCK) {
        Some(s) => s.success(),
        None => panic!("API call {args:?} unanswered for {STUCK:?}"),
    }
}

/// Creates, restores, splits and deletes copies until `stop`; returns the
/// calls that succeeded.
fn churn(pool: &std::path::Path, stop: &AtomicBool, t0: Instant, hb: &AtomicU64) -> u64 {
    let mut ok = 0u64;
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let c = format!("c{i}");
        let steps: [&[&str]; 6] = [
            &["copy", "create", "src", &c, "--mode", "row"],
            &["copy", "restore", &c, "--force"],
            &["copy", "delete", &c],
            // A two-image family of its own, split apart and deleted.
            &["copy", "create", "solo", "solo-c", "--mode", "row"],
            &["copy", "split", "solo-c"],
            &["volume", "delete", "solo-c", "--force"],
        ];
        for s in steps {
            ok += u64::from(call(pool, s));
            beat(t0, hb);
        }
    }
    ok
}

#[test]
fn no_request_or_call_waits_forever_while_copies_churn() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    d.ok(&["disk", "add", "x0", "--size", "2G"]);
    d.ok(&["group", "create", "g", "--raid", "concat", "--disks", "x0"]);
    d.ok(&["volume", "create", "src", "--group", "g", "--size", "128M"]);
    d.ok(&["volume", "create", "solo", "--group", "g", "--size", "32M"]);
    d.ok(&["copy", "create", "src", "keep", "--mode", "row"]);
    let pid = d.child.as_ref().map_or(0, |c| c.id());
    let port = port_of(&d.url);
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let names = ["src", "keep", "src", "solo"];
    let beats: Arc<Vec<AtomicU64>> =
        Arc::new((0..=names.len()).map(|_| AtomicU64::new(0)).collect());
    let writers: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let (stop, beats) = (Arc::clone(&stop), Arc::clone(&beats));
            let name = name.to_string();
            std::thread::spawn(move || {
                let mut c = Raw::open(port, &name, false);
                c.s.set_read_timeout(Some(STUCK)).unwrap();
                let tracks = c.size / (64 << 10);
                let data = vec![k as u8 + 1; 4096];
                let mut x = 0x2545_f491_4f6c_dd1du64 + k as u64;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // One 4 KiB write per track: mostly first writes.
                    let off = x % tracks * (64 << 10);
                    let e = c.write(off, &data, 0);
                    // A volume deleted or restored under us answers an
                    // error; an answer is all this test asks for.
                    n += u64::from(e == 0);
                    beat(t0, &beats[k]);
                }
                n
            })
        })
        .collect();
    let churner = {
        let (stop, beats) = (Arc::clone(&stop), Arc::clone(&beats));
        let pool = d.pool.clone();
        let k = names.len();
        std::thread::spawn(move || churn(&pool, &stop, t0, &beats[k]))
    };
    // The watchdog.
    let mut stuck = None;
    while t0.elapsed() < RUN && stuck.is_none() {
        std::thread::sleep(Duration::from_millis(200));
        let now = t0.elapsed().as_millis() as u64;
        for (k, b) in beats.iter().enumerate() {
            let last = b.load(Ordering::Relaxed);
            if now.saturating_sub(last) > STUCK.as_millis() as u64 {
                stuck = Some((k, now - last));
            }
        }
    }
    if let Some((k, ms)) = stuck {
        let who = names.get(k).map_or("the API churn".to_string(), |n| {
            format!("writer {k} on {n}")
        });
        let dump = stacks(pid);
        stop.store(true, Ordering::Relaxed);
        panic!("{who} got no answer for {ms} ms; the daemon's threads:\n{dump}");
    }
    stop.store(true, Ordering::Relaxed);
    let written: Vec<u64> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let calls = churner.join().unwrap();
    eprintln!(
        "deadlock watchdog: writes answered ok per connection {written:?}; {calls} API calls succeeded"
    );
    assert!(
        written.iter().all(|&n| n > 100),
        "writers barely ran: {written:?}"
    );
    assert!(calls >= 12, "only {calls} API calls succeeded in {RUN:?}");
    // The family still reads back what a client wrote last.
    let src = d.export("keep");
    qemu_io(
        &src,
        &["write -P 0x77 0 64k", "flush", "read -P 0x77 0 64k"],
    );
}
