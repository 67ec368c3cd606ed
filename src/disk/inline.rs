//! Reads and writes of a member disk awaited in place: for the disk
//! nodes this layer builds (`Counted` over a `FileDisk`), without the
//! boxed future of each node's [`BlockDev`] call. A RAID group issues one
//! or more of these per request; through the trait they cost two heap
//! allocations each (issue 17). Any other device takes the trait's path.

#![forbid(unsafe_code)]

use std::sync::Arc;

use super::{Counted, FileDisk};
use crate::blockdev::{BlockDev, BufResult};
use crate::buf::IoBuf;

/// Reads `buf.len()` bytes at `off` of `dev`, as `dev.read` does.
pub async fn read_at(dev: &dyn BlockDev, off: u64, buf: IoBuf) -> BufResult {
    let any = dev.as_any();
    if let Some(c) = any.downcast_ref::<Counted<Arc<dyn BlockDev>>>() {
        return c.read_inline(off, buf).await;
    }
    leaf_read(dev, off, buf).await
}

/// Writes `buf` at `off` of `dev`, as `dev.write` does.
pub async fn write_at(dev: &dyn BlockDev, off: u64, buf: IoBuf, fua: bool) -> BufResult {
    let any = dev.as_any();
    if let Some(c) = any.downcast_ref::<Counted<Arc<dyn BlockDev>>>() {
        return c.write_inline(off, buf, fua).await;
    }
    leaf_write(dev, off, buf, fua).await
}

/// [`read_at`] for the device below a `Counted` (a file, or anything
/// through the trait); not recursive, so its future has a size.
pub(super) async fn leaf_read(dev: &dyn BlockDev, off: u64, buf: IoBuf) -> BufResult {
    match dev.as_any().downcast_ref::<FileDisk>() {
        Some(f) => f.read_inline(off, buf).await,
        None => dev.read(off, buf).await,
    }
}

/// [`write_at`] for the device below a `Counted`.
pub(super) async fn leaf_write(dev: &dyn BlockDev, off: u64, buf: IoBuf, fua: bool) -> BufResult {
    match dev.as_any().downcast_ref::<FileDisk>() {
        Some(f) => f.write_inline(off, buf, fua).await,
        None => dev.write(off, buf, fua).await,
    }
}
