#!/usr/bin/env bash
# Makes tests/fixtures/pool-format2: a small pool written by this ferrosan
# (pool format 2), which tests/e2e_format.rs opens with the ferrosan of
# every later commit and reads back. Run it only to make a fixture for a new
# format (as pool-formatN); never to refresh this one: the point of it is
# that it was written by the code of its time.
#
#   scripts/make-fixture-pool.sh [OUT]     # default tests/fixtures/pool-format2
#
# The pool: disks f0, f1, f2 (16 MiB sparse files), raid5 group fg over
# them; volume fv (4 MiB) with an A2 (row) copy fc; volume fw (2 MiB) with
# an A1 (cow) copy fwc. What each holds is written in tests/e2e_format.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-tests/fixtures/pool-format2}
[ -e "$out" ] && { echo "error: $out exists: a fixture is never remade" >&2; exit 1; }
command -v qemu-io >/dev/null 2>&1 || { echo "error: qemu-io is missing (qemu-utils)" >&2; exit 1; }
cargo build --locked --bin ferrosan --quiet
bin=$PWD/target/debug/ferrosan
work=$(mktemp -d)
pool=$work/pool
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
f() { "$bin" --pool "$pool" "$@" >/dev/null; }
io() {
  local vol=$1
  shift
  local args=()
  for c in "$@"; do args+=(-c "$c"); done
  qemu-io -f raw "${args[@]}" "nbd+unix:///$vol?socket=$pool/nbd.sock" >/dev/null
}

"$bin" --pool "$pool" serve --listen 127.0.0.1:0 >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 300); do
  [ -S "$pool/api.sock" ] && "$bin" --pool "$pool" pool show >/dev/null 2>&1 && break
  sleep 0.1
done

# Away with the default pool's 1 GiB disks.
f volume delete vol0
f group delete g0
for d in d0 d1 d2 d3; do f disk remove "$d"; done

for d in f0 f1 f2; do f disk add "$d" --size 16M; done
f group create fg --raid raid5 --disks f0,f1,f2 --stripe-size 64K

f volume create fv --group fg --size 4M
io fv "write -P 0xa1 0 1M" "write -P 0xa2 1M 1M" "write -P 0xa3 2M 2M" "flush"
f copy create fv fc --mode row
io fv "write -P 0xb1 0 512k" "flush"
io fc "write -P 0xc1 3M 256k" "flush"

f volume create fw --group fg --size 2M
io fw "write -P 0xd1 0 2M" "flush"
f copy create fw fwc --mode cow --meta changed-pointer
io fw "write -P 0xe1 1M 128k" "flush"

kill "$pid"
wait "$pid"
pid=

mkdir -p "$out/disks"
cp "$pool/ferrosan.redb" "$out/"
cp "$pool"/disks/f*.img "$out/disks/"
# Stored gzipped: 16 MiB of mostly zeroes each (tests/e2e_format.rs unpacks them).
gzip -9 -n "$out"/disks/f*.img
du -sh --apparent-size "$out"
du -sh "$out"
