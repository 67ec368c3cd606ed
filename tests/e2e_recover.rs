//! Issue 18 item 5: the copy stores describe themselves (seed 000 FIG. 13).
//! `pool check` finds nothing on a healthy pool and names a damaged label;
//! with the database's copy tables deleted, `pool recover` rebuilds the
//! copy maps from the labels on the disks and every image reads back byte
//! for byte.

mod harness;

use harness::*;

const MIB: u64 = 1 << 20;

/// Every byte of `name`, read over NBD.
fn image(d: &Daemon, name: &str) -> Vec<u8> {
    let out = tempfile::NamedTempFile::new().expect("temp file");
    let path = out.path().to_str().expect("utf-8 path").to_string();
    let (ok, text) = run(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "raw", &d.export(name), &path],
    );
    assert!(ok, "reading {name}: {text}");
    std::fs::read(out.path()).expect("read the image back")
}

/// Offsets in the disk file where a copy store's descriptor block begins.
fn labels_in(disk: &std::path::Path) -> Vec<u64> {
    let bytes = std::fs::read(disk).expect("read the disk file");
    (0..bytes.len() / 4096)
        .filter(|&i| bytes[i * 4096..].starts_with(b"FSDESCR1"))
        .map(|i| (i * 4096) as u64)
        .collect()
}

fn flip(disk: &std::path::Path, at: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .expect("open the disk file");
    let mut b = [0u8];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x40;
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&b).unwrap();
    f.sync_all().unwrap();
}

/// Deletes every copy map table of the pool database, as a damaged or
/// half-restored database would lack them.
fn drop_copy_tables(db: &std::path::Path) {
    let db = redb::Database::open(db).expect("open the pool database");
    let tx = db.begin_write().expect("a write transaction");
    for t in [
        "pages",
        "copy_chunks",
        "copy_areas",
        "copy_heads",
        "copy_unfreed",
    ] {
        // Deleting goes by the name alone.
        let def = redb::TableDefinition::<u64, u64>::new(t);
        let existed = tx
            .delete_table(def)
            .unwrap_or_else(|e| panic!("deleting table {t}: {e}"));
        assert!(existed, "the pool database has no table {t}");
    }
    tx.commit().expect("commit");
}

#[test]
fn check_names_a_damaged_label_and_recover_rebuilds_every_copy() {
    if !have(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = pool_dir();
    let mut d = Daemon::start(dir.path(), &[]);
    d.group("ga", "concat", &["a"], "512M");
    d.ok(&["volume", "create", "src", "--group", "ga", "--size", "64M"]);
    qemu_io(&d.export("src"), &["write -P 0x11 0 64M"]);
    d.ok(&["copy", "create", "src", "c1"]);
    qemu_io(
        &d.export("src"),
        &["write -P 0x22 1M 8M", "write -P 0x23 40M 300k"],
    );
    qemu_io(&d.export("c1"), &["write -P 0x33 20M 4M"]);
    d.ok(&["copy", "create", "c1", "c2", "--meta", "changed-pointer"]);
    d.ok(&["copy", "create", "src", "c3", "--meta", "full-pointer"]);
    qemu_io(
        &d.export("c2"),
        &["write -P 0x44 3M 2M", "write -P 0x45 21M 7k"],
    );
    qemu_io(&d.export("src"), &["write -P 0x55 50M 6M"]);
    qemu_io(&d.export("c3"), &["write -P 0x66 0 1M"]);
    let names = ["src", "c1", "c2", "c3"];
    let want: Vec<Vec<u8>> = names.iter().map(|n| image(&d, n)).collect();
    assert_eq!(want[0][(50 * MIB) as usize], 0x55);
    assert_eq!(want[2][(3 * MIB) as usize], 0x44);

    // Healthy: the check finds nothing, and says what it compared.
    let c = d.json(&["pool", "check"]);
    assert_eq!(c["differences"], 0, "{c}");
    let checked: u64 = c["families"]
        .as_array()
        .expect("families")
        .iter()
        .map(|f| f["checked"].as_u64().unwrap_or(0))
        .sum();
    assert!(checked > 100, "{c}");
    assert!(
        d.ok(&["pool", "check"])
            .contains("the copy maps and the disks agree")
    );

    // One descriptor block damaged: named, and the command fails.
    let disk = std::path::PathBuf::from(
        d.json(&["disk", "show", "a"])["path"]
            .as_str()
            .expect("the disk's path"),
    );
    d.stop();
    let labels = labels_in(&disk);
    assert!(!labels.is_empty(), "no label found in {}", disk.display());
    flip(&disk, labels[0] + 200);
    d.restart();
    let out = d.cli(&["pool", "check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("checksum mismatch"), "{text}");
    d.stop();
    flip(&disk, labels[0] + 200);

    // The copy maps lost: recover rebuilds them from the labels.
    drop_copy_tables(&dir.path().join("ferrosan.redb"));
    let out = cli(dir.path(), &["pool", "recover"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("copies of src:") && said.contains("chunks found"),
        "{said}"
    );
    d.restart();
    for (n, w) in names.iter().zip(&want) {
        let got = image(&d, n);
        assert!(
            got == *w,
            "{n} differs after recover at byte {:?}",
            got.iter().zip(w).position(|(a, b)| a != b)
        );
    }
    let c = d.json(&["pool", "check"]);
    assert_eq!(c["differences"], 0, "{c}");
    d.stop();
}
