//! Total parsing and encoding of NBD messages.
//!
//! Every parser here takes arbitrary bytes and returns a value or a
//! reason; none can panic, allocate more than its input, or overflow
//! (checked arithmetic, `get`-style access only). Request validation
//! ([`check_request`]) is a pure function of the header and the export's
//! limits, so the rules of "Size constraints" and "Request types" can be
//! tested without a socket.

use super::proto::{self, Cmd, cflag, errno};

/// Bytes of a request header on the wire.
pub const REQUEST_LEN: usize = 28;
/// Bytes of an option header (magic, option, length).
pub const OPTION_HEADER_LEN: usize = 16;
/// The longest string the spec allows (names, queries, messages).
pub const MAX_STRING: usize = 4096;

/// A transmission request header, fields as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub flags: u16,
    pub cmd: Cmd,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

/// Reads a big-endian `u16` at `at`, if the bytes are there.
fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes(s.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(s.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_be_bytes(s.try_into().ok()?))
}

/// Parses a request header. `Err` carries the wrong magic (the stream is
/// garbage: the caller disconnects).
pub fn parse_request(b: &[u8; REQUEST_LEN]) -> Result<RequestHeader, u32> {
    let [m0, m1, m2, m3, f0, f1, t0, t1, rest @ ..] = *b;
    let magic = u32::from_be_bytes([m0, m1, m2, m3]);
    if magic != proto::REQUEST_MAGIC {
        return Err(magic);
    }
    let [
        c0,
        c1,
        c2,
        c3,
        c4,
        c5,
        c6,
        c7,
        o0,
        o1,
        o2,
        o3,
        o4,
        o5,
        o6,
        o7,
        l0,
        l1,
        l2,
        l3,
    ] = rest;
    Ok(RequestHeader {
        flags: u16::from_be_bytes([f0, f1]),
        cmd: Cmd::from_wire(u16::from_be_bytes([t0, t1])),
        cookie: u64::from_be_bytes([c0, c1, c2, c3, c4, c5, c6, c7]),
        offset: u64::from_be_bytes([o0, o1, o2, o3, o4, o5, o6, o7]),
        length: u32::from_be_bytes([l0, l1, l2, l3]),
    })
}

/// Encodes a request header (clients and tests).
pub fn encode_request(h: &RequestHeader) -> [u8; REQUEST_LEN] {
    let mut b = [0u8; REQUEST_LEN];
    b[0..4].copy_from_slice(&proto::REQUEST_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&h.flags.to_be_bytes());
    b[6..8].copy_from_slice(&h.cmd.to_wire().to_be_bytes());
    b[8..16].copy_from_slice(&h.cookie.to_be_bytes());
    b[16..24].copy_from_slice(&h.offset.to_be_bytes());
    b[24..28].copy_from_slice(&h.length.to_be_bytes());
    b
}

/// What a connection knows about its export when it checks a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Export size sent to the client.
    pub size: u64,
    /// Alignment of offsets and lengths (the advertised minimum block).
    pub min_block: u32,
    /// Largest READ/WRITE payload.
    pub max_payload: u32,
    pub read_only: bool,
    pub structured: bool,
    /// Whether the client selected a metadata context.
    pub meta_context: bool,
}

/// A request that passed every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Valid {
    pub cmd: Cmd,
    pub flags: u16,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

/// The verdict on a request header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it (a WRITE's `length` payload bytes follow the header).
    Run(Valid),
    /// Answer `errno` with `msg` at once, after skipping `discard` payload
    /// bytes (a refused WRITE still sends its payload).
    Reject {
        errno: u32,
        msg: String,
        discard: u32,
    },
    /// `NBD_CMD_DISC`: finish what is in flight, then close.
    Disconnect,
    /// The request cannot be answered without reading an unreasonable
    /// payload: hard disconnect.
    Drop(String),
}

fn reject(errno: u32, msg: String, discard: u32) -> Verdict {
    Verdict::Reject {
        errno,
        msg,
        discard,
    }
}

/// Checks a request header against the export (flags, permissions,
/// alignment, range, payload size). Total: every input gets a verdict,
/// and a `Run` verdict guarantees `offset + length <= size` without
/// overflow, both aligned to `min_block`, and a READ/WRITE length of at
/// most `max_payload`.
pub fn check_request(h: &RequestHeader, lim: &Limits) -> Verdict {
    let payload = if h.cmd == Cmd::Write { h.length } else { 0 };
    let what = h.cmd.name();
    if let Cmd::Unknown(t) = h.cmd {
        return reject(errno::EINVAL, format!("unknown command {t}"), 0);
    }
    if h.cmd == Cmd::Disc {
        return Verdict::Disconnect;
    }
    if payload > lim.max_payload {
        return Verdict::Drop(format!(
            "write payload of {payload} bytes exceeds the maximum of {}",
            lim.max_payload
        ));
    }
    let bad = h.flags & !h.cmd.allowed_flags(lim.structured);
    if bad != 0 {
        let msg = format!("{what}: command flags {bad:#x} are not valid here");
        return reject(errno::EINVAL, msg, payload);
    }
    if h.cmd == Cmd::BlockStatus && !lim.meta_context {
        let msg = "block-status needs a metadata context (base:allocation)".to_string();
        return reject(errno::EINVAL, msg, 0);
    }
    if lim.read_only && h.cmd.writes() {
        return reject(
            errno::EPERM,
            format!("{what}: the export is read-only"),
            payload,
        );
    }
    if h.cmd == Cmd::Flush {
        // Offset and length are reserved; tolerate clients that fill them.
        return Verdict::Run(valid(h));
    }
    check_range(h, lim, payload)
}

fn valid(h: &RequestHeader) -> Valid {
    Valid {
        cmd: h.cmd,
        flags: h.flags,
        cookie: h.cookie,
        offset: h.offset,
        length: h.length,
    }
}

fn check_range(h: &RequestHeader, lim: &Limits, payload: u32) -> Verdict {
    let what = h.cmd.name();
    let (off, len) = (h.offset, u64::from(h.length));
    if h.cmd == Cmd::Read && h.length > lim.max_payload {
        let e = if lim.structured {
            errno::EOVERFLOW
        } else {
            errno::EINVAL
        };
        let msg = format!(
            "read of {len} bytes exceeds the maximum payload of {}",
            lim.max_payload
        );
        return reject(e, msg, 0);
    }
    let align = u64::from(lim.min_block.max(1));
    if off % align != 0 || len % align != 0 {
        let msg = format!("{what} of {len} bytes at {off} is not aligned to {align} bytes");
        return reject(errno::EINVAL, msg, payload);
    }
    let Some(end) = off.checked_add(len) else {
        let msg = format!("{what} of {len} bytes at {off} overflows");
        return reject(errno::EINVAL, msg, payload);
    };
    if end > lim.size {
        let e = match h.cmd {
            Cmd::Write | Cmd::WriteZeroes => errno::ENOSPC,
            _ => errno::EINVAL,
        };
        let msg = format!(
            "{what} of {len} bytes at {off} ends past the export size of {}",
            lim.size
        );
        return reject(e, msg, payload);
    }
    if h.cmd == Cmd::BlockStatus && len == 0 {
        return reject(errno::EINVAL, "block-status of 0 bytes".to_string(), 0);
    }
    Verdict::Run(valid(h))
}

/// Whether a valid request has FUA set.
pub fn fua(v: &Valid) -> bool {
    v.flags & cflag::FUA != 0
}

/// The data of `NBD_OPT_INFO` / `NBD_OPT_GO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    pub name: String,
    pub infos: Vec<u16>,
}

/// Parses `NBD_OPT_INFO` / `NBD_OPT_GO` data; `Err` is the reason for
/// `NBD_REP_ERR_INVALID`.
pub fn parse_info_request(d: &[u8]) -> Result<InfoRequest, &'static str> {
    let name_len = be32(d, 0).ok_or("option data too short for a name length")?;
    let name_len = usize::try_from(name_len).map_err(|_| "name length overflows")?;
    let name_end = name_len.checked_add(4).ok_or("name length overflows")?;
    let name = d
        .get(4..name_end)
        .ok_or("name length runs past the option data")?;
    let n = be16(d, name_end).ok_or("option data too short for the request count")?;
    let list_start = name_end + 2;
    let list = d.get(list_start..).ok_or("option data too short")?;
    if list.len() != usize::from(n) * 2 {
        return Err("information request count does not match the option length");
    }
    let name = string(name)?;
    let infos = list
        .as_chunks::<2>()
        .0
        .iter()
        .map(|c| u16::from_be_bytes(*c))
        .collect();
    Ok(InfoRequest { name, infos })
}

/// Encodes `NBD_OPT_INFO` / `NBD_OPT_GO` data (clients and tests).
pub fn encode_info_request(r: &InfoRequest) -> Vec<u8> {
    let mut v = Vec::with_capacity(6 + r.name.len() + 2 * r.infos.len());
    v.extend_from_slice(&(r.name.len() as u32).to_be_bytes());
    v.extend_from_slice(r.name.as_bytes());
    v.extend_from_slice(&(r.infos.len() as u16).to_be_bytes());
    for i in &r.infos {
        v.extend_from_slice(&i.to_be_bytes());
    }
    v
}

/// The data of `NBD_OPT_LIST_META_CONTEXT` / `NBD_OPT_SET_META_CONTEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaRequest {
    pub name: String,
    pub queries: Vec<String>,
}

/// Parses meta-context option data; `Err` is the reason for
/// `NBD_REP_ERR_INVALID`. The query count is bounded by the data length
/// (each query takes at least 4 bytes), so no count can make it allocate
/// more than its input.
pub fn parse_meta_request(d: &[u8]) -> Result<MetaRequest, &'static str> {
    let (name, mut rest) = take_string(d).ok_or("export name runs past the option data")?;
    let n = be32(rest, 0).ok_or("option data too short for the query count")?;
    rest = rest.get(4..).ok_or("option data too short")?;
    let n = usize::try_from(n).map_err(|_| "query count overflows")?;
    if n > rest.len() / 4 {
        return Err("query count runs past the option data");
    }
    let mut queries = Vec::with_capacity(n);
    for _ in 0..n {
        let (q, r) = take_string(rest).ok_or("a query runs past the option data")?;
        queries.push(string(q)?);
        rest = r;
    }
    if !rest.is_empty() {
        return Err("trailing bytes after the last query");
    }
    Ok(MetaRequest {
        name: string(name)?,
        queries,
    })
}

/// Splits a 32-bit-length-prefixed string off the front of `d`.
fn take_string(d: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = usize::try_from(be32(d, 0)?).ok()?;
    let end = len.checked_add(4)?;
    Some((d.get(4..end)?, d.get(end..)?))
}

fn string(b: &[u8]) -> Result<String, &'static str> {
    if b.len() > MAX_STRING {
        return Err("a string is longer than 4096 bytes");
    }
    if b.contains(&0) {
        return Err("a string contains a NUL byte");
    }
    String::from_utf8(b.to_vec()).map_err(|_| "a string is not UTF-8")
}

/// Validates an `NBD_OPT_EXPORT_NAME` name.
pub fn parse_export_name(d: &[u8]) -> Result<String, &'static str> {
    string(d)
}

/// Encodes meta-context option data (clients and tests).
pub fn encode_meta_request(r: &MetaRequest) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(r.name.len() as u32).to_be_bytes());
    v.extend_from_slice(r.name.as_bytes());
    v.extend_from_slice(&(r.queries.len() as u32).to_be_bytes());
    for q in &r.queries {
        v.extend_from_slice(&(q.len() as u32).to_be_bytes());
        v.extend_from_slice(q.as_bytes());
    }
    v
}

/// Parses an option header: `(magic, option, length)`.
pub fn parse_option_header(b: &[u8; OPTION_HEADER_LEN]) -> (u64, u32, u32) {
    let magic = be64(b, 0).unwrap_or(0);
    let opt = be32(b, 8).unwrap_or(0);
    let len = be32(b, 12).unwrap_or(0);
    (magic, opt, len)
}

/// An option reply: header and data.
pub fn option_reply(opt: u32, typ: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(20 + data.len());
    v.extend_from_slice(&proto::REPLY_MAGIC_OPT.to_be_bytes());
    v.extend_from_slice(&opt.to_be_bytes());
    v.extend_from_slice(&typ.to_be_bytes());
    v.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// Cuts `msg` to at most `max` bytes on a character boundary.
pub fn clip_str(msg: &str, max: usize) -> &str {
    if msg.len() <= max {
        return msg;
    }
    let mut end = max;
    while end > 0 && !msg.is_char_boundary(end) {
        end -= 1;
    }
    msg.get(..end).unwrap_or("")
}

#[cfg(test)]
mod tests;
