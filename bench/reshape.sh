#!/usr/bin/env bash
# ferrosan restripe benchmark (issue 21), one run, one report:
#
#   bench/reshape.sh [--quick]
#
# For each group size (4 GiB and 64 GiB: RAID-5 over three sparse disk
# files), RUNS times on a fresh pool: one volume over the whole group, its
# first GiB written; fio 4k random reads and writes (qd8) on that GiB
# through NBD for the whole run; the group restriped with a fourth disk
# added and the stripe halved (64K -> 32K: the seed's FIG. 9). Reported:
# - the switch's pause (every volume's gate closed, one commit, the
#   volumes put onto the new layout: `group reshape-status`'s pause_us),
#   median and max over the runs, for both sizes side by side (goal
#   < 10 ms, and not growing with the size);
# - the host's 4k latency (p50, p99, max) before the restripe and while it
#   runs, on the 4 GiB group;
# - the copy's time (ESTABLISH; unwritten space is copied as holes) and
#   the transfer's, on the 4 GiB group.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
quick=0
[ "${1:-}" = "--quick" ] && quick=1
runs=${RUNS:-5}
[ $quick = 1 ] && runs=${RUNS:-2}
dir=${BENCH_DIR:-$root/target/bench-reshape}
source bench/common/daemon.sh
field() { python3 -c "import json,sys;j=json.load(open('$1'));j=j['jobs'][0];print($2)"; }
status() { fj group reshape-status r 2>/dev/null || echo '{}'; }
jget() { python3 -c "import json,sys;j=json.loads(sys.argv[1]);print(j.get('$2',''))" "$1"; }

# setup MEMBER_BYTES: a fresh pool with group r and volume v, 1 GiB written.
setup() {
  rm -rf "$pool"
  start_daemon
  for d in a1 a2 a3 a4 b1 b2 b3; do f disk add $d --size "$1" >/dev/null; done
  f group create r --raid raid5 --disks a1,a2,a3 --stripe-size 64K >/dev/null
  local cap
  cap=$(fj group show r | python3 -c 'import json,sys;print(json.load(sys.stdin)["capacity"] // 65536 * 65536)')
  f volume create v --group r --size "$cap" >/dev/null
  fio --name=fill --output=/dev/null --ioengine=nbd --uri="$(uri v)" --rw=write --bs=1M --iodepth=8 --size=1G
}

stop_daemon() {
  kill "$daemon" 2>/dev/null || true
  wait "$daemon" 2>/dev/null || true
}

# host_io OUT: fio 4k random reads and writes on the first GiB, until INT.
host_io() {
  fio --output-format=json --output="$1" --name=h --ioengine=nbd --uri="$(uri v)" \
    --rw=randrw --bs=4k --iodepth=8 --size=1G --time_based --runtime=3600 >/dev/null &
  hostio=$!
}

# wait_phase PHASE: until the restripe is in PHASE or over (prints seconds).
wait_phase() {
  local t0 s
  t0=$(date +%s.%N)
  while :; do
    s=$(status)
    [ "$(jget "$s" phase)" = "$1" ] && break
    [ "$s" = '{}' ] && break
    sleep 0.01
  done
  python3 -c "import time;print(f'{$(date +%s.%N) - $t0:.2f}')"
}

declare -A pauses
for size in 4G 64G; do
  member=$(( $(to_bytes "$size") / 2 + (64 << 20) ))
  for run in $(seq "$runs"); do
    echo "== $size group, run $run" >&2
    setup "$member"
    if [ "$size" = 4G ] && [ "$run" = 1 ]; then
      fio --output-format=json --output="$dir/before.json" --name=h --ioengine=nbd --uri="$(uri v)" \
        --rw=randrw --bs=4k --iodepth=8 --size=1G --time_based --runtime=5 >/dev/null
    fi
    host_io "$dir/during-$size-$run.json"
    f group reshape r --add-disks a4 --stripe-size 32K --copy-disks b1,b2,b3 >/dev/null
    copy_s=$(wait_phase transfer)
    pause=$(jget "$(status)" pause_us)
    transfer_s=$(wait_phase none)
    kill -INT $hostio; wait $hostio || true
    pauses[$size]="${pauses[$size]:-} $pause"
    if [ "$size" = 4G ] && [ "$run" = 1 ]; then
      copy_4g=$copy_s; transfer_4g=$transfer_s
    fi
    stop_daemon
  done
done

us() { python3 -c "import statistics;v=[int(x) for x in '$1'.split()];print(f'median {statistics.median(v)/1000:.3f} ms, max {max(v)/1000:.3f} ms over {len(v)} switches')"; }
lat() {
  python3 - "$1" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.find("{"):])["jobs"][0]  # a signal can put a line first
out = []
for d in ("read", "write"):
    c = j[d]["clat_ns"]
    p = c.get("percentile", {})
    out.append(f"{d} {int(j[d]['iops'])} IOPS, p50 {p.get('50.000000', 0)//1000} us, p99 {p.get('99.000000', 0)//1000} us, max {c['max']//1000} us")
print("; ".join(out))
PY
}
echo
echo "RAID-5 of 3 sparse disk files -> 4 disks, stripe 64K -> 32K (FIG. 9); host: fio 4k randrw qd8 on the first GiB throughout"
echo "switch pause, 4 GiB group: $(us "${pauses[4G]}")"
echo "switch pause, 64 GiB group: $(us "${pauses[64G]}")"
echo "4 GiB group: copy onto the copy disks (to the switch) ${copy_4g} s, transfer ${transfer_4g} s (host I/O running)"
echo "host 4k, before: $(lat "$dir/before.json")"
echo "host 4k, during the 4 GiB restripe: $(lat "$dir/during-4G-1.json")"
