#!/usr/bin/env bash
# ferrosan S-VOL group read benchmark (issue 19, seed 003), one run:
#
#   bench/svol.sh [--quick]
#
# A P-VOL of BENCH_SIZE (default 1G), written in full, paired with three
# S-VOLs on three disks of their own; an S-VOL group of the three as RO
# members; and a single volume with the same data on a disk of its own.
# Every one of those four disks is capped at BENCH_IOPS (default 2000)
# reads and writes a second (`disk inject --iops`: a spindle each, since
# this machine has one real disk). 4k random reads at qd32 (fio nbd engine
# over the Unix socket) of one RO member's export and of the single
# volume, runs alternating, BENCH_ROUNDS rounds of BENCH_RUNTIME s; the
# ratio is the median of the rounds' ratios (with its range), and the
# members' access frequencies (table 1200's Freq) show how the reads
# spread. Goal: >= 2.0.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
quick=0
[ "${1:-}" = "--quick" ] && quick=1
size=${BENCH_SIZE:-1G}
runtime=${BENCH_RUNTIME:-4}
rounds=${BENCH_ROUNDS:-5}
cap=${BENCH_IOPS:-2000}
if [ $quick = 1 ]; then size=${BENCH_SIZE:-256M}; runtime=${BENCH_RUNTIME:-2}; rounds=${BENCH_ROUNDS:-2}; fi
dir=${BENCH_DIR:-$root/target/bench-svol}
source bench/common/daemon.sh
start_daemon --fault-injection
bytes=$(to_bytes "$size")
for d in p m0 m1 m2 v; do
  f disk add "x$d" --size $((bytes + (256 << 20))) >/dev/null
  f group create "g$d" --raid concat --disks "x$d" >/dev/null
  f volume create "$d" --group "g$d" --size "$bytes" >/dev/null
done
for v in p v; do
  fio --name=fill --output=/dev/null --ioengine=nbd --uri="$(uri $v)" --rw=write --bs=1M --iodepth=8 --size="$bytes"
done
for m in m0 m1 m2; do f pair create p "$m" --wait >/dev/null; done
f svol-group create G --pvol p --member m0:ro --member m1:ro --member m2:ro >/dev/null
for d in m0 m1 m2 v; do f disk inject "x$d" --iops "$cap" >/dev/null; done
iops() { python3 -c "import json,sys;t=sys.stdin.read();d=json.loads(t[t.index('{'):]);print(int(d['jobs'][0]['read']['iops']))"; }
run() { fio --name=r --output-format=json --ioengine=nbd --uri="$(uri "$1")" --rw=randread --bs=4k \
  --iodepth=32 --size="$bytes" --time_based --runtime="$runtime" --randrepeat=0 | iops; }
echo "== S-VOL group of 3 RO members vs one volume, 4k random reads qd32, disks capped at $cap IOPS" >&2
ratios=(); one=(); group=()
for r in $(seq "$rounds"); do
  a=$(run v); b=$(run m0)
  one+=("$a"); group+=("$b")
  ratios+=("$(python3 -c "print($b/$a)")")
  echo "round $r: one volume $a IOPS, group member $b IOPS" >&2
done
freq=$(fj svol-group query G | python3 -c "import json,sys;g=json.load(sys.stdin);print(' '.join(f\"{m['lid']}={m['freq']}\" for m in g['members']))")
echo "one volume $(median "${one[@]}") IOPS; S-VOL group (3 RO) $(median "${group[@]}") IOPS; ratio $(median "${ratios[@]}") (goal >= 2.0); Freq $freq"
