//! The synchronous disk engine: pread/pwrite on tokio's blocking pool, for
//! threads without an io_uring ring (tests, tools) and kernels without
//! io_uring. The buffer moves into the blocking task and back, so a dropped
//! future frees nothing still in use.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::fs::FallocateFlags;

use super::uring::{Completion, Op};

fn errno(e: rustix::io::Errno) -> i32 {
    -e.raw_os_error()
}

fn run_blocking(fd: &OwnedFd, op: Op) -> Completion {
    match op {
        Op::Read { off, mut buf } => {
            let res = match rustix::io::pread(fd, buf.as_mut_slice(), off) {
                Ok(n) => i32::try_from(n).unwrap_or(i32::MAX),
                Err(e) => errno(e),
            };
            Completion {
                res,
                buf: Some(buf),
            }
        }
        Op::Write { off, buf, dsync } => {
            let flags = if dsync {
                rustix::io::ReadWriteFlags::DSYNC
            } else {
                rustix::io::ReadWriteFlags::empty()
            };
            let slice = [std::io::IoSlice::new(buf.as_slice())];
            let res = match rustix::io::pwritev2(fd, &slice, off, flags) {
                Ok(n) => i32::try_from(n).unwrap_or(i32::MAX),
                Err(e) => errno(e),
            };
            Completion {
                res,
                buf: Some(buf),
            }
        }
        Op::Fsync => {
            let res = match rustix::fs::fdatasync(fd) {
                Ok(()) => 0,
                Err(e) => errno(e),
            };
            Completion { res, buf: None }
        }
        Op::Fallocate { mode, off, len } => {
            let flags = FallocateFlags::from_bits_retain(mode as u32);
            let res = match rustix::fs::fallocate(fd, flags, off, len) {
                Ok(()) => 0,
                Err(e) => errno(e),
            };
            Completion { res, buf: None }
        }
    }
}

/// Runs `op` on the blocking pool (or inline outside a runtime).
pub async fn run(fd: Arc<OwnedFd>, op: Op) -> Completion {
    if tokio::runtime::Handle::try_current().is_err() {
        return run_blocking(&fd, op);
    }
    match tokio::task::spawn_blocking(move || run_blocking(&fd, op)).await {
        Ok(c) => c,
        Err(_) => Completion {
            res: -libc::EIO,
            buf: None,
        },
    }
}
