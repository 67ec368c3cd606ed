//! Wire numbers of the NBD protocol (`nbd-protocol.md`, "Values"), mapped
//! to enums with an `Unknown(..)` catch-all so that parsing is total, and
//! the one place where an internal [`ErrorKind`] becomes a wire errno.

use crate::error::ErrorKind;

/// `NBDMAGIC`, first word of the server greeting.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: second word of the greeting and the magic of every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
/// Magic of option replies.
pub const REPLY_MAGIC_OPT: u64 = 0x0003_e889_0455_65a9;
/// Magic of transmission requests.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of simple replies.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of structured reply chunks.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flags (server).
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;

/// Client flags.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;
pub const CLIENT_FLAGS_KNOWN: u32 = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES;

/// Transmission flags.
pub mod tflag {
    pub const HAS_FLAGS: u16 = 1 << 0;
    pub const READ_ONLY: u16 = 1 << 1;
    pub const SEND_FLUSH: u16 = 1 << 2;
    pub const SEND_FUA: u16 = 1 << 3;
    pub const ROTATIONAL: u16 = 1 << 4;
    pub const SEND_TRIM: u16 = 1 << 5;
    pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
    pub const SEND_DF: u16 = 1 << 7;
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
    pub const SEND_CACHE: u16 = 1 << 10;
    pub const SEND_FAST_ZERO: u16 = 1 << 11;
}

/// Command flags.
pub mod cflag {
    pub const FUA: u16 = 1 << 0;
    pub const NO_HOLE: u16 = 1 << 1;
    pub const DF: u16 = 1 << 2;
    pub const REQ_ONE: u16 = 1 << 3;
    pub const FAST_ZERO: u16 = 1 << 4;
}

/// Structured reply flag: last chunk of a reply.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;

/// Structured reply chunk types.
pub mod chunk {
    pub const NONE: u16 = 0;
    pub const OFFSET_DATA: u16 = 1;
    pub const OFFSET_HOLE: u16 = 2;
    pub const BLOCK_STATUS: u16 = 5;
    pub const ERROR: u16 = (1 << 15) + 1;
    pub const ERROR_OFFSET: u16 = (1 << 15) + 2;
}

/// Wire error values (`NBD_E*`).
pub mod errno {
    pub const EPERM: u32 = 1;
    pub const EIO: u32 = 5;
    pub const ENOMEM: u32 = 12;
    pub const EINVAL: u32 = 22;
    pub const ENOSPC: u32 = 28;
    pub const EOVERFLOW: u32 = 75;
    pub const ENOTSUP: u32 = 95;
    pub const ESHUTDOWN: u32 = 108;
}

/// Option reply types.
pub mod rep {
    pub const ACK: u32 = 1;
    pub const SERVER: u32 = 2;
    pub const INFO: u32 = 3;
    pub const META_CONTEXT: u32 = 4;
    const ERR: u32 = 1 << 31;
    pub const ERR_UNSUP: u32 = ERR + 1;
    pub const ERR_POLICY: u32 = ERR + 2;
    pub const ERR_INVALID: u32 = ERR + 3;
    pub const ERR_PLATFORM: u32 = ERR + 4;
    pub const ERR_TLS_REQD: u32 = ERR + 5;
    pub const ERR_UNKNOWN: u32 = ERR + 6;
    pub const ERR_SHUTDOWN: u32 = ERR + 7;
    pub const ERR_BLOCK_SIZE_REQD: u32 = ERR + 8;
    pub const ERR_TOO_BIG: u32 = ERR + 9;
}

/// `NBD_INFO_*` information types.
pub mod info {
    pub const EXPORT: u16 = 0;
    pub const NAME: u16 = 1;
    pub const DESCRIPTION: u16 = 2;
    pub const BLOCK_SIZE: u16 = 3;
}

/// The allocation metadata context.
pub const META_BASE_ALLOCATION: &str = "base:allocation";
/// The prefix of qemu's changed-block contexts, `qemu:dirty-bitmap:NAME`:
/// an export offers one per bitmap of its [`super::Export`].
pub const META_DIRTY_PREFIX: &str = "qemu:dirty-bitmap:";
/// The flag of a changed extent in a `qemu:dirty-bitmap:` context.
pub const STATE_DIRTY: u32 = 1;

/// An option sent during haggling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opt {
    ExportName,
    Abort,
    List,
    StartTls,
    Info,
    Go,
    StructuredReply,
    ListMetaContext,
    SetMetaContext,
    Unknown(u32),
}

impl Opt {
    pub fn from_wire(v: u32) -> Opt {
        match v {
            1 => Opt::ExportName,
            2 => Opt::Abort,
            3 => Opt::List,
            5 => Opt::StartTls,
            6 => Opt::Info,
            7 => Opt::Go,
            8 => Opt::StructuredReply,
            9 => Opt::ListMetaContext,
            10 => Opt::SetMetaContext,
            other => Opt::Unknown(other),
        }
    }

    pub fn to_wire(self) -> u32 {
        match self {
            Opt::ExportName => 1,
            Opt::Abort => 2,
            Opt::List => 3,
            Opt::StartTls => 5,
            Opt::Info => 6,
            Opt::Go => 7,
            Opt::StructuredReply => 8,
            Opt::ListMetaContext => 9,
            Opt::SetMetaContext => 10,
            Opt::Unknown(v) => v,
        }
    }
}

/// A transmission command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    Read,
    Write,
    Disc,
    Flush,
    Trim,
    Cache,
    WriteZeroes,
    BlockStatus,
    Unknown(u16),
}

impl Cmd {
    pub fn from_wire(v: u16) -> Cmd {
        match v {
            0 => Cmd::Read,
            1 => Cmd::Write,
            2 => Cmd::Disc,
            3 => Cmd::Flush,
            4 => Cmd::Trim,
            5 => Cmd::Cache,
            6 => Cmd::WriteZeroes,
            7 => Cmd::BlockStatus,
            other => Cmd::Unknown(other),
        }
    }

    pub fn to_wire(self) -> u16 {
        match self {
            Cmd::Read => 0,
            Cmd::Write => 1,
            Cmd::Disc => 2,
            Cmd::Flush => 3,
            Cmd::Trim => 4,
            Cmd::Cache => 5,
            Cmd::WriteZeroes => 6,
            Cmd::BlockStatus => 7,
            Cmd::Unknown(v) => v,
        }
    }

    /// The command flags a client may set on this command (FUA is valid
    /// on every command, per the spec; DF only once structured replies
    /// are on).
    pub fn allowed_flags(self, structured: bool) -> u16 {
        match self {
            Cmd::Read if structured => cflag::FUA | cflag::DF,
            Cmd::WriteZeroes => cflag::FUA | cflag::NO_HOLE | cflag::FAST_ZERO,
            Cmd::BlockStatus => cflag::FUA | cflag::REQ_ONE,
            _ => cflag::FUA,
        }
    }

    /// Whether the command changes data (refused on read-only exports).
    pub fn writes(self) -> bool {
        matches!(self, Cmd::Write | Cmd::Trim | Cmd::WriteZeroes)
    }

    pub fn name(self) -> &'static str {
        match self {
            Cmd::Read => "read",
            Cmd::Write => "write",
            Cmd::Disc => "disconnect",
            Cmd::Flush => "flush",
            Cmd::Trim => "trim",
            Cmd::Cache => "cache",
            Cmd::WriteZeroes => "write-zeroes",
            Cmd::BlockStatus => "block-status",
            Cmd::Unknown(_) => "unknown command",
        }
    }
}

/// The wire errno for an internal error kind: the one mapping of the
/// server. `fast_zero` says the request was a WRITE_ZEROES with FAST_ZERO,
/// the only request for which the spec lets a server answer `ENOTSUP`.
pub fn wire_errno(kind: ErrorKind, fast_zero: bool) -> u32 {
    match kind {
        ErrorKind::Io => errno::EIO,
        ErrorKind::OutOfRange | ErrorKind::Invalid => errno::EINVAL,
        ErrorKind::NoSpace => errno::ENOSPC,
        ErrorKind::ReadOnly => errno::EPERM,
        ErrorKind::Unsupported if fast_zero => errno::ENOTSUP,
        ErrorKind::Shutdown => errno::ESHUTDOWN,
        ErrorKind::Unsupported
        | ErrorKind::NotFound
        | ErrorKind::Conflict
        | ErrorKind::Corrupt
        | ErrorKind::Unavailable => errno::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_every_value() {
        for v in 0..=u16::MAX {
            assert_eq!(Cmd::from_wire(v).to_wire(), v);
        }
        for v in (0..64).chain([u32::MAX, 1 << 31]) {
            assert_eq!(Opt::from_wire(v).to_wire(), v);
        }
    }

    #[test]
    fn errno_mapping() {
        assert_eq!(wire_errno(ErrorKind::Io, false), errno::EIO);
        assert_eq!(wire_errno(ErrorKind::OutOfRange, false), errno::EINVAL);
        assert_eq!(wire_errno(ErrorKind::Invalid, false), errno::EINVAL);
        assert_eq!(wire_errno(ErrorKind::NoSpace, false), errno::ENOSPC);
        assert_eq!(wire_errno(ErrorKind::ReadOnly, false), errno::EPERM);
        assert_eq!(wire_errno(ErrorKind::Unsupported, true), errno::ENOTSUP);
        assert_eq!(wire_errno(ErrorKind::Unsupported, false), errno::EIO);
        assert_eq!(wire_errno(ErrorKind::Shutdown, false), errno::ESHUTDOWN);
        assert_eq!(wire_errno(ErrorKind::Corrupt, false), errno::EIO);
    }
}
