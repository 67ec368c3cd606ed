#!/usr/bin/env bash
# ferrosan benchmark: ferrosan vs qemu-nbd vs the raw file, side by side in
# one run on the same machine and filesystem (issue 2).
#
#   bench/run.sh [--quick]
#
# - raw:      fio io_uring engine, O_DIRECT, on the file (the ceiling)
# - qemu-nbd: --cache=none --aio=native on the file
# - ferrosan: a single-disk concat volume on the file (O_DIRECT, io_uring)
# All three use the very same file and byte range (ferrosan adopts it as a
# disk; qemu-nbd and the raw runs skip its 1 MiB label area with an offset),
# because where a file lies on this virtual disk moves sequential figures
# by 10%. Both servers are reached the same way: fio's nbd engine over a
# Unix socket.
# Workloads: 4k random read/write qd32, 1M sequential read/write qd8, and a
# RAID-5 (4 disks) 4k random write qd32. Rounds alternate the servers so
# drift on this noisy machine hits both alike; each figure is the median.
#
# Environment: BENCH_DIR (default target/bench), BENCH_SIZE (default 2G),
# BENCH_RUNTIME seconds per run (default 10), BENCH_ROUNDS (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

quick=0
[ "${1:-}" = "--quick" ] && quick=1
size=${BENCH_SIZE:-2G}
runtime=${BENCH_RUNTIME:-10}
rounds=${BENCH_ROUNDS:-3}
if [ $quick = 1 ]; then size=${BENCH_SIZE:-1G}; runtime=${BENCH_RUNTIME:-4}; rounds=${BENCH_ROUNDS:-1}; fi
dir=${BENCH_DIR:-$root/target/bench}

for t in fio qemu-nbd python3; do
  command -v $t >/dev/null || { echo "error: $t is needed (apt-get install fio qemu-utils python3)" >&2; exit 1; }
done

echo "building ferrosan (release)..." >&2
cargo build --release -q
bin=$root/target/release/ferrosan

rm -rf "$dir"
mkdir -p "$dir"
pool=$dir/pool
raw=$dir/bench.img
results=$dir/results.jsonl
: > "$results"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

bytes=$(python3 -c "import sys;s='$size'.upper();m={'K':1<<10,'M':1<<20,'G':1<<30,'T':1<<40};print(int(float(s[:-1])*m[s[-1]]) if s[-1] in m else int(s))")

fill() { # fill a target with data so reads hit the disk, not holes
  fio --name=fill --output=/dev/null --rw=write --bs=1M --iodepth=8 --size="$bytes" "$@"
}

echo "preparing a $size file in $dir..." >&2
label=$((1 << 20))
truncate -s $((bytes + label)) "$raw"
fill --ioengine=io_uring --direct=1 --filename="$raw" --offset=$label

# ferrosan: its own pool adopting the file as its one disk, a concat group
# and a volume of exactly $size; and a RAID-5 of 4 disk files.
"$bin" --pool "$pool" serve --listen 127.0.0.1:0 >"$dir/ferrosan.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do [ -S "$pool/api.sock" ] && break; sleep 0.05; done
fs() { "$bin" --pool "$pool" "$@" >/dev/null; }
fs disk add b0 --path "$raw"
fs group create bench --raid concat --disks b0
fs volume create bench --group bench --size "$bytes"
r5size=$((bytes / 2))
for i in 0 1 2 3; do fs disk add r$i --size $((r5size / 3 + (2 << 20))); done
fs group create b5 --raid raid5 --disks r0,r1,r2,r3
fs volume create b5 --group b5 --size $(( (r5size / 3 * 3) / 65536 * 65536 ))
fsock=$pool/nbd.sock
fill --ioengine=nbd --uri="nbd+unix:///b5?socket=$fsock" --size=$(( (r5size / 3 * 3) / 65536 * 65536 ))

qsock=$dir/qemu.sock
qemu-nbd -f raw --cache=none --aio=native --offset=$label --persistent --shared=8 -x bench -k "$qsock" "$raw" &
pids+=($!)
for _ in $(seq 200); do [ -S "$qsock" ] && break; sleep 0.05; done

run() { # name target workload fio-args...
  local name=$1 target=$2 wl=$3; shift 3
  fio --name=b --output-format=json --output="$dir/last.json" --time_based --runtime="$runtime" \
      --ramp_time=1 --numjobs=1 --group_reporting "$@"
  python3 - "$name" "$target" "$wl" "$dir/last.json" <<'PY' >>"$results"
import json,sys
t=open(sys.argv[4]).read()
d=json.loads(t[t.index("{"):])
j=d["jobs"][0]
r,w=j["read"],j["write"]
print(json.dumps({"name":sys.argv[1],"target":sys.argv[2],"wl":sys.argv[3],
  "iops":r["iops"]+w["iops"],"bw":(r["bw_bytes"]+w["bw_bytes"]),
  "lat_us":((r["clat_ns"]["mean"] if r["iops"] else w["clat_ns"]["mean"])/1000)}))
PY
}

workloads=(
  "rand-read-4k:--rw=randread --bs=4k --iodepth=32"
  "rand-write-4k:--rw=randwrite --bs=4k --iodepth=32"
  "seq-read-1M:--rw=read --bs=1M --iodepth=8"
  "seq-write-1M:--rw=write --bs=1M --iodepth=8"
)
for round in $(seq "$rounds"); do
  echo "round $round/$rounds..." >&2
  for w in "${workloads[@]}"; do
    wl=${w%%:*}; args=${w#*:}
    # alternate the order of the three targets from round to round
    order=(raw qemu-nbd ferrosan)
    [ $((round % 2)) = 0 ] && order=(ferrosan qemu-nbd raw)
    for t in "${order[@]}"; do
      case $t in
        raw) run "$wl" raw "$wl" --ioengine=io_uring --direct=1 --filename="$raw" --offset=$label --size="$bytes" $args ;;
        qemu-nbd) run "$wl" qemu-nbd "$wl" --ioengine=nbd --uri="nbd+unix:///bench?socket=$qsock" $args ;;
        ferrosan) run "$wl" ferrosan "$wl" --ioengine=nbd --uri="nbd+unix:///bench?socket=$fsock" $args ;;
      esac
    done
  done
  run raid5-rand-write-4k ferrosan raid5-rand-write-4k --ioengine=nbd --uri="nbd+unix:///b5?socket=$fsock" \
    --rw=randwrite --bs=4k --iodepth=32
done

python3 - "$results" <<'PY'
import json,sys,statistics
rows=[json.loads(l) for l in open(sys.argv[1])]
def med(wl,t,k):
    v=[r[k] for r in rows if r["wl"]==wl and r["target"]==t]
    return statistics.median(v) if v else None
def fmt(wl,v):
    if v is None: return "-"
    return f"{v/1e6:,.0f} MB/s" if wl.startswith("seq") else f"{v:,.0f} IOPS"
key=lambda wl: "bw" if wl.startswith("seq") else "iops"
print()
print("| workload | raw file (io_uring, O_DIRECT) | qemu-nbd | ferrosan | ferrosan / qemu-nbd | ferrosan / raw |")
print("|---|---|---|---|---|---|")
ok=True
for wl in ["rand-read-4k","rand-write-4k","seq-read-1M","seq-write-1M"]:
    k=key(wl); raw=med(wl,"raw",k); q=med(wl,"qemu-nbd",k); f=med(wl,"ferrosan",k)
    rq=f/q if f and q else 0; rr=f/raw if f and raw else 0
    ok = ok and rq>=1.0
    print(f"| {wl} | {fmt(wl,raw)} | {fmt(wl,q)} | {fmt(wl,f)} | {rq:.2f} | {rr:.2f} |")
f=med("raid5-rand-write-4k","ferrosan","iops")
print(f"| raid5-rand-write-4k (4 disks) | - | - | {fmt('r',f)} | - | - |")
print()
print("acceptance (ferrosan / qemu-nbd >= 1.0 on all four):", "met" if ok else "NOT met")
PY
