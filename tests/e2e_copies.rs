//! End to end: instant copies (seeds 000/001) through the real daemon, the
//! real CLI and real NBD clients — qemu-io patterns on both sides of a copy
//! point, `qemu-img compare` against an image saved at the copy point, fio
//! verify on a source while copies come and go, `kill -9` in the middle of
//! copy-on-write traffic, cascades, many copies, restore, split, and the
//! space warning.

mod harness;

use std::path::Path;

use harness::*;

const MODES: [&str; 2] = ["row", "cow"];

/// A pool with one concat group `g` over a sparse disk of `disk`, and a
/// volume `src` of `size` holding pattern 0x11 over its first `written`.
fn setup(dir: &Path, disk: &str, size: &str) -> Daemon {
    let d = Daemon::start(dir, &[]);
    d.ok(&["disk", "add", "x0", "--size", disk]);
    d.ok(&["group", "create", "g", "--raid", "concat", "--disks", "x0"]);
    d.ok(&["volume", "create", "src", "--group", "g", "--size", size]);
    d
}

fn copy(d: &Daemon, src: &str, name: &str, mode: &str) -> serde_json::Value {
    d.json(&["copy", "create", src, name, "--mode", mode])
}

/// qemu-io that is expected to fail; returns its output.
fn qemu_io_fails(url: &str, cmds: &[&str]) -> String {
    let mut args = vec!["-f", "raw"];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(url);
    let (ok, out) = run("qemu-io", &args);
    let failed =
        !ok || out.contains("Pattern verification failed") || out.to_lowercase().contains("error");
    assert!(failed, "qemu-io {cmds:?} should have failed: {out}");
    out
}

#[test]
fn patterns_after_the_copy_point_stay_on_their_side() {
    if !have(&["qemu-io"]) {
        return;
    }
    for mode in MODES {
        let dir = pool_dir();
        let d = setup(dir.path(), "256M", "32M");
        let (src, c) = (d.export("src"), d.export("c"));
        qemu_io(&src, &["write -P 0x11 0 32M"]);
        let info = copy(&d, "src", "c", mode);
        assert_eq!(info["source"], "src");
        assert_eq!(info["tracks_diverged"], 0, "{mode}: {info}");
        // The source moves on: whole tracks, and 4k pieces inside tracks.
        qemu_io(
            &src,
            &[
                "write -P 0x22 1M 2M",
                "write -P 0x23 8196k 4k",
                "write -P 0x24 31M 512",
            ],
        );
        // The copy still holds the copy point...
        qemu_io(
            &c,
            &[
                "read -P 0x11 0 1M",
                "read -P 0x11 1M 2M",
                "read -P 0x11 8M 64k",
                "read -P 0x11 31M 1M",
            ],
        );
        // ...and writes of its own, which the source never sees.
        qemu_io(&c, &["write -P 0x33 16M 1M", "write -P 0x34 8M 4k"]);
        qemu_io(
            &src,
            &[
                "read -P 0x11 16M 1M",
                "read -P 0x11 8M 4k",
                "read -P 0x22 1M 2M",
                "read -P 0x23 8196k 4k",
                "read -P 0x11 8192k 4k",
                "read -P 0x24 31M 512",
            ],
        );
        qemu_io(
            &c,
            &[
                "read -P 0x33 16M 1M",
                "read -P 0x34 8M 4k",
                "read -P 0x11 8196k 4k",
            ],
        );
        let info = d.json(&["copy", "show", "c"]);
        assert!(info["tracks_diverged"].as_u64().unwrap() >= 1, "{info}");
        assert_eq!(info["mode"], mode);
        // Both survive a restart.
        let mut d = d;
        d.restart();
        let (src, c) = (d.export("src"), d.export("c"));
        qemu_io(&src, &["read -P 0x22 1M 2M", "read -P 0x11 16M 1M"]);
        qemu_io(&c, &["read -P 0x11 1M 2M", "read -P 0x33 16M 1M"]);
    }
}

#[test]
fn a_copy_compares_equal_to_the_image_saved_at_its_copy_point() {
    if !have(&["qemu-io", "qemu-img"]) {
        return;
    }
    for mode in MODES {
        let dir = pool_dir();
        let mut d = setup(dir.path(), "256M", "24M");
        let src = d.export("src");
        // Scattered history, then the image at the copy point.
        for (i, off) in [0u64, 3, 7, 64, 130, 300, 301, 4000, 9000, 12000]
            .iter()
            .enumerate()
        {
            qemu_io(&src, &[&format!("write -P {} {}k 12k", 0x40 + i, off * 2)]);
        }
        let saved = dir.path().join("saved.raw");
        let (ok, out) = run(
            "qemu-img",
            &[
                "convert",
                "-f",
                "raw",
                "-O",
                "raw",
                &src,
                saved.to_str().unwrap(),
            ],
        );
        assert!(ok, "{out}");
        copy(&d, "src", "c", mode);
        // A workload on the source after the copy point.
        let mut cmds = Vec::new();
        for i in 0..40u64 {
            let off = (i * 7919 * 4096) % (24 << 20);
            let len = 512 * (1 + (i * 13) % 300);
            let len = len.min((24 << 20) - off);
            cmds.push(format!("write -P {} {off} {len}", 0x80 + i));
        }
        cmds.push("discard 5M 1M".into());
        cmds.push("write -z 9M 300k".into());
        let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
        qemu_io(&src, &refs);
        let compare = |d: &Daemon| {
            let (same, out) = run(
                "qemu-img",
                &[
                    "compare",
                    "-f",
                    "raw",
                    "-F",
                    "raw",
                    &d.export("c"),
                    saved.to_str().unwrap(),
                ],
            );
            assert!(same, "{mode}: copy differs from the saved image: {out}");
        };
        compare(&d);
        // The source does differ (the compare can fail).
        let (same, _) = run(
            "qemu-img",
            &[
                "compare",
                "-f",
                "raw",
                "-F",
                "raw",
                &d.export("src"),
                saved.to_str().unwrap(),
            ],
        );
        assert!(
            !same,
            "{mode}: the source should differ from the saved image"
        );
        d.restart();
        compare(&d);
    }
}

#[test]
fn fio_verifies_on_a_source_while_copies_are_created_and_deleted() {
    if !have(&["fio", "qemu-io"]) {
        return;
    }
    for mode in MODES {
        let dir = pool_dir();
        let d = setup(dir.path(), "512M", "64M");
        let uri = d.export("src");
        let fio = std::thread::spawn(move || {
            fio(&[
                "--name=verify",
                "--ioengine=nbd",
                &format!("--uri={uri}"),
                "--rw=randwrite",
                "--bs=4k",
                "--iodepth=32",
                "--size=64M",
                "--io_size=96M",
                "--verify=crc32c",
                "--verify_fatal=1",
                "--verify_state_save=0",
                "--do_verify=1",
            ])
        });
        // Copies come and go while fio writes and verifies.
        let mut made = 0;
        while !fio.is_finished() && made < 12 {
            let name = format!("c{made}");
            copy(&d, "src", &name, mode);
            if made % 2 == 1 {
                d.ok(&["copy", "delete", &format!("c{}", made - 1)]);
            }
            made += 1;
        }
        let r = fio.join().unwrap();
        assert!(
            r.ok && r.errors == 0,
            "{mode}: fio verify failed: {}",
            r.text
        );
        // It wrote the whole 64 MiB (fio's random map writes each block
        // once), then read every block back to check it: a run that wrote
        // or verified nothing fails here.
        assert_eq!(r.write_bytes, 64 << 20, "{mode}: {}", r.text);
        assert_eq!(r.read_bytes, r.write_bytes, "{mode}: {}", r.text);
        assert!(made >= 2, "{mode}: fio ended before copies were made");
        // The copies left read through without error, and a copy taken
        // now is byte for byte the source.
        let list = d.json(&["copy", "list"]);
        assert!(!list.as_array().unwrap().is_empty());
        for c in list.as_array().unwrap() {
            let name = c["name"].as_str().unwrap();
            let out = dir.path().join(format!("{name}.raw"));
            let (ok, msg) = run(
                "qemu-img",
                &[
                    "convert",
                    "-f",
                    "raw",
                    "-O",
                    "raw",
                    &d.export(name),
                    out.to_str().unwrap(),
                ],
            );
            assert!(ok, "{name}: {msg}");
            assert_eq!(std::fs::metadata(&out).unwrap().len(), 64 << 20);
        }
        copy(&d, "src", "now", mode);
        let (same, out) = run(
            "qemu-img",
            &[
                "compare",
                "-f",
                "raw",
                "-F",
                "raw",
                &d.export("src"),
                &d.export("now"),
            ],
        );
        assert!(same, "{mode}: a fresh copy differs from its source: {out}");
    }
}

#[test]
fn kill9_during_copy_on_write_traffic_keeps_both_sides() {
    if !have(&["qemu-io", "fio"]) {
        return;
    }
    for mode in MODES {
        let dir = pool_dir();
        let mut d = setup(dir.path(), "256M", "32M");
        let src = d.export("src");
        qemu_io(&src, &["write -P 0x11 0 32M", "flush"]);
        copy(&d, "src", "c", mode);
        // Flushed writes on both sides of the copy.
        qemu_io(&src, &["write -P 0x22 0 8M", "flush"]);
        qemu_io(&d.export("c"), &["write -P 0x33 24M 4M", "flush"]);
        // Unflushed copy-on-write traffic into 8M..24M, killed mid-way.
        let uri = d.export("src");
        let mut fio = std::process::Command::new("fio")
            .args([
                "--name=cow",
                "--ioengine=nbd",
                &format!("--uri={uri}"),
                "--rw=randwrite",
                "--bs=4k",
                "--iodepth=32",
                "--offset=8M",
                "--size=16M",
                "--time_based",
                "--runtime=30",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the copy shows diverged tracks from fio's writes.
        let start = std::time::Instant::now();
        loop {
            let info = d.json(&["copy", "show", "c"]);
            let diverged = info["tracks_diverged"].as_u64().unwrap();
            if diverged > 200 || start.elapsed().as_secs() > 20 {
                break;
            }
            std::thread::yield_now();
        }
        d.kill9();
        let _ = fio.kill();
        let _ = fio.wait();
        d.respawn();
        let (src, c) = (d.export("src"), d.export("c"));
        // The copy is exactly its image: the copy point plus its own writes.
        qemu_io(
            &c,
            &[
                "read -P 0x11 0 24M",
                "read -P 0x33 24M 4M",
                "read -P 0x11 28M 4M",
            ],
        );
        // The source kept every flushed write, outside the region in flight.
        qemu_io(&src, &["read -P 0x22 0 8M", "read -P 0x11 24M 8M"]);
        // Both sides go on working.
        qemu_io(&src, &["write -P 0x44 8M 16M", "read -P 0x44 8M 16M"]);
        qemu_io(&c, &["read -P 0x11 8M 16M"]);
    }
}

#[test]
fn cascades_and_many_copies_are_all_correct_and_writable() {
    if !have(&["qemu-io"]) {
        return;
    }
    for mode in MODES {
        let dir = pool_dir();
        let d = setup(dir.path(), "2G", "16M");
        qemu_io(&d.export("src"), &["write -P 0x10 0 16M"]);
        // A cascade 5 deep: each level writes its own 1M, then is copied.
        let mut prev = "src".to_string();
        for level in 1..=5u64 {
            qemu_io(
                &d.export(&prev),
                &[&format!("write -P {} {}M 1M", 0x10 + level, level)],
            );
            let name = format!("k{level}");
            copy(&d, &prev, &name, mode);
            prev = name;
        }
        // DEPTH is the cascade level: k1 is a copy of src, each next one a
        // copy of the one before, whatever the mode.
        let depths: [u64; 5] = [1, 2, 3, 4, 5];
        for level in 1..=5u64 {
            let name = format!("k{level}");
            let mut cmds = Vec::new();
            for l in 1..=5u64 {
                // k{level} holds the writes up to the one made on it
                // before it was copied in turn.
                let p = if l <= level + 1 { 0x10 + l } else { 0x10 };
                cmds.push(format!("read -P {p} {l}M 1M"));
            }
            let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
            qemu_io(&d.export(&name), &refs);
            let info = d.json(&["copy", "show", &name]);
            let parent = if level == 1 {
                "src".to_owned()
            } else {
                format!("k{}", level - 1)
            };
            assert_eq!(info["source"], parent.as_str(), "{mode}: {info}");
            assert_eq!(info["origin"], "src", "{mode}: {info}");
            assert_eq!(info["mode"], mode, "{info}");
            assert_eq!(
                info["depth"],
                depths[level as usize - 1],
                "{mode}: depth of {name}: {info}"
            );
        }
        // 64 copies of one source, each written after it is made.
        for i in 0..64u64 {
            let name = format!("m{i}");
            copy(&d, "src", &name, mode);
            qemu_io(
                &d.export(&name),
                &[&format!("write -P {} {}k 4k", i + 1, 8192 + i * 4)],
            );
            if i % 8 == 0 {
                qemu_io(
                    &d.export("src"),
                    &[&format!("write -P 0xee {}k 4k", 12288 + i * 4)],
                );
            }
        }
        let list = d.json(&["copy", "list"]);
        assert_eq!(list.as_array().unwrap().len(), 69, "{mode}");
        for i in 0..64u64 {
            let name = format!("m{i}");
            // Its own write; the source's 0x10 where no other copy wrote;
            // the source's later writes only from before it was made.
            let mut cmds = vec![
                format!("read -P {} {}k 4k", i + 1, 8192 + i * 4),
                "read -P 0x10 0 1M".to_string(),
            ];
            if i > 0 {
                cmds.push(format!("read -P 0x10 {}k 4k", 8192 + (i - 1) * 4));
            }
            let later = (i / 8 + 1) * 8;
            if later < 64 {
                cmds.push(format!("read -P 0x10 {}k 4k", 12288 + later * 4));
            }
            let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
            qemu_io(&d.export(&name), &refs);
        }
        // Deleting in any order gives space back and leaves the rest intact.
        for i in (0..64u64).rev().step_by(3) {
            d.ok(&["copy", "delete", &format!("m{i}")]);
        }
        qemu_io(&d.export("m1"), &["read -P 2 8196k 4k"]);
        qemu_io(
            &d.export("k3"),
            &[
                "read -P 0x13 3M 1M",
                "read -P 0x14 4M 1M",
                "read -P 0x10 5M 1M",
            ],
        );
    }
}

#[test]
fn restore_returns_the_source_to_the_copy_image_at_once() {
    if !have(&["qemu-io"]) {
        return;
    }
    for mode in MODES {
        let dir = pool_dir();
        let mut d = setup(dir.path(), "256M", "32M");
        let src = d.export("src");
        qemu_io(&src, &["write -P 0x11 0 32M"]);
        copy(&d, "src", "c", mode);
        qemu_io(&src, &["write -P 0x22 0 16M"]);
        qemu_io(&d.export("c"), &["write -P 0x33 20M 1M"]);
        let r = d.json(&["copy", "restore", "c"]);
        assert_eq!(r["volume"], "src");
        assert_eq!(r["from"], "c");
        // Reads are correct at once, whether or not data still moves.
        qemu_io(
            &src,
            &[
                "read -P 0x11 0 20M",
                "read -P 0x33 20M 1M",
                "read -P 0x11 21M 11M",
            ],
        );
        if let Some(id) = r["job"]["id"].as_u64() {
            assert_eq!(mode, "cow", "only A1 moves data on restore");
            let j = d.wait_job(id);
            assert_eq!(j["state"], "done", "{j}");
            assert_eq!(j["kind"], "copy-restore");
        } else {
            assert_eq!(mode, "row", "A2 restores without moving data");
        }
        // The copy keeps its image, and both go on independently.
        qemu_io(
            &d.export("c"),
            &["read -P 0x11 0 20M", "read -P 0x33 20M 1M"],
        );
        qemu_io(&src, &["write -P 0x55 0 1M"]);
        qemu_io(&d.export("c"), &["read -P 0x11 0 1M"]);
        d.restart();
        qemu_io(
            &d.export("src"),
            &[
                "read -P 0x55 0 1M",
                "read -P 0x11 1M 19M",
                "read -P 0x33 20M 1M",
            ],
        );
        qemu_io(&d.export("c"), &["read -P 0x11 0 20M"]);
        // A copy whose source is gone has nothing to restore into.
        let err = d.fails(&["copy", "restore", "src"]);
        assert!(err.contains("original"), "{err}");
    }
}

#[test]
fn split_measures_both_sides_and_leaves_them_independent() {
    if !have(&["qemu-io"]) {
        return;
    }
    for (mode, policy, delete) in [
        ("row", "move-smaller", "src"),
        ("row", "move-larger", "c"),
        ("cow", "move-smaller", "src"),
        ("cow", "move-larger", "src"),
    ] {
        let dir = pool_dir();
        let mut d = setup(dir.path(), "256M", "32M");
        qemu_io(&d.export("src"), &["write -P 0x11 0 32M"]);
        copy(&d, "src", "c", mode);
        // The source diverges by 8 MiB, the copy by 2 MiB.
        qemu_io(&d.export("src"), &["write -P 0x22 0 8M"]);
        qemu_io(&d.export("c"), &["write -P 0x33 16M 2M"]);
        let s = d.json(&["copy", "split", "c", "--policy", policy, "--wait"]);
        // New data in the additional area: under A2 each side's writes;
        // under A1 the original writes in place, and the old data
        // preserved for the copy is the copy's.
        let track = 64 << 10;
        let (n_orig, n_copy) = match mode {
            "row" => (8u64 << 20, 2u64 << 20),
            _ => (0, 10u64 << 20),
        };
        assert_eq!(s["n_orig"], n_orig / track, "{s}");
        assert_eq!(s["n_copy"], n_copy / track, "{s}");
        let smaller_is_copy = true;
        let moved = s["moving"].as_str().unwrap();
        if mode == "row" {
            let want = if (policy == "move-smaller") == smaller_is_copy {
                "c"
            } else {
                "src"
            };
            assert_eq!(moved, want, "{s}");
        }
        if let Some(j) = s["job"].as_object() {
            assert_eq!(j["state"], "done", "{s}");
        }
        let check = |d: &Daemon| {
            qemu_io(
                &d.export("src"),
                &["read -P 0x22 0 8M", "read -P 0x11 8M 24M"],
            );
            qemu_io(
                &d.export("c"),
                &[
                    "read -P 0x11 0 16M",
                    "read -P 0x33 16M 2M",
                    "read -P 0x11 18M 14M",
                ],
            );
        };
        check(&d);
        d.restart();
        check(&d);
        // Either can now go without touching the other.
        d.ok(&["volume", "delete", delete]);
        let keep = if delete == "src" { "c" } else { "src" };
        if keep == "c" {
            qemu_io(
                &d.export("c"),
                &[
                    "read -P 0x11 0 16M",
                    "read -P 0x33 16M 2M",
                    "write -P 0x66 0 1M",
                    "read -P 0x66 0 1M",
                ],
            );
        } else {
            qemu_io(
                &d.export("src"),
                &["read -P 0x22 0 8M", "read -P 0x11 8M 24M"],
            );
        }
        d.restart();
        let vols = d.json(&["volume", "list"]);
        let names: Vec<&str> = vols
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["name"].as_str())
            .filter(|n| *n != "vol0")
            .collect();
        assert_eq!(names, vec![keep], "{vols}");
    }
}

#[test]
fn running_out_of_new_space_warns_first_then_follows_the_mode() {
    if !have(&["qemu-io"]) {
        return;
    }
    for mode in MODES {
        let dir = pool_dir();
        let d = setup(dir.path(), "48M", "24M");
        let src = d.export("src");
        qemu_io(&src, &["write -P 0x11 0 24M"]);
        // Pointers for changed tracks take space a track at a time (a
        // load-point scheme reserves whole areas up front).
        d.ok(&[
            "copy",
            "create",
            "src",
            "c",
            "--mode",
            mode,
            "--meta",
            "changed-pointer",
        ]);
        let mut warned_at = None;
        let mut failed_at = None;
        for mib in 0..24u64 {
            let (ok, out) = run(
                "qemu-io",
                &["-f", "raw", "-c", &format!("write -P 0x22 {mib}M 1M"), &src],
            );
            let ok = ok && !out.to_lowercase().contains("error");
            if !ok {
                assert_eq!(mode, "row", "an A1 source never fails: {out}");
                assert!(out.contains("No space left"), "{out}");
                failed_at = Some(mib);
                break;
            }
            let c = d.json(&["copy", "show", "c"]);
            if warned_at.is_none() && c["warning"].is_string() {
                assert!(c["warning"].as_str().unwrap().contains("% used"), "{c}");
                warned_at = Some(mib);
            }
        }
        let warned = warned_at.expect("copy list warned before running out");
        match mode {
            "row" => {
                let f = failed_at.expect("A2 runs out of new space");
                assert!(warned < f, "warned at {warned} MiB, failed at {f} MiB");
                // Nothing already written is lost.
                qemu_io(&src, &[&format!("read -P 0x22 0 {f}M")]);
                qemu_io(&d.export("c"), &["read -P 0x11 0 24M"]);
            }
            _ => {
                // The source kept every write; the copy is invalid and says so.
                qemu_io(&src, &["read -P 0x22 0 24M"]);
                let c = d.json(&["copy", "show", "c"]);
                assert_eq!(c["valid"], false, "{c}");
                let out = qemu_io_fails(&d.export("c"), &["read 0 24M"]);
                assert!(!out.contains("Pattern"), "{out}");
                let table = d.ok(&["copy", "list"]);
                assert!(table.contains("INVALID"), "{table}");
                assert!(table.contains("is invalid"), "{table}");
            }
        }
    }
}

#[test]
fn the_last_copy_gone_the_original_folds_back_and_the_space_returns() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let mut d = setup(dir.path(), "256M", "32M");
    let free_before = d.json(&["group", "show", "g"])["free"].as_u64().unwrap();
    qemu_io(&d.export("src"), &["write -P 0x11 0 32M"]);
    copy(&d, "src", "c", "row");
    // Under A2 the original's new data lands in the new space.
    qemu_io(
        &d.export("src"),
        &["write -P 0x22 0 8M", "write -P 0x23 20M 4k"],
    );
    let during = d.json(&["group", "show", "g"])["free"].as_u64().unwrap();
    assert!(during + (8 << 20) <= free_before, "{during} {free_before}");
    // src is its family's origin while the copy lives.
    let err = d.fails(&["copy", "show", "src"]);
    assert!(err.contains("volume src is the origin of copies"), "{err}");
    // The deletion names the job that moves it back into the volume's own
    // extents; reads stay right meanwhile.
    let del = d.json(&["copy", "delete", "c"]);
    assert_eq!(del["name"], "c", "{del}");
    let fold = &del["job"];
    assert_eq!(fold["kind"], "copy-fold", "{del}");
    assert_eq!(
        fold["target"], "volume src: move its new data back into its own space",
        "{del}"
    );
    qemu_io(
        &d.export("src"),
        &["read -P 0x22 0 8M", "read -P 0x11 8M 12M"],
    );
    let j = d.wait_job(fold["id"].as_u64().unwrap());
    assert_eq!(j["state"], "done", "{j}");
    // The family dissolved: src is a plain volume again...
    let err = d.fails(&["copy", "show", "src"]);
    assert!(err.contains("volume src is not an instant copy"), "{err}");
    assert!(d.json(&["copy", "list"]).as_array().unwrap().is_empty());
    let after = d.json(&["group", "show", "g"])["free"].as_u64().unwrap();
    assert_eq!(after, free_before, "the copies' space came back");
    // ...whose data lies in its own extents: read them from the disk file
    // (group g is concat over x0 alone, so a group offset is an offset in
    // x0's data area).
    let v = d.json(&["volume", "show", "src"]);
    let extents = v["extents"].as_array().unwrap();
    assert_eq!(extents.len(), 1, "{v}");
    let start = extents[0]["offset"].as_u64().unwrap();
    assert_eq!(extents[0]["length"], 32u64 << 20, "{v}");
    d.stop();
    let img = std::fs::read(dir.path().join("disks/x0.img")).unwrap();
    let at = |off: u64, len: u64| {
        let from = (ferrosan::disk::DATA_OFFSET + start + off) as usize;
        &img[from..from + len as usize]
    };
    let holds = |off: u64, len: u64, byte: u8| at(off, len).iter().all(|&b| b == byte);
    assert!(
        holds(0, 8 << 20, 0x22),
        "src's new data is not in its extents"
    );
    assert!(
        holds(20 << 20, 4096, 0x23),
        "src's new data is not in its extents"
    );
    assert!(holds(8 << 20, 12 << 20, 0x11), "src's old data moved");
    drop(img);
    d.respawn();
    qemu_io(
        &d.export("src"),
        &[
            "read -P 0x22 0 8M",
            "read -P 0x11 8M 12M",
            "read -P 0x23 20M 4k",
            "read -P 0x11 20484k 12284k",
        ],
    );
    // A copy asked for while the fold still runs waits for it, and may
    // take the other mode.
    copy(&d, "src", "c3", "row");
    qemu_io(&d.export("src"), &["write -P 0x44 0 16M"]);
    d.ok(&["copy", "delete", "c3"]);
    let c4 = copy(&d, "src", "c4", "cow");
    assert_eq!(c4["mode"], "cow", "{c4}");
    qemu_io(
        &d.export("c4"),
        &["read -P 0x44 0 16M", "read -P 0x11 16M 4M"],
    );
}

#[test]
fn a_copy_that_cannot_be_made_leaves_nothing_behind() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let mut d = setup(dir.path(), "48M", "24M");
    qemu_io(&d.export("src"), &["write -P 0x11 0 24M"]);
    let free = d.json(&["group", "show", "g"])["free"].as_u64().unwrap();
    // A full bitmap reserves a whole-volume area for each writer of an A2
    // family: two of them do not fit in the 24 MiB left.
    let out = d.fails(&[
        "copy", "create", "src", "c", "--mode", "row", "--meta", "bitmap",
    ]);
    assert!(out.contains("no room"), "{out}");
    assert_eq!(
        d.json(&["group", "show", "g"])["free"].as_u64().unwrap(),
        free
    );
    // Nothing was kept: no copy, all the space, and no half-made family
    // found at the next start.
    d.restart();
    assert_eq!(d.json(&["copy", "list"]), serde_json::json!([]));
    assert_eq!(
        d.json(&["group", "show", "g"])["free"].as_u64().unwrap(),
        free
    );
    let pool = d.json(&["pool", "show"]);
    assert_eq!(pool["problems"], serde_json::json!([]), "{pool}");
    // The source is untouched and can still be copied.
    d.ok(&[
        "copy",
        "create",
        "src",
        "c",
        "--mode",
        "row",
        "--meta",
        "changed-pointer",
    ]);
    qemu_io(&d.export("c"), &["read -P 0x11 0 24M"]);
    qemu_io(&d.export("src"), &["read -P 0x11 0 24M"]);
}
