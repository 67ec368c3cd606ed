//! Issue 18: the space of instant copies comes back.
//!
//! The user's routine that filled a pool: one long-lived copy of a source
//! (a daily backup) and short-lived copies created and deleted while the
//! source keeps writing. Before free-space collection, every generation's
//! partial areas stayed held while one of their granules was still read:
//! round after round the store grew by a source's worth (2 GiB for a
//! 1 GiB source after four rounds), and with copies coming and going under
//! fio the group ran out of room and the source's writes failed with
//! ENOSPC (after 32 copies), even after a restart.

mod harness;

use harness::*;

const MIB: u64 = 1 << 20;

fn group_free(d: &Daemon, group: &str) -> u64 {
    let g = d.json(&["group", "show", group]);
    g["free"]
        .as_u64()
        .unwrap_or_else(|| panic!("group {group} shows no free space: {g}"))
}

/// 4k random writes to `uri`: `ios` of them, or for `secs` seconds.
fn randwrite(uri: &str, ios: Option<u64>, secs: Option<u64>) -> FioReport {
    let mut args = vec![
        "--name=churn".to_string(),
        "--ioengine=nbd".into(),
        format!("--uri={uri}"),
        "--rw=randwrite".into(),
        "--bs=4k".into(),
        "--iodepth=16".into(),
    ];
    if let Some(n) = ios {
        args.push(format!("--number_ios={n}"));
    }
    if let Some(s) = secs {
        args.push("--time_based".into());
        args.push(format!("--runtime={s}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    fio(&args)
}

/// Round after round — a short-lived copy made, 20,000 random 4k writes
/// to the source, the copy deleted, collection — the store holds no more
/// than one long-lived copy's worth (1.25x the source plus two chunks),
/// and what `copy show` says of it is what the group lost, also after a
/// restart. (Copies coming and going *while* fio writes are measured in
/// bench/copy_gc.sh: whether collection keeps up depends on the machine.)
#[test]
fn short_lived_copies_beside_a_long_lived_one_give_their_space_back() {
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
    let r = randwrite(&uri, None, Some(8));
    assert!(r.ok && r.errors == 0, "fio before the rounds: {}", r.text);
    let bound = 1280 * MIB + 2 * 64 * MIB;
    for round in 0..4 {
        let k = format!("k{round}");
        d.ok(&["copy", "create", "src", &k]);
        let r = randwrite(&uri, Some(20_000), None);
        assert!(r.ok && r.errors == 0, "round {round}: {}", r.text);
        d.ok(&["copy", "delete", &k]);
        d.ok(&["copy", "gc", "--wait"]);
        // Chunks given back are discarded in the background; the group
        // counts them free once that is done.
        let mut c0 = serde_json::Value::Null;
        poll(
            "the group to count the store's chunks given back",
            30,
            || {
                c0 = d.json(&["copy", "show", "c0"]);
                c0["store_chunks"].as_u64() == Some(free0 - group_free(&d, "ga"))
            },
        );
        let field = |k: &str| c0[k].as_u64().unwrap_or_else(|| panic!("no {k}: {c0}"));
        let (live, held, chunks) = (
            field("store_live"),
            field("store_held"),
            field("store_chunks"),
        );
        assert!(0 < live && live <= held && held <= chunks, "{c0}");
        assert!(
            chunks <= bound,
            "round {round}: {} MiB of chunks ({} MiB held, {} MiB live) for a 1 GiB source with one copy",
            chunks / MIB,
            held / MIB,
            live / MIB
        );
        eprintln!(
            "round {round}: store {} MiB of chunks, {} MiB held, {} MiB live",
            chunks / MIB,
            held / MIB,
            live / MIB
        );
    }
    let free = group_free(&d, "ga");
    d.restart();
    assert_eq!(group_free(&d, "ga"), free, "after a restart");
}
