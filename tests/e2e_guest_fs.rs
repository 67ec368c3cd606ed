//! A Linux filesystem on a P-VOL, checked from outside (issue 19): the
//! P-VOL's export is a block device of this machine's kernel (nbdfuse
//! makes it a file, a loop device makes that a disk), ext4 is made and
//! mounted on it, and a writer keeps creating files, each fsynced, while
//! the pair is split, resynced and split again. Every S-VOL must mount
//! (the journal replayed, as after a power cut), be e2fsck-clean, and
//! hold every file whose fsync returned before the split began. A restore
//! then gives the P-VOL the S-VOL's filesystem.
//!
//! Needs root, FUSE, loop devices and ext4 in the kernel: where this
//! machine cannot mount, the test says so and stops; in CI as root it
//! fails instead, so that the check is not skipped silently.

mod harness;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use harness::*;

/// Bytes of each file the writer makes.
const FILE: usize = 96 * 1024;

/// The content of file `prefix{i}`: bytes that differ from file to file.
fn content(prefix: &str, i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ prefix.len() as u64;
    (0..FILE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sh(prog: &str, args: &[&str]) -> (bool, String) {
    match Command::new(prog).args(args).output() {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => (false, format!("{prog}: {e}")),
    }
}

fn must(prog: &str, args: &[&str]) -> String {
    let (ok, out) = sh(prog, args);
    assert!(ok, "{prog} {args:?}: {out}");
    out
}

/// An export attached to this machine: nbdfuse's file, a loop device over
/// it, and a mount point; undone in reverse on drop.
struct Attached {
    fuse_dir: PathBuf,
    fuse: Child,
    dev: String,
    mnt: PathBuf,
    mounted: bool,
}

impl Attached {
    fn new(url: &str, dir: &Path, name: &str) -> Attached {
        let fuse_dir = dir.join(format!("{name}-fuse"));
        let mnt = dir.join(format!("{name}-mnt"));
        std::fs::create_dir_all(&fuse_dir).unwrap();
        std::fs::create_dir_all(&mnt).unwrap();
        let file = fuse_dir.join("disk");
        let fuse = Command::new("nbdfuse")
            .arg(&file)
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nbdfuse");
        poll("nbdfuse's file", 20, || file.exists());
        let dev = must("losetup", &["-f", "--show", file.to_str().unwrap()])
            .trim()
            .to_string();
        Attached {
            fuse_dir,
            fuse,
            dev,
            mnt,
            mounted: false,
        }
    }

    fn mount(&mut self) {
        must("mount", &[&self.dev, self.mnt.to_str().unwrap()]);
        self.mounted = true;
    }

    fn umount(&mut self) {
        if self.mounted {
            must("umount", &[self.mnt.to_str().unwrap()]);
            self.mounted = false;
        }
    }

    /// e2fsck's verdict on the unmounted filesystem, changing nothing.
    fn fsck(&self) -> (bool, String) {
        sh("e2fsck", &["-fn", &self.dev])
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if self.mounted {
            let _ = sh("umount", &[self.mnt.to_str().unwrap()]);
        }
        let _ = sh("losetup", &["-d", &self.dev]);
        let _ = sh("umount", &[self.fuse_dir.to_str().unwrap()]);
        let _ = self.fuse.kill();
        let _ = self.fuse.wait();
    }
}

/// Whether this machine can loop-mount an ext4 image (root, loop, ext4).
fn can_mount(dir: &Path) -> bool {
    let img = dir.join("probe.img");
    let mnt = dir.join("probe-mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(16 << 20).unwrap();
    let ok = sh("mkfs.ext4", &["-q", img.to_str().unwrap()]).0
        && sh(
            "mount",
            &["-o", "loop", img.to_str().unwrap(), mnt.to_str().unwrap()],
        )
        .0;
    if ok {
        must("umount", &[mnt.to_str().unwrap()]);
        return true;
    }
    let root = sh("id", &["-u"]).1.trim() == "0";
    assert!(
        !in_ci() || !root,
        "CI=true, running as root, and this machine cannot loop-mount ext4: the guest filesystem check must run in CI"
    );
    eprintln!(
        "SKIP: this machine cannot loop-mount ext4 (needs root, loop devices, ext4; root: {root})"
    );
    false
}

/// Creates files `prefix0, prefix1, ...` in `dir`, each fsynced, until
/// stopped; `synced` counts those whose fsync returned.
struct Writer {
    stop: Arc<AtomicBool>,
    synced: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(dir: &Path, prefix: &'static str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let synced = Arc::new(AtomicU64::new(0));
        let (s, n, dir) = (Arc::clone(&stop), Arc::clone(&synced), dir.to_path_buf());
        let thread = std::thread::spawn(move || {
            let mut i = 0;
            while !s.load(Ordering::SeqCst) {
                use std::io::Write;
                let mut f = std::fs::File::create(dir.join(format!("{prefix}{i}"))).unwrap();
                f.write_all(&content(prefix, i)).unwrap();
                f.sync_all().unwrap();
                i += 1;
                n.store(i, Ordering::SeqCst);
            }
        });
        Writer {
            stop,
            synced,
            thread: Some(thread),
        }
    }

    fn synced(&self) -> u64 {
        self.synced.load(Ordering::SeqCst)
    }

    fn wait_for(&self, n: u64) {
        poll("the writer's files", 120, || self.synced() >= n);
    }

    /// Stops the writer; the number of files it made.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("the writer");
        }
        self.synced()
    }
}

/// Checks a mounted S-VOL: files `prefix0..prefix{before}` are whole; any
/// later one is a prefix of what was written (it was being written at
/// the split). Returns how many `prefix` files it holds.
fn check_files(mnt: &Path, prefix: &str, before: u64, made: u64) -> u64 {
    let mut found = 0;
    for i in 0..made + 1 {
        let Ok(got) = std::fs::read(mnt.join(format!("{prefix}{i}"))) else {
            assert!(
                i >= before,
                "{prefix}{i} was fsynced before the split and is missing"
            );
            continue;
        };
        found += 1;
        let want = content(prefix, i);
        if i < before {
            assert!(
                got == want,
                "{prefix}{i} (fsynced before the split) differs"
            );
        } else {
            assert!(
                want.starts_with(&got),
                "{prefix}{i}: {} bytes that were never written",
                got.len()
            );
        }
    }
    found
}

/// Mounts the S-VOL (its journal replays), checks its files, unmounts,
/// and runs e2fsck on it.
fn check_svol(d: &Daemon, dir: &Path, files: &[(&str, u64, u64)]) {
    let mut s = Attached::new(&d.export("sv"), dir, "s");
    s.mount();
    for &(prefix, before, made) in files {
        let n = check_files(&s.mnt, prefix, before, made);
        assert!(
            n >= before,
            "{prefix}: {n} files, {before} fsynced before the split"
        );
    }
    s.umount();
    let (clean, out) = s.fsck();
    assert!(clean, "the S-VOL's filesystem is not clean: {out}");
}

#[test]
fn a_filesystem_split_resynced_and_restored_under_writes_stays_consistent() {
    if !have(&["nbdfuse", "losetup", "mkfs.ext4", "e2fsck", "mount"]) {
        return;
    }
    let dir = pool_dir();
    if !can_mount(dir.path()) {
        return;
    }
    let d = Daemon::start(dir.path(), &[]);
    for v in ["pv", "sv"] {
        d.ok(&["volume", "create", v, "--group", "g0", "--size", "256M"]);
    }
    d.json(&["pair", "create", "pv", "sv", "--wait"]);
    let mut p = Attached::new(&d.export("pv"), dir.path(), "p");
    must("mkfs.ext4", &["-q", &p.dev]);
    p.mount();

    // Split while the writer runs.
    let w = Writer::start(&p.mnt, "a");
    w.wait_for(20);
    let before_a = w.synced();
    d.ok(&["pair", "split", "pv", "sv"]);
    w.wait_for(before_a + 20);
    let made_a = w.stop();
    check_svol(&d, dir.path(), &[("a", before_a, made_a)]);

    // Resync under writes, then split again under writes.
    let w = Writer::start(&p.mnt, "b");
    w.wait_for(10);
    d.json(&["pair", "resync", "pv", "sv", "--wait"]);
    w.wait_for(w.synced() + 10);
    let before_b = w.synced();
    d.ok(&["pair", "split", "pv", "sv"]);
    w.wait_for(before_b + 10);
    let made_b = w.stop();
    check_svol(
        &d,
        dir.path(),
        &[("a", made_a, made_a), ("b", before_b, made_b)],
    );

    // The P-VOL goes on; then its filesystem is unmounted and detached
    // (no cache of this machine holds its old blocks), restored from the
    // S-VOL, and mounts as the S-VOL's.
    let w = Writer::start(&p.mnt, "c");
    w.wait_for(10);
    w.stop();
    drop(p);
    d.json(&["pair", "restore", "pv", "sv", "--wait"]);
    let mut p = Attached::new(&d.export("pv"), dir.path(), "p");
    let (clean, out) = p.fsck();
    assert!(clean, "the restored P-VOL's filesystem is not clean: {out}");
    p.mount();
    assert!(!p.mnt.join("c0").exists(), "c0 was written after the split");
    check_files(&p.mnt, "b", before_b, made_b);
    p.umount();
}

/// Sparing a disk of the filesystem's RAID-5 group while the writer
/// runs (seed 002): its writes go to secondary volumes during the copy
/// and back to the group after, the writer still writing. Unmounted
/// afterwards, the filesystem is e2fsck-clean and every file whole.
#[test]
fn a_filesystem_written_through_a_sparing_with_diversion_stays_consistent() {
    if !have(&["nbdfuse", "losetup", "mkfs.ext4", "e2fsck", "mount"]) {
        return;
    }
    let dir = pool_dir();
    if !can_mount(dir.path()) {
        return;
    }
    let d = Daemon::start(dir.path(), &[]);
    d.group("r5", "raid5", &["a1", "a2", "a3"], "128M");
    d.ok(&["disk", "add", "sp", "--size", "128M", "--spare"]);
    d.group("bk", "concat", &["b1"], "256M");
    d.ok(&["volume", "create", "fv", "--group", "r5", "--size", "192M"]);
    let mut p = Attached::new(&d.export("fv"), dir.path(), "p");
    must("mkfs.ext4", &["-q", &p.dev]);
    p.mount();
    let w = Writer::start(&p.mnt, "a");
    w.wait_for(10);
    let info = d.json(&["sparing", "start", "a3", "--backup-storage", "secondary"]);
    assert_eq!(
        info["diversion"], "secondary volumes fv.sec (diverting)",
        "{info}"
    );
    let job = info["job"].as_u64().unwrap().to_string();
    d.ok(&["job", "pause", &job]);
    let n = w.synced();
    w.wait_for(n + 20);
    let t2 = d.json(&["sparing", "status"])["t2"].clone();
    assert!(
        t2[0]["tracks_set"].as_u64().unwrap() > 0,
        "the writer's blocks went to the secondary: {t2}"
    );
    d.ok(&["job", "resume", &job]);
    assert_eq!(d.wait_job(job.parse().unwrap())["state"], "done");
    let n = w.synced();
    w.wait_for(n + 10);
    poll("the write-back ends", 120, || {
        d.json(&["sparing", "status"])["sparings"] == serde_json::json!([])
    });
    let n = w.synced();
    w.wait_for(n + 10);
    let made = w.stop();
    p.umount();
    let (clean, out) = p.fsck();
    assert!(
        clean,
        "the filesystem is not clean after the sparing: {out}"
    );
    p.mount();
    assert_eq!(check_files(&p.mnt, "a", made, made), made);
    p.umount();
    let g = d.json(&["group", "show", "r5"]);
    assert_eq!(g["disks"], serde_json::json!(["a1", "a2", "sp"]), "{g}");
    assert_eq!(
        d.json(&["group", "show", "bk"])["volumes"],
        serde_json::json!([])
    );
}
