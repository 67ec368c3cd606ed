#!/usr/bin/env bash
# The test command of the README: installs what the tests need on a fresh
# Debian machine, then runs formatting and lint checks, unit, property and
# end-to-end tests. CI runs it through .ci/run on a clean clone.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

# Test clients: qemu-io/qemu-img (qemu-utils), fio (nbd engine), nbdinfo/nbdcopy (libnbd-bin), gdb.
need=()
command -v qemu-io >/dev/null 2>&1 || need+=(qemu-utils)
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
command -v fio >/dev/null 2>&1 || need+=(fio)
command -v nbdinfo >/dev/null 2>&1 || need+=(libnbd-bin)
command -v nbdcopy >/dev/null 2>&1 || need+=(libnbd-bin)
# A filesystem on a volume, checked from outside (tests/e2e_guest_fs.rs).
command -v nbdfuse >/dev/null 2>&1 || need+=(libnbd-bin)
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
command -v losetup >/dev/null 2>&1 || need+=(mount)
# gdb: the deadlock watchdog prints the daemon's stacks when it fails.
command -v gdb >/dev/null 2>&1 || need+=(gdb)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # shellcheck disable=SC2068
  $sudo apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
fi
for t in qemu-io qemu-img fio nbdinfo nbdcopy nbdfuse mkfs.ext4 e2fsck losetup; do
  command -v "$t" >/dev/null 2>&1 || { echo "error: $t is still missing after installing" >&2; exit 1; }
done

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is missing: install Rust (https://rustup.rs)" >&2
  exit 1
fi

say "format"
cargo fmt --all --check

say "lint"
cargo clippy --all-targets --locked -- -D warnings

say "links"
# Every relative link and image of README.md and docs/ resolves in this
# clone, and nothing points at ../shared (tests/doc_links.rs); every
# link of the code's own documentation resolves (rustdoc).
cargo test --locked --test doc_links
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked -q

say "unit, property and end-to-end tests"
# The end-to-end tests start the real daemon (built by cargo as a test
# dependency) on free ports and temporary pools; tests/cli_readme.rs runs
# the README's command blocks as written against one.
cargo test --all-targets --locked -- --test-threads="${FERROSAN_TEST_THREADS:-2}"

say "API contract: schemathesis against the live daemon"
# Uses the debug binary the tests built; installs socat and a pinned
# schemathesis when missing.
scripts/api-contract.sh

say "all tests passed"
