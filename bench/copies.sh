#!/usr/bin/env bash
# ferrosan instant-copy benchmark (issue 3), one run, one report:
#
#   bench/copies.sh [--quick]
#
# 1. Copy creation time of a 1 GiB and a 1 TiB (sparse) source, row (A2)
#    and cow (A1): `ferrosan --json copy create` end to end, the API round
#    trip alone (curl on api.sock: no CLI process start), and the daemon's
#    own figure from its log line `copy NAME of SRC taken in X ms (scheme)`
#    when the daemon prints it. The first copy of a volume also makes its
#    family; the next ones join it. Then one copy per metadata scheme.
# 2. Metadata memory per TiB at 0/1/50% diverged per scheme: the table of
#    `cargo bench --bench copy_meta` (bench/copy_meta.rs, 1 TiB source).
# 3. 4k random-write IOPS (fio nbd engine, qd32, direct) to the SOURCE of
#    copies, each source on a single-disk concat group of its own, row
#    (A2) and cow (A1), with 1, 10 and 64 live copies, against the same
#    volume with no copy:
#    - first writes: every write hits a track never written since the
#      newest copy, which is made fresh for each round. fio's strided
#      zones (64 KiB zone, 4 KiB per zone) put one 4 KiB write in each
#      track, track after track; at most one write per track (number_ios
#      caps the run), so 100% are first writes. The region (BENCH_FW_SIZE)
#      is cut into BENCH_SLICES slices, and slice after slice every target
#      writes that slice, targets back to back. The no-copy baseline runs
#      the same pattern.
#    - rewrites: the first 1 GiB of each source is then written once
#      sequentially (every track diverged from the copy), and BENCH_REPS
#      time-based 4k randwrite runs per target over that 1 GiB, targets
#      back to back, measure rewrites. The no-copy baseline is the same
#      randwrite on a volume that never had a copy.
#    10 and 64 copies: 9 and 63 older copies, each made after 512 random
#    4k writes to the source (so the copies differ), plus the fresh one.
# 4. Peer: qemu-nbd (--cache=none --aio=native) serving a fresh qcow2
#    overlay (64 KiB clusters) over a raw backing file of the same size and
#    contents on the same filesystem, same two workloads.
# All volumes and the backing file are filled with data first, so copy-out
# and qcow2 COW read real blocks, not holes. The order of the targets is
# rotated (and reversed every other time) from slice to slice and run to
# run. Every figure is the median over all runs; every ratio the median of
# the ratios of runs back to back (same round and slice, or same round and
# rewrite run), with their range. On this disk a slow spell lasts a minute
# or two and moved the earlier one-10-s-run-per-target ratios by +-20%.
# Before each run the disk is let drain (no request in flight in
# /proc/diskstats, at most 5 s; BENCH_SETTLE=0 skips it): A2 first writes
# run right after the A1 targets' flush-heavy runs fell to 2-5k IOPS.
# A deletion that starts a fold job (the last copy gone) waits for it
# (`copy delete --wait`), so no background move runs into the next
# measurement.
#
# Environment: BENCH_DIR (default target/bench-copies), BENCH_RUNTIME
# seconds per rewrite run after 1 s of ramp, and the cap of a first-write
# run (default 4), BENCH_ROUNDS (default 3), BENCH_SLICES first-write
# slices per round (default 4), BENCH_REPS rewrite runs per target per
# round (default 4), BENCH_FW_SIZE the first-write region and volume
# size (default 4G), BENCH_CREATES copies
# timed per source (default 5), BENCH_BIG_DISK size of each of the two
# sparse disks of the 1 TiB group (default 3584G: room for the 1 TiB
# bitmap areas), BENCH_META=0 skips the copy_meta run, BENCH_CREATION=0
# skips section 1, BENCH_TARGETS (default "nc row1 row10 row64 cow1 cow10
# cow64 qcow2") picks the section 3/4 targets.
# --quick: 1 round, 2 slices, 2 rewrite runs of 2 s, 2G region, 3 creations.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

quick=0
[ "${1:-}" = "--quick" ] && quick=1
runtime=${BENCH_RUNTIME:-4}
rounds=${BENCH_ROUNDS:-3}
slices=${BENCH_SLICES:-4}
reps=${BENCH_REPS:-4}
fw=${BENCH_FW_SIZE:-4G}
creates=${BENCH_CREATES:-5}
if [ $quick = 1 ]; then
  runtime=${BENCH_RUNTIME:-2}; rounds=${BENCH_ROUNDS:-1}; slices=${BENCH_SLICES:-2}; reps=${BENCH_REPS:-2}
  fw=${BENCH_FW_SIZE:-2G}; creates=${BENCH_CREATES:-3}
fi
bigdisk=${BENCH_BIG_DISK:-3584G}
dir=${BENCH_DIR:-$root/target/bench-copies}
target=${CARGO_TARGET_DIR:-$root/target}

for t in fio qemu-nbd qemu-img python3 curl; do
  command -v $t >/dev/null || { echo "error: $t is needed (apt-get install fio qemu-utils python3 curl)" >&2; exit 1; }
done

echo "building ferrosan (release) and the copy_meta bench..." >&2
cargo build --release -q
[ "${BENCH_META:-1}" != 0 ] && cargo bench -q --bench copy_meta --no-run 2>/dev/null
bin=$target/release/ferrosan

rm -rf "$dir"
mkdir -p "$dir"
pool=$dir/pool
log=$dir/ferrosan.log
results=$dir/results.jsonl
creations=$dir/creations.jsonl
: > "$results"
: > "$creations"
t_start=$(date +%s)

pids=()
qpid=
cleanup() {
  [ -n "$qpid" ] && kill "$qpid" 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

bytes() { python3 -c "import sys;s='$1'.upper();m={'K':1<<10,'M':1<<20,'G':1<<30,'T':1<<40};print(int(float(s[:-1])*m[s[-1]]) if s[-1] in m else int(s))"; }
fwbytes=$(bytes "$fw")
tracks=$((fwbytes / 65536))
rw_region=$((1 << 30))
[ "$fwbytes" -ge "$rw_region" ] || { echo "error: BENCH_FW_SIZE must be at least 1G" >&2; exit 1; }
# Room on the filesystem: at fw=4G the run at d2ccfc6 took 8.1-8.2 GiB per
# A2 target, 5.2-5.4 per A1 target, 4.1 each for no copy, the raw file and
# the qcow2 overlay, and 2.1 for section 1 — about 14 x fw in all. A run
# that runs out of room fails in its second round; say so before starting.
need=$((14 * fwbytes + (2 << 30)))
avail=$(df -B1 --output=avail "$(dirname "$dir")" | tail -1 | tr -d ' ')
if [ "$avail" -lt "$need" ]; then
  echo "error: the run needs about $((need >> 30)) GiB on the filesystem of $dir, which has $((avail >> 30)) GiB free; free space or set BENCH_FW_SIZE lower (ratios hold at 2G)" >&2
  exit 1
fi

# -------------------------------------------------------------- the daemon
# RUST_LOG=info: the daemon logs each copy point with its paused time (section 1).
RUST_LOG=${RUST_LOG:-info} "$bin" --pool "$pool" serve --listen 127.0.0.1:0 >"$log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do [ -S "$pool/api.sock" ] && [ -S "$pool/nbd.sock" ] && break; sleep 0.05; done
fs() { "$bin" --pool "$pool" "$@" >/dev/null; }
fsock=$pool/nbd.sock
api=$pool/api.sock
now_ns() { date +%s%N; }
fioq() { # fio, its chatter to a file; on failure show it and stop
  fio "$@" 2>"$dir/fio.err" || { echo "error: fio $* failed:" >&2; tail -5 "$dir/fio.err" >&2; return 1; }
}

# The daemon's own figure for copy NAME of SRC, from its log ("" if none).
server_ms() {
  sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E "copy $1 of $2 taken in [0-9.]+ ms" | tail -1 |
    sed -E 's/.*taken in ([0-9.]+) ms.*/\1/' || true
}

# copy_cli SRC NAME LABEL [args...]: `copy create` through the CLI, timed
# end to end; records the figures in $creations.
copy_cli() {
  local src=$1 name=$2 label=$3; shift 3
  local t0 t1
  t0=$(now_ns)
  "$bin" --pool "$pool" --json copy create "$src" "$name" "$@" >"$dir/copy.json"
  t1=$(now_ns)
  python3 - "$label" "$name" "$src" "$(( t1 - t0 ))" "$(server_ms "$name" "$src")" "$dir/copy.json" <<'PY' >>"$creations"
import json,sys
label,name,src,ns,srv,f=sys.argv[1:7]
c=json.load(open(f))
print(json.dumps({"label":label,"name":name,"src":src,"via":"cli","ms":int(ns)/1e6,
  "server_ms":float(srv) if srv else None,"scheme":c.get("scheme"),"mode":c.get("mode")}))
PY
}

# copy_api SRC NAME LABEL [json fields]: POST /v1/copies with curl, timed
# by curl (connect to reply).
copy_api() {
  local src=$1 name=$2 label=$3 extra=${4:-}
  local out
  out=$(curl -s -o "$dir/copy.json" -w '%{http_code} %{time_total}' --unix-socket "$api" \
    -X POST -H 'content-type: application/json' \
    -d "{\"source\":\"$src\",\"name\":\"$name\"$extra}" http://localhost/v1/copies)
  python3 - "$label" "$name" "$src" "$out" "$(server_ms "$name" "$src")" "$dir/copy.json" <<'PY' >>"$creations"
import json,sys
label,name,src,out,srv,f=sys.argv[1:7]
code,t=out.split()
c=json.load(open(f))
if code!="201":
    print(json.dumps({"label":label,"name":name,"src":src,"via":"api","error":f"HTTP {code}: {c.get('message')}"}))
else:
    print(json.dumps({"label":label,"name":name,"src":src,"via":"api","ms":float(t)*1e3,
      "server_ms":float(srv) if srv else None,"scheme":c.get("scheme"),"mode":c.get("mode")}))
PY
}

# The disk under $dir, by its /proc/diskstats name (none on some
# filesystems: then settle does nothing).
ddev=$(basename "$(df --output=source "$dir" | tail -1)")
settle() { # until the disk has no request in flight (at most 5 s)
  [ "${BENCH_SETTLE:-1}" = 0 ] && return 0
  local i n
  for i in $(seq 100); do
    n=$(awk -v d="$ddev" '$3 == d {print $12}' /proc/diskstats)
    [ "${n:-0}" = 0 ] && return 0
    sleep 0.05
  done
}

run() { # name target fio-args...
  local wl=$1 tgt=$2; shift 2
  # The previous target's writes (and the filesystem's journal after
  # them) drained first, so one target's traffic does not slow the next.
  settle
  if ! fio --name=b --output-format=json --output="$dir/last.json" --numjobs=1 --group_reporting \
      --bs=4k --iodepth=32 "$@" 2>"$dir/fio.err"; then
    echo "warning: $wl on $tgt failed: $(grep -m1 -i error "$dir/fio.err")" >&2
    python3 -c "import json,sys;print(json.dumps({'wl':sys.argv[1],'target':sys.argv[2],'error':sys.argv[3]}))" \
      "$wl" "$tgt" "$(grep -m1 -i error "$dir/fio.err")" >>"$results"
    return 0
  fi
  python3 - "$wl" "$tgt" "$dir/last.json" "${cur_round:-0}" "${cur_rep:-0}" <<'PY' >>"$results"
import json,sys
t=open(sys.argv[3]).read()
d=json.loads(t[t.index("{"):])
j=d["jobs"][0]
w=j["write"]
print(json.dumps({"wl":sys.argv[1],"target":sys.argv[2],"round":int(sys.argv[4]),"rep":int(sys.argv[5]),"iops":w["iops"],"ios":w["total_ios"],
  "runtime_ms":w["runtime"],"lat_us":w["clat_ns"]["mean"]/1000,
  "p99_us":w["clat_ns"].get("percentile",{}).get("99.000000",0)/1000}))
PY
}
# ------------------------------------------------- 1. copy creation time
if [ "${BENCH_CREATION:-1}" != 0 ]; then
echo "1. copy creation: 1 GiB and 1 TiB sources..." >&2
fs disk add h0 --size "$bigdisk"
fs disk add h1 --size "$bigdisk"
fs group create big --raid concat --disks h0,h1
fs disk add s0 --size 512G
fs group create small --raid concat --disks s0
schemes=(full-pointer changed-pointer bitmap multilevel-bitmap partial-bitmap)
for size in 1G 1T; do
  group=small; [ $size = 1T ] && group=big
  for mode in row cow; do
    v=c$size-$mode
    fs volume create "$v" --group $group --size $size
    copy_cli "$v" "$v-first" "$size $mode first" --mode $mode
    for i in $(seq "$creates"); do
      copy_cli "$v" "$v-cli$i" "$size $mode next"
      copy_api "$v" "$v-api$i" "$size $mode next"
    done
    for s in "${schemes[@]}"; do
      copy_api "$v" "$v-$s" "$size $mode scheme $s" ",\"meta\":\"$s\""
    done
  done
done

# 1b. A source that was just written, and one under write load: the copy
# point makes everything written so far durable first.
gib=$((1 << 30))
for mode in row cow; do
  v=w1G-$mode
  fs volume create "$v" --group small --size 1G
  fioq --name=w --output=/dev/null --rw=write --bs=1M --iodepth=8 --size=$gib \
    --ioengine=nbd --uri="nbd+unix:///$v?socket=$fsock"
  copy_cli "$v" "$v-first" "1G $mode written first" --mode $mode
  # first writes right after the first copy of a thick volume (new family)
  run first "newfam-$mode" --ioengine=nbd --uri="nbd+unix:///$v?socket=$fsock" --rw=randwrite \
    --zonemode=strided --zonerange=64k --zonesize=4k --size=$gib --number_ios=$((gib / 65536)) --runtime="$runtime"
  copy_cli "$v" "$v-after" "1G $mode written after"
  fio --name=load --output-format=json --output="$dir/load-$mode.json" --ioengine=nbd \
    --uri="nbd+unix:///$v?socket=$fsock" --rw=randwrite --bs=4k --iodepth=32 --size=$gib \
    --time_based --runtime=$((creates + 2)) 2>"$dir/load.err" &
  lp=$!
  sleep 1
  for i in $(seq "$creates"); do copy_api "$v" "$v-load$i" "1G $mode load"; sleep 0.5; done
  wait $lp || echo "warning: the load run on $v failed: $(cat "$dir/load.err")" >&2
done

# The copies go again: the I/O runs below start from a quiet pool.
"$bin" --pool "$pool" --json copy list >"$dir/copies1.json"
python3 -c "import json,sys;[print(c['name']) for c in json.load(open(sys.argv[1]))]" "$dir/copies1.json" |
  while read -r c; do fs copy delete "$c" --wait </dev/null; done
fi

# ------------------------------------------------------- 2. copy_meta
# Its memory figures are deterministic (fixed seed), so it runs during the
# I/O setup below, which is not measured; its ns columns are disturbed by
# that and are not reported.
meta_out=$dir/copy_meta.md
meta_pid=
if [ "${BENCH_META:-1}" != 0 ]; then
  echo "2. cargo bench --bench copy_meta (in the background)..." >&2
  { cargo bench -q --bench copy_meta >"$meta_out" 2>"$dir/copy_meta.err" ||
      echo "(copy_meta failed: see $dir/copy_meta.err)" >"$meta_out"; } &
  meta_pid=$!
  pids+=("$meta_pid")
else
  echo "(skipped: BENCH_META=0)" >"$meta_out"
fi

# --------------------------------------- 3./4. setup: volumes and copies
targets=(${BENCH_TARGETS:-nc row1 row10 row64 cow1 cow10 cow64 qcow2})
vols=()
for t in "${targets[@]}"; do [ "$t" != qcow2 ] && vols+=("$t"); done
echo "3. I/O setup: filling ${#vols[@]} volumes and a raw file of $fw..." >&2
# Each source has a disk (and a concat group) of its own, so that what one
# source's copies did to their disk file (its extents, its holes) cannot
# slow another source's writes: the figures compare copy counts, not
# places in one shared file. Sparse and logically large: after each copy,
# random writes to the source take new space in whole partial-bitmap
# areas (512 random 4k writes to a 2 GiB source took 2 GiB of group
# space), so 64 generations of copies need a lot of logical room; the
# file only holds what is written.
bdisk=$(( 64 * fwbytes + (64 << 30) ))
space() { # label: each group's free space and its disk's physical size, for the report
  local v f
  for v in "${vols[@]}"; do
    f=$("$bin" --pool "$pool" --json group show "g-$v" | python3 -c "import json,sys;g=json.load(sys.stdin);print(g['capacity'],g['free'])")
    echo "{\"label\":\"$1\",\"group\":\"g-$v\",\"capacity\":${f% *},\"free\":${f#* },\"disk_bytes\":$(du -B1 "$pool/disks/d-$v.img" | cut -f1),\"extents\":$(filefrag "$pool/disks/d-$v.img" 2>/dev/null | grep -oE '[0-9]+ extents? found' | grep -oE '^[0-9]+' || echo null)}" >>"$dir/space.jsonl"
  done
}
: > "$dir/space.jsonl"
for v in "${vols[@]}"; do
  fs disk add "d-$v" --size $bdisk
  fs group create "g-$v" --raid concat --disks "d-$v"
  fs volume create "$v" --group "g-$v" --size "$fwbytes"
done
fillargs=(--output=/dev/null --rw=write --bs=1M --iodepth=8 --size="$fwbytes")
for v in "${vols[@]}"; do
  fioq --name=a --ioengine=nbd --uri="nbd+unix:///$v?socket=$fsock" "${fillargs[@]}"
done
base=$dir/base.raw
truncate -s "$fwbytes" "$base"
fioq --name=b --ioengine=io_uring --direct=1 --filename="$base" "${fillargs[@]}"

scatter() { # 512 random 4k writes to volume $1
  fioq --name=s --output=/dev/null --ioengine=nbd --uri="nbd+unix:///$1?socket=$fsock" \
    --rw=randwrite --bs=4k --iodepth=32 --size="$fwbytes" --number_ios=512 --randrepeat=0
}
space "after filling the volumes"
echo "making the older copies (9 for 10 copies, 63 for 64)..." >&2
for v in "${vols[@]}"; do
  n=${v##*[a-z]}
  mode=${v%%[0-9]*}
  case $v in
    nc) ;;
    *1) # one copy made and deleted, so that its family was made and
        # folded once like every later round's
      scatter "$v"
      fs copy create "$v" "$v-prime" --mode "$mode"
      scatter "$v"
      fs copy delete "$v-prime" --wait ;;
    *)
      for i in $(seq $((n - 1))); do
        scatter "$v"
        fs copy create "$v" "$v-old$i" --mode "$mode"
      done ;;
  esac
done
space "after making the older copies"

# Each round measures every target side by side in short runs, so that
# a ratio compares runs seconds apart: on this disk a slow spell lasts a
# minute or two and moved one-run-per-target ratios by +-20%.
# - first writes: the region is cut into $slices slices; slice after slice,
#   every target writes that slice (order rotated), so each target's runs
#   of a round are first writes to tracks never written since its copy.
# - rewrites: $reps runs per target (order rotated), each a time-based
#   4k randwrite over the already diverged first 1 GiB.
# A ratio is the median over all (round, slice) or (round, run) pairs.
slice_bytes=$((fwbytes / slices))
slice_bytes=$((slice_bytes / 65536 * 65536))
slice_tracks=$((slice_bytes / 65536))
rewrite_args=(--rw=randwrite --size=$rw_region --time_based --runtime="$runtime" --ramp_time=1)
seqfill() { # $1: fio target args; writes the rewrite region once
  fioq --name=f --output=/dev/null --rw=write --bs=1M --iodepth=8 --size=$rw_region "$@" || true
}
qsock=$dir/qemu.sock
uri_of() { # target: sets uri to its fio engine args
  if [ "$1" = qcow2 ]; then
    uri=(--ioengine=nbd --uri="nbd+unix:///bench?socket=$qsock")
  else
    uri=(--ioengine=nbd --uri="nbd+unix:///$1?socket=$fsock")
  fi
}
setup_target() { # target round: a fresh copy, or a fresh qcow2 overlay under qemu-nbd
  local t=$1 round=$2
  case $t in
    nc) ;;
    qcow2)
      local ov=$dir/overlay.qcow2
      rm -f "$ov" "$qsock"
      qemu-img create -q -f qcow2 -o cluster_size=64k -b "$base" -F raw "$ov"
      qemu-nbd -f qcow2 --cache=none --aio=native --persistent --shared=8 -x bench -k "$qsock" "$ov" &
      qpid=$!
      for _ in $(seq 200); do [ -S "$qsock" ] && break; sleep 0.05; done ;;
    *) copy_cli "$t" "$t-fresh$round" "fresh $t" --mode "${t%%[0-9]*}" ;;
  esac
}
teardown_target() { # target round
  local t=$1 round=$2
  case $t in
    nc) ;;
    qcow2) kill "$qpid"; wait "$qpid" 2>/dev/null || true; qpid=; rm -f "$dir/overlay.qcow2" ;;
    # --wait: the last copy gone, its fold job must not run into the next
    # round's measurements
    *) fs copy delete "$t-fresh$round" --wait ;;
  esac
}
rotated() { # k: the targets, rotated by k (reversed on odd k)
  local k=$1 n=${#targets[@]} i out=()
  for ((i = 0; i < n; i++)); do out+=("${targets[$(( (i + k) % n ))]}"); done
  if [ $((k % 2)) = 1 ]; then
    local rev=(); for ((i = n - 1; i >= 0; i--)); do rev+=("${out[$i]}"); done; out=("${rev[@]}")
  fi
  echo "${out[@]}"
}

if [ -n "$meta_pid" ]; then
  echo "waiting for copy_meta..." >&2
  wait "$meta_pid" || true
fi

for round in $(seq "$rounds"); do
  cur_round=$round
  echo "round $round/$rounds: $slices first-write slices, $reps rewrite runs per target..." >&2
  for t in "${targets[@]}"; do setup_target "$t" "$round"; done
  for ((s = 0; s < slices; s++)); do
    cur_rep=$s
    for t in $(rotated $((round * slices + s))); do
      uri_of "$t"
      run first "$t" "${uri[@]}" --rw=randwrite --zonemode=strided --zonerange=64k --zonesize=4k \
        --offset=$((s * slice_bytes)) --size=$slice_bytes --number_ios=$slice_tracks --runtime="$runtime"
    done
  done
  for t in "${targets[@]}"; do
    case $t in
      nc|qcow2) ;;
      *) "$bin" --pool "$pool" --json copy show "$t-fresh$round" >"$dir/show-$t-$round.json" 2>/dev/null || true ;;
    esac
    uri_of "$t"
    [ "$t" = nc ] || seqfill "${uri[@]}"
  done
  for ((k = 0; k < reps; k++)); do
    cur_rep=$k
    for t in $(rotated $((round * reps + k))); do
      uri_of "$t"
      run rewrite "$t" "${uri[@]}" "${rewrite_args[@]}"
    done
  done
  for t in "${targets[@]}"; do teardown_target "$t" "$round"; done
done
"$bin" --pool "$pool" --json copy list >"$dir/copies3.json"
space "at the end"

# ------------------------------------------------------------ the report
python3 - "$creations" "$results" "$meta_out" "$log" "$dir" "$fw" "$tracks" "$runtime" "$rounds" \
  "$(( $(date +%s) - t_start ))" "$slices" "$reps" "$slice_tracks" <<'PY'
import json,sys,statistics,re,glob,os
cre=[json.loads(l) for l in open(sys.argv[1])]
res=[json.loads(l) for l in open(sys.argv[2])]
meta=open(sys.argv[3]).read()
logf,d,fw,tracks,runtime,rounds,elapsed,slices,reps,slice_tracks=sys.argv[4:14]
tracks=int(tracks); slice_tracks=int(slice_tracks)
med=lambda v: statistics.median(v) if v else None
def ms(v): return "-" if v is None else f"{v:.1f} ms"

print("\n## instant copies: ferrosan benchmark (issue 3)\n")
print(f"rounds {rounds}; per round per target: {slices} first-write runs of {slice_tracks} tracks "
      f"(first-write region {fw}, {tracks} tracks of 64 KiB) and {reps} rewrite runs of {runtime} s; total {elapsed} s\n")

print("### 1. copy creation (goal < 20 ms)\n")
print("| source | mode | first copy (new family), CLI | next copies, CLI: median (max) | next copies, API: median (max) | daemon log figure |")
print("|---|---|---|---|---|---|")
srv_any=False
for size in ["1G","1T"]:
    for mode in ["row","cow"]:
        f=[c for c in cre if c["label"]==f"{size} {mode} first"]
        cli=[c["ms"] for c in cre if c["label"]==f"{size} {mode} next" and c["via"]=="cli"]
        apiv=[c["ms"] for c in cre if c["label"]==f"{size} {mode} next" and c["via"]=="api" and "ms" in c]
        srv=[c["server_ms"] for c in cre if c["label"].startswith(f"{size} {mode}") and c.get("server_ms") is not None]
        srv_any|=bool(srv)
        name={"1G":"1 GiB","1T":"1 TiB (sparse)"}[size]
        mx=lambda v: f"{med(v):.1f} ms ({max(v):.1f})" if v else "-"
        print(f"| {name} | {mode} ({'A2' if mode=='row' else 'A1'}) | {ms(f[0]['ms']) if f else '-'} | {mx(cli)} | {mx(apiv)} | {mx(srv) if srv else 'none logged'} |")
def loadiops(mode):
    try:
        t=open(os.path.join(d,f"load-{mode}.json")).read(); j=json.loads(t[t.index("{"):])["jobs"][0]
        return f", load {j['write']['iops']:,.0f} IOPS"
    except Exception: return ""
for mode in ["row","cow"]:
    for lab,name in [("written first","1 GiB, just written (1 GiB seq), first copy (new family)"),
                     ("written after",f"1 GiB, right after the first-write run below (next copy)"),
                     ("load","1 GiB under 4k randwrite qd32 load (API)")]:
        v=[c["ms"] for c in cre if c["label"]==f"1G {mode} {lab}" and "ms" in c]
        srv=[c["server_ms"] for c in cre if c["label"]==f"1G {mode} {lab}" and c.get("server_ms") is not None]
        extra=loadiops(mode) if lab=="load" else ""
        if v: print(f"| {name}{extra} | {mode} | - | {med(v):.1f} ms ({max(v):.1f}) | - | {f'{med(srv):.1f} ms' if srv else 'none logged'} |")
for t in ["row1","row10","row64","cow1","cow10","cow64"]:
    v=[c["ms"] for c in cre if c["label"]==f"fresh {t}"]
    srv=[c["server_ms"] for c in cre if c["label"]==f"fresh {t}" and c.get("server_ms") is not None]
    n=int(re.sub("[a-z]","",t))
    if v: print(f"| {fw} volume, {n-1} older copies, between I/O runs | {t[:3]} | - | {med(v):.1f} ms ({max(v):.1f}) | - | {f'{med(srv):.1f} ms' if srv else 'none logged'} |")
print("\nper metadata scheme (`--meta`, a copy joining the family; API round trip):\n")
print("| scheme | 1 GiB row | 1 GiB cow | 1 TiB row | 1 TiB cow |")
print("|---|---|---|---|---|")
for s in ["full-pointer","changed-pointer","bitmap","multilevel-bitmap","partial-bitmap"]:
    cells=[]
    for size in ["1G","1T"]:
        for mode in ["row","cow"]:
            c=[c for c in cre if c["label"]==f"{size} {mode} scheme {s}"]
            cells.append("-" if not c else (c[0]["error"] if "error" in c[0] else ms(c[0]["ms"])))
    print(f"| {s} | "+" | ".join(cells)+" |")
if not srv_any:
    print("\nno `copy NAME of SRC taken in X ms` line in the daemon log: the figure is logged with "
          "tracing::info!, but the daemon installs no tracing subscriber, so it is never printed; "
          "the API round trip above is the closest outside figure.")

print("\n### 2. metadata memory per TiB (cargo bench --bench copy_meta, 1 TiB source, 64 KiB tracks)\n")
lines=meta.splitlines()
hdr=[i for i,l in enumerate(lines) if l.startswith("| scheme | entries |")]
if hdr:
    i=hdr[0]+2
    print("| scheme | entries | 0% diverged | 1% diverged | 50% diverged |")
    print("|---|---|---|---|---|")
    while i<len(lines) and lines[i].startswith("|"):
        c=[x.strip() for x in lines[i].strip("|").split("|")]
        print(f"| {c[0]} | {c[1]} | {c[3]} | {c[4]} | {c[5]} |")
        i+=1
    print(f"\n(full copy_meta output: {sys.argv[3]})")
else:
    print(meta.strip()[:2000])

print("\n### 3./4. 4k random-write IOPS to the source (fio nbd, qd32, direct; median of runs)\n")
def iops(wl,t):
    return med([r["iops"] for r in res if r["wl"]==wl and r["target"]==t and "iops" in r])
def lat(wl,t):
    return med([r["lat_us"] for r in res if r["wl"]==wl and r["target"]==t and "iops" in r])
cols=[("nc","no copy"),("row1","A2 row, 1 copy"),("row10","A2, 10 copies"),("row64","A2, 64 copies"),
      ("cow1","A1 cow, 1 copy"),("cow10","A1, 10 copies"),("cow64","A1, 64 copies"),("qcow2","qemu-nbd qcow2 overlay")]
print("| workload | "+" | ".join(n for _,n in cols)+" |")
print("|---|"+"---|"*len(cols))
fmt=lambda v: "-" if v is None else f"{v:,.0f}"
for wl,name in [("first","first writes (fresh tracks)"),("rewrite","rewrites (1 GiB, diverged)")]:
    print(f"| {name} | "+" | ".join(fmt(iops(wl,t)) for t,_ in cols)+" |")
def rng(wl,t):
    v=[r["iops"] for r in res if r["wl"]==wl and r["target"]==t and "iops" in r]
    return f"{min(v)/1e3:.1f}-{max(v)/1e3:.1f}k" if len(v)>1 else "-"
if len(res)>len(cols):
    for wl,name in [("first","first writes, range over runs"),("rewrite","rewrites, range over runs")]:
        print(f"| {name} | "+" | ".join(rng(wl,t) for t,_ in cols)+" |")
for wl,name in [("first","first writes, mean lat us"),("rewrite","rewrites, mean lat us")]:
    print(f"| {name} | "+" | ".join(fmt(lat(wl,t)) for t,_ in cols)+" |")
for m,n in [("row","A2"),("cow","A1")]:
    v=iops("first",f"newfam-{m}")
    if v is not None:
        nc=iops("first","nc")
        print(f"\nfirst writes after the FIRST copy of a thick 1 GiB volume (new family, single run, 1 GiB region), {n}: "
              f"{v:,.0f} IOPS" + (f" = {v/nc:.2f} x no copy" if nc else ""))
fi=[r for r in res if r["wl"]=="first" and "iops" in r and r["target"]!="nc" and not r["target"].startswith("newfam")]
short=[r for r in fi if r["ios"]<slice_tracks]
print(f"\nfirst writes: at most {slice_tracks} writes per run (one per track) or {runtime} s; "
      f"runs that hit the time limit first: {len(short)} of {len(fi)} "
      f"({', '.join(sorted(set(r['target'] for r in short))) or 'none'}).")

print("\n### ratios and goals\n")
print("value: the median of the ratios of the two figures measured back to back (same round and "
      "slice, or same round and rewrite run: the machine's spells move both), with the range and "
      "the number of pairs; a figure missing from a pair leaves that pair out.\n")
print("| ratio | value (range) | goal | |")
print("|---|---|---|---|")
def per_round(wl,t):
    return {(r["round"],r.get("rep",0)):r["iops"] for r in res if r["wl"]==wl and r["target"]==t and "iops" in r}
def ratio(label,a,b,goal=None):
    ra,rb=per_round(*a),per_round(*b)
    v=[ra[k]/rb[k] for k in ra if k in rb and rb[k]]
    if not v:
        print(f"| {label} | - | {'>= '+str(goal) if goal else '-'} | |"); return
    m=statistics.median(v)
    ok="" if goal is None else ("met" if m>=goal else "NOT met")
    span=f" ({min(v):.2f}-{max(v):.2f}, n={len(v)})" if len(v)>1 else ""
    print(f"| {label} | {m:.2f}{span} | {'>= '+str(goal) if goal else '-'} | {ok} |")
ratio("A2 rewrites / no copy",("rewrite","row1"),("rewrite","nc"),0.9)
ratio("A2 first writes / no copy (same pattern)",("first","row1"),("first","nc"),0.5)
ratio("A2 first writes / no copy (random 1 GiB)",("first","row1"),("rewrite","nc"))
for m,n in [("row","A2"),("cow","A1")]:
    for wl in ["first","rewrite"]:
        ratio(f"{n} {wl} writes, 10 copies / 1 copy",(wl,m+"10"),(wl,m+"1"),0.9)
        ratio(f"{n} {wl} writes, 64 copies / 1 copy",(wl,m+"64"),(wl,m+"1"))
ratio("A2 / qcow2 overlay, first writes",("first","row1"),("first","qcow2"),1.2)
ratio("A2 / qcow2 overlay, rewrites",("rewrite","row1"),("rewrite","qcow2"),1.2)
ratio("A1 rewrites / no copy",("rewrite","cow1"),("rewrite","nc"))
ratio("A1 first writes / no copy (same pattern)",("first","cow1"),("first","nc"))
ratio("A1 / qcow2 overlay, first writes",("first","cow1"),("first","qcow2"))
ratio("A1 / qcow2 overlay, rewrites",("rewrite","cow1"),("rewrite","qcow2"))

shows=sorted(glob.glob(os.path.join(d,"show-*.json")))
if shows:
    print("\nfresh copies after their first-write run (`copy show`):\n")
    print("| copy | mode | scheme | tracks diverged | space used | metadata memory |")
    print("|---|---|---|---|---|---|")
    for f in shows:
        try: c=json.load(open(f))
        except Exception: continue
        print(f"| {c.get('name')} | {c.get('mode')} | {c.get('scheme')} | {c.get('tracks_diverged')} | {c.get('space_used')} | {c.get('metadata_memory')} |")
failed=[r for r in res if "error" in r]
if failed:
    print(f"\nfailed fio runs: {len(failed)}:\n")
    for r in failed[:8]: print(f"    {r['wl']} on {r['target']}: {r['error']}")
sp=os.path.join(d,"space.jsonl")
if os.path.exists(sp):
    print("\nspace of each source's group (one sparse disk file each):\n")
    print("| when | group | group capacity | group free | disk file on the filesystem | its extents (filefrag) |")
    print("|---|---|---|---|---|---|")
    gib=lambda b: f"{b/2**30:,.1f} GiB"
    for l in open(sp):
        x=json.loads(l)
        print(f"| {x['label']} | {x.get('group','g')} | {gib(x['capacity'])} | {gib(x['free'])} | {gib(x['disk_bytes'])} | {x.get('extents')} |")
errs=[l for l in open(logf) if re.search(r"error|panic|warn",l,re.I)]
if errs:
    print(f"\ndaemon log: {len(errs)} error/warning lines, first ones:\n")
    for l in errs[:5]: print("    "+l.rstrip())
PY
