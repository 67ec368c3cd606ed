//! A disk backed by a file or a block device, opened with O_DIRECT like a
//! real array drives its disks.
//!
//! The data area starts at the label's `data_offset`; offsets given to the
//! [`BlockDev`] methods are relative to it. I/O goes through this thread's
//! io_uring ring when it has one ([`super::uring`]) and through the
//! synchronous engine otherwise ([`super::sync`]).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{FallocateFlags, FileType, Mode, OFlags, SeekFrom};

use super::identity::{Identity, identity_of, lock_exclusive, lock_exclusive_waiting};
use super::label::{DATA_OFFSET, LABEL_COPIES, LABEL_SIZE, Label};
use super::sync;
use super::uring::{self, Completion, Op};
use crate::blockdev::{BlockDev, BufResult, DevFuture, Extent, ZeroFlags, status};
use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result, check_range};

/// An open file or block device.
pub struct FileDisk {
    path: PathBuf,
    fd: Arc<OwnedFd>,
    data_offset: u64,
    size: u64,
    is_block: bool,
    align: u32,
}

/// How to open a disk.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// Use O_DIRECT (the default; tests on tmpfs turn it off).
    pub direct: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { direct: true }
    }
}

fn open_fd(path: &Path, create: bool, direct: bool) -> std::io::Result<OwnedFd> {
    let mut flags = OFlags::RDWR | OFlags::CLOEXEC;
    if create {
        flags |= OFlags::CREATE | OFlags::EXCL;
    }
    if direct {
        flags |= OFlags::DIRECT;
    }
    match rustix::fs::open(path, flags, Mode::from_raw_mode(0o600)) {
        Ok(fd) => Ok(fd),
        // tmpfs and some filesystems refuse O_DIRECT: fall back to buffered
        // I/O (flush still means fdatasync).
        Err(rustix::io::Errno::INVAL) if direct => {
            tracing::warn!(
                "{} does not support O_DIRECT; using buffered I/O",
                path.display()
            );
            open_fd(path, false, false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Size in bytes of an open file or block device.
fn device_size(fd: &OwnedFd) -> std::io::Result<(u64, bool)> {
    let st = rustix::fs::fstat(fd)?;
    let ft = FileType::from_raw_mode(st.st_mode);
    if ft == FileType::BlockDevice {
        let end = rustix::fs::seek(fd, SeekFrom::End(0))?;
        Ok((end, true))
    } else if ft == FileType::RegularFile {
        Ok((u64::try_from(st.st_size).unwrap_or(0), false))
    } else {
        Err(std::io::Error::other("not a regular file or block device"))
    }
}

fn dio_align(fd: &OwnedFd) -> u32 {
    match rustix::fs::statx(
        fd,
        "",
        rustix::fs::AtFlags::EMPTY_PATH,
        rustix::fs::StatxFlags::DIOALIGN,
    ) {
        Ok(st) if st.stx_dio_offset_align.is_power_of_two() => st.stx_dio_offset_align.max(512),
        _ => 512,
    }
}

/// How long opening a disk waits for a daemon that just died to let go
/// of it (see [`lock_exclusive_waiting`]).
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

impl FileDisk {
    /// Creates a sparse file of `data_size` bytes of data area plus the
    /// label area, and writes `label` into it.
    pub fn create(
        path: &Path,
        data_size: u64,
        label: &Label,
        opts: OpenOptions,
    ) -> Result<FileDisk> {
        let what = path.display().to_string();
        let fd = open_fd(path, true, opts.direct)
            .map_err(|e| Error::io(format!("cannot create disk file {what}"), e))?;
        lock_exclusive(&fd, path)?;
        let total = DATA_OFFSET + data_size;
        if let Err(e) = rustix::fs::ftruncate(&fd, total) {
            let _ = std::fs::remove_file(path);
            return Err(match e {
                // The size, not the machine: the filesystem's file size limit.
                rustix::io::Errno::FBIG | rustix::io::Errno::INVAL => Error::invalid(format!(
                    "a disk file of {} is larger than the filesystem of {what} allows: give a smaller --size",
                    crate::units::format_size(total)
                )),
                e => Error::io(format!("cannot size disk file {what}"), e.into()),
            });
        }
        let disk = FileDisk {
            path: path.to_path_buf(),
            align: dio_align(&fd),
            fd: Arc::new(fd),
            data_offset: DATA_OFFSET,
            size: data_size,
            is_block: false,
        };
        if let Err(e) = disk.write_label_sync(label) {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Ok(disk)
    }

    /// Adopts an existing file or block device: labels it for this pool.
    /// The data area is whatever follows the label area.
    pub fn adopt(
        path: &Path,
        label_for: impl FnOnce(u64) -> Label,
        opts: OpenOptions,
    ) -> Result<FileDisk> {
        let what = path.display().to_string();
        let fd = open_fd(path, false, opts.direct)
            .map_err(|e| Error::io(format!("cannot open {what}"), e))?;
        lock_exclusive(&fd, path)?;
        let (total, is_block) =
            device_size(&fd).map_err(|e| Error::io(format!("cannot size {what}"), e))?;
        if total < DATA_OFFSET * 2 {
            return Err(Error::invalid(format!(
                "{what} is {}; a disk needs at least 2 MiB",
                crate::units::format_exact(total)
            )));
        }
        let data_size = (total - DATA_OFFSET) / (1 << 20) * (1 << 20);
        let label = label_for(data_size);
        let disk = FileDisk {
            path: path.to_path_buf(),
            align: dio_align(&fd),
            fd: Arc::new(fd),
            data_offset: DATA_OFFSET,
            size: data_size,
            is_block,
        };
        disk.write_label_sync(&label)?;
        Ok(disk)
    }

    /// Opens a labelled disk and returns it with its label. Checks that the
    /// device still holds the whole data area (a truncated file is
    /// refused).
    pub fn open(path: &Path, opts: OpenOptions) -> Result<(FileDisk, Label)> {
        let what = path.display().to_string();
        let fd = open_fd(path, false, opts.direct).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::new(ErrorKind::NotFound, format!("{what} is missing"))
            } else {
                Error::io(format!("cannot open {what}"), e)
            }
        })?;
        lock_exclusive_waiting(&fd, path, LOCK_PATIENCE)?;
        let (total, is_block) =
            device_size(&fd).map_err(|e| Error::io(format!("cannot size {what}"), e))?;
        let mut disk = FileDisk {
            path: path.to_path_buf(),
            align: dio_align(&fd),
            fd: Arc::new(fd),
            data_offset: DATA_OFFSET,
            size: 0,
            is_block,
        };
        let raw = disk.read_raw_sync(0, LABEL_COPIES * LABEL_SIZE)?;
        let label = Label::decode_copies(&raw).map_err(|p| p.into_error(&what))?;
        if label.data_offset < DATA_OFFSET || label.data_offset % u64::from(disk.align) != 0 {
            return Err(Error::corrupt(format!(
                "{what} has a label with an impossible data offset {}",
                label.data_offset
            )));
        }
        let need = label.data_offset.saturating_add(label.data_size);
        if total < need {
            return Err(Error::corrupt(format!(
                "{what} is truncated: it holds {} but its label needs {}",
                crate::units::format_exact(total),
                crate::units::format_exact(need)
            )));
        }
        disk.data_offset = label.data_offset;
        disk.size = label.data_size;
        Ok((disk, label))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the open file or device is, whatever path named it.
    pub fn identity(&self) -> Result<Identity> {
        identity_of(&*self.fd)
    }

    pub fn is_block_device(&self) -> bool {
        self.is_block
    }

    /// Bytes of the data area actually allocated on the backing file.
    pub fn allocated_bytes(&self) -> u64 {
        match rustix::fs::fstat(&*self.fd) {
            Ok(st) if !self.is_block => u64::try_from(st.st_blocks).unwrap_or(0) * 512,
            _ => self.size,
        }
    }

    /// Rewrites both label copies (synchronously, durably).
    pub fn write_label_sync(&self, label: &Label) -> Result<()> {
        let mut buf = IoBuf::new(LABEL_COPIES * LABEL_SIZE);
        let enc = label.encode();
        for i in 0..LABEL_COPIES {
            buf.as_mut_slice()[i * LABEL_SIZE..(i + 1) * LABEL_SIZE].copy_from_slice(&enc);
        }
        let what = self.path.display();
        let mut done = 0;
        while done < buf.len() {
            let n = rustix::io::pwrite(&*self.fd, &buf.as_slice()[done..], done as u64)
                .map_err(|e| Error::io(format!("cannot write the label of {what}"), e.into()))?;
            if n == 0 {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!("short label write on {what}"),
                ));
            }
            done += n;
        }
        rustix::fs::fdatasync(&*self.fd)
            .map_err(|e| Error::io(format!("cannot sync the label of {what}"), e.into()))
    }

    fn read_raw_sync(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = IoBuf::new(len);
        let mut done = 0;
        while done < len {
            let n = rustix::io::pread(
                &*self.fd,
                &mut buf.as_mut_slice()[done..],
                off + done as u64,
            )
            .map_err(|e| Error::io(format!("cannot read {}", self.path.display()), e.into()))?;
            if n == 0 {
                return Err(Error::corrupt(format!(
                    "{} is too small to hold a ferrosan label",
                    self.path.display()
                )));
            }
            done += n;
        }
        Ok(buf.as_slice().to_vec())
    }

    fn err(&self, what: &str, off: u64, res: i32) -> Error {
        Error::io(
            format!("{what} at {off} on {} failed", self.path.display()),
            std::io::Error::from_raw_os_error(-res),
        )
    }

    /// [`BlockDev::read`] awaited in place (see [`BlockDev::as_any`]).
    pub async fn read_inline(&self, off: u64, buf: IoBuf) -> BufResult {
        self.rw(off, buf, None).await
    }

    /// [`BlockDev::write`] awaited in place.
    pub async fn write_inline(&self, off: u64, buf: IoBuf, fua: bool) -> BufResult {
        self.rw(off, buf, Some(fua)).await
    }

    async fn rw(&self, off: u64, buf: IoBuf, write: Option<bool>) -> BufResult {
        if let Err(e) = check_range(off, buf.len() as u64, self.size) {
            return (buf, Err(e));
        }
        let what = if write.is_some() { "write" } else { "read" };
        let mut pos = self.data_offset + off;
        let mut done_part: Option<IoBuf> = None;
        let mut rest = buf;
        loop {
            let op = match write {
                None => Op::Read {
                    off: pos,
                    buf: rest,
                },
                Some(dsync) => Op::Write {
                    off: pos,
                    buf: rest,
                    dsync,
                },
            };
            let Completion { res, buf } = match uring::current() {
                Some(ring) => ring.submit(&self.fd, op).await,
                None => sync::run(Arc::clone(&self.fd), op).await,
            };
            let Some(b) = buf else {
                let b = IoBuf::new(0);
                return (b, Err(self.err(what, pos, -libc::EIO)));
            };
            let joined = |done: Option<IoBuf>, b: IoBuf| match done {
                None => b,
                Some(d) => IoBuf::join(vec![d, b]),
            };
            if res < 0 {
                return (joined(done_part, b), Err(self.err(what, pos, res)));
            }
            let n = usize::try_from(res).unwrap_or(0);
            if n >= b.len() {
                return (joined(done_part, b), Ok(()));
            }
            if n == 0 {
                let e = Error::new(
                    ErrorKind::Io,
                    format!(
                        "{what} at {pos} on {} hit the end of the device",
                        self.path.display()
                    ),
                );
                return (joined(done_part, b), Err(e));
            }
            // Short transfer: keep what is done, go on with the rest.
            let (d, r) = b.split_at(n);
            done_part = Some(joined(done_part, d));
            rest = r;
            pos += n as u64;
        }
    }

    async fn fsync(&self) -> Result<()> {
        let Completion { res, .. } = match uring::current() {
            Some(ring) => ring.submit(&self.fd, Op::Fsync).await,
            None => sync::run(Arc::clone(&self.fd), Op::Fsync).await,
        };
        if res < 0 {
            return Err(self.err("flush", 0, res));
        }
        Ok(())
    }

    async fn fallocate(&self, mode: FallocateFlags, off: u64, len: u64) -> Result<()> {
        let op = Op::Fallocate {
            mode: mode.bits() as i32,
            off: self.data_offset + off,
            len,
        };
        let Completion { res, .. } = match uring::current() {
            Some(ring) => ring.submit(&self.fd, op).await,
            None => sync::run(Arc::clone(&self.fd), op).await,
        };
        if res < 0 {
            return Err(self.err("fallocate", off, res));
        }
        Ok(())
    }

    fn status(&self, off: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(off, len, self.size)?;
        if self.is_block {
            return Ok(vec![Extent { len, flags: 0 }]);
        }
        let end = off + len;
        let mut out = Vec::new();
        let mut pos = off;
        while pos < end {
            let abs = self.data_offset + pos;
            let data = match rustix::fs::seek(&*self.fd, SeekFrom::Data(abs)) {
                Ok(d) => d,
                // ENXIO: no data at or after `abs`: the rest is a hole.
                Err(rustix::io::Errno::NXIO) => self.data_offset + end,
                Err(_) => return Ok(crate::blockdev::coalesce(fallback(out, end - pos))),
            };
            let data_rel = (data - self.data_offset).min(end);
            if data_rel > pos {
                out.push(Extent {
                    len: data_rel - pos,
                    flags: status::HOLE | status::ZERO,
                });
                pos = data_rel;
                continue;
            }
            let hole = match rustix::fs::seek(&*self.fd, SeekFrom::Hole(abs)) {
                Ok(h) => h,
                Err(_) => return Ok(crate::blockdev::coalesce(fallback(out, end - pos))),
            };
            let hole_rel = (hole.saturating_sub(self.data_offset))
                .min(end)
                .max(pos + 1);
            out.push(Extent {
                len: hole_rel - pos,
                flags: 0,
            });
            pos = hole_rel;
        }
        Ok(crate::blockdev::coalesce(out))
    }
}

fn fallback(mut out: Vec<Extent>, rest: u64) -> Vec<Extent> {
    out.push(Extent {
        len: rest,
        flags: 0,
    });
    out
}

impl BlockDev for FileDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn block_size(&self) -> u32 {
        self.align
    }

    fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
        Box::pin(self.rw(off, buf, None))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        Box::pin(self.rw(off, buf, Some(fua)))
    }

    fn flush(&self) -> DevFuture<'_, Result<()>> {
        Box::pin(self.fsync())
    }

    fn discard(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            check_range(off, len, self.size)?;
            let mode = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
            match self.fallocate(mode, off, len).await {
                // Discard is advisory: a device that cannot is not an error.
                Err(e) if e.kind() == ErrorKind::Unsupported => Ok(()),
                r => r,
            }
        })
    }

    fn preallocate(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            check_range(off, len, self.size)?;
            if self.is_block {
                return Ok(());
            }
            // Mode 0 allocates the holes (as unwritten extents) and leaves
            // every written block as it is.
            match self.fallocate(FallocateFlags::KEEP_SIZE, off, len).await {
                Err(e) if e.kind() == ErrorKind::Unsupported => Ok(()),
                r => r,
            }
        })
    }

    fn write_zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            check_range(off, len, self.size)?;
            let mode = if flags.may_unmap {
                FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE
            } else {
                FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE
            };
            match self.fallocate(mode, off, len).await {
                Ok(()) => {
                    if flags.fua {
                        self.fsync().await?;
                    }
                    Ok(())
                }
                Err(e) if e.kind() == ErrorKind::Unsupported => {
                    crate::blockdev::write_zeroes_by_writing(self, off, len, flags).await
                }
                Err(e) => Err(e),
            }
        })
    }

    fn block_status(&self, off: u64, len: u64) -> DevFuture<'_, Result<Vec<Extent>>> {
        let r = self.status(off, len);
        Box::pin(async move { r })
    }
}

impl std::fmt::Debug for FileDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileDisk")
            .field("path", &self.path)
            .field("size", &self.size)
            .finish()
    }
}
