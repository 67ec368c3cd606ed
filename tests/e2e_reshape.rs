//! End to end: online restriping (seed 004) through the real daemon, CLI
//! and qemu-io: a RAID-5 group gets a disk more and a smaller stripe
//! while a host reads and writes its volume in every phase; kill -9
//! after the switch; the refusals; an abort before the switch.

mod harness;

use harness::*;
use serde_json::Value;

fn status(d: &Daemon) -> Value {
    d.json(&["group", "reshape-status", "r5"])
}

/// A RAID-5 group r5 of three 32 MiB disks with volume v (40 MiB)
/// written 0x5a throughout; disks a4 (to add) and b1-b3 (the copy's).
fn setup(d: &Daemon) -> String {
    d.group("r5", "raid5", &["a1", "a2", "a3"], "32M");
    for x in ["a4", "b1", "b2", "b3"] {
        d.ok(&["disk", "add", x, "--size", "32M"]);
    }
    d.ok(&["volume", "create", "v", "--group", "r5", "--size", "40M"]);
    let url = d.export("v");
    qemu_io(&url, &["write -P 0x5a 0 40M", "flush"]);
    url
}

/// What v holds after the writes of the test below.
const CHECK: [&str; 6] = [
    "read -P 0x5a 0 1M",
    "read -P 0x71 1M 2M",
    "read -P 0x5a 3M 7M",
    "read -P 0x72 10M 64k",
    "read -P 0x73 20M 4k",
    "read -P 0x5a 20975616 20967424",
];

#[test]
fn a_raid5_group_gets_a_disk_and_a_new_stripe_while_a_host_uses_it() {
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &["--fault-injection"]);
    let url = setup(&d);
    let before = d.json(&["group", "show", "r5"]);
    // The copy's disks are slow (a spindle each): every phase lasts.
    for b in ["b1", "b2", "b3"] {
        d.ok(&["disk", "inject", b, "--iops", "40"]);
    }
    let job = d.json(&[
        "group",
        "reshape",
        "r5",
        "--add-disks",
        "a4",
        "--stripe-size",
        "32K",
        "--copy-disks",
        "b1,b2,b3",
    ]);
    assert_eq!(job["kind"], "reshape-copy", "{job}");
    let s = status(&d);
    assert_eq!(s["phase"], "establish", "{s}");
    assert_eq!(s["pause_us"], 0, "{s}");
    // A host write while the copy runs reaches both sides.
    qemu_io(&url, &["write -P 0x71 1M 2M", "flush"]);
    // The copy disks are held; the added one too.
    let e = d.fails(&[
        "group", "create", "x", "--raid", "raid0", "--disks", "b1,a4",
    ]);
    assert!(e.contains("restripe of group r5"), "{e}");
    poll("the switch", 120, || status(&d)["phase"] == "transfer");
    let s = status(&d);
    assert!(s["pause_us"].as_u64().unwrap() > 0, "{s}");
    assert!(s["pb"].as_u64().unwrap() > 0, "tracks still to move: {s}");
    let transfer = s["job"].as_u64().unwrap().to_string();
    let e = d.fails(&["job", "cancel", &transfer]);
    assert!(e.contains("cannot be undone"), "{e}");
    // Host I/O after the switch: served in the new layout at once.
    let out = qemu_io(&url, &CHECK[..3]);
    assert!(!out.contains("fail"), "{out}");
    qemu_io(
        &url,
        &["write -P 0x72 10M 64k", "write -P 0x73 20M 4k", "flush"],
    );
    let s = status(&d);
    let host = s["moved_on_demand"].as_u64().unwrap() + s["overwritten"].as_u64().unwrap();
    assert!(host > 0, "host requests moved their tracks first: {s}");
    // kill -9 in the transfer (paused, so it is still there after):
    // it resumes from the stored lists.
    d.ok(&["job", "pause", &transfer]);
    poll("the transfer paused", 30, || {
        d.json(&["job", "show", &transfer])["state"] == "paused"
    });
    d.kill9();
    d.respawn();
    let url = d.export("v");
    assert_eq!(status(&d)["phase"], "transfer");
    let out = qemu_io(&url, &CHECK);
    assert!(!out.contains("fail"), "after kill -9: {out}");
    let job = status(&d)["job"].as_u64().unwrap();
    d.ok(&["job", "resume", &transfer]);
    let j = d.wait_job(job);
    assert_eq!(j["state"], "done", "{j}");
    let e = d.fails(&["group", "reshape-status", "r5"]);
    assert!(e.contains("not being restriped"), "{e}");
    let g = d.json(&["group", "show", "r5"]);
    assert_eq!(g["stripe_size"], 32 * 1024, "{g}");
    assert_eq!(g["disks"].as_array().unwrap().len(), 4, "{g}");
    assert!(
        g["capacity"].as_u64().unwrap() > before["capacity"].as_u64().unwrap(),
        "{g}"
    );
    let out = qemu_io(&url, &CHECK);
    assert!(!out.contains("fail"), "{out}");
    // The new capacity is usable; the copy's disks are free again.
    d.ok(&["volume", "grow", "v", "--size", "60M"]);
    qemu_io(&url, &["write -P 0x74 50M 1M", "read -P 0x74 50M 1M"]);
    d.ok(&[
        "group", "create", "g1", "--raid", "raid5", "--disks", "b1,b2,b3",
    ]);
}

#[test]
fn a_restripe_is_refused_clearly_and_aborted_before_its_switch() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &["--fault-injection"]);
    let url = setup(&d);
    d.group("m", "raid1", &["m1", "m2"], "8M");
    let cases: [(&[&str], &str); 5] = [
        (
            &["m", "--add-disks", "a4", "--copy-disks", "b1,b2"],
            "only striped groups",
        ),
        (&["r5", "--copy-disks", "b1,b2,b3"], "nothing to change"),
        (
            &["r5", "--stripe-size", "32K", "--copy-disks", "b1,b2"],
            "one disk per member",
        ),
        (
            &["r5", "--stripe-size", "48K", "--copy-disks", "b1,b2,b3"],
            "power of two",
        ),
        (
            &["r5", "--add-disks", "a1", "--copy-disks", "b1,b2,b3"],
            "already in group r5",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["group", "reshape"];
        all.extend_from_slice(args);
        let e = d.fails(&all);
        assert!(e.contains(want), "{args:?}: {e}");
    }
    // Cancelled in its copy: the layout never changed, nothing is lost.
    for b in ["b1", "b2", "b3"] {
        d.ok(&["disk", "inject", b, "--iops", "5"]);
    }
    let job = d.json(&[
        "group",
        "reshape",
        "r5",
        "--stripe-size",
        "16K",
        "--copy-disks",
        "b1,b2,b3",
    ]);
    let id = job["id"].as_u64().unwrap().to_string();
    qemu_io(&url, &["write -P 0x71 1M 2M"]);
    d.ok(&["job", "cancel", &id]);
    poll("the abort", 60, || {
        d.cli(&["group", "reshape-status", "r5"]).status.code() != Some(0)
    });
    let g = d.json(&["group", "show", "r5"]);
    assert_eq!(g["stripe_size"], 64 * 1024, "{g}");
    let out = qemu_io(&url, &CHECK[..3]);
    assert!(!out.contains("fail"), "{out}");
    d.ok(&[
        "group", "create", "g1", "--raid", "raid5", "--disks", "b1,b2,b3",
    ]);
}
