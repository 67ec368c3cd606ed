//! A per-thread pool of I/O buffers, so a request at queue depth 32 does
//! not pay an aligned, zeroed allocation (and for large requests an
//! `mmap` and page faults) each time: the NBD server's request buffers,
//! and the old data and parity a raid5 write reads.
//!
//! Buffers are kept by exact length (requests of one workload repeat the
//! same few sizes). A recycled buffer holds old bytes: it is only handed
//! to a device read (which, by the [`BlockDev`](crate::blockdev::BlockDev)
//! contract, fills all of it or fails — and a failed read sends no data)
//! or filled completely from the socket before a write.

#![forbid(unsafe_code)]

use std::cell::RefCell;

use super::{BUF_ALIGN, HUGE_MIN, HUGE_PAGE, IoBuf};

/// Buffers kept per length: a connection's most requests in flight (256),
/// since a raid5 write holds three buffers of its length at once (the
/// payload, the old data, the old parity) and 64 ran out at queue depth
/// 32. `MAX_BYTES` bounds what they hold.
const PER_CLASS: usize = 256;
/// Distinct lengths kept.
const CLASSES: usize = 8;
/// Bytes kept per thread.
const MAX_BYTES: usize = 64 << 20;
/// Larger buffers are not kept.
const MAX_LEN: usize = 4 << 20;

#[derive(Default)]
struct Pool {
    classes: Vec<(usize, Vec<IoBuf>)>,
    bytes: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// Memory a buffer of `len` bytes holds: large ones are whole huge pages.
fn footprint(len: usize) -> usize {
    if len >= HUGE_MIN {
        len.next_multiple_of(HUGE_PAGE)
    } else {
        len
    }
}

/// A buffer of `len` bytes, recycled if one is at hand. Contents are
/// unspecified (zeroes or old data).
pub fn take(len: usize) -> IoBuf {
    let got = POOL.with(|p| {
        let mut p = p.try_borrow_mut().ok()?;
        let i = p.classes.iter().position(|(l, _)| *l == len)?;
        let b = p.classes.get_mut(i)?.1.pop()?;
        p.bytes = p.bytes.saturating_sub(footprint(len));
        Some(b)
    });
    got.unwrap_or_else(|| IoBuf::new(len))
}

/// Returns a buffer for reuse (or drops it).
pub fn give(mut buf: IoBuf) {
    let len = buf.len();
    if len == 0 || len > MAX_LEN || !(buf.as_mut_ptr() as usize).is_multiple_of(BUF_ALIGN) {
        return;
    }
    POOL.with(|p| {
        let Ok(mut guard) = p.try_borrow_mut() else {
            return;
        };
        let p = &mut *guard;
        if p.bytes + footprint(len) > MAX_BYTES {
            return;
        }
        let i = match p.classes.iter().position(|(l, _)| *l == len) {
            Some(i) => i,
            None if p.classes.len() < CLASSES => {
                p.classes.push((len, Vec::with_capacity(PER_CLASS)));
                p.classes.len() - 1
            }
            None => match p.classes.iter().position(|(_, v)| v.is_empty()) {
                Some(i) => {
                    if let Some(c) = p.classes.get_mut(i) {
                        c.0 = len;
                    }
                    i
                }
                None => return,
            },
        };
        let Some((_, v)) = p.classes.get_mut(i) else {
            return;
        };
        if v.len() < PER_CLASS {
            v.push(buf);
            p.bytes += footprint(len);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycles_by_length() {
        let mut b = take(8192);
        b.as_mut_slice()[0] = 42;
        let p = b.as_slice().as_ptr();
        give(b);
        let c = take(8192);
        assert_eq!(c.as_slice().as_ptr(), p);
        assert_eq!(c.len(), 8192);
        let d = take(4096);
        assert_ne!(d.as_slice().as_ptr(), p);
        // Pieces not aligned to BUF_ALIGN are not kept.
        let (a, rest) = IoBuf::new(8192 + 512).split_at(512);
        drop(a);
        give(rest);
        assert_ne!(take(8192).as_slice().as_ptr() as usize % BUF_ALIGN, 512);
    }
}
