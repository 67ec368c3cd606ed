//! The error window of the first control unit.

use std::time::{Duration, Instant};

use super::History;

#[test]
fn errors_leave_the_window_as_it_slides() {
    let t0 = Instant::now();
    let w = Duration::from_secs(10);
    let mut h = History::default();
    h.observe(t0, 0, w);
    assert_eq!(h.recent(), 0);
    h.observe(t0 + Duration::from_secs(1), 3, w);
    h.observe(t0 + Duration::from_secs(5), 7, w);
    assert_eq!(h.recent(), 7);
    // At 12 s the 3 errors of second 1 are older than the window.
    h.observe(t0 + Duration::from_secs(12), 7, w);
    assert_eq!(h.recent(), 4);
    h.observe(t0 + Duration::from_secs(16), 7, w);
    assert_eq!(h.recent(), 0);
}

#[test]
fn a_disk_opened_again_starts_over() {
    let t0 = Instant::now();
    let w = Duration::from_secs(60);
    let mut h = History::default();
    h.observe(t0, 40, w);
    assert_eq!(h.recent(), 40);
    h.observe(t0 + Duration::from_secs(1), 2, w);
    assert_eq!(h.recent(), 2, "counters that went down are new counters");
}

#[test]
fn a_flood_of_changes_keeps_a_bounded_history_and_the_count() {
    let t0 = Instant::now();
    let w = Duration::from_secs(3600);
    let mut h = History::default();
    for i in 1..=(super::MAX_CHANGES as u64 + 100) {
        h.observe(t0 + Duration::from_millis(i), i, w);
    }
    assert!(h.changes.len() <= super::MAX_CHANGES);
    // Merged changes still count: every error is within the window.
    assert_eq!(h.recent(), super::MAX_CHANGES as u64 + 100);
}
