// shm_address_lookup_bench: remote -> local address translation.
//
//   linear   Mooncake's relocateSharedMemoryAddress model: scan the target's
//            unordered_map under a reader-writer spinlock (O(n))
//   map      std::map upper_bound on the remote base, same lock (O(log n))
//   relocate mcshm_table_relocate(peer, remote_addr, len)  (Rust, O(1))
//   batch    mcshm_table_relocate_batch: one call per --batch queries
//   floor    a reference: an out-of-line call that checks its pointers as
//            the lookups do and stores one result, and does nothing else
//   resolve  mcshm_table_resolve(segment_id, offset, len)  (Rust, O(1))
//
// Segments are REAL shm objects (baseline allocate, never touched) given
// synthetic sparse remote bases, as if the peer had mapped them elsewhere;
// with --adjacent the remote bases are back to back instead, from a page past
// a segment-size boundary, as a peer's consecutive mmap()s are.
// Lookups are timed in batches; each sample is the mean of one batch.
#include <gflags/gflags.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iterator>
#include <random>
#include <string>
#include <unordered_set>
#include <vector>

#include "bench_common.h"
#include "mcshm_baseline/relocator.h"
#include "mcshm_baseline/shm_allocator.h"
#include "mooncake_shm.h"

DEFINE_int32(num_segments, 100, "Number of SHM segments to simulate");
DEFINE_int32(num_lookups, 10000, "Number of lookup operations");
DEFINE_int32(segment_size_mb, 64, "Size of each segment in MB");
DEFINE_bool(sweep, false, "Run 1, 10, 100, 1000 and 10000 segments (ignores --num_segments)");
DEFINE_string(json, "", "Also write the results as JSON to this file");
DEFINE_uint64(seed, 42, "Seed for remote bases and queries");
DEFINE_int32(batch, 256, "Lookups per timed sample (sample = batch mean)");
DEFINE_int32(min_time_ms, 200, "Keep repeating the lookup passes for at least this long");
DEFINE_int32(min_passes, 3,
             "Minimum passes over the queries per strategy (taken in whole cycles in which "
             "each strategy follows every other once: 5 passes each)");
DEFINE_int32(max_passes, 1000, "Maximum passes over the queries per strategy");
DEFINE_int32(lookup_len, 4096, "Length of each looked-up range in bytes");
DEFINE_int32(table_max_nodes, 0, "mcshm_table_config.max_nodes (0 = auto)");
DEFINE_bool(adjacent, false,
            "Remote bases back to back from a page past a segment-size boundary (as a "
            "peer's consecutive mmaps), instead of random size-aligned slots: every index "
            "window then holds two segments and relocate reads their records");
DEFINE_bool(cold_miss, true,
            "Also time the baseline miss path (open + fstat + mmap + insert) once per segment");

namespace {

using mcshm_bench::nowNs;
using mcshm_bench::Report;
using mcshm_bench::Row;
using mcshm_bench::Stats;
using mcshm_bench::summarize;

constexpr const char* kBench = "shm_address_lookup_bench";

struct Query {
  uint64_t remote_addr;
  uint64_t offset;
  uint32_t seg;
};

struct Medians {
  double linear = 0, map = 0, relocate = 0, resolve = 0, batch = 0, floor = 0;
};

// Times passes over the queries in batches; appends per-lookup batch means.
template <class F>
void timePass(const std::vector<Query>& qs, std::size_t batch, std::vector<double>& out,
              uintptr_t& sink, F&& lookup) {
  for (std::size_t i = 0; i < qs.size(); i += batch) {
    const std::size_t end = std::min(qs.size(), i + batch);
    uintptr_t acc = 0;
    uint64_t t0 = nowNs();
    for (std::size_t k = i; k < end; ++k) acc ^= reinterpret_cast<uintptr_t>(lookup(qs[k]));
    uint64_t t1 = nowNs();
    mcshm_bench::doNotOptimize(acc);
    sink ^= acc;
    out.push_back(double(t1 - t0) / double(end - i));
  }
}

// timePass for mcshm_table_relocate_batch: one call per batch of queries,
// its results read as timePass's loop reads them. false on a failed call.
bool timeBatchPass(const mcshm_table* tp, const std::vector<mcshm_span>& spans, std::size_t batch,
                   std::vector<void*>& outs, std::vector<double>& out, uintptr_t& sink) {
  bool ok = true;
  for (std::size_t i = 0; i < spans.size(); i += batch) {
    const std::size_t n = std::min(spans.size() - i, batch);
    uintptr_t acc = 0;
    uint64_t t0 = nowNs();
    ok &= mcshm_table_relocate_batch(tp, 0, &spans[i], n, outs.data(), nullptr) == MCSHM_OK;
    for (std::size_t k = 0; k < n; ++k) acc ^= reinterpret_cast<uintptr_t>(outs[k]);
    uint64_t t1 = nowNs();
    mcshm_bench::doNotOptimize(acc);
    sink ^= acc;
    out.push_back(double(t1 - t0) / double(n));
  }
  return ok;
}

// An order of passes over n strategies in which each strategy follows every
// other exactly once: an Euler circuit of the complete directed graph on n
// vertices (every vertex has n - 1 edges in and out, so one exists), found by
// Hierholzer's algorithm. It has n * (n - 1) entries and is cyclic: its last
// entry followed by its first is one of its pairs, so running it over and
// over keeps the balance. (Rotating one fixed order does not: each strategy
// then nearly always follows the same one.)
std::vector<std::size_t> balancedOrder(std::size_t n) {
  if (n < 2) return std::vector<std::size_t>(n, 0);
  std::vector<std::vector<std::size_t>> next(n);
  for (std::size_t v = 0; v < n; ++v)
    for (std::size_t w = n; w-- > 0;)
      if (w != v) next[v].push_back(w);
  std::vector<std::size_t> stack{0}, circuit;
  while (!stack.empty()) {
    const std::size_t v = stack.back();
    if (next[v].empty()) {
      circuit.push_back(v);
      stack.pop_back();
    } else {
      stack.push_back(next[v].back());
      next[v].pop_back();
    }
  }
  std::reverse(circuit.begin(), circuit.end());
  circuit.pop_back();  // the start again
  return circuit;
}

uint64_t nextPow2(uint64_t v) {
  uint64_t p = 4096;
  while (p < v) p <<= 1;
  return p;
}

// One configuration; adds rows to rep. Errors are reported in rep; returns
// kFatal when the baseline itself failed (stop), kRustFailed when only the
// Rust table did (the baseline rows are still valid).
enum RunStatus { kOk, kRustFailed, kFatal };
RunStatus runCount(Report& rep, uint32_t count, bool cold_miss, Medians& med) {
  const uint64_t seg_bytes = uint64_t(FLAGS_segment_size_mb) << 20;
  const uint64_t len = uint64_t(FLAGS_lookup_len);
  const std::string group = "segments=" + std::to_string(count);
  std::mt19937_64 rng(FLAGS_seed + count);

  // Real shm segments, sparse (never touched).
  mcshm_baseline::ShmAllocator alloc(FLAGS_seed + count);
  std::vector<char*> local(count);
  uint64_t t0 = nowNs();
  for (uint32_t i = 0; i < count; ++i) {
    local[i] = static_cast<char*>(alloc.allocate(seg_bytes));
    if (!local[i]) {
      rep.error(group + ": baseline allocate of segment " + std::to_string(i) + " (" +
                std::to_string(FLAGS_segment_size_mb) + " MiB): " + alloc.lastError());
      return kFatal;
    }
  }
  std::printf("%s: created %u shm segments of %d MiB in %.1f ms\n", group.c_str(), count,
              FLAGS_segment_size_mb, double(nowNs() - t0) / 1e6);

  // Synthetic remote bases: distinct random slots in a 46-bit space.
  const uint64_t slot = nextPow2(seg_bytes);
  const uint64_t nslots = (uint64_t(1) << 46) / slot;
  if (nslots < uint64_t(count) * 2) {
    rep.error(group + ": segment size too large for " + std::to_string(count) +
              " non-overlapping remote slots in a 46-bit space");
    return kFatal;
  }
  std::vector<uint64_t> remote(count);
  {
    std::unordered_set<uint64_t> used;
    std::uniform_int_distribution<uint64_t> d(1, nslots - 1);
    for (uint32_t i = 0; i < count; ++i) {
      uint64_t s;
      do s = d(rng);
      while (!used.insert(s).second);
      remote[i] = s * slot;
    }
    // The random slots are drawn either way, so both layouts get the same queries.
    if (FLAGS_adjacent) {
      for (uint32_t i = 0; i < count; ++i) remote[i] = slot + 4096 + uint64_t(i) * seg_bytes;
    }
  }

  // Register in every model.
  mcshm_baseline::LinearRelocator linear;
  mcshm_baseline::MapRelocator map;
  for (uint32_t i = 0; i < count; ++i) {
    linear.insert(0, remote[i], local[i], seg_bytes);
    map.insert(0, remote[i], local[i], seg_bytes);
  }
  std::string rust_err;
  mcshm_bench::Table table;
  {
    mcshm_table_config cfg;
    mcshm_table_config_init(&cfg);
    cfg.max_segments = std::max<uint32_t>(cfg.max_segments, count);
    cfg.max_peers = std::max<uint32_t>(cfg.max_peers, 1);
    cfg.max_ranges = std::max<uint32_t>(cfg.max_ranges, count);
    cfg.max_nodes = FLAGS_table_max_nodes > 0
                        ? uint32_t(FLAGS_table_max_nodes)
                        : std::max<uint32_t>(cfg.max_nodes, count * 8 + 64);
    if (table.create(cfg, &rust_err) == MCSHM_OK) {
      for (uint32_t i = 0; i < count && rust_err.empty(); ++i) {
        int32_t rc = mcshm_table_insert_remote(table.get(), 0, remote[i], seg_bytes, local[i]);
        if (rc != MCSHM_OK) {
          rust_err = mcshm_bench::describeError("mcshm_table_insert_remote", rc) +
                     " (segment " + std::to_string(i) + "; try --table_max_nodes)";
          break;
        }
        rc = mcshm_table_insert_segment(table.get(), i, local[i], seg_bytes);
        if (rc != MCSHM_OK)
          rust_err = mcshm_bench::describeError("mcshm_table_insert_segment", rc) +
                     " (segment " + std::to_string(i) + ")";
      }
    }
  }
  const bool rust_ok = rust_err.empty();
  if (!rust_ok) rep.error(group + ": rust table: " + rust_err);

  // Queries.
  std::vector<Query> qs(std::max(1, FLAGS_num_lookups));
  {
    std::uniform_int_distribution<uint32_t> ds(0, count - 1);
    std::uniform_int_distribution<uint64_t> doff(0, seg_bytes - len);
    for (Query& q : qs) {
      q.seg = ds(rng);
      q.offset = doff(rng);
      q.remote_addr = remote[q.seg] + q.offset;
    }
  }

  auto fLinear = [&](const Query& q) { return linear.lookup(0, q.remote_addr, len); };
  auto fMap = [&](const Query& q) { return map.lookup(0, q.remote_addr, len); };
  const mcshm_table* tp = table.get();
  auto fRelocate = [&](const Query& q) {
    void* out = nullptr;
    mcshm_table_relocate(tp, 0, q.remote_addr, len, &out);
    return out;
  };
  auto fFloor = [&](const Query& q) {
    void* out = nullptr;
    mcshm_bench::callFloor(tp, 0, q.remote_addr, len, &out);
    return out;
  };
  auto fResolve = [&](const Query& q) {
    void* out = nullptr;
    mcshm_table_resolve(tp, q.seg, q.offset, len, &out);
    return out;
  };

  // Verify: every strategy returns the same local pointer.
  for (std::size_t i = 0; i < qs.size(); ++i) {
    const Query& q = qs[i];
    void* expect = local[q.seg] + q.offset;
    auto check = [&](const char* what, void* got, int32_t rc) {
      if (got == expect && rc == MCSHM_OK) return true;
      char buf[256];
      std::snprintf(buf, sizeof(buf),
                    "%s: VERIFY FAILED for query %zu (segment %u, remote 0x%llx): %s returned %p "
                    "(rc %d), expected %p",
                    group.c_str(), i, q.seg, static_cast<unsigned long long>(q.remote_addr),
                    what, got, rc, expect);
      rep.error(buf);
      return false;
    };
    if (!check("linear", fLinear(q), MCSHM_OK) || !check("map lower_bound", fMap(q), MCSHM_OK))
      return kFatal;
    if (rust_ok) {
      void* out = nullptr;
      int32_t rc = mcshm_table_relocate(tp, 0, q.remote_addr, len, &out);
      if (!check("mcshm_table_relocate", out, rc)) return kFatal;
      out = nullptr;
      rc = mcshm_table_resolve(tp, q.seg, q.offset, len, &out);
      if (!check("mcshm_table_resolve", out, rc)) return kFatal;
    }
  }

  // The batch call must give every query's answer too.
  const std::size_t batch = std::size_t(std::max(1, FLAGS_batch));
  std::vector<mcshm_span> spans(qs.size());
  for (std::size_t i = 0; i < qs.size(); ++i) spans[i] = {qs[i].remote_addr, len};
  std::vector<void*> outs(std::min(batch, qs.size()));
  for (std::size_t i = 0; rust_ok && i < qs.size(); i += batch) {
    const std::size_t n = std::min(qs.size() - i, batch);
    std::size_t done = 0;
    int32_t rc = mcshm_table_relocate_batch(tp, 0, &spans[i], n, outs.data(), &done);
    for (std::size_t k = 0; k < n; ++k) {
      const Query& q = qs[i + k];
      if (rc == MCSHM_OK && done == n && outs[k] == local[q.seg] + q.offset) continue;
      rep.error(group + ": VERIFY FAILED: mcshm_table_relocate_batch returned rc " +
                std::to_string(rc) + ", done " + std::to_string(done) + " of " +
                std::to_string(n) + " at query " + std::to_string(i + k));
      return kFatal;
    }
  }

  // Time: alternate strategies pass by pass to cancel drift, in an order in
  // which each follows every other equally often (a pass leaves the caches
  // warm for the data it shares with the next one, and cold after the
  // linear scan at large counts). Whole cycles of that order only, so every
  // strategy gets the same number of passes.
  std::vector<double> s_lin, s_map, s_rel, s_res, s_batch, s_floor;
  uintptr_t sink = 0;
  bool batch_ok = true;
  const std::function<void()> strategies[] = {
      [&] { timePass(qs, batch, s_lin, sink, fLinear); },
      [&] { timePass(qs, batch, s_map, sink, fMap); },
      [&] { timePass(qs, batch, s_rel, sink, fRelocate); },
      [&] { timePass(qs, batch, s_res, sink, fResolve); },
      [&] { batch_ok &= timeBatchPass(tp, spans, batch, outs, s_batch, sink); },
      [&] { timePass(qs, batch, s_floor, sink, fFloor); },
  };
  const std::size_t n_strategies = rust_ok ? std::size(strategies) : 2;
  const std::vector<std::size_t> order = balancedOrder(n_strategies);
  const int passes_per_cycle = int(order.size() / n_strategies);
  const uint64_t start = nowNs();
  int passes = 0;
  while (passes < FLAGS_max_passes &&
         (passes < FLAGS_min_passes ||
          nowNs() - start < uint64_t(FLAGS_min_time_ms) * 1000000ULL)) {
    for (std::size_t k : order) strategies[k]();
    passes += passes_per_cycle;
  }
  mcshm_bench::doNotOptimize(sink);
  if (!batch_ok) {
    rep.error(group + ": mcshm_table_relocate_batch failed while timed");
    return kFatal;
  }

  const std::string note = "batch mean of " + std::to_string(batch) + ", " +
                           std::to_string(passes) + " passes";
  auto row = [&](const std::string& op, const std::vector<double>& v, double ref) {
    Row r;
    r.group = group;
    r.operation = op;
    r.stats = summarize(v);
    r.unit_note = note;
    r.throughput = r.stats.median > 0 ? 1e9 / r.stats.median : 0;
    r.throughput_unit = "ops/s";
    r.speedup = (ref > 0 && r.stats.median > 0) ? ref / r.stats.median : 0;
    r.extra.emplace_back("segments", count);
    rep.add(r);
    return r.stats.median;
  };
  med.linear = row("linear scan (unordered_map + RW spinlock)", s_lin, 0);
  med.map = row("std::map upper_bound (+ RW spinlock)", s_map, med.linear);
  if (rust_ok) {
    med.relocate = row("mcshm_table_relocate (peer, addr)", s_rel, med.linear);
    med.resolve = row("mcshm_table_resolve (id, offset)", s_res, med.linear);
    med.batch = row("mcshm_table_relocate_batch (per address)", s_batch, med.linear);
    med.floor = row("reference: empty call (pointer checks)", s_floor, 0);
  }

  // Baseline miss path: open (never create) + fstat + mmap + insert.
  if (cold_miss) {
    mcshm_baseline::LinearRelocator cold;
    std::vector<mcshm_baseline::RemoteBufferDesc> descs;
    for (uint32_t i = 0; i < count; ++i)
      descs.push_back({alloc.nameOf(local[i]), remote[i], seg_bytes});
    cold.setDescriptors(7, std::move(descs));
    std::vector<double> s_miss;
    for (uint32_t i = 0; i < count; ++i) {
      const uint64_t addr = remote[i] + (seg_bytes / 2 & ~uint64_t(4095));
      uint64_t a = nowNs();
      void* p = cold.relocate(7, addr, len);
      uint64_t b = nowNs();
      if (!p) {
        rep.error(group + ": baseline miss path failed for segment " + std::to_string(i));
        return kFatal;
      }
      s_miss.push_back(double(b - a));
      // Same object: a byte written through one mapping is seen through the other.
      *static_cast<volatile char*>(p) = char(0x5a + i);
      if (local[i][seg_bytes / 2 & ~uint64_t(4095)] != char(0x5a + i)) {
        rep.error(group + ": miss path mapped a different object for segment " +
                  std::to_string(i));
        return kFatal;
      }
    }
    Row r;
    r.group = group;
    r.operation = "linear miss: shm_open+fstat+mmap+insert";
    r.stats = summarize(s_miss);
    r.unit_note = "per op, first touch of each segment";
    r.throughput = r.stats.median > 0 ? 1e9 / r.stats.median : 0;
    r.throughput_unit = "ops/s";
    r.extra.emplace_back("segments", count);
    rep.add(r);
  }
  return rust_ok ? kOk : kRustFailed;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("SHM address translation: linear / std::map / mooncake-shm table");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  mcshm_bench::benchInit(kBench, argc, argv);
  Report rep(kBench);
  if (FLAGS_num_segments <= 0 || FLAGS_num_lookups <= 0 || FLAGS_segment_size_mb <= 0 ||
      FLAGS_lookup_len <= 0 || uint64_t(FLAGS_lookup_len) > (uint64_t(FLAGS_segment_size_mb) << 20)) {
    rep.error("invalid flags: need num_segments, num_lookups, segment_size_mb > 0 and "
              "0 < lookup_len <= segment size");
    rep.printSummary();
    return 1;
  }
  rep.config("num_segments", FLAGS_num_segments);
  rep.config("num_lookups", FLAGS_num_lookups);
  rep.config("segment_size_mb", FLAGS_segment_size_mb);
  rep.config("sweep", FLAGS_sweep ? "true" : "false");
  rep.config("adjacent", FLAGS_adjacent ? "true" : "false");
  rep.config("seed", double(FLAGS_seed));
  rep.config("batch", FLAGS_batch);
  rep.config("lookup_len", FLAGS_lookup_len);

  std::vector<uint32_t> counts;
  if (FLAGS_sweep)
    counts = {1, 10, 100, 1000, 10000};
  else
    counts = {uint32_t(FLAGS_num_segments)};

  for (uint32_t c : counts) {
    Medians m;
    RunStatus st = runCount(rep, c, FLAGS_cold_miss && !FLAGS_sweep, m);
    const std::string sfx = FLAGS_sweep ? "_n" + std::to_string(c) : "";
    if (m.linear > 0) rep.summary("linear_median_ns" + sfx, m.linear, "ns");
    if (m.map > 0) rep.summary("map_median_ns" + sfx, m.map, "ns");
    if (m.relocate > 0) {
      rep.summary("relocate_median_ns" + sfx, m.relocate, "ns");
      rep.summary("resolve_median_ns" + sfx, m.resolve, "ns");
      rep.summary("speedup_relocate_vs_linear" + sfx, m.linear / m.relocate, "x");
      rep.summary("relocate_batch_median_ns" + sfx, m.batch, "ns");
      rep.summary("speedup_relocate_batch_vs_linear" + sfx, m.linear / m.batch, "x");
      rep.summary("call_floor_median_ns" + sfx, m.floor, "ns");
    }
    if (st == kFatal) break;
  }
  rep.note("times are ns per lookup: each sample is the mean of one batch; median/p99 over "
           "all batches of all passes; strategies alternate pass by pass, each round starting one "
           "strategy later");
  rep.note("speedup column: linear scan median / row median");
  rep.note("reference row: an out-of-line call with the lookups' pointer checks and one store, "
           "and no lookup: what one call per address costs this loop before any lookup work");
  rep.note(std::string(FLAGS_adjacent
                           ? "remote bases are synthetic: back to back from a page past a "
                             "segment-size boundary (--adjacent; peer 0)"
                           : "remote bases are synthetic: random non-overlapping, size-aligned "
                             "slots in a 46-bit space (peer 0)") +
           "; lookup length " + std::to_string(FLAGS_lookup_len) + " B");

  rep.printTable();
  if (std::size_t n = mcshm_bench::countLeftovers())
    rep.error(std::to_string(n) + " shm object(s) of this process still in /dev/shm");
  rep.printSummary();
  if (!rep.writeJson(FLAGS_json)) return 1;
  return rep.ok() ? 0 : 1;
}
