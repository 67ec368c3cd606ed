//! End to end: what the pool finds at start (missing, foreign, truncated
//! disks), growing volumes and concat groups, bad requests.

mod harness;

use harness::*;

#[test]
fn missing_foreign_and_truncated_disks_are_named_and_never_used() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &[]);
    for i in 0..4 {
        d.ok(&["disk", "add", &format!("p{i}"), "--size", "40M"]);
    }
    d.ok(&[
        "group",
        "create",
        "pg",
        "--raid",
        "raid5",
        "--disks",
        "p0,p1,p2,p3",
    ]);
    d.ok(&["volume", "create", "pv", "--group", "pg", "--size", "96M"]);
    qemu_io(&d.export("pv"), &["write -P 0x6b 0 96M", "flush"]);
    d.stop();
    let disks = dir.path().join("disks");
    // p1: gone. p3: truncated.
    std::fs::remove_file(disks.join("p1.img")).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(disks.join("p3.img"))
        .unwrap();
    f.set_len(20 << 20).unwrap();
    drop(f);
    d.respawn();
    let list = d.json(&["disk", "list"]);
    let disk = |n: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(disk("p1")["status"], "missing", "{list}");
    assert!(
        disk("p1")["problem"]
            .as_str()
            .unwrap()
            .contains("p1.img is missing"),
        "{list}"
    );
    assert_eq!(disk("p3")["status"], "unusable", "{list}");
    assert!(
        disk("p3")["problem"]
            .as_str()
            .unwrap()
            .contains("truncated"),
        "{list}"
    );
    let pool = d.json(&["pool", "show"]);
    let problems = pool["problems"].to_string();
    assert!(
        problems.contains("disk p1") && problems.contains("disk p3"),
        "{pool}"
    );
    // Two members gone from a raid5: the group cannot serve; reads fail
    // cleanly rather than returning garbage.
    let g = d.json(&["group", "show", "pg"]);
    assert_eq!(g["health"], "failed", "{g}");
    let (ok, out) = run(
        "qemu-io",
        &["-f", "raw", "-c", "read -P 0x6b 0 1M", &d.export("pv")],
    );
    assert!(out.contains("read failed"), "ok={ok}: {out}");
    d.stop();

    // A disk of another pool in p3's place is refused too; with p1 back
    // (it is stale now: never silently reused) the group stays degraded.
    let other = pool_dir();
    let mut o = Daemon::start(other.path(), &[]);
    o.ok(&["disk", "add", "x", "--size", "40M"]);
    o.stop();
    std::fs::copy(other.path().join("disks/x.img"), disks.join("p3.img")).unwrap();
    d.respawn();
    let list = d.json(&["disk", "list"]);
    let p3 = list
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "p3")
        .unwrap();
    assert_eq!(p3["status"], "unusable", "{list}");
    assert!(
        p3["problem"].as_str().unwrap().contains("another pool"),
        "{list}"
    );
}

#[test]
fn a_degraded_raid5_serves_after_a_disk_goes_missing() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &[]);
    for i in 0..3 {
        d.ok(&["disk", "add", &format!("m{i}"), "--size", "40M"]);
    }
    d.ok(&[
        "group", "create", "mg", "--raid", "raid5", "--disks", "m0,m1,m2",
    ]);
    d.ok(&["volume", "create", "mv", "--group", "mg", "--size", "64M"]);
    qemu_io(&d.export("mv"), &["write -P 0x2f 0 64M", "flush"]);
    d.stop();
    std::fs::remove_file(dir.path().join("disks/m2.img")).unwrap();
    d.respawn();
    let g = d.json(&["group", "show", "mg"]);
    assert_eq!(g["health"], "degraded", "{g}");
    qemu_io(
        &d.export("mv"),
        &[
            "read -P 0x2f 0 64M",
            "write -P 0x30 1M 1M",
            "read -P 0x30 1M 1M",
        ],
    );
    // Rebuild onto a new disk.
    d.ok(&["disk", "add", "m9", "--size", "40M"]);
    let job = d.json(&["disk", "replace", "m2", "m9", "--wait"]);
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["kind"], "rebuild", "{job}");
    assert_eq!(job["done"], job["total"], "{job}");
    let g = d.json(&["group", "show", "mg"]);
    assert_eq!(g["health"], "optimal", "{g}");
    assert_eq!(g["disks"], serde_json::json!(["m0", "m1", "m9"]), "{g}");
    // m9 holds the rebuilt data: with m0 out, every read of the volume
    // needs m9 (as data or as parity), across a restart too.
    d.ok(&["disk", "fail", "m0"]);
    let check = |d: &Daemon| {
        qemu_io(
            &d.export("mv"),
            &[
                "read -P 0x2f 0 1M",
                "read -P 0x30 1M 1M",
                "read -P 0x2f 2M 62M",
            ],
        )
    };
    check(&d);
    d.restart();
    assert_eq!(d.json(&["group", "show", "mg"])["health"], "degraded");
    check(&d);
}

#[test]
fn volumes_grow_without_moving_data_and_concat_groups_extend() {
    if !have(&["qemu-io", "nbdinfo"]) {
        return;
    }
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    d.ok(&["disk", "add", "c0", "--size", "20M"]);
    d.ok(&["disk", "add", "c1", "--size", "20M"]);
    d.ok(&["group", "create", "cg", "--raid", "concat", "--disks", "c0"]);
    d.ok(&["volume", "create", "cv", "--group", "cg", "--size", "16M"]);
    qemu_io(&d.export("cv"), &["write -P 0x41 0 16M"]);
    // Not enough room yet: the error says so.
    let err = d.fails(&["volume", "grow", "cv", "--size", "30M"]);
    assert!(err.contains("not enough free space"), "{err}");
    d.ok(&["group", "extend", "cg", "--disks", "c1"]);
    let v = d.json(&["volume", "grow", "cv", "--size", "30M"]);
    assert_eq!(v["size"], 30u64 << 20);
    let (ok, info) = run("nbdinfo", &["--size", &d.export("cv")]);
    assert!(ok, "{info}");
    assert_eq!(info.trim(), (30u64 << 20).to_string());
    qemu_io(
        &d.export("cv"),
        &[
            "read -P 0x41 0 16M",
            "write -P 0x42 16M 14M",
            "read -P 0x42 16M 14M",
        ],
    );
    // Shrinking is refused with a reason; raid5 groups do not extend.
    let err = d.fails(&["volume", "grow", "cv", "--size", "8M"]);
    assert!(err.contains("shrinking"), "{err}");
    let err = d.fails(&["group", "extend", "g0", "--disks", "c0"]);
    assert!(err.contains("only concat groups"), "{err}");
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    let before = d.json(&["disk", "list"]);
    let cases: &[(&[&str], &str)] = &[
        (
            &["disk", "add", "bad/name", "--size", "1G"],
            "invalid disk name",
        ),
        (&["disk", "add", "d0", "--size", "1G"], "already exists"),
        (&["disk", "add", "tiny", "--size", "4K"], "too small"),
        (&["disk", "remove", "d0"], "is in group g0"),
        (&["disk", "fail", "nope"], "unknown disk"),
        (
            &[
                "group", "create", "g9", "--raid", "raid5", "--disks", "d0,d1,d2",
            ],
            "already in group",
        ),
        (
            &["volume", "create", "v9", "--group", "g0", "--size", "1000"],
            "not a multiple of the track size",
        ),
        (
            &["volume", "create", "v9", "--group", "nope", "--size", "1G"],
            "unknown group",
        ),
        (&["volume", "delete", "nope"], "unknown volume"),
        (&["group", "delete", "g0"], "still holds volumes"),
        (&["job", "show", "999"], "no job 999"),
    ];
    for (args, want) in cases {
        let err = d.fails(args);
        assert!(
            err.contains(want),
            "ferrosan {args:?}: expected {want:?} in {err:?}"
        );
    }
    let o = d.cli(&["disk", "add", "x", "--size", "12Q"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid size"));
    assert_eq!(d.json(&["disk", "list"]), before, "nothing changed");
}
