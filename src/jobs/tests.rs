use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::meta::model::JobKind;

struct Counting {
    steps: Arc<Mutex<Vec<(u64, u64)>>>,
    fail_at: Option<u64>,
    finished: Arc<AtomicU64>,
    gate: Option<Rc<RefCell<Option<tokio::sync::oneshot::Receiver<()>>>>>,
}

impl Work for Counting {
    fn step(&mut self, from: u64, n: u64) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            if let Some(g) = &self.gate {
                let rx = g.borrow_mut().take();
                if let Some(rx) = rx {
                    let _ = rx.await;
                }
            }
            if self.fail_at.is_some_and(|f| f >= from && f < from + n) {
                return Err(Error::new(ErrorKind::Io, format!("unit {from} unreadable")));
            }
            self.steps.lock().unwrap().push((from, n));
            Ok(())
        })
    }
    fn checkpoint(&mut self) -> DevFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn finish(&mut self) -> DevFuture<'_, Result<()>> {
        self.finished.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }
    fn abort(&mut self, _cancelled: bool) -> DevFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

fn rec(id: u64, done: u64, total: u64) -> JobRecord {
    JobRecord {
        id,
        kind: JobKind::Resync {
            group: "g0".into(),
            ranges: vec![(0, total)],
        },
        state: JobState::Running,
        done,
        total,
        unit_bytes: 1 << 20,
        rate_limit: 0,
        rate_floor: 0,
        message: None,
        created: now(),
        updated: now(),
    }
}

fn setup() -> (tempfile::TempDir, Arc<Meta>, Jobs) {
    let d = tempfile::tempdir().unwrap();
    let meta = Arc::new(Meta::open(&d.path().join("p.redb")).unwrap().0);
    let workers = Workers::start(1).unwrap();
    let jobs = Jobs::new(Arc::clone(&meta), workers);
    (d, meta, jobs)
}

#[test]
fn runs_from_checkpoint_to_done_and_records_it() {
    let (_d, meta, jobs) = setup();
    let steps = Arc::new(Mutex::new(Vec::new()));
    let finished = Arc::new(AtomicU64::new(0));
    let r = rec(1, 6, 20);
    meta.write(true, |tx| tx.put_job(&r)).unwrap();
    let (s, f) = (Arc::clone(&steps), Arc::clone(&finished));
    jobs.start(
        r,
        Box::new(move || {
            Ok(Box::new(Counting {
                steps: s,
                fail_at: None,
                finished: f,
                gate: None,
            }) as Box<dyn Work>)
        }),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let info = rt.block_on(jobs.wait(1)).unwrap();
    assert_eq!(info.state, JobState::Done);
    assert_eq!((info.done, info.total), (20, 20));
    // Units 6..20 done exactly once, in order, none before the checkpoint.
    let s = steps.lock().unwrap().clone();
    assert_eq!(s.first().map(|x| x.0), Some(6));
    assert_eq!(s.iter().map(|x| x.1).sum::<u64>(), 14);
    assert_eq!(finished.load(Ordering::SeqCst), 1);
    let stored = meta.load().unwrap().jobs;
    assert_eq!(stored[0].state, JobState::Done);
    refuses_control_and_rate(&jobs, &meta, 1, "done");
}

/// A finished job refuses pause, resume, cancel and a rate limit alike,
/// and its record keeps no limit.
fn refuses_control_and_rate(jobs: &Jobs, meta: &Meta, id: u64, state: &str) {
    let refused = [
        (jobs.pause(id), "it cannot be paused"),
        (jobs.resume(id), "it cannot be resumed"),
        (jobs.cancel(id), "it cannot be cancelled"),
        (
            jobs.set_rate(id, 1 << 20, None),
            "its rate limit cannot change",
        ),
    ];
    for (got, why) in refused {
        let e = got.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert_eq!(e.message(), format!("job {id} is {state}; {why}"));
    }
    assert_eq!(jobs.info(id).unwrap().rate_limit, 0);
    let stored = meta.load().unwrap().jobs;
    assert!(stored.iter().all(|j| j.rate_limit == 0), "{stored:?}");
}

#[test]
fn a_failing_step_fails_the_job_with_its_message() {
    let (_d, meta, jobs) = setup();
    let r = rec(2, 0, 10);
    meta.write(true, |tx| tx.put_job(&r)).unwrap();
    let steps = Arc::new(Mutex::new(Vec::new()));
    let finished = Arc::new(AtomicU64::new(0));
    let f = Arc::clone(&finished);
    jobs.start(
        r,
        Box::new(move || {
            Ok(Box::new(Counting {
                steps,
                fail_at: Some(7),
                finished: f,
                gate: None,
            }) as Box<dyn Work>)
        }),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let info = rt.block_on(jobs.wait(2)).unwrap();
    assert_eq!(info.state, JobState::Failed);
    let msg = info.message.unwrap();
    assert!(msg.contains("unit 4 unreadable"), "{msg}");
    assert_eq!(finished.load(Ordering::SeqCst), 0);
    assert_eq!(meta.load().unwrap().jobs[0].state, JobState::Failed);
    refuses_control_and_rate(&jobs, &meta, 2, "failed");
}

/// Starts job `id` of 1000 units whose first step waits until the
/// returned sender fires; also its count of finishes.
fn start_gated(
    meta: &Meta,
    jobs: &Jobs,
    id: u64,
) -> (tokio::sync::oneshot::Sender<()>, Arc<AtomicU64>) {
    let r = rec(id, 0, 1000);
    meta.write(true, |tx| tx.put_job(&r)).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let steps = Arc::new(Mutex::new(Vec::new()));
    let finished = Arc::new(AtomicU64::new(0));
    let f = Arc::clone(&finished);
    jobs.start(
        r,
        Box::new(move || {
            let gate = Some(Rc::new(RefCell::new(Some(rx))));
            Ok(Box::new(Counting {
                steps,
                fail_at: None,
                finished: f,
                gate,
            }) as Box<dyn Work>)
        }),
    );
    (tx, finished)
}

#[test]
fn cancel_stops_a_running_job() {
    let (_d, meta, jobs) = setup();
    let (tx, finished) = start_gated(&meta, &jobs, 3);
    // The first step is held at the gate: cancel, then open it.
    jobs.cancel(3).unwrap();
    let _ = tx.send(());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let info = rt.block_on(jobs.wait(3)).unwrap();
    assert_eq!(info.state, JobState::Cancelled);
    assert!(info.done < 1000);
    assert_eq!(finished.load(Ordering::SeqCst), 0);
    refuses_control_and_rate(&jobs, &meta, 3, "cancelled");
}

#[test]
fn the_floor_is_the_rate_while_hosts_do_io_and_the_limit_caps_it() {
    use super::rate_now;
    // (limit, floor, busy) -> rate; 0 is "none".
    for (limit, floor, busy, want) in [
        (0, 0, false, 0),
        (0, 0, true, 0),
        (100, 0, true, 100),
        (100, 10, false, 100),
        (100, 10, true, 10),
        (0, 10, true, 10),
        (0, 10, false, 0),
        (5, 10, true, 5),
    ] {
        assert_eq!(rate_now(limit, floor, busy), want, "{limit} {floor} {busy}");
    }
}

#[test]
fn host_requests_are_counted_over_every_thread() {
    let before = crate::rt::host_io_seen();
    let threads: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(|| {
                for _ in 0..1000 {
                    crate::rt::host_io();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    // Other tests' NBD servers may count too: at least these 3000.
    let seen = crate::rt::host_io_seen().wrapping_sub(before);
    assert!(seen >= 3000, "{seen}");
}

#[test]
fn a_floor_is_stored_with_the_limit_and_kept_when_not_given() {
    let (_d, meta, jobs) = setup();
    let (tx, _) = start_gated(&meta, &jobs, 4);
    // Held at its first step: the controls apply to a running job.
    let j = jobs.set_rate(4, 1 << 20, Some(64 << 10)).unwrap();
    assert_eq!((j.rate_limit, j.rate_floor), (1 << 20, 64 << 10));
    let j = jobs.set_rate(4, 0, None).unwrap();
    assert_eq!(
        (j.rate_limit, j.rate_floor),
        (0, 64 << 10),
        "the floor stays"
    );
    let stored = meta.load().unwrap().jobs;
    let mine = stored.iter().find(|j| j.id == 4).expect("stored");
    assert_eq!((mine.rate_limit, mine.rate_floor), (0, 64 << 10));
    jobs.cancel(4).unwrap();
    let _ = tx.send(());
}
