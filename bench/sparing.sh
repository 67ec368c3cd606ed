#!/usr/bin/env bash
# ferrosan sparing benchmark (issue 20), one run, one report:
#
#   bench/sparing.sh [--quick]
#
# A RAID-5 group of 4 disk files of BENCH_SIZE each (default 1G), one
# volume over all of it, written in full; spares of the same size.
# 1. The device: sequential copy bandwidth of a file beside the disks (fio:
#    one job reading a file sequentially, one writing another, 1 MiB qd8
#    each, at once: what a copy of one disk to another moves), and 4k
#    random writes qd32 to the volume with nothing else running (idle).
# 2. A sparing copy with the host idle (`sparing start --wait`): member
#    bytes / seconds, against the device's copy bandwidth (goal >= 0.8).
# 3. A sparing copy while fio writes 4k at random, qd32, to the volume for
#    its whole length: the copy's time, and the host's IOPS and p50/p99
#    latency against (1) (goal >= 0.8 of idle). Today's sparing is the
#    seed's plain sparing (no write diversion): host writes keep reaching
#    every member, the failing one included (its reads are rebuilt from
#    the others). A copy is timed from `sparing start` to the first answer
#    of the daemon, asked every 5 ms, that its job is done (`timed_job`).
# 4. The same with a work volume on a disk of its own (`sparing
#    work-volume add`): the group's host writes go there during the copy
#    (seed 002's diversion), then are written back; the copy's time, the
#    host's IOPS and latency during it, and the write-back's time.
# 5. The same with secondary volumes (`--backup-storage secondary`): one
#    volume the size of the group's, made in a group of its own, written
#    at the volume's addresses in 64 KiB tracks (a track's first 4k write
#    merges the group's data), deleted after the write-back.
# 6. The same with a work disk (`sparing work-disk add`): the RAID layer's
#    disk-level writes for the host (data and parity, 4 KiB units) are
#    appended to it during the copy, then written back.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
quick=0
[ "${1:-}" = "--quick" ] && quick=1
size=${BENCH_SIZE:-1G}
[ $quick = 1 ] && size=${BENCH_SIZE:-256M}
dir=${BENCH_DIR:-$root/target/bench-sparing}
source bench/common/daemon.sh
start_daemon
bytes=$(to_bytes "$size")
now() { date +%s.%N; }
for d in m0 m1 m2 m3; do f disk add $d --size "$bytes" >/dev/null; done
f group create r5 --raid raid5 --disks m0,m1,m2,m3 >/dev/null
for s in s1 s2 s3; do f disk add $s --size "$bytes" --spare >/dev/null; done
# The work volume for section 4: on a disk and group of its own.
f disk add w0 --size $((2 * bytes)) >/dev/null
f group create gw --raid concat --disks w0 >/dev/null
vol=$(fj group show r5 | python3 -c "import json,sys;g=json.load(sys.stdin);print(g['free']//65536*65536)")
f volume create v --group r5 --size "$vol" >/dev/null
fio --name=fill --output=/dev/null --ioengine=nbd --uri="$(uri v)" --rw=write --bs=1M --iodepth=8 --size="$vol"
# A member holds a third of a 4-disk RAID-5's capacity: what a copy moves.
member=$(fj group show r5 | python3 -c "import json,sys;g=json.load(sys.stdin);print(g['capacity']//3)")
fio_json() { local out=$1; shift; fio --output-format=json --output="$out" "$@" >/dev/null; }
# A field of fio's JSON report (a signal can put a line before it).
field() { python3 -c "import json,sys;t=open(sys.argv[1]).read();d=json.loads(t[t.index('{'):]);j=d['jobs'][0]['write'];print($2)" "$1"; }

echo "== 1. the device and the idle host" >&2
# device_bw: the device's copy bandwidth now (bytes/s).
device_bw() {
  local a=$dir/scratch-a b=$dir/scratch-b
  fio --name=prep --output=/dev/null --filename="$a" --direct=1 --ioengine=io_uring --rw=write --bs=1M --iodepth=8 --size="$bytes"
  fio_json "$dir/copy.json" --direct=1 --ioengine=io_uring --bs=1M --iodepth=8 --size="$bytes" \
    --name=r --filename="$a" --rw=read --name=w --filename="$b" --rw=write
  python3 -c "
import json,sys
jobs=json.load(open(sys.argv[1]))['jobs']
print(int(int(sys.argv[2]) / (max(j['job_runtime'] for j in jobs) / 1000)))" "$dir/copy.json" "$bytes"
  rm -f "$a" "$b"
}
copy_bw=$(device_bw)
runtime=$([ $quick = 1 ] && echo 5 || echo 10)
fio_json "$dir/idle.json" --name=w --ioengine=nbd --uri="$(uri v)" --rw=randwrite --bs=4k --iodepth=32 \
  --size="$vol" --time_based --runtime="$runtime" --ramp_time=1
idle_iops=$(field "$dir/idle.json" "int(j['iops'])")
idle_p50=$(field "$dir/idle.json" "j['clat_ns']['percentile']['50.000000']//1000")
idle_p99=$(field "$dir/idle.json" "j['clat_ns']['percentile']['99.000000']//1000")

echo "== 2. sparing copy, host idle" >&2
idle_copy=$(timed_job sparing start m1 --spare s1)
idle_bw=$(python3 -c "print(int($member/$idle_copy))")
# The device's speed drifts within minutes here: measured again right
# after the copy, the copy is compared with the mean of both.
copy_bw_after=$(device_bw)
copy_bw2=$(( (copy_bw + copy_bw_after) / 2 ))

echo "== 3. sparing copy under 4k random writes qd32" >&2
fio --output-format=json --output="$dir/busy.json" --name=w --ioengine=nbd --uri="$(uri v)" \
  --rw=randwrite --bs=4k --iodepth=32 --size="$vol" --time_based --runtime=3600 --ramp_time=1 >/dev/null &
fiop=$!
sleep 2
busy_copy=$(timed_job sparing start m2 --spare s2)
kill -INT $fiop; wait $fiop || true
busy_bw=$(python3 -c "print(int($member/$busy_copy))")
busy_iops=$(field "$dir/busy.json" "int(j['iops'])")
busy_p50=$(field "$dir/busy.json" "j['clat_ns']['percentile']['50.000000']//1000")
busy_p99=$(field "$dir/busy.json" "j['clat_ns']['percentile']['99.000000']//1000")

# copy_under_writes NAME DISK SPARE [ARGS]: spares DISK onto SPARE (with
# ARGS) under the 4k random writes of section 3, then waits for the
# write-back; sets NAME_copy, NAME_wb, NAME_bw, NAME_iops, NAME_p50, NAME_p99.
copy_under_writes() {
  local name=$1 disk=$2 spare=$3; shift 3
  fio --output-format=json --output="$dir/$name.json" --name=w --ioengine=nbd --uri="$(uri v)" \
    --rw=randwrite --bs=4k --iodepth=32 --size="$vol" --time_based --runtime=3600 --ramp_time=1 >/dev/null &
  local fiop=$!
  sleep 2
  local copy; copy=$(timed_job sparing start "$disk" --spare "$spare" "$@")
  kill -INT $fiop; wait $fiop || true
  local t0; t0=$(now)
  while [ "$(fj sparing status | python3 -c "import json,sys;print(len(json.load(sys.stdin)['sparings']))")" != 0 ]; do
    sleep 0.05
  done
  printf -v "${name}_copy" %s "$copy"
  printf -v "${name}_wb" %s "$(python3 -c "print(f'{$(now)-$t0:.2f}')")"
  printf -v "${name}_bw" %s "$(python3 -c "print(int($member/$copy))")"
  printf -v "${name}_iops" %s "$(field "$dir/$name.json" "int(j['iops'])")"
  printf -v "${name}_p50" %s "$(field "$dir/$name.json" "j['clat_ns']['percentile']['50.000000']//1000")"
  printf -v "${name}_p99" %s "$(field "$dir/$name.json" "j['clat_ns']['percentile']['99.000000']//1000")"
}

echo "== 4. sparing copy under the same writes, diverted to a work volume" >&2
f volume create wv --group gw --size $((2 * bytes - (64 << 20))) >/dev/null
f sparing work-volume add wv >/dev/null
copy_under_writes div m3 s3

echo "== 5. sparing copy under the same writes, diverted to secondary volumes" >&2
f disk add s4 --size "$bytes" --spare >/dev/null
f disk add x0 --size $((3 * bytes + (256 << 20))) >/dev/null
f group create gs --raid concat --disks x0 >/dev/null
copy_under_writes sec m0 s4 --backup-storage secondary

echo "== 6. sparing copy under the same writes, diverted to a work disk" >&2
f disk add s5 --size "$bytes" --spare >/dev/null
f disk add wd0 --size $((2 * bytes)) >/dev/null
f sparing work-disk add wd0 >/dev/null
copy_under_writes wdk s1 s5 --backup-storage work-disk

mib() { python3 -c "print(round($1/1048576))"; }
ratio() { python3 -c "print(round($1/$2, 2))"; }
echo
echo "RAID-5 of 4 x $size disk files, volume $(mib "$vol") MiB written in full; member $(mib "$member") MiB"
echo "device copy bandwidth (fio: read one file, write another, 1 MiB qd8 each at once): $(mib "$copy_bw") MiB/s"
echo "device copy bandwidth right after the idle sparing copy: $(mib "$copy_bw_after") MiB/s"
echo "sparing copy, host idle: ${idle_copy} s, $(mib "$idle_bw") MiB/s = $(ratio "$idle_bw" "$copy_bw2")x the device, the mean of before and after (goal >= 0.8)"
echo "sparing copy, host writing: ${busy_copy} s, $(mib "$busy_bw") MiB/s = $(ratio "$busy_bw" "$copy_bw")x the device"
echo "host 4k random writes qd32: idle $idle_iops IOPS (p50 ${idle_p50} us, p99 ${idle_p99} us); during the copy $busy_iops IOPS (p50 ${busy_p50} us, p99 ${busy_p99} us) = $(ratio "$busy_iops" "$idle_iops")x idle (goal >= 0.8)"
echo "  (plain sparing, no work volume: host writes reach every member)"
echo "diverted to a work volume: copy ${div_copy} s, $(mib "$div_bw") MiB/s = $(ratio "$div_bw" "$copy_bw")x the device; host 4k random writes qd32 during it $div_iops IOPS (p50 ${div_p50} us, p99 ${div_p99} us) = $(ratio "$div_iops" "$idle_iops")x idle (goal >= 0.8); write-back after it ${div_wb} s"
echo "diverted to secondary volumes: copy ${sec_copy} s, $(mib "$sec_bw") MiB/s = $(ratio "$sec_bw" "$copy_bw")x the device; host 4k random writes qd32 during it $sec_iops IOPS (p50 ${sec_p50} us, p99 ${sec_p99} us) = $(ratio "$sec_iops" "$idle_iops")x idle (goal >= 0.8); write-back after it ${sec_wb} s"
echo "diverted to a work disk: copy ${wdk_copy} s, $(mib "$wdk_bw") MiB/s = $(ratio "$wdk_bw" "$copy_bw")x the device; host 4k random writes qd32 during it $wdk_iops IOPS (p50 ${wdk_p50} us, p99 ${wdk_p99} us) = $(ratio "$wdk_iops" "$idle_iops")x idle (goal >= 0.8); write-back after it ${wdk_wb} s"
