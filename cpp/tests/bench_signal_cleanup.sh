#!/usr/bin/env bash
# The benchmarks' promise (issue 4): Ctrl-C, a signal or a failure never
# leaves a shared-memory object behind. Each benchmark is started with
# settings that keep shm objects alive for seconds, interrupted once it has
# some (SIGINT, SIGTERM or SIGHUP), and must then exit with 128 + signal and
# leave no object of its pid in /dev/shm. A run that fails half-way (a bad
# flag the arena or the table refuses) must exit 1 and leave none either.
#
# Usage: bench_signal_cleanup.sh ALLOCATION_BENCH LOOKUP_BENCH TRANSFER_BENCH
# (ctest passes the three executables; objects are named *_<pid>_*).
set -u
[ $# -eq 3 ] || { echo "usage: $0 ALLOCATION_BENCH LOOKUP_BENCH TRANSFER_BENCH" >&2; exit 2; }
alloc=$1 lookup=$2 transfer=$3
failures=0
log=$(mktemp "${TMPDIR:-/tmp}/mcshm-signal-test.XXXXXX")
trap 'rm -f "$log"' EXIT

objects_of() { find /dev/shm -maxdepth 1 -name "*_$1_*" -printf '%f\n' 2>/dev/null; }
count_of() { objects_of "$1" | wc -l; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# interrupted NAME SIGNAL MIN_OBJECTS COMMAND...: start COMMAND, wait until it
# has MIN_OBJECTS objects (at most 30 s), send SIGNAL, check exit and /dev/shm.
interrupted() {
  local name=$1 sig=$2 want=$3
  shift 3
  "$@" >"$log" 2>&1 &
  local pid=$! waited=0
  while [ "$(count_of $pid)" -lt "$want" ]; do
    if ! kill -0 $pid 2>/dev/null || [ $waited -ge 600 ]; then
      kill -KILL $pid 2>/dev/null
      wait $pid 2>/dev/null
      fail "$name: never had $want objects of pid $pid (exited or too slow)"
      tail -5 "$log"
      objects_of $pid | sed 's|^|/dev/shm/|' | xargs -r rm -f
      return
    fi
    sleep 0.05
    waited=$((waited + 1))
  done
  local had
  had=$(count_of $pid)
  kill -s "$sig" $pid
  wait $pid
  local rc=$? expected=$((128 + $(kill -l "$sig")))
  local left
  left=$(count_of $pid)
  [ $rc -eq $expected ] || fail "$name: exit status $rc after SIG$sig, expected $expected"
  if [ "$left" -ne 0 ]; then
    fail "$name: $left of $had objects left after SIG$sig"
    objects_of $pid | sed 's|^|/dev/shm/|' | xargs -r rm -f
  else
    echo "ok: $name: SIG$sig with $had objects alive, exit $rc, none left"
  fi
}

# failing NAME COMMAND...: COMMAND must fail (exit 1) and leave nothing.
failing() {
  local name=$1
  shift
  "$@" >"$log" 2>&1 &
  local pid=$!
  wait $pid
  local rc=$? left
  left=$(count_of $pid)
  [ $rc -eq 1 ] || { fail "$name: exit status $rc, expected 1"; tail -5 "$log"; }
  grep -q "status=FAILED" "$log" || fail "$name: no status=FAILED summary"
  if [ "$left" -ne 0 ]; then
    fail "$name: $left objects left after the failure"
    objects_of $pid | sed 's|^|/dev/shm/|' | xargs -r rm -f
  else
    echo "ok: $name: failed with exit 1, none left"
  fi
}

# Baseline objects kept (--cleanup=false) while the baseline allocates.
interrupted "allocation bench, baseline objects kept" INT 200 \
  "$alloc" --num_iterations=1000000 --cleanup=false --min_size_kb=4 --max_size_kb=4
# 3000 sparse 64 MiB segments alive for the whole lookup run.
interrupted "lookup bench, 3000 segments" TERM 3000 \
  "$lookup" --num_segments=3000 --min_time_ms=60000 --cold_miss=false
# The transfer pool alive while it copies.
interrupted "transfer bench, pool" HUP 1 \
  "$transfer" --num_transfers=1000000 --max_transfer_size_mb=1

failing "allocation bench, arena refuses the alignment" \
  "$alloc" --num_iterations=50 --cleanup=false --arena_align=3
failing "lookup bench, table too small" \
  "$lookup" --num_segments=50 --num_lookups=100 --table_max_nodes=1

[ $failures -eq 0 ] || { echo "$failures check(s) failed"; exit 1; }
echo "all signal and failure checks passed"
