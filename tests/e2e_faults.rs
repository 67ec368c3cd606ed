//! End to end, what e2e_raid does not cover: fault injection beyond read
//! errors (write errors, a vanishing disk, an error rate, clearing rules),
//! adopting existing files with `disk add --path`, SIGTERM with I/O in
//! flight, deleting a volume that is in use, read-only exports and the
//! daemon's Unix socket. The real daemon, the real CLI and real NBD clients
//! (qemu-io, fio, nbdinfo), plus a minimal raw NBD client where a tool would
//! refuse to send what the test needs sent.

mod harness;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::*;
use serde_json::Value;

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------- helpers

/// A raid1 group `name` over two 40 MiB legs and a 16 MiB volume `vol`
/// holding `pattern`, flushed; returns the volume's export.
fn mirrored(d: &Daemon, name: &str, legs: [&str; 2], vol: &str, pattern: u8) -> String {
    d.group(name, "raid1", &legs, "40M");
    d.ok(&["volume", "create", vol, "--group", name, "--size", "16M"]);
    let url = d.export(vol);
    qemu_io(&url, &[&format!("write -P {pattern:#x} 0 16M"), "flush"]);
    url
}

/// One disk's entry in `disk list --json`.
fn disk(d: &Daemon, name: &str) -> Value {
    let list = d.json(&["disk", "list"]);
    list.as_array()
        .expect("disk list is an array")
        .iter()
        .find(|x| x["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("disk {name} not in disk list: {list}"))
}

/// Whether `disk list` has a disk of that name.
fn has_disk(d: &Daemon, name: &str) -> bool {
    let list = d.json(&["disk", "list"]);
    list.as_array().unwrap().iter().any(|x| x["name"] == name)
}

/// Whether `volume list` has a volume of that name.
fn has_volume(d: &Daemon, name: &str) -> bool {
    let list = d.json(&["volume", "list"]);
    list.as_array().unwrap().iter().any(|x| x["name"] == name)
}

/// A counter of a disk entry.
fn counter(disk: &Value, name: &str) -> u64 {
    disk["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name}: {disk}"))
}

fn errors(disk: &Value) -> u64 {
    counter(disk, "read_errors") + counter(disk, "write_errors")
}

/// The health of a group and the state of each member slot.
fn health(d: &Daemon, group: &str) -> (String, Vec<String>) {
    let g = d.json(&["group", "show", group]);
    let states = g["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members: {g}"))
        .iter()
        .map(|m| m["state"].as_str().unwrap_or("?").to_string())
        .collect();
    (g["health"].as_str().unwrap_or("?").to_string(), states)
}

/// Group address of a volume's first byte (where a raid1 volume's data
/// sits on every leg).
fn volume_start(d: &Daemon, vol: &str) -> u64 {
    let v = d.json(&["volume", "show", vol]);
    v["extents"][0]["offset"]
        .as_u64()
        .unwrap_or_else(|| panic!("no extents: {v}"))
}

/// Waits for every resync job to finish (a stop may leave write-intent
/// marks that are resynced at start; nothing here depends on whether it
/// does).
fn wait_resyncs(d: &Daemon) {
    let jobs = d.json(&["job", "list"]);
    for j in jobs.as_array().into_iter().flatten() {
        if j["kind"] == "resync" {
            let done = d.wait_job(j["id"].as_u64().unwrap());
            assert_eq!(done["state"], "done", "{done}");
        }
    }
}

/// A temporary directory for files to adopt, on the build's filesystem
/// (O_DIRECT works there).
fn files_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("adopt-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir")
}

/// `truncate -s SIZE PATH`.
fn truncate(path: &Path, size: &str) {
    let (ok, out) = run("truncate", &["-s", size, path.to_str().unwrap()]);
    assert!(ok, "truncate {}: {out}", path.display());
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `nbdinfo --json URL`, the first export.
fn nbdinfo(url: &str) -> Value {
    let (ok, out) = run("nbdinfo", &["--json", url]);
    assert!(ok, "nbdinfo {url}: {out}");
    let v: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("nbdinfo printed no JSON ({e}): {out}"));
    v["exports"][0].clone()
}

/// qemu-io on a read-only open; asserts success and no failure.
fn qemu_io_ro(url: &str, cmd: &str) {
    let (ok, out) = run("qemu-io", &["-r", "-f", "raw", "-c", cmd, url]);
    assert!(ok && !out.contains("failed"), "{cmd}: {out}");
}

// ------------------------------------------------- a raw NBD client

const NBD_CMD_READ: u16 = 0;
const NBD_CMD_WRITE: u16 = 1;
const NBD_CMD_DISC: u16 = 2;
const NBD_FLAG_READ_ONLY: u16 = 1 << 1;
const NBD_EPERM: u32 = 1;

/// Fixed-newstyle handshake with NBD_OPT_EXPORT_NAME, then simple replies:
/// enough to send a write that a well-behaved client would refuse to send.
struct RawNbd {
    s: TcpStream,
    size: u64,
    flags: u16,
    cookie: u64,
}

impl RawNbd {
    fn connect(url: &str, export: &str) -> RawNbd {
        let addr = url.strip_prefix("nbd://").expect("nbd:// URL");
        let mut s = TcpStream::connect(addr).expect("connect NBD");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut hello = [0u8; 18];
        s.read_exact(&mut hello).expect("server greeting");
        assert_eq!(&hello[..8], b"NBDMAGIC");
        assert_eq!(&hello[8..16], b"IHAVEOPT");
        let hflags = u16::from_be_bytes([hello[16], hello[17]]);
        let no_zeroes = hflags & 2 != 0;
        let cflags: u32 = 1 | if no_zeroes { 2 } else { 0 };
        let mut msg = cflags.to_be_bytes().to_vec();
        msg.extend_from_slice(b"IHAVEOPT");
        msg.extend_from_slice(&1u32.to_be_bytes()); // NBD_OPT_EXPORT_NAME
        msg.extend_from_slice(&(export.len() as u32).to_be_bytes());
        msg.extend_from_slice(export.as_bytes());
        s.write_all(&msg).unwrap();
        let mut info = vec![0u8; if no_zeroes { 10 } else { 134 }];
        s.read_exact(&mut info).expect("export info");
        RawNbd {
            s,
            size: u64::from_be_bytes(info[..8].try_into().unwrap()),
            flags: u16::from_be_bytes([info[8], info[9]]),
            cookie: 1,
        }
    }

    /// Sends one request; the reply's error and, for a successful read,
    /// the data.
    fn request(&mut self, kind: u16, off: u64, len: u32, data: &[u8]) -> (u32, Vec<u8>) {
        self.cookie += 1;
        let mut msg = 0x2560_9513u32.to_be_bytes().to_vec();
        msg.extend_from_slice(&0u16.to_be_bytes());
        msg.extend_from_slice(&kind.to_be_bytes());
        msg.extend_from_slice(&self.cookie.to_be_bytes());
        msg.extend_from_slice(&off.to_be_bytes());
        msg.extend_from_slice(&len.to_be_bytes());
        msg.extend_from_slice(data);
        self.s.write_all(&msg).unwrap();
        let mut reply = [0u8; 16];
        self.s.read_exact(&mut reply).expect("simple reply");
        assert_eq!(
            u32::from_be_bytes(reply[..4].try_into().unwrap()),
            0x6744_6698
        );
        let error = u32::from_be_bytes(reply[4..8].try_into().unwrap());
        assert_eq!(
            u64::from_be_bytes(reply[8..].try_into().unwrap()),
            self.cookie
        );
        let mut buf = Vec::new();
        if kind == NBD_CMD_READ && error == 0 {
            buf = vec![0u8; len as usize];
            self.s.read_exact(&mut buf).expect("read payload");
        }
        (error, buf)
    }

    fn disconnect(mut self) {
        let mut msg = 0x2560_9513u32.to_be_bytes().to_vec();
        msg.extend_from_slice(&0u16.to_be_bytes());
        msg.extend_from_slice(&NBD_CMD_DISC.to_be_bytes());
        msg.extend_from_slice(&[0u8; 20]);
        let _ = self.s.write_all(&msg);
    }
}

// ------------------------------------------- 1. fault injection

#[test]
fn an_injected_write_error_fails_the_raid1_leg_and_the_write_still_succeeds() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &["--fault-injection"]);
    d.group("w1", "raid1", &["wa", "wb"], "40M");
    d.ok(&["volume", "create", "wv", "--group", "w1", "--size", "32M"]);
    let url = d.export("wv");
    qemu_io(&url, &["write -P 0x11 0 32M", "flush"]);
    // raid1 legs hold the group's address space as it is: volume byte 4M
    // sits at group (and leg) offset start + 4M.
    let off = volume_start(&d, "wv") + 4 * MIB;
    let inj = d.json(&[
        "disk",
        "inject",
        "wb",
        "--write-error-at",
        &format!("{off},1M"),
    ]);
    assert_eq!(
        inj["faults"]["write_errors"],
        serde_json::json!([{"offset": off, "length": MIB}]),
        "{inj}"
    );
    assert_eq!(inj["status"], "ok", "a rule alone fails nothing: {inj}");
    assert_eq!(counter(&disk(&d, "wb"), "write_errors"), 0);

    // The host write into the range succeeds: leg wa holds it.
    qemu_io(
        &url,
        &[
            "write -P 0x22 4M 1M",
            "read -P 0x22 4M 1M",
            "read -P 0x11 0 4M",
            "read -P 0x11 5M 27M",
        ],
    );
    let wb = disk(&d, "wb");
    let wa = disk(&d, "wa");
    assert_eq!(wb["status"], "failed", "{wb}");
    assert!(counter(&wb, "write_errors") >= 1, "{wb}");
    let problem = wb["problem"].as_str().unwrap_or_default();
    assert!(
        problem.contains(&format!("injected write error at {off}")) && problem.contains("wb"),
        "the failure names the injected error: {wb}"
    );
    assert_eq!(wa["status"], "ok", "{wa}");
    assert_eq!(errors(&wa), 0, "{wa}");
    assert_eq!(
        health(&d, "w1"),
        ("degraded".into(), vec!["ok".into(), "failed".into()])
    );

    // The failed leg takes no more writes; the healthy one takes them all.
    let (wb_writes, wa_writes) = (counter(&wb, "writes"), counter(&wa, "writes"));
    qemu_io(
        &url,
        &["write -P 0x33 16M 2M", "flush", "read -P 0x33 16M 2M"],
    );
    assert_eq!(counter(&disk(&d, "wb"), "writes"), wb_writes);
    assert!(counter(&disk(&d, "wa"), "writes") > wa_writes);

    // The failure was committed: it survives a restart, and so does the data.
    d.restart();
    assert_eq!(disk(&d, "wb")["status"], "failed");
    assert_eq!(health(&d, "w1").0, "degraded");
    qemu_io(
        &d.export("wv"),
        &[
            "read -P 0x11 0 4M",
            "read -P 0x22 4M 1M",
            "read -P 0x11 5M 11M",
            "read -P 0x33 16M 2M",
            "read -P 0x11 18M 14M",
        ],
    );
}

#[test]
fn a_raid5_member_vanishing_mid_read_leaves_reads_correct_and_is_failed() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &["--fault-injection"]);
    d.group("v5", "raid5", &["va", "vb", "vc"], "40M");
    d.ok(&["volume", "create", "vv", "--group", "v5", "--size", "16M"]);
    let url = d.export("vv");
    qemu_io(&url, &["write -P 0x25 0 16M", "flush"]);

    // One connection reading and verifying over and over; vb vanishes
    // while it does. (Commands go one at a time: qemu-io takes one line
    // per wakeup of its stdin, so queued lines would wait for more input.)
    let mut s = QemuIoSession::open(&url);
    let read = "read -P 0x25 0 16M";
    assert!(
        s.exec(read)
            .contains("read 16777216/16777216 bytes at offset 0")
    );
    let pool = d.pool.clone();
    let inject =
        std::thread::spawn(move || cli(&pool, &["--json", "disk", "inject", "vb", "--vanish"]));
    let (mut during, mut after) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(300);
    while after < 8 {
        assert!(Instant::now() < deadline, "reads stalled:\n{}", s.text());
        let finished = inject.is_finished();
        let r = s.exec(read);
        assert!(
            r.contains("read 16777216/16777216 bytes at offset 0") && !r.contains("failed"),
            "a read through the vanishing returned the pattern: {r}"
        );
        if finished {
            after += 1;
        } else {
            during += 1;
        }
    }
    let o = inject.join().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let inj: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(inj["faults"]["vanished"], true, "{inj}");
    let text = s.quit();
    assert!(!text.contains("failed"), "{text}");
    eprintln!("reads while vb vanished: {during} during the inject, {after} after");

    let vb = disk(&d, "vb");
    assert_eq!(vb["status"], "failed", "{vb}");
    assert!(errors(&vb) > 0, "{vb}");
    for other in ["va", "vc"] {
        let x = disk(&d, other);
        assert_eq!((x["status"].as_str(), errors(&x)), (Some("ok"), 0), "{x}");
    }
    assert_eq!(
        health(&d, "v5"),
        (
            "degraded".into(),
            vec!["ok".into(), "failed".into(), "ok".into()]
        )
    );
    // Degraded: reads reconstruct, writes still land.
    qemu_io(
        &url,
        &[
            "read -P 0x25 0 16M",
            "write -P 0x26 1M 1M",
            "read -P 0x26 1M 1M",
            "read -P 0x25 0 1M",
            "read -P 0x25 2M 14M",
        ],
    );
}

#[test]
fn error_rate_one_fails_a_raid1_leg_but_fails_the_io_of_a_concat() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &["--fault-injection"]);
    let url = mirrored(&d, "e1", ["ea", "eb"], "ev", 0x41);

    // Out-of-range probabilities are refused, naming the value.
    let err = d.fails(&["disk", "inject", "eb", "--error-rate", "1.5"]);
    assert!(err.contains("invalid probability \"1.5\""), "{err}");
    assert_eq!(disk(&d, "eb")["faults"]["error_rate"], 0.0);

    let inj = d.json(&["disk", "inject", "eb", "--error-rate", "1.0"]);
    assert_eq!(inj["faults"]["error_rate"], 1.0, "{inj}");
    // Every I/O of eb fails: the first write fails the leg, the host never
    // sees an error.
    qemu_io(
        &url,
        &[
            "write -P 0x42 0 1M",
            "read -P 0x42 0 1M",
            "read -P 0x41 1M 15M",
        ],
    );
    let eb = disk(&d, "eb");
    assert_eq!(eb["status"], "failed", "{eb}");
    assert!(errors(&eb) >= 1, "{eb}");
    assert!(
        eb["problem"]
            .as_str()
            .unwrap_or_default()
            .contains("injected"),
        "{eb}"
    );
    let ea = disk(&d, "ea");
    assert_eq!(
        (ea["status"].as_str(), errors(&ea)),
        (Some("ok"), 0),
        "{ea}"
    );
    assert_eq!(health(&d, "e1").0, "degraded");

    // Without redundancy there is no other copy: the host I/O fails, and
    // the member is not failed (there is nothing to fail over to).
    d.group("c1", "concat", &["ca"], "40M");
    d.ok(&["volume", "create", "cv", "--group", "c1", "--size", "8M"]);
    let cv = d.export("cv");
    qemu_io(&cv, &["write -P 0x51 0 8M", "flush"]);
    d.ok(&["disk", "inject", "ca", "--error-rate", "1"]);
    let (ok, out) = run("qemu-io", &["-f", "raw", "-c", "write -P 0x52 0 64k", &cv]);
    assert!(!ok && out.contains("write failed"), "{out}");
    let (ok, out) = run("qemu-io", &["-f", "raw", "-c", "read -P 0x51 0 64k", &cv]);
    assert!(!ok && out.contains("read failed"), "{out}");
    let ca = disk(&d, "ca");
    assert!(counter(&ca, "write_errors") >= 1, "{ca}");
    assert!(counter(&ca, "read_errors") >= 1, "{ca}");
    assert_eq!(ca["status"], "ok", "{ca}");
    // Cleared, the same I/O works again and the old data is intact.
    d.ok(&["disk", "inject", "ca", "--clear"]);
    qemu_io(
        &cv,
        &[
            "read -P 0x51 0 8M",
            "write -P 0x53 0 64k",
            "read -P 0x53 0 64k",
        ],
    );
}

#[test]
fn clear_removes_every_rule_and_the_same_io_then_succeeds() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &["--fault-injection"]);
    let url = mirrored(&d, "k1", ["ka", "kb"], "kv", 0x31);
    let base = volume_start(&d, "kv");
    let woff = base + 2 * MIB;
    let roff = base + 8 * MIB;

    // Rules accumulate, several per command.
    d.ok(&[
        "disk",
        "inject",
        "kb",
        "--write-error-at",
        &format!("{woff},1M"),
    ]);
    d.ok(&[
        "disk",
        "inject",
        "kb",
        "--read-error-at",
        &format!("{roff},1M"),
        "--error-rate",
        "0.5",
    ]);
    let f = d.json(&["disk", "show", "kb"])["faults"].clone();
    let span = |offset: u64| serde_json::json!([{"offset": offset, "length": MIB}]);
    assert_eq!(f["write_errors"], span(woff), "{f}");
    assert_eq!(f["read_errors"], span(roff), "{f}");
    assert_eq!(f["error_rate"], 0.5, "{f}");

    let out = d.ok(&["disk", "inject", "kb", "--clear"]);
    assert!(out.contains("faults of disk kb: none"), "{out}");
    let shown = d.json(&["disk", "show", "kb"]);
    assert_eq!(
        shown["faults"],
        serde_json::json!({
            "read_errors": [], "write_errors": [], "error_rate": 0.0, "vanished": false
        }),
        "{shown}"
    );
    assert_eq!(shown["status"], "ok", "{shown}");

    // The write that would have failed kb, and reads over the range whose
    // reads would have failed: kb sees no error and stays in service.
    qemu_io(&url, &["write -P 0x32 2M 1M", "flush"]);
    for _ in 0..4 {
        qemu_io(
            &url,
            &[
                "read -P 0x31 0 2M",
                "read -P 0x32 2M 1M",
                "read -P 0x31 3M 13M",
            ],
        );
    }
    let kb = disk(&d, "kb");
    assert_eq!(
        (kb["status"].as_str(), errors(&kb)),
        (Some("ok"), 0),
        "{kb}"
    );
    assert!(counter(&kb, "writes") > 0, "{kb}");
    assert_eq!(health(&d, "k1").0, "optimal");

    // --clear also lifts --vanish; asking for no rule at all is refused
    // with the list of rules.
    d.ok(&["disk", "inject", "ka", "--vanish"]);
    assert_eq!(disk(&d, "ka")["faults"]["vanished"], true);
    d.ok(&["disk", "inject", "ka", "--clear"]);
    assert_eq!(disk(&d, "ka")["faults"]["vanished"], false);
    qemu_io(&url, &["read -P 0x31 0 2M", "read -P 0x32 2M 1M"]);
    assert_eq!(disk(&d, "ka")["status"], "ok");
    let err = d.fails(&["disk", "inject", "ka"]);
    assert!(
        err.contains("--read-error-at") && err.contains("--clear"),
        "{err}"
    );
}

// --------------------------------------- 2. adopting existing files

#[test]
fn adopted_files_form_a_group_whose_volume_survives_a_restart() {
    if !have(&["qemu-io", "truncate"]) {
        return;
    }
    let dir = pool_dir();
    let files = files_dir();
    let (fa, fb, fc) = (
        files.path().join("a.img"),
        files.path().join("b.img"),
        files.path().join("c.img"),
    );
    for f in [&fa, &fb, &fc] {
        truncate(f, "64M");
    }
    let mut d = Daemon::start(dir.path(), &[]);
    let added = d.json(&["disk", "add", "pa", "--path", fa.to_str().unwrap()]);
    assert_eq!(added["path"], canonical(&fa).to_str().unwrap(), "{added}");
    d.ok(&["disk", "add", "pb", "--path", fb.to_str().unwrap()]);
    for (name, f) in [("pa", &fa), ("pb", &fb)] {
        let x = disk(&d, name);
        assert_eq!(x["path"], canonical(f).to_str().unwrap(), "{x}");
        assert_eq!(x["status"], "ok", "{x}");
        assert_eq!(x["size"], 64 * MIB, "{x}");
        assert!(x["group"].is_null(), "{x}");
    }
    // The table shows the path too.
    let table = d.ok(&["disk", "list"]);
    assert!(table.contains(canonical(&fa).to_str().unwrap()), "{table}");

    d.ok(&[
        "group", "create", "pg", "--raid", "raid1", "--disks", "pa,pb",
    ]);
    assert_eq!(disk(&d, "pa")["group"], "pg");
    d.ok(&["volume", "create", "pv", "--group", "pg", "--size", "48M"]);
    let url = d.export("pv");
    qemu_io(
        &url,
        &[
            "write -P 0x5a 0 16M",
            "write -P 0x5b 16M 1M",
            "write -P 0x5c 40M 8M",
            "flush",
        ],
    );
    // The data went to the adopted files.
    assert!(counter(&disk(&d, "pa"), "bytes_written") >= 25 * MIB);
    assert!(counter(&disk(&d, "pb"), "bytes_written") >= 25 * MIB);

    d.restart();
    for (name, f) in [("pa", &fa), ("pb", &fb)] {
        let x = disk(&d, name);
        assert_eq!(
            (x["status"].as_str(), x["path"].as_str()),
            (Some("ok"), canonical(f).to_str()),
            "{x}"
        );
    }
    assert_eq!(health(&d, "pg").0, "optimal");
    qemu_io(
        &d.export("pv"),
        &[
            "read -P 0x5a 0 16M",
            "read -P 0x5b 16M 1M",
            "read -P 0 17M 23M",
            "read -P 0x5c 40M 8M",
        ],
    );

    // Removing a free adopted disk leaves its file in place (the pool did
    // not create it).
    d.ok(&["disk", "add", "pc", "--path", fc.to_str().unwrap()]);
    d.ok(&["disk", "remove", "pc"]);
    assert!(fc.exists(), "disk remove deleted an adopted file");
    assert!(!has_disk(&d, "pc"));
}

#[test]
fn adopting_a_pool_disk_or_a_missing_path_is_refused_by_name() {
    if !have(&["truncate"]) {
        return;
    }
    let dir = pool_dir();
    let files = files_dir();
    let fa = files.path().join("a.img");
    truncate(&fa, "64M");
    let link = files.path().join("a-link.img");
    std::os::unix::fs::symlink(&fa, &link).unwrap();
    let d = Daemon::start(dir.path(), &[]);
    d.ok(&["disk", "add", "xa", "--path", fa.to_str().unwrap()]);
    d.ok(&["disk", "add", "own", "--size", "40M"]);
    let own = disk(&d, "own")["path"].as_str().unwrap().to_string();
    let before = d.json(&["disk", "list"]).as_array().unwrap().len();

    let canon = canonical(&fa).display().to_string();
    // The same file, by its path and through a symlink.
    for p in [&fa, &link] {
        let err = d.fails(&["disk", "add", "xb", "--path", p.to_str().unwrap()]);
        assert!(
            err.contains(&format!("{canon} is already disk xa of this pool")),
            "{}: {err}",
            p.display()
        );
    }
    // A disk file the pool made itself.
    let err = d.fails(&["disk", "add", "xc", "--path", &own]);
    assert!(
        err.contains(&format!("{own} is already disk own of this pool")),
        "{err}"
    );
    // A path that does not exist: named, with the reason, and not created.
    let gone = files.path().join("no-such.img");
    let err = d.fails(&["disk", "add", "xd", "--path", gone.to_str().unwrap()]);
    assert!(
        err.contains(&format!("{} does not exist", gone.display())),
        "{err}"
    );
    assert!(
        !gone.exists(),
        "a refused adoption created {}",
        gone.display()
    );

    assert_eq!(d.json(&["disk", "list"]).as_array().unwrap().len(), before);
    for name in ["xb", "xc", "xd"] {
        assert!(!has_disk(&d, name), "{name} was added");
    }
    // The refusals changed nothing about xa.
    let xa = disk(&d, "xa");
    assert_eq!(
        (xa["status"].as_str(), xa["path"].as_str()),
        (Some("ok"), Some(canon.as_str())),
        "{xa}"
    );
}

#[test]
fn a_relative_adopt_path_is_relative_to_the_cli() {
    if !have(&["truncate"]) {
        return;
    }
    let dir = pool_dir();
    let files = files_dir();
    let f = files.path().join("rel.img");
    truncate(&f, "64M");
    let d = Daemon::start(dir.path(), &[]);
    // The CLI runs in the directory holding the file; the daemon does not.
    let o = Command::new(BIN)
        .current_dir(files.path())
        .arg("--pool")
        .arg(dir.path())
        .args(["--json", "disk", "add", "rel", "--path", "rel.img"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "adopting ./rel.img from its directory: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(disk(&d, "rel")["path"], canonical(&f).to_str().unwrap());
}

// --------------------------------------- 3. SIGTERM with I/O in flight

#[test]
fn sigterm_under_fio_load_exits_0_and_keeps_flushed_data() {
    if !have(&["qemu-io", "fio"]) {
        return;
    }
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &[]);
    d.group("t1", "raid1", &["ta", "tb"], "40M");
    d.ok(&["volume", "create", "tv", "--group", "t1", "--size", "32M"]);
    let url = d.export("tv");
    qemu_io(
        &url,
        &["write -P 0x3c 0 8M", "write -P 0x3d 8M 4M", "flush"],
    );

    // fio writes the second half for as long as it is let.
    let log = dir.path().join("fio.log");
    let mut fio = Command::new("fio")
        .args([
            "--name=load",
            "--ioengine=nbd",
            &format!("--uri={url}"),
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=16",
            "--offset=16M",
            "--size=16M",
            "--time_based",
            "--runtime=300",
        ])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn fio");
    let writes = |d: &Daemon| counter(&disk(d, "ta"), "writes");
    let base = writes(&d);
    poll("fio connected and writing", 120, || {
        d.json(&["volume", "show", "tv"])["connections"] == 1 && writes(&d) > base + 200
    });
    assert!(
        fio.try_wait().unwrap().is_none(),
        "fio ended before the signal: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let mut child = d.child.take().expect("daemon running");
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .expect("SIGTERM");
    let st = wait_timeout(&mut child, Duration::from_secs(120));
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(0),
        "the daemon exits 0 on SIGTERM with I/O in flight: {st:?}"
    );
    assert!(
        !dir.path().join("nbd.sock").exists(),
        "nbd.sock left behind"
    );
    assert!(
        !dir.path().join("api.sock").exists(),
        "api.sock left behind"
    );
    // fio loses its server and ends by itself.
    let fst = wait_timeout(&mut fio, Duration::from_secs(60));
    assert!(fst.is_some(), "fio still running after the daemon stopped");

    d.respawn();
    wait_resyncs(&d);
    qemu_io(
        &d.export("tv"),
        &[
            "read -P 0x3c 0 8M",
            "read -P 0x3d 8M 4M",
            "read -P 0 12M 4M",
            // fio's half: whatever it holds, it reads without error.
            "read 16M 16M",
        ],
    );
    assert_eq!(health(&d, "t1").0, "optimal");
    let pool = d.json(&["pool", "show"]);
    assert_eq!(pool["problems"], serde_json::json!([]), "{pool}");
}

// ------------------------------------------------ 4. a volume in use

#[test]
fn a_volume_in_use_is_deleted_only_with_force_and_its_client_then_fails() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    d.group("u1", "concat", &["ua"], "64M");
    for v in ["uv", "uw"] {
        d.ok(&["volume", "create", v, "--group", "u1", "--size", "16M"]);
        qemu_io(&d.export(v), &["write -P 0x77 0 1M", "flush"]);
    }
    let conns = |v: &str| d.json(&["volume", "show", v])["connections"].clone();

    let mut s = QemuIoSession::open(&d.export("uv"));
    let r = s.exec("read -P 0x77 0 1M");
    assert!(r.contains("read 1048576/1048576 bytes at offset 0"), "{r}");
    poll("uv shows its connection", 30, || conns("uv") == 1);

    let err = d.fails(&["volume", "delete", "uv"]);
    assert!(
        err.contains("volume uv is in use by 1 NBD connection(s)") && err.contains("--force"),
        "{err}"
    );
    // Refused means untouched: listed, and the client still reads its data.
    assert!(has_volume(&d, "uv"));
    let r = s.exec("read -P 0x77 0 1M");
    assert!(
        r.contains("read 1048576/1048576 bytes at offset 0") && !r.contains("failed"),
        "{r}"
    );

    d.ok(&["volume", "delete", "uv", "--force"]);
    assert!(!has_volume(&d, "uv"));
    let err = d.fails(&["volume", "show", "uv"]);
    assert!(err.contains("unknown volume \"uv\""), "{err}");
    let r = s.exec("read 0 4k");
    assert!(
        r.contains("read failed: "),
        "the client's next read fails: {r}"
    );
    let r = s.exec("write -P 0x78 0 4k");
    assert!(
        r.contains("write failed: "),
        "the client's next write fails: {r}"
    );
    s.quit();
    // The other volume of the group is unharmed.
    qemu_io(&d.export("uw"), &["read -P 0x77 0 1M", "read -P 0 1M 15M"]);

    // Once its client has gone, a volume deletes without --force.
    let s = QemuIoSession::open(&d.export("uw"));
    poll("uw shows its connection", 30, || conns("uw") == 1);
    assert!(d.fails(&["volume", "delete", "uw"]).contains("in use"));
    s.quit();
    poll("uw's connection is gone", 30, || conns("uw") == 0);
    d.ok(&["volume", "delete", "uw"]);
    assert!(!has_volume(&d, "uw"));
}

#[test]
fn force_deletes_an_original_with_copies_while_in_use() {
    if !have(&["qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    d.group("o1", "concat", &["oa"], "64M");
    d.ok(&["volume", "create", "ov", "--group", "o1", "--size", "16M"]);
    qemu_io(&d.export("ov"), &["write -P 0x61 0 1M", "flush"]);
    d.ok(&["copy", "create", "ov", "oc"]);
    let mut s = QemuIoSession::open(&d.export("ov"));
    let r = s.exec("read -P 0x61 0 1M");
    assert!(r.contains("bytes at offset 0"), "{r}");
    poll("ov shows its connection", 30, || {
        d.json(&["volume", "show", "ov"])["connections"] == 1
    });
    // Without --force: refused, and the message says how.
    let err = d.fails(&["volume", "delete", "ov"]);
    assert!(
        err.contains("volume ov is in use by 1 NBD connection"),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    let o = d.cli(&["volume", "delete", "ov", "--force"]);
    assert!(
        o.status.success(),
        "--force deletes even while clients are connected: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r = s.exec("read 0 4k");
    assert!(r.contains("read failed: "), "{r}");
    // The copy keeps its data.
    qemu_io(&d.export("oc"), &["read -P 0x61 0 1M"]);
}

// ------------------------------------------------ 5. read-only volumes

#[test]
fn a_read_only_volume_refuses_writes_and_serves_reads() {
    if !have(&["qemu-io", "nbdinfo"]) {
        return;
    }
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    d.group("r1", "concat", &["ra"], "64M");
    d.ok(&[
        "volume",
        "create",
        "rov",
        "--group",
        "r1",
        "--size",
        "16M",
        "--read-only",
    ]);
    d.ok(&["volume", "create", "rwv", "--group", "r1", "--size", "16M"]);
    qemu_io(&d.export("rwv"), &["write -P 0x42 0 16M", "flush"]);
    // A read-only instant copy of rwv: a read-only volume holding data.
    d.ok(&["copy", "create", "rwv", "roc", "--read-only"]);
    assert_eq!(d.json(&["volume", "show", "rov"])["read_only"], true);
    assert_eq!(d.json(&["volume", "show", "rwv"])["read_only"], false);
    let table = d.ok(&["volume", "list"]);
    let mode_ro = |v: &str| {
        table
            .lines()
            .find(|l| l.contains(&format!(" {v} ")))
            .map(|l| l.contains(" ro "))
            .unwrap_or_else(|| panic!("{v} not listed: {table}"))
    };
    assert!(
        mode_ro("rov") && mode_ro("roc") && !mode_ro("rwv"),
        "{table}"
    );

    for (v, ro) in [("rov", true), ("roc", true), ("rwv", false)] {
        let e = nbdinfo(&d.export(v));
        assert_eq!(e["is_read_only"], ro, "{v}: {e}");
        assert_eq!(e["export-size"], 16 * MIB, "{v}: {e}");
    }

    for (v, pat) in [("rov", 0u8), ("roc", 0x42)] {
        let url = d.export(v);
        // qemu-io does not even open it for writing...
        let (ok, out) = run("qemu-io", &["-f", "raw", "-c", "write -P 0x99 0 4k", &url]);
        assert!(!ok && !out.contains("wrote"), "{v}: {out}");
        // ...and, opened read-only, its writes fail.
        let (ok, out) = run(
            "qemu-io",
            &["-r", "-f", "raw", "-c", "write -P 0x99 0 4k", &url],
        );
        assert!(
            !ok && out.contains("read-only") && !out.contains("wrote"),
            "{v}: {out}"
        );
        // Reads work.
        qemu_io_ro(&url, &format!("read -P {pat} 0 16M"));

        // A client that writes anyway gets EPERM from the server, and the
        // data stays as it was.
        let mut c = RawNbd::connect(&d.url, v);
        assert_eq!(c.size, 16 * MIB);
        assert_ne!(c.flags & NBD_FLAG_READ_ONLY, 0, "{v}: flags {:#x}", c.flags);
        let (err, _) = c.request(NBD_CMD_WRITE, 0, 4096, &[0x99; 4096]);
        assert_eq!(err, NBD_EPERM, "{v}: a write to a read-only export");
        let (err, data) = c.request(NBD_CMD_READ, 0, 4096, &[]);
        assert_eq!(err, 0, "{v}: the stream stays in sync");
        assert!(data.iter().all(|&b| b == pat), "{v}: data changed");
        c.disconnect();
        qemu_io_ro(&url, &format!("read -P {pat} 0 16M"));
    }
    // The writable volume, for contrast, takes the same raw write.
    let mut c = RawNbd::connect(&d.url, "rwv");
    assert_eq!(c.flags & NBD_FLAG_READ_ONLY, 0);
    assert_eq!(c.request(NBD_CMD_WRITE, 0, 4096, &[0x99; 4096]).0, 0);
    c.disconnect();
    qemu_io(
        &d.export("rwv"),
        &["read -P 0x99 0 4k", "read -P 0x42 4k 16380k"],
    );
    // The copy still shows the image it was taken from.
    qemu_io_ro(&d.export("roc"), "read -P 0x42 0 16M");
}

// ------------------------------------------------ 6. the Unix socket

#[test]
fn the_unix_socket_serves_the_same_volumes_as_tcp() {
    if !have(&["qemu-io", "nbdinfo"]) {
        return;
    }
    let dir = pool_dir();
    let d = Daemon::start(dir.path(), &[]);
    let sock = dir.path().join("nbd.sock");
    let pool = d.json(&["pool", "show"]);
    assert_eq!(pool["nbd_unix"], sock.to_str().unwrap(), "{pool}");
    {
        use std::os::unix::fs::FileTypeExt;
        let ft = std::fs::metadata(&sock)
            .expect("nbd.sock exists")
            .file_type();
        assert!(ft.is_socket(), "{} is not a socket", sock.display());
    }
    d.group("n1", "raid1", &["na", "nb"], "40M");
    d.ok(&["volume", "create", "nv", "--group", "n1", "--size", "32M"]);
    let tcp = d.export("nv");
    let unix = format!("nbd+unix:///nv?socket={}", sock.display());

    qemu_io(
        &tcp,
        &["write -P 0x6b 0 4M", "write -P 0x6c 4M 4M", "flush"],
    );
    qemu_io(
        &unix,
        &[
            "read -P 0x6b 0 4M",
            "read -P 0x6c 4M 4M",
            "read -P 0 8M 24M",
        ],
    );
    // And the other way round.
    qemu_io(&unix, &["write -P 0x6d 8M 1M", "flush"]);
    qemu_io(&tcp, &["read -P 0x6d 8M 1M", "read -P 0x6c 4M 4M"]);
    let e = nbdinfo(&unix);
    assert_eq!(e["export-name"], "nv", "{e}");
    assert_eq!(e["export-size"], 32 * MIB, "{e}");
    // A name the pool does not have is not served there either.
    let (ok, out) = run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "read 0 4k",
            &format!("nbd+unix:///nope?socket={}", sock.display()),
        ],
    );
    assert!(!ok && !out.contains("bytes at offset"), "{out}");
}
