//! Instant copies tried as a user would, through the CLI of a real daemon:
//! what `copy list` says about depth and mode, and what a split that cannot
//! run says to do instead.

mod harness;

use harness::*;

fn setup(d: &Daemon) {
    d.ok(&["disk", "add", "x0", "--size", "256M"]);
    d.ok(&["group", "create", "g", "--raid", "concat", "--disks", "x0"]);
    d.ok(&["volume", "create", "src", "--group", "g", "--size", "16M"]);
}

fn copy_row(d: &Daemon, name: &str) -> serde_json::Value {
    let list = d.json(&["copy", "list"]);
    list.as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("{name} not in copy list: {list}"))
}

#[test]
fn depth_is_the_cascade_level() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    setup(&d);
    let src = d.export("src");
    qemu_io(&src, &["write -P 0x11 0 1M", "flush"]);
    d.ok(&["copy", "create", "src", "a", "--mode", "row"]);
    qemu_io(&src, &["write -P 0x22 0 1M", "flush"]);
    d.ok(&["copy", "create", "src", "b", "--mode", "row"]);
    d.ok(&["copy", "create", "a", "a2", "--mode", "row"]);
    d.ok(&["copy", "create", "a2", "a3", "--mode", "row"]);
    let depths: Vec<u64> = ["a", "b", "a2", "a3"]
        .iter()
        .map(|n| copy_row(&d, n)["depth"].as_u64().unwrap())
        .collect();
    assert_eq!(depths, vec![1, 1, 2, 3]);
    // The table says so too, in its DEPTH column.
    let table = d.ok(&["copy", "list"]);
    let cells = |l: &str| -> Vec<String> {
        l.trim()
            .trim_matches('│')
            .split(['┆', '│'])
            .map(|c| c.trim().to_string())
            .collect()
    };
    let header = table
        .lines()
        .map(cells)
        .find(|c| c.iter().any(|h| h == "DEPTH"))
        .unwrap_or_else(|| panic!("no DEPTH column in:\n{table}"));
    let col = header.iter().position(|h| h == "DEPTH").unwrap_or(0);
    let a3 = table
        .lines()
        .map(cells)
        .find(|c| c.first().is_some_and(|n| n == "a3"))
        .unwrap_or_else(|| panic!("no a3 row in:\n{table}"));
    assert_eq!(a3.get(col).map(String::as_str), Some("3"), "{table}");
}

#[test]
fn a_split_of_a_family_with_more_copies_says_what_to_delete_and_stays_row() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    setup(&d);
    let src = d.export("src");
    qemu_io(&src, &["write -P 0x11 0 4M", "flush"]);
    d.ok(&["copy", "create", "src", "c1", "--mode", "row"]);
    d.ok(&["copy", "create", "src", "c2", "--mode", "row"]);
    let err = d.fails(&["copy", "split", "c1"]);
    assert!(
        err.contains("ferrosan copy delete c2"),
        "the refusal names what to do: {err}"
    );
    assert!(!err.contains("split those"), "no circular advice: {err}");
    // Doing what it said makes the split work.
    d.ok(&["copy", "delete", "c2"]);
    qemu_io(&src, &["write -P 0x22 0 1M", "flush"]);
    qemu_io(&d.export("c1"), &["write -P 0x33 8M 1M", "flush"]);
    let split = d.json(&["copy", "split", "c1"]);
    if let Some(job) = split["job"]["id"].as_u64() {
        let j = d.wait_job(job);
        assert_eq!(j["state"], "done", "{j}");
    }
    assert_eq!(copy_row(&d, "c1")["mode"], "row", "after the split");
    // Both keep their data.
    qemu_io(&src, &["read -P 0x22 0 1M", "read -P 0x11 1M 3M"]);
    qemu_io(
        &d.export("c1"),
        &["read -P 0x11 0 4M", "read -P 0x33 8M 1M"],
    );
    // And a new copy of the split image may be asked for as row again.
    d.ok(&["copy", "create", "c1", "c1b", "--mode", "row"]);
    assert_eq!(copy_row(&d, "c1b")["mode"], "row");
}

#[test]
fn a_copy_point_is_a_qemu_dirty_bitmap_of_its_source_and_of_the_copy() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    setup(&d);
    let src = d.export("src");
    qemu_io(&src, &["write -P 0x11 0 4M", "flush"]);
    d.ok(&["copy", "create", "src", "bk1", "--read-only"]);
    assert_eq!(
        dirty_extents(&src, "qemu:dirty-bitmap:bk1"),
        vec![],
        "nothing yet"
    );
    qemu_io(&src, &["write -P 0x22 1M 64k", "write -P 0x23 8M 4k"]);
    d.ok(&["copy", "create", "src", "bk2", "--read-only"]);
    qemu_io(&src, &["write -P 0x24 12M 128k"]);
    let k = 1u64 << 10;
    let since_bk1 = vec![(1024 * k, 64 * k), (8192 * k, 64 * k), (12288 * k, 128 * k)];
    assert_eq!(dirty_extents(&src, "qemu:dirty-bitmap:bk1"), since_bk1);
    assert_eq!(
        dirty_extents(&src, "qemu:dirty-bitmap:bk2"),
        vec![(12288 * k, 128 * k)]
    );
    // The copy's export offers its source's name, with the same extents.
    assert_eq!(
        dirty_extents(&d.export("bk1"), "qemu:dirty-bitmap:src"),
        since_bk1
    );
    // A deleted copy's bitmap is no longer offered.
    d.ok(&["copy", "delete", "bk1"]);
    let (ok, out) = run("nbdinfo", &["--map=qemu:dirty-bitmap:bk1", &src]);
    assert!(!ok, "a deleted copy's bitmap: {out}");
}
