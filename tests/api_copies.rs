//! The instant-copy routes over the daemon's socket, on a temporary pool:
//! statuses and bodies of each route (with the figures the engine
//! computes from data written through NBD), the 400s that name the
//! allowed values, optional bodies, and every field of a request reaching
//! the pool.

mod common;
mod harness;
mod nbd_common;

use common::{Pool, Resp};
use ferrosan::api::views::*;
use serde::de::DeserializeOwned;

const KIB: u64 = 1024;
const MIB: u64 = 1 << 20;
/// 16 MiB in 64 KiB tracks: 256 tracks.
const VOL: u64 = 16 << 20;

/// The default pool, plus a raid1 group `g1` of two 64 MiB disks holding
/// volume `v0` (16 MiB).
fn setup() -> Pool {
    let p = Pool::start();
    for d in ["e0", "e1"] {
        let body = format!(r#"{{"name": "{d}", "size": 67108864}}"#);
        assert_eq!(p.post("/v1/disks", &body).status, 201);
    }
    let group = r#"{"name": "g1", "raid": "raid1", "disks": ["e0", "e1"]}"#;
    assert_eq!(p.post("/v1/groups", group).status, 201);
    volume(&p, "v0", VOL);
    p
}

fn volume(p: &Pool, name: &str, size: u64) {
    let vol = format!(r#"{{"name": "{name}", "group": "g1", "size": {size}}}"#);
    let r = p.post("/v1/volumes", &vol);
    assert_eq!(r.status, 201, "{}", r.body);
}

/// The body as `T`, after checking the status.
fn answer<T: DeserializeOwned>(r: &Resp, status: u16) -> T {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.content_type, "application/json");
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not the type ({e}): {}", r.body))
}

fn create(p: &Pool, body: &str) -> CopyInfo {
    answer(&p.post("/v1/copies", body), 201)
}

fn copy(p: &Pool, name: &str) -> CopyInfo {
    answer(&p.get(&format!("/v1/copies/{name}")), 200)
}

fn wait(p: &Pool, job: &JobInfo) -> serde_json::Value {
    let done = p.d.wait_job(job.id);
    assert_eq!(done["state"], "done", "{done}");
    done
}

#[test]
fn every_copy_route_answers_with_its_status_and_shape() {
    let p = setup();
    let c = create(&p, r#"{"source": "v0", "name": "c0"}"#);
    assert_eq!((c.name.as_str(), c.source.as_str()), ("c0", "v0"));
    // A thick source's first copy: row mode, partial bitmaps.
    assert_eq!((c.mode, c.scheme), (CopyMode::Row, Scheme::PartialBitmap));
    assert_eq!((c.size, c.tracks_diverged, c.depth), (VOL, 0, 1));
    assert!(c.valid && c.warning.is_none(), "{c:?}");
    // The source writes 2 tracks after the copy point, the copy 4.
    p.fill("v0", 0, 128 * KIB, 1);
    p.fill("c0", MIB, 256 * KIB, 2);

    let all: Vec<CopyInfo> = answer(&p.get("/v1/copies"), 200);
    assert_eq!(all.len(), 1);
    let one = copy(&p, "c0");
    assert_eq!((one.name.as_str(), one.tracks_diverged), ("c0", 6));

    let split: CopySplitInfo = answer(&p.post("/v1/copies/c0/split", ""), 202);
    assert_eq!((split.n_orig, split.n_copy), (2, 4));
    assert_eq!(split.policy, SplitPolicy::MoveSmaller);
    assert_eq!(split.moving, "v0", "the original has less new data");
    let job = split.job.expect("a job moves v0's new data");
    assert_eq!(job.kind, "copy-split");
    wait(&p, &job);
    // Split, the copies keep the mode they were made with.
    assert_eq!(copy(&p, "c0").mode, CopyMode::Row);

    let r: CopyRestoreInfo = answer(&p.post("/v1/copies/c0/restore", ""), 202);
    assert_eq!((r.volume.as_str(), r.from.as_str()), ("v0", "c0"));
    let job = r
        .job
        .expect("after the split a restore moves c0's image into v0's space");
    assert_eq!(job.kind, "copy-restore");
    wait(&p, &job);

    let r: CopyDeleteInfo = answer(&p.call("DELETE", "/v1/copies/c0", None), 200);
    assert_eq!(r.name, "c0");
    assert!(r.job.is_none(), "an A1 original has nothing to fold back");
    assert_eq!(p.get("/v1/copies/c0").status, 404);
    let none: Vec<CopyInfo> = answer(&p.get("/v1/copies"), 200);
    assert!(none.is_empty());
}

#[test]
fn an_unknown_copy_is_404_naming_it() {
    let p = setup();
    let want = "unknown copy \"nope\": see `ferrosan copy list`";
    for (method, path) in [
        ("GET", "/v1/copies/nope"),
        ("DELETE", "/v1/copies/nope"),
        ("POST", "/v1/copies/nope/restore"),
        ("POST", "/v1/copies/nope/split"),
    ] {
        let r = p.call(method, path, None);
        assert_eq!(r.status, 404, "{method} {path}");
        assert_eq!(r.error(), ("not_found".to_owned(), want.to_owned()));
    }
    let r = p.post("/v1/copies", r#"{"source": "v9", "name": "c0"}"#);
    assert_eq!(r.status, 404);
    assert_eq!(
        r.error().1,
        "unknown volume \"v9\": see `ferrosan volume list`"
    );
    // A volume that is no copy is not one to the copy routes either.
    let r = p.get("/v1/copies/v0");
    assert_eq!(r.status, 404);
    assert_eq!(r.error().1, "volume v0 is not an instant copy");
}

#[test]
fn bad_mode_scheme_or_policy_names_are_400_naming_the_allowed_values() {
    let p = setup();
    create(&p, r#"{"source": "v0", "name": "c0"}"#);
    let cases = [
        (
            "/v1/copies",
            r#"{"source": "v0", "name": "c1", "mode": "mirror"}"#,
            "mode: unknown variant `mirror`, expected `cow` or `row`",
        ),
        (
            "/v1/copies",
            r#"{"source": "v0", "name": "c1", "meta": "btree"}"#,
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
        let r = p.post(path, body);
        assert_eq!(r.status, 400, "{body}");
        let (kind, message) = r.error();
        assert_eq!(kind, "invalid");
        assert!(message.contains(want), "{body}: {message}");
    }
    let all: Vec<CopyInfo> = answer(&p.get("/v1/copies"), 200);
    assert_eq!(all.len(), 1, "nothing reached the pool: {all:?}");
    assert_eq!(p.get("/v1/jobs").json(), serde_json::json!([]), "no split");
}

#[test]
fn unknown_fields_are_400_naming_the_field() {
    let p = setup();
    create(&p, r#"{"source": "v0", "name": "c0"}"#);
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
        let r = p.post(path, body);
        assert_eq!(r.status, 400, "{path}");
        let (kind, message) = r.error();
        assert_eq!(kind, "invalid");
        assert!(
            message.contains(&format!("unknown field `{field}`")),
            "{message}"
        );
    }
    let r = p.post("/v1/copies", r#"{"name": "c"}"#);
    assert_eq!(r.status, 400);
    assert!(r.error().1.contains("missing field `source`"), "{}", r.body);
    let r = p.post("/v1/copies", "");
    assert_eq!(r.status, 400, "create needs a body");
    let all: Vec<CopyInfo> = answer(&p.get("/v1/copies"), 200);
    assert_eq!(all.len(), 1, "nothing reached the pool: {all:?}");
}

#[test]
fn restore_and_split_bodies_may_be_left_out() {
    let p = setup();
    create(&p, r#"{"source": "v0", "name": "c0"}"#);
    // A left-out restore body is force: false: with a client on v0 the
    // restore is refused; force goes ahead.
    let _client = p.nbd("v0");
    harness::poll("a client on v0", 30, || {
        p.get("/v1/volumes/v0").json()["connections"] == 1
    });
    for body in ["", "{}", "null", " \n"] {
        let r = p.post("/v1/copies/c0/restore", body);
        assert_eq!(r.status, 409, "{body:?}: {}", r.body);
        assert!(r.error().1.contains("force"), "{}", r.body);
    }
    let r: CopyRestoreInfo = answer(&p.post("/v1/copies/c0/restore", r#"{"force": true}"#), 202);
    assert_eq!((r.from.as_str(), r.connections), ("c0", 1));
    // A left-out split body is the default policy, move-smaller.
    for (i, body) in ["", "{}", "null", " \n"].iter().enumerate() {
        let (v, c) = (format!("w{i}"), format!("s{i}"));
        volume(&p, &v, MIB);
        create(&p, &format!(r#"{{"source": "{v}", "name": "{c}"}}"#));
        p.fill(&c, 0, 64 * KIB, 9);
        let r: CopySplitInfo = answer(&p.post(&format!("/v1/copies/{c}/split"), body), 202);
        assert_eq!(
            (r.policy, r.n_orig, r.n_copy),
            (SplitPolicy::MoveSmaller, 0, 1)
        );
        assert_eq!(r.moving, v, "{body:?}");
    }
    for body in ["\"now\"", "{", "7"] {
        let r = p.post("/v1/copies/c0/restore", body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.error().1.starts_with("invalid JSON body: "), "{}", r.body);
    }
}

#[test]
fn every_field_of_a_request_reaches_the_pool() {
    let p = setup();
    let body = r#"{"source": "v0", "name": "c1", "mode": "cow", "meta": "bitmap",
        "read_only": true, "pool_group": "g1"}"#;
    let c = create(&p, body);
    assert_eq!(
        (c.mode, c.scheme, c.read_only),
        (CopyMode::Cow, Scheme::Bitmap, true)
    );
    // Read-only for real: a write through NBD is refused.
    let mut w = p.nbd("c1");
    assert_ne!(
        w.write(0, &[1u8; 4096], 0),
        0,
        "a write to a read-only copy"
    );
    drop(w);
    // The server notices the closed connection on its own time.
    harness::poll("c1's connection to close", 10, || {
        p.get("/v1/volumes/c1").json()["connections"] == 0
    });
    // Names in paths are percent-decoded: %31 is '1'.
    let one = copy(&p, "c%31");
    assert_eq!(one.name, "c1");
    let r: CopyDeleteInfo = answer(&p.call("DELETE", "/v1/copies/c%31", None), 200);
    assert_eq!((r.name.as_str(), r.job.is_none()), ("c1", true));
    assert_eq!(p.get("/v1/volumes/c1").status, 404);
}

#[test]
fn pool_refusals_on_copies_map_to_statuses() {
    let p = setup();
    create(&p, r#"{"source": "v0", "name": "c0"}"#);
    let r = p.post("/v1/copies", r#"{"source": "v0", "name": "c0"}"#);
    assert_eq!(
        (r.status, r.error().0.as_str()),
        (409, "conflict"),
        "{}",
        r.body
    );
    assert_eq!(r.error().1, "a volume named c0 already exists");
    let r = p.post(
        "/v1/copies",
        r#"{"source": "vol0", "name": "b0", "meta": "bitmap"}"#,
    );
    assert_eq!(
        (r.status, r.error().0.as_str()),
        (409, "no_space"),
        "{}",
        r.body
    );
    assert!(
        r.error().1.starts_with("no room for a bitmap copy of vol0"),
        "{}",
        r.body
    );
    let r = p.post("/v1/copies/v0/split", "");
    assert_eq!(
        (r.status, r.error().0.as_str()),
        (422, "invalid"),
        "{}",
        r.body
    );
    assert_eq!(
        r.error().1,
        "v0 is the original: split its copy (`ferrosan copy split COPY`)"
    );
}

#[test]
fn copies_of_copies_keep_their_family() {
    let p = setup();
    let c0 = create(&p, r#"{"source": "v0", "name": "c0", "mode": "cow"}"#);
    let c1 = create(
        &p,
        r#"{"source": "c0", "name": "c1", "meta": "partial-bitmap"}"#,
    );
    assert_eq!(
        (c1.source.as_str(), c1.origin.as_str(), c1.mode, c1.scheme),
        ("c0", "v0", CopyMode::Cow, Scheme::PartialBitmap)
    );
    // DEPTH is the cascade level: a copy of the original is 1, a copy of
    // that copy 2.
    assert_eq!((c0.depth, c1.depth), (1, 2), "{c0:?} {c1:?}");
    let r = p.post(
        "/v1/copies",
        r#"{"source": "c1", "name": "c2", "mode": "row"}"#,
    );
    assert_eq!(r.status, 422);
    assert_eq!(
        r.error().1,
        "the copies of c1 are cow copies; a row copy cannot join them"
    );
}

#[test]
fn jobs_of_restore_and_split_run_to_the_end() {
    let p = setup();
    create(&p, r#"{"source": "v0", "name": "c0", "mode": "cow"}"#);
    p.fill("v0", 0, 256 * KIB, 4);
    let r: CopyRestoreInfo = answer(&p.post("/v1/copies/c0/restore", "{}"), 202);
    let job = r.job.expect("a cow restore moves the old data back");
    assert_eq!(job.kind, "copy-restore");
    assert!(matches!(job.state, JobState::Running | JobState::Done));
    let done = wait(&p, &job);
    assert_eq!(done["done"], done["total"], "{done}");
    // The restored source reads the copy's image: zeroes.
    let mut r = p.nbd("v0");
    assert_eq!(
        r.read(0, 256 * KIB as u32).unwrap(),
        vec![0; 256 * KIB as usize]
    );
    drop(r);

    p.fill("c0", MIB, 128 * KIB, 5);
    let split: CopySplitInfo = answer(&p.post("/v1/copies/c0/split", "{}"), 202);
    // Under A1 the original writes in place; the copy holds alone the 4
    // tracks preserved for it and the 2 it wrote.
    assert_eq!((split.n_orig, split.n_copy), (0, 6), "{split:?}");
    assert_eq!(split.moving, "v0");
    assert!(
        split.job.is_none(),
        "cow: the original has no new data to move"
    );
    let body = r#"{"policy": "move-larger"}"#;
    let split: CopySplitInfo = answer(&p.post("/v1/copies/c0/split", body), 202);
    assert_eq!(split.moving, "c0");
    let job = split.job.expect("c0's new data moves");
    assert_eq!(job.kind, "copy-split");
    wait(&p, &job);
}

#[test]
fn an_invalid_copy_shows_in_the_list_with_its_warning() {
    let p = Pool::start();
    assert_eq!(
        p.post("/v1/disks", r#"{"name": "x0", "size": 50331648}"#)
            .status,
        201
    );
    let r = p.post(
        "/v1/groups",
        r#"{"name": "gs", "raid": "concat", "disks": ["x0"]}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = p.post(
        "/v1/volumes",
        r#"{"name": "src", "group": "gs", "size": 25165824}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    p.fill("src", 0, 24 * MIB, 0x11);
    create(
        &p,
        r#"{"source": "src", "name": "c", "mode": "cow", "meta": "changed-pointer"}"#,
    );
    // The source overwrites everything; the copy's new space runs out.
    let mut warned = false;
    for mib in 0..24 {
        p.fill("src", mib * MIB, MIB, 0x22);
        let c = copy(&p, "c");
        warned |= c.valid && c.warning.as_deref().is_some_and(|w| w.contains("% used"));
    }
    assert!(warned, "a warning came before the copy became invalid");
    let all: Vec<CopyInfo> = answer(&p.get("/v1/copies"), 200);
    let c = all.iter().find(|c| c.name == "c").unwrap();
    assert!(!c.valid, "{c:?}");
    assert_eq!(
        c.warning.as_deref(),
        Some("c is invalid: its new space ran out while its source was written; delete it")
    );
}
