//! Mirror pairs (seed 002, table T2) end to end: a real daemon, its CLI,
//! qemu-io and qemu-img through NBD. Write, pair, split, write both sides,
//! resync, compare; restore the other way; consistency-group splits; a
//! crash with marked tracks; and every refusal naming what to do.

mod harness;

use std::path::Path;

use harness::*;

fn setup(d: &Daemon, vols: &[&str]) {
    d.ok(&["disk", "add", "x0", "--size", "512M"]);
    d.ok(&["group", "create", "g", "--raid", "concat", "--disks", "x0"]);
    for v in vols {
        d.ok(&["volume", "create", v, "--group", "g", "--size", "32M"]);
    }
}

fn pair(d: &Daemon, p: &str, s: &str) -> serde_json::Value {
    d.json(&["pair", "show", p, s])
}

/// Saves what `url` reads into a file.
fn save(url: &str, to: &Path) {
    let (ok, out) = run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            url,
            to.to_str().unwrap(),
        ],
    );
    assert!(ok, "qemu-img convert {url}: {out}");
}

#[test]
fn write_split_write_both_resync_then_restore() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    setup(&d, &["p", "s"]);
    let (p, s) = (d.export("p"), d.export("s"));
    qemu_io(&p, &["write -P 0x11 0 4M", "write -P 0x12 20M 1M", "flush"]);
    let created = d.json(&["pair", "create", "p", "s", "--wait"]);
    assert_eq!(created["status"], "pair", "{created}");
    assert_eq!(created["tracks_set"], 0, "{created}");
    let (eq, out) = same_image(&p, &s);
    assert!(eq, "after the initial copy: {out}");
    // PAIR: writes reach both; hosts cannot write the S-VOL.
    qemu_io(&p, &["write -P 0x22 1M 64k", "flush"]);
    let (eq, out) = same_image(&p, &s);
    assert!(eq, "a write in PAIR reaches both: {out}");
    let (_, out) = run("qemu-io", &["-f", "raw", "-c", "write -P 0x99 0 4k", &s]);
    assert!(
        out.contains("Operation not permitted") || out.contains("failed"),
        "an S-VOL write in PAIR is refused: {out}"
    );
    qemu_io(&s, &["read -P 0x11 0 4k"]);
    // SPLIT: both sides writable, every write marks its tracks.
    let split = d.json(&["pair", "split", "p", "s"]);
    assert_eq!(split[0]["status"], "split", "{split}");
    qemu_io(&p, &["write -P 0x33 2M 128k", "flush"]);
    qemu_io(&s, &["write -P 0x44 8M 64k", "flush"]);
    let now = pair(&d, "p", "s");
    assert_eq!(now["tracks_set"], 3, "2 tracks of P, 1 of S: {now}");
    let (eq, _) = same_image(&p, &s);
    assert!(!eq, "split images differ");
    // The S-VOL kept the image of the split instant.
    qemu_io(&s, &["read -P 0x22 1M 64k", "read -P 0x11 2M 128k"]);
    // RESYNC: P's data wins, S's own writes are replaced.
    let r = d.json(&["pair", "resync", "p", "s", "--wait"]);
    assert_eq!(r["status"], "pair", "{r}");
    assert_eq!(r["tracks_set"], 0, "{r}");
    let (eq, out) = same_image(&p, &s);
    assert!(eq, "after resync: {out}");
    qemu_io(&s, &["read -P 0x33 2M 128k", "read -P 0 8M 64k"]);
    // RESTORE: split, write both, then S-VOL's image goes back to P.
    d.ok(&["pair", "split", "p", "s"]);
    qemu_io(&s, &["write -P 0x55 3M 64k", "flush"]);
    qemu_io(&p, &["write -P 0x66 5M 64k", "flush"]);
    let image = dir.path().join("s.img");
    save(&s, &image);
    let r = d.json(&["pair", "restore", "p", "s", "--wait"]);
    assert_eq!(r["status"], "pair", "{r}");
    let (eq, out) = same_image(&p, image.to_str().unwrap());
    assert!(eq, "after restore P reads S's image: {out}");
    qemu_io(&p, &["read -P 0x55 3M 64k", "read -P 0 5M 64k"]);
    // The job list names what each job did.
    let jobs = d.json(&["job", "list"]);
    let kinds: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["kind"].as_str())
        .collect();
    for k in ["pair-copy", "pair-resync", "pair-restore"] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    // Deleting the pair leaves both volumes with their data.
    d.ok(&["pair", "delete", "p", "s"]);
    qemu_io(&s, &["write -P 0x77 0 64k", "flush"]);
    qemu_io(&p, &["read -P 0x11 0 64k"]);
    assert_eq!(d.json(&["pair", "list"]), serde_json::json!([]));
}

#[test]
fn the_initial_copy_copies_only_written_tracks() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    setup(&d, &["p", "s"]);
    let p = d.export("p");
    qemu_io(
        &p,
        &["write -P 0x11 0 64k", "write -P 0x12 16M 128k", "flush"],
    );
    let created = d.json(&["pair", "create", "p", "s"]);
    // The pair shows its copy job while it runs; a copy of three tracks
    // may be done before the answer is made: then the job list has it.
    let id = created["job"].as_u64().unwrap_or_else(|| {
        let jobs = d.json(&["job", "list"]);
        let copy = jobs
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["kind"] == "pair-copy");
        copy.and_then(|j| j["id"].as_u64())
            .unwrap_or_else(|| panic!("no copy job: {created} {jobs}"))
    });
    let job = d.wait_job(id);
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["total"], 3, "three written tracks of 512: {job}");
    let (eq, out) = same_image(&p, &d.export("s"));
    assert!(eq, "{out}");
}

#[test]
fn refusals_name_the_status_and_what_to_do() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    setup(&d, &["p", "s", "t"]);
    d.ok(&["volume", "create", "small", "--group", "g", "--size", "16M"]);
    let e = d.fails(&["pair", "create", "p", "small"]);
    assert!(
        e.contains("the same size") && e.contains("--size 33554432"),
        "{e}"
    );
    let e = d.fails(&["pair", "create", "p", "p"]);
    assert!(e.contains("two volumes"), "{e}");
    // An S-VOL that holds data is not overwritten by mistake.
    qemu_io(&d.export("s"), &["write -P 0x5 0 64k", "flush"]);
    let e = d.fails(&["pair", "create", "p", "s"]);
    assert!(e.contains("holds data") && e.contains("--overwrite"), "{e}");
    qemu_io(&d.export("s"), &["read -P 0x5 0 64k"]);
    d.json(&["pair", "create", "p", "s", "--overwrite", "--wait"]);
    qemu_io(&d.export("s"), &["read -P 0 0 64k"]);
    let e = d.fails(&["pair", "resync", "p", "s"]);
    assert!(e.contains("status PAIR") && e.contains("pair split"), "{e}");
    let e = d.fails(&["pair", "restore", "p", "s"]);
    assert!(e.contains("status PAIR"), "{e}");
    let e = d.fails(&["pair", "create", "s", "t"]);
    assert!(
        e.contains("cannot be a P-VOL too") && e.contains("pair delete p s"),
        "{e}"
    );
    let e = d.fails(&["pair", "create", "t", "s"]);
    assert!(e.contains("pair delete p s"), "{e}");
    let e = d.fails(&["volume", "delete", "s"]);
    assert!(
        e.contains("pair p -> s") && e.contains("pair delete p s"),
        "{e}"
    );
    let e = d.fails(&["copy", "create", "p", "snap"]);
    assert!(e.contains("pair delete p s"), "{e}");
    let e = d.fails(&["pair", "split", "t", "s"]);
    assert!(e.contains("not of t"), "{e}");
    d.ok(&["pair", "split", "p", "s"]);
    let e = d.fails(&["pair", "split", "p", "s"]);
    assert!(
        e.contains("status SPLIT") && e.contains("split already"),
        "{e}"
    );
    let e = d.fails(&["pair", "show", "p", "t"]);
    assert!(e.contains("no pair with S-VOL t"), "{e}");
}

#[test]
fn a_consistency_group_splits_at_one_instant() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    setup(&d, &["p1", "s1", "p2", "s2", "p3", "s3"]);
    for (p, s) in [("p1", "s1"), ("p2", "s2")] {
        d.json(&["pair", "create", p, s, "--group", "cg", "--wait"]);
    }
    d.json(&["pair", "create", "p3", "s3", "--wait"]);
    qemu_io(&d.export("p1"), &["write -P 0x1 0 64k", "flush"]);
    let split = d.json(&["pair", "split", "--group", "cg"]);
    let rows = split.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{split}");
    assert!(rows.iter().all(|r| r["status"] == "split"), "{split}");
    assert_eq!(rows[0]["split_at"], rows[1]["split_at"], "{split}");
    // The pair outside the group is still in PAIR.
    assert_eq!(pair(&d, "p3", "s3")["status"], "pair");
    qemu_io(&d.export("s1"), &["read -P 0x1 0 64k"]);
    let e = d.fails(&["pair", "split", "--group", "nope"]);
    assert!(e.contains("no pair is in consistency group nope"), "{e}");
}

#[test]
fn a_p_vol_with_two_s_vols_splits_restores_resyncs_and_deletes_either() {
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &[]);
    setup(&d, &["p", "s1", "s2"]);
    qemu_io(&d.export("p"), &["write -P 0x11 0 1M", "flush"]);
    for s in ["s1", "s2"] {
        d.json(&["pair", "create", "p", s, "--group", "cg", "--wait"]);
    }
    // Both nodes stacked over P again after a restart.
    d.restart();
    let (p, s1, s2) = (d.export("p"), d.export("s1"), d.export("s2"));
    qemu_io(&p, &["write -P 0x22 1M 64k", "flush"]);
    for s in [&s1, &s2] {
        let (eq, out) = same_image(&p, s);
        assert!(eq, "a write in PAIR reaches every S-VOL: {out}");
    }
    let split = d.json(&["pair", "split", "--group", "cg"]);
    assert_eq!(split[0]["split_at"], split[1]["split_at"], "{split}");
    qemu_io(&p, &["write -P 0x33 2M 64k", "flush"]);
    d.json(&["pair", "resync", "p", "s2", "--wait"]);
    let e = d.fails(&["pair", "restore", "p", "s1"]);
    assert!(
        e.contains("p -> s2 is in status PAIR") && e.contains("pair split p s2"),
        "{e}"
    );
    d.ok(&["pair", "split", "p", "s2"]);
    // A restore from s1 rewrites P under s2: s2's bitmap gets the tracks.
    qemu_io(&s1, &["write -P 0x44 3M 64k", "flush"]);
    let image = dir.path().join("s1.img");
    save(&s1, &image);
    d.json(&["pair", "restore", "p", "s1", "--wait"]);
    let (eq, out) = same_image(&p, image.to_str().unwrap());
    assert!(eq, "P reads s1's image after the restore: {out}");
    let r = d.json(&["pair", "resync", "p", "s2", "--wait"]);
    assert_eq!(r["status"], "pair", "{r}");
    let (eq, out) = same_image(&p, &s2);
    assert!(eq, "s2 resynced after s1's restore: {out}");
    // Deleting the older pair (its node below s2's) keeps s2 mirrored.
    d.ok(&["pair", "delete", "p", "s1"]);
    qemu_io(&p, &["write -P 0x55 4M 64k", "flush"]);
    let (eq, out) = same_image(&p, &s2);
    assert!(eq, "s2 still mirrored after s1's pair is deleted: {out}");
    qemu_io(&s1, &["read -P 0 4M 64k", "read -P 0x44 3M 64k"]);
    let rows = d.json(&["pair", "list"]);
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
}

#[test]
fn marked_tracks_survive_kill_9_and_resync_after_it() {
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &[]);
    setup(&d, &["p", "s"]);
    qemu_io(&d.export("p"), &["write -P 0x11 0 1M", "flush"]);
    d.json(&["pair", "create", "p", "s", "--wait"]);
    d.ok(&["pair", "split", "p", "s"]);
    qemu_io(&d.export("p"), &["write -P 0x21 256k 64k", "flush"]);
    qemu_io(&d.export("s"), &["write -P 0x31 640k 128k", "flush"]);
    d.kill9();
    d.respawn();
    let now = pair(&d, "p", "s");
    assert_eq!(now["status"], "split", "{now}");
    assert_eq!(now["tracks_set"], 3, "{now}");
    // In PAIR, a crash: what was written meanwhile is on both sides or
    // resynced at the start.
    d.json(&["pair", "resync", "p", "s", "--wait"]);
    qemu_io(&d.export("p"), &["write -P 0x41 0 512k", "flush"]);
    d.kill9();
    d.respawn();
    assert!(
        d.log()
            .iter()
            .any(|l| l.contains("were being written to both sides")),
        "the write-intent marks of the last writes became set bits: {:?}",
        d.log()
    );
    let now = pair(&d, "p", "s");
    if let Some(id) = now["job"].as_u64() {
        d.wait_job(id);
    }
    let now = pair(&d, "p", "s");
    assert_eq!(now["status"], "pair", "{now}");
    let (eq, out) = same_image(&d.export("p"), &d.export("s"));
    assert!(eq, "{out}");
    qemu_io(
        &d.export("s"),
        &["read -P 0x41 0 512k", "read -P 0x11 768k 256k"],
    );
    // A clean stop leaves no marks: the next start resyncs nothing.
    d.restart();
    let now = pair(&d, "p", "s");
    assert_eq!(
        (now["status"].clone(), now["job"].clone()),
        ("pair".into(), serde_json::Value::Null),
        "{now}"
    );
}

#[test]
fn a_pairs_changed_tracks_are_served_as_a_qemu_dirty_bitmap() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    setup(&d, &["p", "s"]);
    d.json(&["pair", "create", "p", "s", "--wait"]);
    let ctx = "qemu:dirty-bitmap:s";
    assert_eq!(dirty_extents(&d.export("p"), ctx), vec![], "in sync");
    d.ok(&["pair", "split", "p", "s"]);
    qemu_io(
        &d.export("p"),
        &["write -P 0x1 1M 64k", "write -P 0x2 9M 4k"],
    );
    qemu_io(&d.export("s"), &["write -P 0x3 5M 128k"]);
    let k = 1u64 << 10;
    let want = vec![(1024 * k, 64 * k), (5120 * k, 128 * k), (9216 * k, 64 * k)];
    assert_eq!(dirty_extents(&d.export("p"), ctx), want);
    // The S-VOL's export offers the same map, named by the P-VOL.
    assert_eq!(dirty_extents(&d.export("s"), "qemu:dirty-bitmap:p"), want);
    // Listed among the export's contexts, and unknown names are not.
    let (ok, out) = run("nbdinfo", &["--list", "--content", &d.export("p")]);
    assert!(ok, "{out}");
    let (ok, out) = run("nbdinfo", &[&d.export("p")]);
    assert!(
        ok && out.contains(ctx) && out.contains("base:allocation"),
        "{out}"
    );
    let (ok, out) = run("nbdinfo", &["--map=qemu:dirty-bitmap:nope", &d.export("p")]);
    assert!(!ok, "an unknown bitmap is not served: {out}");
    // qemu-img selects it with base:allocation (two contexts, one reply
    // chunk each) and shows a dirty extent as not present, as qemu's
    // own server does.
    let opts = format!(
        "driver=nbd,server.type=unix,server.path={},export=p,x-dirty-bitmap={ctx}",
        dir.path().join("nbd.sock").display()
    );
    let (ok, out) = run("qemu-img", &["map", "--output=json", "--image-opts", &opts]);
    assert!(ok, "{out}");
    let map: serde_json::Value = serde_json::from_str(&out).expect("qemu-img map JSON");
    let absent: Vec<(u64, u64)> = map
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["present"] == false)
        .map(|e| (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap()))
        .collect();
    assert_eq!(absent, want, "{out}");
    // After a resync nothing differs.
    d.json(&["pair", "resync", "p", "s", "--wait"]);
    assert_eq!(dirty_extents(&d.export("p"), ctx), vec![]);
}

#[test]
fn kill_9_during_a_resync_resumes_it_and_both_sides_end_equal() {
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &[]);
    setup(&d, &["p", "s"]);
    qemu_io(&d.export("p"), &["write -P 0x11 0 32M", "flush"]);
    d.json(&["pair", "create", "p", "s", "--wait"]);
    d.ok(&["pair", "split", "p", "s"]);
    // 384 tracks of 64 KiB to copy.
    qemu_io(&d.export("p"), &["write -P 0x22 0 24M", "flush"]);
    // 1 MiB/s: a step (128 tracks) is copied at once, then the job waits
    // about 8 s before the next.
    let r = d.json(&["pair", "resync", "p", "s", "--rate", "1M"]);
    let id = r["job"].as_u64().expect("a resync job");
    poll("the first step", 30, || {
        d.json(&["job", "show", &id.to_string()])["done"].as_u64() >= Some(128)
    });
    d.kill9();
    d.respawn();
    let now = pair(&d, "p", "s");
    assert_eq!(now["status"], "resync", "{now}");
    assert_eq!(now["job"].as_u64(), Some(id), "the same job resumed: {now}");
    // Before the kill one step was copied (its clears stored or not);
    // the resumed job may have copied its own first step by now. Either
    // way at least one step's tracks are left, and none beyond the 384.
    let set = now["tracks_set"].as_u64().unwrap();
    assert!((128..=384).contains(&set), "{now}");
    let job = d.json(&["job", "show", &id.to_string()]);
    assert_eq!(job["rate_limit"], 1 << 20, "the limit survives: {job}");
    d.ok(&["job", "rate", &id.to_string(), "0"]);
    let job = d.wait_job(id);
    assert_eq!(job["state"], "done", "{job}");
    let now = pair(&d, "p", "s");
    assert_eq!(
        (now["status"].as_str(), now["tracks_set"].as_u64()),
        (Some("pair"), Some(0))
    );
    let (eq, out) = same_image(&d.export("p"), &d.export("s"));
    assert!(eq, "{out}");
    qemu_io(
        &d.export("s"),
        &["read -P 0x22 0 24M", "read -P 0x11 24M 8M"],
    );
}

/// The first byte of `url`, read through qemu-io.
fn first_byte(url: &str) -> u8 {
    let out = qemu_io(url, &["read -v 0 1"]);
    let line = out
        .lines()
        .find(|l| l.starts_with("00000000:"))
        .unwrap_or_else(|| panic!("no dump in {out}"));
    let hex = line.split_whitespace().nth(1).expect("a byte");
    u8::from_str_radix(hex, 16).expect("hex")
}

/// A consistency group's split under load keeps dependent writes in
/// order: a writer writes round n to p1, then (once that completed) to p2,
/// then to p3, while fio writes elsewhere on all three. Whatever instant
/// the split took, the S-VOLs hold rounds c1 >= c2 >= c3 >= c1 - 1: no
/// S-VOL holds a write issued after one that another S-VOL misses.
#[test]
fn a_consistency_group_split_under_load_keeps_dependent_writes_in_order() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    let vols = ["p1", "s1", "p2", "s2", "p3", "s3"];
    setup(&d, &vols);
    for i in 1..=3 {
        let (p, s) = (format!("p{i}"), format!("s{i}"));
        d.json(&["pair", "create", &p, &s, "--group", "cg", "--wait"]);
    }
    let urls: Vec<String> = (1..=3).map(|i| d.export(&format!("p{i}"))).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (urls, stop) = (urls.clone(), std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut n = 0u8;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && n < 250 {
                n += 1;
                for u in &urls {
                    qemu_io(u, &[&format!("write -P {n} 0 4k")]);
                }
            }
            n
        })
    };
    let load: Vec<_> = urls
        .iter()
        .map(|u| {
            let u = u.clone();
            std::thread::spawn(move || {
                fio(&[
                    "--name=load",
                    "--ioengine=nbd",
                    &format!("--uri={u}"),
                    "--rw=randwrite",
                    "--bs=4k",
                    "--iodepth=8",
                    "--offset=1M",
                    "--size=16M",
                    "--time_based",
                    "--runtime=3",
                ])
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let split = d.json(&["pair", "split", "--group", "cg"]);
    assert_eq!(split.as_array().map(Vec::len), Some(3), "{split}");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let rounds = writer.join().expect("writer");
    for l in load {
        let r = l.join().expect("fio");
        assert!(
            r.ok && r.errors == 0 && r.write_bytes > 0,
            "fio wrote meanwhile: {}",
            r.text
        );
    }
    let c: Vec<u8> = (1..=3)
        .map(|i| first_byte(&d.export(&format!("s{i}"))))
        .collect();
    assert!(
        c[0] >= 1,
        "the split came after the writer began: {c:?} of {rounds}"
    );
    assert!(
        c[0] >= c[1] && c[1] >= c[2] && c[2] + 1 >= c[0],
        "the S-VOLs' rounds {c:?} break the order of dependent writes"
    );
}

/// Every command in COPY (a slow initial copy) works or names the status
/// and what to do; a delete cancels the copy and leaves both volumes.
#[test]
fn commands_while_copying_say_what_to_do_and_delete_cancels_the_copy() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    setup(&d, &["p", "s"]);
    qemu_io(&d.export("p"), &["write -P 0x11 0 16M", "flush"]);
    let r = d.json(&["pair", "create", "p", "s", "--rate", "1M"]);
    assert_eq!(r["status"], "copy", "{r}");
    let id = r["job"].as_u64().expect("a copy job");
    let e = d.fails(&["pair", "split", "p", "s"]);
    assert!(
        e.contains("status COPY") && e.contains(&format!("job {id}")) && e.contains("wait"),
        "{e}"
    );
    let e = d.fails(&["pair", "resync", "p", "s"]);
    assert!(
        e.contains("status COPY") && e.contains("wait for its copy"),
        "{e}"
    );
    let e = d.fails(&["pair", "restore", "p", "s"]);
    assert!(e.contains("status COPY"), "{e}");
    // Hosts cannot use the S-VOL while it is being filled.
    let (_, out) = run("qemu-io", &["-f", "raw", "-c", "read 0 4k", &d.export("s")]);
    assert!(out.contains("failed") || out.contains("error"), "{out}");
    d.ok(&["pair", "delete", "p", "s"]);
    let job = d.json(&["job", "show", &id.to_string()]);
    assert_eq!(job["state"], "cancelled", "{job}");
    qemu_io(&d.export("p"), &["read -P 0x11 0 16M"]);
    qemu_io(&d.export("s"), &["write -P 0x5 0 4k", "read -P 0x5 0 4k"]);
}

/// In PAIR, an S-VOL whose disk fails writes: the host's writes succeed,
/// their tracks are marked, S-VOL reads there come from the P-VOL, and
/// once the disk works again `pair resync` copies them.
#[test]
fn an_s_vol_that_fails_writes_in_pair_is_resynced_by_its_marks() {
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &["--fault-injection"]);
    d.group("ga", "concat", &["a0"], "64M");
    d.group("gb", "concat", &["b0"], "64M");
    d.ok(&["volume", "create", "p", "--group", "ga", "--size", "16M"]);
    d.ok(&["volume", "create", "s", "--group", "gb", "--size", "16M"]);
    qemu_io(&d.export("p"), &["write -P 0x11 0 4M", "flush"]);
    d.json(&["pair", "create", "p", "s", "--wait"]);
    d.ok(&["disk", "inject", "b0", "--error-rate", "1"]);
    qemu_io(&d.export("p"), &["write -P 0x22 1M 128k", "flush"]);
    d.ok(&["disk", "inject", "b0", "--clear"]);
    let now = pair(&d, "p", "s");
    assert_eq!(now["status"], "pair", "{now}");
    assert!(now["svol_errors"].as_u64() >= Some(1), "{now}");
    assert!(now["tracks_set"].as_u64() >= Some(2), "{now}");
    qemu_io(&d.export("s"), &["read -P 0x22 1M 128k"]);
    let r = d.json(&["pair", "resync", "p", "s", "--wait"]);
    assert_eq!(
        (r["status"].as_str(), r["tracks_set"].as_u64()),
        (Some("pair"), Some(0)),
        "{r}"
    );
    let (eq, out) = same_image(&d.export("p"), &d.export("s"));
    assert!(eq, "{out}");
}
