//! The one error type of ferrosan: a small stable kind, a message with
//! context, and the source.
//!
//! Layers decide by [`ErrorKind`] (RAID fails a member on `Io`, NBD maps a
//! kind to a wire errno in one place, the API maps it to an HTTP status);
//! the message carries the context a human needs (disk name, offset, what
//! to do) and never repeats the source, which rides along for logs.

#![forbid(unsafe_code)]

use std::fmt;

/// What went wrong, in the terms every layer decides by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A disk returned an I/O error (or vanished).
    Io,
    /// Offset or length outside the device.
    OutOfRange,
    /// A request that is malformed or not allowed in this state.
    Invalid,
    /// No space left (a disk file could not grow, a copy area is full).
    NoSpace,
    /// Writing to something read-only.
    ReadOnly,
    /// The thing named does not exist.
    NotFound,
    /// The thing named already exists, or is in use.
    Conflict,
    /// Stored data fails its checks (bad magic, checksum, version).
    Corrupt,
    /// The operation is not supported here (for example a fast zero that
    /// would not be fast).
    Unsupported,
    /// The daemon is shutting down.
    Shutdown,
    /// Too many redundant members are missing: data cannot be served.
    Unavailable,
}

/// The ferrosan error: kind + message + optional source.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    msg: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, msg: impl Into<String>) -> Error {
        Error {
            kind,
            msg: msg.into(),
            source: None,
        }
    }

    pub fn with_source(
        kind: ErrorKind,
        msg: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error {
            kind,
            msg: msg.into(),
            source: Some(Box::new(source)),
        }
    }

    /// An I/O error from the OS, with what was being done.
    pub fn io(msg: impl Into<String>, source: std::io::Error) -> Error {
        let kind = match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => ErrorKind::NoSpace,
            Some(libc::EOPNOTSUPP) => ErrorKind::Unsupported,
            _ => ErrorKind::Io,
        };
        Error::with_source(kind, msg, source)
    }

    pub fn invalid(msg: impl Into<String>) -> Error {
        Error::new(ErrorKind::Invalid, msg)
    }

    pub fn not_found(msg: impl Into<String>) -> Error {
        Error::new(ErrorKind::NotFound, msg)
    }

    pub fn conflict(msg: impl Into<String>) -> Error {
        Error::new(ErrorKind::Conflict, msg)
    }

    pub fn out_of_range(off: u64, len: u64, size: u64) -> Error {
        Error::new(
            ErrorKind::OutOfRange,
            format!("range {off}+{len} is outside the device of {size} bytes"),
        )
    }

    pub fn corrupt(msg: impl Into<String>) -> Error {
        Error::new(ErrorKind::Corrupt, msg)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.msg
    }

    /// Adds context in front of the message: "context: message".
    pub fn context(mut self, ctx: impl fmt::Display) -> Error {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }

    /// The message followed by the chain of sources, for logs and the API.
    pub fn chain(&self) -> String {
        let mut s = self.msg.clone();
        let mut src: Option<&(dyn std::error::Error + 'static)> = self
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static));
        while let Some(e) = src {
            s.push_str(": ");
            s.push_str(&e.to_string());
            src = e.source();
        }
        s
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl Clone for Error {
    /// Clones kind and message; the source is folded into the message.
    fn clone(&self) -> Error {
        Error::new(self.kind, self.chain())
    }
}

/// Checks that `off..off+len` lies within `size`, without overflow.
pub fn check_range(off: u64, len: u64, size: u64) -> Result<()> {
    match off.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::out_of_range(off, len, size)),
    }
}
