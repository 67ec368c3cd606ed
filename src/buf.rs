//! Aligned, owned I/O buffers that can be split into disjoint pieces.
//!
//! Every read and write in ferrosan moves an [`IoBuf`] *by value* down the
//! volume stack and gets it back with the result. Ownership is what makes
//! io_uring sound: while the kernel fills or drains a buffer, the buffer is
//! owned by the in-flight operation, so dropping the future that started it
//! cannot free memory under the kernel's feet.
//!
//! ```text
//!   storage (one aligned allocation, reference counted)
//!   +-----------------------------------------------------------+
//!   | piece A (off 0, len a) | piece B (off a, len b) | ...      |
//!   +-----------------------------------------------------------+
//!     split_at() hands out disjoint pieces; unsplit() joins
//!     neighbours back. Each piece is the only handle to its bytes.
//! ```
//!
//! Memory is aligned to 4096 bytes, so any piece starting at a multiple of
//! 512 within it satisfies O_DIRECT. Allocations are zeroed, so no piece
//! ever exposes uninitialised memory.

pub mod pool;

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;
use std::sync::Arc;

/// Alignment of every buffer allocation: the largest logical block size of
/// the disks ferrosan drives with O_DIRECT.
pub const BUF_ALIGN: usize = 4096;

/// Buffers at least this large are mapped on their own, 2 MiB aligned and
/// advised for transparent huge pages (see `Storage::map`).
pub const HUGE_MIN: usize = 1 << 20;
/// The huge page size on x86-64 and arm64 (4 KiB base pages).
pub const HUGE_PAGE: usize = 2 << 20;

struct Storage {
    ptr: NonNull<u8>,
    cap: usize,
    /// Bytes mapped with `mmap` (0: a heap allocation of `cap` bytes).
    mapped: usize,
}

// SAFETY: `Storage` is a plain heap allocation or private anonymous
// mapping; access to its bytes is partitioned between `IoBuf` pieces (see
// `IoBuf`), never shared mutably.
unsafe impl Send for Storage {}
// SAFETY: as above; `&Storage` only exposes the pointer, not the bytes.
unsafe impl Sync for Storage {}

impl Storage {
    fn new(len: usize) -> Storage {
        let cap = len.max(1).next_multiple_of(BUF_ALIGN);
        if cap >= HUGE_MIN
            && let Some(s) = Storage::map(cap)
        {
            return s;
        }
        let layout = Layout::from_size_align(cap, BUF_ALIGN).unwrap_or_else(|_| {
            // A request this large was rejected at the protocol edge; reaching
            // here is a logic error, and aborting is the only safe answer.
            std::process::abort()
        });
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        Storage {
            ptr,
            cap,
            mapped: 0,
        }
    }

    /// A zeroed mapping of at least `cap` bytes on a 2 MiB boundary,
    /// advised for transparent huge pages; `None` where `mmap` fails (the
    /// caller falls back to the heap).
    ///
    /// Why: a disk request is split where its buffer needs more
    /// scatter-gather segments than the device takes (`max_segments`, 254
    /// on virtio-blk). A 1 MiB buffer of scattered 4 KiB pages needs 256, so
    /// every 1 MiB read went to the disk as 1016 KiB + 8 KiB — two device
    /// round trips (bench/run.sh: sequential reads 0.85x qemu-nbd before,
    /// 1.8x after). A huge page is physically contiguous: one segment, one
    /// request. Where THP is off the advice is ignored and the buffer works
    /// as before.
    fn map(cap: usize) -> Option<Storage> {
        let mapped = cap.checked_next_multiple_of(HUGE_PAGE)?;
        let span = mapped.checked_add(HUGE_PAGE)?;
        // SAFETY: a fresh private anonymous mapping; no existing memory is
        // touched.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                span,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return None;
        }
        let base = raw as usize;
        let start = base.next_multiple_of(HUGE_PAGE);
        let head = start - base;
        let tail = span - head - mapped;
        // SAFETY: head and tail lie inside the mapping made above and are
        // outside the range kept; madvise only advises.
        unsafe {
            if head > 0 {
                libc::munmap(raw, head);
            }
            if tail > 0 {
                libc::munmap((start + mapped) as *mut libc::c_void, tail);
            }
            libc::madvise(start as *mut libc::c_void, mapped, libc::MADV_HUGEPAGE);
        }
        Some(Storage {
            ptr: NonNull::new(start as *mut u8)?,
            cap,
            mapped,
        })
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if self.mapped > 0 {
            // SAFETY: mapped in `Storage::map` with exactly this range.
            unsafe {
                libc::munmap(self.ptr.as_ptr().cast(), self.mapped);
            }
            return;
        }
        // SAFETY: allocated in `Storage::new` with exactly this layout
        // (size/alignment were validated there).
        unsafe {
            dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.cap, BUF_ALIGN),
            )
        }
    }
}

/// An owned, aligned byte buffer, or one disjoint piece of one.
///
/// Invariant: the pieces of one storage never overlap, because the only
/// ways to create a piece are [`IoBuf::new`] and [`IoBuf::split_at`], which
/// consumes its input. `IoBuf` is deliberately not `Clone`.
pub struct IoBuf {
    storage: Arc<Storage>,
    off: usize,
    len: usize,
}

impl IoBuf {
    /// A zeroed buffer of `len` bytes, aligned to [`BUF_ALIGN`].
    pub fn new(len: usize) -> IoBuf {
        IoBuf {
            storage: Arc::new(Storage::new(len)),
            off: 0,
            len,
        }
    }

    /// A buffer holding a copy of `data`.
    pub fn from_slice(data: &[u8]) -> IoBuf {
        let mut b = IoBuf::new(data.len());
        b.as_mut_slice().copy_from_slice(data);
        b
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `off + len <= cap` (checked at every split), the memory is
        // initialised (zeroed at allocation) and no other piece covers it.
        unsafe { std::slice::from_raw_parts(self.storage.ptr.as_ptr().add(self.off), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` proves this is the only
        // access to this piece, and pieces are disjoint.
        unsafe { std::slice::from_raw_parts_mut(self.storage.ptr.as_ptr().add(self.off), self.len) }
    }

    /// Raw pointer to the first byte, for handing to the kernel. The caller
    /// must keep `self` alive (owned by the operation) until the kernel is
    /// done with it.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_slice().as_mut_ptr()
    }

    /// Splits into `[0, mid)` and `[mid, len)`.
    ///
    /// # Panics
    /// If `mid > len` (a caller bug, like `slice::split_at`).
    pub fn split_at(self, mid: usize) -> (IoBuf, IoBuf) {
        assert!(mid <= self.len, "IoBuf::split_at out of range");
        let right = IoBuf {
            storage: Arc::clone(&self.storage),
            off: self.off + mid,
            len: self.len - mid,
        };
        let left = IoBuf {
            storage: self.storage,
            off: self.off,
            len: mid,
        };
        (left, right)
    }

    /// Joins `self` with the piece that directly follows it in the same
    /// storage; gives both back unchanged if they are not neighbours.
    pub fn unsplit(self, next: IoBuf) -> Result<IoBuf, (IoBuf, IoBuf)> {
        if Arc::ptr_eq(&self.storage, &next.storage) && self.off + self.len == next.off {
            Ok(IoBuf {
                storage: self.storage,
                off: self.off,
                len: self.len + next.len,
            })
        } else {
            Err((self, next))
        }
    }

    /// Splits into consecutive pieces of the given lengths (which must sum
    /// to at most `len`; any rest is dropped from the result but stays
    /// reserved in the storage).
    pub fn split_many(self, lens: &[usize]) -> Vec<IoBuf> {
        let mut out = Vec::with_capacity(lens.len());
        let mut rest = self;
        for &l in lens {
            let (a, b) = rest.split_at(l);
            out.push(a);
            rest = b;
        }
        out
    }

    /// Joins consecutive pieces (as produced by [`IoBuf::split_many`], in
    /// order) back into one. Pieces that are not neighbours are copied
    /// into a fresh buffer instead, so the result is always correct.
    pub fn join(pieces: Vec<IoBuf>) -> IoBuf {
        let total: usize = pieces.iter().map(IoBuf::len).sum();
        let mut iter = pieces.into_iter();
        let Some(mut acc) = iter.next() else {
            return IoBuf::new(0);
        };
        let mut copied: Option<(IoBuf, usize)> = None;
        for p in iter {
            if let Some((buf, pos)) = copied.as_mut() {
                buf.as_mut_slice()[*pos..*pos + p.len()].copy_from_slice(p.as_slice());
                *pos += p.len();
                continue;
            }
            match acc.unsplit(p) {
                Ok(j) => acc = j,
                Err((a, p)) => {
                    let mut fresh = IoBuf::new(total);
                    fresh.as_mut_slice()[..a.len()].copy_from_slice(a.as_slice());
                    let mut pos = a.len();
                    fresh.as_mut_slice()[pos..pos + p.len()].copy_from_slice(p.as_slice());
                    pos += p.len();
                    copied = Some((fresh, pos));
                    acc = IoBuf::new(0);
                }
            }
        }
        match copied {
            Some((buf, _)) => buf,
            None => acc,
        }
    }

    /// Fills the buffer with zeroes.
    pub fn zero(&mut self) {
        self.as_mut_slice().fill(0);
    }
}

impl std::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoBuf")
            .field("off", &self.off)
            .field("len", &self.len)
            .finish()
    }
}

/// XORs `src` into `dst` (RAID-5 parity). Lengths must match.
pub fn xor_into(dst: &mut [u8], src: &[u8]) {
    debug_assert_eq!(dst.len(), src.len());
    let (d_chunks, d_rest) = dst.as_chunks_mut::<8>();
    let (s_chunks, s_rest) = src.as_chunks::<8>();
    for (d, s) in d_chunks.iter_mut().zip(s_chunks) {
        let v = u64::from_ne_bytes(*d) ^ u64::from_ne_bytes(*s);
        *d = v.to_ne_bytes();
    }
    for (d, s) in d_rest.iter_mut().zip(s_rest) {
        *d ^= *s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_join_round_trip() {
        let mut b = IoBuf::new(10_000);
        for (i, x) in b.as_mut_slice().iter_mut().enumerate() {
            *x = (i % 251) as u8;
        }
        let pieces = b.split_many(&[100, 4000, 5900]);
        assert_eq!(pieces[1].as_slice()[0], 100u8);
        let j = IoBuf::join(pieces);
        assert_eq!(j.len(), 10_000);
        assert!(
            j.as_slice()
                .iter()
                .enumerate()
                .all(|(i, &x)| x == (i % 251) as u8)
        );
        assert_eq!(j.as_slice().as_ptr() as usize % BUF_ALIGN, 0);
    }

    #[test]
    fn join_of_strangers_copies() {
        let a = IoBuf::from_slice(&[1, 2, 3]);
        let b = IoBuf::from_slice(&[4, 5]);
        let c = IoBuf::from_slice(&[6]);
        let j = IoBuf::join(vec![a, b, c]);
        assert_eq!(j.as_slice(), &[1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn large_buffers_are_zeroed_huge_page_aligned_mappings() {
        for len in [HUGE_MIN, HUGE_MIN + 512, 5 << 20] {
            let mut b = IoBuf::new(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_slice().as_ptr() as usize % HUGE_PAGE, 0, "len {len}");
            assert!(b.as_slice().iter().all(|&x| x == 0));
            // Every byte is writable, the last one included.
            b.as_mut_slice().fill(0xa5);
            let (head, tail) = b.split_at(len / 2);
            assert!(tail.as_slice().iter().all(|&x| x == 0xa5));
            let j = match head.unsplit(tail) {
                Ok(j) => j,
                Err(_) => panic!("neighbours of one mapping must unsplit"),
            };
            assert_eq!(j.len(), len);
        }
        // Below the threshold buffers come from the heap, still aligned.
        let small = IoBuf::new(HUGE_MIN - BUF_ALIGN);
        assert_eq!(small.as_slice().as_ptr() as usize % BUF_ALIGN, 0);
    }

    #[test]
    fn xor() {
        let mut a = vec![0xffu8; 19];
        let b: Vec<u8> = (0..19).collect();
        xor_into(&mut a, &b);
        assert!(a.iter().enumerate().all(|(i, &x)| x == 0xff ^ i as u8));
    }
}
