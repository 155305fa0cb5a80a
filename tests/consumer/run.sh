#!/usr/bin/env bash
# Builds mooncake-shm the way Mooncake would consume it: a throwaway parent
# project `mooncake-transfer-engine/` that does add_subdirectory(benchmark/shm)
# with this repository as benchmark/shm, links consumer_app against
# mooncake_shm::mooncake_shm, checks the benchmark executables land in
# <build>/benchmark/shm/, runs consumer_app; then installs mooncake-shm on its
# own (cmake --install into a temp prefix), builds consumer_app again in a
# project that only does find_package(mooncake_shm), runs it, and removes
# everything.
#
# Usage: tests/consumer/run.sh [--copy] [--keep]
#   --copy  copy the repository (git ls-files) instead of symlinking it
#   --keep  keep the temp dir (printed) for inspection
# Env: CMAKE_BUILD_TYPE (default Release), JOBS (default 2),
#      MCSHM_CONSUMER_SKIP_BENCH=1 to skip building the benchmark targets.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/../.." && pwd))"
copy=0
keep=0
for arg in "$@"; do
  case "$arg" in
    --copy) copy=1 ;;
    --keep) keep=1 ;;
    *) echo "run.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done
jobs="${JOBS:-2}"
build_type="${CMAKE_BUILD_TYPE:-Release}"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/mcshm-consumer.XXXXXX")"
cleanup() {
  if [[ $keep == 1 ]]; then echo "run.sh: kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

parent="$tmp/mooncake-transfer-engine"
mkdir -p "$parent/benchmark"
if [[ $copy == 1 ]]; then
  mkdir -p "$parent/benchmark/shm"
  (cd "$repo" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) |
    tar -xf - -C "$parent/benchmark/shm"
else
  ln -s "$repo" "$parent/benchmark/shm"
fi
cp "$here/consumer_app.cpp" "$parent/consumer_app.cpp"

bench_targets="shm_allocation_bench shm_address_lookup_bench shm_transfer_bench"
cat > "$parent/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.16)
project(mooncake-transfer-engine C CXX)
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)

add_subdirectory(benchmark/shm)

add_executable(consumer_app consumer_app.cpp)
target_link_libraries(consumer_app PRIVATE mooncake_shm::mooncake_shm)
target_compile_options(consumer_app PRIVATE -Wall -Wextra)

# Which benchmark targets the subproject defines (checked by run.sh).
set(_found "")
foreach(_t ${bench_targets})
  if(TARGET \${_t})
    list(APPEND _found \${_t})
  endif()
endforeach()
file(WRITE "\${CMAKE_BINARY_DIR}/mcshm_bench_targets.txt" "\${_found}")
CMAKE

build="$tmp/build"
echo "== configure ($parent)"
cmake -S "$parent" -B "$build" -DBUILD_UNIT_TESTS=OFF -DCMAKE_BUILD_TYPE="$build_type" \
    ${MOONCAKE_SHM_CARGO_TARGET_DIR:+-DMOONCAKE_SHM_CARGO_TARGET_DIR="$MOONCAKE_SHM_CARGO_TARGET_DIR"}
echo "== build consumer_app"
cmake --build "$build" --target consumer_app -j "$jobs"

status=0
found="$(cat "$build/mcshm_bench_targets.txt")"
if [[ "${MCSHM_CONSUMER_SKIP_BENCH:-0}" == 1 ]]; then
  echo "== benchmarks skipped (MCSHM_CONSUMER_SKIP_BENCH=1)"
elif [[ -z "$found" ]]; then
  echo "== no benchmark targets defined by benchmark/shm (skipped)"
else
  echo "== build benchmarks: ${found//;/ }"
  for t in ${found//;/ }; do
    cmake --build "$build" --target "$t" -j "$jobs"
    if [[ -x "$build/benchmark/shm/$t" ]]; then
      echo "   ok: benchmark/shm/$t"
    else
      echo "run.sh: FAIL: $t was not produced in $build/benchmark/shm/" >&2
      status=1
    fi
  done
fi

echo "== run consumer_app"
if ! "$build/consumer_app"; then
  echo "run.sh: FAIL: consumer_app" >&2
  status=1
fi

echo "== cmake --install, then find_package(mooncake_shm) in a project of its own"
prefix="$tmp/prefix"
cmake -S "$repo" -B "$tmp/install-build" -DBUILD_UNIT_TESTS=OFF -DMOONCAKE_SHM_BUILD_BENCHMARKS=OFF \
    -DCMAKE_BUILD_TYPE="$build_type" -DCMAKE_INSTALL_PREFIX="$prefix" \
    ${MOONCAKE_SHM_CARGO_TARGET_DIR:+-DMOONCAKE_SHM_CARGO_TARGET_DIR="$MOONCAKE_SHM_CARGO_TARGET_DIR"}
cmake --build "$tmp/install-build" -j "$jobs"
cmake --install "$tmp/install-build"
installed="$tmp/installed-consumer"
mkdir -p "$installed"
cp "$here/consumer_app.cpp" "$installed/consumer_app.cpp"
cat > "$installed/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.16)
project(installed_consumer CXX)
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
find_package(mooncake_shm 0.1 REQUIRED)
add_executable(consumer_app consumer_app.cpp)
target_link_libraries(consumer_app PRIVATE mooncake_shm::mooncake_shm)
target_compile_options(consumer_app PRIVATE -Wall -Wextra)
CMAKE
cmake -S "$installed" -B "$installed/build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE="$build_type"
cmake --build "$installed/build" -j "$jobs"
echo "== run consumer_app (installed package)"
if ! "$installed/build/consumer_app"; then
  echo "run.sh: FAIL: consumer_app against the installed package" >&2
  status=1
fi

leftover="$(ls /dev/shm 2>/dev/null | grep '^mcshm_consumer' || true)"
if [[ -n "$leftover" ]]; then
  echo "run.sh: FAIL: left in /dev/shm: $leftover" >&2
  status=1
fi

if [[ $status == 0 ]]; then echo "run.sh: PASS"; else echo "run.sh: FAIL"; fi
exit $status
