//! `ferrosan copy ...` against the API served over the in-memory sim: the
//! human output of each command, `--json` (the API's JSON, read back into
//! the API's types), `--wait`, and usage errors.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{Server, Sim, fails, ferrosan, json, ok, request};
use ferrosan::api::views::*;
use ferrosan::cli::format_size;
use ferrosan::copy::map::Scheme;
use serde::de::DeserializeOwned;

/// 1 MiB in 64 KiB tracks: 16 tracks; a sim copy holds 2 of its own and,
/// in row mode, its original 1 (so `--wait` needs one look at the job).
const VOL: &str = "1M";

fn setup() -> Server {
    let s = Server::start(Arc::new(Sim::default()));
    let p = s.pool();
    for d in ["d0", "d1"] {
        ok(p, &["disk", "add", d, "--size", "1G"]);
    }
    ok(
        p,
        &[
            "group", "create", "g0", "--raid", "raid1", "--disks", "d0,d1",
        ],
    );
    ok(
        p,
        &["volume", "create", "v0", "--group", "g0", "--size", VOL],
    );
    s
}

/// `--json ARGS` read into the API's type.
fn typed<T: DeserializeOwned>(p: &Path, args: &[&str]) -> T {
    let v = json(p, args);
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{args:?} ({e}): {v}"))
}

#[test]
fn create_prints_a_line_or_the_json() {
    let s = setup();
    let p = s.pool();
    let out = ok(p, &["copy", "create", "v0", "c0"]);
    let (size, track) = (format_size(1 << 20), format_size(64 << 10));
    assert_eq!(
        out,
        format!(
            "created copy c0 of v0: row (redirect-on-write: new writes go to new space), \
             changed-pointer metadata, \
             {size} in {track} tracks\n"
        )
    );
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
        "g0",
    ];
    let c: CopyInfo = typed(p, &args);
    assert_eq!(
        (c.mode, c.scheme),
        (CopyMode::Cow, Scheme::MultilevelBitmap)
    );
    assert!(c.read_only);
    let out = ok(p, &["copy", "create", "c1", "c2", "--read-only"]);
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
    let s = setup();
    let p = s.pool();
    ok(p, &["copy", "create", "v0", "c0"]);
    for (args, path) in [
        (vec!["copy", "list"], "/v1/copies"),
        (vec!["copy", "show", "c0"], "/v1/copies/c0"),
    ] {
        let api = request(&s.socket, "GET", path, None).json();
        assert_eq!(json(p, &args), api, "{args:?}");
    }
    let list: Vec<CopyInfo> = typed(p, &["copy", "list"]);
    assert_eq!(list.len(), 1);
    let one: CopyInfo = typed(p, &["copy", "show", "c0"]);
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
    let s = setup();
    let p = s.pool();
    ok(p, &["copy", "create", "v0", "c0", "--meta", "full-pointer"]);
    ok(p, &["copy", "create", "c0", "full1"]);
    ok(p, &["copy", "create", "v0", "broken2", "--mode", "cow"]);
    let out = ok(p, &["copy", "list"]);
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
    let tracks = 16u64;
    let c0 = [
        "c0",
        "v0",
        "v0",
        "row",
        "full-pointer",
        "2",
        &format_size(2 * 65536),
        &format_size(16 * tracks),
        "1",
        "ok",
    ];
    assert_eq!(row(&out, "c0"), c0);
    let full1 = row(&out, "full1");
    assert_eq!(full1[..5], ["full1", "c0", "v0", "row", "changed-pointer"]);
    assert_eq!((full1[8].as_str(), full1[9].as_str()), ("2", "ok"));
    assert_eq!(row(&out, "broken2")[9], "INVALID");
    let warnings: Vec<&str> = out.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(
        warnings,
        [
            "warning: copy broken2: its new space ran out: reads of this copy fail",
            "warning: copy full1: new space is 85% full: free space or delete copies",
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
    let s = setup();
    let p = s.pool();
    ok(
        p,
        &["copy", "create", "v0", "c0", "--mode", "cow", "--read-only"],
    );
    let out = ok(p, &["copy", "show", "c0"]);
    let want = [
        ("name", "c0".to_owned()),
        ("source", "v0".to_owned()),
        ("origin", "v0".to_owned()),
        ("depth", "1".to_owned()),
        (
            "mode",
            "cow (copy-on-write: old data is copied to new space before it is overwritten)"
                .to_owned(),
        ),
        ("metadata", "changed-pointer".to_owned()),
        ("access", "ro".to_owned()),
        ("size", format_size(1 << 20)),
        ("track size", format_size(65536)),
        ("diverged", format!("2 tracks ({})", format_size(2 * 65536))),
        ("space used", format_size(2 * 65536)),
        ("metadata memory", format_size(16 * 2)),
        ("state", "ok".to_owned()),
        ("warning", "-".to_owned()),
    ];
    for (field, value) in want {
        assert_eq!(row(&out, field), [field, value.as_str()], "{out}");
    }
}

#[test]
fn delete_prints_a_line_and_the_fold_job_or_the_json() {
    let s = setup();
    let p = s.pool();
    for c in ["c0", "c1", "c2", "c3"] {
        ok(p, &["copy", "create", "v0", c]);
    }
    assert_eq!(ok(p, &["copy", "delete", "c0"]), "deleted copy c0\n");
    let r: CopyDeleteInfo = typed(p, &["copy", "delete", "c1"]);
    assert_eq!((r.name.as_str(), r.job.is_none()), ("c1", true));
    ok(p, &["copy", "delete", "c2"]);
    // The last copy of a row-mode original: a job moves its data back.
    assert_eq!(
        ok(p, &["copy", "delete", "c3"]),
        "deleted copy c3\n\
         the original's new data moves back into its own space:\n\
         job 1 running: copy-fold volume v0: move its new data back into its own space\n\
         follow it with `ferrosan job wait 1`\n"
    );
    assert_eq!(json(p, &["copy", "list"]), serde_json::json!([]));
    ok(p, &["copy", "create", "v0", "c4"]);
    assert_eq!(
        ok(p, &["copy", "delete", "c4", "--wait"]),
        "deleted copy c4\n\
         the original's new data moves back into its own space:\n\
         job 2 done: copy-fold volume v0: move its new data back into its own space\n"
    );
    ok(p, &["copy", "create", "v0", "c5"]);
    let r: CopyDeleteInfo = typed(p, &["copy", "delete", "c5", "--wait"]);
    let job = r.job.expect("a fold job");
    assert_eq!((job.state, job.done), (JobState::Done, 1), "as it ended");
}

#[test]
fn restore_says_what_it_restored_and_its_job() {
    let s = setup();
    let p = s.pool();
    ok(p, &["copy", "create", "v0", "r0"]);
    ok(p, &["copy", "create", "v0", "c1", "--mode", "cow"]);
    assert_eq!(
        ok(p, &["copy", "restore", "r0"]),
        "volume v0 now shows the image of copy r0\nno data has to move\n"
    );
    assert_eq!(
        ok(p, &["copy", "restore", "c1"]),
        "volume v0 now shows the image of copy c1\n\
         job 1 running: restore volume v0 <- copy c1\n\
         follow it with `ferrosan job wait 1`\n"
    );
    assert_eq!(
        ok(p, &["copy", "restore", "c1", "--wait"]),
        "volume v0 now shows the image of copy c1\njob 2 done: restore volume v0 <- copy c1\n"
    );
    let r: CopyRestoreInfo = typed(p, &["copy", "restore", "c1"]);
    assert_eq!((r.volume.as_str(), r.from.as_str()), ("v0", "c1"));
    assert_eq!(r.job.map(|j| j.state), Some(JobState::Running));
    let r: CopyRestoreInfo = typed(p, &["copy", "restore", "c1", "--wait"]);
    let job = r.job.expect("a job");
    assert_eq!((job.state, job.done), (JobState::Done, 2), "as it ended");
    let r: CopyRestoreInfo = typed(p, &["copy", "restore", "r0", "--wait"]);
    assert!(r.job.is_none());
}

#[test]
fn split_prints_each_sides_new_data_what_moves_and_the_job() {
    let s = setup();
    let p = s.pool();
    ok(p, &["copy", "create", "v0", "c0"]);
    assert_eq!(
        ok(p, &["copy", "split", "c0"]),
        "splitting copy c0 from its original (policy move-smaller)\n\
         new data of the original: 1 track\n\
         new data of the copy: 2 tracks\n\
         moving: the new data of v0 into the space both share\n\
         job 1 running: split copy c0: new data of v0 -> shared space\n\
         follow it with `ferrosan job wait 1`\n"
    );
    let out = ok(
        p,
        &["copy", "split", "c0", "--policy", "move-larger", "--wait"],
    );
    assert!(out.contains("(policy move-larger)\n"), "{out}");
    assert!(
        out.contains("moving: the new data of c0 into the space both share\n"),
        "{out}"
    );
    assert!(
        out.ends_with("job 2 done: split copy c0: new data of c0 -> shared space\n"),
        "{out}"
    );
    let info: CopySplitInfo = typed(p, &["copy", "split", "c0", "--wait"]);
    assert_eq!(
        (info.n_orig, info.n_copy, info.policy),
        (1, 2, SplitPolicy::MoveSmaller)
    );
    assert_eq!(info.job.map(|j| j.state), Some(JobState::Done));

    ok(p, &["copy", "create", "v0", "a1", "--mode", "cow"]);
    let out = ok(p, &["copy", "split", "a1"]);
    assert!(
        out.contains("new data of the original: 0 tracks\n"),
        "{out}"
    );
    assert!(
        out.ends_with("moving: nothing, v0 has no new data to move\n"),
        "{out}"
    );
}

#[test]
fn api_errors_exit_1_with_the_message() {
    let s = setup();
    let p = s.pool();
    let missing = "no copy named \"nope\": `ferrosan copy list` shows them";
    for verb in ["show", "delete", "restore", "split"] {
        assert_eq!(fails(p, &["copy", verb, "nope"]), missing, "{verb}");
    }
    assert_eq!(
        fails(p, &["copy", "create", "v9", "c0"]),
        "no volume named \"v9\": `ferrosan volume list` shows them"
    );
    ok(p, &["copy", "create", "v0", "c0"]);
    assert_eq!(
        fails(p, &["copy", "create", "v0", "c0"]),
        "volume c0 already exists"
    );
    assert!(fails(p, &["--json", "copy", "show", "fail-no_space"]).contains("forced"));
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
