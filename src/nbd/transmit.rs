//! The transmission phase of one connection: one task on a worker, no
//! locks, no thread hops.
//!
//! ```text
//!            readv: [payload rest | 64 KiB header buffer]
//!   socket ──────────────> parse headers ──> check ──> start at once
//!                              │ refused: error reply     │ (FuturesUnordered,
//!                              v                          v  device I/O runs)
//!   socket <── writev ── out queue <──── completions, in any order
//!             (headers + IoBufs of every ready reply, up to 64 slices)
//! ```
//!
//! The task polls four things in turn until none makes progress: the
//! header buffer (parse and start requests), the socket for input, the
//! in-flight requests, the socket for output. A write payload goes
//! straight from the socket into the buffer that goes down the stack
//! (with the next headers read behind it in the same `readv`); a read
//! reply leaves from the buffer the device filled.
//!
//! Backpressure: at most [`MAX_QUEUED`] requests (and about 64 MiB of
//! buffers) per connection are in flight or waiting for their reply to
//! be sent; beyond that the task stops reading and TCP flow control holds
//! the client. Timeouts: a request whose bytes started arriving must be
//! complete within `payload_timeout`, and once the connection winds down
//! (DISC, EOF, shutdown) its queued replies must make progress within it,
//! else the connection is dropped.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice, IoSliceMut};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

use super::codec::{self, Limits, REQUEST_LEN, RequestHeader, Valid, Verdict};
use super::exec::{self, Ctx};
use super::handshake::Negotiated;
use super::proto::{Cmd, errno};
use super::reply::Reply;
use super::transport::Transport;
use crate::blockdev::BlockDev;
use crate::buf::IoBuf;
use crate::buf::pool;

/// Size of the request-header buffer.
const RBUF_LEN: usize = 64 << 10;
/// Requests in flight or waiting for their reply to be sent.
pub const MAX_QUEUED: usize = 256;
/// Buffer bytes in flight per connection, at least (see `max_bytes`).
const MIN_QUEUED_BYTES: usize = 64 << 20;
/// Slices per `writev`.
const IOV_BATCH: usize = 64;
/// Rounds of the poll loop before yielding to other connections.
const POLL_BUDGET: u32 = 64;
/// How long a closing connection waits for the client to close after
/// the last reply (so that unread requests do not turn the close into a
/// reset that could discard replies the client has not read yet).
const LINGER: Duration = Duration::from_secs(1);

/// Settings of the transmission phase.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub payload_timeout: Duration,
    pub max_payload: u32,
}

/// Why a connection ended.
#[derive(Debug)]
pub enum End {
    /// `NBD_CMD_DISC`.
    Disc,
    /// The client closed its side.
    Eof,
    /// The server shut down.
    Shutdown,
    Io(io::Error),
    /// A violation that leaves no way to go on (bad magic, huge payload).
    Protocol(String),
    Timeout(&'static str),
}

/// Where the input side stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    Open,
    /// `NBD_CMD_DISC` seen: nothing more is parsed.
    Disc,
    /// The client closed: what is buffered is still served.
    Eof,
    /// Server shutdown: buffered requests are refused with ESHUTDOWN.
    Shutdown,
}

/// A WRITE payload being received.
enum Payload {
    Fill {
        v: Valid,
        buf: IoBuf,
        filled: usize,
    },
    /// A refused WRITE's payload being skipped; then `reply` is sent.
    Skip {
        left: u32,
        reply: Reply,
    },
}

struct Conn<'a, S> {
    io: &'a S,
    lim: Limits,
    timeout: Duration,
    max_bytes: usize,
    rbuf: Box<[u8]>,
    rstart: usize,
    rend: usize,
    payload: Option<Payload>,
    input: Input,
    out: VecDeque<(Reply, usize)>,
    /// Bytes of `out[0]` already sent.
    out_pos: usize,
    queued: usize,
    queued_bytes: usize,
    /// Request headers parsed so far (names the request being received).
    nreq: u64,
    /// The request being received and when its first bytes were seen.
    partial: Option<(u64, Instant)>,
    /// Since when replies are waiting for the socket.
    stalled: Option<Instant>,
    timer_armed: bool,
}

/// Serves the transmission phase until the client disconnects, the
/// connection fails, or `shutdown` resolves and everything in flight is
/// answered.
pub async fn serve<S: Transport>(
    mut io: S,
    neg: Negotiated,
    set: Settings,
    shutdown: Pin<&mut impl Future<Output = ()>>,
) -> End {
    let dev: &dyn BlockDev = &*neg.export.dev;
    let ctx = Ctx {
        structured: neg.structured,
        contexts: &neg.contexts,
        block: dev.block_size(),
    };
    let lim = Limits {
        size: neg.size,
        min_block: neg.min_block,
        max_payload: set.max_payload,
        read_only: neg.export.read_only,
        structured: neg.structured,
        meta_context: !neg.contexts.is_empty(),
    };
    let start = move |v: Valid, p: Option<IoBuf>| exec::execute(dev, v, p, ctx);
    let mut inflight = FuturesUnordered::new();
    let end = {
        let mut conn = Conn::new(&io, lim, set);
        let mut sleep = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        let mut shutdown = shutdown;
        std::future::poll_fn(|cx| {
            conn.poll(cx, &mut inflight, &start, sleep.as_mut(), shutdown.as_mut())
        })
        .await
    };
    // Whatever is still in flight is dropped here: the buffers it holds
    // stay owned by the device layer until the kernel is done with them.
    drop(inflight);
    if matches!(end, End::Shutdown) {
        linger(&mut io).await;
    }
    end
}

/// Logs a refused request at debug level: what it was, the answer, why.
fn log_refused(h: &RequestHeader, answer: &str, why: &str) {
    tracing::debug!(
        "nbd {} of {} bytes at {} (flags {:#x}, cookie {}) refused ({answer}): {why}",
        h.cmd.name(),
        h.length,
        h.offset,
        h.flags,
        h.cookie,
    );
}

/// Half-closes and waits (briefly) for the client to close.
async fn linger<S: Transport>(io: &mut S) {
    let _ = io.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

impl<'a, S: Transport> Conn<'a, S> {
    fn new(io: &'a S, lim: Limits, set: Settings) -> Self {
        let max_payload = usize::try_from(set.max_payload).unwrap_or(usize::MAX);
        Conn {
            io,
            lim,
            timeout: set.payload_timeout,
            max_bytes: MIN_QUEUED_BYTES.max(max_payload.saturating_mul(2)),
            rbuf: vec![0u8; RBUF_LEN].into_boxed_slice(),
            rstart: 0,
            rend: 0,
            payload: None,
            input: Input::Open,
            out: VecDeque::with_capacity(MAX_QUEUED),
            out_pos: 0,
            queued: 0,
            queued_bytes: 0,
            nreq: 0,
            partial: None,
            stalled: None,
            timer_armed: false,
        }
    }

    fn poll<F, M>(
        &mut self,
        cx: &mut Context<'_>,
        inflight: &mut FuturesUnordered<F>,
        start: &M,
        sleep: Pin<&mut Sleep>,
        shutdown: Pin<&mut impl Future<Output = ()>>,
    ) -> Poll<End>
    where
        F: Future<Output = Reply>,
        M: Fn(Valid, Option<IoBuf>) -> F,
    {
        // Polled only while open: once it resolved it is never polled again.
        if self.input == Input::Open && shutdown.poll(cx).is_ready() {
            self.input = Input::Shutdown;
        }
        let mut budget = POLL_BUDGET;
        loop {
            let mut progress = match self.parse(inflight, start) {
                Ok(p) => p,
                Err(e) => return Poll::Ready(e),
            };
            match self.poll_input(cx) {
                Ok(p) => progress |= p,
                Err(e) => return Poll::Ready(e),
            }
            while let Poll::Ready(Some(reply)) = inflight.poll_next_unpin(cx) {
                let cost = reply.cost();
                self.out.push_back((reply, cost));
                progress = true;
            }
            match self.poll_output(cx) {
                Ok(p) => progress |= p,
                Err(e) => return Poll::Ready(e),
            }
            if !progress {
                if self.input != Input::Open && inflight.is_empty() && self.out.is_empty() {
                    return Poll::Ready(match self.input {
                        Input::Disc => End::Disc,
                        Input::Shutdown => End::Shutdown,
                        Input::Eof | Input::Open => End::Eof,
                    });
                }
                break;
            }
            budget -= 1;
            if budget == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        match self.poll_timer(cx, sleep) {
            Ok(()) => Poll::Pending,
            Err(e) => Poll::Ready(e),
        }
    }

    /// Whether another request may be started.
    fn admit(&self) -> bool {
        self.queued < MAX_QUEUED && self.queued_bytes < self.max_bytes
    }

    /// Parses buffered input: feeds a pending payload, then complete
    /// headers while requests may be admitted.
    fn parse<F, M>(&mut self, inflight: &mut FuturesUnordered<F>, start: &M) -> Result<bool, End>
    where
        M: Fn(Valid, Option<IoBuf>) -> F,
    {
        let mut progress = false;
        loop {
            if self.payload.is_some() {
                if !self.feed_payload(inflight, start) {
                    return Ok(progress);
                }
                progress = true;
                continue;
            }
            if self.input == Input::Disc || !self.admit() {
                return Ok(progress);
            }
            let Some(h) = self.next_header() else {
                return Ok(progress);
            };
            let h = h.map_err(|m| End::Protocol(format!("bad request magic {m:#x}")))?;
            self.nreq += 1;
            progress = true;
            self.dispatch(h, inflight, start)?;
        }
    }

    fn next_header(&mut self) -> Option<Result<RequestHeader, u32>> {
        let end = self.rstart.checked_add(REQUEST_LEN)?;
        if end > self.rend {
            return None;
        }
        let bytes: &[u8; REQUEST_LEN] = self.rbuf.get(self.rstart..end)?.try_into().ok()?;
        let h = codec::parse_request(bytes);
        self.rstart = end;
        Some(h)
    }

    fn dispatch<F, M>(
        &mut self,
        h: RequestHeader,
        inflight: &mut FuturesUnordered<F>,
        start: &M,
    ) -> Result<(), End>
    where
        M: Fn(Valid, Option<IoBuf>) -> F,
    {
        match codec::check_request(&h, &self.lim) {
            Verdict::Run(v) if self.input == Input::Shutdown => {
                let payload = if v.cmd == Cmd::Write { v.length } else { 0 };
                let msg = "the server is shutting down";
                self.refuse(&h, errno::ESHUTDOWN, msg, payload);
            }
            Verdict::Run(v) => self.run(v, inflight, start),
            Verdict::Reject {
                errno,
                msg,
                discard,
            } => self.refuse(&h, errno, &msg, discard),
            Verdict::Disconnect => self.input = Input::Disc,
            Verdict::Drop(msg) => {
                log_refused(&h, "dropping the connection", &msg);
                return Err(End::Protocol(msg));
            }
        }
        Ok(())
    }

    /// Answers a request with an error without serving it (logged once).
    fn refuse(&mut self, h: &RequestHeader, errno: u32, msg: &str, discard: u32) {
        log_refused(h, &format!("errno {errno}"), msg);
        // A READ must get a structured reply once they are on; error
        // chunks are structured, so every refusal uses one.
        let reply = Reply::error(h.cookie, errno, msg, self.lim.structured);
        self.queued += 1;
        if discard > 0 {
            self.payload = Some(Payload::Skip {
                left: discard,
                reply,
            });
        } else {
            self.out.push_back((reply, 0));
        }
    }

    fn run<F, M>(&mut self, v: Valid, inflight: &mut FuturesUnordered<F>, start: &M)
    where
        M: Fn(Valid, Option<IoBuf>) -> F,
    {
        self.queued += 1;
        let len = usize::try_from(v.length).unwrap_or(usize::MAX);
        match v.cmd {
            Cmd::Write if len > 0 => {
                self.queued_bytes += len;
                self.payload = Some(Payload::Fill {
                    v,
                    buf: pool::take(len),
                    filled: 0,
                });
            }
            // Zero-length requests and CACHE never touch the device.
            Cmd::Read if len == 0 => {
                let r = Reply::read_empty(v.cookie, self.lim.structured);
                self.out.push_back((r, 0));
            }
            Cmd::Write | Cmd::Trim | Cmd::WriteZeroes | Cmd::Cache if len == 0 => {
                self.out.push_back((Reply::ok(v.cookie), 0));
            }
            Cmd::Cache => self.out.push_back((Reply::ok(v.cookie), 0)),
            _ => {
                if v.cmd == Cmd::Read {
                    self.queued_bytes += len;
                }
                inflight.push(start(v, None));
            }
        }
    }

    /// Moves buffered bytes into the pending payload; true when it is
    /// complete (and its request started or its refusal queued).
    fn feed_payload<F, M>(&mut self, inflight: &mut FuturesUnordered<F>, start: &M) -> bool
    where
        M: Fn(Valid, Option<IoBuf>) -> F,
    {
        let avail = self.rbuf.get(self.rstart..self.rend).unwrap_or(&[]);
        let done = match &mut self.payload {
            Some(Payload::Fill { buf, filled, .. }) => {
                let dst = buf.as_mut_slice().get_mut(*filled..).unwrap_or(&mut []);
                let n = dst.len().min(avail.len());
                if let (Some(d), Some(s)) = (dst.get_mut(..n), avail.get(..n)) {
                    d.copy_from_slice(s);
                }
                *filled += n;
                self.rstart += n;
                *filled >= buf.len()
            }
            Some(Payload::Skip { left, .. }) => {
                let n = avail
                    .len()
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u32;
                self.rstart += n;
                *left == 0
            }
            None => return false,
        };
        if !done {
            return false;
        }
        match self.payload.take() {
            Some(Payload::Fill { v, buf, .. }) => inflight.push(start(v, Some(buf))),
            Some(Payload::Skip { reply, .. }) => self.out.push_back((reply, 0)),
            None => {}
        }
        true
    }

    /// Reads from the socket while input is wanted; true if bytes came.
    fn poll_input(&mut self, cx: &mut Context<'_>) -> Result<bool, End> {
        if self.input != Input::Open || (self.payload.is_none() && !self.admit()) {
            return Ok(false);
        }
        loop {
            match self.io.poll_read_ready(cx) {
                Poll::Pending => return Ok(false),
                Poll::Ready(Err(e)) => return Err(End::Io(e)),
                Poll::Ready(Ok(())) => {}
            }
            self.compact();
            let res = match &mut self.payload {
                Some(Payload::Fill { buf, filled, .. }) if self.rend == 0 => {
                    let dst = buf.as_mut_slice().get_mut(*filled..).unwrap_or(&mut []);
                    let first = dst.len();
                    let mut iov = [IoSliceMut::new(dst), IoSliceMut::new(&mut self.rbuf)];
                    match self.io.try_read_vectored(&mut iov) {
                        Ok(n) if n > 0 => {
                            let k = n.min(first);
                            *filled += k;
                            self.rend = n - k;
                            Ok(n)
                        }
                        r => r,
                    }
                }
                _ => {
                    let Some(space) = self.rbuf.get_mut(self.rend..).filter(|s| !s.is_empty())
                    else {
                        return Ok(false);
                    };
                    let r = self.io.try_read_vectored(&mut [IoSliceMut::new(space)]);
                    if let Ok(n) = r {
                        self.rend += n;
                    }
                    r
                }
            };
            match res {
                Ok(0) => {
                    self.input = Input::Eof;
                    return Ok(true);
                }
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(End::Io(e)),
            }
        }
    }

    /// Moves unparsed bytes to the front of the header buffer.
    fn compact(&mut self) {
        if self.rstart == 0 {
            return;
        }
        self.rbuf.copy_within(self.rstart..self.rend, 0);
        self.rend -= self.rstart;
        self.rstart = 0;
    }

    /// Sends queued replies while the socket takes them.
    fn poll_output(&mut self, cx: &mut Context<'_>) -> Result<bool, End> {
        let mut progress = false;
        while !self.out.is_empty() {
            match self.io.poll_write_ready(cx) {
                Poll::Pending => {
                    if self.input != Input::Open {
                        self.stalled.get_or_insert_with(Instant::now);
                    }
                    return Ok(progress);
                }
                Poll::Ready(Err(e)) => return Err(End::Io(e)),
                Poll::Ready(Ok(())) => {}
            }
            let res = {
                let mut iov = [IoSlice::new(&[]); IOV_BATCH];
                let n = self.gather(&mut iov);
                self.io.try_write_vectored(iov.get(..n).unwrap_or(&[]))
            };
            match res {
                Ok(0) => return Err(End::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.advance(n);
                    self.stalled = None;
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(End::Io(e)),
            }
        }
        Ok(progress)
    }

    /// Fills `iov` with the unsent bytes of the queued replies.
    fn gather<'b>(&'b self, iov: &mut [IoSlice<'b>; IOV_BATCH]) -> usize {
        let mut n = 0;
        // Bytes of the first reply already sent.
        let mut skip = self.out_pos;
        for (r, _) in &self.out {
            for part in [r.head(), r.body()] {
                let from = skip.min(part.len());
                skip -= from;
                let rest = part.get(from..).unwrap_or(&[]);
                if rest.is_empty() {
                    continue;
                }
                let Some(slot) = iov.get_mut(n) else {
                    return n;
                };
                *slot = IoSlice::new(rest);
                n += 1;
            }
        }
        n
    }

    /// Drops `n` sent bytes from the front of the queue.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some((front, _)) = self.out.front() else {
                return;
            };
            let left = front.wire_len().saturating_sub(self.out_pos);
            if n < left {
                self.out_pos += n;
                return;
            }
            n -= left;
            self.out_pos = 0;
            if let Some((r, cost)) = self.out.pop_front() {
                self.queued = self.queued.saturating_sub(1);
                self.queued_bytes = self.queued_bytes.saturating_sub(cost);
                if let Some(buf) = r.into_buf() {
                    pool::give(buf);
                }
            }
        }
    }

    /// Drops the connection when a request stays incomplete, or replies
    /// stay unsent, for longer than the payload timeout.
    fn poll_timer(&mut self, cx: &mut Context<'_>, mut sleep: Pin<&mut Sleep>) -> Result<(), End> {
        let incomplete = self.input == Input::Open
            && (self.payload.is_some() || (self.rend > self.rstart && !self.has_header()));
        self.partial = match (incomplete, self.partial) {
            (false, _) => None,
            (true, Some((id, t))) if id == self.nreq => Some((id, t)),
            (true, _) => Some((self.nreq, Instant::now())),
        };
        // A client that does not read its replies only holds the buffers
        // its own requests asked for (bounded by the in-flight limit), so
        // it is left alone while it may still send; once the connection
        // is winding down, it must take its replies in time.
        if self.out.is_empty() || self.input == Input::Open {
            self.stalled = None;
        }
        let since = match (self.partial.map(|p| p.1), self.stalled) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => return Ok(()),
            },
        };
        let deadline = since + self.timeout;
        loop {
            if !self.timer_armed {
                sleep.as_mut().reset(deadline);
                self.timer_armed = true;
            }
            match sleep.as_mut().poll(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(()) => {
                    self.timer_armed = false;
                    if Instant::now() >= deadline {
                        return Err(End::Timeout(if self.partial.is_some() {
                            "a request did not arrive in time"
                        } else {
                            "the client stopped reading replies"
                        }));
                    }
                }
            }
        }
    }

    fn has_header(&self) -> bool {
        self.rend - self.rstart >= REQUEST_LEN
    }
}
