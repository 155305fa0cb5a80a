#!/usr/bin/env bash
# Instructions and mispredicted branches per operation of the C ABI's hot
# paths, counted by callgrind (valgrind). Unlike the benchmarks' nanoseconds,
# these counts do not move with the machine's state, so they show what a
# change to a hot path costs.
#
#   scripts/icount.sh [case ...]     cases: pair pair2 churn churn2 cpair cchurn relocate rbatch resolve
#                                    (default: all)
#
# Each case (see cpp/bench/icount.cpp) runs under callgrind twice, with OPS
# operations and with none; the difference divided by OPS is the cost of one
# operation, the caller's loop included (10-20 instructions: the C ABI calls
# are not inlined, as they would not be in Mooncake).
#
# Environment:
#   BUILD_DIR   build directory (default: build)
#   OPS         operations per case (default: 100000)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${BUILD_DIR:-build}"
OPS="${OPS:-100000}"
cases=("$@")
[ "${#cases[@]}" -gt 0 ] || cases=(pair pair2 churn churn2 cpair cchurn relocate rbatch resolve)

./scripts/setup.sh
if ! command -v valgrind >/dev/null 2>&1; then
  echo "icount: apt-get install valgrind"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq valgrind >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" --target mooncake_shm_icount >/dev/null
BIN="$BUILD_DIR/benchmark/shm/mooncake_shm_icount"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# "<instructions> <mispredicted conditional branches>" of one run.
totals() {
  valgrind --tool=callgrind --branch-sim=yes --callgrind-out-file="$tmp/out" \
    "$BIN" "$1" "$2" >/dev/null 2>"$tmp/err" || { cat "$tmp/err" >&2; return 1; }
  # Events: Ir Bc Bcm Bi Bim.
  awk '/^(summary|totals):/ { print $2, $4; exit }' "$tmp/out"
}

printf '%-10s %14s %12s   (callgrind, %s operations)\n' case "instructions" mispredicts "$OPS"
for c in "${cases[@]}"; do
  read -r ir0 bm0 < <(totals "$c" 0)
  read -r ir1 bm1 < <(totals "$c" "$OPS")
  awk -v c="$c" -v a="$ir0" -v b="$ir1" -v m0="$bm0" -v m1="$bm1" -v n="$OPS" \
    'BEGIN { printf "%-10s %14.1f %12.2f\n", c, (b - a) / n, (m1 - m0) / n }'
done
