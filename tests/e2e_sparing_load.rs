//! End to end: sparing started by errors under a host's load (seed 002):
//! fio writes and verifies a volume of a RAID-5 group through NBD while a
//! member's reads fail; the error count passes the threshold, the sparing
//! copy starts by itself and the group's writes are diverted to a work
//! volume (the default choice); another host copies a reference image
//! into a second volume of the group meanwhile. fio sees no error, its
//! data verifies again after the write-back, and `qemu-img compare` finds
//! the second volume equal to the reference.

mod harness;
mod sparing_util;

use harness::*;
use sparing_util::*;

/// A reference image of `len` bytes of pseudo-random data.
fn reference(path: &std::path::Path, len: usize) {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    std::fs::write(path, data).unwrap();
}

/// fio's job over `uri`: 4k random writes over 24 MiB, each block once,
/// then every block read back and checked (`verify_only`: only the check,
/// of what the same job wrote before).
fn fio_job(uri: &str, verify_only: bool) -> FioReport {
    let uri = format!("--uri={uri}");
    let mut args = vec![
        "--name=verify",
        "--ioengine=nbd",
        &uri,
        "--rw=randwrite",
        "--bs=4k",
        "--iodepth=16",
        "--size=24M",
        "--verify=crc32c",
        "--verify_fatal=1",
        "--verify_state_save=0",
        "--do_verify=1",
        // Slow enough that the host still writes when the count passes
        // the threshold and the diversion begins.
        "--rate_iops=1500",
    ];
    if verify_only {
        args.push("--verify_only");
    }
    fio(&args)
}

#[test]
fn errors_under_fio_load_start_a_diverted_sparing_and_lose_nothing() {
    if !have(&["fio", "qemu-img"]) {
        return;
    }
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &["--fault-injection"]);
    d.group("r5", "raid5", &["a1", "a2", "a3"], "40M");
    d.ok(&["disk", "add", "sp", "--size", "40M", "--spare"]);
    d.ok(&["volume", "create", "v", "--group", "r5", "--size", "24M"]);
    d.ok(&["volume", "create", "u", "--group", "r5", "--size", "16M"]);
    d.group("gw", "concat", &["w1"], "48M");
    d.ok(&["volume", "create", "wv", "--group", "gw", "--size", "44M"]);
    d.ok(&["sparing", "work-volume", "add", "wv"]);
    d.ok(&["sparing", "policy", "--threshold", "20", "--window", "10m"]);
    // The copy is slow to begin with (the spare takes 5 writes a second):
    // the test pauses it once it has started, with the group diverted.
    d.ok(&["disk", "inject", "sp", "--iops", "5"]);
    d.ok(&["disk", "inject", "a2", "--read-error-at", "0,40M"]);

    let uri = d.export("v");
    let load = std::thread::spawn(move || fio_job(&uri, false));
    let (r, job) = sparing_job(&d);
    let job = job.to_string();
    d.ok(&["job", "pause", &job]);
    d.ok(&["disk", "inject", "sp", "--clear"]);
    assert_eq!(r["disk"], "a2", "{r}");
    assert!(
        r["reason"].as_str().is_some_and(|x| x.contains("errors")),
        "started by the error count: {r}"
    );
    assert!(!load.is_finished(), "the count passed under fio's load");
    let s = status(&d);
    assert_eq!(
        s["sparings"][0]["diversion"], "work volume wv (diverting)",
        "the default backup storage: {s}"
    );

    // Another host writes a reference image while the writes are diverted.
    let refimg = dir.path().join("ref.raw");
    reference(&refimg, 16 << 20);
    let (ok, out) = run(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            refimg.to_str().unwrap(),
            &d.export("u"),
        ],
    );
    assert!(ok, "{out}");
    let r = load.join().unwrap();
    assert!(r.ok && r.errors == 0, "fio saw an error: {}", r.text);
    assert_eq!(r.write_bytes, 24 << 20, "{}", r.text);
    assert_eq!(r.read_bytes, r.write_bytes, "verified: {}", r.text);
    let used = status(&d)["work_volumes"][0]["slots_used"]
        .as_u64()
        .unwrap();
    assert!(used >= 4096, "u's 16 MiB went to the work volume: {used}");

    finish(&d, &job);
    assert_eq!(members(&d, "r5"), ["a1", "sp", "a3"]);
    assert_eq!(d.json(&["group", "show", "r5"])["health"], "optimal");
    let (same, out) = same_image(refimg.to_str().unwrap(), &d.export("u"));
    assert!(same, "u differs from the reference: {out}");
    let r = fio_job(&d.export("v"), true);
    assert!(r.ok && r.errors == 0, "v after the write-back: {}", r.text);
    assert_eq!(r.read_bytes, 24 << 20, "{}", r.text);
}
