#!/usr/bin/env bash
# Build and run the three SHM micro-benchmarks (baseline C++ path vs the
# mooncake-shm Rust core, side by side in one process each).
#
#   scripts/bench.sh
#
# Environment:
#   BUILD_DIR        build directory (default: build)
#   JOBS             parallel build jobs (default: 2)
#   ALLOC_ARGS       extra flags for shm_allocation_bench     (e.g. "--num_iterations=100")
#   LOOKUP_ARGS      extra flags for shm_address_lookup_bench (e.g. "--sweep")
#   TRANSFER_ARGS    extra flags for shm_transfer_bench       (e.g. "--num_transfers=100")
#
# Results: $BUILD_DIR/bench-results/<bench>.txt and <bench>.json
# Exit status: non-zero if the build or any benchmark failed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${BUILD_DIR:-build}"
JOBS="${JOBS:-2}"
RESULTS="$BUILD_DIR/bench-results"

# --- prerequisites (installed only when absent; shared with scripts/test.sh) ---
./scripts/setup.sh || { echo "bench.sh: installing prerequisites failed" >&2; exit 1; }
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { echo "bench.sh: cargo not found (install Rust: https://rustup.rs)" >&2; exit 1; }

# --- configure + build --------------------------------------------------------
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release || exit 1
cmake --build "$BUILD_DIR" -j"$JOBS" --target shm_allocation_bench shm_address_lookup_bench shm_transfer_bench || exit 1

# --- run ----------------------------------------------------------------------
mkdir -p "$RESULTS"
BIN="$BUILD_DIR/benchmark/shm"
status=0
run() {
  local bench="$1"; shift
  echo
  echo "=== running $bench $* ==="
  "$BIN/$bench" --json="$RESULTS/$bench.json" "$@" 2>&1 | tee "$RESULTS/$bench.txt"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    echo "bench.sh: $bench exited with status $rc" >&2
    status=1
  fi
}
run shm_allocation_bench     ${ALLOC_ARGS:-}
run shm_address_lookup_bench ${LOOKUP_ARGS:-}
run shm_transfer_bench       ${TRANSFER_ARGS:-}

# --- summary --------------------------------------------------------------------
echo
echo "=================================== SUMMARY ==================================="
for bench in shm_allocation_bench shm_address_lookup_bench shm_transfer_bench; do
  grep -h '^SUMMARY' "$RESULTS/$bench.txt" 2>/dev/null | sed 's/^SUMMARY //' \
    | awk '{ printf "%-26s %s\n", $1, substr($0, length($1) + 2) }'
done
echo "================================================================================"
echo "results: $RESULTS/*.txt, $RESULTS/*.json"
leftover=$(ls /dev/shm 2>/dev/null | grep -E '^(mooncake|mcshm_bench)_' | wc -l)
[ "$leftover" -ne 0 ] && echo "bench.sh: warning: $leftover mooncake*/mcshm_bench* objects in /dev/shm" >&2
exit $status
