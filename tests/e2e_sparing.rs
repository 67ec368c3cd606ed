//! End to end: failure-anticipating sparing (seed 002, the first control
//! unit). A member disk whose read errors pass the policy is copied to a
//! spare while it still serves, then the spare takes its slot and the disk
//! is marked failed; below the threshold nothing happens; a drill by hand;
//! no spare raises an alarm; kill -9 during the copy resumes it. The real
//! daemon with fault-injecting disks, the real CLI, qemu-io as the client.
//! Write diversion: e2e_sparing_divert.rs.

mod harness;
mod sparing_util;

use harness::*;
use sparing_util::*;

#[test]
fn read_errors_past_the_threshold_spare_the_disk_and_lose_nothing() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &["--fault-injection"]);
    let url = raid5_with_spare(&d);
    d.ok(&[
        "sparing",
        "policy",
        "--threshold",
        "100000",
        "--window",
        "10m",
    ]);
    d.ok(&["disk", "inject", "a2", "--read-error-at", "0,40M"]);

    // Reads of the volume hit a2's errors; RAID answers them from parity.
    let out = qemu_io(&url, &["read -P 0x5a 0 16M"]);
    assert!(!out.contains("failed"), "the host sees no error: {out}");
    let counted = errors(&disk(&d, "a2"));
    assert!(
        counted > 0,
        "a2's read errors are counted: {}",
        disk(&d, "a2")
    );
    poll("the monitor counts a2's errors", 30, || {
        disk(&d, "a2")["recent_errors"].as_u64() == Some(counted)
    });
    // Below the threshold: nothing happens, pass after pass.
    passes(&d, 2);
    let s = status(&d);
    assert_eq!(s["sparings"], serde_json::json!([]), "{s}");
    assert_eq!(members(&d, "r5"), ["a1", "a2", "a3"]);
    let jobs = d.json(&["job", "list"]);
    assert!(
        !jobs
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["kind"] == "replace"),
        "no copy below the threshold: {jobs}"
    );
    let row = s["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["disk"] == "a2")
        .cloned()
        .unwrap();
    assert_eq!(row["recent_errors"].as_u64(), Some(counted), "{row}");
    assert!(row["sparing"].is_null(), "{row}");
    // `disk list` ends a2's row with its errors: in total, in the window.
    let list = d.ok(&["disk", "list"]);
    let a2: Vec<&str> = list
        .lines()
        .find(|l| l.starts_with("│ a2 "))
        .unwrap_or_else(|| panic!("{list}"))
        .split(['│', '┆'])
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    let n = counted.to_string();
    assert_eq!(a2[a2.len() - 2..], [n.as_str(), n.as_str()], "{list}");

    // The threshold at the count: the next pass starts the sparing copy.
    d.ok(&["sparing", "policy", "--threshold", &counted.to_string()]);
    let (r, job) = sparing_job(&d);
    assert_eq!(r["disk"], "a2");
    assert_eq!(r["spare"], "sp");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("{counted} errors")),
        "{r}"
    );
    let done = d.wait_job(job);
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["kind"], "replace", "{done}");
    poll("the sparing settles", 30, || {
        status(&d)["sparings"] == serde_json::json!([])
    });

    // The spare holds a2's slot; a2 is failed and says why.
    assert_eq!(members(&d, "r5"), ["a1", "sp", "a3"]);
    let a2 = disk(&d, "a2");
    assert_eq!(a2["status"], "failed", "{a2}");
    let why = a2["problem"].as_str().unwrap_or_default();
    assert!(
        why.contains("failure anticipated") && why.contains("spare sp"),
        "{a2}"
    );
    let g = d.json(&["group", "show", "r5"]);
    assert_eq!(g["health"], "optimal", "{g}");
    // Every byte reads back, with a2 out of the group.
    let out = qemu_io(&url, &["read -P 0x5a 0 16M"]);
    assert!(
        !out.contains("failed") && out.contains("read 16777216/16777216"),
        "{out}"
    );
    // And the human view shows T1 with the spare in place.
    let text = d.ok(&["sparing", "status"]);
    assert!(
        text.contains("T1  RAID groups") && text.contains("a1, sp, a3"),
        "{text}"
    );
    assert!(text.contains("No sparing under way."), "{text}");
}

#[test]
fn a_drill_by_hand_and_an_alarm_without_a_spare() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &["--fault-injection"]);
    d.group("m", "raid1", &["b1", "b2"], "40M");
    d.ok(&["volume", "create", "w", "--group", "m", "--size", "16M"]);
    let url = d.export("w");
    qemu_io(&url, &["write -P 0x3c 0 16M", "flush"]);
    d.ok(&["disk", "add", "free1", "--size", "40M"]);

    // Refusals name what to do.
    let e = d.fails(&["sparing", "start", "b1"]);
    assert!(e.contains("no spare disk") && e.contains("--spare"), "{e}");
    let e = d.fails(&["sparing", "start", "free1"]);
    assert!(e.contains("free1 is in no group"), "{e}");
    let e = d.fails(&["sparing", "start", "nosuch"]);
    assert!(e.contains("unknown disk"), "{e}");
    let e = d.fails(&["sparing", "policy", "--threshold", "0"]);
    assert!(e.contains("at least 1"), "{e}");
    let e = d.fails(&["sparing", "policy", "--window", "40d"]);
    assert!(e.contains("30 days"), "{e}");
    let e = d.fails(&["sparing", "policy", "--window", "5 parsecs"]);
    assert!(
        e.contains("unit is s, m, h or d") || e.contains("whole number"),
        "{e}"
    );
    let p = d.json(&["sparing", "policy"]);
    assert_eq!(
        (p["threshold"].as_u64(), p["window_secs"].as_u64()),
        (Some(10), Some(600))
    );

    // No spare: a disk past the threshold raises an alarm, nothing moves.
    d.ok(&["sparing", "policy", "--threshold", "1"]);
    d.ok(&["disk", "inject", "b2", "--read-error-at", "0,40M"]);
    // raid1 reads the first leg; read until a read has gone to b2.
    poll("a read error on b2", 30, || {
        qemu_io(&url, &["read -P 0x3c 0 16M"]);
        errors(&disk(&d, "b2")) > 0
    });
    poll("an alarm for b2", 30, || {
        status(&d)["alarms"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x.as_str().unwrap().contains("disk b2 is failing"))
        })
    });
    let s = status(&d);
    let alarm = s["alarms"][0].as_str().unwrap();
    assert!(alarm.contains("no spare disk"), "{alarm}");
    assert_eq!(members(&d, "m"), ["b1", "b2"]);
    let text = d.ok(&["sparing", "status"]);
    assert!(text.contains("ALARM: disk b2 is failing"), "{text}");

    // A spare added: the monitor spares b2 by itself.
    d.ok(&["disk", "add", "sp", "--size", "40M", "--spare"]);
    let (r, job) = sparing_job(&d);
    assert_eq!(
        (r["disk"].as_str(), r["spare"].as_str()),
        (Some("b2"), Some("sp"))
    );
    assert_eq!(d.wait_job(job)["state"], "done");
    poll("the sparing settles", 30, || {
        status(&d)["sparings"] == serde_json::json!([])
    });
    assert_eq!(members(&d, "m"), ["b1", "sp"]);
    assert_eq!(status(&d)["alarms"], serde_json::json!([]));

    // A drill on a healthy disk, onto a named free disk, with --wait.
    let out = d.ok(&["sparing", "start", "b1", "--spare", "free1", "--wait"]);
    assert!(out.contains("No sparing under way."), "{out}");
    assert_eq!(members(&d, "m"), ["free1", "sp"]);
    let b1 = disk(&d, "b1");
    assert_eq!(b1["status"], "failed");
    assert!(
        b1["problem"]
            .as_str()
            .unwrap()
            .contains("started by the administrator"),
        "{b1}"
    );
    let out = qemu_io(&url, &["read -P 0x3c 0 16M"]);
    assert!(
        !out.contains("failed") && out.contains("read 16777216/16777216"),
        "{out}"
    );
}

#[test]
fn kill_9_during_the_sparing_copy_resumes_it() {
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &["--fault-injection"]);
    raid5_with_spare(&d);
    let info = d.json(&["sparing", "start", "a3"]);
    let job = info["job"].as_u64().unwrap();
    d.ok(&["job", "rate", &job.to_string(), "4M"]);
    poll("the copy under way", 30, || {
        d.json(&["job", "show", &job.to_string()])["done"].as_u64() > Some(0)
    });
    d.kill9();
    d.respawn();
    let s = status(&d);
    assert_eq!(s["sparings"][0]["disk"], "a3", "the record survives: {s}");
    d.ok(&["job", "rate", &job.to_string(), "0"]);
    assert_eq!(d.wait_job(job)["state"], "done");
    poll("the sparing settles", 30, || {
        status(&d)["sparings"] == serde_json::json!([])
    });
    assert_eq!(members(&d, "r5"), ["a1", "a2", "sp"]);
    assert_eq!(disk(&d, "a3")["status"], "failed");
    let url = d.export("v");
    let out = qemu_io(&url, &["read -P 0x5a 0 16M"]);
    assert!(
        !out.contains("failed") && out.contains("read 16777216/16777216"),
        "{out}"
    );
}

/// The failing disk is read only by the sparing copy (seed 002, claim 2):
/// with the copy paused part way, host reads and writes of the group are
/// served without reading it (its rows rebuilt from the other members),
/// also after a kill -9 and restart; writes still reach it, so the group
/// stays redundant. The data is whole after the spare takes the slot.
#[test]
fn host_io_during_the_sparing_copy_does_not_read_the_failing_disk() {
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &["--fault-injection"]);
    raid5_with_spare(&d);
    let info = d.json(&["sparing", "start", "a3"]);
    let job = info["job"].as_u64().unwrap().to_string();
    d.ok(&["job", "pause", &job]);
    poll("the copy paused", 30, || {
        d.json(&["job", "show", &job])["state"] == "paused"
    });
    let reads = |d: &Daemon| disk(d, "a3")["counters"]["reads"].as_u64().unwrap();
    let writes = |d: &Daemon| disk(d, "a3")["counters"]["writes"].as_u64().unwrap();
    let (r0, w0) = (reads(&d), writes(&d));
    let url = d.export("v");
    let out = qemu_io(
        &url,
        &["read -P 0x5a 0 16M", "write -P 0x66 1M 3M", "flush"],
    );
    assert!(!out.contains("failed"), "{out}");
    assert_eq!(reads(&d), r0, "host I/O read the failing disk");
    assert!(writes(&d) > w0, "writes still reach it (redundancy kept)");
    d.kill9();
    d.respawn();
    passes(&d, 2);
    let r1 = reads(&d);
    let url = d.export("v");
    let out = qemu_io(
        &url,
        &[
            "read -P 0x5a 0 1M",
            "read -P 0x66 1M 3M",
            "read -P 0x5a 4M 12M",
        ],
    );
    assert!(!out.contains("failed"), "{out}");
    assert_eq!(reads(&d), r1, "after the restart too");
    d.ok(&["job", "resume", &job]);
    assert_eq!(d.wait_job(job.parse().unwrap())["state"], "done");
    assert!(reads(&d) > r1, "the copy reads it");
    poll("the sparing settles", 30, || {
        status(&d)["sparings"] == serde_json::json!([])
    });
    assert_eq!(members(&d, "r5"), ["a1", "a2", "sp"]);
    let out = qemu_io(
        &url,
        &[
            "read -P 0x5a 0 1M",
            "read -P 0x66 1M 3M",
            "read -P 0x5a 4M 12M",
        ],
    );
    assert!(!out.contains("failed"), "{out}");
}
