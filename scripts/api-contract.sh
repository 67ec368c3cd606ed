#!/usr/bin/env bash
# The API contract check: schemathesis (pinned, in target/api-contract/venv)
# runs every check it has -- no 5xx for any input, every status and body as
# openapi.json documents them, schema-valid requests accepted and invalid ones
# refused -- with positive and negative data, against the live daemon on a
# throw-away pool. scripts/test.sh runs it after the cargo tests; it also runs
# alone:
#
#   scripts/api-contract.sh                 # as CI does
#   FERROSAN_CONTRACT_EXAMPLES=500 scripts/api-contract.sh   # look harder
#   scripts/api-contract.sh --seed 1234 --include-path /v1/volumes   # more schemathesis options
#
# The daemon runs in a mount namespace of its own with the pool on a small
# tmpfs, so that nothing a generated request asks for (a 16 TiB disk, a
# rebuild onto it) can fill the machine's disk; where namespaces are not
# allowed, the pool is a temporary directory and each file the daemon writes
# is capped by `ulimit -f`. The API socket is bridged to a loopback TCP port
# with socat. Everything is stopped and removed on exit, failed or not.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Examples per operation and phase: one to three minutes on 2 cores.
examples=${FERROSAN_CONTRACT_EXAMPLES:-200}
# CI replays one seed (a failure there is a failure of the change, not of
# luck); a developer's run draws a new one each time and prints it.
seed=()
if [ -n "${FERROSAN_CONTRACT_SEED:-}" ]; then
  seed=(--seed "$FERROSAN_CONTRACT_SEED")
elif [ "${CI:-}" = true ]; then
  seed=(--seed 16)
fi
tmpfs_size=6g # a rebuild onto a new disk writes a whole 1 GiB member
file_cap_kib=$((4 << 20)) # 4 GiB, where there is no tmpfs

apt_install() {
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_tools() {
  local need=()
  command -v socat >/dev/null 2>&1 || need+=(socat)
  command -v python3 >/dev/null 2>&1 || need+=(python3)
  if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    need+=(python3-venv)
  fi
  if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    apt_install "${need[@]}"
  fi
  command -v socat >/dev/null 2>&1 || die "socat is still missing after installing"
}

# The venv is kept between runs and rebuilt when the pins change.
install_schemathesis() {
  local venv=target/api-contract/venv reqs=scripts/api-contract.requirements.txt
  local stamp="$venv/.requirements"
  if ! cmp -s "$reqs" "$stamp" 2>/dev/null; then
    say "installing schemathesis into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$reqs"
    cp "$reqs" "$stamp"
  fi
  st="$repo/$venv/bin/schemathesis"
  py="$repo/$venv/bin/python"
}

# Whether this user may make a mount namespace with its own tmpfs.
can_unshare() {
  # shellcheck disable=SC2016 # $1 is the inner shell's
  command -v unshare >/dev/null 2>&1 &&
    unshare --mount --map-root-user sh -c 'mount -t tmpfs -o size=1m none "$1"' sh "$work" 2>/dev/null
}

# Starts socat and the daemon (pids in $work); the pool on a tmpfs in a
# namespace of their own when allowed.
start_daemon() {
  # shellcheck disable=SC2016 # expanded by the inner shell, from its environment
  local inner='
    set -e
    if [ "$mode" = tmpfs ]; then
      mount -t tmpfs -o "size=$tmpfs_size,mode=0700" ferrosan-contract "$work/fs"
    else
      trap "" XFSZ
      ulimit -f "$file_cap_kib"
    fi
    # Port 0: socat binds a free port itself and logs it ("listening on");
    # a port probed free here and bound later could be taken in between.
    socat -d -d -lf "$work/socat.log" \
      "TCP-LISTEN:0,bind=127.0.0.1,reuseaddr,fork" "UNIX-CONNECT:$work/fs/pool/api.sock" &
    echo $! >"$work/socat.pid"
    echo $$ >"$work/daemon.pid"
    exec "$bin" --pool "$work/fs/pool" serve --listen 127.0.0.1:0
  '
  local mode=plain
  mkdir -p "$work/fs"
  if can_unshare; then
    mode=tmpfs
    echo "pool on a $tmpfs_size tmpfs in a mount namespace of its own"
  else
    echo "warning: no mount namespace here: the pool is $work/fs/pool, each file capped at $((file_cap_kib >> 20)) GiB"
  fi
  local launch=()
  [ "$mode" = tmpfs ] && launch=(unshare --mount --map-root-user)
  (cd "$work" && mode=$mode work=$work bin=$bin tmpfs_size=$tmpfs_size \
    file_cap_kib=$file_cap_kib RUST_LOG=warn \
    "${launch[@]}" bash -c "$inner" >"$work/daemon.log" 2>&1 &)
  wait_ready
}

# Waits (60 s at most) until socat says which port it bound (sets $port)
# and the API answers through it.
wait_ready() {
  port=
  local url=
  for _ in $(seq 600); do
    if [ -z "$port" ]; then
      # (no log yet: socat has not started)
      port=$(sed -n 's/.* listening on AF=2 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' \
        "$work/socat.log" 2>/dev/null | head -n 1) || port=
      url="http://127.0.0.1:$port/v1/pool"
    fi
    if [ -n "$port" ] &&
      "$py" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$url" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  cat "$work/daemon.log" "$work/socat.log" >&2 2>/dev/null || true
  die "the daemon did not answer through socat (port ${port:-not logged}) within 60 s"
}

stop_pid() {
  local file=$1 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "${work:-}" ] && [ -d "$work" ]; then
    stop_pid "$work/daemon.pid"
    stop_pid "$work/socat.pid"
    if [ "$status" -ne 0 ] && [ -s "$work/daemon.log" ]; then
      echo "--- the daemon's log (last 40 lines) ---" >&2
      tail -n 40 "$work/daemon.log" >&2
    fi
    rm -rf "$work"
  fi
  exit "$status"
}

main() {
  install_tools
  install_schemathesis
  say "building the daemon"
  cargo build --locked --bin ferrosan --quiet
  bin="$repo/target/debug/ferrosan"

  work=$(mktemp -d "${TMPDIR:-/tmp}/ferrosan-contract.XXXXXX")
  trap cleanup EXIT
  trap 'exit 130' INT TERM

  say "starting the daemon on a throw-away pool, its API bridged to loopback TCP"
  start_daemon
  echo "API at http://127.0.0.1:$port"

  say "schemathesis $("$st" --version | awk '{print $NF}'): $examples examples per operation and phase, every check"
  local started=$SECONDS
  # The time limit only guards against a daemon that stops answering.
  (cd "$work" && timeout 1200 "$st" --config-file "$repo/scripts/api-contract.toml" run "$repo/openapi.json" \
    --url "http://127.0.0.1:$port" \
    --checks all --mode all --max-examples "$examples" "${seed[@]}" \
    --workers 1 --request-timeout 30 --generation-database none --no-color \
    "$@")
  say "API contract held ($((SECONDS - started)) s)"
}

main "$@"
