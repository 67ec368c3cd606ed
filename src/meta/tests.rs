use std::sync::Arc;

use super::intent::{IntentHandle, PersistentIntent};
use super::*;
use crate::blockdev::{DevFuture, WriteIntent};
use crate::meta::model::RaidLevelName;

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
                failed_seq: 0,
            },
            SlotRecord {
                disk: None,
                state: SlotState::Failed,
                failed_seq: 1,
            },
        ],
        member_sizes: vec![1 << 30, 1 << 30],
        intent_region: 4 << 20,
        created: 1,
        fail_seq: 1,
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
fn a_clean_stop_clears_every_quiet_mark_durably_and_keeps_the_rest() {
    let (_d, meta) = intent_db();
    let region = 1 << 20;
    let (log, _) = PersistentIntent::load(Arc::clone(&meta), 6, region).unwrap();
    let h = IntentHandle(Arc::clone(&log));
    crate::rt::block_on(async {
        // Regions 0..4 written and done just now (too recent for an idle
        // pass); region 7 has a write still in flight.
        for i in 0..4u64 {
            drop(h.begin(i * region, 512).await.unwrap());
        }
        let busy = h.begin(7 * region, 512).await.unwrap();
        let flush: DevFuture<'_, Result<()>> = Box::pin(async { Ok(()) });
        assert_eq!(log.clear_quiesced(flush).await.unwrap(), 4);
        // Stored when it returns: a crash now finds only region 7.
        let (_, on_disk) = PersistentIntent::load(Arc::clone(&meta), 6, region).unwrap();
        assert_eq!(on_disk, vec![(7 * region, region)]);
        // A write that starts while the flush runs keeps its mark.
        let log2 = Arc::clone(&log);
        let h2 = IntentHandle(Arc::clone(&log));
        drop(busy);
        let flush: DevFuture<'_, Result<()>> = Box::pin(async move {
            drop(h2.begin(9 * region, 512).await.unwrap());
            Ok(())
        });
        assert_eq!(log2.clear_quiesced(flush).await.unwrap(), 1);
        assert_eq!(log.marked(), vec![(9 * region, region)]);
    });
}

/// `begin_now` (no future, no allocation) serves only writes whose
/// regions are marked durably already, and a write it begins holds its
/// mark like one `begin` began.
#[test]
fn begin_now_serves_only_durable_marks_and_holds_them() {
    let (_d, meta) = intent_db();
    let region = 1 << 20;
    let (log, _) = PersistentIntent::load(Arc::clone(&meta), 7, region).unwrap();
    let h = IntentHandle(Arc::clone(&log));
    assert!(h.begin_now(2 * region, 4096).is_none(), "no mark yet");
    assert!(
        log.marked().is_empty(),
        "a refused begin_now marked a region"
    );
    crate::rt::block_on(async {
        drop(h.begin(2 * region, 4096).await.unwrap());
        let now = h
            .begin_now(2 * region + 8192, 4096)
            .expect("the mark is durable");
        assert!(
            h.begin_now(2 * region, region + 1).is_none(),
            "region 3 is not marked"
        );
        let flush: DevFuture<'_, Result<()>> = Box::pin(async { Ok(()) });
        assert_eq!(
            log.clear_quiesced(flush).await.unwrap(),
            0,
            "a write holds it"
        );
        assert_eq!(log.marked(), vec![(2 * region, region)]);
        drop(now);
        let flush: DevFuture<'_, Result<()>> = Box::pin(async { Ok(()) });
        assert_eq!(log.clear_quiesced(flush).await.unwrap(), 1);
    });
    let (_, on_disk) = PersistentIntent::load(Arc::clone(&meta), 7, region).unwrap();
    assert!(on_disk.is_empty(), "{on_disk:?}");
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

fn format_of(p: &std::path::Path) -> u32 {
    let db = redb::Database::open(p).unwrap();
    let t = db.begin_read().unwrap();
    let v = t.open_table(POOL).unwrap().get("format").unwrap().unwrap();
    u32::from_le_bytes(v.value().try_into().unwrap())
}

/// A format 1 database (copy chunks and areas inside the family record)
/// opens, and is marked with this format from then on, so a ferrosan that
/// knows only format 1 refuses it rather than misreading the rows.
#[test]
fn an_older_format_opens_and_is_marked_current() {
    let d = tmp();
    let p = d.path().join("pool.redb");
    drop(Meta::open(&p).unwrap());
    {
        let db = redb::Database::open(&p).unwrap();
        let t = db.begin_write().unwrap();
        t.open_table(POOL)
            .unwrap()
            .insert("format", 1u32.to_le_bytes().as_slice())
            .unwrap();
        t.commit().unwrap();
    }
    assert_eq!(format_of(&p), 1);
    drop(Meta::open(&p).unwrap());
    assert_eq!(format_of(&p), FORMAT_VERSION);
    const { assert!(FORMAT_VERSION >= 2) };
}

/// Copy chunk and area rows: stored, replaced and deleted one by one, a
/// node's rows (pages and areas) deleted together, a family's chunks with
/// its record; other families' and nodes' rows are left alone.
#[test]
fn copy_chunk_and_area_rows() {
    use crate::meta::model::copy::Chunk;
    let d = tmp();
    let (m, _) = Meta::open(&d.path().join("pool.redb")).unwrap();
    let c = |first: u64, off: u64| Chunk {
        head: if first == 64 { 65536 } else { 0 },
        first_slot: first,
        group_off: off,
        slots: 64,
    };
    m.write(true, |tx| {
        tx.put_copy_chunk(7, 0, Some(&c(0, 1 << 20)))?;
        tx.put_copy_chunk(7, 64, Some(&c(64, 2 << 20)))?;
        tx.put_copy_chunk(8, 0, Some(&c(0, 9 << 20)))?;
        tx.put_copy_area(11, 0, Some(64))?;
        tx.put_copy_area(11, 128, Some(64))?;
        tx.put_copy_area(12, 64, Some(32))?;
        tx.put_page(11, 0, &[1; 8])?;
        tx.put_page(12, 0, &[2; 8])
    })
    .unwrap();
    assert_eq!(
        m.copy_chunks(7).unwrap(),
        vec![c(0, 1 << 20), c(64, 2 << 20)]
    );
    assert_eq!(m.copy_areas(11).unwrap(), vec![(0, 64), (128, 64)]);
    m.write(true, |tx| {
        tx.put_copy_chunk(7, 0, None)?;
        tx.put_copy_chunk(7, 64, Some(&c(64, 5 << 20)))?;
        tx.put_copy_area(11, 0, None)
    })
    .unwrap();
    assert_eq!(m.copy_chunks(7).unwrap(), vec![c(64, 5 << 20)]);
    assert_eq!(m.copy_areas(11).unwrap(), vec![(128, 64)]);
    m.write(true, |tx| {
        tx.del_copy_node(11)?;
        tx.del_family(7)
    })
    .unwrap();
    assert!(m.copy_areas(11).unwrap().is_empty());
    assert!(m.pages(11).unwrap().is_empty());
    assert!(m.copy_chunks(7).unwrap().is_empty());
    assert_eq!(m.copy_areas(12).unwrap(), vec![(64, 32)]);
    assert_eq!(m.pages(12).unwrap().len(), 1);
    assert_eq!(m.copy_chunks(8).unwrap(), vec![c(0, 9 << 20)]);
}

#[test]
fn pair_records_survive_reopen_and_their_deletion_takes_their_bitmaps() {
    use crate::meta::model::{PairRecord, PairStatus};
    let d = tmp();
    let p = d.path().join("pool.redb");
    let (m, _) = Meta::open(&p).unwrap();
    let rec = PairRecord {
        object: 40,
        intent: 41,
        pvol: "db".into(),
        svol: "db-s1".into(),
        status: PairStatus::Split,
        track: 65536,
        group: Some("cg1".into()),
        created: 1,
        split_at: Some(2),
    };
    m.write(true, |tx| {
        tx.put_pair(&rec)?;
        tx.put_page(40, 0, &[1; PAGE_BYTES])?;
        tx.put_page(41, 3, &[2; PAGE_BYTES])?;
        tx.put_page(42, 0, &[3; PAGE_BYTES])
    })
    .unwrap();
    drop(m);
    let (m, _) = Meta::open(&p).unwrap();
    assert_eq!(m.pairs().unwrap(), vec![rec.clone()]);
    m.write(true, |tx| tx.del_pair(&rec)).unwrap();
    assert!(m.pairs().unwrap().is_empty());
    assert!(m.pages(40).unwrap().is_empty() && m.pages(41).unwrap().is_empty());
    assert_eq!(m.pages(42).unwrap().len(), 1, "another object's pages stay");
}
