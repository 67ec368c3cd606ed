use std::sync::Arc;

use super::intent::{IntentHandle, PersistentIntent};
use super::*;
use crate::engine::types::RaidLevelName;
use crate::stack::{DevFuture, WriteIntent};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn group(name: &str, object: u64) -> GroupRecord {
    GroupRecord {
        object,
        name: name.into(),
        level: RaidLevelName::Raid5,
        stripe_size: 65536,
        slots: vec![
            SlotRecord {
                disk: Some("d0".into()),
                state: SlotState::Ok,
            },
            SlotRecord {
                disk: None,
                state: SlotState::Failed,
            },
        ],
        member_sizes: vec![1 << 30, 1 << 30],
        intent_region: 4 << 20,
        created: 1,
    }
}

#[test]
fn records_survive_reopen() {
    let d = tmp();
    let p = d.path().join("pool.redb");
    let (m, created) = Meta::open(&p).unwrap();
    assert!(created);
    let g = group("g0", 3);
    m.write(true, |tx| tx.put_group(&g)).unwrap();
    let id = m.load().unwrap().pool.id;
    drop(m);
    let (m, created) = Meta::open(&p).unwrap();
    assert!(!created);
    let s = m.load().unwrap();
    assert_eq!(s.pool.id, id);
    assert_eq!(s.groups, vec![g]);
    m.write(true, |tx| tx.del_group("g0")).unwrap();
    assert!(m.load().unwrap().groups.is_empty());
}

#[test]
fn newer_format_is_refused() {
    let d = tmp();
    let p = d.path().join("pool.redb");
    drop(Meta::open(&p).unwrap());
    {
        let db = redb::Database::open(&p).unwrap();
        let t = db.begin_write().unwrap();
        t.open_table(POOL)
            .unwrap()
            .insert("format", 99u32.to_le_bytes().as_slice())
            .unwrap();
        t.commit().unwrap();
    }
    let e = Meta::open(&p).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert!(e.message().contains("newer ferrosan"), "{e}");
}

#[test]
fn damaged_record_names_itself() {
    let d = tmp();
    let p = d.path().join("pool.redb");
    drop(Meta::open(&p).unwrap());
    {
        let db = redb::Database::open(&p).unwrap();
        let t = db.begin_write().unwrap();
        t.open_table(DISKS)
            .unwrap()
            .insert("d7", b"{not json".as_slice())
            .unwrap();
        t.commit().unwrap();
    }
    let (m, _) = Meta::open(&p).unwrap();
    let e = m.load().unwrap_err();
    assert!(e.message().contains("\"d7\""), "{e}");
}

/// A fresh pool database for the write-intent tests (the directory lives
/// as long as the guard).
fn intent_db() -> (tempfile::TempDir, Arc<Meta>) {
    let d = tmp();
    let meta = Arc::new(Meta::open(&d.path().join("pool.redb")).unwrap().0);
    (d, meta)
}

#[test]
fn intent_marks_are_durable_before_the_write_and_clear_when_idle() {
    let (_d, meta) = intent_db();
    let region = 1 << 20;
    let (log, pending) = PersistentIntent::load(Arc::clone(&meta), 5, region).unwrap();
    assert!(pending.is_empty());
    let h = IntentHandle(Arc::clone(&log));
    crate::rt::block_on(async {
        // Many writers at once: all marks durable when they proceed.
        let futs: Vec<_> = (0..32u64)
            .map(|i| h.begin(i * region + 512, 4096))
            .collect();
        let guards: Vec<_> = futures::future::join_all(futs)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        // What the database holds right now (a crash here) covers all 32.
        let (_, on_disk) = PersistentIntent::load(Arc::clone(&meta), 5, region).unwrap();
        assert_eq!(on_disk, vec![(0, 32 * region)]);
        // Writes in flight: nothing is cleared.
        let flush: DevFuture<'_, Result<()>> = Box::pin(async { Ok(()) });
        assert_eq!(log.clear_idle(flush).await.unwrap(), 0);
        drop(guards);
        // Writes done, none begun since the last pass: cleared after the flush.
        let flush: DevFuture<'_, Result<()>> = Box::pin(async { Ok(()) });
        assert_eq!(log.clear_idle(flush).await.unwrap(), 32);
        // A new write marks again before it proceeds.
        let g = h.begin(3 * region, 512).await.unwrap();
        assert_eq!(log.marked(), vec![(3 * region, region)]);
        drop(g);
    });
    // Wait for the clear commit by loading until it shows (bounded).
    let (_, on_disk) = PersistentIntent::load(Arc::clone(&meta), 5, region).unwrap();
    assert!(on_disk.contains(&(3 * region, region)), "{on_disk:?}");
}

#[test]
fn held_regions_stay_until_released() {
    let (_d, meta) = intent_db();
    let region = 1 << 20;
    {
        let (log, _) = PersistentIntent::load(Arc::clone(&meta), 9, region).unwrap();
        let h = IntentHandle(log);
        crate::rt::block_on(async {
            let g = h.begin(2 * region, region * 2).await.unwrap();
            std::mem::forget(g); // a crash with the write in flight
        });
    }
    let (log, pending) = PersistentIntent::load(Arc::clone(&meta), 9, region).unwrap();
    assert_eq!(pending, vec![(2 * region, 2 * region)]);
    crate::rt::block_on(async {
        for _ in 0..2 {
            let flush: DevFuture<'_, Result<()>> = Box::pin(async { Ok(()) });
            assert_eq!(
                log.clear_idle(flush).await.unwrap(),
                0,
                "held until resynced"
            );
        }
        log.release(2 * region, 2 * region);
        let flush: DevFuture<'_, Result<()>> = Box::pin(async { Ok(()) });
        assert_eq!(log.clear_idle(flush).await.unwrap(), 2);
    });
}

#[test]
fn an_intent_page_past_any_address_space_is_refused_as_damage() {
    let (_d, meta) = intent_db();
    let region = 1 << 20;
    // A page key no group can reach (a damaged database): refused, with
    // no attempt to size bitmaps for it.
    for page in [u64::MAX, 1 << 40] {
        meta.write(true, |tx| tx.put_page(11, page, &[0xff; 8]))
            .unwrap();
        let e = match PersistentIntent::load(Arc::clone(&meta), 11, region) {
            Ok(_) => panic!("page {page} was accepted"),
            Err(e) => e,
        };
        assert_eq!(e.kind(), crate::error::ErrorKind::Corrupt, "{e}");
        assert!(e.message().contains(&format!("page {page}")), "{e}");
        meta.write(true, |tx| tx.del_pages(11)).unwrap();
    }
    // A page in range loads its marks.
    meta.write(true, |tx| tx.put_page(11, 1, &[0x01])).unwrap();
    let (_, pending) = PersistentIntent::load(Arc::clone(&meta), 11, region).unwrap();
    assert_eq!(pending, vec![(crate::meta::PAGE_BITS * region, region)]);
}
