//! End to end: the real daemon (`ferrosan serve`) on a temporary pool, driven
//! by the CLI.
//!

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ferrosan");

/// A daemon on its own pool; stopped (SIGTERM, then SIGKILL) on drop.
struct Daemon {
    pool: tempfile::TempDir,
    child: Child,
}

impl Daemon {
    fn start() -> Daemon {
        let pool = tempfile::tempdir().unwrap();
        // Port 0: the daemon binds a free port itself. (Binding one here,
        // dropping it and passing its number on raced other tests for it.)
        let child = Command::new(BIN)
            .arg("--pool")
            .arg(pool.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut d = Daemon { pool, child };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let socket = self.pool.path().join("api.sock");
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the daemon exited before serving: {status}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no api.sock after 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn path(&self) -> PathBuf {
        self.pool.path().to_owned()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(pool: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--pool")
        .arg(pool)
        .args(args)
        .env_remove("FERROSAN_POOL")
        .output()
        .unwrap()
}

fn json(pool: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run(pool, &all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON: {e}"))
}

/// The command fails with exit 1; its message.
fn error(pool: &Path, args: &[&str]) -> String {
    let out = run(pool, args);
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

fn names(list: &Value) -> Vec<String> {
    let items = list.as_array().expect("a list");
    items
        .iter()
        .map(|x| x["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn disks_groups_and_volumes_through_the_cli() {
    let d = Daemon::start();
    let p = d.path();
    for name in ["t-d0", "t-d1", "t-d2"] {
        let disk = json(&p, &["disk", "add", name, "--size", "64M"]);
        assert_eq!(disk["name"], name);
        assert_eq!(disk["size"], 64 << 20);
    }
    assert!(names(&json(&p, &["disk", "list"])).contains(&"t-d1".to_owned()));

    let g = json(
        &p,
        &[
            "group",
            "create",
            "t-g0",
            "--raid",
            "raid5",
            "--disks",
            "t-d0,t-d1,t-d2",
        ],
    );
    assert_eq!(g["raid"], "raid5");
    assert_eq!(g["disks"], serde_json::json!(["t-d0", "t-d1", "t-d2"]));
    assert!(g["capacity"].as_u64().unwrap() > 0);

    let v = json(
        &p,
        &[
            "volume", "create", "t-v0", "--group", "t-g0", "--size", "16M",
        ],
    );
    assert_eq!(v["size"], 16 << 20);
    assert_eq!(v["track_size"], 65536);
    assert!(v["export"].as_str().unwrap().ends_with("/t-v0"));
    let shown = json(&p, &["volume", "show", "t-v0"]);
    assert_eq!(shown["group"], "t-g0");

    let grown = json(&p, &["volume", "grow", "t-v0", "--size", "32M"]);
    assert_eq!(grown["size"], 32 << 20);
    let group = json(&p, &["group", "show", "t-g0"]);
    assert_eq!(group["volumes"], serde_json::json!(["t-v0"]));

    let table = String::from_utf8(run(&p, &["group", "list"]).stdout).unwrap();
    assert!(
        table.contains("RAID LEVEL") && table.contains("t-g0"),
        "{table}"
    );

    assert!(run(&p, &["volume", "delete", "t-v0"]).status.success());
    assert!(run(&p, &["group", "delete", "t-g0"]).status.success());
    assert!(run(&p, &["disk", "remove", "t-d2"]).status.success());
    assert!(!names(&json(&p, &["disk", "list"])).contains(&"t-d2".to_owned()));
}

#[test]
fn errors_name_the_problem() {
    let d = Daemon::start();
    let p = d.path();
    let msg = error(&p, &["disk", "show", "no-such-disk"]);
    assert!(msg.contains("no-such-disk"), "{msg}");
    let msg = error(
        &p,
        &[
            "group", "create", "t-g", "--raid", "raid1", "--disks", "t-x,t-y",
        ],
    );
    assert!(msg.contains("t-x"), "{msg}");

    json(&p, &["disk", "add", "t-d0", "--size", "64M"]);
    let msg = error(&p, &["disk", "add", "t-d0", "--size", "64M"]);
    assert!(msg.contains("t-d0") && msg.contains("exists"), "{msg}");

    json(&p, &["disk", "add", "t-d1", "--size", "64M"]);
    json(
        &p,
        &[
            "group",
            "create",
            "t-g0",
            "--raid",
            "raid1",
            "--disks",
            "t-d0,t-d1",
        ],
    );
    let msg = error(
        &p,
        &[
            "volume", "create", "t-v", "--group", "t-g0", "--size", "1000",
        ],
    );
    assert!(
        msg.contains("multiple"),
        "size not a multiple of the track: {msg}"
    );
    json(
        &p,
        &["volume", "create", "t-v", "--group", "t-g0", "--size", "1M"],
    );
    let msg = error(
        &p,
        &["volume", "create", "t-v", "--group", "t-g0", "--size", "1M"],
    );
    assert!(msg.contains("t-v") && msg.contains("exists"), "{msg}");
    let msg = error(
        &p,
        &[
            "volume", "create", "t-big", "--group", "t-g0", "--size", "1T",
        ],
    );
    assert!(msg.contains("space"), "{msg}");
}

#[test]
fn pool_show_and_socket_mode() {
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::start();
    let p = d.path();
    let info = json(&p, &["pool", "show"]);
    assert_eq!(info["api_socket"], p.join("api.sock").display().to_string());
    let mode = std::fs::metadata(p.join("api.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// The command's whole stderr, which must be one error line (exit 1).
fn error_line(pool: &Path, args: &[&str]) -> String {
    let msg = error(pool, args);
    assert_eq!(msg.lines().count(), 1, "{msg}");
    msg.trim_end().to_owned()
}

#[test]
fn a_copy_that_does_not_fit_names_the_scheme_its_need_and_the_one_that_fits() {
    // The default pool: vol0 (2 GiB) in g0, a raid5 of 4 x 1 GiB with
    // about 1 GiB free.
    let d = Daemon::start();
    let p = d.path();
    let free = json(&p, &["group", "show", "g0"])["free"].as_u64().unwrap();
    assert!(free < 2 << 30, "{free}");
    let free = ferrosan::units::format_size(free);
    let msg = error_line(&p, &["copy", "create", "vol0", "c0", "--meta", "bitmap"]);
    assert_eq!(
        msg,
        format!(
            "error: no room for a bitmap copy of vol0 in group g0: bitmap reserves new space the \
             size of the whole volume up front for each set of changes it tracks (2 x 2.0 GiB = \
             4.0 GiB here), and g0 has {free} free; partial-bitmap, changed-pointer and \
             full-pointer take new space only as data changes: use --meta partial-bitmap (the \
             default for vol0)"
        )
    );
    let msg = error_line(
        &p,
        &[
            "copy",
            "create",
            "vol0",
            "c0",
            "--meta",
            "multilevel-bitmap",
            "--mode",
            "cow",
        ],
    );
    assert!(
        msg.starts_with("error: no room for a multilevel-bitmap copy of vol0 in group g0:"),
        "{msg}"
    );
    // Nothing was kept, and the scheme suggested fits.
    assert_eq!(json(&p, &["copy", "list"]), serde_json::json!([]));
    let c = json(
        &p,
        &["copy", "create", "vol0", "c0", "--meta", "partial-bitmap"],
    );
    assert_eq!(c["scheme"], "partial-bitmap");
}

#[test]
fn a_finished_job_refuses_a_rate_limit_as_it_refuses_a_pause() {
    let d = Daemon::start();
    let p = d.path();
    for disk in ["t-a", "t-b", "t-c"] {
        json(&p, &["disk", "add", disk, "--size", "64M"]);
    }
    json(
        &p,
        &[
            "group", "create", "t-g", "--raid", "raid1", "--disks", "t-a,t-b",
        ],
    );
    let job = json(&p, &["disk", "replace", "t-b", "t-c", "--wait"]);
    assert_eq!(job["state"], "done", "{job}");
    let id = job["id"].as_u64().unwrap().to_string();
    assert_eq!(
        error_line(&p, &["job", "pause", &id]),
        format!("error: job {id} is done; it cannot be paused")
    );
    assert_eq!(
        error_line(&p, &["job", "rate", &id, "10M"]),
        format!("error: job {id} is done; its rate limit cannot change")
    );
    assert_eq!(json(&p, &["job", "show", &id])["rate_limit"], 0);
}

#[test]
fn extending_a_raid5_group_says_what_to_do_instead() {
    let d = Daemon::start();
    let p = d.path();
    json(&p, &["disk", "add", "t-d4", "--size", "64M"]);
    let msg = error_line(&p, &["group", "extend", "g0", "--disks", "t-d4"]);
    assert_eq!(
        msg,
        "error: group g0 is raid5: only concat groups grow by adding disks; make a new group \
         of the new disks (`ferrosan group create NAME --raid raid5 --disks ...`) and create \
         volumes there"
    );
    // What it says to do works.
    json(&p, &["disk", "add", "t-d5", "--size", "64M"]);
    json(&p, &["disk", "add", "t-d6", "--size", "64M"]);
    let g = json(
        &p,
        &[
            "group",
            "create",
            "t-g1",
            "--raid",
            "raid5",
            "--disks",
            "t-d4,t-d5,t-d6",
        ],
    );
    assert_eq!(g["raid"], "raid5");
}

#[test]
fn serve_refuses_json_with_a_usage_error() {
    let pool = tempfile::tempdir().unwrap();
    for args in [
        &["serve", "--json", "--listen", "127.0.0.1:0"][..],
        &["--json", "serve", "--listen", "127.0.0.1:0"],
    ] {
        let child = Command::new(BIN)
            .arg("--pool")
            .arg(pool.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = rustix::process::Pid::from_child(&child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(child.wait_with_output()));
        let Ok(out) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            panic!("ferrosan {args:?} served instead of refusing --json");
        };
        let out = out.unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(out.stdout, b"", "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "error: serve has no --json output: start it without --json, then \
             `ferrosan --json pool show` gives its addresses as JSON\n"
        );
    }
    assert!(
        !pool.path().join("ferrosan.redb").exists(),
        "no pool was made"
    );
}

#[test]
fn serve_refuses_a_poll_window_out_of_range_before_making_a_pool() {
    let pool = tempfile::tempdir().unwrap();
    for bad in ["100001", "3ms"] {
        let out = Command::new(BIN)
            .arg("--pool")
            .arg(pool.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--poll-us", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--poll-us {bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("invalid value") && err.contains("--poll-us"),
            "--poll-us {bad}: {err}"
        );
    }
    assert!(
        !pool.path().join("ferrosan.redb").exists(),
        "no pool was made"
    );
}
