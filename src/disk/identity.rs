//! What a disk *is*, whatever path names it: the checks `disk add` makes
//! before it writes a label.
//!
//! A path is a poor name for a disk: a relative path, a symlink, a hard
//! link, a bind mount, `/dev/disk/by-id/...` and a loop device over a file
//! all reach the same blocks. So a disk is identified by
//! - its [`Identity`]: `(st_dev, st_ino)` of a file, the `dev_t` of a block
//!   device and the whole disk it is a partition of;
//! - its label (which pool, which disk), read without taking the disk's
//!   lock;
//! - and, for every open disk, an exclusive `flock` held for as long as the
//!   pool has it open ([`lock_exclusive`]), so a second pool (or a second
//!   path into this one) cannot open it at all.
//!
//! [`first_data`] looks where other software keeps its signatures (the
//! first MiB: partition tables, filesystem superblocks, LVM and md
//! labels; the last 128 KiB: md 0.90/1.0 superblocks and the GPT backup),
//! so a file or device holding data is not overwritten without `--force`.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{FileType, FlockOperation, Mode, OFlags, Stat};

use super::label::{LABEL_COPIES, LABEL_SIZE, Label};
use crate::error::{Error, ErrorKind, Result};

/// Bytes at the start and at the end of a device where other software
/// keeps its signatures.
const HEAD: u64 = 1 << 20;
const TAIL: u64 = 128 << 10;

/// What a file or block device is, independent of the path that named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// A regular file: (device of its filesystem, inode).
    file: Option<(u64, u64)>,
    /// A block device: its dev_t, and the dev_t of the whole disk when it
    /// is a partition (else the same).
    block: Option<(u64, u64)>,
}

impl Identity {
    fn of(st: &Stat) -> Identity {
        let ft = FileType::from_raw_mode(st.st_mode);
        if ft == FileType::BlockDevice {
            let rdev = st.st_rdev;
            Identity {
                file: None,
                block: Some((rdev, whole_disk(rdev).unwrap_or(rdev))),
            }
        } else {
            Identity {
                file: Some((st.st_dev, st.st_ino)),
                block: None,
            }
        }
    }

    /// Whether writing one can change what the other holds: the same file,
    /// the same device, or a partition and its whole disk.
    pub fn overlaps(&self, other: &Identity) -> bool {
        match (self.block, other.block) {
            (Some((a, wa)), Some((b, wb))) => a == b || (wa == wb && (a == wa || b == wb)),
            (None, None) => self.file.is_some() && self.file == other.file,
            _ => false,
        }
    }
}

/// The whole disk a partition belongs to (sysfs), if `rdev` is one.
fn whole_disk(rdev: u64) -> Option<u64> {
    let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    let sys = format!("/sys/dev/block/{major}:{minor}");
    std::fs::metadata(format!("{sys}/partition")).ok()?;
    let parent = std::fs::read_to_string(format!("{sys}/../dev")).ok()?;
    let (ma, mi) = parent.trim().split_once(':')?;
    Some(rustix::fs::makedev(ma.parse().ok()?, mi.parse().ok()?))
}

/// What `path` is (symlinks followed), and whether it is a block device.
/// A path that does not exist, a directory or anything but a regular file
/// or block device is refused as the caller's mistake.
pub fn identify(path: &Path) -> Result<(Identity, bool)> {
    let what = path.display();
    let st = rustix::fs::stat(path).map_err(|e| match e {
        rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR => Error::invalid(format!(
            "{what} does not exist: give the path of a file or block device"
        )),
        e => Error::io(format!("cannot look at {what}"), e.into()),
    })?;
    let ft = FileType::from_raw_mode(st.st_mode);
    match ft {
        FileType::RegularFile | FileType::BlockDevice => {
            Ok((Identity::of(&st), ft == FileType::BlockDevice))
        }
        FileType::Directory => Err(Error::invalid(format!(
            "{what} is a directory: give the path of a file or block device"
        ))),
        _ => Err(Error::invalid(format!(
            "{what} is not a regular file or block device"
        ))),
    }
}

/// The identity of an open disk.
pub fn identity_of(fd: impl AsFd) -> Result<Identity> {
    let st = rustix::fs::fstat(fd).map_err(|e| Error::io("cannot stat a disk", e.into()))?;
    Ok(Identity::of(&st))
}

/// [`lock_exclusive`], waiting up to `patience` for a holder to let go.
/// Opening a pool's disks uses it: a daemon killed a moment ago may still
/// hold the lock while the kernel tears down its io_uring instances (their
/// requests in flight keep the files open after the process has gone).
pub fn lock_exclusive_waiting(
    fd: &OwnedFd,
    path: &Path,
    patience: std::time::Duration,
) -> Result<()> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        match lock_exclusive(fd, path) {
            Err(e) if e.kind() == ErrorKind::Conflict && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Takes the exclusive lock every open disk holds; refuses if another open
/// file (another pool, another path into this one) holds it.
pub fn lock_exclusive(fd: &OwnedFd, path: &Path) -> Result<()> {
    match rustix::fs::flock(fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::conflict(format!(
            "{} is in use: another ferrosan daemon (or another disk of this pool) has it open",
            path.display()
        ))),
        // A filesystem without flock: the identity checks still hold.
        Err(rustix::io::Errno::NOLCK | rustix::io::Errno::OPNOTSUPP) => Ok(()),
        Err(e) => Err(Error::io(
            format!("cannot lock {}", path.display()),
            e.into(),
        )),
    }
}

fn open_read(path: &Path) -> Result<OwnedFd> {
    rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e.into()))
}

fn read_at(fd: &OwnedFd, off: u64, len: usize, path: &Path) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = rustix::io::pread(fd, &mut buf[done..], off + done as u64)
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e.into()))?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

fn size_of(fd: &OwnedFd) -> Result<u64> {
    rustix::fs::seek(fd, rustix::fs::SeekFrom::End(0))
        .map_err(|e| Error::io("cannot size a device", e.into()))
}

/// The ferrosan label on `path`, if it has a valid one. Reads without
/// O_DIRECT and without the disk lock, so it works on a disk in use.
pub fn read_label(path: &Path) -> Result<Option<Label>> {
    let fd = open_read(path)?;
    let raw = read_at(&fd, 0, LABEL_COPIES * LABEL_SIZE, path)?;
    Ok(Label::decode_copies(&raw).ok())
}

/// The offset of the first byte that is not zero where other software
/// keeps its signatures, if any.
pub fn first_data(path: &Path) -> Result<Option<u64>> {
    let fd = open_read(path)?;
    let size = size_of(&fd)?;
    let head = HEAD.min(size);
    let tail = size.saturating_sub(TAIL).max(head);
    for (off, len) in [(0, head), (tail, size - tail)] {
        let len = usize::try_from(len).map_err(|_| Error::new(ErrorKind::Invalid, "too large"))?;
        let buf = read_at(&fd, off, len, path)?;
        if let Some(i) = buf.iter().position(|&b| b != 0) {
            return Ok(Some(off + i as u64));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hard_link_and_a_symlink_are_the_same_disk_and_a_copy_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.img");
        std::fs::write(&a, [0u8; 4096]).unwrap();
        let hard = dir.path().join("hard.img");
        std::fs::hard_link(&a, &hard).unwrap();
        let soft = dir.path().join("soft.img");
        std::os::unix::fs::symlink(&a, &soft).unwrap();
        let copy = dir.path().join("copy.img");
        std::fs::copy(&a, &copy).unwrap();
        let (ia, block) = identify(&a).unwrap();
        assert!(!block);
        assert!(ia.overlaps(&identify(&hard).unwrap().0));
        assert!(ia.overlaps(&identify(&soft).unwrap().0));
        assert!(!ia.overlaps(&identify(&copy).unwrap().0));
    }

    #[test]
    fn partitions_overlap_their_whole_disk_but_not_each_other() {
        let whole = Identity {
            file: None,
            block: Some((10, 10)),
        };
        let p1 = Identity {
            file: None,
            block: Some((11, 10)),
        };
        let p2 = Identity {
            file: None,
            block: Some((12, 10)),
        };
        assert!(whole.overlaps(&p1) && p1.overlaps(&whole));
        assert!(p1.overlaps(&p1));
        assert!(!p1.overlaps(&p2));
        let file = Identity {
            file: Some((10, 10)),
            block: None,
        };
        assert!(!file.overlaps(&whole));
    }

    #[test]
    fn missing_paths_and_directories_are_the_callers_mistake() {
        let dir = tempfile::tempdir().unwrap();
        let e = identify(&dir.path().join("nope")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid);
        assert!(e.message().contains("does not exist"), "{e}");
        let e = identify(dir.path()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid);
        assert!(e.message().contains("is a directory"), "{e}");
    }

    #[test]
    fn data_is_found_at_the_head_and_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.img");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(64 << 20).unwrap();
        assert_eq!(first_data(&p).unwrap(), None);
        let fd = open_rw(&p);
        rustix::io::pwrite(&fd, b"x", (64 << 20) - 100).unwrap();
        assert_eq!(first_data(&p).unwrap(), Some((64 << 20) - 100));
        rustix::io::pwrite(&fd, b"y", 1080).unwrap();
        assert_eq!(first_data(&p).unwrap(), Some(1080));
    }

    #[test]
    fn a_second_lock_on_the_same_file_is_refused_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.img");
        std::fs::write(&p, [0u8; 512]).unwrap();
        let hard = dir.path().join("h.img");
        std::fs::hard_link(&p, &hard).unwrap();
        let a = open_rw(&p);
        lock_exclusive(&a, &p).unwrap();
        let b = open_rw(&hard);
        let e = lock_exclusive(&b, &hard).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert!(e.message().contains("h.img is in use"), "{e}");
        drop(a);
        lock_exclusive(&b, &hard).unwrap();
    }

    fn open_rw(p: &Path) -> OwnedFd {
        rustix::fs::open(p, OFlags::RDWR, Mode::empty()).unwrap()
    }
}
