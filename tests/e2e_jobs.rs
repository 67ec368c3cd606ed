//! End to end: jobs through the real daemon's job runner — pause, resume,
//! rate limits and cancel on real work, `job wait` bounded on a job that
//! makes no progress, and `kill -9` in the middle of every kind of job
//! (rebuild, replace, resync, copy-restore, copy-split, copy-fold; the
//! copy jobs on raid0 and concat groups) and of writes to concat and raid0
//! volumes: each job goes on by itself after the restart, finishes, and
//! the data reads back through an NBD client.

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
    let r = d.json(&["job", "rate", &id, "16M", "--floor", "2M"]);
    assert_eq!(r["rate_limit"], 16u64 << 20, "{r}");
    assert_eq!(r["rate_floor"], 2u64 << 20, "{r}");
    let table = d.ok(&["job", "list"]);
    let row = table
        .lines()
        .find(|l| l.contains("replace"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("paused") && row.contains("16.0 MiB/s (floor 2.0 MiB/s)"),
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
    assert_eq!(after["rate_floor"], 2u64 << 20, "{after}");
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

// ------------------------------------------- kill -9 while each job runs

/// POST `path` on the daemon's API socket at once (no CLI process to
/// start): the status and body.
fn post_now(d: &Daemon, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(d.pool.join("api.sock")).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: ferrosan\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {raw:?}"));
    let body = raw.split_once("\r\n\r\n").map_or("", |b| b.1).to_owned();
    (status, body)
}

/// Catches job `id` midway and kills the daemon there: pauses it at once
/// (a job of a few hundred MiB cannot finish first), limits it to `rate`,
/// resumes it, waits until it has moved on, then `kill -9` and a restart.
/// The job must then run again by itself; once it is seen moving, its
/// limit goes and it must finish. Returns the job as it ended.
fn kill_midway(d: &mut Daemon, id: &str, rate: &str) -> Value {
    let (status, body) = post_now(d, &format!("/v1/jobs/{id}/pause"));
    assert_eq!(
        status, 200,
        "job {id} could not be paused at once (did it finish first? make it bigger): {body}"
    );
    let held = pause(d, id);
    d.ok(&["job", "rate", id, rate]);
    d.ok(&["job", "resume", id]);
    let from = held["done"].as_u64().unwrap();
    let mut job = held.clone();
    poll(&format!("job {id} to move on"), 60, || {
        job = d.json(&["job", "show", id]);
        job["state"] != "running" || job["done"].as_u64().unwrap() > from
    });
    assert_eq!(job["state"], "running", "{job}");
    assert!(
        job["done"].as_u64() < job["total"].as_u64(),
        "job {id} finished before the kill: {job}"
    );
    eprintln!("kill -9 with job {id} at {}", percent(&job));
    d.kill9();
    d.respawn();
    // By itself: no resume was asked for. A resync is the exception in
    // form only: the start resyncs every region still marked, in a new
    // job that supersedes the old one.
    let mut again = d.json(&["job", "show", id]);
    let mut id = id.to_owned();
    if again["kind"] == "resync" && again["state"] == "cancelled" {
        assert_eq!(
            again["message"], "superseded by the resync started at restart",
            "{again}"
        );
        let jobs = d.json(&["job", "list"]);
        again = jobs
            .as_array()
            .unwrap()
            .iter()
            .find(|j| {
                j["kind"] == "resync"
                    && j["target"] == again["target"]
                    && j["id"].as_u64() > again["id"].as_u64()
            })
            .unwrap_or_else(|| panic!("no resync superseded job {id}: {jobs}"))
            .clone();
        id = id_of(&again);
    }
    let id = id.as_str();
    assert!(
        again["state"] == "running" || again["state"] == "done",
        "job {id} did not resume by itself after the restart: {again}"
    );
    let from = again["done"].as_u64().unwrap();
    poll(&format!("job {id} to run after the restart"), 60, || {
        let j = d.json(&["job", "show", id]);
        j["state"] != "running" || j["done"].as_u64().unwrap() > from
    });
    if d.json(&["job", "show", id])["state"] == "running" {
        d.ok(&["job", "rate", id, "0"]);
    }
    let done = d.wait_job(id.parse().unwrap());
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["done"], done["total"], "{done}");
    done
}

/// The data area of disk `name`'s file, `len` bytes from `off`.
fn disk_bytes(pool: &std::path::Path, name: &str, off: u64, len: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(pool.join(format!("disks/{name}.img"))).unwrap();
    f.seek(SeekFrom::Start(ferrosan::disk::DATA_OFFSET + off))
        .unwrap();
    let mut b = vec![0u8; len as usize];
    f.read_exact(&mut b).unwrap();
    b
}

#[test]
fn kill_9_during_a_raid5_rebuild() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &[]);
    d.group("r5", "raid5", &["r0", "r1", "r2"], "160M");
    d.ok(&["volume", "create", "rv", "--group", "r5", "--size", "256M"]);
    qemu_io(
        &d.export("rv"),
        &["write -P 0x31 0 128M", "write -P 0x32 128M 128M", "flush"],
    );
    d.ok(&["disk", "fail", "r2"]);
    d.ok(&["disk", "add", "r9", "--size", "160M"]);
    let job = d.json(&["disk", "replace", "r2", "r9"]);
    assert_eq!(job["kind"], "rebuild", "{job}");
    let id = id_of(&job);
    let done = kill_midway(&mut d, &id, "16M");
    assert_eq!(done["kind"], "rebuild", "{done}");
    let g = d.json(&["group", "show", "r5"]);
    assert_eq!(g["health"], "optimal", "{g}");
    assert_eq!(g["disks"], serde_json::json!(["r0", "r1", "r9"]), "{g}");
    // Every read now needs r9, as data or as parity.
    d.ok(&["disk", "fail", "r0"]);
    qemu_io(
        &d.export("rv"),
        &["read -P 0x31 0 128M", "read -P 0x32 128M 128M"],
    );
}

#[test]
fn kill_9_during_a_raid1_replace() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &[]);
    d.group("m1", "raid1", &["a0", "a1"], "320M");
    d.ok(&["volume", "create", "mv", "--group", "m1", "--size", "256M"]);
    d.ok(&["disk", "add", "n", "--size", "320M"]);
    qemu_io(
        &d.export("mv"),
        &["write -P 0x41 0 200M", "write -P 0x42 200M 56M", "flush"],
    );
    let job = d.json(&["disk", "replace", "a1", "n"]);
    assert_eq!(job["kind"], "replace", "{job}");
    let id = id_of(&job);
    kill_midway(&mut d, &id, "16M");
    let g = d.json(&["group", "show", "m1"]);
    assert_eq!(g["health"], "optimal", "{g}");
    assert_eq!(g["disks"], serde_json::json!(["a0", "n"]), "{g}");
    // The new disk alone holds the volume.
    d.ok(&["disk", "fail", "a0"]);
    qemu_io(
        &d.export("mv"),
        &["read -P 0x41 0 200M", "read -P 0x42 200M 56M"],
    );
}

#[test]
fn kill_9_during_a_resync_after_a_crash() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    // Marks stay until a resync clears them.
    let mut d = Daemon::start(dir.path(), &["--intent-clear-interval", "3600"]);
    d.group("s1", "raid1", &["b0", "b1"], "320M");
    d.ok(&["volume", "create", "sv", "--group", "s1", "--size", "256M"]);
    let at = d.json(&["volume", "show", "sv"])["extents"][0]["offset"]
        .as_u64()
        .unwrap();
    qemu_io(&d.export("sv"), &["write -P 0x51 0 256M", "flush"]);
    d.kill9();
    // The crash caught an overwrite near the end that reached b1 only.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("disks/b1.img"))
            .unwrap();
        f.seek(SeekFrom::Start(
            ferrosan::disk::DATA_OFFSET + at + (240 << 20),
        ))
        .unwrap();
        f.write_all(&vec![0xee; 2 << 20]).unwrap();
        f.sync_all().unwrap();
    }
    d.respawn();
    let jobs = d.json(&["job", "list"]);
    let job = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["kind"] == "resync" && j["target"].as_str().unwrap().contains("group s1"))
        .unwrap_or_else(|| panic!("no resync of s1: {jobs}"))
        .clone();
    let id = id_of(&job);
    kill_midway(&mut d, &id, "32M");
    // Any other resync the second crash started ends too.
    for j in d.json(&["job", "list"]).as_array().unwrap() {
        if j["kind"] == "resync" && (j["state"] == "running" || j["state"] == "paused") {
            let done = d.wait_job(j["id"].as_u64().unwrap());
            assert_eq!(done["state"], "done", "{done}");
        }
    }
    // One version everywhere: through each leg alone, and byte for byte.
    qemu_io(&d.export("sv"), &["read -P 0x51 0 256M"]);
    d.ok(&["disk", "fail", "b0"]);
    qemu_io(&d.export("sv"), &["read -P 0x51 0 256M"]);
    d.stop();
    let (a, b) = (
        disk_bytes(dir.path(), "b0", at, 256 << 20),
        disk_bytes(dir.path(), "b1", at, 256 << 20),
    );
    let differ = a.iter().zip(&b).position(|(x, y)| x != y);
    assert_eq!(differ, None, "the mirrors differ at this offset");
}

/// A group `g` of `raid` over `disks` of `size`, and a volume `src` of
/// 128 MiB in it holding 0x61.
fn copy_pool(d: &Daemon, raid: &str, disks: &[&str], size: &str) {
    d.group("g", raid, disks, size);
    d.ok(&["volume", "create", "src", "--group", "g", "--size", "128M"]);
    qemu_io(&d.export("src"), &["write -P 0x61 0 128M", "flush"]);
}

#[test]
fn kill_9_during_a_copy_restore_on_raid0() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &[]);
    copy_pool(&d, "raid0", &["z0", "z1"], "256M");
    d.ok(&["copy", "create", "src", "c", "--mode", "cow"]);
    // 96 MiB of the source rewritten: the restore moves them back.
    qemu_io(&d.export("src"), &["write -P 0x62 0 96M", "flush"]);
    qemu_io(&d.export("c"), &["write -P 0x63 120M 1M", "flush"]);
    let r = d.json(&["copy", "restore", "c"]);
    let job = &r["job"];
    assert_eq!(job["kind"], "copy-restore", "{r}");
    let id = id_of(job);
    // Caught midway (and across the kill), the source already reads as c.
    let want = |d: &Daemon| {
        qemu_io(
            &d.export("src"),
            &[
                "read -P 0x61 0 120M",
                "read -P 0x63 120M 1M",
                "read -P 0x61 121M 7M",
            ],
        )
    };
    want(&d);
    kill_midway(&mut d, &id, "16M");
    want(&d);
    qemu_io(
        &d.export("c"),
        &["read -P 0x61 0 120M", "read -P 0x63 120M 1M"],
    );
    // And they are independent again.
    qemu_io(&d.export("src"), &["write -P 0x64 0 1M", "flush"]);
    qemu_io(&d.export("c"), &["read -P 0x61 0 1M"]);
    d.restart();
    qemu_io(
        &d.export("src"),
        &["read -P 0x64 0 1M", "read -P 0x61 1M 119M"],
    );
}

#[test]
fn kill_9_during_a_copy_split_on_concat() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &[]);
    copy_pool(&d, "concat", &["k0"], "512M");
    d.ok(&["copy", "create", "src", "c", "--mode", "row"]);
    // The copy has 96 MiB of new data, the source 8 MiB: move-larger moves
    // the copy's.
    qemu_io(&d.export("c"), &["write -P 0x72 0 96M", "flush"]);
    qemu_io(&d.export("src"), &["write -P 0x73 120M 8M", "flush"]);
    let s = d.json(&["copy", "split", "c", "--policy", "move-larger"]);
    assert_eq!(s["moving"], "c", "{s}");
    let job = &s["job"];
    assert_eq!(job["kind"], "copy-split", "{s}");
    let id = id_of(job);
    let check = |d: &Daemon| {
        qemu_io(
            &d.export("c"),
            &["read -P 0x72 0 96M", "read -P 0x61 96M 32M"],
        );
        qemu_io(
            &d.export("src"),
            &["read -P 0x61 0 120M", "read -P 0x73 120M 8M"],
        );
    };
    check(&d);
    kill_midway(&mut d, &id, "16M");
    check(&d);
    // Split: either goes without touching the other.
    d.ok(&["volume", "delete", "src"]);
    qemu_io(
        &d.export("c"),
        &["read -P 0x72 0 96M", "read -P 0x61 96M 32M"],
    );
    d.restart();
    qemu_io(
        &d.export("c"),
        &["read -P 0x72 0 96M", "read -P 0x61 96M 32M"],
    );
}

#[test]
fn kill_9_during_a_copy_fold_on_raid0() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &[]);
    copy_pool(&d, "raid0", &["y0", "y1"], "256M");
    let free = d.json(&["group", "show", "g"])["free"].as_u64().unwrap();
    d.ok(&["copy", "create", "src", "c", "--mode", "row"]);
    qemu_io(&d.export("src"), &["write -P 0x82 0 96M", "flush"]);
    let del = d.json(&["copy", "delete", "c"]);
    let job = &del["job"];
    assert_eq!(job["kind"], "copy-fold", "{del}");
    let id = id_of(job);
    let check = |d: &Daemon| {
        qemu_io(
            &d.export("src"),
            &["read -P 0x82 0 96M", "read -P 0x61 96M 32M"],
        )
    };
    check(&d);
    kill_midway(&mut d, &id, "16M");
    check(&d);
    let err = d.fails(&["copy", "show", "src"]);
    assert!(err.contains("volume src is not an instant copy"), "{err}");
    assert_eq!(
        d.json(&["group", "show", "g"])["free"].as_u64().unwrap(),
        free,
        "the copy's space came back"
    );
    d.restart();
    check(&d);
}

#[test]
fn kill_9_during_writes_to_concat_and_raid0_keeps_every_flushed_write() {
    if !have(&["qemu-io", "fio"]) {
        return;
    }
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &[]);
    d.group("gc", "concat", &["c0", "c1"], "48M");
    d.group("gz", "raid0", &["z0", "z1", "z2"], "48M");
    for (v, g) in [("vc", "gc"), ("v0", "gz")] {
        d.ok(&["volume", "create", v, "--group", g, "--size", "64M"]);
        qemu_io(&d.export(v), &["write -P 0x91 0 32M", "flush"]);
    }
    // Unflushed random writes over the second half of both, killed midway.
    let fios: Vec<std::process::Child> = ["vc", "v0"]
        .iter()
        .map(|v| {
            Command::new("fio")
                .args([
                    "--name=w",
                    "--ioengine=nbd",
                    &format!("--uri={}", d.export(v)),
                    "--rw=randwrite",
                    "--bs=4k",
                    "--iodepth=16",
                    "--offset=32M",
                    "--size=32M",
                    "--time_based",
                    "--runtime=60",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // Until both have written (the disks' write counters move).
    let writes = |d: &Daemon, disk: &str| {
        d.json(&["disk", "show", disk])["counters"]["writes"]
            .as_u64()
            .unwrap()
    };
    let before: Vec<u64> = ["c1", "z0"].iter().map(|x| writes(&d, x)).collect();
    poll("fio writing to both volumes", 60, || {
        ["c1", "z0"]
            .iter()
            .zip(&before)
            .all(|(x, b)| writes(&d, x) > b + 100)
    });
    d.kill9();
    for mut f in fios {
        let _ = f.kill();
        let _ = f.wait();
    }
    d.respawn();
    for v in ["vc", "v0"] {
        qemu_io(&d.export(v), &["read -P 0x91 0 32M"]);
        qemu_io(
            &d.export(v),
            &["write -P 0x92 32M 32M", "flush", "read -P 0x92 32M 32M"],
        );
    }
}

#[test]
fn a_failed_replace_leaves_the_old_disk_serving() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &["--fault-injection"]);
    d.group("m1", "raid1", &["a0", "a1"], "64M");
    d.ok(&["volume", "create", "mv", "--group", "m1", "--size", "32M"]);
    d.ok(&["disk", "add", "bad", "--size", "64M"]);
    qemu_io(&d.export("mv"), &["write -P 0x5a 0 32M", "flush"]);
    d.ok(&["disk", "inject", "bad", "--write-error-at", "0,64M"]);
    let o = d.cli(&["--json", "disk", "replace", "a1", "bad", "--wait"]);
    assert_eq!(o.status.code(), Some(1));
    let job: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(job["state"], "failed", "{job}");
    let g = d.json(&["group", "show", "m1"]);
    assert_eq!(g["disks"], serde_json::json!(["a0", "a1"]), "{g}");
    d.ok(&["disk", "inject", "bad", "--clear"]);
    d.restart();
    let g = d.json(&["group", "show", "m1"]);
    assert_eq!(g["disks"], serde_json::json!(["a0", "a1"]), "{g}");
    for _ in 0..4 {
        qemu_io(&d.export("mv"), &["read -P 0x5a 0 32M"]);
    }
    d.ok(&["disk", "fail", "a0"]);
    qemu_io(&d.export("mv"), &["read -P 0x5a 0 32M"]);
}

/// The old disk of a hot replace fails before the copy is done: the job
/// goes on from the other leg and the new disk takes the slot. Before the
/// fix the old disk's failure was recorded against the slot (the new
/// disk marked failed), the job's end changed nothing and the group
/// stayed degraded.
#[test]
fn the_old_disk_failing_during_a_hot_replace_leaves_the_new_one_in_place() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &["--fault-injection"]);
    d.group("m1", "raid1", &["a0", "a1"], "320M");
    d.ok(&["volume", "create", "mv", "--group", "m1", "--size", "256M"]);
    d.ok(&["disk", "add", "n", "--size", "320M"]);
    qemu_io(&d.export("mv"), &["write -P 0x61 0 256M", "flush"]);
    let job = d.json(&["disk", "replace", "a1", "n"]);
    let id = id_of(&job);
    let (status, body) = post_now(&d, &format!("/v1/jobs/{id}/pause"));
    assert_eq!(status, 200, "job {id} could not be paused at once: {body}");
    pause(&d, &id);
    // The old disk goes; a host write finds out.
    d.ok(&["disk", "inject", "a1", "--vanish"]);
    qemu_io(&d.export("mv"), &["write -P 0x62 200M 8M", "flush"]);
    let g = d.json(&["group", "show", "m1"]);
    assert_eq!(g["disks"], serde_json::json!(["a0", "n"]), "{g}");
    let a1 = d.json(&["disk", "show", "a1"]);
    assert_eq!(a1["status"], "failed", "{a1}");
    let n = d.json(&["disk", "show", "n"]);
    assert_ne!(n["status"], "failed", "the new disk was blamed: {n}");
    // A crash now: the job resumes as a rebuild from a0 (a1 is failed, its
    // injected fault gone with the daemon, and must not be copied from).
    d.kill9();
    d.respawn();
    let a1 = d.json(&["disk", "show", "a1"]);
    assert_eq!(a1["status"], "failed", "{a1}");
    d.ok(&["job", "resume", &id]);
    let done = d.wait_job(id.parse().unwrap());
    assert_eq!(done["state"], "done", "{done}");
    let g = d.json(&["group", "show", "m1"]);
    assert_eq!(g["health"], "optimal", "{g}");
    assert_eq!(g["disks"], serde_json::json!(["a0", "n"]), "{g}");
    // Since the restart nothing read a1: the copy came from a0. (A failed
    // old disk taken back as the copy source served its stale data, and
    // lost the write above whenever the copy passed it before the resync.)
    let a1 = d.json(&["disk", "show", "a1"]);
    assert_eq!(
        a1["counters"]["reads"], 0,
        "a1 was read after the restart: {a1}"
    );
    d.restart();
    let g = d.json(&["group", "show", "m1"]);
    assert_eq!(g["health"], "optimal", "{g}");
    // The new disk alone holds the volume.
    d.ok(&["disk", "fail", "a0"]);
    qemu_io(
        &d.export("mv"),
        &[
            "read -P 0x61 0 200M",
            "read -P 0x62 200M 8M",
            "read -P 0x61 208M 48M",
        ],
    );
}

/// The copy-gc job a deletion starts (free-space collection, issue 18),
/// killed midway: it resumes by itself, the source reads every write and
/// the long-lived copy its own image, and the space the merged copy
/// point's child held comes back.
#[test]
fn kill_9_during_a_copy_gc() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    // Collection throttled from the start, so the job is caught midway.
    let mut d = Daemon::start(dir.path(), &["--gc-rate", "2M"]);
    d.group("g", "concat", &["a"], "1280M");
    d.ok(&["volume", "create", "src", "--group", "g", "--size", "256M"]);
    qemu_io(&d.export("src"), &["write -P 0x61 0 256M", "flush"]);
    d.ok(&["copy", "create", "src", "c0"]);
    qemu_io(&d.export("src"), &["write -P 0x71 0 256M", "flush"]);
    d.ok(&["copy", "create", "src", "k"]);
    // 4 KiB at the start of every 64 KiB track: each must move.
    let tracks = 256 * 16;
    let writes: Vec<String> = (0..tracks)
        .map(|t| format!("write -P 0x72 {} 4k", t * 65536))
        .collect();
    let mut cmds: Vec<&str> = writes.iter().map(String::as_str).collect();
    cmds.push("flush");
    qemu_io(&d.export("src"), &cmds);
    let free = |d: &Daemon| d.json(&["group", "show", "g"])["free"].as_u64().unwrap();
    let before = free(&d);
    d.ok(&["copy", "delete", "k"]);
    let jobs = d.json(&["job", "list"]);
    let job = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["kind"] == "copy-gc")
        .unwrap_or_else(|| panic!("no copy-gc job after the deletion: {jobs}"))
        .clone();
    assert_eq!(job["state"], "running", "{job}");
    kill_midway(&mut d, &id_of(&job), "2M");
    let reads: Vec<String> = (0..tracks)
        .flat_map(|t| {
            [
                format!("read -P 0x72 {} 4k", t * 65536),
                format!("read -P 0x71 {} 60k", t * 65536 + 4096),
            ]
        })
        .collect();
    let check = |d: &Daemon| {
        let out = qemu_io(
            &d.export("src"),
            &reads.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert!(!out.contains("Pattern verification failed"), "{out}");
        qemu_io(&d.export("c0"), &["read -P 0x61 0 256M"]);
    };
    check(&d);
    let after = free(&d);
    assert!(
        after >= before + 192 * (1 << 20),
        "the merged child's space came back: free {before} -> {after}"
    );
    let again = d.ok(&["copy", "gc"]);
    assert!(again.contains("nothing to collect"), "{again}");
    d.restart();
    check(&d);
}
