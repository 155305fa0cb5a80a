#!/usr/bin/env bash
# Runs every test of the project from a clean checkout (installs what it needs first).
# Each step is reported; the last line is "test.sh: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

./scripts/setup.sh --rust-test-tools || { echo "test.sh: setup failed"; exit 1; }

BUILD=${MCSHM_TEST_BUILD_DIR:-$ROOT/build-test}
JOBS=${MCSHM_JOBS:-2}
passed=0; failed=0; failed_steps=()

shm_snapshot() { ls /dev/shm 2>/dev/null | grep -E '^(mcshm|mooncake)' | sort || true; }
before_shm=$(shm_snapshot)

# MCSHM_TEST_ONLY=REGEX runs only the steps whose name matches (for local iteration; CI runs all).
skipped=0
step() {
  local name=$1; shift
  if [ -n "${MCSHM_TEST_ONLY:-}" ] && ! grep -qE -- "$MCSHM_TEST_ONLY" <<<"$name"; then
    skipped=$((skipped + 1)); return 0
  fi
  echo
  echo "=== $name"
  local t0=$SECONDS
  if "$@"; then
    passed=$((passed + 1)); echo "=== $name: ok ($((SECONDS - t0)) s)"
  else
    failed=$((failed + 1)); failed_steps+=("$name"); echo "=== $name: FAILED ($((SECONDS - t0)) s)"
  fi
}

# --- Rust ---
step "cargo fmt --check" cargo fmt --all -- --check
step "clippy (all targets, all features)" cargo clippy --all-targets --all-features -- -D warnings
step "clippy (no_std core)" cargo clippy --lib --no-default-features -- -D warnings
step "rustdoc builds without warnings" env RUSTDOCFLAGS="-D warnings" cargo doc --quiet --lib --no-deps --all-features
# The private items' docs too: their links name the hot paths' helpers, which get renamed.
step "rustdoc (private items) builds without warnings" \
  env RUSTDOCFLAGS="-D warnings" cargo doc --quiet --lib --no-deps --all-features --document-private-items
step "C header is current (cbindgen)" cargo build --quiet --lib --features gen-header
# The contract is what a C/C++ reader sees first: it must not fall behind the header.
contract_lists_header() {
  local missing
  missing=$(grep -oE '#define MCSHM_[A-Z0-9_]+|struct mcshm_[a-z0-9_]+|mcshm_[a-z0-9_]+\(' include/mooncake_shm.h |
    sed -E 's/^(#define|struct) //' | sort -u |
    while read -r name; do grep -qF -- "$name" docs/capi-contract.md || echo "  $name"; done)
  [ -z "$missing" ] || { echo "docs/capi-contract.md does not list:"; echo "$missing"; return 1; }
}
step "C ABI contract lists every function, type and constant of the header" contract_lists_header
step "no_std core builds for x86_64-unknown-none" \
  cargo build --quiet --lib --no-default-features --target x86_64-unknown-none
step "os layers build without std" cargo build --quiet --lib --no-default-features --features os
# A plain library build (what CMake does) compiles no C or C++: cc runs only for bench-baseline.
step "library builds with no C or C++ compiler" \
  env CC=/bin/false CXX=/bin/false CARGO_TARGET_DIR="$ROOT/target/nocc" cargo build --quiet --lib --features capi
step "cargo test (all features)" cargo test --all-features
# Miri interprets one test at a time, so the set runs as two processes, one per core: the core
# arena's tests (the slowest module) beside everything else of `arena::` and `table::`.
miri_tests() {
  local log1 log2 pid1 rc1 rc2
  log1=$(mktemp); log2=$(mktemp)
  cargo +nightly miri test --lib -- arena::tests:: >"$log1" 2>&1 & pid1=$!
  cargo +nightly miri test --lib -- arena:: table:: --skip arena::tests:: >"$log2" 2>&1
  rc2=$?
  wait "$pid1"; rc1=$?
  cat "$log1" "$log2"; rm -f "$log1" "$log2"
  [ "$rc1" -eq 0 ] && [ "$rc2" -eq 0 ]
}
step "miri: arena and table" miri_tests
step "loom: table publish/read protocol" \
  env RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$ROOT/target/loom" cargo test --quiet --release --test loom_table
step "fuzz targets, ${MCSHM_FUZZ_SECONDS:-15} s each" ./scripts/fuzz.sh "${MCSHM_FUZZ_SECONDS:-15}"
step "criterion benches compile (with the C++ baseline)" cargo bench --no-run --quiet --features bench-baseline
step "criterion benches compile (plain cargo bench, no baseline)" cargo bench --no-run --quiet

# --- C / C++ (CMake, GoogleTest) ---
cxx_suite() { # $1 = C++ standard, $2 = build dir, rest = extra cmake args
  local std=$1 dir=$2; shift 2
  cmake -S "$ROOT" -B "$dir" -DBUILD_UNIT_TESTS=ON -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CXX_STANDARD="$std" -DCMAKE_CXX_FLAGS="-Werror" \
    -DMOONCAKE_SHM_CARGO_TARGET_DIR="$BUILD/cargo" "$@" >"$dir.configure.log" 2>&1 \
    || { cat "$dir.configure.log"; return 1; }
  cmake --build "$dir" -j "$JOBS" || return 1
  ctest --test-dir "$dir" --output-on-failure -j "$JOBS" || return 1
  # scripts/icount.sh's workload program: builds warning-free and runs.
  cmake --build "$dir" -j "$JOBS" --target mooncake_shm_icount || return 1
  local c
  for c in pair pair2 churn churn2 cpair cchurn relocate rbatch resolve; do
    "$dir/benchmark/shm/mooncake_shm_icount" "$c" 1000 || return 1
  done
}
mkdir -p "$BUILD"
step "C++17 build + ctest" cxx_suite 17 "$BUILD/cxx17"
step "C++20 build + ctest" cxx_suite 20 "$BUILD/cxx20"
step "ASan+UBSan build + ctest" cxx_suite 17 "$BUILD/asan" -DENABLE_ASAN=ON -DCMAKE_BUILD_TYPE=Debug
step "consumer projects (add_subdirectory as benchmark/shm; cmake --install + find_package)" \
  env MOONCAKE_SHM_CARGO_TARGET_DIR="$BUILD/cargo" tests/consumer/run.sh

bench_smoke() {
  local dir=$BUILD/cxx17/benchmark/shm
  "$dir/shm_allocation_bench" --num_iterations=100 &&
    "$dir/shm_address_lookup_bench" --num_lookups=1000 --num_segments=10 &&
    "$dir/shm_transfer_bench" --num_transfers=10 --max_transfer_size_mb=4 --verify_data=true
}
step "benchmarks run once with tiny counts" bench_smoke

no_shm_leak() {
  local after; after=$(shm_snapshot)
  local leaked; leaked=$(comm -13 <(echo "$before_shm") <(echo "$after"))
  if [ -n "$leaked" ]; then echo "left in /dev/shm:"; echo "$leaked"; return 1; fi
}
step "no shared-memory object left behind" no_shm_leak

echo
[ "$failed" -eq 0 ] || printf 'failed steps:\n%s\n' "$(printf '  %s\n' "${failed_steps[@]}")"
if [ "$skipped" -gt 0 ]; then
  echo "test.sh: $passed passed, $failed failed, $skipped skipped"
else
  echo "test.sh: $passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
