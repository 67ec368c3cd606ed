//! End to end: the real daemon, the real CLI and real NBD clients on every
//! RAID level — data written reads back, across restarts and `kill -9`,
//! through failures, rebuilds and injected read errors.

mod harness;

use harness::*;

/// Creates `n` disks of `size` named `{prefix}{i}` and a group over them.
fn group(d: &Daemon, name: &str, raid: &str, prefix: &str, n: usize, size: &str) -> Vec<String> {
    let disks: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let names: Vec<&str> = disks.iter().map(String::as_str).collect();
    d.group(name, raid, &names, size);
    disks
}

#[test]
fn default_pool_is_provisioned_and_served() {
    if !have(&["qemu-io", "nbdinfo"]) {
        return;
    }
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    let vols = d.json(&["volume", "list"]);
    let vol0 = &vols.as_array().unwrap()[0];
    assert_eq!(vol0["name"], "vol0");
    assert_eq!(vol0["size"], 2u64 << 30);
    let g = d.json(&["group", "show", "g0"]);
    assert_eq!(g["raid"], "raid5");
    assert_eq!(g["disks"].as_array().unwrap().len(), 4);
    let (ok, info) = run("nbdinfo", &["--json", &d.export("vol0")]);
    assert!(ok, "{info}");
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["exports"][0]["export-size"], 2u64 << 30);
    assert_eq!(v["exports"][0]["can_multi_conn"], true);
    qemu_io(
        &d.export("vol0"),
        &["write -P 0x5a 1M 3M", "read -P 0x5a 1M 3M"],
    );
    // A second daemon on the same pool refuses.
    let o = cli(dir.path(), &["serve", "--listen", "127.0.0.1:0"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("in use by another ferrosan daemon"), "{err}");
}

#[test]
fn every_level_reads_back_its_patterns_across_a_restart() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &[]);
    let levels = [("concat", 2), ("raid0", 3), ("raid1", 3), ("raid5", 4)];
    for (level, n) in levels {
        group(
            &d,
            &format!("g-{level}"),
            level,
            &format!("{level}-"),
            n,
            "64M",
        );
        d.ok(&[
            "volume",
            "create",
            &format!("v-{level}"),
            "--group",
            &format!("g-{level}"),
            "--size",
            "48M",
        ]);
    }
    // Aligned and unaligned-to-stripe ranges, spanning strips and rows.
    let writes = [
        ("0x11", "0", "64k"),
        ("0x22", "68k", "200k"),
        ("0x33", "1M", "4M"),
        ("0x44", "7340032", "4096"),
        ("0x55", "40M", "8M"),
    ];
    for (level, _) in levels {
        let url = d.export(&format!("v-{level}"));
        let mut cmds: Vec<String> = writes
            .iter()
            .map(|(p, o, l)| format!("write -P {p} {o} {l}"))
            .collect();
        cmds.extend(
            writes
                .iter()
                .map(|(p, o, l)| format!("read -P {p} {o} {l}")),
        );
        let refs: Vec<&str> = cmds.iter().map(|s| s.as_str()).collect();
        qemu_io(&url, &refs);
    }
    d.restart();
    for (level, _) in levels {
        let url = d.export(&format!("v-{level}"));
        let cmds: Vec<String> = writes
            .iter()
            .map(|(p, o, l)| format!("read -P {p} {o} {l}"))
            .collect();
        let refs: Vec<&str> = cmds.iter().map(|s| s.as_str()).collect();
        qemu_io(&url, &refs);
        // Never written: zeroes.
        qemu_io(&url, &["read -P 0 20M 1M"]);
    }
}

/// A deterministic random workload as qemu-io commands.
fn workload(seed: u64, size: u64, n: usize) -> Vec<String> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut cmds = Vec::new();
    for _ in 0..n {
        let len = (next() % 64 + 1) * 4096;
        let off = (next() % ((size - len) / 512)) * 512;
        let pat = next() % 255 + 1;
        match next() % 10 {
            0 => cmds.push(format!("write -z {off} {len}")),
            _ => cmds.push(format!("write -P {pat} {off} {len}")),
        }
    }
    cmds
}

#[test]
fn qemu_img_compare_after_a_random_workload() {
    if !have(&["qemu-io", "qemu-img"]) {
        return;
    }
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    group(&d, "g5", "raid5", "r", 3, "40M");
    d.ok(&["volume", "create", "w", "--group", "g5", "--size", "32M"]);
    let size = 32u64 << 20;
    let reference = dir.path().join("reference.raw");
    let f = std::fs::File::create(&reference).unwrap();
    f.set_len(size).unwrap();
    let cmds = workload(0x5eed, size, 300);
    for chunk in cmds.chunks(50) {
        let refs: Vec<&str> = chunk.iter().map(|s| s.as_str()).collect();
        qemu_io(&d.export("w"), &refs);
        qemu_io(reference.to_str().unwrap(), &refs);
    }
    let (ok, out) = run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            reference.to_str().unwrap(),
            &d.export("w"),
        ],
    );
    assert!(ok, "images differ: {out}");
    assert!(out.contains("Images are identical"), "{out}");
    // And the comparison can fail: change one byte range on the reference.
    qemu_io(reference.to_str().unwrap(), &["write -P 0xee 4096 512"]);
    let (ok, out) = run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            reference.to_str().unwrap(),
            &d.export("w"),
        ],
    );
    assert!(!ok, "compare should see the change: {out}");
}

#[test]
fn nbdinfo_map_shows_trimmed_ranges_as_holes() {
    if !have(&["qemu-io", "nbdinfo"]) {
        return;
    }
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    for (level, n) in [("concat", 1), ("raid1", 2)] {
        group(
            &d,
            &format!("m-{level}"),
            level,
            &format!("m{level}"),
            n,
            "40M",
        );
        let vol = format!("mv-{level}");
        d.ok(&[
            "volume",
            "create",
            &vol,
            "--group",
            &format!("m-{level}"),
            "--size",
            "16M",
        ]);
        let url = d.export(&vol);
        qemu_io(
            &url,
            &[
                "write -P 0x77 0 16M",
                "discard 4M 4M",
                "read -P 0 4M 4M",
                "read -P 0x77 0 4M",
            ],
        );
        let (ok, map) = run("nbdinfo", &["--map", "--json", &url]);
        assert!(ok, "{map}");
        let ext: Vec<serde_json::Value> = serde_json::from_str(&map).unwrap();
        let at = |off: u64| {
            ext.iter()
                .find(|e| {
                    let o = e["offset"].as_u64().unwrap();
                    off >= o && off < o + e["length"].as_u64().unwrap()
                })
                .map(|e| e["type"].as_u64().unwrap())
                .unwrap()
        };
        assert_eq!(at(5 << 20), 3, "{level}: trimmed range is hole+zero: {map}");
        assert_eq!(at(1 << 20), 0, "{level}: written range is data: {map}");
        assert_eq!(at(10 << 20), 0, "{level}: written range is data: {map}");
    }
}

#[test]
fn fio_verifies_at_queue_depth_32_over_two_connections() {
    if !have(&["fio"]) {
        return;
    }
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    group(&d, "f5", "raid5", "f", 3, "80M");
    d.ok(&["volume", "create", "fv", "--group", "f5", "--size", "64M"]);
    let (ok, out) = run(
        "fio",
        &[
            "--name=fiov",
            "--ioengine=nbd",
            &format!("--uri={}", d.export("fv")),
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=32",
            "--numjobs=2",
            "--size=32M",
            "--offset_increment=32M",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            "--verify_state_save=0",
            "--group_reporting",
        ],
    );
    assert!(ok, "fio failed: {out}");
    assert!(
        !out.contains("verify: bad") && !out.contains("bad magic"),
        "fio reported verify errors: {out}"
    );
    assert!(out.contains("err= 0"), "{out}");
}

/// The data area of disk `name`'s file, `len` bytes from `off` (a group
/// offset: in raid1 every leg holds the group's space at the same place).
fn disk_bytes(pool: &std::path::Path, name: &str, off: u64, len: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(pool.join(format!("disks/{name}.img"))).unwrap();
    f.seek(SeekFrom::Start(ferrosan::disk::DATA_OFFSET + off))
        .unwrap();
    let mut b = vec![0u8; len as usize];
    f.read_exact(&mut b).unwrap();
    b
}

/// Overwrites `len` bytes of disk `name`'s data area at `off` with `byte`.
fn scribble(pool: &std::path::Path, name: &str, off: u64, len: u64, byte: u8) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(pool.join(format!("disks/{name}.img")))
        .unwrap();
    f.seek(SeekFrom::Start(ferrosan::disk::DATA_OFFSET + off))
        .unwrap();
    f.write_all(&vec![byte; len as usize]).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn a_flushed_write_survives_kill_9() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    // Marks are not cleared for an hour: the crash below surely finds them,
    // however slow this machine is between the write and the kill.
    let mut d = Daemon::start(dir.path(), &["--intent-clear-interval", "3600"]);
    group(&d, "k1", "raid1", "k", 2, "40M");
    d.ok(&["volume", "create", "kv", "--group", "k1", "--size", "32M"]);
    let at = d.json(&["volume", "show", "kv"])["extents"][0]["offset"]
        .as_u64()
        .unwrap();
    qemu_io(&d.export("kv"), &["write -P 0x3c 0 8M", "flush"]);
    qemu_io(&d.export("vol0"), &["write -P 0x4d 100M 2M", "flush"]);
    d.kill9();
    // Both legs hold the flushed write...
    for leg in ["k0", "k1"] {
        let b = disk_bytes(dir.path(), leg, at, 8 << 20);
        assert!(
            b.iter().all(|&x| x == 0x3c),
            "{leg} lacks the flushed write"
        );
    }
    // ...and then the crash caught a later, unflushed overwrite of 1M..3M
    // that reached k1 only: the mirrors differ where the intent log marked.
    scribble(dir.path(), "k1", at + (1 << 20), 2 << 20, 0xa7);
    d.respawn();
    // The crash left write-intent marks: a resync ran (or runs).
    let jobs = d.json(&["job", "list"]);
    let resyncs: Vec<&serde_json::Value> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "resync")
        .collect();
    assert!(!resyncs.is_empty(), "a resync job after the crash: {jobs}");
    assert!(
        resyncs
            .iter()
            .any(|j| j["target"].as_str().unwrap().contains("k1")),
        "a resync of group k1: {jobs}"
    );
    for j in resyncs {
        let done = d.wait_job(j["id"].as_u64().unwrap());
        assert_eq!(done["state"], "done", "{done}");
    }
    // The volume reads one version, the first leg's, through either leg
    // alone, and the mirrors agree byte for byte.
    qemu_io(&d.export("vol0"), &["read -P 0x4d 100M 2M"]);
    qemu_io(&d.export("kv"), &["read -P 0x3c 0 8M", "read -P 0 8M 24M"]);
    d.ok(&["disk", "fail", "k0"]);
    qemu_io(&d.export("kv"), &["read -P 0x3c 0 8M", "read -P 0 8M 24M"]);
    d.stop();
    let (a, b) = (
        disk_bytes(dir.path(), "k0", at, 32 << 20),
        disk_bytes(dir.path(), "k1", at, 32 << 20),
    );
    let differ = a.iter().zip(&b).position(|(x, y)| x != y);
    assert_eq!(
        differ, None,
        "the mirrors differ at this offset after the resync"
    );
}

#[test]
fn raid5_degraded_then_rebuilt_onto_a_new_disk() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    group(&d, "r5", "raid5", "e", 4, "40M");
    d.ok(&["volume", "create", "rv", "--group", "r5", "--size", "96M"]);
    let url = d.export("rv");
    qemu_io(&url, &["write -P 0x61 0 48M", "write -P 0x62 48M 48M"]);
    d.ok(&["disk", "fail", "e2"]);
    let g = d.json(&["group", "show", "r5"]);
    assert_eq!(g["health"], "degraded", "{g}");
    let disk = d.json(&["disk", "show", "e2"]);
    assert_eq!(disk["status"], "failed");
    // Degraded reads and writes.
    qemu_io(
        &url,
        &[
            "read -P 0x61 0 48M",
            "write -P 0x63 10M 5M",
            "read -P 0x63 10M 5M",
        ],
    );
    d.ok(&["disk", "add", "e9", "--size", "40M"]);
    let job = d.json(&["disk", "replace", "e2", "e9", "--wait"]);
    assert_eq!(job["state"], "done", "{job}");
    let g = d.json(&["group", "show", "r5"]);
    assert_eq!(g["health"], "optimal", "{g}");
    assert!(
        g["disks"].as_array().unwrap().iter().any(|x| x == "e9"),
        "{g}"
    );
    // The rebuilt disk holds the right data: fail another member and read
    // everything through reconstruction that needs e9.
    d.ok(&["disk", "fail", "e0"]);
    qemu_io(
        &url,
        &[
            "read -P 0x61 0 10M",
            "read -P 0x63 10M 5M",
            "read -P 0x61 15M 33M",
            "read -P 0x62 48M 48M",
        ],
    );
}

#[test]
fn a_spare_replaces_a_failed_member_by_itself() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    group(&d, "s1", "raid1", "s", 2, "40M");
    d.ok(&["volume", "create", "sv", "--group", "s1", "--size", "32M"]);
    qemu_io(&d.export("sv"), &["write -P 0x19 0 32M"]);
    d.ok(&["disk", "add", "hot", "--size", "40M", "--spare"]);
    assert_eq!(d.json(&["disk", "show", "hot"])["status"], "spare");
    d.ok(&["disk", "fail", "s0"]);
    let jobs = d.json(&["job", "list"]);
    let job = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["kind"] == "rebuild")
        .unwrap_or_else(|| panic!("no rebuild job: {jobs}"));
    let done = d.wait_job(job["id"].as_u64().unwrap());
    assert_eq!(done["state"], "done", "{done}");
    let g = d.json(&["group", "show", "s1"]);
    assert_eq!(g["health"], "optimal", "{g}");
    assert!(
        g["disks"].as_array().unwrap().iter().any(|x| x == "hot"),
        "{g}"
    );
    d.ok(&["disk", "fail", "s1"]);
    qemu_io(&d.export("sv"), &["read -P 0x19 0 32M"]);
}

#[test]
fn injected_read_errors_are_served_from_redundancy_and_counted() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &["--fault-injection"]);
    group(&d, "i1", "raid1", "i", 2, "40M");
    group(&d, "i5", "raid5", "j", 3, "40M");
    d.ok(&["volume", "create", "iv1", "--group", "i1", "--size", "32M"]);
    d.ok(&["volume", "create", "iv5", "--group", "i5", "--size", "32M"]);
    qemu_io(&d.export("iv1"), &["write -P 0x21 0 32M", "flush"]);
    qemu_io(&d.export("iv5"), &["write -P 0x25 0 32M", "flush"]);
    // Every read of i1 and j1 in their first 16 MiB fails.
    d.ok(&["disk", "inject", "i1", "--read-error-at", "0,16M"]);
    d.ok(&["disk", "inject", "j1", "--read-error-at", "0,16M"]);
    for _ in 0..3 {
        qemu_io(&d.export("iv1"), &["read -P 0x21 0 32M"]);
        qemu_io(&d.export("iv5"), &["read -P 0x25 0 32M"]);
    }
    let disks = d.json(&["disk", "list"]);
    let errs = |name: &str| {
        disks
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .map(|x| x["counters"]["read_errors"].as_u64().unwrap())
            .unwrap()
    };
    assert!(errs("j1") > 0, "j1 read errors counted: {disks}");
    assert_eq!(errs("j0"), 0, "{disks}");
    assert_eq!(errs("i0"), 0, "{disks}");
    // raid1 may spread reads over both legs: i1 was asked at least once
    // over three full passes, or its errors were repaired away.
    let g1 = d.json(&["group", "show", "i1"]);
    assert_eq!(
        g1["health"], "optimal",
        "a read error alone does not fail a member: {g1}"
    );
    // Without --fault-injection the command is refused.
    drop(d);
    let dir2 = pool_dir();
    let d2 = Daemon::start(dir2.path(), &[]);
    let err = d2.fails(&["disk", "inject", "d0", "--vanish"]);
    assert!(err.contains("--fault-injection"), "{err}");
}
