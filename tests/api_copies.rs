//! The instant-copy routes over the socket, against the in-memory sim:
//! statuses and bodies of each route, the 400s that name the allowed
//! values, optional bodies, and parsing into actions.

mod common;

use std::sync::Arc;

use common::{Resp, Server, Sim, request};
use ferrosan::api::views::*;
use ferrosan::copy::map::Scheme;
use serde::de::DeserializeOwned;

/// 16 MiB in 64 KiB tracks: 256 tracks, so a sim copy holds 32 and, in row
/// mode, its original 16.
const VOL: u64 = 16 << 20;

fn setup() -> (Arc<Sim>, Server) {
    let sim = Arc::new(Sim::default());
    let s = Server::start(sim.clone());
    for d in ["d0", "d1"] {
        let body = format!(r#"{{"name": "{d}", "size": 1073741824}}"#);
        assert_eq!(post(&s, "/v1/disks", &body).status, 201);
    }
    let group = r#"{"name": "g0", "raid": "raid1", "disks": ["d0", "d1"]}"#;
    assert_eq!(post(&s, "/v1/groups", group).status, 201);
    let vol = format!(r#"{{"name": "v0", "group": "g0", "size": {VOL}}}"#);
    assert_eq!(post(&s, "/v1/volumes", &vol).status, 201);
    sim.log.lock().unwrap().clear();
    (sim, s)
}

fn post(s: &Server, path: &str, body: &str) -> Resp {
    request(&s.socket, "POST", path, Some(body))
}

fn get(s: &Server, path: &str) -> Resp {
    request(&s.socket, "GET", path, None)
}

/// The body as `T`, after checking the status.
fn answer<T: DeserializeOwned>(r: &Resp, status: u16) -> T {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.content_type, "application/json");
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not the type ({e}): {}", r.body))
}

fn create(s: &Server, body: &str) -> CopyInfo {
    answer(&post(s, "/v1/copies", body), 201)
}

#[test]
fn every_copy_route_answers_with_its_status_and_shape() {
    let (_, s) = setup();
    let c = create(&s, r#"{"source": "v0", "name": "c0"}"#);
    assert_eq!((c.name.as_str(), c.source.as_str()), ("c0", "v0"));
    assert_eq!((c.mode, c.scheme), (CopyMode::Row, Scheme::ChangedPointer));
    assert_eq!((c.size, c.tracks_diverged, c.depth), (VOL, 32, 1));

    let all: Vec<CopyInfo> = answer(&get(&s, "/v1/copies"), 200);
    assert_eq!(all.len(), 1);
    let one: CopyInfo = answer(&get(&s, "/v1/copies/c0"), 200);
    assert_eq!(one.name, "c0");

    let r: CopyRestoreInfo = answer(&post(&s, "/v1/copies/c0/restore", ""), 202);
    assert_eq!((r.volume.as_str(), r.from.as_str()), ("v0", "c0"));
    assert!(r.job.is_none(), "a row copy restores by switching pointers");

    let split: CopySplitInfo = answer(&post(&s, "/v1/copies/c0/split", ""), 202);
    assert_eq!((split.n_orig, split.n_copy), (16, 32));
    assert_eq!(split.policy, SplitPolicy::MoveSmaller);
    assert_eq!(split.moving, "v0", "the original has less new data");
    assert_eq!(
        split.job.map(|j| (j.kind, j.total)),
        Some(("split".into(), 16))
    );

    let r: CopyDeleteInfo = answer(&request(&s.socket, "DELETE", "/v1/copies/c0", None), 200);
    assert_eq!(r.name, "c0");
    assert_eq!(
        r.job.map(|j| (j.kind, j.total)),
        Some(("copy-fold".into(), 16)),
        "the last copy of a row original: its data folds back"
    );
    assert_eq!(get(&s, "/v1/copies/c0").status, 404);
    let none: Vec<CopyInfo> = answer(&get(&s, "/v1/copies"), 200);
    assert!(none.is_empty());
}

#[test]
fn an_unknown_copy_is_404_naming_it() {
    let (_, s) = setup();
    let want = "no copy named \"nope\": `ferrosan copy list` shows them";
    for (method, path) in [
        ("GET", "/v1/copies/nope"),
        ("DELETE", "/v1/copies/nope"),
        ("POST", "/v1/copies/nope/restore"),
        ("POST", "/v1/copies/nope/split"),
    ] {
        let r = request(&s.socket, method, path, None);
        assert_eq!(r.status, 404, "{method} {path}");
        assert_eq!(r.error(), ("not_found".to_owned(), want.to_owned()));
    }
    let r = post(&s, "/v1/copies", r#"{"source": "v9", "name": "c0"}"#);
    assert_eq!(r.status, 404);
    assert!(
        r.error().1.starts_with("no volume named \"v9\""),
        "{}",
        r.body
    );
}

#[test]
fn bad_mode_scheme_or_policy_names_are_400_naming_the_allowed_values() {
    let (sim, s) = setup();
    let cases = [
        (
            "/v1/copies",
            r#"{"source": "v0", "name": "c0", "mode": "mirror"}"#,
            "mode: unknown variant `mirror`, expected `cow` or `row`",
        ),
        (
            "/v1/copies",
            r#"{"source": "v0", "name": "c0", "meta": "btree"}"#,
            "meta: unknown variant `btree`, expected one of `full-pointer`, \
             `changed-pointer`, `bitmap`, `multilevel-bitmap`, `partial-bitmap`",
        ),
        (
            "/v1/copies/c0/split",
            r#"{"policy": "biggest"}"#,
            "policy: unknown variant `biggest`, expected `move-smaller` or `move-larger`",
        ),
    ];
    for (path, body, want) in cases {
        let r = post(&s, path, body);
        assert_eq!(r.status, 400, "{body}");
        let (kind, message) = r.error();
        assert_eq!(kind, "invalid");
        assert!(message.contains(want), "{body}: {message}");
    }
    assert!(
        sim.log.lock().unwrap().is_empty(),
        "nothing reached the pool"
    );
}

#[test]
fn unknown_fields_are_400_naming_the_field() {
    let (sim, s) = setup();
    for (path, body, field) in [
        (
            "/v1/copies",
            r#"{"source": "v0", "name": "c", "size": 1}"#,
            "size",
        ),
        (
            "/v1/copies/c0/split",
            r#"{"polcy": "move-larger"}"#,
            "polcy",
        ),
        ("/v1/copies/c0/restore", r#"{"forse": true}"#, "forse"),
    ] {
        let r = post(&s, path, body);
        assert_eq!(r.status, 400, "{path}");
        let (kind, message) = r.error();
        assert_eq!(kind, "invalid");
        assert!(
            message.contains(&format!("unknown field `{field}`")),
            "{message}"
        );
    }
    let r = post(&s, "/v1/copies", r#"{"name": "c"}"#);
    assert_eq!(r.status, 400);
    assert!(r.error().1.contains("missing field `source`"), "{}", r.body);
    let r = post(&s, "/v1/copies", "");
    assert_eq!(r.status, 400, "create needs a body");
    assert!(sim.log.lock().unwrap().is_empty());
}

#[test]
fn restore_and_split_bodies_may_be_left_out() {
    let (sim, s) = setup();
    create(&s, r#"{"source": "v0", "name": "c0"}"#);
    for body in ["", "{}", "null", " \n"] {
        let r = post(&s, "/v1/copies/c0/restore", body);
        assert_eq!(r.status, 202, "{body:?}: {}", r.body);
        assert_eq!(
            sim.last_action(),
            r#"CopyRestore("c0", CopyRestoreRequest { force: false })"#
        );
        let r = post(&s, "/v1/copies/c0/split", body);
        assert_eq!(r.status, 202, "{body:?}: {}", r.body);
        assert_eq!(
            sim.last_action(),
            r#"CopySplit("c0", CopySplitRequest { policy: None })"#
        );
    }
    for body in ["\"now\"", "{", "7"] {
        let r = post(&s, "/v1/copies/c0/restore", body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.error().1.starts_with("invalid JSON body: "), "{}", r.body);
    }
}

#[test]
fn requests_parse_into_actions() {
    let (sim, s) = setup();
    let body = r#"{"source": "v0", "name": "c/0", "mode": "cow", "meta": "bitmap",
        "read_only": true, "pool_group": "g0"}"#;
    create(&s, body);
    assert_eq!(
        sim.last_action(),
        "CopyCreate(CopyCreateRequest { source: \"v0\", name: \"c/0\", mode: Some(Cow), \
         meta: Some(Bitmap), read_only: true, pool_group: Some(\"g0\") })"
    );
    get(&s, "/v1/copies");
    assert_eq!(sim.last_action(), "CopyList");
    get(&s, "/v1/copies/c%2F0");
    assert_eq!(sim.last_action(), r#"CopyGet("c/0")"#);
    post(&s, "/v1/copies/c%2F0/split", r#"{"policy": "move-larger"}"#);
    assert_eq!(
        sim.last_action(),
        r#"CopySplit("c/0", CopySplitRequest { policy: Some(MoveLarger) })"#
    );
    request(&s.socket, "DELETE", "/v1/copies/c%2F0", None);
    assert_eq!(sim.last_action(), r#"CopyDelete("c/0")"#);
}

#[test]
fn pool_errors_on_copies_map_to_statuses() {
    let (_, s) = setup();
    for (kind, status) in [("no_space", 409), ("conflict", 409), ("io", 500)] {
        let r = get(&s, &format!("/v1/copies/fail-{kind}"));
        assert_eq!((r.status, r.error().0.as_str()), (status, kind));
        let body = format!(r#"{{"source": "v0", "name": "fail-{kind}"}}"#);
        let r = post(&s, "/v1/copies", &body);
        assert_eq!((r.status, r.error().0.as_str()), (status, kind));
    }
    create(&s, r#"{"source": "v0", "name": "c0"}"#);
    let r = post(&s, "/v1/copies", r#"{"source": "v0", "name": "c0"}"#);
    assert_eq!(r.status, 409, "{}", r.body);
}

#[test]
fn copies_of_copies_keep_their_family() {
    let (_, s) = setup();
    create(&s, r#"{"source": "v0", "name": "c0", "mode": "cow"}"#);
    let c1 = create(
        &s,
        r#"{"source": "c0", "name": "c1", "meta": "partial-bitmap"}"#,
    );
    assert_eq!(
        (c1.origin.as_str(), c1.depth, c1.mode),
        ("v0", 2, CopyMode::Cow)
    );
    let r = post(
        &s,
        "/v1/copies",
        r#"{"source": "c1", "name": "c2", "mode": "row"}"#,
    );
    assert_eq!(r.status, 422);
    assert!(r.error().1.contains("cannot use row"), "{}", r.body);
}

#[test]
fn jobs_of_restore_and_split_run_to_the_end() {
    let (_, s) = setup();
    create(&s, r#"{"source": "v0", "name": "c0", "mode": "cow"}"#);
    let r: CopyRestoreInfo = answer(&post(&s, "/v1/copies/c0/restore", "{}"), 202);
    let job = r.job.expect("a cow restore moves the old data back");
    assert_eq!(
        (job.kind.as_str(), job.state),
        ("restore", JobState::Running)
    );
    let mut state = job.state;
    for _ in 0..job.total {
        let j: JobInfo = answer(&get(&s, &format!("/v1/jobs/{}", job.id)), 200);
        state = j.state;
    }
    assert_eq!(state, JobState::Done);

    let split: CopySplitInfo = answer(&post(&s, "/v1/copies/c0/split", "{}"), 202);
    assert_eq!((split.n_orig, split.moving.as_str()), (0, "v0"));
    assert!(
        split.job.is_none(),
        "cow: the original has no new data to move"
    );
    let body = r#"{"policy": "move-larger"}"#;
    let split: CopySplitInfo = answer(&post(&s, "/v1/copies/c0/split", body), 202);
    assert_eq!(split.moving, "c0");
    assert_eq!(split.job.map(|j| j.total), Some(32));
}

#[test]
fn warnings_and_invalid_copies_show_in_the_list() {
    let (_, s) = setup();
    create(&s, r#"{"source": "v0", "name": "full0"}"#);
    create(&s, r#"{"source": "v0", "name": "broken0", "mode": "cow"}"#);
    let all: Vec<CopyInfo> = answer(&get(&s, "/v1/copies"), 200);
    let by = |n: &str| all.iter().find(|c| c.name == n).unwrap().clone();
    assert!(by("full0").valid);
    assert!(by("full0").warning.unwrap().contains("85% full"));
    assert!(!by("broken0").valid);
}
