#!/usr/bin/env bash
# The benchmarks' interface (issue 4, the seed spec): every flag of the seed
# with the seed's default, parsed by gflags; --json=FILE writes the numbers
# the run printed; --measure_mmap_only, --cleanup, --sweep, --verify_data and
# --use_memcpy=false are honoured. Tiny counts: this checks the interface,
# not the figures.
#
# Usage: bench_flags_json.sh ALLOCATION_BENCH LOOKUP_BENCH TRANSFER_BENCH
# Needs python3 (JSON parsing).
set -u
[ $# -eq 3 ] || { echo "usage: $0 ALLOCATION_BENCH LOOKUP_BENCH TRANSFER_BENCH" >&2; exit 2; }
command -v python3 >/dev/null || { echo "FAIL: python3 is needed to read the JSON" >&2; exit 1; }
alloc=$1 lookup=$2 transfer=$3
work=$(mktemp -d "${TMPDIR:-/tmp}/mcshm-flags-test.XXXXXX")
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# defaults BENCH NAME=DEFAULT...: gflags knows each flag, with that default.
defaults() {
  local bench=$1 xml=$work/help.xml
  shift
  "$bench" --helpxml >"$xml" 2>/dev/null
  python3 - "$xml" "$@" <<'EOF' || fail "$(basename "$bench"): flags or defaults differ from the seed"
import re, sys
xml = open(sys.argv[1]).read()
flags = dict(re.findall(r"<name>([^<]*)</name><meaning>[^<]*</meaning><default>([^<]*)</default>", xml))
bad = 0
for want in sys.argv[2:]:
    name, default = want.split("=", 1)
    if flags.get(name) != default:
        print(f"  --{name}: default {flags.get(name)!r}, seed says {default!r}")
        bad = 1
sys.exit(bad)
EOF
}

# run NAME CHECK... -- BENCH ARGS...: BENCH with ARGS and --json=FILE must
# exit 0, print SUMMARY status=ok, and write JSON whose summary holds exactly
# the SUMMARY lines printed (same values), whose rows all have a median, p99,
# throughput and sample count, and which passes each CHECK:
#   row:RE / !row:RE   some / no result row's operation matches RE
#   group:NAME         some result row is in group NAME
#   summary:KEY=VALUE  the summary's KEY is VALUE
run() {
  local name=$1 before=$failures
  shift
  local checks=()
  while [ "$1" != "--" ]; do checks+=("$1"); shift; done
  shift
  local out=$work/out.txt json=$work/out.json
  rm -f "$json"
  "$@" --json="$json" >"$out" 2>&1
  local rc=$?
  if [ $rc -ne 0 ]; then fail "$name: exit status $rc"; tail -5 "$out"; return; fi
  python3 - "$out" "$json" "${checks[@]}" <<'PY' || fail "$name: the JSON does not match the run"
import json, re, sys
out, path, checks = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3:]
d = json.load(open(path))
bad = []
printed = dict(re.findall(r"^SUMMARY \S+ (\w+)=(\S+)", out, re.M))
if printed.pop("status", None) != "ok" or d.get("status") != "ok" or d.get("errors"):
    bad.append(f"not ok: JSON status {d.get('status')!r}, errors {d.get('errors')!r}")
summary = d.get("summary", {})
if set(summary) != set(printed):
    bad.append(f"summary keys differ: printed only {sorted(set(printed) - set(summary))}, "
               f"JSON only {sorted(set(summary) - set(printed))}")
for k, v in printed.items():
    j = summary.get(k)
    try:
        same = abs(float(j) - float(v)) <= 1e-5 * max(abs(float(v)), 1e-9)
    except (TypeError, ValueError):
        same = str(j) == v
    if not same:
        bad.append(f"summary {k}: printed {v}, JSON {j!r}")
rows = d.get("results", [])
if not rows:
    bad.append("no result rows")
for r in rows:
    for key in ("median_ns", "p99_ns", "throughput", "samples"):
        if not isinstance(r.get(key), (int, float)) or r[key] < 0:
            bad.append(f"row {r.get('operation')!r}: {key} = {r.get(key)!r}")
ops = [r.get("operation", "") for r in rows]
for c in checks:
    kind, _, arg = c.partition(":")
    if kind in ("row", "!row"):
        if any(re.search(arg, op) for op in ops) != (kind == "row"):
            bad.append(f"{'no' if kind == 'row' else 'a'} row matching {arg!r}")
    elif kind == "group":
        if arg not in {r.get("group") for r in rows}:
            bad.append(f"no group {arg!r}")
    elif kind == "summary":
        k, _, v = arg.partition("=")
        if str(summary.get(k)) != v:
            bad.append(f"summary {k} = {summary.get(k)!r}, expected {v!r}")
    else:
        bad.append(f"unknown check {c!r}")
for b in bad:
    print("  " + b)
sys.exit(1 if bad else 0)
PY
  [ $failures -ne $before ] || echo "ok: $name"
}

defaults "$alloc" num_iterations=1000 min_size_kb=4 max_size_kb=1024 \
  measure_mmap_only=false cleanup=true json=
defaults "$lookup" num_segments=100 num_lookups=10000 segment_size_mb=64 sweep=false json=
defaults "$transfer" transfer_size_kb=4 max_transfer_size_mb=64 num_transfers=1000 \
  use_memcpy=true verify_data=false json=

run "allocation bench: every syscall timed" 'row:^shm_open$' 'row:^ftruncate$' 'row:^mmap$' \
  'row:^allocate total$' 'row:^cleanup total' 'row:^alloc \+ free$' 'row:^thread cache' \
  'row:^first write' -- "$alloc" --num_iterations=20
run "allocation bench --measure_mmap_only" 'row:^mmap \(only mmap timed\)$' '!row:^shm_open$' \
  '!row:^ftruncate$' -- "$alloc" --num_iterations=20 --measure_mmap_only=true
run "allocation bench --cleanup=false" 'row:^allocate total$' \
  -- "$alloc" --num_iterations=20 --cleanup=false
run "lookup bench" 'row:linear' 'row:std::map' 'row:^mcshm_table_relocate ' \
  'row:relocate_batch' 'row:resolve' -- "$lookup" --num_segments=10 --num_lookups=200
# Back-to-back segments: every window is shared, answered from the records
# (the bench checks every strategy's answers against the linear scan's).
run "lookup bench --adjacent" 'row:^mcshm_table_relocate ' 'row:relocate_batch' \
  -- "$lookup" --adjacent --num_segments=50 --num_lookups=500
run "lookup bench --sweep" 'group:segments=1' 'group:segments=10' 'group:segments=100' \
  'group:segments=1000' 'group:segments=10000' \
  -- "$lookup" --sweep --num_lookups=200 --min_time_ms=1
run "transfer bench --verify_data" 'row:^pool memcpy$' 'row:^anonymous mmap memcpy$' \
  'summary:verify_data=passed' 'summary:copy_routine=memcpy' \
  -- "$transfer" --num_transfers=10 --max_transfer_size_mb=1 --verify_data=true
run "transfer bench --use_memcpy=false" 'row:^pool std::copy$' '!row:memcpy' \
  'summary:verify_data=passed' \
  -- "$transfer" --num_transfers=10 --max_transfer_size_mb=1 --use_memcpy=false --verify_data=true

[ $failures -eq 0 ] || { echo "$failures check(s) failed"; exit 1; }
echo "all flag and JSON checks passed"
