//! The NBD server against real clients: qemu-io, qemu-img, nbdinfo,
//! nbdcopy and fio, over TCP and a Unix socket, with exports backed by
//! memory disks and by files (O_DIRECT through io_uring).
//!
//! Each test skips (with a message naming the tool) when a client is not
//! installed.

mod nbd_common;

use std::process::Command;
use std::sync::Arc;

use ferrosan::blockdev::{BlockDev, read_vec, write_slice};
use ferrosan::disk::{FileDisk, MemDisk, OpenOptions};
use ferrosan::nbd::{ServerConfig, StaticExports};
use ferrosan::rt;
use nbd_common::*;

const MIB: u64 = 1 << 20;

fn mem_exports(size: u64) -> (Arc<MemDisk>, Arc<StaticExports>) {
    let mem = Arc::new(MemDisk::new(size));
    let ex = Arc::new(StaticExports::new());
    ex.add("mem", "a memory disk", mem.clone(), false);
    (mem, ex)
}

fn file_disk(h_dir: &std::path::Path, name: &str, size: u64) -> Arc<FileDisk> {
    let p = h_dir.join(name);
    Arc::new(FileDisk::create(&p, size, &file_label(size), OpenOptions::default()).unwrap())
}

fn qemu_io(uri: &str, cmds: &[&str]) -> (bool, String) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw", uri]);
    for x in cmds {
        c.args(["-c", x]);
    }
    run(&mut c)
}

fn assert_qemu_io_ok(ok: bool, out: &str, expect: &[&str]) {
    assert!(ok, "qemu-io failed:\n{out}");
    assert!(
        !out.contains("failed"),
        "qemu-io reported a failure:\n{out}"
    );
    for e in expect {
        assert!(out.contains(e), "qemu-io output lacks {e:?}:\n{out}");
    }
}

#[test]
fn qemu_io_writes_and_reads_back_over_tcp_and_unix() {
    if !have("qemu-io") {
        return;
    }
    let (mem, ex) = mem_exports(16 * MIB);
    let h = Harness::start(ex, ServerConfig::default());
    let (ok, out) = qemu_io(&h.uri("mem"), &["write -P 0xab 0 1M", "read -P 0xab 0 1M"]);
    assert_qemu_io_ok(
        ok,
        &out,
        &[
            "wrote 1048576/1048576 bytes at offset 0",
            "read 1048576/1048576 bytes at offset 0",
        ],
    );
    let (ok, out) = qemu_io(
        &h.unix_uri("mem"),
        &[
            "write -P 0xcd 1M 1M",
            "read -P 0xcd 1M 1M",
            "read -P 0xab 0 1M",
        ],
    );
    assert_qemu_io_ok(ok, &out, &["read 1048576/1048576 bytes at offset 1048576"]);
    // The bytes really are on the device.
    let img = mem.snapshot();
    assert!(img[..MIB as usize].iter().all(|&b| b == 0xab));
    assert!(
        img[MIB as usize..2 * MIB as usize]
            .iter()
            .all(|&b| b == 0xcd)
    );
    assert!(img[2 * MIB as usize..].iter().all(|&b| b == 0));
    // A wrong pattern is noticed (the check can fail).
    let (_, out) = qemu_io(&h.uri("mem"), &["read -P 0x11 0 4k"]);
    assert!(out.contains("Pattern verification failed"), "{out}");
    h.stop();
}

#[test]
fn qemu_io_on_a_file_disk_export() {
    if !have("qemu-io") {
        return;
    }
    let ex = Arc::new(StaticExports::new());
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let disk = file_disk(dir.path(), "d0", 32 * MIB);
    ex.add("file", "a file disk", disk.clone(), false);
    let h = Harness::start(ex, ServerConfig::default());
    let (ok, out) = qemu_io(
        &h.uri("file"),
        &[
            "write -P 0x5a 4k 1M",
            "write -P 0x33 -f 8M 64k",
            "flush",
            "read -P 0x5a 4k 1M",
            "read -P 0x33 8M 64k",
            "read -P 0 0 4k",
        ],
    );
    assert_qemu_io_ok(ok, &out, &["wrote 65536/65536 bytes at offset 8388608"]);
    rt::block_on(async {
        assert_eq!(
            read_vec(&*disk, 4096, MIB as usize).await.unwrap(),
            vec![0x5a; MIB as usize]
        );
        assert_eq!(
            read_vec(&*disk, 8 * MIB, 65536).await.unwrap(),
            vec![0x33; 65536]
        );
    });
    h.stop();
}

fn nbdinfo_json(uri: &str) -> serde_json::Value {
    let (ok, out) = run(Command::new("nbdinfo").args(["--json", uri]));
    assert!(ok, "nbdinfo failed: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("nbdinfo json: {e}\n{out}"))
}

#[test]
fn nbdinfo_reports_size_flags_block_sizes_and_lists_exports() {
    if !have("nbdinfo") {
        return;
    }
    let (_, ex) = mem_exports(16 * MIB);
    ex.add(
        "ro",
        "read-only view",
        Arc::new(MemDisk::new(4 * MIB)),
        true,
    );
    let h = Harness::start(ex, ServerConfig::default());
    let j = nbdinfo_json(&h.uri("mem"));
    assert_eq!(j["protocol"], "newstyle-fixed");
    assert_eq!(j["structured"], true);
    let e = &j["exports"][0];
    assert_eq!(e["export-name"], "mem");
    assert_eq!(e["export-size"], 16 * MIB);
    assert_eq!(e["description"], "a memory disk");
    for f in [
        "can_multi_conn",
        "can_flush",
        "can_fua",
        "can_trim",
        "can_zero",
        "can_fast_zero",
        "can_cache",
        "can_df",
    ] {
        assert_eq!(e[f], true, "{f} in {e}");
    }
    assert_eq!(e["is_read_only"], false);
    assert_eq!(e["block_size_minimum"], 512);
    assert_eq!(e["block_size_preferred"], 4096);
    assert_eq!(e["block_size_maximum"], 32 * MIB);
    assert_eq!(e["contexts"][0], "base:allocation");
    // The read-only export says so and offers no writes.
    let e = nbdinfo_json(&h.unix_uri("ro"))["exports"][0].clone();
    assert_eq!(e["is_read_only"], true);
    assert_eq!(e["can_trim"], false);
    assert_eq!(e["can_zero"], false);
    assert_eq!(e["export-size"], 4 * MIB);
    // The default export is the first one.
    let e = nbdinfo_json(&format!("nbd://127.0.0.1:{}", h.port))["exports"][0].clone();
    assert_eq!(e["export-size"], 16 * MIB);
    // --list shows both with their descriptions.
    let (ok, out) = run(Command::new("nbdinfo").args(["--list", "--json", &h.uri("")]));
    assert!(ok, "{out}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<_> = j["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["export-name"].as_str().unwrap(),
                e["description"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(names, [("mem", "a memory disk"), ("ro", "read-only view")]);
    h.stop();
}

/// Parses `nbdinfo --map` lines: (offset, length, type).
fn map(uri: &str) -> Vec<(u64, u64, u32)> {
    let (ok, out) = run(Command::new("nbdinfo").args(["--map", uri]));
    assert!(ok, "nbdinfo --map failed: {out}");
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn nbdinfo_map_shows_holes_after_trim_and_write_zeroes() {
    if !have("nbdinfo") || !have("qemu-io") {
        return;
    }
    let (mem, ex) = mem_exports(8 * MIB);
    rt::block_on(async {
        write_slice(&*mem, 0, &vec![0x77; 8 * MIB as usize], false)
            .await
            .unwrap();
    });
    let h = Harness::start(ex, ServerConfig::default());
    assert_eq!(map(&h.uri("mem")), [(0, 8 * MIB, 0)]);
    let (ok, out) = qemu_io(&h.uri("mem"), &["discard 1M 1M", "write -z -u 4M 2M"]);
    assert_qemu_io_ok(
        ok,
        &out,
        &["discard 1048576/1048576 bytes at offset 1048576"],
    );
    assert_eq!(
        map(&h.uri("mem")),
        [
            (0, MIB, 0),
            (MIB, MIB, 3),
            (2 * MIB, 2 * MIB, 0),
            (4 * MIB, 2 * MIB, 3),
            (6 * MIB, 2 * MIB, 0),
        ]
    );
    let (ok, out) = qemu_io(
        &h.uri("mem"),
        &["read -P 0 1M 1M", "read -P 0 4M 2M", "read -P 0x77 2M 2M"],
    );
    assert_qemu_io_ok(ok, &out, &[]);
    h.stop();
}

#[test]
fn qemu_img_compare_matches_a_raw_reference() {
    if !have("qemu-img") {
        return;
    }
    let (mem, ex) = mem_exports(4 * MIB);
    let h = Harness::start(ex, ServerConfig::default());
    let reference = h.path("ref.raw");
    let mut data = pattern(4 * MIB as usize, 9);
    data[MIB as usize..2 * MIB as usize].fill(0);
    write_file(&reference, &data);
    let (ok, out) = run(Command::new("qemu-img").args([
        "convert",
        "-n",
        "-f",
        "raw",
        "-O",
        "raw",
        reference.to_str().unwrap(),
        &h.uri("mem"),
    ]));
    assert!(ok, "qemu-img convert: {out}");
    assert_eq!(mem.snapshot(), data);
    let compare = |uri: &str| {
        run(Command::new("qemu-img").args([
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            reference.to_str().unwrap(),
            uri,
        ]))
    };
    let (ok, out) = compare(&h.uri("mem"));
    assert!(ok && out.contains("Images are identical"), "{out}");
    // One changed sector is found.
    rt::block_on(async {
        write_slice(&*mem, 3 * MIB, &[1u8; 512], false)
            .await
            .unwrap()
    });
    let (ok, out) = compare(&h.unix_uri("mem"));
    assert!(
        !ok && out.contains("Content mismatch at offset 3145728"),
        "{out}"
    );
    h.stop();
}

#[test]
fn nbdcopy_copies_in_both_directions() {
    if !have("nbdcopy") {
        return;
    }
    let ex = Arc::new(StaticExports::new());
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let disk = file_disk(dir.path(), "d0", 16 * MIB);
    ex.add("file", "", disk.clone(), false);
    let h = Harness::start(ex, ServerConfig::default());
    // A sparse source: data, a hole, data.
    let src = h.path("src.raw");
    let mut data = pattern(16 * MIB as usize, 3);
    data[4 * MIB as usize..12 * MIB as usize].fill(0);
    write_file(&src, &data);
    let (ok, out) = run(Command::new("nbdcopy").args([src.to_str().unwrap(), &h.uri("file")]));
    assert!(ok, "nbdcopy in: {out}");
    rt::block_on(async {
        assert!(read_vec(&*disk, 0, 16 * MIB as usize).await.unwrap() == data);
    });
    let dst = h.path("dst.raw");
    let (ok, out) = run(Command::new("nbdcopy").args([&h.unix_uri("file"), dst.to_str().unwrap()]));
    assert!(ok, "nbdcopy out: {out}");
    assert!(std::fs::read(&dst).unwrap() == data, "copied image differs");
    h.stop();
}

#[test]
fn fio_randrw_with_verify() {
    if !have("fio") {
        return;
    }
    let (ok, out) = run(Command::new("fio").arg("--enghelp=nbd"));
    if !ok || !out.contains("uri") {
        skip("fio has no nbd engine (Debian's fio package has it)");
        return;
    }
    let ex = Arc::new(StaticExports::new());
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let disk = file_disk(dir.path(), "d0", 16 * MIB);
    ex.add("file", "", disk, false);
    let mem = Arc::new(MemDisk::new(16 * MIB));
    ex.add("mem", "", mem, false);
    let h = Harness::start(ex, ServerConfig::default());
    for uri in [h.uri("file"), h.unix_uri("mem")] {
        let (ok, out) = run(Command::new("fio").current_dir(h.dir.path()).args([
            "--name=verify",
            "--ioengine=nbd",
            &format!("--uri={uri}"),
            "--rw=randrw",
            "--bs=4k",
            "--iodepth=32",
            "--numjobs=2",
            "--size=4M",
            "--offset_increment=8M",
            "--verify=crc32c",
            "--verify_fatal=1",
            "--verify_state_save=0",
            "--do_verify=1",
            "--group_reporting",
        ]));
        assert!(ok, "fio failed on {uri}:\n{out}");
        assert!(
            out.contains("err= 0"),
            "fio reported errors on {uri}:\n{out}"
        );
        assert!(!out.contains("verify: bad"), "{out}");
    }
    h.stop();
}

#[test]
fn read_only_export_refuses_writes() {
    if !have("qemu-io") {
        return;
    }
    let mem = Arc::new(MemDisk::new(4 * MIB));
    rt::block_on(async {
        write_slice(&*mem, 0, &vec![0x42; 4096], false)
            .await
            .unwrap()
    });
    let ex = Arc::new(StaticExports::new());
    ex.add("ro", "", mem.clone(), true);
    let h = Harness::start(ex, ServerConfig::default());
    // qemu refuses to open a read-only export for writing (the raw
    // protocol tests check the server's EPERM for clients that try).
    let (ok, out) = qemu_io(&h.uri("ro"), &["write -P 0x99 0 4k"]);
    assert!(!ok && out.contains("Permission denied"), "{out}");
    let (ok, out) = run(Command::new("qemu-io").args([
        "-r",
        "-f",
        "raw",
        &h.uri("ro"),
        "-c",
        "read -P 0x42 0 4k",
    ]));
    assert_qemu_io_ok(ok, &out, &["read 4096/4096 bytes at offset 0"]);
    assert!(mem.snapshot()[..4096].iter().all(|&b| b == 0x42));
    assert_eq!(mem.writes.load(std::sync::atomic::Ordering::SeqCst), 1);
    h.stop();
}

#[test]
fn memdisk_size_is_served_exactly() {
    // Sanity of the harness itself: the export size is the device size.
    let (mem, ex) = mem_exports(3 * MIB + 512);
    let h = Harness::start(ex, ServerConfig::default());
    let mut c = Raw::open(h.port, "mem", true);
    assert_eq!(c.size, mem.size());
    c.request(cmd::DISC, 0, 0, 0, 0);
    assert!(c.closed_within(std::time::Duration::from_secs(10)));
    h.stop();
}
