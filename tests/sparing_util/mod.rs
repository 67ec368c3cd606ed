//! Helpers shared by the sparing end-to-end tests (e2e_sparing.rs,
//! e2e_sparing_divert.rs): the status, T1's members, the monitor's
//! passes, and the RAID-5 group with a spare they start from.

#![allow(dead_code)]

use crate::harness::*;
use serde_json::Value;

pub fn status(d: &Daemon) -> Value {
    d.json(&["sparing", "status"])
}

pub fn disk(d: &Daemon, name: &str) -> Value {
    d.json(&["disk", "show", name])
}

pub fn errors(disk: &Value) -> u64 {
    disk["counters"]["read_errors"].as_u64().unwrap_or(0)
        + disk["counters"]["write_errors"].as_u64().unwrap_or(0)
}

/// The disks of `group`'s slots, in order.
pub fn members(d: &Daemon, group: &str) -> Vec<String> {
    let s = status(d);
    let g = s["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == group)
        .unwrap_or_else(|| panic!("no group {group} in T1: {s}"));
    g["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// Waits until the monitor has made `n` more passes than now.
pub fn passes(d: &Daemon, n: u64) {
    let p0 = status(d)["passes"].as_u64().unwrap();
    poll("monitor passes", 30, || {
        status(d)["passes"].as_u64().unwrap() >= p0 + n
    });
}

/// The one sparing under way, once it has its job.
pub fn sparing_job(d: &Daemon) -> (Value, u64) {
    let mut found = None;
    poll("a sparing with its job", 30, || {
        let s = status(d);
        found = s["sparings"]
            .as_array()
            .and_then(|a| a.first())
            .filter(|r| r["job"].as_u64().is_some())
            .cloned();
        found.is_some()
    });
    let r = found.unwrap();
    let id = r["job"].as_u64().unwrap();
    (r, id)
}

/// A RAID-5 group `r5` of three 40 MiB disks, a 16 MiB volume `v` holding
/// pattern 0x5a (flushed) and a spare `sp`.
pub fn raid5_with_spare(d: &Daemon) -> String {
    d.group("r5", "raid5", &["a1", "a2", "a3"], "40M");
    d.ok(&["disk", "add", "sp", "--size", "40M", "--spare"]);
    d.ok(&["volume", "create", "v", "--group", "r5", "--size", "16M"]);
    let url = d.export("v");
    qemu_io(&url, &["write -P 0x5a 0 16M", "flush"]);
    url
}

/// Resumes the copy and waits for the sparing and its write-back to end.
pub fn finish(d: &Daemon, job: &str) {
    d.ok(&["job", "resume", job]);
    assert_eq!(d.wait_job(job.parse().unwrap())["state"], "done");
    let id = job.parse::<u64>().unwrap();
    poll("the write-back ends", 60, || {
        let s = status(d);
        !s["sparings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["job"] == id)
    });
}
