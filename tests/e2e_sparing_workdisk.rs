//! End to end: sparing with write diversion to a work disk (seed 002,
//! third embodiment, tables T5-T7 of FIG. 15A-16, shared by two groups as
//! FIG. 20B draws it): the disk-level writes the RAID layer makes for the
//! hosts (data and parity) are appended to the work disk while the copy
//! runs, and written back to the group after. The real daemon with
//! fault-injecting disks, the real CLI, qemu-io as the client.

mod harness;
mod sparing_util;

use harness::*;
use serde_json::{Value, json};
use sparing_util::*;

fn writes(d: &Daemon, disk: &str) -> u64 {
    d.json(&["disk", "show", disk])["counters"]["writes"]
        .as_u64()
        .unwrap()
}

/// Starts the sparing copy of `disk` diverting to a work disk, pauses it
/// and returns its job.
fn spare_paused(d: &Daemon, disk: &str, extra: &[&str]) -> String {
    let mut args = vec!["sparing", "start", disk];
    args.extend_from_slice(extra);
    let info = d.json(&args);
    let job = info["job"].as_u64().unwrap().to_string();
    d.ok(&["job", "pause", &job]);
    poll("the copy paused", 30, || {
        d.json(&["job", "show", &job])["state"] == "paused"
    });
    job
}

fn t5(s: &Value, disk: &str) -> Value {
    s["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["disk"] == disk)
        .map(|r| r["backup"].clone())
        .unwrap_or_else(|| panic!("no disk {disk}: {s}"))
}

const CHECK_4K: [&str; 4] = [
    "read -P 0x78 0 4k",
    "read -P 0x5a 4k 1020k",
    "read -P 0x77 1M 2M",
    "read -P 0x5a 3M 13M",
];

/// A volume with an instant copy (not plain, so no work volume could
/// take it) on a RAID-5 group being spared: by default the work disk
/// takes the group's disk writes, data and parity; no host write reaches
/// the group's disks; T5/T6/T7 show it; kill -9 loses nothing; the
/// write-back leaves every table idle and the data right.
#[test]
fn a_work_disk_takes_the_groups_disk_writes_and_gives_them_back() {
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &["--fault-injection"]);
    raid5_with_spare(&d);
    d.ok(&["copy", "create", "v", "c1"]);
    d.ok(&["disk", "add", "wd", "--size", "16M"]);
    let info = d.json(&["disk", "show", "wd"]);
    let path = std::path::PathBuf::from(info["path"].as_str().unwrap());
    let allocated = || {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&path).unwrap().blocks() * 512
    };
    assert!(allocated() < 8 << 20, "a new disk file is sparse");
    let t6 = d.json(&["sparing", "work-disk", "add", "wd"]);
    // Its space is allocated at once (appends into holes would be slow).
    let data = info["data_size"].as_u64().unwrap();
    assert!(allocated() >= data, "{} of {data}", allocated());
    assert_eq!(t6[0]["disk"], "wd", "{t6}");
    assert_eq!(t6[0]["status"], "UNUSED", "{t6}");
    assert_eq!(t6[0]["terminal"], Value::Null, "{t6}");
    for (args, want) in [
        (
            vec!["sparing", "work-disk", "add", "wd"],
            "work disk already",
        ),
        (vec!["sparing", "work-disk", "add", "a1"], "in group r5"),
        (vec!["sparing", "work-disk", "add", "sp"], "is a spare"),
        (vec!["disk", "remove", "wd"], "work disk of sparing"),
        (
            vec!["group", "create", "gx", "--raid", "concat", "--disks", "wd"],
            "work disk of sparing",
        ),
    ] {
        let err = d.fails(&args);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let job = spare_paused(&d, "a3", &[]);
    let s = status(&d);
    assert_eq!(
        s["sparings"][0]["diversion"], "work disk wd (diverting)",
        "the default when the volumes are not plain: {s}"
    );
    // One sparing a group at a time (a second one's nodes would replace
    // the first one's).
    d.ok(&["disk", "add", "sp2", "--size", "40M", "--spare"]);
    let err = d.fails(&["sparing", "start", "a1", "--spare", "sp2"]);
    assert!(err.contains("one sparing a group at a time"), "{err}");
    for disk in ["a1", "a2", "a3"] {
        assert_eq!(t5(&s, disk), "RENEWED DATA BEING BACKED UP", "{s}");
    }
    assert_eq!(t5(&s, "wd"), Value::Null, "{s}");
    assert_eq!(t5(&s, "sp"), Value::Null, "{s}");
    let quiet = ["a1", "a2", "a3", "sp"];
    let before: Vec<u64> = quiet.iter().map(|x| writes(&d, x)).collect();
    let url = d.export("v");
    let out = qemu_io(
        &url,
        &["write -P 0x77 1M 2M", "write -P 0x78 0 4k", "flush"],
    );
    assert!(!out.contains("failed"), "{out}");
    let after: Vec<u64> = quiet.iter().map(|x| writes(&d, x)).collect();
    assert_eq!(after, before, "no host write reached the group's disks");
    let s = status(&d);
    let t6 = &s["work_disks"][0];
    assert_eq!(t6["status"], "IN USE", "{s}");
    assert_eq!(t6["main_disks"], json!(["a1", "a2", "a3"]), "{s}");
    // 2 MiB of full stripes: 1 MiB on each data disk and 1 MiB of parity;
    // the 4 KiB write: its data and its parity (4 KiB units); and what
    // the copy's store writes of its own.
    let units = t6["units_used"].as_u64().unwrap();
    assert!((770..800).contains(&units), "{s}");
    assert_eq!(t6["terminal"], units, "{s}");
    assert_eq!(s["t7_rows"], units, "{s}");
    let t7 = s["t7"].as_array().unwrap();
    assert!(t7.iter().all(|r| r["work_disk"] == "wd"), "{s}");
    assert_eq!(t7[0]["work_address"], 1, "{s}");
    let text = d.ok(&["sparing", "status"]);
    for want in [
        "T5 STATUS",
        "T6  work disks",
        "T7  work disk mapping",
        "IN USE",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    let out = qemu_io(&url, &CHECK_4K);
    assert!(!out.contains("failed"), "{out}");
    d.kill9();
    d.respawn();
    let url = d.export("v");
    let out = qemu_io(&url, &CHECK_4K);
    assert!(!out.contains("failed"), "after kill -9: {out}");
    // The resync of what the write intent had marked goes through the
    // diversion too (parity recomputed from the diverted data).
    let again = status(&d)["work_disks"][0]["units_used"].as_u64().unwrap();
    assert!(
        again >= units,
        "{again} < {units}: rows lost at the restart"
    );
    let out = qemu_io(&d.export("c1"), &["read -P 0x5a 0 16M"]);
    assert!(!out.contains("failed"), "the copy keeps its image: {out}");
    finish(&d, &job);
    let s = status(&d);
    let t6 = &s["work_disks"][0];
    assert_eq!(t6["status"], "UNUSED", "idle again: {s}");
    assert_eq!(t6["main_disks"], json!([]), "{s}");
    assert_eq!(t6["terminal"], Value::Null, "{s}");
    assert_eq!(s["t7_rows"], 0, "{s}");
    assert_eq!(t5(&s, "a1"), Value::Null, "{s}");
    assert_eq!(members(&d, "r5"), ["a1", "a2", "sp"]);
    assert!(writes(&d, "a1") > before[0], "written back");
    let out = qemu_io(&url, &CHECK_4K);
    assert!(!out.contains("failed"), "after the write-back: {out}");
    // The group's redundancy is whole: without a1, the data is rebuilt
    // from a2 and the spare.
    d.ok(&["disk", "inject", "a1", "--vanish"]);
    let out = qemu_io(&url, &CHECK_4K);
    assert!(!out.contains("failed"), "rebuilt from parity: {out}");
    d.ok(&["sparing", "work-disk", "remove", "wd"]);
    assert_eq!(status(&d)["work_disks"], json!([]));
}

/// FIG. 16: the disk-level writes (1,1), (1,2), (2,5), (2,2), (2,6),
/// (3,3) on a group of disks 1-4 (e1-e4) (RAID-0, one 4 KiB strip per disk a row,
/// so each host write is one disk-level write) give exactly the seed's
/// T7 rows, terminal address 6; T6 shows the main disks 1-4.
#[test]
fn fig_16_write_sequence_gives_its_exact_t7_rows_and_terminal_address_6() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &["--fault-injection"]);
    for disk in ["e1", "e2", "e3", "e4"] {
        d.ok(&["disk", "add", disk, "--size", "8M"]);
    }
    d.ok(&[
        "group",
        "create",
        "g5",
        "--raid",
        "raid0",
        "--disks",
        "e1,e2,e3,e4",
        "--stripe-size",
        "4K",
    ]);
    d.ok(&["disk", "add", "sp", "--size", "8M", "--spare"]);
    d.ok(&["disk", "add", "w60", "--size", "4M"]);
    d.ok(&["sparing", "work-disk", "add", "w60"]);
    d.ok(&["volume", "create", "v", "--group", "g5", "--size", "4M"]);
    let job = spare_paused(&d, "e4", &["--backup-storage", "work-disk"]);
    // (disk k, address a) is strip 4a + k - 1 of the volume.
    let seq = [(1u64, 1u64), (1, 2), (2, 5), (2, 2), (2, 6), (3, 3)];
    let url = d.export("v");
    let cmds: Vec<String> = seq
        .iter()
        .enumerate()
        .map(|(i, &(k, a))| format!("write -P {} {}k 4k", 0x31 + i, (4 * a + k - 1) * 4))
        .chain(["flush".to_string()])
        .collect();
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let out = qemu_io(&url, &cmds);
    assert!(!out.contains("failed"), "{out}");
    let s = status(&d);
    let want: Vec<Value> = seq
        .iter()
        .enumerate()
        .map(|(i, &(k, a))| {
            json!({"main_disk": format!("e{k}"), "main_address": a,
                   "work_disk": "w60", "work_address": i + 1})
        })
        .collect();
    assert_eq!(s["t7"], json!(want), "T7 of FIG. 16: {s}");
    let t6 = &s["work_disks"][0];
    assert_eq!(t6["terminal"], 6, "{s}");
    assert_eq!(t6["status"], "IN USE", "{s}");
    assert_eq!(t6["main_disks"], json!(["e1", "e2", "e3", "e4"]), "{s}");
    // Written again: the row's slot is overwritten, no row is added.
    let out = qemu_io(&url, &["write -P 0x40 16k 4k", "flush"]);
    assert!(!out.contains("failed"), "{out}");
    assert_eq!(status(&d)["work_disks"][0]["terminal"], 6);
    finish(&d, &job);
    let reads: Vec<String> = seq
        .iter()
        .enumerate()
        .map(|(i, &(k, a))| {
            let p = if i == 0 { 0x40 } else { 0x31 + i };
            format!("read -P {p} {}k 4k", (4 * a + k - 1) * 4)
        })
        .chain(["read -P 0 0 16k".to_string()])
        .collect();
    let reads: Vec<&str> = reads.iter().map(String::as_str).collect();
    let out = qemu_io(&url, &reads);
    assert!(!out.contains("failed"), "after the write-back: {out}");
    assert_eq!(members(&d, "g5"), ["e1", "e2", "e3", "sp"]);
}

/// FIG. 20B: two RAID-5 groups spared at once share one work disk; T6
/// lists both groups' disks as its main disks; the same addresses
/// written on both groups' volumes never mix; one write-back leaves the
/// other's rows in place.
#[test]
fn two_groups_share_one_work_disk_without_mixing_data() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &["--fault-injection"]);
    raid5_with_spare(&d);
    d.group("r6", "raid5", &["b1", "b2", "b3"], "40M");
    d.ok(&["disk", "add", "sq", "--size", "40M", "--spare"]);
    d.ok(&["volume", "create", "w", "--group", "r6", "--size", "16M"]);
    d.ok(&["disk", "add", "wd", "--size", "32M"]);
    d.ok(&["sparing", "work-disk", "add", "wd"]);
    let ja = spare_paused(
        &d,
        "a3",
        &["--spare", "sp", "--backup-storage", "work-disk"],
    );
    let jb = spare_paused(
        &d,
        "b3",
        &["--spare", "sq", "--backup-storage", "work-disk"],
    );
    let (v, w) = (d.export("v"), d.export("w"));
    let out = qemu_io(&v, &["write -P 0x61 0 1M", "flush"]);
    assert!(!out.contains("failed"), "{out}");
    let out = qemu_io(&w, &["write -P 0x62 0 1M", "write -P 0x63 4M 64k", "flush"]);
    assert!(!out.contains("failed"), "{out}");
    let s = status(&d);
    let t6 = &s["work_disks"][0];
    assert_eq!(
        t6["main_disks"],
        json!(["a1", "a2", "a3", "b1", "b2", "b3"]),
        "{s}"
    );
    let sparings = t6["sparings"].as_array().unwrap();
    assert_eq!(sparings.len(), 2, "{s}");
    // 1 MiB of full stripes on each: 1.5 MiB a group; 64 KiB: its strip
    // and its parity.
    let (a_units, b_units) = (384, 384 + 32);
    assert_eq!(t6["units_used"], a_units + b_units, "{s}");
    for (url, want) in [
        (&v, vec!["read -P 0x61 0 1M", "read -P 0x5a 1M 15M"]),
        (
            &w,
            vec![
                "read -P 0x62 0 1M",
                "read -P 0 1M 3M",
                "read -P 0x63 4M 64k",
            ],
        ),
    ] {
        let out = qemu_io(url, &want);
        assert!(!out.contains("failed"), "{out}");
    }
    finish(&d, &ja);
    let s = status(&d);
    let t6 = &s["work_disks"][0];
    assert_eq!(t6["main_disks"], json!(["b1", "b2", "b3"]), "{s}");
    assert_eq!(t6["units_used"], b_units, "the other's rows stay: {s}");
    assert!(
        s["t7"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["main_disk"].as_str().unwrap().starts_with('b')),
        "{s}"
    );
    finish(&d, &jb);
    assert_eq!(status(&d)["work_disks"][0]["status"], "UNUSED");
    let out = qemu_io(&v, &["read -P 0x61 0 1M", "read -P 0x5a 1M 15M"]);
    assert!(!out.contains("failed"), "{out}");
    let out = qemu_io(
        &w,
        &[
            "read -P 0x62 0 1M",
            "read -P 0 1M 3M",
            "read -P 0x63 4M 64k",
        ],
    );
    assert!(!out.contains("failed"), "{out}");
    assert_eq!(members(&d, "r5"), ["a1", "a2", "sp"]);
    assert_eq!(members(&d, "r6"), ["b1", "b2", "sq"]);
}

/// The seed's existing DUPLEX pairs (FIG. 3A, 4->7 and 5->8) are left
/// alone by the sparing: a pair whose P-VOL is on the group being spared
/// stays PAIR with nothing to resync, its S-VOL (on another group)
/// receives every write while the group's own disk writes go to the work
/// disk, and both images are the same before and after the write-back.
#[test]
fn a_duplex_pair_on_the_spared_group_is_untouched() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &["--fault-injection"]);
    raid5_with_spare(&d);
    d.ok(&["volume", "create", "vs", "--group", "g0", "--size", "16M"]);
    let created = d.json(&["pair", "create", "v", "vs", "--wait"]);
    assert_eq!(created["status"], "pair", "{created}");
    d.ok(&["disk", "add", "wd", "--size", "16M"]);
    d.ok(&["sparing", "work-disk", "add", "wd"]);
    let job = spare_paused(&d, "a3", &[]);
    assert_eq!(
        status(&d)["sparings"][0]["diversion"],
        "work disk wd (diverting)"
    );
    let quiet = ["a1", "a2", "a3"];
    let before: Vec<u64> = quiet.iter().map(|x| writes(&d, x)).collect();
    let (v, vs) = (d.export("v"), d.export("vs"));
    let out = qemu_io(
        &v,
        &["write -P 0x47 512k 1M", "write -P 0x48 9M 8k", "flush"],
    );
    assert!(!out.contains("failed"), "{out}");
    let after: Vec<u64> = quiet.iter().map(|x| writes(&d, x)).collect();
    assert_eq!(after, before, "no host write reached the group's disks");
    let pair = |when: &str| {
        let list = d.json(&["pair", "list"]);
        let row = list
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["pvol"] == "v")
            .cloned()
            .unwrap_or_else(|| panic!("{when}: no pair of v: {list}"));
        assert_eq!(row["status"], "pair", "{when}: {row}");
        assert_eq!(row["tracks_set"], 0, "{when}: {row}");
    };
    pair("diverting");
    let (eq, out) = same_image(&v, &vs);
    assert!(eq, "the S-VOL got every write: {out}");
    finish(&d, &job);
    pair("after the write-back");
    let (eq, out) = same_image(&v, &vs);
    assert!(eq, "after the write-back: {out}");
    let out = qemu_io(
        &v,
        &[
            "read -P 0x5a 0 512k",
            "read -P 0x47 512k 1M",
            "read -P 0x48 9M 8k",
        ],
    );
    assert!(!out.contains("failed"), "{out}");
}

/// kill -9 in the middle of a work disk's write-back (slowed by a capped
/// disk), and host writes over diverted blocks while it goes on: after
/// the restart the write-back starts again over what is left, and the
/// host's newer data is never overwritten by the older diverted data.
#[test]
fn kill_9_during_a_work_disk_write_back_loses_nothing() {
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &["--fault-injection"]);
    raid5_with_spare(&d);
    d.ok(&["disk", "add", "wd", "--size", "16M"]);
    d.ok(&["sparing", "work-disk", "add", "wd"]);
    let job = spare_paused(&d, "a3", &["--backup-storage", "work-disk"]);
    let url = d.export("v");
    let out = qemu_io(&url, &["write -P 0x77 1M 2M", "flush"]);
    assert!(!out.contains("failed"), "{out}");
    d.ok(&["disk", "inject", "a1", "--iops", "100"]);
    d.ok(&["job", "resume", &job]);
    assert_eq!(d.wait_job(job.parse().unwrap())["state"], "done");
    poll("the write-back under way", 60, || {
        let s = status(&d);
        s["sparings"][0]["written_back"].as_u64() > Some(0)
            && s["sparings"][0]["diversion"]
                .as_str()
                .is_some_and(|x| x.contains("writing back"))
    });
    d.kill9();
    d.respawn();
    let url = d.export("v");
    let check = [
        "read -P 0x5a 0 1M",
        "read -P 0x77 1M 2M",
        "read -P 0x5a 3M 13M",
    ];
    let out = qemu_io(&url, &check);
    assert!(!out.contains("failed"), "after kill -9: {out}");
    // Newer host data over blocks still held by the work disk.
    let out = qemu_io(&url, &["write -P 0x99 2M 256k", "flush"]);
    assert!(!out.contains("failed"), "{out}");
    d.ok(&["disk", "inject", "a1", "--clear"]);
    poll("the write-back ends", 60, || {
        status(&d)["sparings"] == json!([])
    });
    let s = status(&d);
    assert_eq!(s["work_disks"][0]["status"], "UNUSED", "{s}");
    assert_eq!(s["t7_rows"], 0, "{s}");
    let out = qemu_io(
        &url,
        &[
            "read -P 0x5a 0 1M",
            "read -P 0x77 1M 1M",
            "read -P 0x99 2M 256k",
            "read -P 0x77 2304k 768k",
            "read -P 0x5a 3M 13M",
        ],
    );
    assert!(!out.contains("failed"), "after the write-back: {out}");
    assert_eq!(members(&d, "r5"), ["a1", "a2", "sp"]);
}

/// A concat group being spared cannot grow meanwhile: a grown group is a
/// new RAID node, which would lose the diversion under it.
#[test]
fn a_concat_group_being_spared_is_not_extended() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &["--fault-injection"]);
    d.group("gc", "concat", &["c1"], "16M");
    d.ok(&["disk", "add", "c2", "--size", "16M"]);
    d.ok(&["disk", "add", "sp", "--size", "16M", "--spare"]);
    d.ok(&["disk", "add", "wd", "--size", "8M"]);
    d.ok(&["sparing", "work-disk", "add", "wd"]);
    d.ok(&["volume", "create", "v", "--group", "gc", "--size", "8M"]);
    let job = spare_paused(&d, "c1", &["--backup-storage", "work-disk"]);
    let url = d.export("v");
    let out = qemu_io(&url, &["write -P 0x21 0 64k", "flush"]);
    assert!(!out.contains("failed"), "{out}");
    // The write-back, slowed (it reads the work disk): no job of the
    // group's runs then.
    d.ok(&["disk", "inject", "wd", "--iops", "4"]);
    d.ok(&["job", "resume", &job]);
    assert_eq!(d.wait_job(job.parse().unwrap())["state"], "done");
    poll("the write-back", 30, || {
        status(&d)["sparings"][0]["diversion"]
            .as_str()
            .is_some_and(|x| x.contains("writing back"))
    });
    let err = d.fails(&["group", "extend", "gc", "--disks", "c2"]);
    assert!(err.contains("being spared"), "{err}");
    d.ok(&["disk", "inject", "wd", "--clear"]);
    poll("the write-back ends", 60, || {
        status(&d)["sparings"] == json!([])
    });
    d.ok(&["group", "extend", "gc", "--disks", "c2"]);
    let out = qemu_io(&url, &["read -P 0x21 0 64k", "read -P 0 64k 1M"]);
    assert!(!out.contains("failed"), "{out}");
}

/// The work disk is missing when the daemon starts (its file moved away
/// while the daemon was down): the pool opens, says why the spared
/// group's volumes are not served, and refuses their reads (they would
/// be older than what the hosts wrote); the sparing is left alone — not
/// ended, its entries kept. With the file back, the next start serves
/// the diverted data and the write-back finishes.
#[test]
fn a_missing_work_disk_at_start_keeps_the_diverted_writes() {
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &["--fault-injection"]);
    raid5_with_spare(&d);
    d.group("other", "raid1", &["b1", "b2"], "8M");
    d.ok(&["volume", "create", "w", "--group", "other", "--size", "4M"]);
    d.ok(&["disk", "add", "wd", "--size", "16M"]);
    let path = std::path::PathBuf::from(
        d.json(&["disk", "show", "wd"])["path"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    d.ok(&["sparing", "work-disk", "add", "wd"]);
    let job = spare_paused(&d, "a3", &["--backup-storage", "work-disk"]);
    let url = d.export("v");
    let out = qemu_io(&url, &["write -P 0x77 1M 2M", "flush"]);
    assert!(!out.contains("failed"), "{out}");
    let held = status(&d)["t7_rows"].as_u64().unwrap();
    assert!(held > 0, "{}", status(&d));
    d.kill9();
    let moved = path.with_extension("away");
    std::fs::rename(&path, &moved).unwrap();
    d.respawn();
    let pool = d.json(&["pool", "show"]);
    let problems = pool["problems"].to_string();
    assert!(
        problems.contains("group r5") && problems.contains("work disk wd"),
        "{pool}"
    );
    let url = d.export("v");
    let (ok, out) = run("qemu-io", &["-f", "raw", "-c", "read 1M 4k", &url]);
    assert!(
        !ok && out.contains("read failed"),
        "v must not be served: {out}"
    );
    // The rest of the pool serves.
    let out = qemu_io(
        &d.export("w"),
        &["write -P 0x31 0 64k", "read -P 0x31 0 64k"],
    );
    assert!(!out.contains("failed"), "{out}");
    // The monitor leaves the sparing alone: not ended, nothing dropped.
    d.ok(&["job", "resume", &job]);
    assert_eq!(d.wait_job(job.parse().unwrap())["state"], "done");
    passes(&d, 2);
    let s = status(&d);
    assert_eq!(s["sparings"].as_array().map(Vec::len), Some(1), "{s}");
    d.kill9();
    std::fs::rename(&moved, &path).unwrap();
    d.respawn();
    let url = d.export("v");
    let out = qemu_io(
        &url,
        &[
            "read -P 0x5a 0 1M",
            "read -P 0x77 1M 2M",
            "read -P 0x5a 3M 13M",
        ],
    );
    assert!(!out.contains("failed"), "with the work disk back: {out}");
    poll("the write-back ends", 60, || {
        status(&d)["sparings"] == json!([])
    });
    let out = qemu_io(
        &url,
        &[
            "read -P 0x5a 0 1M",
            "read -P 0x77 1M 2M",
            "read -P 0x5a 3M 13M",
        ],
    );
    assert!(!out.contains("failed"), "after the write-back: {out}");
    assert_eq!(members(&d, "r5"), ["a1", "a2", "sp"]);
}
