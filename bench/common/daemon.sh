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
# timed_job CMD...: runs the CLI command CMD (which starts a job and prints
# its JSON with the job's id), then asks the daemon about the job every
# 5 ms until it ends; prints the seconds from the command's start to the
# first answer that says the job ended (`--wait` polls every 0.5 s, too
# coarse to time a copy of a second or two).
timed_job() {
  python3 - "$bin" "$pool" "$@" <<'PY'
import json, socket, subprocess, sys, time
binary, pool, args = sys.argv[1], sys.argv[2], sys.argv[3:]
t0 = time.monotonic()
out = subprocess.run([binary, "--pool", pool, "--json", *args], check=True, capture_output=True, text=True).stdout
info = json.loads(out)
job = info.get("job", info.get("id"))
job = job["id"] if isinstance(job, dict) else job
def get(path):
    s = socket.socket(socket.AF_UNIX); s.connect(pool + "/api.sock")
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536): data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if b"chunked" in head.lower():
        raw, body = body, b""
        while raw:
            n, _, rest = raw.partition(b"\r\n"); size = int(n, 16)
            if size == 0: break
            body += rest[:size]; raw = rest[size + 2:]
    return json.loads(body)
while True:
    j = get(f"/v1/jobs/{job}")
    if j["state"] in ("done", "failed", "cancelled"):
        if j["state"] != "done": sys.exit(f"job {job} {j['state']}: {j.get('message')}")
        break
    time.sleep(0.005)
print(f"{time.monotonic() - t0:.3f}")
PY
}
