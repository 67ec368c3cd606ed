//! Test harness for end-to-end tests: a real `ferrosan serve` daemon on a
//! temporary pool and a free port, driven by the real CLI and real NBD
//! clients (qemu-io, qemu-img, nbdinfo, nbdcopy, fio).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ferrosan");

/// Whether the tests run in CI (`CI=true`), where a missing tool is an
/// error: CI must never pass by skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Whether every named tool is on PATH; prints which is missing. In CI
/// (`CI=true`) a missing tool panics instead of skipping the test.
pub fn have(tools: &[&str]) -> bool {
    for t in tools {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            assert!(
                !in_ci(),
                "{t} is not installed and CI=true: CI must run every test, not skip it (scripts/test.sh installs {t})"
            );
            eprintln!("SKIP: {t} is not installed (scripts/test.sh installs it)");
            return false;
        }
    }
    true
}

/// A temporary pool directory under the target dir (same filesystem as the
/// build, so O_DIRECT works).
pub fn pool_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pool-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp pool dir")
}

/// A running daemon.
pub struct Daemon {
    pub pool: PathBuf,
    pub child: Option<Child>,
    /// `nbd://127.0.0.1:PORT`
    pub url: String,
    pub extra: Vec<String>,
    pub stdout: mpsc::Receiver<String>,
    /// Every line the daemon wrote on stderr (its log), over every start.
    pub stderr: Arc<Mutex<Vec<String>>>,
}

/// Log lines of a daemon whose disk I/O left the fast path: io_uring
/// missing (the synchronous engine) or O_DIRECT refused (buffered I/O).
pub fn engine_fallbacks(log: &[String]) -> Vec<String> {
    log.iter()
        .filter(|l| {
            l.contains("synchronous disk engine") || l.contains("does not support O_DIRECT")
        })
        .cloned()
        .collect()
}

impl Daemon {
    /// Adds a sparse disk of `size` for each name and creates group `name`
    /// over them (64 KiB strips).
    pub fn group(&self, name: &str, raid: &str, disks: &[&str], size: &str) {
        for disk in disks {
            self.ok(&["disk", "add", disk, "--size", size]);
        }
        let list = disks.join(",");
        self.ok(&[
            "group",
            "create",
            name,
            "--raid",
            raid,
            "--disks",
            &list,
            "--stripe-size",
            "64K",
        ]);
    }

    /// Starts `ferrosan --pool DIR serve --listen 127.0.0.1:0 EXTRA` and
    /// waits (bounded) until it prints its NBD address and its API socket
    /// answers.
    pub fn start(pool: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_in(None, pool, extra)
    }

    /// As [`Daemon::start`], with the daemon's working directory `cwd` and
    /// `pool` given to it as written (relative to `cwd`), as a user who
    /// runs `ferrosan serve` in a folder does.
    pub fn start_in(cwd: Option<&Path>, pool: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_env(cwd, pool, extra, &[])
    }

    /// As [`Daemon::start_in`], with environment variables `env` set for
    /// the daemon (test hooks).
    pub fn start_env(
        cwd: Option<&Path>,
        pool: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        Daemon::start_logging(cwd, pool, extra, env, Arc::new(Mutex::new(Vec::new())))
    }

    fn start_logging(
        cwd: Option<&Path>,
        pool: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        stderr: Arc<Mutex<Vec<String>>>,
    ) -> Daemon {
        let mut cmd = Command::new(BIN);
        cmd.envs(env.iter().copied());
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        cmd.arg("--pool")
            .arg(pool)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0");
        cmd.args(extra);
        cmd.env("RUST_LOG", "warn");
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ferrosan serve");
        // The log goes on to the test's stderr, and is kept.
        let err = child.stderr.take().expect("stderr");
        let log = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("{line}");
                if let Ok(mut l) = log.lock() {
                    l.push(line);
                }
            }
        });
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut url = None;
        while url.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix("NBD") {
                        let u = rest.split_whitespace().next().unwrap_or("");
                        url = Some(u.trim_end_matches("/<volume>").to_string());
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("daemon did not print its NBD address within 60 s");
                }
            }
        }
        let d = Daemon {
            pool: cwd.map_or_else(|| pool.to_path_buf(), |c| c.join(pool)),
            child: Some(child),
            url: url.unwrap_or_default(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            stdout: rx,
            stderr,
        };
        // The banner is printed after every socket is bound.
        assert!(
            d.pool.join("api.sock").exists(),
            "api.sock missing after the banner"
        );
        d
    }

    /// `nbd://127.0.0.1:PORT/NAME`
    pub fn export(&self, name: &str) -> String {
        format!("{}/{}", self.url, name)
    }

    /// Runs the CLI against this pool.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.pool, args)
    }

    /// Runs the CLI and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "ferrosan {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs the CLI with --json and parses the output.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let s = self.ok(&a);
        serde_json::from_str(&s)
            .unwrap_or_else(|e| panic!("ferrosan {a:?} printed no JSON ({e}): {s}"))
    }

    /// Runs the CLI, asserts failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            !o.status.success(),
            "ferrosan {args:?} should have failed: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// The daemon's log so far.
    pub fn log(&self) -> Vec<String> {
        self.stderr.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// In CI (`CI=true`), fails if the daemon's disk I/O fell back to the
    /// synchronous engine or to buffered I/O: CI must measure and test the
    /// path users get. Elsewhere (a tmpfs, an old kernel) it says so.
    pub fn check_engine(&self) {
        let fell = engine_fallbacks(&self.log());
        if fell.is_empty() {
            return;
        }
        assert!(
            !in_ci(),
            "the daemon's disk I/O fell back from io_uring with O_DIRECT (CI=true):\n{}",
            fell.join("\n")
        );
        eprintln!("NOTE: disk I/O fell back: {}", fell.join("; "));
    }

    /// SIGTERM and wait: a clean stop.
    pub fn stop(&mut self) {
        self.check_engine();
        if let Some(mut c) = self.child.take() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(&c),
                rustix::process::Signal::TERM,
            );
            let st = wait_timeout(&mut c, Duration::from_secs(60));
            assert!(
                st.is_some_and(|s| s.success()),
                "daemon did not stop cleanly: {st:?}"
            );
        }
    }

    /// SIGKILL: a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the daemon cleanly and starts it again on the same pool.
    pub fn restart(&mut self) {
        self.stop();
        self.respawn();
    }

    /// Starts the daemon again on the same pool (after `stop` or `kill9`).
    pub fn respawn(&mut self) {
        let extra: Vec<&str> = self.extra.iter().map(|s| s.as_str()).collect();
        let mut d = Daemon::start_logging(None, &self.pool, &extra, &[], Arc::clone(&self.stderr));
        self.url = std::mem::take(&mut d.url);
        self.child = d.child.take();
        self.stdout = std::mem::replace(&mut d.stdout, mpsc::channel().1);
    }

    /// Waits for job `id` to finish and returns its JSON; fails when the
    /// job makes no progress for a minute.
    pub fn wait_job(&self, id: u64) -> serde_json::Value {
        let o = self.cli(&["--json", "job", "wait", &id.to_string(), "--timeout", "60s"]);
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        serde_json::from_str(&s).unwrap_or_else(|e| {
            panic!(
                "job wait {id}: {e}: {s}{}",
                String::from_utf8_lossy(&o.stderr)
            )
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn wait_timeout(c: &mut Child, t: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + t;
    loop {
        match c.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = c.kill();
                return None;
            }
        }
    }
}

/// Runs the CLI against a pool.
pub fn cli(pool: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--pool")
        .arg(pool)
        .args(args)
        .output()
        .expect("run ferrosan")
}

/// Runs a command and returns (success, stdout+stderr).
pub fn run(prog: &str, args: &[&str]) -> (bool, String) {
    let o = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e}"));
    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&o.stderr));
    (o.status.success(), s)
}

/// Whether two images (NBD URLs or files) read the same, and what
/// `qemu-img compare` said.
pub fn same_image(a: &str, b: &str) -> (bool, String) {
    run("qemu-img", &["compare", "-f", "raw", "-F", "raw", a, b])
}

/// What one fio run did, from its JSON report (`--output-format=json`).
#[derive(Debug)]
pub struct FioReport {
    pub ok: bool,
    /// fio's errors, summed over its jobs.
    pub errors: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    /// stdout and stderr, for failure messages.
    pub text: String,
}

/// Runs fio with `args` and its JSON report; asserts that the report
/// parses. Reads of a write job with `--do_verify=1` are its verification.
pub fn fio(args: &[&str]) -> FioReport {
    let o = Command::new("fio")
        .args(args)
        .arg("--output-format=json")
        .output()
        .expect("run fio");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let text = format!("{stdout}{}", String::from_utf8_lossy(&o.stderr));
    let json = stdout.find('{').map_or("", |i| &stdout[i..]);
    let v: serde_json::Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("fio {args:?} printed no JSON report ({e}): {text}"));
    let jobs = v["jobs"].as_array().cloned().unwrap_or_default();
    assert!(
        !jobs.is_empty(),
        "fio {args:?}: no jobs in its report: {text}"
    );
    let sum = |f: &dyn Fn(&serde_json::Value) -> u64| jobs.iter().map(f).sum::<u64>();
    FioReport {
        ok: o.status.success(),
        errors: sum(&|j| j["error"].as_u64().unwrap_or(1)),
        read_bytes: sum(&|j| j["read"]["io_bytes"].as_u64().unwrap_or(0)),
        write_bytes: sum(&|j| j["write"]["io_bytes"].as_u64().unwrap_or(0)),
        text,
    }
}

/// qemu-io on an NBD URL with the given commands; asserts success and no
/// failed verification, returns the output.
pub fn qemu_io(url: &str, cmds: &[&str]) -> String {
    qemu_io_with(&[], url, cmds)
}

/// [`qemu_io`] over a read-only connection (`qemu-io -r`).
pub fn qemu_io_ro(url: &str, cmds: &[&str]) -> String {
    qemu_io_with(&["-r"], url, cmds)
}

fn qemu_io_with(opts: &[&str], url: &str, cmds: &[&str]) -> String {
    let mut args = opts.to_vec();
    args.extend(["-f", "raw"]);
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(url);
    let (ok, out) = run("qemu-io", &args);
    assert!(ok, "qemu-io {cmds:?} failed: {out}");
    assert!(
        !out.contains("Pattern verification failed"),
        "qemu-io {cmds:?}: {out}"
    );
    assert!(
        !out.to_lowercase().contains("error"),
        "qemu-io {cmds:?}: {out}"
    );
    out
}

/// (offset, length) of the extents `nbdinfo --map` prints as dirty (type
/// 1) for metadata context `context` of `url`.
pub fn dirty_extents(url: &str, context: &str) -> Vec<(u64, u64)> {
    let (ok, out) = run("nbdinfo", &[&format!("--map={context}"), url]);
    assert!(ok, "nbdinfo --map={context} {url}: {out}");
    out.lines()
        .filter_map(
            |l| match l.split_whitespace().collect::<Vec<_>>().as_slice() {
                [off, len, "1", ..] => Some((off.parse().ok()?, len.parse().ok()?)),
                _ => None,
            },
        )
        .collect()
}

/// Polls `cond` every 20 ms until it holds; panics after `secs`.
pub fn poll(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------ an interactive qemu-io

/// qemu-io reading commands from a pipe: one NBD connection held open for
/// as long as the test wants, commands sent one by one or queued.
pub struct QemuIoSession {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    transcript: Vec<String>,
    /// Commands finished so far (a report line or a "... failed:" line).
    /// Send the next command only once the previous one has finished:
    /// qemu-io takes one line per wakeup of its stdin.
    done: usize,
}

impl QemuIoSession {
    pub fn open(url: &str) -> QemuIoSession {
        let mut child = Command::new("qemu-io")
            .args(["-f", "raw", url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn qemu-io");
        let (tx, rx) = mpsc::channel();
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for stream in streams {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        QemuIoSession {
            stdin: child.stdin.take(),
            child,
            lines: rx,
            transcript: Vec::new(),
            done: 0,
        }
    }

    pub fn send(&mut self, cmd: &str) {
        let stdin = self.stdin.as_mut().expect("session open");
        writeln!(stdin, "{cmd}").expect("write to qemu-io");
        stdin.flush().expect("flush qemu-io stdin");
    }

    fn take(&mut self, line: String) {
        if line.contains(" bytes at offset ") || line.contains(" failed: ") {
            self.done += 1;
        }
        self.transcript.push(line);
    }

    /// Waits (bounded) until `n` commands have finished.
    pub fn wait_done(&mut self, n: usize, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.done < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.take(line),
                Err(_) => panic!(
                    "qemu-io: {} of {n} commands finished within {secs} s:\n{}",
                    self.done,
                    self.text()
                ),
            }
        }
    }

    /// Runs one command; the lines it printed.
    pub fn exec(&mut self, cmd: &str) -> String {
        let before = self.transcript.len();
        self.send(cmd);
        self.wait_done(self.done + 1, 60);
        self.transcript[before..].join("\n")
    }

    pub fn text(&self) -> String {
        self.transcript.join("\n")
    }

    /// Quits and waits (bounded) for qemu-io to exit; the whole transcript.
    pub fn quit(mut self) -> String {
        self.send("quit");
        drop(self.stdin.take());
        let st = wait_timeout(&mut self.child, Duration::from_secs(30));
        assert!(st.is_some(), "qemu-io did not quit:\n{}", self.text());
        // The reader threads end at EOF.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.take(line);
        }
        self.text()
    }
}

impl Drop for QemuIoSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
