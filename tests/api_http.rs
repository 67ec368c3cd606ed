//! The API over the daemon's Unix socket, on a temporary pool: routing,
//! status codes, the ApiError body of every failure, how requests are read
//! (bodies, paths and queries, what reaches the pool and what does not),
//! and the socket itself (mode 0600, stale files, removed at a stop).
//! Every client mistake is a 4xx JSON `{kind, message}` that says what to
//! fix. One state the daemon never reaches, a handler that panics, is
//! shown with a stand-in dispatcher.

mod common;
mod harness;
mod nbd_common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use common::{Pool, Resp, request};
use ferrosan::ErrorKind;
use ferrosan::api::{ApiFailure, kind_name, status_of};

/// The pool's disks, groups and volumes, to see that a request refused
/// changed nothing.
fn state(p: &Pool) -> serde_json::Value {
    serde_json::json!([
        p.get("/v1/disks").json(),
        p.get("/v1/groups").json(),
        p.get("/v1/volumes").json(),
        p.get("/v1/copies").json(),
    ])
}

#[test]
fn unknown_route_is_404_json_naming_the_route() {
    let p = Pool::start();
    for path in ["/v1/nope", "/", "/v2/disks", "/v1/disks/d0/explode"] {
        let r = p.get(path);
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.content_type, "application/json", "{path}");
        let (kind, message) = r.error();
        assert_eq!(kind, "not_found");
        assert_eq!(
            message,
            format!("no such route: GET {path}; the routes are listed at /openapi.json")
        );
    }
}

/// Sends a request's head, waits, then its body, then a second request on
/// the same connection; returns everything the server answered.
fn slow_body_then_another(p: &Pool, method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let body = r#"{"name": "x"}"#;
    let mut c = std::os::unix::net::UnixStream::connect(p.socket()).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    // The body comes later than the head: the answer must wait for it.
    std::thread::sleep(std::time::Duration::from_millis(100));
    c.write_all(body.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path}: the server closed before the body: {e}"));
    c.write_all(b"GET /v1/pool HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut all = String::new();
    c.read_to_string(&mut all).unwrap();
    all
}

#[test]
fn every_answer_waits_for_the_whole_body_and_keeps_the_connection() {
    let p = Pool::start();
    for (method, path, status) in [
        ("POST", "/v1/nope", "404"),
        ("PUT", "/v1/disks", "405"),
        ("TRACE", "/v1/disks/d0/replace", "405"),
        ("GET", "/v1/pool", "200"),
        ("POST", "/v1/jobs/x/pause", "400"),
        ("POST", "/v1/disks", "422"),
    ] {
        let all = slow_body_then_another(&p, method, path);
        let statuses: Vec<&str> = all
            .split("HTTP/1.1 ")
            .skip(1)
            .map(|answer| &answer[..3])
            .collect();
        assert_eq!(statuses, [status, "200"], "{method} {path}: {all}");
    }
}

#[test]
fn a_body_over_the_limit_is_413_json() {
    use std::io::{Read, Write};
    let p = Pool::start();
    let before = state(&p);
    let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(3 << 20));
    for path in ["/v1/disks", "/v1/nope"] {
        let mut c = std::os::unix::net::UnixStream::connect(p.socket()).unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            big.len()
        );
        c.write_all(head.as_bytes()).unwrap();
        // The server answers once it has read 2 MiB and closes: the rest
        // of the body may not go out.
        let _ = c.write_all(big.as_bytes());
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 413 "), "{path}: {answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let want = r#"{"kind":"invalid","message":"the request body is larger than 2 MiB"}"#;
        assert_eq!(body, want, "{path}");
    }
    assert_eq!(state(&p), before, "nothing reached the pool");
}

#[test]
fn wrong_method_is_405_json() {
    let p = Pool::start();
    let r = p.call("PUT", "/v1/disks", Some("{}"));
    assert_eq!(r.status, 405);
    let (kind, message) = r.error();
    assert_eq!(kind, "invalid");
    assert!(
        message.starts_with("PUT is not allowed on /v1/disks"),
        "{message}"
    );
}

#[test]
fn malformed_json_is_400_naming_the_problem() {
    let p = Pool::start();
    let before = state(&p);
    let r = p.post("/v1/disks", r#"{"name": "e0", "size": "#);
    assert_eq!(r.status, 400);
    let (kind, message) = r.error();
    assert_eq!(kind, "invalid");
    assert!(message.starts_with("invalid JSON body: "), "{message}");
    assert!(message.contains("EOF"), "{message}");
    assert_eq!(state(&p), before, "nothing reached the pool");
}

#[test]
fn empty_body_is_400_asking_for_json() {
    let p = Pool::start();
    let r = p.post("/v1/volumes", "");
    assert_eq!(r.status, 400);
    let (_, message) = r.error();
    assert!(message.contains("needs a JSON body"), "{message}");
}

#[test]
fn unknown_field_is_400_naming_the_field() {
    let p = Pool::start();
    let before = state(&p);
    let r = p.post(
        "/v1/disks",
        r#"{"name": "e0", "size": 4194304, "colour": "red"}"#,
    );
    assert_eq!(r.status, 400);
    let (kind, message) = r.error();
    assert_eq!(kind, "invalid");
    assert!(message.contains("unknown field `colour`"), "{message}");
    assert_eq!(state(&p), before, "no disk e0 was added");
}

#[test]
fn wrong_type_is_400_naming_the_field_path() {
    let p = Pool::start();
    let r = p.post(
        "/v1/volumes",
        r#"{"name": "v", "group": "g0", "size": "1G"}"#,
    );
    assert_eq!(r.status, 400);
    let (_, message) = r.error();
    assert!(
        message.contains("size: invalid type: string \"1G\""),
        "{message}"
    );

    let body = r#"{"read_error_at": {"offset": -1}}"#;
    let r = p.post("/v1/disks/d0/inject", body);
    assert_eq!(r.status, 400);
    let (_, message) = r.error();
    assert!(message.contains("read_error_at.offset"), "{message}");

    let r = p.post(
        "/v1/groups",
        r#"{"name": "g", "raid": "raid9", "disks": []}"#,
    );
    assert_eq!(r.status, 400);
    let (_, message) = r.error();
    assert!(
        message.contains("raid: unknown variant `raid9`"),
        "{message}"
    );
}

#[test]
fn missing_field_is_400() {
    let p = Pool::start();
    let r = p.post("/v1/disks/d0/replace", "{}");
    assert_eq!(r.status, 400);
    let (_, message) = r.error();
    assert!(message.contains("missing field `new`"), "{message}");
}

#[test]
fn bad_path_and_query_values_are_400() {
    let p = Pool::start();
    let before = state(&p);
    let r = p.get("/v1/jobs/abc");
    assert_eq!(r.status, 400);
    let (_, message) = r.error();
    assert_eq!(
        message,
        "invalid job id \"abc\": use the number `ferrosan job list` shows"
    );
    let r = p.call("DELETE", "/v1/volumes/vol0?force=maybe", None);
    assert_eq!(r.status, 400);
    let (_, message) = r.error();
    assert!(message.starts_with("invalid query string: "), "{message}");
    assert!(message.contains("force"), "{message}");
    let r = p.call("DELETE", "/v1/volumes/vol0?forse=true", None);
    assert_eq!(r.status, 400);
    assert!(r.error().1.contains("unknown field `forse`"), "{}", r.body);
    assert_eq!(state(&p), before, "vol0 is still there");
}

#[test]
fn paths_are_percent_decoded_and_queries_and_bodies_read_as_sent() {
    let p = Pool::start();
    // A name in the path is decoded: %30 is '0'.
    let r = p.get("/v1/volumes/vol%30");
    assert_eq!((r.status, r.json()["name"].as_str()), (200, Some("vol0")));
    let r = p.get("/v1/disks/a%2Fb%20c%3F");
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(
        r.error().1,
        "unknown disk \"a/b c?\": see `ferrosan disk list`"
    );
    // force=false by default: a volume in use is refused...
    let _client = p.nbd("vol0");
    poll_connections(&p, "vol0", 1);
    let r = p.call("DELETE", "/v1/volumes/vol%30", None);
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.error().1.contains("in use"), "{}", r.body);
    let r = p.call("DELETE", "/v1/volumes/vol0?force=false", None);
    assert_eq!(r.status, 409, "{}", r.body);
    // ...and force=true deletes it anyway.
    let r = p.call("DELETE", "/v1/volumes/vol%30?force=true", None);
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    assert_eq!(p.get("/v1/volumes/vol0").status, 404);
    // A body without `force` is force: false: failing d1 is allowed, but
    // then failing d2 would stop g0 and is refused; with force it is not.
    let r = p.post("/v1/disks/d%31/fail", "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "failed");
    let r = p.post("/v1/disks/d2/fail", "{}");
    assert_eq!(r.status, 409, "{}", r.body);
    let r = p.post("/v1/disks/d2/fail", r#"{"force": true}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(p.get("/v1/groups/g0").json()["health"], "failed");
}

/// Waits (bounded) until volume `name` counts `n` NBD connections.
fn poll_connections(p: &Pool, name: &str, n: u64) {
    harness::poll(&format!("{n} connections to {name}"), 30, || {
        p.get(&format!("/v1/volumes/{name}")).json()["connections"] == n
    });
}

#[test]
fn creation_is_201_replace_is_202_delete_is_204() {
    let p = Pool::start();
    for d in ["e0", "e1", "e2"] {
        let body = format!(r#"{{"name": "{d}", "size": 67108864}}"#);
        let r = p.post("/v1/disks", &body);
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.json()["name"], d);
        assert_eq!(r.json()["size"], 67108864u64);
    }
    let r = p.post(
        "/v1/groups",
        r#"{"name": "g1", "raid": "raid1", "disks": ["e0", "e1"]}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["raid"], "raid1");
    let r = p.post(
        "/v1/volumes",
        r#"{"name": "v1", "group": "g1", "size": 65536}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["size"], 65536);
    let r = p.post("/v1/disks/e0/replace", r#"{"new": "e2"}"#);
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["kind"], "replace");
    assert!(
        r.json()["state"] == "running" || r.json()["state"] == "done",
        "{}",
        r.body
    );
    let r = p.call("DELETE", "/v1/volumes/v1", None);
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    let r = p.get("/v1/volumes");
    let names: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!((r.status, names), (200, vec!["vol0".to_owned()]));
}

#[test]
fn pool_errors_map_to_statuses_with_the_message() {
    let p = Pool::start();
    // What the daemon answers for each kind of refusal it has.
    let r = p.get("/v1/disks/nope");
    assert_eq!((r.status, r.error().0.as_str()), (404, "not_found"));
    assert_eq!(
        r.error().1,
        "unknown disk \"nope\": see `ferrosan disk list`"
    );
    let r = p.post("/v1/disks", r#"{"name": "d0", "size": 4194304}"#);
    assert_eq!(
        (r.status, r.error().0.as_str()),
        (409, "conflict"),
        "{}",
        r.body
    );
    assert_eq!(r.error().1, "disk d0 already exists");
    let r = p.post(
        "/v1/volumes",
        r#"{"name": "big", "group": "g0", "size": 1099511627776}"#,
    );
    assert_eq!(
        (r.status, r.error().0.as_str()),
        (409, "no_space"),
        "{}",
        r.body
    );
    let r = p.post(
        "/v1/volumes",
        r#"{"name": "odd", "group": "g0", "size": 1000}"#,
    );
    assert_eq!(
        (r.status, r.error().0.as_str()),
        (422, "invalid"),
        "{}",
        r.body
    );
    // Every kind has its status, whether the daemon reaches it here or not.
    let want = [
        ("io", 500),
        ("out_of_range", 422),
        ("invalid", 422),
        ("no_space", 409),
        ("read_only", 409),
        ("not_found", 404),
        ("conflict", 409),
        ("corrupt", 500),
        ("unsupported", 501),
        ("shutdown", 503),
        ("unavailable", 503),
    ];
    for (name, status) in want {
        let kind = kinds()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, k)| k)
            .unwrap();
        assert_eq!(status_of(kind).as_u16(), status, "{name}");
    }
}

/// Every error kind and its name.
fn kinds() -> Vec<(&'static str, ErrorKind)> {
    vec![
        ("io", ErrorKind::Io),
        ("out_of_range", ErrorKind::OutOfRange),
        ("invalid", ErrorKind::Invalid),
        ("no_space", ErrorKind::NoSpace),
        ("read_only", ErrorKind::ReadOnly),
        ("not_found", ErrorKind::NotFound),
        ("conflict", ErrorKind::Conflict),
        ("corrupt", ErrorKind::Corrupt),
        ("unsupported", ErrorKind::Unsupported),
        ("shutdown", ErrorKind::Shutdown),
        ("unavailable", ErrorKind::Unavailable),
    ]
}

#[test]
fn the_mapping_function_and_the_message_chain() {
    for (name, kind) in kinds() {
        assert_eq!(kind_name(kind), name);
    }
    assert_eq!(status_of(ErrorKind::NotFound).as_u16(), 404);
    assert_eq!(status_of(ErrorKind::NoSpace).as_u16(), 409);
    assert_eq!(status_of(ErrorKind::Invalid).as_u16(), 422);
    let io = std::io::Error::other("disk on fire");
    let err = ferrosan::Error::io("cannot create disk d0", io).context("disk add");
    let failure = ApiFailure::from(err);
    assert_eq!(failure.status.as_u16(), 500);
    assert_eq!(failure.body.kind, "io");
    assert_eq!(
        failure.body.message,
        "disk add: cannot create disk d0: disk on fire"
    );
}

// ------------------------------------------- what the daemon never does

/// A stand-in for the pool whose every answer panics: the one state the
/// daemon cannot be brought to, served by the API's own router.
struct Panics;

impl ferrosan::api::Dispatch for Panics {
    fn dispatch(&self, _: ferrosan::api::Action) -> ferrosan::Result<ferrosan::api::Reply> {
        panic!("boom")
    }
}

/// Serves the router over `Panics` on `socket` until `stop`; its result.
fn serve_panics(
    socket: &std::path::Path,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> ferrosan::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let router = ferrosan::api::router_with(Arc::new(Panics));
    rt.block_on(ferrosan::api::serve_router(router, socket, stop))
}

#[test]
fn a_panicking_handler_is_a_500_json_and_the_server_lives() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let path = socket.clone();
    let server = std::thread::spawn(move || {
        serve_panics(&path, async {
            let _ = rx.await;
        })
    });
    common::wait_for_socket(&socket, std::time::Duration::from_secs(10));
    let r = request(&socket, "GET", "/v1/pool", None);
    assert_eq!(r.status, 500);
    assert_eq!(r.error().0, "internal");
    assert_eq!(
        request(&socket, "GET", "/v1/disks", None).status,
        500,
        "still serving"
    );
    // A live socket is never taken over, by this server or another.
    let err = serve_panics(&socket, async {}).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(err.message().contains("another ferrosan daemon"), "{err}");
    let _ = tx.send(());
    server.join().unwrap().unwrap();
    assert!(!socket.exists(), "socket left behind");
}

// ---------------------------------------------------------------- socket

#[test]
fn socket_is_0600_and_removed_at_a_stop() {
    let mut p = Pool::start();
    let socket = p.socket();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    p.d.stop();
    assert!(!socket.exists(), "socket left behind");
}

#[test]
fn a_stale_socket_is_replaced() {
    // A socket left by a daemon that died: the next one serves there.
    let mut p = Pool::start();
    p.d.kill9();
    let socket = p.socket();
    assert!(socket.exists(), "a killed daemon leaves its socket");
    p.d.respawn();
    assert_eq!(p.get("/v1/pool").status, 200);
}

#[test]
fn a_file_in_the_sockets_place_is_refused_and_left_alone() {
    let mut p = Pool::start();
    let socket = p.socket();
    p.d.stop();
    // A file in its place is not ours to remove.
    std::fs::write(&socket, "x").unwrap();
    let o = harness::cli(p.path(), &["serve", "--listen", "127.0.0.1:0"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("exists and is not a socket: move it away"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&socket)
            .unwrap_or_else(|e| panic!("the daemon removed the file it refused to touch: {e}")),
        "x",
        "file untouched"
    );
}

// ---------------------------------------------------------------- real daemon

/// A daemon on a new pool (4 disks of 1 GiB, raid5 `g0`, 2 GiB `vol0`).
fn daemon() -> (tempfile::TempDir, harness::Daemon) {
    let dir = harness::pool_dir();
    let d = harness::Daemon::start(&dir.path().join("pool"), &[]);
    (dir, d)
}

fn call(d: &harness::Daemon, method: &str, path: &str, body: Option<&str>) -> Resp {
    request(&d.pool.join("api.sock"), method, path, body)
}

/// Asserts `status` with an ApiError of `kind` whose message holds `words`.
fn refused(r: &Resp, status: u16, kind: &str, words: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.content_type, "application/json", "{}", r.body);
    let (got, message) = r.error();
    assert_eq!(got, kind, "{message}");
    assert!(message.contains(words), "{message:?} lacks {words:?}");
}

#[test]
fn the_daemon_answers_more_than_a_group_holds_with_409_not_507() {
    let (_dir, d) = daemon();
    let body = r#"{"name": "big", "group": "g0", "size": 4611686018427387904}"#;
    let r = call(&d, "POST", "/v1/volumes", Some(body));
    refused(&r, 409, "no_space", "group g0 has not enough free space");
    assert!(r.error().1.contains("pick a smaller size"), "{}", r.body);
    let body = r#"{"size": 9223372036854710272}"#;
    let r = call(&d, "POST", "/v1/volumes/vol0/grow", Some(body));
    refused(&r, 409, "no_space", "more needed; add disks");
}

#[test]
fn the_daemon_refuses_to_fail_a_member_its_group_cannot_lose_with_409() {
    let (_dir, d) = daemon();
    let r = call(&d, "POST", "/v1/disks/d1/fail", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(&d, "POST", "/v1/disks/d2/fail", None);
    refused(&r, 409, "conflict", "would stop group g0");
    let r = call(&d, "GET", "/v1/groups/g0", None);
    assert_eq!(r.json()["health"], "degraded", "{}", r.body);
    // A disk named in the body that is not there is 422: the 404 is kept
    // for the disk the URL names.
    let r = call(
        &d,
        "POST",
        "/v1/disks/d1/replace",
        Some(r#"{"new": "vol0"}"#),
    );
    refused(&r, 422, "invalid", "unknown disk \"vol0\"");
    let r = call(
        &d,
        "POST",
        "/v1/disks/nope/replace",
        Some(r#"{"new": "d0"}"#),
    );
    refused(&r, 404, "not_found", "unknown disk \"nope\"");
    let r = call(&d, "DELETE", "/v1/volumes/vol0", None);
    assert_eq!(r.status, 204, "the group still serves: {}", r.body);
}

#[test]
fn the_daemon_takes_integral_floats_and_refuses_fractions_and_huge_numbers() {
    let (_dir, d) = daemon();
    let body = r#"{"name": "f", "group": "g0", "size": 6.7108864e7, "track_size": 65536.0}"#;
    let r = call(&d, "POST", "/v1/volumes", Some(body));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        (r.json()["size"].as_u64(), r.json()["track_size"].as_u64()),
        (Some(64 << 20), Some(65536))
    );
    let body = r#"{"name": "g", "group": "g0", "size": 3800.5}"#;
    let r = call(&d, "POST", "/v1/volumes", Some(body));
    refused(
        &r,
        400,
        "invalid",
        "size: invalid value: floating point `3800.5`, expected a whole number from 0 to 9223372036854775807",
    );
    let body = r#"{"name": "h", "size": 18446744073709551615}"#;
    let r = call(&d, "POST", "/v1/disks", Some(body));
    refused(
        &r,
        400,
        "invalid",
        "size: invalid value: integer `18446744073709551615`, expected a whole number",
    );
    let body = r#"{"bytes_per_sec": 3793079179532302.0}"#;
    let r = call(&d, "POST", "/v1/jobs/1/rate", Some(body));
    refused(&r, 404, "not_found", "1");
    let r = call(
        &d,
        "POST",
        "/v1/jobs/1/rate",
        Some(r#"{"bytes_per_sec": -1}"#),
    );
    refused(
        &r,
        400,
        "invalid",
        "bytes_per_sec: invalid value: integer `-1`",
    );
}

#[test]
fn the_daemon_answers_schema_valid_but_impossible_requests_with_422() {
    let (_dir, d) = daemon();
    let r = call(
        &d,
        "POST",
        "/v1/disks",
        Some(r#"{"name": "e0", "size": 4194304}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let cases = [
        (
            "/v1/volumes",
            r#"{"name": "odd", "group": "g0", "size": 1000}"#,
            "not a multiple of the track size",
        ),
        (
            "/v1/groups",
            r#"{"name": "g1", "raid": "raid5", "disks": ["e0", "e0"]}"#,
            "disk e0 is named twice",
        ),
        (
            "/v1/disks",
            r#"{"name": "both", "size": 4194304, "path": "/x"}"#,
            "not both",
        ),
        (
            "/v1/disks",
            r#"{"name": "tiny", "size": 4096}"#,
            "too small",
        ),
        (
            "/v1/disks",
            r#"{"name": ".hidden", "size": 4194304}"#,
            "invalid disk name",
        ),
        (
            "/v1/groups/g0/extend",
            r#"{"disks": ["d0"]}"#,
            "only concat groups grow by adding disks",
        ),
    ];
    for (path, body, words) in cases {
        let r = call(&d, "POST", path, Some(body));
        refused(&r, 422, "invalid", words);
    }
}

#[test]
fn the_daemon_answers_http_mistakes_with_json() {
    let (_dir, d) = daemon();
    let r = call(&d, "GET", "/v1/nope", None);
    refused(&r, 404, "not_found", "no such route: GET /v1/nope");
    let r = call(&d, "PATCH", "/v1/volumes/vol0", Some("{}"));
    refused(
        &r,
        405,
        "invalid",
        "PATCH is not allowed on /v1/volumes/vol0",
    );
    let r = call(&d, "POST", "/v1/disks", Some("name=d9&size=1G"));
    refused(&r, 400, "invalid", "invalid JSON body: expected an object");
    for body in ["[]", r#"["v", "g0", 65536]"#, "null", "7"] {
        let r = call(&d, "POST", "/v1/volumes", Some(body));
        refused(&r, 400, "invalid", "invalid JSON body: expected an object");
    }
    let r = call(&d, "POST", "/v1/copies/vol0/restore", Some("[]"));
    refused(&r, 400, "invalid", "invalid JSON body: expected an object");
    let body = r#"{"read_error_at": [0, 512]}"#;
    let r = call(&d, "POST", "/v1/disks/d0/inject", Some(body));
    refused(
        &r,
        400,
        "invalid",
        "read_error_at: invalid type: sequence, expected an object",
    );
    let r = call(
        &d,
        "POST",
        "/v1/disks",
        Some(r#"{"name": "d9", "size": 4194304, "colour": 1}"#),
    );
    refused(&r, 400, "invalid", "unknown field `colour`");
    let r = call(&d, "GET", "/v1/jobs/-1", None);
    refused(&r, 400, "invalid", "invalid job id \"-1\"");
    let r = call(&d, "GET", "/v1/disks/d%FF", None);
    assert!(matches!(r.status, 400 | 404), "{}", r.body);
    assert!(r.content_type == "application/json", "{}", r.body);
}

/// One raw request with a content type; the whole answer.
fn raw(d: &harness::Daemon, head: &str, body: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut c = std::os::unix::net::UnixStream::connect(d.pool.join("api.sock")).unwrap();
    let head = format!(
        "{head}\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    // A body over the limit is answered before it is all sent.
    let _ = c.write_all(body);
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn the_daemon_answers_content_types_and_oversized_bodies_with_json() {
    let (_dir, d) = daemon();
    let form = "POST /v1/disks HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded";
    let answer = raw(&d, form, b"name=d9&size=4194304");
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.contains("content-type: application/json"),
        "{answer}"
    );
    assert!(answer.ends_with(r#"{"kind":"invalid","message":"invalid JSON body: expected an object (see /openapi.json for its fields)"}"#), "{answer}");
    // The content type is not required: `curl -d '{...}'` works as typed.
    let text = "POST /v1/disks HTTP/1.1\r\nContent-Type: text/plain";
    let answer = raw(&d, text, br#"{"name": "d9", "size": 4194304}"#);
    assert!(answer.starts_with("HTTP/1.1 201 "), "{answer}");
    let big = vec![b' '; 3 << 20];
    let answer = raw(
        &d,
        "POST /v1/volumes HTTP/1.1\r\nContent-Type: application/json",
        &big,
    );
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(
        answer.ends_with(r#"{"kind":"invalid","message":"the request body is larger than 2 MiB"}"#),
        "{answer}"
    );
    let answer = raw(&d, "DELETE /v1/pool HTTP/1.1", b"");
    assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");
    assert!(answer.contains("allow: GET,HEAD"), "{answer}");
    assert!(answer.contains(r#""kind":"invalid""#), "{answer}");
}

/// `POST /v1/disks` with `path`: a path that is not there or is a
/// directory is the client's mistake (it was a 500 `io`): 422, saying what
/// the path is.
#[test]
fn the_daemon_refuses_a_disk_path_that_is_missing_or_a_directory_with_4xx() {
    let (dir, d) = daemon();
    let missing = dir.path().join("no-such-file");
    let folder = dir.path().to_path_buf();
    for path in [missing, folder, "/".into()] {
        let body = format!(r#"{{"name": "x", "path": "{}"}}"#, path.display());
        let r = call(&d, "POST", "/v1/disks", Some(&body));
        assert_eq!(r.status, 422, "{}: {}", path.display(), r.body);
        let (kind, message) = r.error();
        assert_eq!(kind, "invalid", "{}", r.body);
        assert!(
            message.contains("does not exist") || message.contains("is a directory"),
            "{message}"
        );
    }
}
