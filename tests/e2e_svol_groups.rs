//! S-VOL groups (seed 003) end to end: a real daemon, its CLI, qemu-io
//! and qemu-img through NBD. The group made from the seed's attribute
//! list gives FIG. 9/12/13's tables; RO members are read-only and share
//! reads; the RW member's writes are its increments; a member whose disk
//! fails reads is covered by the others and repaired.

mod harness;

use harness::*;

/// The seed's FIG. 9 setting: P-VOL `pv`, S-VOLs LV0, LV1 (RO), LV2
/// (RW), spare S0, each on a disk of its own (x0..x3), increments on
/// group `gd`.
fn fig9(d: &Daemon) {
    for (g, disk) in [
        ("gp", "xp"),
        ("gl0", "x0"),
        ("gl1", "x1"),
        ("gl2", "x2"),
        ("gs0", "x3"),
        ("gd", "x4"),
    ] {
        d.group(g, "concat", &[disk], "64M");
    }
    d.ok(&["volume", "create", "pv", "--group", "gp", "--size", "16M"]);
    for (v, g) in [
        ("LV0", "gl0"),
        ("LV1", "gl1"),
        ("LV2", "gl2"),
        ("S0", "gs0"),
    ] {
        d.ok(&["volume", "create", v, "--group", g, "--size", "16M"]);
    }
    qemu_io(
        &d.export("pv"),
        &["write -P 0x11 0 4M", "write -P 0x12 8M 1M", "flush"],
    );
    for v in ["LV0", "LV1", "LV2"] {
        d.json(&["pair", "create", "pv", v, "--wait"]);
    }
}

/// `svol-group create G0` with FIG. 9's attribute list.
const FIG9_ARGS: [&str; 15] = [
    "svol-group",
    "create",
    "G0",
    "--pvol",
    "pv",
    "--member",
    "LV0:ro",
    "--member",
    "LV1:ro",
    "--member",
    "LV2:rw",
    "--spare",
    "S0",
    "--dlv-group",
    "gd",
];

fn create(d: &Daemon) -> serde_json::Value {
    d.json(&FIG9_ARGS)
}

/// Waits for the group's job (spare fill, rebuild, rollback), if one
/// runs or is about to, and returns the group after it.
fn wait_group_job(d: &Daemon) -> serde_json::Value {
    let mut g = d.json(&["svol-group", "query", "G0"]);
    poll("a group job to start or end", 20, || {
        g = d.json(&["svol-group", "query", "G0"]);
        match g["job"].as_u64() {
            Some(j) => {
                let done = d.wait_job(j);
                assert_eq!(done["state"], "done", "{done}");
                false
            }
            None => true,
        }
    });
    g
}

fn rows(v: &serde_json::Value, cols: &[&str]) -> Vec<Vec<String>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            cols.iter()
                .map(|c| r[*c].as_str().unwrap_or("").to_string())
                .collect()
        })
        .collect()
}

fn member<'a>(g: &'a serde_json::Value, lid: &str) -> &'a serde_json::Value {
    g["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["lid"] == lid)
        .unwrap_or_else(|| panic!("member {lid} in {g}"))
}

#[test]
fn initialisation_gives_the_seeds_tables_and_query_shows_them() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    fig9(&d);
    let g = create(&d);
    // FIG. 9: table 900.
    assert_eq!(
        rows(&g["table_900"], &["grp_id", "lid", "attr", "pid", "rlid"]),
        [
            ["G0", "LV0", "RO", "LV0", ""],
            ["G0", "LV1", "RO", "LV1", ""],
            ["G0", "LV2", "RW", "LV2", "LV2-dlv"],
            ["G0", "S0", "RO", "S0", ""],
            ["G0", "LV2-dlv", "RW", "LV2-dlv", ""],
        ],
        "{g}"
    );
    // FIG. 12: table 1200, the spare without host access.
    assert_eq!(
        rows(&g["table_1200"], &["lid", "attr", "pid", "rlid"]),
        [
            ["LV0", "RO", "LV0", ""],
            ["LV1", "RO", "LV1", ""],
            ["LV2", "RW", "LV2", "LV2-dlv"],
            ["S0", "—", "S0", ""],
            ["LV2-dlv", "RW", "LV2-dlv", ""],
        ],
        "{g}"
    );
    // FIG. 13: table 1300, empty at the split.
    assert_eq!(g["table_1300"][0]["dlid"], "LV2-dlv", "{g}");
    assert_eq!(g["table_1300"][0]["count"], 0, "{g}");
    assert_eq!(g["spares"][0]["lid"], "S0", "{g}");
    assert_eq!(member(&g, "LV0")["disks"][0], "x0", "{g}");
    // The members were split at one instant.
    let pairs = d.json(&["pair", "list"]);
    let at: Vec<&serde_json::Value> = pairs
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["split_at"])
        .collect();
    assert!(at.iter().all(|a| *a == at[0] && !a.is_null()), "{pairs}");
    // The human query prints the three tables.
    let text = d.ok(&["svol-group", "query", "G0"]);
    for want in ["(900)", "(1200)", "(1300)", "LV2-dlv", "—"] {
        assert!(text.contains(want), "{want} in {text}");
    }
    // Spares and increments volumes are not exports.
    let (ok, out) = run(
        "qemu-io",
        &["-f", "raw", "-c", "read 0 4k", &d.export("S0")],
    );
    assert!(!ok || out.contains("failed"), "{out}");
    let (_, out) = run("nbdinfo", &["--list", &d.export("")]);
    assert!(
        out.contains("LV0") && !out.contains("S0") && !out.contains("LV2-dlv"),
        "{out}"
    );
    // Refusals name the group.
    let e = d.fails(&["pair", "resync", "pv", "LV0"]);
    assert!(
        e.contains("S-VOL group G0") && e.contains("svol-group delete G0"),
        "{e}"
    );
    let e = d.fails(&["volume", "delete", "S0"]);
    assert!(e.contains("S-VOL group G0"), "{e}");
    let e = d.fails(&FIG9_ARGS);
    assert!(e.contains("exists already"), "{e}");
}

#[test]
fn ro_members_refuse_writes_share_reads_and_the_rw_member_keeps_increments() {
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &[]);
    fig9(&d);
    create(&d);
    // The P-VOL goes on; the group keeps the split image.
    qemu_io(&d.export("pv"), &["write -P 0x99 0 1M", "flush"]);
    let (lv0, lv1, lv2) = (d.export("LV0"), d.export("LV1"), d.export("LV2"));
    let (_, out) = run("qemu-io", &["-f", "raw", "-c", "write -P 0x5 0 4k", &lv0]);
    assert!(
        out.contains("Permission denied"),
        "an RO member is a read-only export: {out}"
    );
    // Reads spread over the RO members by access frequency.
    let before = d.json(&["svol-group", "query", "G0"]);
    let f0 = |g: &serde_json::Value, l: &str| member(g, l)["freq"].as_u64().unwrap();
    let reads: Vec<String> = (0..40)
        .map(|i| format!("read -P 0x11 {}k 4k", i * 64))
        .collect();
    let cmds: Vec<&str> = reads.iter().map(String::as_str).collect();
    qemu_io_ro(&lv0, &cmds);
    let after = d.json(&["svol-group", "query", "G0"]);
    let (a, b) = (
        f0(&after, "LV0") - f0(&before, "LV0"),
        f0(&after, "LV1") - f0(&before, "LV1"),
    );
    assert!(
        a + b >= 40 && a.abs_diff(b) <= 2,
        "LV0 {a}, LV1 {b}: {after}"
    );
    let (fa, fb) = (f0(&after, "LV0"), f0(&after, "LV1"));
    assert!(fa.abs_diff(fb) <= 1, "Freq within one: {fa} {fb}");
    // RW: writes become increments at their block ids (64 KiB tracks).
    qemu_io(
        &lv2,
        &["write -P 0x21 128k 64k", "write -P 0x22 9M 4k", "flush"],
    );
    let g = d.json(&["svol-group", "query", "G0"]);
    assert_eq!(
        g["table_1300"][0]["bids"],
        serde_json::json!([2, 144]),
        "{g}"
    );
    qemu_io(
        &lv2,
        &[
            "read -P 0x21 128k 64k",
            "read -P 0x22 9M 4k",
            "read -P 0 9441280 60k",
            "read -P 0x11 0 128k",
        ],
    );
    // RO members kept the split image, not the P-VOL's later write.
    qemu_io_ro(&lv1, &["read -P 0x11 0 1M", "read -P 0x11 128k 64k"]);
    // Tables and increments survive a restart.
    d.restart();
    let g = d.json(&["svol-group", "query", "G0"]);
    assert_eq!(g["table_1300"][0]["count"], 2, "{g}");
    qemu_io(&d.export("LV2"), &["read -P 0x21 128k 64k"]);
    // Deleting the group leaves split S-VOLs, writable again.
    d.ok(&["svol-group", "delete", "G0"]);
    qemu_io(
        &d.export("LV0"),
        &["write -P 0x31 0 4k", "flush", "read -P 0x31 0 4k"],
    );
    let vols = d.json(&["volume", "list"]);
    assert!(!vols.to_string().contains("LV2-dlv"), "{vols}");
    qemu_io(&d.export("S0"), &["write -P 0x41 0 4k", "flush"]);
}

#[test]
fn a_member_whose_disk_fails_reads_is_covered_repaired_then_failed() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &["--fault-injection"]);
    fig9(&d);
    create(&d);
    let lv0 = d.export("LV0");
    // A bad block of LV0: a read that meets it is served by LV1, and the
    // block is rewritten with good data.
    let base = d.json(&["volume", "show", "LV0"])["extents"][0]["offset"]
        .as_u64()
        .unwrap();
    let bad = format!("{},64k", base + (2 << 20));
    d.ok(&["disk", "inject", "x0", "--read-error-at", &bad]);
    qemu_io_ro(&lv0, &["read -P 0x11 2M 4k", "read -P 0x11 2M 4k"]);
    d.ok(&["disk", "inject", "x0", "--clear"]);
    let g = d.json(&["svol-group", "query", "G0"]);
    let m0 = member(&g, "LV0");
    assert_eq!(m0["health"], "healthy", "{g}");
    // Ties go to LV0, the first: both reads met the bad block there, and
    // each time it was rewritten from LV1.
    assert_eq!(m0["errors"], 2, "{g}");
    assert_eq!(m0["repaired"], 2, "{g}");
    // LV1's disk fails every read: reads of LV0 and LV1 still return the
    // split image, served by LV0; past the threshold LV1 is failed.
    d.ok(&["disk", "inject", "x1", "--error-rate", "1"]);
    let reads: Vec<String> = (0..20)
        .map(|i| format!("read -P 0x11 {}k 4k", i * 64))
        .collect();
    let cmds: Vec<&str> = reads.iter().map(String::as_str).collect();
    qemu_io_ro(&lv0, &cmds);
    qemu_io_ro(&d.export("LV1"), &cmds);
    // Past the threshold LV1 is failed, and the spare takes its place:
    // filled from LV0 in a job, then LV1's PID.
    let g = wait_group_job(&d);
    let m1 = member(&g, "LV1");
    let jobs = d.json(&["job", "list"]);
    let fill = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["kind"] == "svol-fill");
    assert!(
        fill.is_some_and(|j| j["state"] == "done" && j["target"].to_string().contains("spare S0")),
        "{jobs}"
    );
    // Its error count starts again with its new PID.
    assert_eq!(m1["errors"], 0, "{g}");
    assert_eq!(
        (m1["health"].as_str(), m1["pid"].as_str()),
        (Some("healthy"), Some("S0")),
        "{g}"
    );
    assert_eq!(g["spares"], serde_json::json!([]), "{g}");
    assert_eq!(member(&g, "LV0")["health"], "healthy", "{g}");
    qemu_io_ro(&d.export("LV1"), &cmds);
    d.ok(&["disk", "inject", "x1", "--clear"]);
    // The RW member's disk fails reads: its increments come from its DLV,
    // the rest from the RO member.
    qemu_io(&d.export("LV2"), &["write -P 0x21 128k 64k", "flush"]);
    d.ok(&["disk", "inject", "x2", "--error-rate", "1"]);
    qemu_io(
        &d.export("LV2"),
        &[
            "read -P 0x21 128k 64k",
            "read -P 0x11 0 128k",
            "read -P 0x12 8M 64k",
        ],
    );
    d.ok(&["disk", "inject", "x2", "--clear"]);
    // Deleting the group gives every volume back, the filled spare too.
    d.ok(&["svol-group", "delete", "G0"]);
    qemu_io(&d.export("S0"), &["read -P 0x11 0 4M"]);
}

#[test]
fn an_rw_member_whose_disk_fails_writes_is_taken_over_and_a_spare_fills_in() {
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &["--fault-injection"]);
    fig9(&d);
    create(&d);
    // A whole block, and 4k of another (the rest of that block must stay
    // the split image's through the takeover).
    qemu_io(
        &d.export("LV2"),
        &["write -P 0x21 128k 64k", "write -P 0x25 3M 4k", "flush"],
    );
    // LV2's disk fails: the write still succeeds for the host.
    d.ok(&["disk", "inject", "x2", "--error-rate", "1"]);
    qemu_io(&d.export("LV2"), &["write -P 0x23 1M 64k", "flush"]);
    d.ok(&["disk", "inject", "x2", "--clear"]);
    // LV0's PID took over LV2's role (brought up to date with the
    // increments); the spare was filled from LV1 and is LV0's PID now.
    let g = wait_group_job(&d);
    let pids = rows(&g["table_900"], &["lid", "pid"]);
    assert_eq!(
        pids,
        [
            ["LV0", "S0"],
            ["LV1", "LV1"],
            ["LV2", "LV0"],
            ["LV2-dlv", "LV2-dlv"]
        ],
        "{g}"
    );
    let check = |d: &Daemon| {
        qemu_io(
            &d.export("LV2"),
            &[
                "read -P 0x21 128k 64k",
                "read -P 0x23 1M 64k",
                "read -P 0x25 3M 4k",
                "read -P 0x11 3149824 60k",
                "read -P 0x11 0 128k",
                "read -P 0x12 8M 64k",
            ],
        );
        for ro in ["LV0", "LV1"] {
            qemu_io_ro(&d.export(ro), &["read -P 0x11 0 4M", "read -P 0x12 8M 1M"]);
        }
    };
    check(&d);
    // The spare's volume holds LV0's data now: not deletable, not an export.
    let e = d.fails(&["volume", "delete", "S0"]);
    assert!(e.contains("S-VOL group G0"), "{e}");
    let (_, out) = run("nbdinfo", &["--list", &d.export("")]);
    assert!(!out.contains("S0"), "{out}");
    assert_eq!(
        g["table_1300"][0]["bids"],
        serde_json::json!([2, 16, 48]),
        "{g}"
    );
    // The new table survives a restart.
    d.restart();
    let again = d.json(&["svol-group", "query", "G0"]);
    assert_eq!(rows(&again["table_900"], &["lid", "pid"]), pids, "{again}");
    check(&d);
    // No RO member left to take over at the next failure but LV1.
    qemu_io(
        &d.export("LV2"),
        &["write -P 0x24 2M 4k", "flush", "read -P 0x24 2M 4k"],
    );
}

#[test]
fn rollback_returns_the_rw_member_to_the_split_image_and_rebuild_refills() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    fig9(&d);
    create(&d);
    let lv2 = d.export("LV2");
    qemu_io(
        &lv2,
        &["write -P 0x21 128k 64k", "write -P 0x22 12M 1M", "flush"],
    );
    let out = d.ok(&[
        "svol-group",
        "restore",
        "G0",
        "--member",
        "LV2",
        "--rollback",
        "--wait",
    ]);
    assert!(out.contains("(1300)"), "{out}");
    let g = d.json(&["svol-group", "query", "G0"]);
    assert_eq!(g["table_1300"][0]["count"], 0, "table 1300 empties: {g}");
    let (eq, msg) = same_image(&lv2, &d.export("LV0"));
    assert!(eq, "LV2 reads the split image again: {msg}");
    // A rebuild refills an RO member from the group.
    d.ok(&[
        "svol-group",
        "restore",
        "G0",
        "--member",
        "LV1",
        "--rebuild",
        "--wait",
    ]);
    qemu_io_ro(&d.export("LV1"), &["read -P 0x11 0 4M", "read -P 0 12M 1M"]);
    let e = d.fails(&[
        "svol-group",
        "restore",
        "G0",
        "--member",
        "LV0",
        "--rollback",
    ]);
    assert!(e.contains("not an RW member"), "{e}");
    let e = d.fails(&[
        "svol-group",
        "restore",
        "G0",
        "--member",
        "LV2",
        "--rebuild",
    ]);
    assert!(e.contains("no such RO member"), "{e}");
}

#[test]
fn an_increments_volume_that_fails_writes_is_replaced_from_the_spare() {
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &["--fault-injection"]);
    fig9(&d);
    create(&d);
    qemu_io(&d.export("LV2"), &["write -P 0x21 128k 64k", "flush"]);
    // The DLV's disk (x4) fails writes: the host sees no error; the
    // member holds the increments alone, and the spare S0 is filled from
    // it as the new DLV.
    d.ok(&["disk", "inject", "x4", "--error-rate", "1"]);
    qemu_io(
        &d.export("LV2"),
        &["write -P 0x22 1M 64k", "write -P 0x23 2M 4k", "flush"],
    );
    let g = wait_group_job(&d);
    d.ok(&["disk", "inject", "x4", "--clear"]);
    assert_eq!(member(&g, "LV2")["health"], "healthy", "{g}");
    assert_eq!(member(&g, "LV2")["rlid"], "S0", "{g}");
    assert_eq!(g["spares"], serde_json::json!([]), "{g}");
    assert_eq!(g["degraded"], false, "{g}");
    assert_eq!(
        g["table_1300"][0],
        serde_json::json!({"dlid": "S0", "block_size": 65536, "bids": [2, 16, 32], "count": 3}),
        "{g}"
    );
    // The old DLV left the group: a plain volume again.
    assert!(!g.to_string().contains("LV2-dlv"), "{g}");
    d.ok(&["volume", "delete", "LV2-dlv"]);
    let check = |d: &Daemon| {
        qemu_io(
            &d.export("LV2"),
            &[
                "read -P 0x21 128k 64k",
                "read -P 0x22 1M 64k",
                "read -P 0x23 2M 4k",
                "read -P 0x11 2052k 60k",
                "read -P 0x11 0 128k",
            ],
        );
    };
    check(&d);
    d.restart();
    check(&d);
    // The new DLV holds every increment: the member's disk fails, LV0 is
    // brought up to date from it and takes over, the host sees no error.
    d.ok(&["disk", "inject", "x2", "--error-rate", "1"]);
    qemu_io(&d.export("LV2"), &["write -P 0x24 3M 4k", "flush"]);
    d.ok(&["disk", "inject", "x2", "--clear"]);
    check(&d);
    qemu_io(&d.export("LV2"), &["read -P 0x24 3M 4k"]);
    let g = d.json(&["svol-group", "query", "G0"]);
    let pids = rows(&g["table_900"], &["lid", "pid"]);
    assert!(
        pids.contains(&vec!["LV2".to_string(), "LV0".to_string()]),
        "{g}"
    );
}

fn pair_of(d: &Daemon, svol: &str) -> serde_json::Value {
    d.json(&["pair", "show", "pv", svol])
}

#[test]
fn to_pvol_copies_the_group_image_onto_the_p_vol_in_use_and_survives_kill_9() {
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &[]);
    fig9(&d);
    create(&d);
    // The image: 0x11 at 0-4M, 0x12 at 8-9M. After the split the P-VOL
    // takes 12 MiB of new data (192 tracks of 64 KiB).
    let pv = d.export("pv");
    qemu_io(&pv, &["write -P 0x31 2M 12M", "flush"]);
    let e = d.fails(&[
        "svol-group",
        "restore",
        "G0",
        "--to-pvol",
        "--member",
        "LV2",
    ]);
    assert!(e.contains("LV2 is not an RO member"), "{e}");
    // 1 MiB/s: the first step (128 tracks) is copied at once, then the
    // job waits about 8 s before the next.
    let g = d.json(&["svol-group", "restore", "G0", "--to-pvol", "--rate", "1M"]);
    let id = g["job"].as_u64().expect("a job");
    poll("the first step", 30, || {
        d.json(&["job", "show", &id.to_string()])["done"].as_u64() >= Some(128)
    });
    let g = d.json(&["svol-group", "query", "G0"]);
    assert_eq!(g["to_pvol"], "LV0", "{g}");
    assert_eq!(pair_of(&d, "LV0")["status"], "restore");
    let e = d.fails(&["svol-group", "delete", "G0"]);
    assert!(e.contains("is copying LV0's image onto pv"), "{e}");
    let e = d.fails(&["svol-group", "restore", "G0", "--to-pvol"]);
    assert!(e.contains(&format!("job {id} is restoring")), "{e}");
    // The P-VOL reads as the image at every moment (12M is not restored
    // yet), and takes writes: one on a restored track, one on a track
    // still to restore.
    qemu_io(
        &pv,
        &[
            "read -P 0x11 2M 2M",
            "read -P 0 12M 64k",
            "write -P 0x52 3M 64k",
            "write -P 0x51 13M 64k",
            "flush",
        ],
    );
    // The members are not written and go on serving the image.
    for m in ["LV0", "LV1"] {
        qemu_io_ro(
            &d.export(m),
            &[
                "read -P 0x11 0 4M",
                "read -P 0 4M 4M",
                "read -P 0x12 8M 1M",
                "read -P 0 9M 7M",
            ],
        );
    }
    d.kill9();
    d.respawn();
    assert_eq!(pair_of(&d, "LV0")["job"].as_u64(), Some(id), "resumed");
    assert_eq!(d.json(&["svol-group", "query", "G0"])["to_pvol"], "LV0");
    d.ok(&["job", "rate", &id.to_string(), "0"]);
    let done = d.wait_job(id);
    assert_eq!(done["state"], "done", "{done}");
    qemu_io(
        &d.export("pv"),
        &[
            "read -P 0x11 0 3M",
            "read -P 0x52 3M 64k",
            "read -P 0x11 3136k 960k",
            "read -P 0 4M 4M",
            "read -P 0x12 8M 1M",
            "read -P 0 9M 4M",
            "read -P 0x51 13M 64k",
            "read -P 0 13376k 3008k",
        ],
    );
    // Split again; its bitmap holds the two tracks written meanwhile.
    let p = pair_of(&d, "LV0");
    assert_eq!(
        (p["status"].as_str(), p["tracks_set"].as_u64()),
        (Some("split"), Some(2)),
        "{p}"
    );
    assert!(pair_of(&d, "LV1")["tracks_set"].as_u64() >= Some(192));
    let g = d.json(&["svol-group", "query", "G0"]);
    assert!(g["to_pvol"].is_null(), "{g}");
    let (eq, msg) = same_image(&d.export("LV0"), &d.export("LV1"));
    assert!(eq, "the RO members hold one image: {msg}");
    d.ok(&["svol-group", "delete", "G0"]);
}
