//! Shared by the api_* and cli_* tests: the real daemon on a temporary
//! pool (a new pool is provisioned with disks d0..d3 of 1 GiB, raid5 group
//! g0 over them and the 2 GiB volume vol0), a raw HTTP client of its API
//! socket, a runner of the binary, and NBD writes through a raw client.
//! A test file that uses it also declares `mod harness;` and
//! `mod nbd_common;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use super::harness::{Daemon, pool_dir};
use super::nbd_common::{Raw, cmd};

use ferrosan::api::views::ApiError;

// ---------------------------------------------------------------- pool

/// A daemon on a temporary pool of its own, stopped and removed on drop.
pub struct Pool {
    pub d: Daemon,
    _dir: tempfile::TempDir,
}

impl Pool {
    pub fn start() -> Pool {
        Pool::start_with(&[])
    }

    /// With extra `serve` options (e.g. `--fault-injection`).
    pub fn start_with(extra: &[&str]) -> Pool {
        let dir = pool_dir();
        let d = Daemon::start(&dir.path().join("pool"), extra);
        Pool { d, _dir: dir }
    }

    /// The pool directory, for `ferrosan --pool`.
    pub fn path(&self) -> &Path {
        &self.d.pool
    }

    pub fn socket(&self) -> PathBuf {
        self.d.pool.join("api.sock")
    }

    /// The NBD TCP port.
    pub fn port(&self) -> u16 {
        self.d
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {}", self.d.url))
    }

    /// An NBD connection to `export`.
    pub fn nbd(&self, export: &str) -> Raw {
        Raw::open(self.port(), export, false)
    }

    /// Writes `len` bytes of `byte` at `off` of `export` and flushes.
    pub fn fill(&self, export: &str, off: u64, len: u64, byte: u8) {
        let mut c = self.nbd(export);
        let chunk = vec![byte; 1 << 20];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(chunk.len() as u64);
            let errno = c.write(off + done, &chunk[..n as usize], 0);
            assert_eq!(errno, 0, "write to {export} at {} failed", off + done);
            done += n;
        }
        c.request(cmd::FLUSH, 0, 3, 0, 0);
        assert_eq!(c.reply(0).0.errno(), 0, "flush of {export}");
        // Disconnect and wait until the daemon has seen it go: a change
        // that refuses volumes in use (restore) must not see it.
        c.request(cmd::DISC, 0, 4, 0, 0);
        drop(c);
        super::harness::poll(&format!("{export} has no connection"), 10, || {
            let r = self.get(&format!("/v1/volumes/{export}"));
            r.body.contains("\"connections\":0")
        });
    }

    /// One raw HTTP request to the API.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> Resp {
        request(&self.socket(), method, path, body)
    }

    pub fn get(&self, path: &str) -> Resp {
        self.call("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &str) -> Resp {
        self.call("POST", path, Some(body))
    }
}

/// Waits until something listens on `socket`.
pub fn wait_for_socket(socket: &Path, limit: std::time::Duration) {
    let start = std::time::Instant::now();
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        assert!(
            start.elapsed() < limit,
            "nothing listens on {} after {limit:?}",
            socket.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------- client

/// A response: status, content type and body text.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// The ApiError body: (kind, message).
    pub fn error(&self) -> (String, String) {
        let e: ApiError = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not an ApiError ({e}): {:?}", self.body));
        (e.kind, e.message)
    }
}

/// One raw HTTP/1.1 request over the socket (any bytes in the body).
pub fn request(socket: &Path, method: &str, path: &str, body: Option<&str>) -> Resp {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    let body = body.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    parse_response(&raw)
}

fn parse_response(raw: &str) -> Resp {
    let (head, body) = raw.split_once("\r\n\r\n").expect("no end of headers");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Resp {
        status,
        content_type,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

// ---------------------------------------------------------------- binary

/// One run of the `ferrosan` binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `ferrosan --pool POOL ARGS...`.
pub fn ferrosan(pool: &Path, args: &[&str]) -> Run {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrosan"))
        .arg("--pool")
        .arg(pool)
        .args(args)
        .env_remove("FERROSAN_POOL")
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Exit 0, nothing on stderr: stdout.
pub fn ok(pool: &Path, args: &[&str]) -> String {
    let r = ferrosan(pool, args);
    assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    assert_eq!(r.stderr, "", "{args:?}");
    r.stdout
}

/// The output of `--json ARGS...`, parsed.
pub fn json(pool: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let text = ok(pool, &all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {text}"))
}

/// exit 1 and `error: <message>` on stderr, nothing on stdout: the message.
pub fn fails(pool: &Path, args: &[&str]) -> String {
    let r = ferrosan(pool, args);
    assert_eq!(r.code, 1, "{args:?}: {} {}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "", "{args:?}");
    r.stderr
        .strip_prefix("error: ")
        .unwrap_or_else(|| panic!("{args:?}: {}", r.stderr))
        .trim_end()
        .to_owned()
}
