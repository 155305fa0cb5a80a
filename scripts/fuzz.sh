#!/usr/bin/env bash
# Run every cargo-fuzz target of fuzz/ for a bounded time.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS: libFuzzer -max_total_time per target (default 20).
# TARGET:  a subset of the targets (default: all of `cargo fuzz list`).
#
# Each target starts from its committed seed corpus (fuzz/corpus/<target>/),
# copied to a temporary directory so a run never grows the committed corpus.
# A crash leaves its input in fuzz/artifacts/<target>/ (see docs/FUZZING.md)
# and fails the script. So does a leftover `mcshm_fuzz_*` object in /dev/shm.
#
# Environment:
#   FUZZ_JOBS      libFuzzer -jobs/-workers per target (default 1)
#   FUZZ_ARGS      extra libFuzzer flags (e.g. "-rss_limit_mb=4096")
#   KEEP_CORPUS=1  merge new interesting inputs back into fuzz/corpus/
#                  (minimized with -merge=1; off by default)
#   SKIP_INSTALL=1 never install cargo-fuzz or the nightly toolchain
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/fuzz"
SECONDS_PER_TARGET="${1:-20}"
shift || true
FUZZ_JOBS="${FUZZ_JOBS:-1}"

# --- prerequisites ------------------------------------------------------------
if [ -z "${SKIP_INSTALL:-}" ]; then
  if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz.sh: installing the nightly toolchain" >&2
    rustup toolchain install nightly --profile minimal || exit 1
  fi
  if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked || exit 1
  fi
fi

if [ $# -gt 0 ]; then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <(cargo +nightly fuzz list)
fi
[ ${#TARGETS[@]} -gt 0 ] || { echo "fuzz.sh: no fuzz targets found" >&2; exit 1; }

leftovers() { find /dev/shm -maxdepth 1 -name 'mcshm_fuzz_*' 2>/dev/null; }
if [ -n "$(leftovers)" ]; then
  echo "fuzz.sh: removing stale objects from an earlier run:" >&2
  leftovers >&2
  leftovers | xargs -r rm -f
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mcshm-fuzz.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# One build for all targets (release + debug assertions, the cargo-fuzz default).
echo "== building fuzz targets" >&2
cargo +nightly fuzz build || exit 1

status=0
declare -A RESULT
for t in "${TARGETS[@]}"; do
  corpus="$WORK/$t"
  mkdir -p "$corpus" "artifacts/$t"
  if [ -d "corpus/$t" ]; then cp -r "corpus/$t/." "$corpus/"; fi
  log="$WORK/$t.log"
  echo "== $t: ${SECONDS_PER_TARGET}s from $(ls "$corpus" | wc -l) seed inputs" >&2
  jobs=()
  if [ "$FUZZ_JOBS" -gt 1 ]; then jobs=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS"); fi
  # shellcheck disable=SC2086
  cargo +nightly fuzz run "$t" "$corpus" -- \
    -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 \
    "${jobs[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1
  rc=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{s+=$2} END {print s+0}')
  eps=$(( runs / (SECONDS_PER_TARGET > 0 ? SECONDS_PER_TARGET : 1) ))
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  if [ $rc -ne 0 ]; then
    echo "!! $t FAILED (exit $rc); last lines of its log:" >&2
    tail -40 "$log" >&2
    RESULT[$t]="FAILED (exit $rc)"
    status=1
  else
    RESULT[$t]="ok: $runs runs (~$eps/s), ${cov:-cov: ?}"
    if [ -n "${KEEP_CORPUS:-}" ]; then
      mkdir -p "corpus/$t"
      cargo +nightly fuzz run "$t" "corpus/$t" "$corpus" -- -merge=1 >/dev/null 2>&1 ||
        echo "!! $t: merging into corpus/$t failed" >&2
    fi
  fi
  if [ -n "$(leftovers)" ]; then
    echo "!! $t left shared-memory objects behind:" >&2
    leftovers >&2
    leftovers | xargs -r rm -f
    RESULT[$t]="${RESULT[$t]}; LEFT /dev/shm OBJECTS"
    status=1
  fi
done

echo "== fuzz summary (${SECONDS_PER_TARGET}s per target)"
for t in "${TARGETS[@]}"; do echo "  $t: ${RESULT[$t]}"; done
exit $status
