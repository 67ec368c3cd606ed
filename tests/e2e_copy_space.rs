//! Issue 18: the space of instant copies comes back.
//!
//! The user's routine that filled a pool: one long-lived copy of a source
//! (a daily backup) and short-lived copies created and deleted while the
//! source keeps writing. Before free-space collection, every generation's
//! partial areas stayed held while one of their granules was still read;
//! the group ran out of room and the source's writes failed with ENOSPC,
//! even after a restart.

mod harness;

use harness::*;

const MIB: u64 = 1 << 20;

fn group_free(d: &Daemon, group: &str) -> u64 {
    let g = d.json(&["group", "show", group]);
    g["free"]
        .as_u64()
        .unwrap_or_else(|| panic!("group {group} shows no free space: {g}"))
}

#[test]
fn churn_of_short_lived_copies_beside_a_long_lived_one_never_fills_the_group() {
    if !have(&["fio"]) {
        return;
    }
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &[]);
    d.ok(&["disk", "add", "a", "--size", "4G"]);
    d.ok(&["group", "create", "ga", "--raid", "concat", "--disks", "a"]);
    d.ok(&["volume", "create", "src", "--group", "ga", "--size", "1G"]);
    d.ok(&["copy", "create", "src", "c0"]);
    // Taking a copy takes no space: what the group loses from here on is
    // the store's.
    let free0 = group_free(&d, "ga");
    let uri = d.export("src");
    let writer = |secs: u64| {
        let uri = uri.clone();
        std::thread::spawn(move || {
            fio(&[
                "--name=churn",
                "--ioengine=nbd",
                &format!("--uri={uri}"),
                "--rw=randwrite",
                "--bs=4k",
                "--iodepth=16",
                "--time_based",
                &format!("--runtime={secs}"),
            ])
        })
    };
    // c0 diverges: up to the whole source's worth of store.
    let r = writer(8).join().expect("fio");
    assert!(r.ok && r.errors == 0, "fio before the churn: {}", r.text);
    // Short-lived copies come and go while the source writes.
    let fio = writer(20);
    let mut n = 0;
    while !fio.is_finished() {
        let name = format!("k{n}");
        d.ok(&["copy", "create", "src", &name]);
        d.ok(&["copy", "delete", &name]);
        n += 1;
    }
    let r = fio.join().expect("fio");
    assert!(
        r.ok && r.errors == 0,
        "the source's writes failed after {n} short-lived copies: {}",
        r.text
    );
    // One long-lived copy of a 1 GiB source holds at most 1.25 GiB of
    // store plus a partial area per leaf once collection has run.
    let before = d.json(&["copy", "show", "c0"]);
    d.ok(&["copy", "gc", "--wait"]);
    let free = group_free(&d, "ga");
    // What `copy show` says is what the group lost: the store's chunks;
    // held is what images' areas and slots take of them, live what
    // images read.
    let c0 = d.json(&["copy", "show", "c0"]);
    let field = |k: &str| c0[k].as_u64().unwrap_or_else(|| panic!("no {k}: {c0}"));
    let (live, held, chunks) = (
        field("store_live"),
        field("store_held"),
        field("store_chunks"),
    );
    assert_eq!(
        chunks,
        free0 - free,
        "the group lost the store's chunks: {c0}"
    );
    assert!(0 < live && live <= held && held <= chunks, "{c0}");
    assert!(
        chunks <= 1280 * MIB + 2 * 64 * MIB,
        "{} MiB of chunks, {} MiB held, {} MiB live after collection (before: {before})",
        chunks / MIB,
        held / MIB,
        live / MIB
    );
    eprintln!(
        "{n} short-lived copies; store before collection: {} MiB held, {} MiB live; after: {} MiB held, {} MiB live",
        before["store_held"].as_u64().unwrap_or(0) / MIB,
        before["store_live"].as_u64().unwrap_or(0) / MIB,
        held / MIB,
        live / MIB
    );
    // And so it stays after a restart.
    d.restart();
    assert_eq!(group_free(&d, "ga"), free, "after a restart");
}
