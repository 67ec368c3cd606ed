//! Transmission replies: a small inline header plus an optional body.
//!
//! ```text
//!   simple:      magic | errno | cookie                      (16 bytes) [+ data]
//!   structured:  magic | flags | type | cookie | length      (20 bytes) + payload
//!     OFFSET_DATA  payload = offset (8, in the header array) + data (the IoBuf)
//!     ERROR        payload = errno (4) + msg len (2) (header) + message (body)
//!     BLOCK_STATUS payload = context id (4) (header) + descriptors (body)
//! ```
//!
//! A read reply's body is the [`IoBuf`] the device filled: the writer
//! sends it with `writev` straight from that buffer.

use super::codec::{MAX_STRING, clip_str};
use super::proto::{self, REPLY_FLAG_DONE, chunk};
use crate::buf::IoBuf;

/// Room for the longest fixed part of any reply (28 bytes: OFFSET_DATA).
const HEAD_CAP: usize = 28;

/// What follows a reply's header.
pub enum Body {
    None,
    /// Read data, sent from the buffer the device filled.
    Buf(IoBuf),
    /// A message or block-status descriptors.
    Bytes(Vec<u8>),
}

/// One reply, ready to send.
pub struct Reply {
    head: [u8; HEAD_CAP],
    head_len: u8,
    body: Body,
    /// Buffer bytes the connection counted for the request.
    cost: usize,
}

impl Reply {
    fn new() -> Reply {
        Reply {
            head: [0; HEAD_CAP],
            head_len: 0,
            body: Body::None,
            cost: 0,
        }
    }

    /// Records the buffer bytes the connection counted for the request.
    pub fn with_cost(mut self, cost: usize) -> Reply {
        self.cost = cost;
        self
    }

    pub fn cost(&self) -> usize {
        self.cost
    }

    fn put(&mut self, bytes: &[u8]) {
        let at = usize::from(self.head_len);
        if let Some(dst) = self.head.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
            self.head_len += bytes.len() as u8;
        }
    }

    fn simple(cookie: u64, errno: u32) -> Reply {
        let mut r = Reply::new();
        r.put(&proto::SIMPLE_REPLY_MAGIC.to_be_bytes());
        r.put(&errno.to_be_bytes());
        r.put(&cookie.to_be_bytes());
        r
    }

    fn chunk(cookie: u64, flags: u16, typ: u16, len: usize) -> Reply {
        let mut r = Reply::new();
        r.put(&proto::STRUCTURED_REPLY_MAGIC.to_be_bytes());
        r.put(&flags.to_be_bytes());
        r.put(&typ.to_be_bytes());
        r.put(&cookie.to_be_bytes());
        r.put(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
        r
    }

    /// Success without data (any command but a structured READ).
    pub fn ok(cookie: u64) -> Reply {
        Reply::simple(cookie, 0)
    }

    /// Success of a zero-length READ.
    pub fn read_empty(cookie: u64, structured: bool) -> Reply {
        if structured {
            Reply::chunk(cookie, REPLY_FLAG_DONE, chunk::NONE, 0)
        } else {
            Reply::ok(cookie)
        }
    }

    /// Success of a READ: the data leaves from `buf` (its length is at
    /// most the maximum payload, far below 4 GiB).
    pub fn read_data(cookie: u64, offset: u64, buf: IoBuf, structured: bool) -> Reply {
        let mut r = if structured {
            let mut r = Reply::chunk(cookie, REPLY_FLAG_DONE, chunk::OFFSET_DATA, 8 + buf.len());
            r.put(&offset.to_be_bytes());
            r
        } else {
            Reply::ok(cookie)
        };
        r.body = Body::Buf(buf);
        r
    }

    /// An error; structured replies carry `msg` for a human.
    pub fn error(cookie: u64, errno: u32, msg: &str, structured: bool) -> Reply {
        if !structured {
            return Reply::simple(cookie, errno);
        }
        let msg = clip_str(msg, MAX_STRING);
        let mut r = Reply::chunk(cookie, REPLY_FLAG_DONE, chunk::ERROR, 6 + msg.len());
        r.put(&errno.to_be_bytes());
        r.put(&(msg.len() as u16).to_be_bytes());
        r.body = Body::Bytes(msg.as_bytes().to_vec());
        r
    }

    /// A block-status answer: one chunk per context, (context id,
    /// descriptors: (length, flags) pairs of 8 bytes, at least one), the
    /// last flagged DONE. The first chunk's header is the reply's head;
    /// its descriptors and every further chunk, whole, are the body.
    pub fn block_status(cookie: u64, chunks: Vec<(u32, Vec<u8>)>) -> Reply {
        let last = chunks.len().saturating_sub(1);
        let flags = |i: usize| if i == last { REPLY_FLAG_DONE } else { 0 };
        let mut it = chunks.into_iter().enumerate();
        let Some((_, (id, first))) = it.next() else {
            return Reply::chunk(cookie, REPLY_FLAG_DONE, chunk::NONE, 0);
        };
        let mut r = Reply::chunk(cookie, flags(0), chunk::BLOCK_STATUS, 4 + first.len());
        r.put(&id.to_be_bytes());
        let mut body = first;
        for (i, (id, desc)) in it {
            let head = Reply::chunk(cookie, flags(i), chunk::BLOCK_STATUS, 4 + desc.len());
            body.extend_from_slice(head.head());
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&desc);
        }
        r.body = Body::Bytes(body);
        r
    }

    pub fn head(&self) -> &[u8] {
        self.head.get(..usize::from(self.head_len)).unwrap_or(&[])
    }

    pub fn body(&self) -> &[u8] {
        match &self.body {
            Body::None => &[],
            Body::Buf(b) => b.as_slice(),
            Body::Bytes(v) => v,
        }
    }

    /// Bytes on the wire.
    pub fn wire_len(&self) -> usize {
        usize::from(self.head_len) + self.body().len()
    }

    /// Takes the data buffer back (to recycle it).
    pub fn into_buf(self) -> Option<IoBuf> {
        match self.body {
            Body::Buf(b) => Some(b),
            _ => None,
        }
    }

    /// The whole reply as one vector (tests).
    #[cfg(test)]
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = self.head().to_vec();
        v.extend_from_slice(self.body());
        v
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("head", &self.head())
            .field("body_len", &self.body().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        let r = Reply::ok(7);
        assert_eq!(
            r.to_vec(),
            [
                &0x6744_6698u32.to_be_bytes()[..],
                &[0; 4],
                &7u64.to_be_bytes()
            ]
            .concat()
        );
        let r = Reply::read_data(9, 4096, IoBuf::from_slice(&[1, 2, 3]), true);
        let v = r.to_vec();
        assert_eq!(&v[0..4], &0x668e_33efu32.to_be_bytes());
        assert_eq!(&v[4..6], &1u16.to_be_bytes());
        assert_eq!(&v[6..8], &1u16.to_be_bytes());
        assert_eq!(&v[8..16], &9u64.to_be_bytes());
        assert_eq!(&v[16..20], &11u32.to_be_bytes());
        assert_eq!(&v[20..28], &4096u64.to_be_bytes());
        assert_eq!(&v[28..], &[1, 2, 3]);
        let r = Reply::error(5, 22, "bad", true);
        let v = r.to_vec();
        assert_eq!(&v[6..8], &0x8001u16.to_be_bytes());
        assert_eq!(&v[16..20], &9u32.to_be_bytes());
        assert_eq!(&v[20..24], &22u32.to_be_bytes());
        assert_eq!(&v[24..26], &3u16.to_be_bytes());
        assert_eq!(&v[26..], b"bad");
        let long = "é".repeat(5000);
        let r = Reply::error(5, 22, &long, true);
        assert!(r.body().len() <= MAX_STRING);
        assert!(std::str::from_utf8(r.body()).is_ok());
    }
}
