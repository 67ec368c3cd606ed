//! The byte streams a connection runs on: TCP and Unix sockets, driven
//! with readiness + non-blocking vectored calls so that one `readv` takes
//! many request headers and one `writev` sends many replies.

use std::io::{self, IoSlice, IoSliceMut};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite};

/// A connected stream on the current worker's reactor.
pub trait Transport: AsyncRead + AsyncWrite + Unpin {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Non-blocking `readv`; `WouldBlock` clears the read readiness.
    fn try_read_vectored(&self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize>;
    /// Non-blocking `writev`; `WouldBlock` clears the write readiness.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

macro_rules! transport {
    ($t:ty) => {
        impl Transport for $t {
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$t>::poll_read_ready(self, cx)
            }
            fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$t>::poll_write_ready(self, cx)
            }
            fn try_read_vectored(&self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
                <$t>::try_read_vectored(self, bufs)
            }
            fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                <$t>::try_write_vectored(self, bufs)
            }
        }
    };
}

transport!(tokio::net::TcpStream);
transport!(tokio::net::UnixStream);
