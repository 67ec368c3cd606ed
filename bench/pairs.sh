#!/usr/bin/env bash
# ferrosan mirror-pair benchmark (issue 19), one run, one report:
#
#   bench/pairs.sh [--quick]
#
# 1. Resync after 1%: a P-VOL of BENCH_SIZE (default 4G), written in full,
#    is paired (the initial copy: every track, timed from `pair create` to
#    PAIR), split, 1% of its tracks rewritten at random places (one 4 KiB
#    write each), and resynced (timed the same way). Ratio resync / initial
#    copy; goal <= 0.03.
# 2. Random writes in PAIR: 4k random writes at qd32 (fio nbd engine over
#    the Unix socket) to a volume unpaired and to the same volume in PAIR,
#    runs alternating, BENCH_ROUNDS rounds of BENCH_RUNTIME s; the ratio is
#    the median of the rounds' ratios (with its range); goal >= 0.7. P-VOL
#    and S-VOL are on two disk files of one filesystem: one device takes
#    both sides' writes, so where that device is the bottleneck a pair
#    can do no better than 0.5. Then the same with each disk file capped
#    at BENCH_IOPS (default 4000) reads and writes a second (`disk inject
#    --iops`: a spindle each, as an array's P-VOL and S-VOL are on
#    different disks): what pairing costs when the S-VOL's disk has its
#    own bandwidth.
# 3. Initial copy of a 64 GiB P-VOL with 1 GiB written (in 16 places of
#    64 MiB): time from `pair create` to PAIR; goal < 10 s.
# 4. Changed blocks: a 1 TiB pair, split, 1,000 4 KiB writes at random
#    places of the P-VOL; the time of `nbdinfo --map=qemu:dirty-bitmap:S`
#    over the whole volume (every block-status request it makes), median
#    of 5, beside `nbdinfo --size` (the same connection without the map:
#    process start and handshake); goal < 50 ms for the map.
#
# Every disk is a file in BENCH_DIR (default target/bench-pairs), sparse
# where nothing was written. BENCH_SECTIONS (default "1 2 3 4") picks the
# sections; section 2 needs section 1's volumes.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
quick=0
[ "${1:-}" = "--quick" ] && quick=1
size=${BENCH_SIZE:-4G}
runtime=${BENCH_RUNTIME:-4}
rounds=${BENCH_ROUNDS:-6}
if [ $quick = 1 ]; then size=${BENCH_SIZE:-1G}; runtime=${BENCH_RUNTIME:-2}; rounds=${BENCH_ROUNDS:-2}; fi
dir=${BENCH_DIR:-$root/target/bench-pairs}
source bench/common/daemon.sh
start_daemon --fault-injection
now() { date +%s.%N; }
bytes=$(to_bytes "$size")
big=$((64 << 30))
tib=$((1 << 40))
for d in a b; do
  f disk add "d$d" --size $((tib + big + bytes + (2 << 30))) >/dev/null
  f group create "g$d" --raid concat --disks "d$d" >/dev/null
done
iops() { python3 -c "import json,sys;t=sys.stdin.read();d=json.loads(t[t.index('{'):]);print(int(d['jobs'][0]['write']['iops']))"; }
# Times a pair command with --wait.
# A pair command's job, timed by asking the daemon every 5 ms (`timed_job`).
timed() { timed_job pair "$@"; }

sections=${BENCH_SECTIONS:-1 2 3 4}
on() { [[ " $sections " == *" $1 "* ]]; }
f volume create p --group ga --size "$bytes" >/dev/null
f volume create s --group gb --size "$bytes" >/dev/null
fio --name=fill --output=/dev/null --ioengine=nbd --uri="$(uri p)" --rw=write --bs=1M --iodepth=8 --size="$bytes"
if on 1; then
echo "== 1. resync after 1% vs the initial copy ($size)" >&2
full=$(timed create p s)
f pair split p s >/dev/null
tracks=$((bytes / 65536)); n=$((tracks / 100))
fio --name=one --output=/dev/null --ioengine=nbd --uri="$(uri p)" --rw=randwrite --bs=4k --iodepth=32 \
  --size="$bytes" --number_ios=$n --randrepeat=0 --norandommap=0 --random_distribution=random \
  --blockalign=64k
set_now=$(fj pair show p s | python3 -c "import json,sys;print(json.load(sys.stdin)['tracks_set'])")
resync=$(timed resync p s)
ratio1=$(python3 -c "print(f'{$resync/$full:.4f}')")
echo "initial copy ${full}s; resync of $set_now tracks (1% = $n) ${resync}s; ratio $ratio1 (goal <= 0.03)"
f pair delete p s >/dev/null
fi

if on 2; then
echo "== 2. 4k random writes qd32: PAIR vs unpaired" >&2
ws=$((1 << 30)); [ $ws -gt $bytes ] && ws=$bytes
run() { fio --name=w --output-format=json --ioengine=nbd --uri="$(uri p)" --rw=randwrite --bs=4k \
  --iodepth=32 --size=$ws --time_based --runtime="$runtime" --ramp_time=1 | iops; }
# capped CAP: one run with both disks capped at CAP IOPS (0: no cap); the
# initial copies between runs go uncapped.
capped() {
  local n
  if [ "$1" != 0 ]; then for d in da db; do f disk inject "$d" --iops "$1" >/dev/null; done; fi
  n=$(run)
  if [ "$1" != 0 ]; then for d in da db; do f disk inject "$d" --clear >/dev/null; done; fi
  echo "$n"
}
# rounds_of WHAT CAP: alternating unpaired and PAIR runs; prints the medians.
rounds_of() {
  local ratios=() solo=() paired=() a b
  for r in $(seq "$rounds"); do
    a=$(capped "$2")
    f pair create p s --overwrite --wait >/dev/null
    b=$(capped "$2")
    f pair delete p s >/dev/null
    solo+=("$a"); paired+=("$b")
    ratios+=("$(python3 -c "print($b/$a)")")
    echo "round $r ($1): unpaired $a, paired $b" >&2
  done
  echo "$1: unpaired $(median "${solo[@]}") IOPS; in PAIR $(median "${paired[@]}") IOPS; ratio $(median "${ratios[@]}") (goal >= 0.7)"
}
rounds_of "one device for both sides" 0
cap=${BENCH_IOPS:-4000}
rounds_of "a spindle each ($cap IOPS a disk)" "$cap"
fi

if on 3; then
echo "== 3. initial copy of a 64 GiB P-VOL with 1 GiB written" >&2
f volume create bp --group ga --size $big >/dev/null
f volume create bs --group gb --size $big >/dev/null
for i in $(seq 0 15); do
  fio --name=w$i --output=/dev/null --ioengine=nbd --uri="$(uri bp)" --rw=write --bs=1M --iodepth=8 \
    --offset=$((i * (big / 16))) --size=64M
done
t=$(timed create bp bs)
echo "initial copy of 64 GiB with 1 GiB written: ${t}s (goal < 10 s)"
fi

if on 4; then
echo "== 4. qemu:dirty-bitmap: of a 1 TiB pair with 1,000 changed extents" >&2
f volume create tp --group ga --size $tib >/dev/null
f volume create ts --group gb --size $tib >/dev/null
f pair create tp ts --wait >/dev/null
f pair split tp ts >/dev/null
fio --name=scatter --output=/dev/null --ioengine=nbd --uri="$(uri tp)" --rw=randwrite --bs=4k \
  --iodepth=32 --size=$tib --number_ios=1000 --blockalign=64k
extents=$(nbdinfo --map=qemu:dirty-bitmap:ts "$(uri tp)" | awk '$3 == 1' | wc -l)
map=(); bare=()
for i in 1 2 3 4 5; do
  t0=$(now); nbdinfo --map=qemu:dirty-bitmap:ts "$(uri tp)" >/dev/null; t1=$(now)
  nbdinfo --size "$(uri tp)" >/dev/null; t2=$(now)
  map+=("$(python3 -c "print(($t1-$t0)*1000)")"); bare+=("$(python3 -c "print(($t2-$t1)*1000)")")
done
echo "dirty-bitmap map of 1 TiB with $extents changed extents: $(median "${map[@]}") ms; nbdinfo without the map $(median "${bare[@]}") ms (goal < 50 ms)"
fi
