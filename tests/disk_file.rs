//! The file disk engines (io_uring and synchronous) against real files.

use ferrosan::blockdev::{BlockDev, ZeroFlags, read_vec, status, write_slice};
use ferrosan::disk::{FileDisk, Label, OpenOptions};
use ferrosan::{ErrorKind, IoBuf, rt};

fn label(size: u64) -> Label {
    Label {
        pool_id: [7; 16],
        disk_id: [9; 16],
        data_offset: ferrosan::disk::DATA_OFFSET,
        data_size: size,
        seq: 1,
        name: "d0".into(),
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn exercise(disk: &FileDisk) {
    rt::block_on(async {
        let data = pattern(64 * 1024, 3);
        write_slice(disk, 4096, &data, false).await.unwrap();
        assert_eq!(read_vec(disk, 4096, data.len()).await.unwrap(), data);
        disk.flush().await.unwrap();
        // Many in flight at once.
        let futs: Vec<_> = (0..64u64)
            .map(|i| {
                let d = pattern(4096, i as u8);
                async move {
                    let (_, r) = disk
                        .write((1 << 20) | (i * 4096), IoBuf::from_slice(&d), i % 7 == 0)
                        .await;
                    r
                }
            })
            .collect();
        for r in futures::future::join_all(futs).await {
            r.unwrap();
        }
        for i in 0..64u64 {
            assert_eq!(
                read_vec(disk, (1 << 20) | (i * 4096), 4096).await.unwrap(),
                pattern(4096, i as u8)
            );
        }
        // Out of range is refused, not performed.
        let (_, r) = disk.read(disk.size() - 512, IoBuf::new(1024)).await;
        assert_eq!(r.unwrap_err().kind(), ErrorKind::OutOfRange);
        // Punch and status.
        disk.write_zeroes(
            0,
            1 << 20,
            ZeroFlags {
                may_unmap: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(read_vec(disk, 4096, 4096).await.unwrap(), vec![0; 4096]);
        let st = disk.block_status(0, 2 << 20).await.unwrap();
        assert_eq!(st[0].flags, status::HOLE | status::ZERO, "{st:?}");
        assert_eq!(st[0].len, 1 << 20, "{st:?}");
        assert_eq!(st[1].flags, 0, "{st:?}");
    });
}

#[test]
fn uring_and_sync_engines_read_back_what_they_wrote() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let p = dir.path().join("d0");
    let disk = FileDisk::create(&p, 8 << 20, &label(8 << 20), OpenOptions::default()).unwrap();
    exercise(&disk);
    // Without a ring (a plain runtime) the synchronous engine serves.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        write_slice(&disk, 0, &pattern(8192, 5), true)
            .await
            .unwrap();
        assert_eq!(read_vec(&disk, 0, 8192).await.unwrap(), pattern(8192, 5));
    });
    drop(disk);
    let (disk, l) = FileDisk::open(&p, OpenOptions::default()).unwrap();
    assert_eq!(l, label(8 << 20));
    rt::block_on(async {
        assert_eq!(read_vec(&disk, 0, 8192).await.unwrap(), pattern(8192, 5));
    });
}

#[test]
fn open_refuses_truncated_and_foreign_files() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let p = dir.path().join("d0");
    drop(FileDisk::create(&p, 8 << 20, &label(8 << 20), OpenOptions::default()).unwrap());
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(4 << 20).unwrap();
    let e = FileDisk::open(&p, OpenOptions::default()).unwrap_err();
    assert!(e.message().contains("truncated"), "{e}");
    let q = dir.path().join("junk");
    std::fs::write(&q, vec![0xabu8; 4 << 20]).unwrap();
    let e = FileDisk::open(&q, OpenOptions::default()).unwrap_err();
    assert!(e.message().contains("not a ferrosan disk"), "{e}");
    let e = FileDisk::open(&dir.path().join("nope"), OpenOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[test]
fn preallocate_reserves_blocks_and_changes_no_data() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let p = dir.path().join("d0");
    let disk = FileDisk::create(&p, 16 << 20, &label(16 << 20), OpenOptions::default()).unwrap();
    let blocks = || std::fs::metadata(&p).unwrap().blocks() * 512;
    rt::block_on(async {
        write_slice(&disk, 1 << 20, &pattern(8192, 9), true)
            .await
            .unwrap();
        let before = blocks();
        disk.preallocate(0, 8 << 20).await.unwrap();
        let after = blocks();
        assert!(
            after >= before + (7 << 20),
            "8 MiB reserved: {before} -> {after} bytes allocated"
        );
        // Nothing reads differently: the data stays, the rest reads zeroes.
        assert_eq!(
            read_vec(&disk, 1 << 20, 8192).await.unwrap(),
            pattern(8192, 9)
        );
        assert_eq!(read_vec(&disk, 4 << 20, 4096).await.unwrap(), vec![0; 4096]);
        let e = disk.preallocate(12 << 20, 8 << 20).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfRange);
    });
}
