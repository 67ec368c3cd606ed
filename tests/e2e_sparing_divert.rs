//! End to end: sparing with write diversion (seed 002, the second and
//! third control units): while the copy runs the group's host writes go
//! to a work volume (T4) or secondary volumes (T2) and come back after;
//! a full work volume, the failing disk dying, a second failure, two
//! groups sharing one work volume, kill -9 during the copy and during the
//! write-back. The real daemon with fault-injecting disks, the real CLI,
//! qemu-io as the client.

mod harness;
mod sparing_util;

use harness::*;
use serde_json::Value;
use sparing_util::*;

/// What `v` holds after 0x77 over 1M..3M and 0x78 over its first 4 KiB.
const CHECK_4K: [&str; 4] = [
    "read -P 0x78 0 4k",
    "read -P 0x5a 4k 1020k",
    "read -P 0x77 1M 2M",
    "read -P 0x5a 3M 13M",
];

/// Checks `v` (`CHECK_4K`) before and after a kill -9, resumes the
/// sparing copy `job` and waits for the write-back to end; returns `v`'s
/// URL on the new daemon.
fn survive_kill9_then_finish(d: &mut Daemon, url: &str, job: &str) -> String {
    let out = qemu_io(url, &CHECK_4K);
    assert!(!out.contains("failed"), "{out}");
    d.kill9();
    d.respawn();
    let url = d.export("v");
    let out = qemu_io(&url, &CHECK_4K);
    assert!(!out.contains("failed"), "after kill -9: {out}");
    finish(d, job);
    url
}

fn writes(d: &Daemon, disk: &str) -> u64 {
    d.json(&["disk", "show", disk])["counters"]["writes"]
        .as_u64()
        .unwrap()
}

/// Write diversion to a work volume (seed 002, second embodiment, T4):
/// while the sparing copy runs, no host write reaches the group's disks;
/// the diverted data reads back, survives kill -9, and is written back to
/// the group when the spare has taken the slot; T4 returns to idle.
#[test]
fn a_work_volume_takes_the_groups_writes_during_the_copy_and_gives_them_back() {
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &["--fault-injection"]);
    raid5_with_spare(&d);
    d.ok(&["volume", "create", "wv", "--group", "g0", "--size", "8M"]);
    let t4 = d.json(&["sparing", "work-volume", "add", "wv"]);
    assert_eq!(t4[0]["volume"], "wv", "{t4}");
    assert_eq!(t4[0]["terminal"], Value::Null, "{t4}");
    let wv = d.export("wv");
    let (ok, out) = run("qemu-io", &["-f", "raw", "-c", "read 0 4k", &wv]);
    assert!(!ok && out.contains("work volume"), "{out}");
    let info = d.json(&["sparing", "start", "a3"]);
    let job = info["job"].as_u64().unwrap().to_string();
    d.ok(&["job", "pause", &job]);
    poll("the copy paused", 30, || {
        d.json(&["job", "show", &job])["state"] == "paused"
    });
    let s = status(&d);
    assert_eq!(
        s["sparings"][0]["diversion"], "work volume wv (diverting)",
        "{s}"
    );
    let before: Vec<u64> = ["a1", "a2", "a3"].iter().map(|x| writes(&d, x)).collect();
    let url = d.export("v");
    let out = qemu_io(
        &url,
        &["write -P 0x77 1M 2M", "write -P 0x78 0 4k", "flush"],
    );
    assert!(!out.contains("failed"), "{out}");
    let after: Vec<u64> = ["a1", "a2", "a3"].iter().map(|x| writes(&d, x)).collect();
    assert_eq!(after, before, "no host write reached the group's disks");
    let t4 = &status(&d)["work_volumes"][0];
    assert_eq!(t4["primaries"], serde_json::json!(["v"]), "{t4}");
    assert_eq!(
        t4["slots_used"], 513,
        "2 MiB and 4 KiB in 4 KiB slots: {t4}"
    );
    assert_eq!(t4["terminal"], 513, "{t4}");
    // Nothing may change the diverted volumes' stacks meanwhile.
    d.ok(&["volume", "create", "v2", "--group", "g0", "--size", "16M"]);
    for (args, want) in [
        (
            vec!["volume", "create", "x", "--group", "r5", "--size", "4M"],
            "being spared",
        ),
        (vec!["volume", "delete", "v"], "diverted"),
        (vec!["volume", "delete", "wv"], "work volume"),
        (vec!["pair", "create", "v", "v2"], "diverted"),
        (vec!["copy", "create", "v", "c1"], "diverted"),
    ] {
        let err = d.fails(&args);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let url = survive_kill9_then_finish(&mut d, &url, &job);
    // The write-back ran as a job, with its progress: every unit.
    let jobs = d.json(&["job", "list"]);
    let wb = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["kind"] == "write-back")
        .unwrap_or_else(|| panic!("no write-back job: {jobs}"));
    assert_eq!(wb["state"], "done", "{wb}");
    assert_eq!(
        (wb["done"].as_u64(), wb["total"].as_u64()),
        (Some(513), Some(513)),
        "{wb}"
    );
    let s = status(&d);
    let t4 = &s["work_volumes"][0];
    assert_eq!(t4["primaries"], serde_json::json!([]), "idle again: {s}");
    assert_eq!(t4["terminal"], Value::Null, "{s}");
    assert_eq!(members(&d, "r5"), ["a1", "a2", "sp"]);
    assert!(writes(&d, "a1") > 0, "written back");
    let out = qemu_io(&url, &CHECK_4K);
    assert!(!out.contains("failed"), "after the write-back: {out}");
    d.ok(&["sparing", "work-volume", "remove", "wv"]);
    let out = qemu_io(&d.export("wv"), &["read 0 4k"]);
    assert!(!out.contains("failed"), "an export again: {out}");
}

/// The group of `raid5_with_spare`, a work volume `wv` of `size` on `g0`
/// and the sparing copy of `a3` started and paused: the group's writes
/// are diverted. Returns the copy's job.
fn diverting(d: &Daemon, size: &str) -> String {
    raid5_with_spare(d);
    d.ok(&["volume", "create", "wv", "--group", "g0", "--size", size]);
    d.ok(&["sparing", "work-volume", "add", "wv"]);
    let info = d.json(&["sparing", "start", "a3"]);
    let job = info["job"].as_u64().unwrap().to_string();
    d.ok(&["job", "pause", &job]);
    poll("the copy paused", 30, || {
        d.json(&["job", "show", &job])["state"] == "paused"
    });
    assert_eq!(
        status(d)["sparings"][0]["diversion"],
        "work volume wv (diverting)"
    );
    job
}

/// Waits for an alarm containing `what`; returns it.
fn alarm(d: &Daemon, what: &str) -> String {
    let mut found = String::new();
    poll(what, 30, || {
        let s = status(d);
        let hit = s["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|a| a.as_str().filter(|a| a.contains(what)).map(str::to_string));
        found = hit.unwrap_or_default();
        !found.is_empty()
    });
    found
}

/// Writes 0x77 over 1M..3M of `v` (diverted); returns its URL.
fn write_some(d: &Daemon) -> String {
    let url = d.export("v");
    let out = qemu_io(&url, &["write -P 0x77 1M 2M", "flush"]);
    assert!(!out.contains("failed"), "{out}");
    url
}

const CHECK: [&str; 3] = [
    "read -P 0x5a 0 1M",
    "read -P 0x77 1M 2M",
    "read -P 0x5a 3M 13M",
];

/// A work volume too small for what the hosts write: the units it holds
/// stay diverted, the rest reach the group again, an alarm says so, and
/// every byte is right after the write-back.
#[test]
fn a_full_work_volume_raises_an_alarm_and_loses_nothing() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &["--fault-injection"]);
    let job = diverting(&d, "1M");
    let before: u64 = ["a1", "a2", "a3"].iter().map(|x| writes(&d, x)).sum();
    let url = d.export("v");
    let out = qemu_io(&url, &["write -P 0x77 1M 2M", "flush"]);
    assert!(!out.contains("failed"), "{out}");
    let after: u64 = ["a1", "a2", "a3"].iter().map(|x| writes(&d, x)).sum();
    assert!(after > before, "the overflow reached the group");
    let a = alarm(&d, "is full");
    assert!(
        a.contains("work volume wv") && a.contains("256 units"),
        "{a}"
    );
    let r = &status(&d)["sparings"][0];
    assert_eq!(
        (r["diverted"].as_u64(), r["overflowed"].as_u64()),
        (Some(256), Some(256)),
        "{r}"
    );
    let text = d.ok(&["sparing", "status"]);
    assert!(
        text.contains("256 to the group (full)") && text.contains("ALARM: work volume wv is full"),
        "{text}"
    );
    let out = qemu_io(&url, &CHECK);
    assert!(!out.contains("failed"), "{out}");
    finish(&d, &job);
    let s = status(&d);
    assert_eq!(s["alarms"], serde_json::json!([]), "cleared: {s}");
    let out = qemu_io(&url, &CHECK);
    assert!(!out.contains("failed"), "after the write-back: {out}");
}

/// The failing disk dies part way through a diverted sparing copy: the
/// copy finishes from the other members, the spare takes the slot and the
/// diverted writes are written back.
#[test]
fn the_failing_disk_dying_during_a_diverted_copy_is_finished_from_redundancy() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &["--fault-injection"]);
    let job = diverting(&d, "8M");
    let url = write_some(&d);
    d.ok(&["disk", "inject", "a3", "--vanish"]);
    finish(&d, &job);
    assert_eq!(members(&d, "r5"), ["a1", "a2", "sp"]);
    let a3 = disk(&d, "a3");
    assert!(
        a3["counters"]["read_errors"].as_u64().unwrap() > 0,
        "the copy met the dead disk: {a3}"
    );
    let out = qemu_io(&url, &CHECK);
    assert!(!out.contains("failed"), "{out}");
}

/// A second member fails while the group is spared with its writes
/// diverted: the double failure is reported, the diverted writes are
/// still read from the work volume, the copy ends from the failing disk
/// and the write-back puts every byte in the (degraded) group.
#[test]
fn a_second_failure_during_a_diverted_copy_is_reported_and_loses_nothing() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &["--fault-injection"]);
    let job = diverting(&d, "8M");
    let url = write_some(&d);
    d.ok(&["disk", "inject", "a1", "--vanish"]);
    // Host reads meet the dead disk: rebuilt from a2 and a3, and the
    // repair's write fails a1.
    let out = qemu_io(&url, &CHECK);
    assert!(!out.contains("failed"), "{out}");
    let a = alarm(&d, "double failure");
    assert!(
        a.contains("group r5") && a.contains("disk a1 (slot 0)") && a.contains("work volume wv"),
        "{a}"
    );
    let out = qemu_io(&url, &CHECK);
    assert!(!out.contains("failed"), "while degraded: {out}");
    finish(&d, &job);
    assert_eq!(members(&d, "r5"), ["a1", "a2", "sp"]);
    let g = d.json(&["group", "show", "r5"]);
    assert_eq!(g["members"][0]["state"], "failed", "{g}");
    assert_eq!(g["members"][2]["state"], "ok", "{g}");
    let s = status(&d);
    assert!(
        !s["alarms"].to_string().contains("double failure"),
        "cleared with the sparing: {s}"
    );
    let out = qemu_io(&url, &CHECK);
    assert!(!out.contains("failed"), "after the write-back: {out}");
}

/// Secondary volumes (seed 002, first embodiment, FIG. 2A -> 2B): the
/// sparing makes one volume per volume of the group in a RAID group that
/// holds none, lists them in T2 as UPDATE DATA BEING BACKED UP with their
/// differential bitmaps, no host write reaches the group meanwhile, and
/// after the write-back they are gone again.
#[test]
fn secondary_volumes_take_the_groups_writes_and_go_away_after_the_write_back() {
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &["--fault-injection"]);
    raid5_with_spare(&d);
    d.ok(&["volume", "create", "v2", "--group", "r5", "--size", "4M"]);
    d.group("bk", "concat", &["b1"], "64M");
    let err = d.fails(&["sparing", "start", "a3", "--backup-storage", "work-volume"]);
    assert!(err.contains("no work volume is on another group"), "{err}");
    assert_eq!(
        status(&d)["sparings"],
        serde_json::json!([]),
        "refused before anything started"
    );
    let info = d.json(&["sparing", "start", "a3", "--backup-storage", "secondary"]);
    assert_eq!(
        info["diversion"], "secondary volumes v.sec, v2.sec (diverting)",
        "{info}"
    );
    let job = info["job"].as_u64().unwrap().to_string();
    d.ok(&["job", "pause", &job]);
    poll("the copy paused", 30, || {
        d.json(&["job", "show", &job])["state"] == "paused"
    });
    let bk = |d: &Daemon| d.json(&["group", "show", "bk"])["volumes"].clone();
    assert_eq!(bk(&d), serde_json::json!(["v.sec", "v2.sec"]), "FIG. 2B");
    let before: Vec<u64> = ["a1", "a2", "a3"].iter().map(|x| writes(&d, x)).collect();
    let url = d.export("v");
    let out = qemu_io(
        &url,
        &["write -P 0x77 1M 2M", "write -P 0x78 0 4k", "flush"],
    );
    assert!(!out.contains("failed"), "{out}");
    let url2 = d.export("v2");
    let out = qemu_io(&url2, &["write -P 0x79 0 64k", "flush"]);
    assert!(!out.contains("failed"), "{out}");
    let after: Vec<u64> = ["a1", "a2", "a3"].iter().map(|x| writes(&d, x)).collect();
    assert_eq!(after, before, "no host write reached the group's disks");
    let t2 = status(&d)["t2"].clone();
    let want = format!("1000{}{}", "1".repeat(8), "0".repeat(52));
    assert_eq!(t2[0]["pvol"], "v", "{t2}");
    assert_eq!(t2[0]["svol"], "v.sec", "{t2}");
    assert_eq!(t2[0]["status"], "UPDATE DATA BEING BACKED UP", "{t2}");
    assert_eq!(
        (t2[0]["tracks_set"].as_u64(), t2[0]["tracks"].as_u64()),
        (Some(33), Some(256)),
        "{t2}"
    );
    assert_eq!(t2[0]["bitmap"], want.as_str(), "{t2}");
    assert_eq!(
        t2[1]["bitmap"],
        format!("1{}", "0".repeat(63)).as_str(),
        "{t2}"
    );
    let text = d.ok(&["sparing", "status"]);
    assert!(
        text.contains("T2  secondary volumes") && text.contains("33 of 256"),
        "{text}"
    );
    let (ok, out) = run(
        "qemu-io",
        &["-f", "raw", "-c", "read 0 4k", &d.export("v.sec")],
    );
    assert!(!ok && out.contains("secondary volume"), "{out}");
    let err = d.fails(&["volume", "delete", "v.sec"]);
    assert!(err.contains("diverted writes"), "{err}");
    let url = survive_kill9_then_finish(&mut d, &url, &job);
    assert_eq!(status(&d)["t2"], serde_json::json!([]));
    assert_eq!(bk(&d), serde_json::json!([]), "FIG. 2A again");
    assert_eq!(members(&d, "r5"), ["a1", "a2", "sp"]);
    let out = qemu_io(&url, &CHECK_4K);
    assert!(!out.contains("failed"), "after the write-back: {out}");
    let out = qemu_io(
        &d.export("v2"),
        &["read -P 0x79 0 64k", "read -P 0 64k 4032k"],
    );
    assert!(!out.contains("failed"), "{out}");
}

/// Two groups spared at once share one work volume (seed 002, FIG. 20A):
/// T4 lists both groups' volumes, the same addresses of the two volumes
/// never mix, and one sparing's write-back leaves the other's diverted
/// data in place.
#[test]
fn two_groups_share_one_work_volume_without_mixing_data() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &["--fault-injection"]);
    raid5_with_spare(&d);
    d.group("m1", "raid1", &["c1", "c2"], "40M");
    d.ok(&["disk", "add", "sp2", "--size", "40M", "--spare"]);
    d.ok(&["volume", "create", "w", "--group", "m1", "--size", "8M"]);
    d.ok(&["volume", "create", "wv", "--group", "g0", "--size", "8M"]);
    d.ok(&["sparing", "work-volume", "add", "wv"]);
    let mut jobs = Vec::new();
    for disk in ["a3", "c2"] {
        let info = d.json(&["sparing", "start", disk, "--backup-storage", "work-volume"]);
        assert_eq!(info["diversion"], "work volume wv (diverting)", "{info}");
        let job = info["job"].as_u64().unwrap().to_string();
        d.ok(&["job", "pause", &job]);
        poll("the copy paused", 30, || {
            d.json(&["job", "show", &job])["state"] == "paused"
        });
        jobs.push(job);
    }
    let url_v = d.export("v");
    let out = qemu_io(
        &url_v,
        &["write -P 0x77 1M 2M", "write -P 0x78 0 4k", "flush"],
    );
    assert!(!out.contains("failed"), "{out}");
    let url_w = d.export("w");
    let out = qemu_io(
        &url_w,
        &["write -P 0x66 0 4k", "write -P 0x67 1M 1M", "flush"],
    );
    assert!(!out.contains("failed"), "{out}");
    let t4 = &status(&d)["work_volumes"][0];
    assert_eq!(t4["primaries"], serde_json::json!(["v", "w"]), "{t4}");
    assert_eq!(t4["sparings"], serde_json::json!(["a3", "c2"]), "{t4}");
    assert_eq!(t4["slots_used"], 513 + 257, "{t4}");
    let check_w = [
        "read -P 0x66 0 4k",
        "read -P 0 4k 1020k",
        "read -P 0x67 1M 1M",
        "read -P 0 2M 6M",
    ];
    for (url, check) in [(&url_v, &CHECK_4K[..]), (&url_w, &check_w[..])] {
        let out = qemu_io(url, check);
        assert!(!out.contains("failed"), "{out}");
    }
    finish(&d, &jobs[0]);
    let t4 = &status(&d)["work_volumes"][0];
    assert_eq!(t4["primaries"], serde_json::json!(["w"]), "{t4}");
    assert_eq!(
        t4["slots_used"], 257,
        "v's slots written back, w's kept: {t4}"
    );
    assert_eq!(t4["terminal"], 770, "the log goes on: {t4}");
    let out = qemu_io(&url_w, &check_w);
    assert!(!out.contains("failed"), "{out}");
    finish(&d, &jobs[1]);
    let t4 = &status(&d)["work_volumes"][0];
    assert_eq!(t4["primaries"], serde_json::json!([]), "idle: {t4}");
    assert_eq!(t4["terminal"], Value::Null, "{t4}");
    assert_eq!(members(&d, "r5"), ["a1", "a2", "sp"]);
    assert_eq!(members(&d, "m1"), ["c1", "sp2"]);
    for (url, check) in [(&url_v, &CHECK_4K[..]), (&url_w, &check_w[..])] {
        let out = qemu_io(url, check);
        assert!(!out.contains("failed"), "after the write-backs: {out}");
    }
}

/// kill -9 in the middle of the write-back (slowed by a disk capped at
/// 100 I/Os a second): after the restart the stopped job says it was
/// superseded, a new one writes back what is left, and every byte is
/// right.
#[test]
fn kill_9_during_the_write_back_starts_it_again_and_loses_nothing() {
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &["--fault-injection"]);
    let job = diverting(&d, "8M");
    let url = write_some(&d);
    d.ok(&["disk", "inject", "a1", "--iops", "100"]);
    d.ok(&["job", "resume", &job]);
    assert_eq!(d.wait_job(job.parse().unwrap())["state"], "done");
    let write_back = |d: &Daemon| {
        let jobs = d.json(&["job", "list"]);
        jobs.as_array()
            .unwrap()
            .iter()
            .filter(|j| j["kind"] == "write-back")
            .cloned()
            .collect::<Vec<_>>()
    };
    poll("the write-back under way", 60, || {
        let running = write_back(&d)
            .first()
            .is_some_and(|j| j["state"] == "running");
        running && status(&d)["sparings"][0]["written_back"].as_u64() > Some(0)
    });
    d.kill9();
    d.respawn();
    let url2 = d.export("v");
    let out = qemu_io(&url2, &CHECK);
    assert!(!out.contains("failed"), "after kill -9: {out}");
    poll("the write-back ends", 60, || {
        status(&d)["sparings"] == serde_json::json!([])
    });
    let jobs = write_back(&d);
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert_eq!(jobs[0]["state"], "cancelled", "{jobs:?}");
    assert!(
        jobs[0]["message"].as_str().unwrap().contains("superseded"),
        "{jobs:?}"
    );
    assert_eq!(jobs[1]["state"], "done", "{jobs:?}");
    assert!(
        jobs[1]["total"].as_u64().unwrap() < 512,
        "only what was left: {jobs:?}"
    );
    let out = qemu_io(&url2, &CHECK);
    assert!(!out.contains("failed"), "after the write-back: {out}");
    drop(url);
}
