//! End to end: jobs through the real daemon's job runner — pause, resume,
//! rate limits and cancel on real work, `job wait` bounded on a job that
//! makes no progress.

mod harness;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use harness::*;
use serde_json::Value;

fn id_of(job: &Value) -> String {
    job["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no job id in {job}"))
        .to_string()
}

/// Runs the CLI; fails the test if it has not exited within `secs`.
fn cli_within(d: &Daemon, secs: u64, args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .arg("--pool")
        .arg(&d.pool)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ferrosan");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(out) => out.expect("ferrosan output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("ferrosan {args:?} did not exit within {secs} s");
        }
    }
}

/// Pauses job `id` and waits (bounded) until the runner has stopped it:
/// the answer comes before the job's current step ends.
fn pause(d: &Daemon, id: &str) -> Value {
    let asked = d.json(&["job", "pause", id]);
    assert!(
        asked["state"] == "running" || asked["state"] == "paused",
        "{asked}"
    );
    let mut job = asked;
    poll(&format!("job {id} to pause"), 30, || {
        job = d.json(&["job", "show", id]);
        job["state"] == "paused"
    });
    job
}

/// `40.0%`, as the CLI prints a job's progress.
fn percent(job: &Value) -> String {
    let (done, total) = (
        job["done"].as_u64().unwrap(),
        job["total"].as_u64().unwrap(),
    );
    let tenths = done.min(total) * 1000 / total.max(1);
    format!("{}.{}%", tenths / 10, tenths % 10)
}

/// A raid1 group `g` over a0, a1 (1 GiB each) holding volume `v` (512 MiB)
/// with patterns in it, and a free disk `n` to replace a1 with: a job of a
/// few seconds, long enough to pause right after it starts.
fn mirror(d: &Daemon) {
    d.group("g", "raid1", &["a0", "a1"], "1G");
    d.ok(&["volume", "create", "v", "--group", "g", "--size", "512M"]);
    d.ok(&["disk", "add", "n", "--size", "1G"]);
    qemu_io(
        &d.export("v"),
        &["write -P 0x5a 0 64M", "write -P 0x5b 300M 10M", "flush"],
    );
}

fn mirror_data_ok(d: &Daemon) {
    qemu_io(
        &d.export("v"),
        &[
            "read -P 0x5a 0 64M",
            "read -P 0 64M 1M",
            "read -P 0x5b 300M 10M",
            "read -P 0 511M 1M",
        ],
    );
}

#[test]
fn job_wait_gives_up_on_a_job_that_makes_no_progress() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    mirror(&d);
    let job = d.json(&["disk", "replace", "a1", "n"]);
    let id = id_of(&job);
    pause(&d, &id);
    // Bounded: it fails, naming the job, its state and how far it got.
    let o = cli_within(&d, 30, &["job", "wait", &id, "--timeout", "1s"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "", "{err}");
    let now = d.json(&["job", "show", &id]);
    let unit = now["unit_bytes"].as_u64().unwrap();
    let size = |n: &str| ferrosan::units::format_size(now[n].as_u64().unwrap() * unit);
    assert_eq!(
        err,
        format!(
            "error: job {id} (replace: {}) made no progress for 1s: paused at {} ({} of {}); it \
             goes on in the daemon: resume it with `ferrosan job resume {id}`, or wait longer \
             with `ferrosan job wait {id} --timeout 1h` (0: no limit)\n",
            now["target"].as_str().unwrap(),
            percent(&now),
            size("done"),
            size("total"),
        )
    );
    // With --json too: no JSON of a job that did not finish.
    let o = cli_within(
        &d,
        30,
        &["--json", "job", "wait", &id, "--timeout", "500ms"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("made no progress for 500ms"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A usage error for a bad bound.
    let o = d.cli(&["job", "wait", &id, "--timeout", "soon"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("invalid duration \"soon\""),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The job itself went on waiting; resumed, it finishes and a wait
    // with the default bound sees it done.
    d.ok(&["job", "resume", &id]);
    let o = cli_within(&d, 120, &["--json", "job", "wait", &id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let done: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(done["state"], "done", "{done}");
    mirror_data_ok(&d);
}

#[test]
fn pause_rate_resume_and_cancel_drive_the_real_job_runner() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &[]);
    mirror(&d);
    let job = d.json(&["disk", "replace", "a1", "n"]);
    let id = id_of(&job);
    assert_eq!(job["kind"], "replace", "{job}");
    let held = pause(&d, &id);
    // Paused, it makes no progress: a bounded wait sees none for a second.
    let o = cli_within(&d, 30, &["job", "wait", &id, "--timeout", "1s"]);
    assert_eq!(o.status.code(), Some(1));
    let still = d.json(&["job", "show", &id]);
    assert_eq!(still["state"], "paused", "{still}");
    assert_eq!(still["done"], held["done"], "a paused job moved");
    // A rate limit set while paused shows, in JSON and in the table.
    let r = d.json(&["job", "rate", &id, "16M"]);
    assert_eq!(r["rate_limit"], 16u64 << 20, "{r}");
    let table = d.ok(&["job", "list"]);
    let row = table
        .lines()
        .find(|l| l.contains("replace"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("paused") && row.contains("16.0 MiB/s"),
        "{table}"
    );
    // While it runs, the new disk holds slot 1, being filled.
    let slot1 = |d: &Daemon| {
        let g = d.json(&["group", "show", "g"]);
        assert_eq!(g["disks"], serde_json::json!(["a0", "n"]), "{g}");
        assert_eq!(g["members"][1]["state"], "rebuilding", "{g}");
        assert_eq!(g["health"], "rebuilding", "{g}");
    };
    slot1(&d);
    // Paused and limited across a restart.
    d.restart();
    let after = d.json(&["job", "show", &id]);
    assert_eq!(after["state"], "paused", "{after}");
    assert_eq!(after["rate_limit"], 16u64 << 20, "{after}");
    slot1(&d);
    // Resumed, it runs again: its count of work done grows.
    let from = after["done"].as_u64().unwrap();
    d.ok(&["job", "resume", &id]);
    poll(&format!("job {id} to move on after resume"), 60, || {
        let j = d.json(&["job", "show", &id]);
        j["state"] == "done" || j["done"].as_u64().unwrap() > from
    });
    // Unlimited again, it finishes; the new disk holds the data.
    let r = d.json(&["job", "rate", &id, "0"]);
    assert_eq!(r["rate_limit"], 0, "{r}");
    let done = d.wait_job(id.parse().unwrap());
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(
        d.json(&["group", "show", "g"])["disks"],
        serde_json::json!(["a0", "n"])
    );
    d.ok(&["disk", "fail", "a0"]);
    mirror_data_ok(&d);
    // Finished, it takes no more orders.
    for verb in ["pause", "resume", "cancel"] {
        let err = d.fails(&["job", verb, &id]);
        assert!(err.contains(&format!("job {id} is done")), "{verb}: {err}");
    }

    // Cancel: the group keeps its disk, the wait fails and says so.
    d.ok(&["disk", "reinstate", "a0", "--wait"]);
    let job = d.json(&["disk", "replace", "n", "a1"]);
    let id = id_of(&job);
    pause(&d, &id);
    let c = d.json(&["job", "cancel", &id]);
    assert!(c["state"] == "cancelled" || c["state"] == "paused", "{c}");
    let o = cli_within(&d, 60, &["job", "wait", &id]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with(&format!(
            "error: job {id} cancelled (replace group g slot 1"
        )),
        "{err}"
    );
    let g = d.json(&["group", "show", "g"]);
    assert_eq!(g["disks"], serde_json::json!(["a0", "n"]), "{g}");
    assert_eq!(g["health"], "optimal", "{g}");
    mirror_data_ok(&d);
    d.stop();
}
