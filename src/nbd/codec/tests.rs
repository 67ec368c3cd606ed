//! Codec tests: parsers are total (random bytes never panic) and
//! encoders round-trip; request checks hold their guarantees.

use proptest::prelude::*;

use super::*;
use crate::nbd::proto::{cflag, errno};

fn lim() -> Limits {
    Limits {
        size: 1 << 30,
        min_block: 512,
        max_payload: 32 << 20,
        read_only: false,
        structured: true,
        meta_context: true,
    }
}

fn req(cmd: Cmd, flags: u16, offset: u64, length: u32) -> RequestHeader {
    RequestHeader {
        flags,
        cmd,
        cookie: 77,
        offset,
        length,
    }
}

fn errno_of(v: Verdict) -> u32 {
    match v {
        Verdict::Reject { errno, .. } => errno,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn request_checks() {
    let l = lim();
    assert!(matches!(
        check_request(&req(Cmd::Read, 0, 0, 4096), &l),
        Verdict::Run(_)
    ));
    // The advertised minimum block is 1: any offset and length runs.
    let bytes = Limits { min_block: 1, ..l };
    for (cmd, off, len) in [
        (Cmd::Read, 1, 1),
        (Cmd::Write, 511, 14),
        (Cmd::WriteZeroes, 4097, 513),
        (Cmd::Trim, 1, 1000),
        (Cmd::BlockStatus, 3, 7),
        (Cmd::Cache, (1 << 30) - 1, 1),
    ] {
        let v = check_request(&req(cmd, 0, off, len), &bytes);
        assert!(
            matches!(v, Verdict::Run(_)),
            "{cmd:?} {len} at {off}: {v:?}"
        );
    }
    // Unaligned (to a minimum of 512), overflowing, past the end.
    assert_eq!(
        errno_of(check_request(&req(Cmd::Read, 0, 100, 512), &l)),
        errno::EINVAL
    );
    assert_eq!(
        errno_of(check_request(&req(Cmd::Read, 0, 0, 100), &l)),
        errno::EINVAL
    );
    let wrap = u64::MAX - 511;
    assert_eq!(
        errno_of(check_request(&req(Cmd::Trim, 0, wrap, 1024), &l)),
        errno::EINVAL
    );
    assert_eq!(
        errno_of(check_request(&req(Cmd::Read, 0, 1 << 30, 512), &l)),
        errno::EINVAL
    );
    assert_eq!(
        errno_of(check_request(&req(Cmd::Write, 0, 1 << 30, 512), &l)),
        errno::ENOSPC
    );
    assert_eq!(
        errno_of(check_request(&req(Cmd::WriteZeroes, 0, 1 << 30, 512), &l)),
        errno::ENOSPC
    );
    // A refused write still has its payload skipped.
    match check_request(&req(Cmd::Write, 0, 1 << 30, 512), &l) {
        Verdict::Reject { discard, .. } => assert_eq!(discard, 512),
        v => panic!("{v:?}"),
    }
    // Huge lengths: READ refused without allocation, WRITE dropped.
    assert_eq!(
        errno_of(check_request(&req(Cmd::Read, 0, 0, u32::MAX), &l)),
        errno::EOVERFLOW
    );
    let simple = Limits {
        structured: false,
        ..l
    };
    assert_eq!(
        errno_of(check_request(&req(Cmd::Read, 0, 0, u32::MAX), &simple)),
        errno::EINVAL
    );
    assert!(matches!(
        check_request(&req(Cmd::Write, 0, 0, u32::MAX), &l),
        Verdict::Drop(_)
    ));
    // Trim and zeroes may exceed the payload limit.
    assert!(matches!(
        check_request(
            &req(Cmd::WriteZeroes, 0, 0, 0xFFFF_FE00),
            &Limits { size: 1 << 40, ..l }
        ),
        Verdict::Run(_)
    ));
    // Flags.
    assert_eq!(
        errno_of(check_request(&req(Cmd::Read, cflag::NO_HOLE, 0, 512), &l)),
        errno::EINVAL
    );
    assert_eq!(
        errno_of(check_request(&req(Cmd::Read, 1 << 9, 0, 512), &l)),
        errno::EINVAL
    );
    assert!(matches!(
        check_request(&req(Cmd::Read, cflag::DF, 0, 512), &l),
        Verdict::Run(_)
    ));
    assert_eq!(
        errno_of(check_request(&req(Cmd::Read, cflag::DF, 0, 512), &simple)),
        errno::EINVAL
    );
    assert!(matches!(
        check_request(
            &req(
                Cmd::WriteZeroes,
                cflag::FAST_ZERO | cflag::NO_HOLE | cflag::FUA,
                0,
                512
            ),
            &l
        ),
        Verdict::Run(_)
    ));
    assert_eq!(
        errno_of(check_request(&req(Cmd::Unknown(99), 0, 0, 0), &l)),
        errno::EINVAL
    );
    // Block status needs a context and a length.
    let nometa = Limits {
        meta_context: false,
        ..l
    };
    assert_eq!(
        errno_of(check_request(&req(Cmd::BlockStatus, 0, 0, 512), &nometa)),
        errno::EINVAL
    );
    assert_eq!(
        errno_of(check_request(&req(Cmd::BlockStatus, 0, 0, 0), &l)),
        errno::EINVAL
    );
    // Read-only.
    let ro = Limits {
        read_only: true,
        ..l
    };
    for c in [Cmd::Write, Cmd::Trim, Cmd::WriteZeroes] {
        assert_eq!(
            errno_of(check_request(&req(c, 0, 0, 512), &ro)),
            errno::EPERM
        );
    }
    assert!(matches!(
        check_request(&req(Cmd::Read, 0, 0, 512), &ro),
        Verdict::Run(_)
    ));
    assert_eq!(
        check_request(&req(Cmd::Disc, 0, 0, 0), &l),
        Verdict::Disconnect
    );
}

#[test]
fn info_request_errors() {
    assert!(parse_info_request(&[]).is_err());
    // Name length runs past the data.
    assert!(parse_info_request(&[0, 0, 0, 9, b'a', 0, 0]).is_err());
    // Count does not match.
    assert!(parse_info_request(&[0, 0, 0, 1, b'a', 0, 2, 0, 1]).is_err());
    // Trailing byte.
    assert!(parse_info_request(&[0, 0, 0, 1, b'a', 0, 1, 0, 1, 0]).is_err());
    // u32::MAX name length.
    assert!(parse_info_request(&[0xff, 0xff, 0xff, 0xff, 0, 0]).is_err());
    let ok = parse_info_request(&[0, 0, 0, 1, b'a', 0, 1, 0, 3]).unwrap();
    assert_eq!(
        ok,
        InfoRequest {
            name: "a".into(),
            infos: vec![3]
        }
    );
}

#[test]
fn meta_request_errors() {
    assert!(parse_meta_request(&[]).is_err());
    // Huge query count with no data: refused without allocating it.
    assert!(parse_meta_request(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).is_err());
    // Query running past the end.
    assert!(parse_meta_request(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 5, b'b']).is_err());
    let r = MetaRequest {
        name: "x".into(),
        queries: vec!["base:allocation".into(), "base:".into()],
    };
    assert_eq!(parse_meta_request(&encode_meta_request(&r)).unwrap(), r);
}

fn cmd() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        (0u16..10).prop_map(Cmd::from_wire),
        any::<u16>().prop_map(Cmd::from_wire)
    ]
}

fn header() -> impl Strategy<Value = RequestHeader> {
    (
        any::<u16>(),
        cmd(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(|(flags, cmd, cookie, offset, length)| RequestHeader {
            flags,
            cmd,
            cookie,
            offset,
            length,
        })
}

fn limits() -> impl Strategy<Value = Limits> {
    (
        any::<u64>(),
        prop_oneof![Just(512u32), Just(4096), Just(65536)],
        prop_oneof![Just(4096u32), Just(32 << 20)],
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(size, min_block, max_payload, read_only, structured, meta)| Limits {
                size,
                min_block,
                max_payload,
                read_only,
                structured,
                meta_context: meta,
            },
        )
}

fn small_string() -> impl Strategy<Value = String> {
    "[a-z:/_.-]{0,40}"
}

proptest! {
    #[test]
    fn request_parse_is_total(bytes in proptest::array::uniform28(any::<u8>())) {
        if let Ok(h) = parse_request(&bytes) {
            prop_assert_eq!(encode_request(&h), bytes);
        }
    }

    #[test]
    fn request_round_trips(h in header()) {
        prop_assert_eq!(parse_request(&encode_request(&h)), Ok(h));
    }

    #[test]
    fn a_run_verdict_is_safe(h in header(), l in limits()) {
        match check_request(&h, &l) {
            Verdict::Run(v) => {
                prop_assert!(!matches!(v.cmd, Cmd::Unknown(_) | Cmd::Disc));
                prop_assert_eq!(v.flags & !v.cmd.allowed_flags(l.structured), 0);
                if v.cmd != Cmd::Flush {
                    let end = v.offset.checked_add(u64::from(v.length));
                    prop_assert!(end.is_some_and(|e| e <= l.size));
                    prop_assert_eq!(v.offset % u64::from(l.min_block), 0);
                    prop_assert_eq!(v.length % l.min_block, 0);
                }
                if matches!(v.cmd, Cmd::Read | Cmd::Write) {
                    prop_assert!(v.length <= l.max_payload);
                }
                if l.read_only {
                    prop_assert!(!v.cmd.writes());
                }
                if v.cmd == Cmd::BlockStatus {
                    prop_assert!(l.meta_context && v.length > 0);
                }
            }
            Verdict::Reject { errno, discard, msg } => {
                prop_assert!(errno != 0);
                prop_assert!(!msg.is_empty());
                if h.cmd == Cmd::Write {
                    prop_assert_eq!(discard, h.length);
                } else {
                    prop_assert_eq!(discard, 0);
                }
            }
            Verdict::Disconnect => prop_assert_eq!(h.cmd, Cmd::Disc),
            Verdict::Drop(_) => {
                prop_assert!(h.cmd == Cmd::Write && h.length > l.max_payload);
            }
        }
    }

    #[test]
    fn option_parsers_are_total(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_info_request(&data);
        let _ = parse_meta_request(&data);
        let _ = parse_export_name(&data);
    }

    #[test]
    fn info_round_trips(name in small_string(), infos in proptest::collection::vec(any::<u16>(), 0..10)) {
        let r = InfoRequest { name, infos };
        prop_assert_eq!(parse_info_request(&encode_info_request(&r)), Ok(r));
    }

    #[test]
    fn meta_round_trips(name in small_string(), queries in proptest::collection::vec(small_string(), 0..10)) {
        let r = MetaRequest { name, queries };
        prop_assert_eq!(parse_meta_request(&encode_meta_request(&r)), Ok(r));
    }

    #[test]
    fn truncated_options_are_refused(name in small_string(), queries in proptest::collection::vec(small_string(), 1..5), cut in 1usize..8) {
        let r = MetaRequest { name, queries };
        let mut enc = encode_meta_request(&r);
        let keep = enc.len().saturating_sub(cut);
        enc.truncate(keep);
        prop_assert!(parse_meta_request(&enc).is_err());
    }

    #[test]
    fn clip_keeps_utf8(s in ".{0,50}", max in 0usize..60) {
        let c = clip_str(&s, max);
        prop_assert!(c.len() <= max);
        prop_assert!(s.starts_with(c));
    }
}
