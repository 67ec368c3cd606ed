//! Property tests that drive the handshake and the transmission loop with
//! random (and randomly well-framed) input over in-memory streams: they
//! must always end, never panic, and answer only with well-formed
//! messages. (A fuzzing harness in the cargo-fuzz sense can call the same
//! entry points.)

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::codec::{RequestHeader, encode_request};
use super::handshake::{self, Negotiated};
use super::proto::{self, Cmd};
use super::transmit::{self, Settings};
use super::{Export, StaticExports};
use crate::blockdev::BlockDev;
use crate::disk::MemDisk;

const SIZE: u64 = 1 << 20;

fn provider() -> StaticExports {
    let p = StaticExports::new();
    p.add("a", "first", Arc::new(MemDisk::new(SIZE)), false);
    p.add("b", "", Arc::new(MemDisk::new(SIZE)), true);
    p
}

/// One option frame: a known or unknown option with well-formed or
/// random data.
fn option_frame() -> impl Strategy<Value = Vec<u8>> {
    let opt = prop_oneof![1u32..12, any::<u32>()];
    let data = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        Just(super::codec::encode_info_request(
            &super::codec::InfoRequest {
                name: "a".into(),
                infos: vec![0, 1, 2, 3, 9],
            }
        )),
        Just(super::codec::encode_meta_request(
            &super::codec::MetaRequest {
                name: "a".into(),
                queries: vec!["base:".into(), "base:allocation".into()],
            }
        )),
    ];
    (opt, data, any::<bool>()).prop_map(|(opt, data, honest_len)| {
        let mut v = proto::IHAVEOPT.to_be_bytes().to_vec();
        v.extend_from_slice(&opt.to_be_bytes());
        let len = if honest_len {
            data.len() as u32
        } else {
            (data.len() as u32).wrapping_mul(977)
        };
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(&data);
        v
    })
}

/// Checks that server output of a handshake is a sequence of option
/// replies (after the greeting), possibly ending in export info.
fn check_handshake_output(out: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(out.len() >= 18, "no greeting");
    prop_assert_eq!(&out[..8], &proto::NBDMAGIC.to_be_bytes());
    let mut rest = &out[18..];
    while rest.len() >= 20 && rest[..8] == proto::REPLY_MAGIC_OPT.to_be_bytes() {
        let len = u32::from_be_bytes(rest[16..20].try_into().unwrap()) as usize;
        prop_assert!(len <= 8192, "option reply of {} bytes", len);
        prop_assert!(rest.len() >= 20 + len, "truncated option reply");
        rest = &rest[20 + len..];
    }
    // What remains can only be EXPORT_NAME's answer (size, flags, zeroes).
    prop_assert!(
        rest.is_empty() || rest.len() == 10 || rest.len() == 134,
        "{} stray bytes",
        rest.len()
    );
    Ok(())
}

async fn run_handshake(input: Vec<u8>) -> (std::io::Result<bool>, Vec<u8>) {
    let p = provider();
    let (mut client, mut server) = tokio::io::duplex(1 << 16);
    let srv = async {
        let r = handshake::negotiate(&mut server, &p, 32 << 20).await;
        drop(server);
        r.map(|n| n.is_some())
    };
    let cli = async {
        let _ = client.write_all(&input).await;
        let _ = client.shutdown().await;
        let mut out = Vec::new();
        let _ = client.read_to_end(&mut out).await;
        out
    };
    tokio::join!(srv, cli)
}

/// Frames a random request; WRITE carries a payload (at most 64 KiB).
fn request_frame() -> impl Strategy<Value = (RequestHeader, Vec<u8>)> {
    (
        prop_oneof![0u16..9, any::<u16>()],
        prop_oneof![Just(0u16), 0u16..32, any::<u16>()],
        prop_oneof![(0u64..2048).prop_map(|x| x * 512), any::<u64>()],
        prop_oneof![(0u32..130).prop_map(|x| x * 512), any::<u32>()],
    )
        .prop_map(|(t, flags, offset, length)| {
            let cmd = Cmd::from_wire(t);
            let length = if cmd == Cmd::Write {
                length % (1 << 16)
            } else {
                length
            };
            let payload = if cmd == Cmd::Write {
                vec![0x5a; length as usize]
            } else {
                vec![]
            };
            let h = RequestHeader {
                flags,
                cmd,
                cookie: 0,
                offset,
                length,
            };
            (h, payload)
        })
}

/// Parses structured-mode server output: every message is a simple reply
/// without data (never for READ) or a well-formed chunk, for a cookie that
/// was sent and is not DISC.
fn check_replies(out: &[u8], sent: &[RequestHeader]) -> Result<usize, TestCaseError> {
    let mut rest = out;
    let mut n = 0;
    while !rest.is_empty() {
        prop_assert!(rest.len() >= 16, "truncated reply");
        let magic = u32::from_be_bytes(rest[..4].try_into().unwrap());
        let (cookie, used) = if magic == proto::SIMPLE_REPLY_MAGIC {
            (u64::from_be_bytes(rest[8..16].try_into().unwrap()), 16)
        } else {
            prop_assert_eq!(magic, proto::STRUCTURED_REPLY_MAGIC);
            prop_assert!(rest.len() >= 20);
            let flags = u16::from_be_bytes(rest[4..6].try_into().unwrap());
            let typ = u16::from_be_bytes(rest[6..8].try_into().unwrap());
            let len = u32::from_be_bytes(rest[16..20].try_into().unwrap()) as usize;
            prop_assert_eq!(flags, proto::REPLY_FLAG_DONE);
            prop_assert!(rest.len() >= 20 + len, "truncated chunk");
            let p = &rest[20..20 + len];
            match typ {
                proto::chunk::NONE => prop_assert_eq!(len, 0),
                proto::chunk::OFFSET_DATA => prop_assert!(len > 8),
                proto::chunk::BLOCK_STATUS => {
                    prop_assert!(len >= 12 && (len - 4).is_multiple_of(8))
                }
                proto::chunk::ERROR => {
                    prop_assert!(len >= 6);
                    let e = u32::from_be_bytes(p[..4].try_into().unwrap());
                    prop_assert!(e != 0);
                    let m = u16::from_be_bytes(p[4..6].try_into().unwrap()) as usize;
                    prop_assert_eq!(m + 6, len);
                    prop_assert!(std::str::from_utf8(&p[6..]).is_ok());
                }
                t => prop_assert!(false, "chunk type {}", t),
            }
            (
                u64::from_be_bytes(rest[8..16].try_into().unwrap()),
                20 + len,
            )
        };
        let req = sent.get(cookie as usize);
        prop_assert!(req.is_some(), "reply for unknown cookie {}", cookie);
        let req = req.unwrap();
        prop_assert!(req.cmd != Cmd::Disc, "reply to DISC");
        if magic == proto::SIMPLE_REPLY_MAGIC {
            prop_assert!(req.cmd != Cmd::Read, "simple reply to a structured READ");
        }
        rest = &rest[used..];
        n += 1;
    }
    Ok(n)
}

async fn run_transmission(
    frames: Vec<(RequestHeader, Vec<u8>)>,
    tail: Vec<u8>,
) -> (Vec<RequestHeader>, Vec<u8>) {
    let (client, server) = match tokio::net::UnixStream::pair() {
        Ok(p) => p,
        Err(e) => panic!("socketpair: {e}"),
    };
    let dev: Arc<dyn BlockDev> = Arc::new(MemDisk::new(SIZE));
    let neg = Negotiated {
        export: Export {
            name: "a".into(),
            description: String::new(),
            dev,
            read_only: false,
            guard: None,
            bitmaps: Vec::new(),
        },
        structured: true,
        contexts: vec![crate::nbd::MetaContext { id: 1, map: None }],
        size: SIZE,
        min_block: 512,
    };
    let set = Settings {
        payload_timeout: Duration::from_secs(5),
        max_payload: 32 << 20,
    };
    let mut sent = Vec::new();
    let mut input = Vec::new();
    for (i, (mut h, p)) in frames.into_iter().enumerate() {
        h.cookie = i as u64;
        input.extend_from_slice(&encode_request(&h));
        input.extend_from_slice(&p);
        sent.push(h);
    }
    input.extend_from_slice(&tail);
    let (mut rd, mut wr) = client.into_split();
    let srv = async {
        let never = std::pin::pin!(std::future::pending::<()>());
        transmit::serve(server, neg, set, never).await
    };
    let cli = async {
        let _ = wr.write_all(&input).await;
        let _ = wr.shutdown().await;
        let mut out = Vec::new();
        let _ = rd.read_to_end(&mut out).await;
        out
    };
    let (_, out) = tokio::join!(srv, cli);
    (sent, out)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    crate::rt::block_on(async {
        match tokio::time::timeout(Duration::from_secs(20), f).await {
            Ok(v) => v,
            Err(_) => panic!("the server did not finish: a hang"),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn handshake_survives_random_bytes(input in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (_, out) = block_on(run_handshake(input));
        check_handshake_output(&out)?;
    }

    #[test]
    fn handshake_survives_random_options(
        flags in prop_oneof![Just(3u32), Just(1), any::<u32>()],
        frames in proptest::collection::vec(option_frame(), 0..8),
        tail in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut input = flags.to_be_bytes().to_vec();
        for f in frames {
            input.extend_from_slice(&f);
        }
        input.extend_from_slice(&tail);
        let (r, out) = block_on(run_handshake(input));
        check_handshake_output(&out)?;
        if flags & !3 != 0 {
            prop_assert!(r.is_err(), "unknown client flags accepted");
            prop_assert_eq!(out.len(), 18);
        }
    }

    #[test]
    fn transmission_answers_random_requests_well_formed(
        frames in proptest::collection::vec(request_frame(), 0..24),
        tail in proptest::collection::vec(any::<u8>(), 0..64),
        no_tail in any::<bool>(),
    ) {
        let tail = if no_tail { vec![] } else { tail };
        let (sent, out) = block_on(run_transmission(frames, tail));
        let n = check_replies(&out, &sent)?;
        // Without trailing garbage (which may drop the connection at once)
        // and without DISC, every request is answered.
        let fatal = sent.iter().position(|h| {
            h.cmd == Cmd::Disc || (h.cmd == Cmd::Write && h.length > 32 << 20)
        });
        if fatal.is_none() && no_tail {
            prop_assert!(n >= sent.len(), "{} replies for {} requests", n, sent.len());
        }
    }
}
