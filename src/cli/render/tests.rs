//! Rendering tests: the expected cells are computed from the inputs.

use std::path::PathBuf;

use super::*;

const GIB: u64 = 1 << 30;

/// The cells of each content line (header first), without the borders.
fn rows(rendered: &str) -> Vec<Vec<String>> {
    rendered
        .lines()
        .filter(|l| l.starts_with('\u{2502}'))
        .map(|l| {
            let inner = l.trim_matches('\u{2502}');
            inner
                .split('\u{2506}')
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

fn disk(name: &str, size: u64, group: Option<&str>) -> DiskInfo {
    DiskInfo {
        name: name.to_owned(),
        path: PathBuf::from(format!("/pool/disks/{name}.img")),
        size,
        data_size: size - 4096,
        allocated: size / 4,
        status: DiskStatus::Ok,
        problem: None,
        group: group.map(str::to_owned),
        slot: group.map(|_| 1),
        counters: CounterSnapshot {
            reads: 10,
            writes: 20,
            bytes_read: 3 << 20,
            bytes_written: 5 << 20,
            read_errors: 2,
            write_errors: 3,
            flushes: 4,
        },
        recent_errors: 1,
        faults: None,
    }
}

#[test]
fn disk_list_has_the_documented_columns_and_one_row_per_disk() {
    let disks = [disk("d0", GIB, Some("g0")), disk("d1", 2 * GIB, None)];
    let got = rows(&disk_list(&disks));
    // The documented columns, written out: a renamed, dropped or
    // reordered column fails here.
    assert_eq!(
        got[0],
        [
            "NAME",
            "PATH",
            "SIZE",
            "ALLOCATED",
            "STATUS",
            "GROUP",
            "READS",
            "WRITES",
            "READ BYTES",
            "WRITTEN BYTES",
            "ERRORS",
            "IN WINDOW",
        ]
    );
    assert_eq!(got.len(), 1 + disks.len());
    for (row, d) in got[1..].iter().zip(&disks) {
        let want = [
            d.name.clone(),
            d.path.display().to_string(),
            format_size(d.size),
            format_size(d.allocated),
            "ok".to_owned(),
            d.group.clone().unwrap_or_else(|| "-".to_owned()),
            "10".to_owned(),
            "20".to_owned(),
            format_size(3 << 20),
            format_size(5 << 20),
            "5".to_owned(),
            "1".to_owned(),
        ];
        assert_eq!(row, &want);
    }
    assert_eq!(got[2][2], "2.0 GiB");
}

#[test]
fn group_list_is_table_t1_with_capacity() {
    let g = GroupInfo {
        name: "g0".to_owned(),
        raid: RaidLevelName::Raid5,
        stripe_size: 65536,
        disks: vec!["d0".into(), "d1".into(), "d2".into()],
        volumes: vec!["v0".into(), "v1".into()],
        capacity: 2 * GIB,
        free: GIB / 2,
        health: "optimal".to_owned(),
        members: vec![],
        intent_marked: 0,
    };
    let unused = GroupInfo {
        name: "g5".to_owned(),
        volumes: vec![],
        ..g.clone()
    };
    let got = rows(&group_list(&[g.clone(), unused]));
    assert_eq!(
        got[0],
        [
            "GROUP",
            "VOLUMES",
            "DISKS",
            "RAID LEVEL",
            "CAPACITY",
            "FREE",
            "HEALTH"
        ]
    );
    let want = [
        "g0",
        "v0,v1",
        "d0,d1,d2",
        "raid5",
        "2.0 GiB",
        "512.0 MiB",
        "optimal",
    ];
    assert_eq!(got[1], want);
    assert_eq!(got[2][1], "-", "a group without volumes shows -");
}

#[test]
fn group_show_lists_members() {
    let g = GroupInfo {
        name: "g0".to_owned(),
        raid: RaidLevelName::Raid1,
        stripe_size: 65536,
        disks: vec!["d0".into()],
        volumes: vec![],
        capacity: GIB,
        free: GIB,
        health: "rebuilding".to_owned(),
        members: vec![
            MemberInfo {
                slot: 0,
                disk: Some("d0".into()),
                state: "ok".into(),
                progress: None,
                reinstatable: false,
            },
            MemberInfo {
                slot: 1,
                disk: None,
                state: "rebuilding".into(),
                progress: Some(0.25),
                reinstatable: false,
            },
            MemberInfo {
                slot: 2,
                disk: Some("d2".into()),
                state: "failed".into(),
                progress: None,
                reinstatable: true,
            },
        ],
        intent_marked: 12 << 20,
    };
    let got = rows(&group(&g));
    assert!(got.contains(&vec!["stripe size".to_owned(), "64.0 KiB".to_owned()]));
    assert!(got.contains(&vec![
        "SLOT".into(),
        "DISK".into(),
        "STATE".into(),
        "PROGRESS".into()
    ]));
    assert!(got.contains(&vec![
        "1".into(),
        "-".into(),
        "rebuilding".into(),
        "25.0%".into()
    ]));
    assert!(got.contains(&vec![
        "2".into(),
        "d2".into(),
        "failed (disk reinstate d2)".into(),
        "-".into()
    ]));
    assert!(got.contains(&vec![
        "write-intent marks".to_owned(),
        "12.0 MiB".to_owned()
    ]));
}

fn job_info(done: u64, total: u64, state: JobState) -> JobInfo {
    JobInfo {
        id: 7,
        kind: "replace".into(),
        target: "group g0 slot 2 -> disk d4".into(),
        state,
        done,
        total,
        unit_bytes: 65536,
        bytes_per_sec: 100 << 20,
        eta_secs: Some(65),
        rate_limit: 0,
        rate_floor: 0,
        message: None,
        created: 0,
        updated: 0,
    }
}

#[test]
fn job_list_shows_progress_rate_and_eta() {
    let got = rows(&job_list(&[job_info(1, 3, JobState::Running)]));
    assert_eq!(
        got[0],
        [
            "ID", "KIND", "TARGET", "STATE", "PROGRESS", "RATE", "ETA", "LIMIT"
        ]
    );
    let want = [
        "7",
        "replace",
        "group g0 slot 2 -> disk d4",
        "running",
        "33.3%",
        "100.0 MiB/s",
        "1m05s",
        "none",
    ];
    assert_eq!(got[1], want);
}

#[test]
fn percent_handles_empty_and_overfull_jobs() {
    assert_eq!(percent(&job_info(0, 0, JobState::Done)), "100.0%");
    assert_eq!(percent(&job_info(0, 0, JobState::Running)), "0.0%");
    assert_eq!(percent(&job_info(5, 4, JobState::Running)), "100.0%");
    assert_eq!(percent(&job_info(1, 8, JobState::Running)), "12.5%");
}

#[test]
fn volume_list_and_show() {
    let v = VolumeInfo {
        name: "vol0".into(),
        group: "g0".into(),
        size: 10 * GIB,
        track_size: 65536,
        read_only: true,
        connections: 2,
        export: "nbd://127.0.0.1:10809/vol0".into(),
        extents: vec![(0, GIB), (2 * GIB, 9 * GIB)],
    };
    let got = rows(&volume_list(std::slice::from_ref(&v)));
    assert_eq!(
        got[0],
        [
            "NAME",
            "GROUP",
            "SIZE",
            "TRACK",
            "MODE",
            "CONNECTIONS",
            "EXPORT"
        ]
    );
    let want = [
        "vol0",
        "g0",
        "10.0 GiB",
        "64.0 KiB",
        "ro",
        "2",
        "nbd://127.0.0.1:10809/vol0",
    ];
    assert_eq!(got[1], want);
    let shown = rows(&volume(&v));
    assert!(shown.contains(&vec![
        "extents".to_owned(),
        "0 B+1.0 GiB,2.0 GiB+9.0 GiB".to_owned()
    ]));
}

#[test]
fn fault_rules_in_one_line() {
    let f = FaultRules {
        read_errors: vec![(0, 512)],
        write_errors: vec![(4096, 1024)],
        error_rate: 0.5,
        vanished: true,
        iops: 300,
    };
    assert_eq!(
        faults(&f),
        "read 0+512, write 4096+1024, rate 0.5, vanished, 300 IOPS at most"
    );
    assert_eq!(faults(&FaultRules::default()), "none");
}

fn copy_info(name: &str, valid: bool, warning: Option<&str>) -> CopyInfo {
    CopyInfo {
        name: name.to_owned(),
        source: "v0".into(),
        origin: "v0".into(),
        mode: CopyMode::Row,
        scheme: crate::copy::map::Scheme::PartialBitmap,
        read_only: false,
        size: 10 * GIB,
        track_size: 65536,
        tracks_diverged: 3,
        space_used: 3 * 65536,
        space_shared: 65536,
        store_live: 4 * 65536,
        store_held: 8 * 65536,
        store_chunks: 64 << 20,
        metadata_memory: 4096,
        depth: 2,
        valid,
        warning: warning.map(str::to_owned),
        created: 0,
    }
}

#[test]
fn copy_list_has_the_columns_and_warnings_under_the_table() {
    let copies = [
        copy_info("c0", true, None),
        copy_info("c1", false, Some("new space is 91% full")),
    ];
    let text = copy_list(&copies);
    let got = rows(&text);
    assert_eq!(
        got[0],
        [
            "NAME",
            "SOURCE",
            "ORIGIN",
            "MODE",
            "META",
            "DIVERGED",
            "SPACE USED",
            "METADATA MEMORY",
            "DEPTH",
            "STATE",
        ]
    );
    let want = [
        "c0",
        "v0",
        "v0",
        "row",
        "partial-bitmap",
        "3",
        "192.0 KiB",
        "4.0 KiB",
        "2",
        "ok",
    ];
    assert_eq!(got[1], want);
    assert_eq!(got[2][9], "INVALID");
    let tail: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("warning"))
        .collect();
    assert_eq!(tail, ["warning: copy c1: new space is 91% full"]);
    assert!(!copy_list(&copies[..1]).contains("warning"));
}

#[test]
fn copy_show_spells_out_the_mode_and_the_diverged_bytes() {
    let got = rows(&copy(&copy_info("c0", true, None)));
    let has = |k: &str, v: &str| assert!(got.contains(&vec![k.to_owned(), v.to_owned()]), "{k}");
    has(
        "mode",
        "row (redirect-on-write: new writes go to new space)",
    );
    has("diverged", "3 tracks (192.0 KiB)");
    has("metadata", "partial-bitmap");
    has("warning", "-");
}

#[test]
fn restore_and_split_lines_say_whether_a_job_runs() {
    let restored = CopyRestoreInfo {
        volume: "v0".into(),
        from: "c0".into(),
        job: None,
        connections: 0,
    };
    assert_eq!(
        copy_restored(&restored),
        "volume v0 now shows the image of copy c0\nno data has to move"
    );
    let split = CopySplitInfo {
        n_orig: 1,
        n_copy: 0,
        policy: SplitPolicy::MoveLarger,
        moving: "v0".into(),
        job: Some(job_info(4, 4, JobState::Done)),
    };
    let text = copy_split("c0", &split);
    assert!(text.contains("(policy move-larger)"), "{text}");
    assert!(
        text.contains("\nnew data of the original: 1 track\n"),
        "{text}"
    );
    assert!(
        text.contains("\nnew data of the copy: 0 tracks\n"),
        "{text}"
    );
    assert!(
        text.ends_with("job 7 done: replace group g0 slot 2 -> disk d4"),
        "{text}"
    );
}
