//! ferrosan: a software storage array that serves RAID volumes over NBD.
//!
//! ```text
//!  host (qemu, fio, nbdcopy, qemu-img, kernel nbd)
//!    │ NBD over TCP / Unix socket
//!  [nbd]     protocol only, generic over BlockDev
//!  [stack]   volume = tree of BlockDev nodes
//!  [layout]  concat / raid0 / raid1 / raid5 math
//!  [disk]    files and block devices, io_uring + O_DIRECT
//!  beside:   [meta] redb per pool   [jobs] background copiers
//!            [api] REST on <pool>/api.sock   [cli] thin client
//! ```
//!
//! See `docs/architecture.md` for the layers as built.

pub mod api;
pub mod blockdev;
pub mod buf;
pub mod cli;
pub mod copy;
pub mod daemon;
pub mod disk;
pub mod divert;
pub mod engine;
pub mod error;
pub mod jobs;
pub mod json;
pub mod layout;
pub mod lockorder;
pub mod meta;
pub mod nbd;
pub mod pair;
pub mod reshape;
pub mod rt;
pub mod stack;
pub mod units;

pub use buf::IoBuf;
pub use error::{Error, ErrorKind, Result};
