# Shared by the shell benchmarks: sourced after `dir` is set. Checks the
# tools, builds ferrosan (release), starts a daemon on a fresh pool in
# $dir with the arguments given to `start_daemon`, and defines:
#   f ARGS       the CLI on that pool;   fj ARGS  the same with --json
#   uri VOL      the volume's NBD URI over the Unix socket
#   to_bytes S   a size like 4G in bytes
#   median X...  "median (min-max)" of numbers, 3 decimals
for t in fio python3; do
  command -v $t >/dev/null || { echo "error: $t is needed (apt-get install fio python3)" >&2; exit 1; }
done
echo "building ferrosan (release)..." >&2
cargo build --release -q
bin=$root/target/release/ferrosan
rm -rf "$dir"; mkdir -p "$dir"
pool=$dir/pool
start_daemon() {
  "$bin" --pool "$pool" serve --listen 127.0.0.1:0 "$@" >"$dir/ferrosan.log" 2>&1 &
  daemon=$!
  trap 'kill $daemon 2>/dev/null; wait 2>/dev/null' EXIT
  for _ in $(seq 200); do [ -S "$pool/api.sock" ] && break; sleep 0.05; done
}
f() { "$bin" --pool "$pool" "$@"; }
fj() { "$bin" --pool "$pool" --json "$@"; }
uri() { echo "nbd+unix:///$1?socket=$pool/nbd.sock"; }
to_bytes() { python3 -c "import re;s='$1';m=re.fullmatch(r'(\d+)([KMGT]?)',s);print(int(m[1])<<{'':0,'K':10,'M':20,'G':30,'T':40}[m[2]])"; }
median() { python3 -c "import sys,statistics;v=[float(x) for x in sys.argv[1:]];print(f'{statistics.median(v):.3f} ({min(v):.3f}-{max(v):.3f})')" "$@"; }
