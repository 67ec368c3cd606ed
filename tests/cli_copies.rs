//! `ferrosan copy ...` against the daemon on a temporary pool: the human
//! output of each command (with the figures the engine computes from data
//! written through NBD), `--json` (the API's JSON, read back into the
//! API's types), `--wait`, and usage errors.

mod common;
mod harness;
mod nbd_common;

use std::path::Path;

use common::{Pool, fails, ferrosan, json, ok};
use ferrosan::api::views::*;
use ferrosan::cli::format_size;
use serde::de::DeserializeOwned;

const KIB: u64 = 1024;

/// The default pool, plus a raid1 group g1 of two 64 MiB disks holding
/// v0, 1 MiB: 16 tracks of 64 KiB.
fn setup() -> Pool {
    let p = Pool::start();
    let pool = p.path();
    for d in ["e0", "e1"] {
        ok(pool, &["disk", "add", d, "--size", "64M"]);
    }
    ok(
        pool,
        &[
            "group", "create", "g1", "--raid", "raid1", "--disks", "e0,e1",
        ],
    );
    ok(
        pool,
        &["volume", "create", "v0", "--group", "g1", "--size", "1M"],
    );
    p
}

/// `--json ARGS` read into the API's type.
fn typed<T: DeserializeOwned>(p: &Path, args: &[&str]) -> T {
    let v = json(p, args);
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{args:?} ({e}): {v}"))
}

#[test]
fn create_prints_a_line_or_the_json() {
    let p = setup();
    let pool = p.path();
    let out = ok(pool, &["copy", "create", "v0", "c0"]);
    let (size, track) = (format_size(1 << 20), format_size(64 << 10));
    assert_eq!(
        out,
        format!(
            "created copy c0 of v0: row (redirect-on-write: new writes go to new space), \
             partial-bitmap metadata, \
             {size} in {track} tracks\n"
        )
    );
    ok(pool, &["copy", "delete", "c0"]);
    let args = [
        "copy",
        "create",
        "v0",
        "c1",
        "--mode",
        "cow",
        "--meta",
        "multilevel-bitmap",
        "--read-only",
        "--pool-group",
        "g1",
    ];
    let c: CopyInfo = typed(pool, &args);
    assert_eq!(
        (c.mode, c.scheme),
        (CopyMode::Cow, Scheme::MultilevelBitmap)
    );
    assert!(c.read_only);
    let out = ok(pool, &["copy", "create", "c1", "c2", "--read-only"]);
    assert!(
        out.starts_with(
            "created copy c2 of c1: cow (copy-on-write: old data is copied to new space \
             before it is overwritten), "
        ),
        "{out}"
    );
    assert!(out.ends_with(", read-only\n"), "{out}");
}

#[test]
fn json_output_is_the_apis_json() {
    let p = setup();
    let pool = p.path();
    ok(pool, &["copy", "create", "v0", "c0"]);
    p.fill("c0", 0, 128 * KIB, 7);
    for (args, path) in [
        (vec!["copy", "list"], "/v1/copies"),
        (vec!["copy", "show", "c0"], "/v1/copies/c0"),
    ] {
        let api = p.get(path).json();
        assert_eq!(json(pool, &args), api, "{args:?}");
    }
    let list: Vec<CopyInfo> = typed(pool, &["copy", "list"]);
    assert_eq!(list.len(), 1);
    let one: CopyInfo = typed(pool, &["copy", "show", "c0"]);
    assert_eq!((one.name.as_str(), one.tracks_diverged), ("c0", 2));
}

/// The cells of the table row whose first cell is `first`.
fn row(table: &str, first: &str) -> Vec<String> {
    table
        .lines()
        .filter(|l| l.starts_with('\u{2502}'))
        .map(|l| {
            let inner = l.trim_matches('\u{2502}');
            inner
                .split('\u{2506}')
                .map(|c| c.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .find(|cells| cells[0] == first)
        .unwrap_or_else(|| panic!("no row {first}:\n{table}"))
}

#[test]
fn list_is_a_table_with_warnings_under_it() {
    let p = setup();
    let pool = p.path();
    ok(
        pool,
        &["copy", "create", "v0", "c0", "--meta", "full-pointer"],
    );
    p.fill("c0", 0, 128 * KIB, 7);
    ok(pool, &["copy", "create", "c0", "k1"]);
    // A small group whose copy's new space runs out.
    ok(pool, &["disk", "add", "x0", "--size", "48M"]);
    ok(
        pool,
        &["group", "create", "gs", "--raid", "concat", "--disks", "x0"],
    );
    ok(
        pool,
        &["volume", "create", "s", "--group", "gs", "--size", "24M"],
    );
    p.fill("s", 0, 24 << 20, 0x11);
    ok(
        pool,
        &[
            "copy",
            "create",
            "s",
            "broken2",
            "--mode",
            "cow",
            "--meta",
            "changed-pointer",
        ],
    );
    p.fill("s", 0, 24 << 20, 0x22);
    let out = ok(pool, &["copy", "list"]);
    let header = [
        "NAME",
        "SOURCE",
        "ORIGIN",
        "MODE",
        "META",
        "DIVERGED",
        "SPACE USED",
        "METADATA MEMORY",
        "DEPTH",
        "STATE",
    ];
    assert_eq!(row(&out, "NAME"), header);
    let c0: CopyInfo = typed(pool, &["copy", "show", "c0"]);
    let want = [
        "c0".to_owned(),
        "v0".to_owned(),
        "v0".to_owned(),
        "row".to_owned(),
        "full-pointer".to_owned(),
        c0.tracks_diverged.to_string(),
        format_size(c0.space_used),
        format_size(c0.metadata_memory),
        c0.depth.to_string(),
        "ok".to_owned(),
    ];
    assert_eq!(row(&out, "c0"), want);
    assert_eq!(c0.tracks_diverged, 2, "{c0:?}");
    let k1 = row(&out, "k1");
    // A copy of a copy with data of its own: changed pointers.
    assert_eq!(k1[..5], ["k1", "c0", "v0", "row", "changed-pointer"]);
    assert_eq!(k1[9], "ok");
    assert_eq!(row(&out, "broken2")[9], "INVALID");
    let warnings: Vec<&str> = out.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(
        warnings,
        [
            "warning: copy broken2: broken2 is invalid: its new space ran out while its \
             source was written; delete it"
        ]
    );
    let last = out.lines().last().unwrap();
    assert!(
        last.starts_with("warning: "),
        "warnings come under the table"
    );
}

#[test]
fn show_is_a_field_table() {
    let p = setup();
    let pool = p.path();
    ok(
        pool,
        &["copy", "create", "v0", "c0", "--mode", "cow", "--read-only"],
    );
    p.fill("v0", 0, 128 * KIB, 3);
    let c: CopyInfo = typed(pool, &["copy", "show", "c0"]);
    let out = ok(pool, &["copy", "show", "c0"]);
    let want = [
        ("name", "c0".to_owned()),
        ("source", "v0".to_owned()),
        ("origin", "v0".to_owned()),
        ("depth", c.depth.to_string()),
        (
            "mode",
            "cow (copy-on-write: old data is copied to new space before it is overwritten)"
                .to_owned(),
        ),
        ("metadata", "partial-bitmap".to_owned()),
        ("access", "ro".to_owned()),
        ("size", format_size(1 << 20)),
        ("track size", format_size(65536)),
        ("diverged", format!("2 tracks ({})", format_size(2 * 65536))),
        ("space used", format_size(c.space_used)),
        ("space shared", format_size(c.space_shared)),
        (
            "new space",
            format!(
                "{} held, {} read by an image, {} taken from the group (all copies of {})",
                format_size(c.store_held),
                format_size(c.store_live),
                format_size(c.store_chunks),
                c.origin
            ),
        ),
        ("metadata memory", format_size(c.metadata_memory)),
        ("state", "ok".to_owned()),
        ("warning", "-".to_owned()),
    ];
    for (field, value) in want {
        assert_eq!(row(&out, field), [field, value.as_str()], "{out}");
    }
    assert_eq!(c.tracks_diverged, 2);
}

#[test]
fn delete_prints_a_line_and_the_fold_job_or_the_json() {
    let p = setup();
    let pool = p.path();
    for c in ["c0", "c1", "c2", "c3"] {
        ok(pool, &["copy", "create", "v0", c]);
    }
    // The original writes after its copy points: its new data lives in
    // the family's new space.
    p.fill("v0", 0, 128 * KIB, 5);
    assert_eq!(ok(pool, &["copy", "delete", "c0"]), "deleted copy c0\n");
    let r: CopyDeleteInfo = typed(pool, &["copy", "delete", "c1"]);
    assert_eq!((r.name.as_str(), r.job.is_none()), ("c1", true));
    ok(pool, &["copy", "delete", "c2"]);
    // The last copy of a row-mode original: a job moves its data back.
    assert_eq!(
        ok(pool, &["copy", "delete", "c3"]),
        "deleted copy c3\n\
         the original's new data moves back into its own space:\n\
         job 1 running: copy-fold volume v0: move its new data back into its own space\n\
         follow it with `ferrosan job wait 1`\n"
    );
    p.d.wait_job(1);
    assert_eq!(json(pool, &["copy", "list"]), serde_json::json!([]));
    ok(pool, &["copy", "create", "v0", "c4"]);
    p.fill("v0", 0, 64 * KIB, 6);
    assert_eq!(
        ok(pool, &["copy", "delete", "c4", "--wait"]),
        "deleted copy c4\n\
         the original's new data moves back into its own space:\n\
         job 2 done: copy-fold volume v0: move its new data back into its own space\n"
    );
    ok(pool, &["copy", "create", "v0", "c5"]);
    p.fill("v0", 0, 64 * KIB, 7);
    let r: CopyDeleteInfo = typed(pool, &["copy", "delete", "c5", "--wait"]);
    let job = r.job.expect("a fold job");
    assert_eq!(job.state, JobState::Done, "as it ended");
    assert_eq!(job.done, job.total, "as it ended");
    // With nothing written since the copy point there is nothing to fold.
    ok(pool, &["copy", "create", "v0", "c6"]);
    assert_eq!(ok(pool, &["copy", "delete", "c6"]), "deleted copy c6\n");
}

/// The newest job's id.
fn last_job(pool: &Path) -> u64 {
    let jobs = json(pool, &["job", "list"]);
    jobs.as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["id"].as_u64())
        .max()
        .unwrap_or_else(|| panic!("no job: {jobs}"))
}

#[test]
fn restore_says_what_it_restored_and_its_job() {
    let p = setup();
    let pool = p.path();
    ok(pool, &["copy", "create", "v0", "r0"]);
    assert_eq!(
        ok(pool, &["copy", "restore", "r0"]),
        "volume v0 now shows the image of copy r0\nno data has to move\n"
    );
    let r: CopyRestoreInfo = typed(pool, &["copy", "restore", "r0", "--wait"]);
    assert!(r.job.is_none());
    ok(
        pool,
        &["volume", "create", "w0", "--group", "g1", "--size", "1M"],
    );
    ok(pool, &["copy", "create", "w0", "c1", "--mode", "cow"]);
    p.fill("w0", 0, 128 * KIB, 4);
    let out = ok(pool, &["copy", "restore", "c1"]);
    let id = last_job(pool);
    assert_eq!(
        out,
        format!(
            "volume w0 now shows the image of copy c1\n\
             job {id} running: copy-restore volume w0: move c1's image into its own space\n\
             follow it with `ferrosan job wait {id}`\n"
        )
    );
    p.d.wait_job(id);
    p.fill("w0", 0, 128 * KIB, 4);
    let out = ok(pool, &["copy", "restore", "c1", "--wait"]);
    let id = last_job(pool);
    assert_eq!(
        out,
        format!(
            "volume w0 now shows the image of copy c1\n\
             job {id} done: copy-restore volume w0: move c1's image into its own space\n"
        )
    );
    p.fill("w0", 0, 128 * KIB, 4);
    let r: CopyRestoreInfo = typed(pool, &["copy", "restore", "c1", "--wait"]);
    assert_eq!((r.volume.as_str(), r.from.as_str()), ("w0", "c1"));
    let job = r.job.expect("a job");
    assert_eq!(job.state, JobState::Done, "as it ended");
    assert_eq!(job.done, job.total, "as it ended");
}

#[test]
fn split_prints_each_sides_new_data_what_moves_and_the_job() {
    let p = setup();
    let pool = p.path();
    ok(pool, &["copy", "create", "v0", "c0"]);
    p.fill("v0", 0, 64 * KIB, 1);
    p.fill("c0", 512 * KIB, 128 * KIB, 2);
    assert_eq!(
        ok(pool, &["copy", "split", "c0"]),
        "splitting copy c0 from its original (policy move-smaller)\n\
         new data of the original: 1 track\n\
         new data of the copy: 2 tracks\n\
         moving: the new data of v0 into the space both share\n\
         job 1 running: copy-split split v0 from c0: move v0's new data into the space \
         both share\n\
         follow it with `ferrosan job wait 1`\n"
    );
    p.d.wait_job(1);

    ok(
        pool,
        &["volume", "create", "w0", "--group", "g1", "--size", "1M"],
    );
    ok(pool, &["copy", "create", "w0", "k0"]);
    p.fill("w0", 0, 64 * KIB, 1);
    p.fill("k0", 512 * KIB, 128 * KIB, 2);
    let out = ok(
        pool,
        &["copy", "split", "k0", "--policy", "move-larger", "--wait"],
    );
    assert!(out.contains("(policy move-larger)\n"), "{out}");
    assert!(
        out.contains("moving: the new data of k0 into the space both share\n"),
        "{out}"
    );
    assert!(
        out.ends_with(
            "job 2 done: copy-split split k0 from w0: move k0's new data into the space \
             both share\n"
        ),
        "{out}"
    );

    ok(
        pool,
        &["volume", "create", "u0", "--group", "g1", "--size", "1M"],
    );
    ok(pool, &["copy", "create", "u0", "a1", "--mode", "cow"]);
    let info: CopySplitInfo = typed(pool, &["copy", "split", "a1", "--wait"]);
    assert_eq!(
        (info.n_orig, info.n_copy, info.policy),
        (0, 0, SplitPolicy::MoveSmaller)
    );
    assert!(info.job.is_none());
    ok(
        pool,
        &["volume", "create", "u1", "--group", "g1", "--size", "1M"],
    );
    ok(pool, &["copy", "create", "u1", "a2", "--mode", "cow"]);
    let out = ok(pool, &["copy", "split", "a2"]);
    assert!(
        out.contains("new data of the original: 0 tracks\n"),
        "{out}"
    );
    assert!(
        out.ends_with("moving: nothing, u1 has no new data to move\n"),
        "{out}"
    );
}

#[test]
fn api_errors_exit_1_with_the_message() {
    let p = setup();
    let pool = p.path();
    let missing = "unknown copy \"nope\": see `ferrosan copy list`";
    for verb in ["show", "delete", "restore", "split"] {
        assert_eq!(fails(pool, &["copy", verb, "nope"]), missing, "{verb}");
    }
    assert_eq!(
        fails(pool, &["copy", "create", "v9", "c0"]),
        "unknown volume \"v9\": see `ferrosan volume list`"
    );
    ok(pool, &["copy", "create", "v0", "c0"]);
    assert_eq!(
        fails(pool, &["copy", "create", "v0", "c0"]),
        "a volume named c0 already exists"
    );
    assert_eq!(
        fails(pool, &["--json", "copy", "show", "v0"]),
        "volume v0 is the origin of copies, not a copy itself"
    );
}

#[test]
fn bad_names_are_usage_errors_naming_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    for (args, want) in [
        (
            vec!["copy", "create", "v0", "c0", "--meta", "btree"],
            "unknown metadata scheme \"btree\": use full-pointer, changed-pointer, bitmap, \
             multilevel-bitmap or partial-bitmap",
        ),
        (
            vec!["copy", "create", "v0", "c0", "--mode", "mirror"],
            "unknown copy mode \"mirror\": use cow or row",
        ),
        (
            vec!["copy", "split", "c0", "--policy", "biggest"],
            "unknown split policy \"biggest\": use move-smaller or move-larger",
        ),
    ] {
        let r = ferrosan(p, &args);
        assert_eq!(r.code, 2, "{args:?}");
        assert!(r.stderr.contains(want), "{args:?}: {}", r.stderr);
        assert_eq!(r.stdout, "");
    }
    assert_eq!(ferrosan(p, &["copy", "create", "v0"]).code, 2);
    assert_eq!(ferrosan(p, &["copy", "clone", "v0"]).code, 2);
}
