//! The `ferrosan` binary as a client, against the API served over the
//! in-memory sim: tables, `--json` (the API's JSON), error messages and
//! exit codes, `--wait`.

mod common;

use std::sync::Arc;

use common::{Server, Sim, fails, ferrosan, json, ok, request};
use serde_json::Value;

const GIB: u64 = 1 << 30;

fn setup() -> Server {
    let s = Server::start(Arc::new(Sim::default()));
    let p = s.pool();
    for d in ["d0", "d1", "d2"] {
        ok(p, &["disk", "add", d, "--size", "1G"]);
    }
    ok(
        p,
        &[
            "group", "create", "g0", "--raid", "raid1", "--disks", "d0,d1",
        ],
    );
    s
}

#[test]
fn disk_add_prints_a_line_or_the_json() {
    let s = Server::start(Arc::new(Sim::default()));
    let p = s.pool();
    let out = ok(p, &["disk", "add", "d0", "--size", "1.5G"]);
    assert_eq!(out, "added disk d0: 1.5 GiB at /sim/d0.img\n");
    let v = json(p, &["disk", "add", "d1", "--size", "64K", "--spare"]);
    assert_eq!(v["name"], "d1");
    assert_eq!(v["size"], 65536);
    assert_eq!(v["status"], "spare");
}

#[test]
fn json_output_is_the_apis_json() {
    let s = setup();
    let p = s.pool();
    ok(
        p,
        &["volume", "create", "v0", "--group", "g0", "--size", "1M"],
    );
    for (args, path) in [
        (vec!["disk", "list"], "/v1/disks"),
        (vec!["disk", "show", "d0"], "/v1/disks/d0"),
        (vec!["group", "list"], "/v1/groups"),
        (vec!["group", "show", "g0"], "/v1/groups/g0"),
        (vec!["volume", "list"], "/v1/volumes"),
        (vec!["volume", "show", "v0"], "/v1/volumes/v0"),
        (vec!["pool", "show"], "/v1/pool"),
        (vec!["job", "list"], "/v1/jobs"),
    ] {
        let api = request(&s.socket, "GET", path, None).json();
        assert_eq!(json(p, &args), api, "{args:?}");
    }
    let text = ok(p, &["--json", "disk", "show", "d0"]);
    assert!(
        text.starts_with("{\n  \"name\": \"d0\",\n  \"path\""),
        "pretty, in API order: {text}"
    );
}

#[test]
fn lists_are_tables_with_human_sizes() {
    let s = setup();
    let p = s.pool();
    let out = ok(p, &["disk", "list"]);
    for col in [
        "NAME",
        "PATH",
        "SIZE",
        "ALLOCATED",
        "STATUS",
        "GROUP",
        "READS",
        "WRITES",
        "READ BYTES",
        "WRITTEN BYTES",
        "ERRORS",
    ] {
        assert!(out.contains(col), "{col} missing:\n{out}");
    }
    let d2 = out.lines().find(|l| l.contains("d2")).unwrap();
    let gib = ferrosan::cli::format_size(GIB);
    assert!(d2.contains(&gib) && d2.contains("/sim/d2.img"), "{d2}");
    let out = ok(p, &["group", "list"]);
    for col in [
        "GROUP",
        "VOLUMES",
        "DISKS",
        "RAID LEVEL",
        "CAPACITY",
        "FREE",
        "HEALTH",
    ] {
        assert!(out.contains(col), "{col} missing:\n{out}");
    }
    let g0 = out.lines().find(|l| l.contains("g0")).unwrap();
    assert!(
        g0.contains("d0,d1") && g0.contains("raid1") && g0.contains("optimal"),
        "{g0}"
    );
}

#[test]
fn api_errors_go_to_stderr_with_exit_1() {
    let s = setup();
    let p = s.pool();
    assert_eq!(
        fails(p, &["disk", "add", "d0", "--size", "1G"]),
        "disk d0 already exists"
    );
    assert_eq!(
        fails(p, &["disk", "show", "nope"]),
        "no disk named \"nope\": `ferrosan disk list` shows them"
    );
    assert_eq!(
        fails(
            p,
            &["volume", "create", "v", "--group", "g0", "--size", "1000"]
        ),
        "size 1000 B is not a multiple of the track size, 64.0 KiB"
    );
    assert_eq!(
        fails(
            p,
            &["group", "create", "g1", "--raid", "concat", "--disks", "d0"]
        ),
        "disk d0 is in group g0"
    );
    assert_eq!(
        fails(p, &["--json", "job", "show", "99"]),
        "no job 99",
        "--json errors are on stderr too"
    );
}

#[test]
fn names_with_odd_characters_reach_the_daemon_intact() {
    let s = Server::start(Arc::new(Sim::default()));
    let p = s.pool();
    ok(p, &["disk", "add", "a/b c?", "--size", "4K"]);
    let v = json(p, &["disk", "show", "a/b c?"]);
    assert_eq!(v["name"], "a/b c?");
    ok(p, &["disk", "remove", "a/b c?"]);
    assert_eq!(json(p, &["disk", "list"]), serde_json::json!([]));
}

#[test]
fn deletes_print_a_line_or_nothing_with_json() {
    let s = setup();
    let p = s.pool();
    ok(
        p,
        &["volume", "create", "v0", "--group", "g0", "--size", "64K"],
    );
    assert_eq!(
        ok(p, &["volume", "delete", "v0", "--force"]),
        "deleted volume v0\n"
    );
    ok(
        p,
        &["volume", "create", "v1", "--group", "g0", "--size", "64K"],
    );
    assert_eq!(ok(p, &["--json", "volume", "delete", "v1"]), "");
}

#[test]
fn replace_with_wait_prints_the_final_state() {
    let s = setup();
    let p = s.pool();
    let out = ok(p, &["disk", "replace", "d0", "d2", "--wait"]);
    assert_eq!(out, "job 1 done: replace group g0 disk d0 -> disk d2\n");
    let v = json(p, &["job", "show", "1"]);
    assert_eq!(
        (v["state"].as_str(), v["done"].as_u64()),
        (Some("done"), Some(4))
    );
}

#[test]
fn a_failed_job_exits_1_with_its_message() {
    let s = setup();
    let p = s.pool();
    ok(p, &["disk", "add", "bad", "--size", "1G"]);
    let message = fails(p, &["disk", "replace", "d1", "bad", "--wait"]);
    assert_eq!(
        message,
        "job 1 failed (replace group g0 disk d1 -> disk bad): write error on the new disk at offset 0"
    );
    let r = ferrosan(p, &["--json", "job", "wait", "1"]);
    assert_eq!(r.code, 1);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["state"], "failed");
    assert!(r.stderr.starts_with("error: job 1 failed"), "{}", r.stderr);
}

#[test]
fn job_controls() {
    let s = setup();
    let p = s.pool();
    let out = ok(p, &["disk", "replace", "d0", "d2"]);
    assert_eq!(
        out,
        "job 1 running: replace group g0 disk d0 -> disk d2\nfollow it with `ferrosan job wait 1`\n"
    );
    assert_eq!(
        json(p, &["job", "rate", "1", "100M"])["rate_limit"],
        100 << 20
    );
    assert_eq!(
        ok(p, &["job", "rate", "1", "0"]),
        "job 1 runs without a rate limit\n"
    );
    assert_eq!(json(p, &["job", "pause", "1"])["state"], "paused");
    assert_eq!(
        ok(p, &["job", "resume", "1"]),
        "job 1 running: replace group g0 disk d0 -> disk d2\n"
    );
    assert_eq!(json(p, &["job", "cancel", "1"])["state"], "cancelled");
    assert_eq!(fails(p, &["job", "pause", "1"]), "job 1 has finished");
    let r = ferrosan(p, &["job", "wait", "1"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.starts_with("error: job 1 cancelled"),
        "{}",
        r.stderr
    );
}

#[test]
fn inject_sends_the_rules() {
    let s = setup();
    let p = s.pool();
    let out = ok(
        p,
        &[
            "disk",
            "inject",
            "d0",
            "--read-error-at",
            "1M,4K",
            "--error-rate",
            "0.5",
        ],
    );
    assert_eq!(out, "faults of disk d0: read 1048576+4096, rate 0.5\n");
}

#[test]
fn without_a_daemon_the_message_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let msg = fails(p, &["disk", "list"]);
    let d = p.display();
    assert_eq!(
        msg,
        format!(
            "no ferrosan daemon is running on pool {d} (no {d}/api.sock): start one with `ferrosan --pool {d} serve`"
        )
    );
    drop(std::os::unix::net::UnixListener::bind(p.join("api.sock")).unwrap());
    let msg = fails(p, &["job", "list"]);
    assert!(msg.contains("api.sock refuses connections"), "{msg}");
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let r = ferrosan(p, &["disk", "add", "d0", "--size", "12Q"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("invalid size \"12Q\": use a number and a unit: K, M, G, T, P or KiB"),
        "{}",
        r.stderr
    );
    let r = ferrosan(p, &["disk", "add", "d0", "--size", "-1"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("size -1 is negative: give a size of 0 or more, e.g. 10G"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("-- -1"), "{}", r.stderr);
    assert_eq!(ferrosan(p, &["volume", "frobnicate"]).code, 2);
    assert_eq!(ferrosan(p, &["job", "show", "x"]).code, 2);
    assert_eq!(ferrosan(p, &["disk", "inject", "d0"]).code, 2);
    assert_eq!(ferrosan(p, &["--help"]).code, 0);
}

#[test]
fn hidden_openapi_command_prints_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(dir.path(), &["openapi"]);
    assert_eq!(out, ferrosan::api::openapi_json());
    let help = ok(dir.path(), &["--help"]);
    assert!(!help.contains("openapi"), "hidden from help");
}
