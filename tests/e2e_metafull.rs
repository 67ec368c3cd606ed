//! The pool database's filesystem fills up, then has room again.
//!
//! redb stops after one failed write ("Previous I/O error occurred. Please
//! close and re-open the database"): before the fix every later change of
//! the configuration, and every RAID write that needed a new write-intent
//! mark, failed until the daemon was restarted. Now the database is closed
//! and reopened (redb repairs it to its last commit) and the daemon goes on
//! once there is room, without a restart and without losing a change that
//! was answered as done.
//!
//! The pool directory is a small tmpfs (mounting needs root; elsewhere the
//! test says so and returns); the disks are files on the build's
//! filesystem, so only the database runs out of room.

mod harness;

use std::io::Write;
use std::path::{Path, PathBuf};

use harness::*;

/// A tmpfs of `size` mounted on `dir`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("mount point");
        let opt = format!("size={size}");
        let (ok, out) = run("mount", &["-t", "tmpfs", "-o", &opt, "none", dir.to_str()?]);
        if !ok {
            assert!(!in_ci(), "CI runs as root and must mount a tmpfs: {out}");
            eprintln!("note: cannot mount a tmpfs here ({out}); test not run");
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = run("umount", &["-l", self.0.to_str().unwrap_or("")]);
    }
}

/// A sparse file of `bytes` at `path` (a disk to add with `--path`).
fn sparse_file(path: &Path, bytes: u64) {
    std::fs::File::create(path)
        .and_then(|f| f.set_len(bytes))
        .expect("sparse disk file");
}

/// The first line of `read -v` of 512 bytes at MiB `mib` of `url`.
fn first_bytes(url: &str, mib: u64) -> String {
    let cmd = format!("read -v {} 512", mib << 20);
    let (ok, out) = run("qemu-io", &["-f", "raw", "-c", &cmd, url]);
    assert!(ok, "{out}");
    out.lines().next().unwrap_or("").to_string()
}

/// Fills the filesystem of `path` with a file there until it is full.
fn fill_up(path: &Path) {
    let mut f = std::fs::File::create(path).expect("filler");
    let block = vec![0xeeu8; 64 << 10];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "filling: {e}");
                break;
            }
        }
    }
    let _ = f.sync_all();
}

#[test]
fn database_full_then_room_again_goes_on_without_restart() {
    let base = pool_dir();
    let disks = pool_dir();
    let mnt = base.path().join("fs");
    let Some(_fs) = Tmpfs::mount(&mnt, "24m") else {
        return;
    };
    let pool = mnt.join("pool");
    let mut d = Daemon::start(&pool, &[]);
    // The default a new pool is provisioned with lives on the tmpfs: away
    // with it.
    d.ok(&["volume", "delete", "vol0"]);
    d.ok(&["group", "delete", "g0"]);
    for n in ["d0", "d1", "d2", "d3"] {
        d.ok(&["disk", "remove", n]);
    }
    for n in ["p0", "p1"] {
        let p = disks.path().join(n);
        sparse_file(&p, 64 << 20);
        d.ok(&["disk", "add", n, "--path", p.to_str().unwrap()]);
    }
    d.ok(&[
        "group", "create", "m", "--raid", "raid1", "--disks", "p0,p1",
    ]);
    d.ok(&["volume", "create", "v", "--group", "m", "--size", "16M"]);
    let url = d.export("v");
    qemu_io(&url, &["write -P 0x11 0 1M", "flush"]);

    // The database's filesystem fills up: changes fail with a message that
    // says why, and nothing is half done.
    let filler = mnt.join("filler");
    fill_up(&filler);
    let mut refused = None;
    for i in 0..400 {
        let name = format!("x{i}");
        let o = d.cli(&["volume", "create", &name, "--group", "m", "--size", "1M"]);
        if !o.status.success() {
            refused = Some((name, String::from_utf8_lossy(&o.stderr).into_owned()));
            break;
        }
    }
    let (name, err) = refused.expect("a change should fail on a full database filesystem");
    assert!(
        err.contains("pool database"),
        "the error should name the pool database: {err}"
    );
    let list = d.json(&["volume", "list"]);
    let names: Vec<&str> = list
        .as_array()
        .expect("volume list")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(
        !names.contains(&name.as_str()),
        "{name} was refused but is listed: {names:?}"
    );
    let made: Vec<String> = names
        .iter()
        .filter(|n| n.starts_with('x'))
        .map(|n| n.to_string())
        .collect();

    // A write that needs a new write-intent mark cannot have it durable
    // first: it fails rather than write without one. (The database may
    // still hold free pages of its own, inside its file, for the first
    // mark's commit: then that mark is durable and its write rightly goes
    // through; the next region's mark finds none.)
    let mut outs = Vec::new();
    let failed = ["12M", "8M", "4M"].iter().any(|at| {
        let (ok, out) = run(
            "qemu-io",
            &["-f", "raw", "-c", &format!("write -P 0x33 {at} 64k"), &url],
        );
        let refused = !ok && out.contains("Input/output error");
        outs.push(out);
        refused
    });
    assert!(
        failed,
        "a write with no durable write-intent mark should fail: {outs:?}"
    );

    // Room again: the next change works, without a restart.
    std::fs::remove_file(&filler).expect("remove filler");
    d.ok(&["volume", "create", "after", "--group", "m", "--size", "1M"]);
    qemu_io(
        &url,
        &["write -P 0x22 4M 1M", "write -P 0x33 12M 64k", "flush"],
    );
    let out = qemu_io(
        &url,
        &[
            "read -P 0x11 0 1M",
            "read -P 0x22 4M 1M",
            "read -P 0x33 12M 64k",
        ],
    );
    assert!(!out.contains("fail"), "data after the full database: {out}");

    // Every change answered as done is there after a restart.
    d.restart();
    let list = d.json(&["volume", "list"]);
    let after: Vec<&str> = list
        .as_array()
        .expect("volume list")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for n in made.iter().map(String::as_str).chain(["v", "after"]) {
        assert!(after.contains(&n), "{n} lost in the restart: {after:?}");
    }
    assert!(
        !after.contains(&name.as_str()),
        "{name} came back: {after:?}"
    );
    let url = d.export("v");
    let out = qemu_io(
        &url,
        &[
            "read -P 0x11 0 1M",
            "read -P 0x22 4M 1M",
            "read -P 0x33 12M 64k",
        ],
    );
    assert!(!out.contains("fail"), "data after the restart: {out}");
}

/// Sparse disk files of a mirror on a filesystem that fills up (thin
/// provisioning run out): writes fail with ENOSPC and no member is failed
/// for it; once there is room the same writes go through, the group is
/// still optimal and the two legs agree.
#[test]
fn sparse_disks_on_a_full_filesystem_refuse_writes_and_fail_no_member() {
    let base = pool_dir();
    let mnt = base.path().join("fs");
    let Some(_fs) = Tmpfs::mount(&mnt, "48m") else {
        return;
    };
    let pool = base.path().join("pool");
    let d = Daemon::start(&pool, &[]);
    for n in ["p0", "p1"] {
        let p = mnt.join(n);
        sparse_file(&p, 40 << 20);
        d.ok(&["disk", "add", n, "--path", p.to_str().unwrap()]);
    }
    d.ok(&[
        "group", "create", "m", "--raid", "raid1", "--disks", "p0,p1",
    ]);
    d.ok(&["volume", "create", "v", "--group", "m", "--size", "32M"]);
    let url = d.export("v");
    qemu_io(&url, &["write -P 0x41 0 4M", "flush"]);
    // 2 x 32 MiB of mirror on 48 MiB: the second half cannot be written.
    let (ok, out) = run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0x42 4M 28M",
            "-c",
            "flush",
            &url,
        ],
    );
    assert!(
        !ok || out.contains("failed"),
        "a write beyond the room should fail: {out}"
    );
    assert!(
        out.contains("No space left on device"),
        "the client should be told ENOSPC, not EIO: {out}"
    );
    let g = d.json(&["group", "show", "m"]);
    assert_eq!(
        g["health"], "optimal",
        "a full filesystem failed a member: {g}"
    );
    for n in ["p0", "p1"] {
        let disk = d.json(&["disk", "show", n]);
        assert_ne!(disk["status"], "failed", "{disk}");
    }
    // Room again (a bigger filesystem): the same write goes through and
    // every read of it agrees, whichever leg serves it.
    let (ok, out) = run("mount", &["-o", "remount,size=128m", mnt.to_str().unwrap()]);
    assert!(ok, "remount: {out}");
    qemu_io(&url, &["write -P 0x42 4M 28M", "flush"]);
    for _ in 0..4 {
        qemu_io(&url, &["read -P 0x41 0 4M", "read -P 0x42 4M 28M"]);
    }
}

/// One leg of a mirror has its blocks (a preallocated file), the other is
/// sparse on a filesystem that fills: a write lands on one leg only and
/// fails. What the range reads after that is undefined (NBD), but it must
/// not change from one read to the next as reads alternate legs.
#[test]
fn a_write_that_reached_one_leg_only_reads_the_same_every_time() {
    let base = pool_dir();
    let mnt = base.path().join("fs");
    let Some(_fs) = Tmpfs::mount(&mnt, "56m") else {
        return;
    };
    let pool = base.path().join("pool");
    let mut d = Daemon::start(&pool, &[]);
    let full = mnt.join("full");
    std::fs::write(&full, vec![0u8; 40 << 20]).expect("preallocated disk file");
    let sparse = mnt.join("sparse");
    sparse_file(&sparse, 40 << 20);
    d.ok(&["disk", "add", "p0", "--path", full.to_str().unwrap()]);
    d.ok(&["disk", "add", "p1", "--path", sparse.to_str().unwrap()]);
    d.ok(&[
        "group", "create", "m", "--raid", "raid1", "--disks", "p0,p1",
    ]);
    d.ok(&["volume", "create", "v", "--group", "m", "--size", "32M"]);
    let url = d.export("v");
    qemu_io(&url, &["write -P 0x41 0 8M", "flush"]);
    // p0's blocks all exist; p1 has room for about 8 MiB more.
    let (_, out) = run("qemu-io", &["-f", "raw", "-c", "write -P 0x42 0 32M", &url]);
    assert!(
        out.contains("No space left on device"),
        "the sparse leg should have run out of room: {out}"
    );
    let g = d.json(&["group", "show", "m"]);
    assert_eq!(g["health"], "optimal", "{g}");
    // Whatever each MiB reads now, it reads it every time.
    let sample = |mib: u64| first_bytes(&url, mib);
    let seen: Vec<String> = (0..32).step_by(3).map(sample).collect();
    for (i, mib) in (0..32).step_by(3).enumerate() {
        for _ in 0..3 {
            assert_eq!(
                sample(mib),
                seen[i],
                "MiB {mib} reads differently from one read to the next"
            );
        }
    }
    // The range stays marked through a clean stop: the next start resyncs
    // it (here the sparse leg is still full, so until then every read of
    // it comes from the first leg, as before the stop).
    d.restart();
    let url = d.export("v");
    let sample = |mib: u64| first_bytes(&url, mib);
    for (i, mib) in (0..32).step_by(3).enumerate() {
        for _ in 0..3 {
            assert_eq!(sample(mib), seen[i], "MiB {mib} after a restart");
        }
    }
}
