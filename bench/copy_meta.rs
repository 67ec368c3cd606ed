//! The five instant-copy metadata schemes of seed 000/001 FIG. 17 over
//! 1 TiB of source at 64 KiB tracks (16,777,216 tracks): creation time,
//! `memory_bytes()` at 0%, 1% and 50% of tracks diverged (chosen at
//! random), ns per `get` (hit and miss) and per `place` + `set`; once
//! with whole-track entries and once with 4 KiB partial writes (one
//! granule of sixteen valid). Slots come from a counter: no I/O.
//!
//! Run: `cargo bench --bench copy_meta`. `--child KIND N` (used by the
//! run itself) fills one container in a fresh process and prints its
//! insert and lookup ns and the resident bytes it took: to compare the
//! changed-pointer store with a `BTreeMap`, and `memory_bytes` with what
//! the process really holds.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use ferrosan::Result;
use ferrosan::copy::map::{Entry, Scheme, SlotSource, TrackMap};
use ferrosan::copy::maps::{SparseTable, new_map};

const TRACK_BYTES: u64 = 64 << 10;
const SOURCE_BYTES: u64 = 1 << 40;
const TRACKS: u64 = SOURCE_BYTES / TRACK_BYTES;
const ONE_PCT: u64 = TRACKS / 100;
const HALF: u64 = TRACKS / 2;
const LOOKUPS: usize = 1 << 18;

/// Hands out slots and runs from a counter.
struct Counter(u64);

impl SlotSource for Counter {
    fn alloc_slot(&mut self) -> Result<u64> {
        self.0 += 1;
        Ok(self.0)
    }
    fn alloc_area(&mut self, n: u64) -> Result<u64> {
        let first = self.0 + 1;
        self.0 += n;
        Ok(first)
    }
}

#[path = "common/rng.rs"]
mod rng;
use rng::Rng;

/// Every track once, the first `n` a random sample in random order (a
/// partial Fisher-Yates shuffle): those diverge, the rest never do (the
/// misses).
fn shuffled(n: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..TRACKS).collect();
    let mut rng = Rng(1);
    for i in 0..n.min(TRACKS) {
        let j = i + rng.below(TRACKS - i);
        v.swap(i as usize, j as usize);
    }
    v
}

/// `LOOKUPS` random picks from `from`.
fn sample(from: &[u64], rng: &mut Rng) -> Vec<u64> {
    (0..LOOKUPS)
        .map(|_| from[rng.below(from.len() as u64) as usize])
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Masks {
    Whole,
    Granule,
}

impl Masks {
    fn name(self) -> &'static str {
        match self {
            Masks::Whole => "whole 64K",
            Masks::Granule => "4K partial",
        }
    }

    fn mask(self, rng: &mut Rng) -> u64 {
        match self {
            Masks::Whole => 0xFFFF,
            Masks::Granule => 1 << rng.below(16),
        }
    }
}

/// One row of the table.
struct Row {
    scheme: Scheme,
    masks: Masks,
    create: Duration,
    mem: [usize; 3],
    hit: [f64; 2],
    miss: [f64; 2],
    place_set: f64,
}

/// ns per `get` over `tracks`, the best of three passes (the machine is
/// shared).
fn time_gets(map: &dyn TrackMap, tracks: &[u64]) -> f64 {
    best_of(3, || {
        let start = Instant::now();
        let mut acc = 0u64;
        for &t in tracks {
            if let Some(e) = map.get(black_box(t)) {
                acc ^= e.slot;
            }
        }
        black_box(acc);
        start.elapsed().as_nanos() as f64 / tracks.len() as f64
    })
}

/// Places and sets `tracks`; the time taken.
fn diverge(
    map: &mut dyn TrackMap,
    src: &mut Counter,
    tracks: &[u64],
    masks: Masks,
    rng: &mut Rng,
) -> Duration {
    let valid: Vec<u64> = tracks.iter().map(|_| masks.mask(rng)).collect();
    let start = Instant::now();
    for (&t, &valid) in tracks.iter().zip(&valid) {
        let slot = map.place(t, src).expect("counter never fails");
        map.set(t, Entry { slot, valid });
    }
    start.elapsed()
}

fn run(scheme: Scheme, masks: Masks, order: &[u64]) -> Row {
    let mut src = Counter(0);
    let mut rng = Rng(7);
    let start = Instant::now();
    let mut map = new_map(scheme, TRACKS, &mut src).expect("map");
    let create = start.elapsed();
    let mem0 = map.memory_bytes();
    let (one, half) = (ONE_PCT as usize, HALF as usize);
    let misses = sample(&order[half..], &mut rng);
    let mut placing = diverge(map.as_mut(), &mut src, &order[..one], masks, &mut rng);
    let mem1 = map.memory_bytes();
    let hit1 = time_gets(map.as_ref(), &sample(&order[..one], &mut rng));
    let miss1 = time_gets(map.as_ref(), &misses);
    placing += diverge(map.as_mut(), &mut src, &order[one..half], masks, &mut rng);
    assert_eq!(map.len(), HALF);
    Row {
        scheme,
        masks,
        create,
        mem: [mem0, mem1, map.memory_bytes()],
        hit: [
            hit1,
            time_gets(map.as_ref(), &sample(&order[..half], &mut rng)),
        ],
        miss: [miss1, time_gets(map.as_ref(), &misses)],
        place_set: placing.as_nanos() as f64 / HALF as f64,
    }
}

fn size(b: usize) -> String {
    let b = b as f64;
    match b {
        _ if b >= (1u64 << 30) as f64 => format!("{:.2} GiB", b / (1u64 << 30) as f64),
        _ if b >= (1 << 20) as f64 => format!("{:.1} MiB", b / (1 << 20) as f64),
        _ if b >= (1 << 10) as f64 => format!("{:.1} KiB", b / (1 << 10) as f64),
        _ => format!("{b} B"),
    }
}

fn dur(d: Duration) -> String {
    match d.as_micros() {
        us if us >= 10_000 => format!("{} ms", us / 1000),
        us => format!("{us} us"),
    }
}

fn print_row(r: &Row) {
    println!(
        "| {} | {} | {} | {} | {} | {} | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} |",
        r.scheme,
        r.masks.name(),
        dur(r.create),
        size(r.mem[0]),
        size(r.mem[1]),
        size(r.mem[2]),
        r.hit[0],
        r.miss[0],
        r.hit[1],
        r.miss[1],
        r.place_set,
    );
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores (shared with other work: single runs, expect noise)")
}

/// 1% of tracks diverged in 16 hot runs (one at a random place in each
/// sixteenth of the source): memory and hit ns per scheme.
fn clustered() {
    println!("\n### 1% diverged in 16 contiguous runs (whole tracks)\n");
    println!("| scheme | memory_bytes() | get ns hit |");
    println!("|---|---|---|");
    let mut rng = Rng(11);
    let (span, run) = (TRACKS / 16, ONE_PCT / 16);
    let tracks: Vec<u64> = (0..16)
        .flat_map(|k| {
            let start = k * span + rng.below(span - run);
            start..start + run
        })
        .collect();
    let probe = sample(&tracks, &mut rng);
    for scheme in Scheme::ALL {
        let mut src = Counter(0);
        let mut map = new_map(scheme, TRACKS, &mut src).expect("map");
        diverge(map.as_mut(), &mut src, &tracks, Masks::Whole, &mut rng);
        let hit = time_gets(map.as_ref(), &probe);
        println!("| {scheme} | {} | {hit:.0} |", size(map.memory_bytes()));
    }
}

/// Resident bytes of this process.
fn rss() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<usize>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// What a child process measured.
struct Measured {
    insert_ns: f64,
    get_ns: f64,
    resident: usize,
    reported: usize,
}

/// A container the child builds: a changed-pointer store candidate or a
/// whole map.
trait Container {
    fn put(&mut self, t: u64, src: &mut Counter);
    fn hit(&self, t: u64) -> bool;
    fn reported(&self) -> usize;
}

impl Container for BTreeMap<u64, Entry> {
    fn put(&mut self, t: u64, _: &mut Counter) {
        self.insert(t, Entry { slot: t, valid: 1 });
    }
    fn hit(&self, t: u64) -> bool {
        self.get(&t).is_some()
    }
    fn reported(&self) -> usize {
        0
    }
}

impl Container for SparseTable<Entry> {
    fn put(&mut self, t: u64, _: &mut Counter) {
        self.insert(t, Entry { slot: t, valid: 1 });
    }
    fn hit(&self, t: u64) -> bool {
        self.get(t).is_some()
    }
    fn reported(&self) -> usize {
        self.memory_bytes()
    }
}

impl Container for Box<dyn TrackMap> {
    fn put(&mut self, t: u64, src: &mut Counter) {
        let slot = self.place(t, src).expect("counter never fails");
        self.set(
            t,
            Entry {
                slot,
                valid: 0xFFFF,
            },
        );
    }
    fn hit(&self, t: u64) -> bool {
        self.get(t).is_some()
    }
    fn reported(&self) -> usize {
        self.memory_bytes()
    }
}

/// Fills `c` with `tracks` and measures it; `before` is the resident size
/// before `c` was made.
fn measure(mut c: impl Container, tracks: &[u64], before: usize) -> Measured {
    let mut src = Counter(0);
    let start = Instant::now();
    for &t in tracks {
        c.put(t, &mut src);
    }
    let insert_ns = start.elapsed().as_nanos() as f64 / tracks.len() as f64;
    let resident = rss().saturating_sub(before);
    let probe = sample(tracks, &mut Rng(5));
    let get_ns = best_of(3, || {
        let start = Instant::now();
        black_box(probe.iter().filter(|&&t| c.hit(black_box(t))).count());
        start.elapsed().as_nanos() as f64 / probe.len() as f64
    });
    Measured {
        insert_ns,
        get_ns,
        resident,
        reported: c.reported(),
    }
}

fn best_of(n: usize, mut f: impl FnMut() -> f64) -> f64 {
    (0..n).map(|_| f()).fold(f64::MAX, f64::min)
}

/// Child mode: fills `kind` (btree, sparse or a scheme) with the first `n`
/// tracks of the random order and prints what [`Measured`] holds.
fn child(kind: &str, n: usize) {
    let order = shuffled(n as u64);
    let tracks = &order[..n.min(order.len())];
    let before = rss();
    let m = match kind {
        "btree" => measure(BTreeMap::new(), tracks, before),
        "sparse" => measure(SparseTable::new(), tracks, before),
        scheme => {
            let scheme: Scheme = scheme.parse().expect("scheme");
            let map = new_map(scheme, TRACKS, &mut Counter(0)).expect("map");
            measure(map, tracks, before)
        }
    };
    println!("{} {} {} {}", m.insert_ns, m.get_ns, m.resident, m.reported);
}

/// Runs child mode in a fresh process.
fn measure_child(kind: &str, n: u64) -> Option<Measured> {
    let exe = std::env::current_exe().ok()?;
    let out = std::process::Command::new(exe)
        .args(["--child", kind, &n.to_string()])
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?;
    let v: Vec<f64> = s
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    match v[..] {
        [insert_ns, get_ns, resident, reported] => Some(Measured {
            insert_ns,
            get_ns,
            resident: resident as usize,
            reported: reported as usize,
        }),
        _ => None,
    }
}

/// The changed-pointer store candidates, each in a fresh process.
fn candidates() {
    println!(
        "\n### changed-pointer store: chunked sorted table vs BTreeMap (random tracks, fresh process each)\n"
    );
    println!("| entries | container | insert ns | get hit ns | resident | memory_bytes() |");
    println!("|---|---|---|---|---|---|");
    for n in [ONE_PCT, TRACKS / 10] {
        for (kind, name) in [
            ("btree", "BTreeMap<u64, Entry>"),
            ("sparse", "SparseTable<Entry>"),
        ] {
            let Some(m) = measure_child(kind, n) else {
                println!("| {n} | {name} | child failed | | | |");
                continue;
            };
            let rep = if kind == "btree" {
                "n/a".into()
            } else {
                size(m.reported)
            };
            println!(
                "| {n} | {name} | {:.0} | {:.0} | {} | {rep} |",
                m.insert_ns,
                m.get_ns,
                size(m.resident)
            );
        }
    }
}

/// `memory_bytes` against what a fresh process holds resident, per
/// scheme at 1% diverged, whole tracks.
fn honesty() {
    println!(
        "\n### memory_bytes() vs resident growth, fresh process, 1% diverged (whole tracks)\n"
    );
    println!("| scheme | memory_bytes() | resident |");
    println!("|---|---|---|");
    for scheme in Scheme::ALL {
        match measure_child(scheme.name(), ONE_PCT) {
            Some(m) => println!("| {scheme} | {} | {} |", size(m.reported), size(m.resident)),
            None => println!("| {scheme} | child failed | |"),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let n = args.get(i + 2).and_then(|n| n.parse().ok()).unwrap_or(0);
        child(args.get(i + 1).map_or("", |s| s.as_str()), n);
        return;
    }
    let total = Instant::now();
    println!(
        "## copy_meta: FIG. 17 metadata schemes, 1 TiB source, 64 KiB tracks ({TRACKS} tracks)\n"
    );
    println!("machine: {}\n", machine());
    println!(
        "RAM: the largest maps are the 256 MiB full pointer table and ~{} of side tables at 50% \
         with partial masks; every configuration fits in 2 GiB, none is skipped.\n",
        size((HALF * 32) as usize)
    );
    let order = shuffled(HALF);
    println!(
        "| scheme | entries | create | mem 0% | mem 1% | mem 50% | get ns hit / miss @1% | get ns hit / miss @50% | place+set ns |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for masks in [Masks::Whole, Masks::Granule] {
        for scheme in Scheme::ALL {
            print_row(&run(scheme, masks, &order));
        }
    }
    println!(
        "\nmemory = `memory_bytes()` (capacities held; the full pointer table counts its whole \
         lazily-zeroed allocation). Diverged tracks are a random sample; `4K partial` entries \
         have one granule of 16 valid. get ns: best of 3 passes over {LOOKUPS} random tracks, \
         hits among the diverged, misses among the rest. place+set ns: mean over filling 0 -> 50%."
    );
    drop(order);
    clustered();
    candidates();
    honesty();
    println!("\ntotal {:.1} s", total.elapsed().as_secs_f64());
}
