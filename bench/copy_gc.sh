#!/usr/bin/env bash
# ferrosan free-space collection benchmark (issue 18), one run, one report:
#
#   bench/copy_gc.sh
#
# 1. Churn: a 4 GiB disk, a concat group, a 1 GiB source with one
#    long-lived copy c0; fio writes 4k random at qd16 to the source for
#    BENCH_CHURN seconds (default 60) while a copy kN is created and
#    deleted every BENCH_EVERY seconds (default 0.5). Reports fio's errors,
#    the copies made, the group's held space at the end, and after
#    `copy gc --wait`, against the goal: at most 1.25 x the live data (the
#    1 GiB source's store) plus one 64 MiB chunk per image leaf.
# 2. Collection rate with the host idle: a 1 GiB source written whole
#    (0x71), a copy k, every other 64 KiB track of the source rewritten
#    (512 MiB), k deleted: the copy-gc job must move those 512 MiB into
#    the copy point's areas. Its bytes moved per second, against the same
#    disk's sequential write bandwidth measured just before (fio 1 MiB
#    writes to a plain volume): goal >= 0.5x; and against the device
#    doing the same reads and writes (fio on a scratch file beside it).
# 3. Host cost: 4k random writes qd32 to a plain volume on the same disk
#    while a collection of part 2's size runs (unthrottled), BENCH_ROUNDS
#    times (default 3): fio logs its IOPS every 100 ms with wall-clock
#    times, and the intervals inside the job's run (from the daemon's
#    log) are compared with those outside it, in the same fio run (runs
#    side by side swing more than the cost); goal: >= 0.8x.
# 4. Packing by active counts: a 4 GiB source with a long-lived copy
#    written sparsely (4 KiB in every 4 MiB, 1024 writes: a 4 MiB partial
#    area each). Reports what the copy's store held and read before, after
#    the collection the pool starts by itself, the job's time, and the
#    bound (1.25x what is read plus one area per leaf).
# 5. Host cost while packing: 4k random writes qd32 to the plain volume
#    while the pool packs a copy whose areas are half live; IOPS inside
#    the packing job's run against outside it, one fio run (goal >= 0.8).
#
# Environment: BENCH_DIR (default target/bench-copy-gc), BENCH_CHURN,
# BENCH_EVERY, BENCH_ROUNDS, BENCH_PACK (BENCH_CHURN=0 skips part 1,
# BENCH_ROUNDS=0 part 3, BENCH_PACK=0 parts 4 and 5); FERROSAN_BIN runs that
# binary instead of building one (to compare two builds side by side).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=${BENCH_DIR:-$root/target/bench-copy-gc}
target=${CARGO_TARGET_DIR:-$root/target}
churn=${BENCH_CHURN:-60}
every=${BENCH_EVERY:-0.5}
rounds=${BENCH_ROUNDS:-3}
pack=${BENCH_PACK:-1}

for t in fio python3 qemu-io; do
  command -v $t >/dev/null || { echo "error: $t is needed (apt-get install fio qemu-utils python3)" >&2; exit 1; }
done
avail=$(df -B1 --output=avail "$(dirname "$dir")" | tail -1 | tr -d ' ')
[ "$avail" -gt $((16 << 30)) ] || { echo "error: the run needs about 16 GiB free on the filesystem of $dir" >&2; exit 1; }

if [ -n "${FERROSAN_BIN:-}" ]; then
  bin=$FERROSAN_BIN
else
  echo "building ferrosan (release)..." >&2
  cargo build --release -q
  bin=$target/release/ferrosan
fi
rm -rf "$dir"
mkdir -p "$dir"
pool=$dir/pool
log=$dir/ferrosan.log
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

RUST_LOG=${RUST_LOG:-info} "$bin" --pool "$pool" serve --listen 127.0.0.1:0 >"$log" 2>&1 &
pid=$!
for _ in $(seq 200); do [ -S "$pool/api.sock" ] && [ -S "$pool/nbd.sock" ] && break; sleep 0.05; done
fs() { "$bin" --pool "$pool" "$@"; }
js() { "$bin" --pool "$pool" --json "$@"; }
uri() { echo "nbd+unix:///$1?socket=$pool/nbd.sock"; }
free_of() { js group show "$1" | python3 -c 'import json,sys;print(json.load(sys.stdin)["free"])'; }
fio_json() { # out.json fio-args...
  local out=$1; shift
  fio --output-format=json --output="$out" "$@" >/dev/null 2>"$dir/fio.err" || true
}
iops() { python3 -c 'import json,sys;j=json.load(open(sys.argv[1]))["jobs"][0];print(int(j["write"]["iops"]))' "$1"; }
errs() { python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["jobs"][0]["error"])' "$1"; }
mib() { echo $(( $1 >> 20 )); }
wait_gc() { # until no copy-gc job runs
  while js job list | python3 -c 'import json,sys;sys.exit(0 if any(j["kind"]=="copy-gc" and j["state"] in ("running","paused") for j in json.load(sys.stdin)) else 1)'; do
    sleep 0.1
  done
}

last_job() { js job list | python3 -c 'import json,sys;print(max([j["id"] for j in json.load(sys.stdin)] or [0]))'; }
# in_out LAST IOPS_LOG: fio's IOPS (logged every 100 ms with wall-clock
# times) inside the runs of the jobs after LAST (from the daemon's log)
# against outside them, the first second left out; prints "inside
# outside ratio seconds" or "- - - seconds" when either side has fewer
# than 5 intervals.
in_out() {
  python3 - "$log" "$1" "$2" <<'PY'
import re, sys, datetime
log, last, iops_log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
runs, ends = {}, {}
for line in open(log, errors="replace"):
    m = re.match(r"(\S+Z)\s+INFO ferrosan::jobs: job (\d+) (runs from|done)", line)
    if m and int(m.group(2)) > last:
        t = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp() * 1000
        (runs if m.group(3) == "runs from" else ends)[int(m.group(2))] = t
wins = [(runs[j], ends[j]) for j in runs if j in ends]
rows = [tuple(int(x) for x in l.split(",")[:2]) for l in open(iops_log) if l.strip()]
t0 = rows[0][0] + 1000 if rows else 0
inside = [v for t, v in rows if any(a <= t - 100 and t <= b for a, b in wins)]
outside = [v for t, v in rows if t >= t0 and not any(a - 100 <= t and t - 100 <= b for a, b in wins)]
secs = sum(b - a for a, b in wins) / 1000
if len(inside) < 5 or len(outside) < 5:
    print("-", "-", "-", f"{secs:.1f}")
else:
    i, o = sum(inside) / len(inside), sum(outside) / len(outside)
    print(int(i), int(o), f"{i / o:.2f}", f"{secs:.1f}")
PY
}
# busy_fio NAME SECONDS: 4k random writes qd32 to the plain volume, IOPS
# logged every 100 ms (in the background; $fpid).
busy_fio() {
  fio --output-format=json --output="$dir/$1.json" --name="$1" --ioengine=nbd --uri="$(uri plain)" \
    --rw=randwrite --bs=4k --iodepth=32 --time_based --runtime="$2" --size=1G \
    --write_iops_log="$dir/$1" --log_avg_msec=100 --log_unix_epoch=1 >/dev/null 2>"$dir/fio.err" &
  fpid=$!
}

# ------------------------------------------------------------ 1. churn
if [ "$churn" -gt 0 ]; then
  fs disk add a --size 4G >/dev/null
  fs group create ga --raid concat --disks a >/dev/null
  disk=$(free_of ga)
  fs volume create src --group ga --size 1G >/dev/null
  fs copy create src c0 ${BENCH_META:+--meta $BENCH_META} >/dev/null
  fio_json "$dir/pre.json" --name=pre --ioengine=nbd --uri="$(uri src)" --rw=randwrite --bs=4k \
    --iodepth=16 --time_based --runtime=8
  fio_json "$dir/churn.json" --name=churn --ioengine=nbd --uri="$(uri src)" --rw=randwrite --bs=4k \
    --iodepth=16 --time_based --runtime="$churn" &
  fpid=$!
  n=0
  failed=0
  while kill -0 $fpid 2>/dev/null; do
    if fs copy create src "k$n" >/dev/null 2>>"$dir/churn.err"; then
      sleep "$every"
      fs copy delete "k$n" >/dev/null 2>>"$dir/churn.err" || failed=$((failed + 1))
    else
      failed=$((failed + 1))
    fi
    n=$((n + 1))
  done
  wait $fpid || true
  held_end=$((disk - $(free_of ga)))
  fs copy gc --wait >/dev/null
  # Chunks given back are discarded in the background: the group counts
  # them free once that is done, when c0's store is all it lost.
  for _ in $(seq 300); do
    held_gc=$((disk - $(free_of ga)))
    chunks=$(js copy show c0 | python3 -c 'import json,sys;print(json.load(sys.stdin)["store_chunks"])')
    [ "$held_gc" -le $(( (1 << 30) + chunks )) ] && break
    sleep 0.1
  done
  vol=$((1 << 30))
  bound=$(( vol + vol * 5 / 4 + 2 * (64 << 20) ))
  echo "== 1. churn: ${churn} s of 4k random writes qd16 to a 1 GiB source with one long-lived copy, a copy created and deleted every ${every} s"
  echo "copies made: $n (failed commands: $failed); fio errors: $(errs "$dir/churn.json"), IOPS $(iops "$dir/churn.json") (before the churn, one copy: $(iops "$dir/pre.json"))"
  echo "group held: $(mib $held_end) MiB at the end, $(mib $held_gc) MiB after copy gc --wait; goal <= $(mib $bound) MiB (1 GiB source + 1.25 GiB store + 2 chunks)"
  fs copy delete c0 --wait >/dev/null
  fs volume delete src >/dev/null
fi

# ------------------------------------------------- 2. and 3. rate and cost
# Parts 2 and 3 hold a plain volume and a source with two generations of
# store (about 4.5 GiB at the peak): a disk of their own.
fs disk add b --size 8G >/dev/null
fs group create gb --raid concat --disks b >/dev/null
fs volume create plain --group gb --size 1G >/dev/null
fio_json "$dir/seq.json" --name=seq --ioengine=nbd --uri="$(uri plain)" --rw=write --bs=1M \
  --iodepth=8 --size=1G
seq_bw=$(python3 -c 'import json,sys;print(int(json.load(open(sys.argv[1]))["jobs"][0]["write"]["bw_bytes"]))' "$dir/seq.json")

# A pair to collect: 512 MiB of whole tracks to move.
prepare() { # volume name
  fs volume create "$1" --group gb --size 1G >/dev/null
  fs copy create "$1" "$1-c0" >/dev/null
  qemu-io -f raw -c "write -P 0x71 0 1G" -c flush "$(uri "$1")" >/dev/null
  fs copy create "$1" "$1-k" >/dev/null
  fio_json "$dir/half.json" --name=half --ioengine=nbd --uri="$(uri "$1")" --rw=write:64k --bs=64k \
    --iodepth=16 --size=1G
  [ "$(errs "$dir/half.json")" = 0 ] || { echo "error: preparing $1 failed: $(head -1 "$dir/fio.err")" >&2; exit 1; }
}
prepare g1
t0=$(date +%s%N)
fs copy delete g1-k >/dev/null
wait_gc
t1=$(date +%s%N)
moved=$((512 << 20))
wall=$(python3 -c "print(int($moved / (($t1 - $t0) / 1e9)))")
# The job's own time, from its log lines ("job N runs from ...", "job N
# done"): the command's round trips and the polling are not the collection.
job=$(js job list | python3 -c 'import json,sys;print(max(j["id"] for j in json.load(sys.stdin) if j["kind"]=="copy-gc"))')
rate=$(python3 - "$log" "$job" "$moved" <<'PY'
import re, sys, datetime
log, job, moved = sys.argv[1], sys.argv[2], int(sys.argv[3])
ts = {}
for line in open(log, errors="replace"):
    m = re.match(r"(\S+Z)\s+INFO ferrosan::jobs: job (\d+) (runs from|done)", line)
    if m and m.group(2) == job:
        ts[m.group(3)] = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
print(int(moved / (ts["done"] - ts["runs from"]).total_seconds()))
PY
)
# What the device under the disk files does: its sequential read
# bandwidth, and the ceiling for what the collection must do (read 512
# MiB and write 512 MiB in 64 KiB pieces, at once), fio on a scratch
# file beside them (written first: unwritten blocks read without I/O).
scratch=$dir/scratch
fio_json "$dir/seqwrite.json" --name=fill --filename="$scratch" --direct=1 --ioengine=io_uring \
  --rw=write --bs=1M --iodepth=8 --size=2G
fio_json "$dir/seqread.json" --name=seqread --filename="$scratch" --direct=1 --ioengine=io_uring \
  --rw=read --bs=1M --iodepth=8 --size=2G
read_bw=$(python3 -c 'import json,sys;print(int(json.load(open(sys.argv[1]))["jobs"][0]["read"]["bw_bytes"]))' "$dir/seqread.json")
fio_json "$dir/ceiling.json" --filename="$scratch" --direct=1 --ioengine=io_uring --bs=64k --iodepth=32 \
  --name=r --rw=randread --size=1G --io_size=512M --name=w --rw=randwrite --offset=1G --size=1G --io_size=512M
ceiling=$(python3 - "$dir/ceiling.json" "$moved" <<'PY'
import json, sys
jobs, moved = json.load(open(sys.argv[1]))["jobs"], int(sys.argv[2])
print(int(moved / (max(j["job_runtime"] for j in jobs) / 1000)))
PY
)
rm -f "$scratch"
ratio() { python3 -c "print(round($1 / $2, 2))"; }
echo
echo "== 2. collection with the host idle: 512 MiB of whole tracks merged"
echo "collection (job $job, from its log): $(mib "$rate") MiB/s; from the command to the end of the job: $(mib "$wall") MiB/s"
echo "against the disk's sequential write bandwidth through ferrosan (fio 1 MiB qd8, $(mib "$seq_bw") MiB/s): $(ratio "$rate" "$seq_bw")x (goal >= 0.5x; it reads and writes each byte)"
echo "against the device's sequential read bandwidth (fio 1 MiB qd8 on a file beside the disk, $(mib "$read_bw") MiB/s): $(ratio "$rate" "$read_bw")x"
echo "against the device doing the same I/O (fio: 512 MiB read and 512 MiB written in 64 KiB pieces at once, qd32 each: $(mib "$ceiling") MiB/s moved): $(ratio "$rate" "$ceiling")x"
fs copy delete g1-c0 --wait >/dev/null
fs volume delete g1 >/dev/null
# Part 3's fio runs outlast a collection several times slower than the
# idle one.
runtime=$(python3 -c "print(max(10, int(4 + ($t1 - $t0) / 1e9 * 8)))")

if [ "$rounds" -gt 0 ]; then
  echo
  echo "== 3. host 4k random writes qd32 to another volume while a collection of part 2's size runs"
  ratios=()
  for r in $(seq "$rounds"); do
    prepare "h$r"
    last=$(last_job)
    busy_fio "busy$r" "$runtime"
    sleep 2.5 # fio's first second is left out; then 1.5 s outside the collection
    fs copy delete "h$r-k" >/dev/null
    wait_gc
    wait "$fpid" || true
    read -r inside outside ratio secs < <(in_out "$last" "$dir"/busy${r}_iops.*.log)
    [ "$ratio" = - ] || ratios+=("$ratio")
    echo "round $r: $outside IOPS outside the collection, $inside IOPS during it ($ratio; it ran $secs s)"
    fs copy delete "h$r-c0" --wait >/dev/null
    fs volume delete "h$r" >/dev/null
  done
  echo "median ratio: $(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') (goal >= 0.8)"
fi

# ------------------------------------------------------------ 4. packing
if [ "$pack" != 0 ]; then
  fs volume create sp --group gb --size 4G >/dev/null
  fs copy create sp sp-c0 >/dev/null
  cmds=()
  for i in $(seq 0 1023); do cmds+=(-c "write -P 0x5a $((i * (4 << 20) + 8192)) 4k"); done
  qemu-io -f raw "${cmds[@]}" "$(uri sp-c0)" >/dev/null
  store() { js copy show sp-c0 | python3 -c 'import json,sys;j=json.load(sys.stdin);print(j["store_live"], j["store_held"])'; }
  read -r live0 held0 < <(store)
  bound=$(( live0 * 5 / 4 + 2 * (4 << 20) ))
  for _ in $(seq 600); do
    read -r live held < <(store)
    [ "$held" -le "$bound" ] && break
    sleep 0.1
  done
  wait_gc
  read -r live held < <(store)
  job=$(js job list | python3 -c 'import json,sys;print(max(j["id"] for j in json.load(sys.stdin) if j["kind"]=="copy-gc"))')
  secs=$(python3 - "$log" "$job" <<'PY'
import re, sys, datetime
log, job = sys.argv[1], sys.argv[2]
ts = {}
for line in open(log, errors="replace"):
    m = re.match(r"(\S+Z)\s+INFO ferrosan::jobs: job (\d+) (runs from|done)", line)
    if m and m.group(2) == job:
        ts[m.group(3)] = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
print(round((ts["done"] - ts["runs from"]).total_seconds(), 2))
PY
)
  echo
  echo "== 4. packing: a 4 GiB source's long-lived copy written 4 KiB in every 4 MiB"
  echo "before: $(mib "$held0") MiB held for $(mib "$live0") MiB read; after the collection the pool started by itself (job $job, ${secs} s): $(mib "$held") MiB held for $(mib "$live") MiB read; goal <= $(mib "$bound") MiB"
  fs copy delete sp-c0 --wait >/dev/null
  fs volume delete sp >/dev/null
fi

# --------------------------------------------- 5. host cost while packing
# A 2 GiB source's copy written every other track (each 4 MiB area half
# live: 2 GiB held for 1 GiB read), then fio writes 4k random qd32 to the
# plain volume while the pool packs that copy by itself. fio logs its
# IOPS every 100 ms with wall-clock times; the intervals inside the
# packing job's run (from the daemon's log) against those outside it.
if [ "$pack" != 0 ]; then
  last=$(last_job)
  fs volume create hp --group gb --size 2G >/dev/null
  fs copy create hp hp-c0 >/dev/null
  fio_json "$dir/sparse.json" --name=sparse --ioengine=nbd --uri="$(uri hp-c0)" --rw=write:64k --bs=64k \
    --iodepth=16 --size=2G
  [ "$(errs "$dir/sparse.json")" = 0 ] || { echo "error: writing hp-c0 failed: $(head -1 "$dir/fio.err")" >&2; exit 1; }
  busy_fio packbusy 20
  wait "$fpid" || true
  wait_gc
  read -r live held < <(js copy show hp-c0 | python3 -c 'import json,sys;j=json.load(sys.stdin);print(j["store_live"], j["store_held"])')
  read -r inside outside ratio secs < <(in_out "$last" "$dir"/packbusy_iops.*.log)
  echo
  echo "== 5. host 4k random writes qd32 to another volume while a copy's half-live areas are packed"
  echo "packing ran $secs s; host $outside IOPS outside it, $inside IOPS during it: $ratio (goal >= 0.8)"
  echo "the copy's store: $(mib "$held") MiB held for $(mib "$live") MiB read after packing"
fi
