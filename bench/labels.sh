#!/usr/bin/env bash
# What the copy stores' labels cost (issue 18 item 5), side by side:
#
#   OLD=path/to/ferrosan-before NEW=path/to/ferrosan-after bench/labels.sh
#
# Two daemons, one per binary, each on a pool of its own in the same
# directory (same filesystem): a 4 GiB disk, a concat group, a 1 GiB
# source filled with data (the rest is new space for the copies). Workloads, in rounds, the two daemons back to
# back (order swapped every round):
#   cow-first: a fresh A1 copy of the source, then one 4 KiB write into
#     each 64 KiB track of a 512 MiB region (fio strided zones, qd32):
#     every write preserves old data, and each preservation waits for a
#     metadata commit — the path where labels are written most often.
#   row-fsync: with one A2 copy, 4 KiB random writes to the source, qd32,
#     an fsync every 32 writes (a commit each), BENCH_RUNTIME seconds.
#   copy-read: 4 KiB random reads of that copy, qd32, BENCH_RUNTIME seconds
#     (each read planned on the copy tree and counted by the read fence
#     that keeps its slots from reuse, copy/fence.rs).
# BENCH_WORKLOADS picks some (default: all three).
# Prints each workload's median IOPS per binary and the median of the
# per-round ratios NEW/OLD with their range.
#
# Environment: OLD, NEW (required), BENCH_DIR (default target/bench-labels),
# BENCH_ROUNDS (default 5), BENCH_RUNTIME (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
: "${OLD:?set OLD to the ferrosan binary before labels}"
: "${NEW:?set NEW to the ferrosan binary with labels}"
rounds=${BENCH_ROUNDS:-5}
workloads=${BENCH_WORKLOADS:-cow-first row-fsync copy-read}
runtime=${BENCH_RUNTIME:-5}
dir=${BENCH_DIR:-$root/target/bench-labels}
for t in fio python3; do
  command -v $t >/dev/null || { echo "error: $t is needed" >&2; exit 1; }
done
rm -rf "$dir"
mkdir -p "$dir"
results=$dir/results.txt
: > "$results"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

start() { # name binary
  local pool=$dir/$1
  "$2" --pool "$pool" serve --listen 127.0.0.1:0 >"$dir/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do [ -S "$pool/api.sock" ] && [ -S "$pool/nbd.sock" ] && return; sleep 0.05; done
  echo "error: daemon $1 did not start" >&2; exit 1
}
fs() { local who=$1 bin=$2; shift 2; "$bin" --pool "$dir/$who" "$@" >/dev/null; }
uri() { echo "nbd+unix:///$2?socket=$dir/$1/nbd.sock"; }
iops() { python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print(int(sum(j['write']['iops']+j['read']['iops'] for j in d['jobs'])))" "$1"; }

for who in old new; do
  bin=$OLD; [ $who = new ] && bin=$NEW
  start $who "$bin"
  fs $who "$bin" disk add a --size 4G
  fs $who "$bin" group create ga --raid concat --disks a
  fs $who "$bin" volume create src --group ga --size 1G
  fs $who "$bin" volume create cw --group ga --size 512M
  for v in src cw; do
    fio --name=fill --ioengine=nbd --uri="$(uri $who $v)" --rw=write --bs=1M --iodepth=8 \
      --output=/dev/null >/dev/null 2>&1
  done
  fs $who "$bin" copy create src keep --mode row
done

run() { # who workload round
  local who=$1 w=$2 r=$3 bin=$OLD out=$dir/$1-$2-$3.json
  [ "$who" = new ] && bin=$NEW
  case $w in
    cow-first)
      fs "$who" "$bin" copy create cw "cw$r" --mode cow
      fio --name=cf --ioengine=nbd --uri="$(uri "$who" cw)" --rw=write --bs=4k --iodepth=32 \
        --zonemode=strided --zonesize=4k --zonerange=64k --size=512M --number_ios=8192 \
        --output-format=json --output="$out" >/dev/null 2>&1
      ;;
    row-fsync)
      fio --name=rf --ioengine=nbd --uri="$(uri "$who" src)" --rw=randwrite --bs=4k --iodepth=32 \
        --fsync=32 --time_based --runtime="$runtime" --ramp_time=1 \
        --output-format=json --output="$out" >/dev/null 2>&1
      ;;
    copy-read)
      fio --name=cr --ioengine=nbd --uri="$(uri "$who" keep)" --rw=randread --bs=4k --iodepth=32 \
        --time_based --runtime="$runtime" --ramp_time=1 \
        --output-format=json --output="$out" >/dev/null 2>&1
      ;;
  esac
  echo "$w $r $who $(iops "$out")" >> "$results"
}

for r in $(seq "$rounds"); do
  order="old new"; [ $((r % 2)) = 0 ] && order="new old"
  for w in $workloads; do
    for who in $order; do run "$who" "$w" "$r"; done
  done
done

python3 - "$results" $workloads <<'EOF'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
for w in sys.argv[2:]:
    by = {}
    for wl, r, who, v in rows:
        if wl == w:
            by.setdefault(r, {})[who] = int(v)
    old = [d["old"] for d in by.values()]
    new = [d["new"] for d in by.values()]
    ratios = sorted(d["new"] / d["old"] for d in by.values() if d["old"])
    print(f"{w}: old {st.median(old):.0f} IOPS, new {st.median(new):.0f} IOPS, "
          f"new/old {st.median(ratios):.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f}) over {len(ratios)} rounds")
EOF
