//! The pool format stays readable: `tests/fixtures/pool-format2` is a
//! small pool written by ferrosan at pool format 2 (made once by
//! `scripts/make-fixture-pool.sh`, never remade). Every later ferrosan
//! opens a copy of it as it is and serves the same data and copies.

mod harness;

use std::path::Path;

use harness::*;
use serde_json::json;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pool-format2");

/// Copies the fixture; its disk files are stored gzipped (16 MiB of
/// mostly zeroes each) and come out as the disks the pool recorded.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else if let Some(disk) = e.file_name().to_str().and_then(|n| n.strip_suffix(".gz")) {
            let out = std::fs::File::create(to.join(disk)).unwrap();
            let st = std::process::Command::new("gzip")
                .arg("-dc")
                .arg(e.path())
                .stdout(out)
                .status()
                .expect("run gzip");
            assert!(st.success(), "gzip -dc {}", e.path().display());
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// The format the pool database records.
fn format_of(db: &Path) -> u32 {
    use redb::{ReadableDatabase, TableDefinition};
    let pool: TableDefinition<&str, &[u8]> = TableDefinition::new("pool");
    let db = redb::Database::open(db).unwrap();
    let txn = db.begin_read().unwrap();
    let t = txn.open_table(pool).unwrap();
    let v = t.get("format").unwrap().expect("a format record");
    u32::from_le_bytes(v.value().try_into().unwrap())
}

/// What the fixture's volumes hold (see scripts/make-fixture-pool.sh).
fn check_data(d: &Daemon) {
    // fv: its data at the copy point, then 0xb1 over its first 512k.
    qemu_io(
        &d.export("fv"),
        &[
            "read -P 0xb1 0 512k",
            "read -P 0xa1 512k 512k",
            "read -P 0xa2 1M 1M",
            "read -P 0xa3 2M 2M",
        ],
    );
    // fc, its A2 copy: fv at the copy point, and its own 0xc1 at 3M.
    qemu_io(
        &d.export("fc"),
        &[
            "read -P 0xa1 0 1M",
            "read -P 0xa2 1M 1M",
            "read -P 0xa3 2M 1M",
            "read -P 0xc1 3M 256k",
            "read -P 0xa3 3328k 768k",
        ],
    );
    // fw wrote 0xe1 in place after its A1 copy fwc; fwc kept the old data.
    qemu_io(
        &d.export("fw"),
        &[
            "read -P 0xd1 0 1M",
            "read -P 0xe1 1M 128k",
            "read -P 0xd1 1152k 896k",
        ],
    );
    qemu_io(&d.export("fwc"), &["read -P 0xd1 0 2M"]);
}

#[test]
fn a_format_2_pool_opens_as_it_is_and_serves_its_data_and_copies() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let pool = dir.path().join("pool");
    copy_dir(Path::new(FIXTURE), &pool);
    assert_eq!(
        format_of(&pool.join("ferrosan.redb")),
        2,
        "the fixture is format 2"
    );
    let mut d = Daemon::start(&pool, &[]);
    // Nothing new was provisioned and nothing is amiss.
    let info = d.json(&["pool", "show"]);
    assert_eq!(info["problems"], json!([]), "{info}");
    assert_eq!(
        (
            info["disks"].clone(),
            info["groups"].clone(),
            info["volumes"].clone()
        ),
        (json!(3), json!(1), json!(4)),
        "{info}"
    );
    let disks = d.json(&["disk", "list"]);
    for (i, disk) in disks.as_array().unwrap().iter().enumerate() {
        assert_eq!(disk["name"], format!("f{i}"), "{disks}");
        assert_eq!(disk["status"], "ok", "{disks}");
        assert_eq!(disk["group"], "fg", "{disks}");
        assert_eq!(disk["size"], 16u64 << 20, "{disks}");
    }
    let g = d.json(&["group", "show", "fg"]);
    assert_eq!(g["raid"], "raid5", "{g}");
    assert_eq!(g["health"], "optimal", "{g}");
    assert_eq!(g["disks"], json!(["f0", "f1", "f2"]), "{g}");
    assert_eq!(g["stripe_size"], 65536, "{g}");
    let vols = d.json(&["volume", "list"]);
    let sizes: Vec<(String, u64)> = vols
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_owned(),
                v["size"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64)> = [
        ("fc", 4u64 << 20),
        ("fv", 4 << 20),
        ("fw", 2 << 20),
        ("fwc", 2 << 20),
    ]
    .iter()
    .map(|(n, s)| (n.to_string(), *s))
    .collect();
    assert_eq!(sizes, want, "{vols}");
    // The copies' listing: what each was copied from, how, and how far
    // they have diverged (tracks of 64 KiB).
    let copies = d.json(&["copy", "list"]);
    let list = copies.as_array().unwrap();
    assert_eq!(list.len(), 2, "{copies}");
    let fc = list.iter().find(|c| c["name"] == "fc").expect("fc listed");
    let fwc = list
        .iter()
        .find(|c| c["name"] == "fwc")
        .expect("fwc listed");
    // fc: fv wrote 8 tracks and fc 4 since the copy point; fv's family
    // keeps two 4 MiB areas for its partial bitmaps, and fw's copy store
    // took the rest of the group. fwc: fw overwrote 2 tracks in place,
    // their old data preserved for fwc. Both are copies of an original
    // (cascade level 1); their records predate FamilyRecord.asked, and
    // the mode shown is still the one they were made with.
    for (c, source, mode, scheme, diverged, used, depth) in [
        (fc, "fv", "row", "partial-bitmap", 12, 4u64 << 20, 1),
        (fwc, "fw", "cow", "changed-pointer", 2, 128 << 10, 1),
    ] {
        assert_eq!(c["source"], source, "{c}");
        assert_eq!(c["origin"], source, "{c}");
        assert_eq!(c["mode"], mode, "{c}");
        assert_eq!(c["scheme"], scheme, "{c}");
        assert_eq!(c["valid"], true, "{c}");
        assert_eq!(c["read_only"], false, "{c}");
        assert_eq!(c["track_size"], 65536, "{c}");
        assert_eq!(c["tracks_diverged"], diverged, "{c}");
        assert_eq!(c["space_used"], used, "{c}");
        assert_eq!(c["depth"], depth, "{c}");
    }
    assert_eq!(fc["size"], 4u64 << 20, "{fc}");
    assert_eq!(fwc["size"], 2u64 << 20, "{fwc}");
    let warning = fc["warning"].as_str().unwrap_or_default();
    assert!(
        warning.contains("is 100% used (8.0 MiB held of 8.0 MiB,"),
        "{fc}"
    );
    assert_eq!(fwc["warning"], serde_json::Value::Null, "{fwc}");
    check_data(&d);
    // It goes on working: writes on both sides of each copy, a new copy,
    // and all of it across a restart.
    qemu_io(&d.export("fv"), &["write -P 0x71 2M 64k", "flush"]);
    qemu_io(&d.export("fc"), &["write -P 0x72 0 64k", "flush"]);
    d.ok(&["copy", "create", "fv", "fc2"]);
    d.restart();
    qemu_io(
        &d.export("fv"),
        &["read -P 0x71 2M 64k", "read -P 0xb1 0 512k"],
    );
    qemu_io(
        &d.export("fc"),
        &[
            "read -P 0x72 0 64k",
            "read -P 0xa1 64k 960k",
            "read -P 0xa3 2M 64k",
        ],
    );
    qemu_io(
        &d.export("fc2"),
        &["read -P 0xb1 0 512k", "read -P 0x71 2M 64k"],
    );
    qemu_io(&d.export("fwc"), &["read -P 0xd1 0 2M"]);
    d.stop();
}
