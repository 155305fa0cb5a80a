// shm_allocation_bench: today's per-buffer shm path (shm_open + ftruncate +
// mmap, then munmap + shm_unlink) against the Rust arena over a pre-created
// pool (through the C ABI), in the same process and run.
//
// Syscall-scale operations are timed one by one; nanosecond-scale arena
// operations are timed in batches and each sample is the batch mean.
#include <gflags/gflags.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "bench_common.h"
#include "mcshm_baseline/shm_allocator.h"
#include "mooncake_shm.h"

DEFINE_int32(num_iterations, 1000, "Number of allocation iterations");
DEFINE_int32(min_size_kb, 4, "Minimum allocation size in KB");
DEFINE_int32(max_size_kb, 1024, "Maximum allocation size in KB");
DEFINE_bool(measure_mmap_only, false, "Only measure mmap, not shm_open");
DEFINE_bool(cleanup, true,
            "Clean up SHM segments after each allocation; with false they are kept until the "
            "end of the run and removed then (nothing is left behind after exit)");
DEFINE_string(json, "", "Also write the results as JSON to this file");
DEFINE_uint64(seed, 42, "Seed of the size sequence (identical for baseline and arena)");
DEFINE_int32(batch, 256, "Arena operations per timed sample (sample = batch mean)");
DEFINE_int32(min_samples, 200, "Minimum number of batch samples per arena measurement");
DEFINE_int32(churn_live, 64, "Live blocks kept by the churn case");
DEFINE_uint64(arena_align, 64, "Alignment passed to mcshm_pool_alloc");
DEFINE_uint64(cache_bytes, 0,
              "max_bytes of the thread cache timed in the cache rows (mcshm_cache_create; "
              "0: the library's default, MCSHM_CACHE_DEFAULT_BYTES)");
DEFINE_uint32(arena_shards, 1,
              "Shards of the arena's pool (mcshm_pool_options.shards): independently locked "
              "arenas, for threads that allocate at once; one thread pays more per call (0: 1)");

namespace {

using mcshm_bench::nowNs;
using mcshm_bench::Report;
using mcshm_bench::Row;
using mcshm_bench::Stats;
using mcshm_bench::summarize;

constexpr const char* kBench = "shm_allocation_bench";

Row makeRow(const std::string& group, const std::string& op, const std::vector<double>& ns,
            const std::string& note) {
  Row r;
  r.group = group;
  r.operation = op;
  r.stats = summarize(ns);
  r.unit_note = note;
  if (r.stats.median > 0) {
    r.throughput = 1e9 / r.stats.median;
    r.throughput_unit = "ops/s";
  }
  return r;
}

int finish(Report& rep) {
  rep.printTable();
  if (std::size_t n = mcshm_bench::countLeftovers()) {
    rep.error(std::to_string(n) + " shm object(s) of this process still in /dev/shm");
  }
  rep.printSummary();
  if (!rep.writeJson(FLAGS_json)) return 1;
  return rep.ok() ? 0 : 1;
}

struct ArenaResult {
  std::vector<double> alloc, free, pair, churn, touch, cache_pair, cache_churn;
};

// Times `batches` samples of B alloc-then-free pairs through `alloc(size,
// &offset)` and `release(offset)`; "" or an error message.
template <class Alloc, class Release>
std::string timePairs(std::size_t batches, std::size_t B, const std::function<uint64_t()>& nextSize,
                      Alloc alloc, Release release, std::vector<double>& out) {
  std::vector<uint64_t> bs(B);
  int32_t rc = MCSHM_OK;
  for (std::size_t b = 0; b < batches; ++b) {
    for (std::size_t k = 0; k < B; ++k) bs[k] = nextSize();
    uint64_t t0 = nowNs();
    for (std::size_t k = 0; k < B; ++k) {
      uint64_t off;
      rc = alloc(bs[k], &off);
      if (rc != MCSHM_OK) break;
      rc = release(off);
      if (rc != MCSHM_OK) break;
    }
    uint64_t t1 = nowNs();
    if (rc != MCSHM_OK) return mcshm_bench::describeError("alloc/free pair", rc);
    out.push_back(double(t1 - t0) / B);
  }
  return "";
}

// The churn: keep `--churn_live` blocks; each op frees a random live one
// and allocates a new one in its place. As timePairs.
template <class Alloc, class Release>
std::string timeChurn(std::size_t batches, std::size_t B, const std::function<uint64_t()>& nextSize,
                      Alloc alloc, Release release, std::vector<double>& out) {
  const std::size_t live = static_cast<std::size_t>(std::max(1, FLAGS_churn_live));
  std::vector<uint64_t> offs(live);
  int32_t rc = MCSHM_OK;
  for (std::size_t k = 0; k < live; ++k) {
    rc = alloc(nextSize(), &offs[k]);
    if (rc != MCSHM_OK) return mcshm_bench::describeError("alloc (churn fill)", rc);
  }
  std::mt19937_64 rng(FLAGS_seed ^ 0x9e3779b97f4a7c15ULL);
  std::vector<uint32_t> victims(B);
  std::vector<uint64_t> bs(B);
  for (std::size_t b = 0; b < batches; ++b) {
    for (std::size_t k = 0; k < B; ++k) {
      victims[k] = static_cast<uint32_t>(rng() % live);
      bs[k] = nextSize();
    }
    uint64_t t0 = nowNs();
    for (std::size_t k = 0; k < B; ++k) {
      rc = release(offs[victims[k]]);
      if (rc != MCSHM_OK) break;
      rc = alloc(bs[k], &offs[victims[k]]);
      if (rc != MCSHM_OK) break;
    }
    uint64_t t1 = nowNs();
    // On error the remaining blocks are released by destroying the pool.
    if (rc != MCSHM_OK) return mcshm_bench::describeError("free/alloc (churn)", rc);
    out.push_back(double(t1 - t0) / B);
  }
  for (std::size_t k = 0; k < live; ++k) {
    rc = release(offs[k]);
    if (rc != MCSHM_OK) return mcshm_bench::describeError("free (churn drain)", rc);
  }
  return "";
}

// Runs all arena measurements; returns "" or an error message.
std::string runArena(mcshm_bench::Pool& pool, const std::vector<uint64_t>& sizes,
                     ArenaResult& out) {
  const mcshm_pool* p = pool.get();
  const uint64_t align = FLAGS_arena_align;
  const std::size_t n = sizes.size();
  std::size_t idx = 0;
  const std::function<uint64_t()> nextSize = [&]() {
    uint64_t s = sizes[idx];
    idx = (idx + 1) % n;
    return s;
  };
  int32_t rc = MCSHM_OK;

  // 1. alloc and free, separately: 64 allocations timed as one sample, then
  //    the 64 frees timed as one sample (64 live blocks bound the pool use).
  {
    const std::size_t B = 64;
    std::size_t batches = std::max<std::size_t>(FLAGS_min_samples, (n + B - 1) / B);
    std::vector<uint64_t> offs(B);
    out.alloc.reserve(batches);
    out.free.reserve(batches);
    for (std::size_t b = 0; b < batches; ++b) {
      uint64_t bs[B];
      for (std::size_t k = 0; k < B; ++k) bs[k] = nextSize();
      uint64_t t0 = nowNs();
      for (std::size_t k = 0; k < B; ++k) {
        rc = mcshm_pool_alloc(p, bs[k], align, &offs[k]);
        if (rc != MCSHM_OK) break;
      }
      uint64_t t1 = nowNs();
      if (rc != MCSHM_OK) return mcshm_bench::describeError("mcshm_pool_alloc", rc);
      for (std::size_t k = 0; k < B; ++k) {
        rc = mcshm_pool_free(p, offs[k]);
        if (rc != MCSHM_OK) break;
      }
      uint64_t t2 = nowNs();
      if (rc != MCSHM_OK) return mcshm_bench::describeError("mcshm_pool_free", rc);
      out.alloc.push_back(double(t1 - t0) / B);
      out.free.push_back(double(t2 - t1) / B);
    }
  }

  // 2. alloc immediately followed by free; 3. the churn.
  const std::size_t B = static_cast<std::size_t>(std::max(1, FLAGS_batch));
  const std::size_t batches = std::max<std::size_t>(FLAGS_min_samples, (n + B - 1) / B);
  auto poolAlloc = [&](uint64_t size, uint64_t* off) { return mcshm_pool_alloc(p, size, align, off); };
  auto poolFree = [&](uint64_t off) { return mcshm_pool_free(p, off); };
  std::string err = timePairs(batches, B, nextSize, poolAlloc, poolFree, out.pair);
  if (err.empty()) err = timeChurn(batches, B, nextSize, poolAlloc, poolFree, out.churn);
  if (!err.empty()) return "pool " + err;

  // 2 and 3 again through a thread cache of this thread (no lock).
  {
    mcshm_cache* cache = nullptr;
    rc = mcshm_cache_create(p, FLAGS_cache_bytes, &cache);
    if (rc != MCSHM_OK) return mcshm_bench::describeError("mcshm_cache_create", rc);
    auto cacheAlloc = [&](uint64_t size, uint64_t* off) {
      return mcshm_cache_alloc(cache, size, align, off);
    };
    auto cacheFree = [&](uint64_t off) { return mcshm_cache_free(cache, off); };
    err = timePairs(batches, B, nextSize, cacheAlloc, cacheFree, out.cache_pair);
    if (err.empty()) err = timeChurn(batches, B, nextSize, cacheAlloc, cacheFree, out.cache_churn);
    mcshm_cache_destroy(cache);
    if (!err.empty()) return "cache " + err;
  }

  // 4. first write to a freshly allocated 4 KiB buffer in the prefaulted pool.
  {
    std::vector<uint64_t> offs(B);
    char* base = pool.base();
    const std::size_t samples = std::max<std::size_t>(
        50, (static_cast<std::size_t>(FLAGS_num_iterations) + B - 1) / B);
    for (std::size_t s = 0; s < samples; ++s) {
      for (std::size_t k = 0; k < B; ++k) {
        rc = mcshm_pool_alloc(p, 4096, 4096, &offs[k]);
        if (rc != MCSHM_OK) return mcshm_bench::describeError("mcshm_pool_alloc (4 KiB)", rc);
      }
      uint64_t t0 = nowNs();
      for (std::size_t k = 0; k < B; ++k) {
        volatile char* q = base + offs[k];
        *q = static_cast<char>(k);  // one byte per page (the buffer is one page)
      }
      uint64_t t1 = nowNs();
      out.touch.push_back(double(t1 - t0) / B);
      for (std::size_t k = 0; k < B; ++k) {
        rc = mcshm_pool_free(p, offs[k]);
        if (rc != MCSHM_OK) return mcshm_bench::describeError("mcshm_pool_free (4 KiB)", rc);
      }
    }
  }

  mcshm_pool_stats st;
  rc = mcshm_pool_stats_get(p, &st);
  if (rc != MCSHM_OK) return mcshm_bench::describeError("mcshm_pool_stats_get", rc);
  if (st.live != 0)
    return "arena reports " + std::to_string(st.live) + " live blocks after freeing everything";
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage(
      "SHM allocation: per-buffer shm objects (today) vs the mooncake-shm arena");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  mcshm_bench::benchInit(kBench, argc, argv);
  Report rep(kBench);

  if (FLAGS_num_iterations <= 0 || FLAGS_min_size_kb <= 0 ||
      FLAGS_max_size_kb < FLAGS_min_size_kb || FLAGS_batch <= 0 || FLAGS_churn_live <= 0) {
    rep.error("invalid flags: need num_iterations > 0, 0 < min_size_kb <= max_size_kb, "
              "batch > 0, churn_live > 0");
    rep.printSummary();
    return 1;
  }
  const std::size_t n = static_cast<std::size_t>(FLAGS_num_iterations);
  const uint64_t max_size = uint64_t(FLAGS_max_size_kb) * 1024;

  rep.config("num_iterations", FLAGS_num_iterations);
  rep.config("min_size_kb", FLAGS_min_size_kb);
  rep.config("max_size_kb", FLAGS_max_size_kb);
  rep.config("measure_mmap_only", FLAGS_measure_mmap_only ? "true" : "false");
  rep.config("cleanup", FLAGS_cleanup ? "true" : "false");
  rep.config("seed", static_cast<double>(FLAGS_seed));
  rep.config("batch", FLAGS_batch);
  rep.config("churn_live", FLAGS_churn_live);
  rep.config("arena_align", static_cast<double>(FLAGS_arena_align));

  // Identical size sequence for both sides.
  std::vector<uint64_t> sizes(n);
  {
    std::mt19937_64 rng(FLAGS_seed);
    std::uniform_int_distribution<uint64_t> d{uint64_t(FLAGS_min_size_kb),
                                              uint64_t(FLAGS_max_size_kb)};
    for (auto& s : sizes) s = d(rng) * 1024;
  }
  std::printf("sizes: %zu uniformly random in [%d, %d] KiB (seed %llu)\n", n, FLAGS_min_size_kb,
              FLAGS_max_size_kb, static_cast<unsigned long long>(FLAGS_seed));

  // ------------------------------------------------------------ baseline --
  std::vector<double> b_open, b_trunc, b_mmap, b_close, b_total, b_munmap, b_unlink, b_cleanup,
      b_both, b_touch;
  double alloc_wall_ns = 0;
  {
    mcshm_baseline::ShmAllocator alloc(FLAGS_seed);
    std::vector<void*> kept;
    std::vector<double> alloc_totals;
    for (std::size_t i = 0; i < n; ++i) {
      mcshm_baseline::AllocTimings t;
      void* p = alloc.allocate(sizes[i], &t);
      if (!p) {
        rep.error("baseline allocate(" + std::to_string(sizes[i]) + "): " + alloc.lastError());
        break;
      }
      alloc_wall_ns += double(t.total_ns);
      b_open.push_back(double(t.shm_open_ns));
      b_trunc.push_back(double(t.ftruncate_ns));
      b_mmap.push_back(double(t.mmap_ns));
      b_close.push_back(double(t.close_ns));
      b_total.push_back(double(t.total_ns));
      if (FLAGS_cleanup) {
        mcshm_baseline::FreeTimings f;
        if (!alloc.free(p, &f, true)) {
          rep.error("baseline free: " + alloc.lastError());
          break;
        }
        b_munmap.push_back(double(f.munmap_ns));
        b_unlink.push_back(double(f.unlink_ns));
        b_cleanup.push_back(double(f.total_ns));
        b_both.push_back(double(t.total_ns + f.total_ns));
      } else {
        kept.push_back(p);
        alloc_totals.push_back(double(t.total_ns));
      }
    }
    if (!FLAGS_cleanup) {
      // Deferred: everything stayed alive during the run; remove it now
      // (timed, in allocation order) so nothing is left behind.
      for (std::size_t i = 0; i < kept.size(); ++i) {
        mcshm_baseline::FreeTimings f;
        if (!alloc.free(kept[i], &f, true)) {
          rep.error("baseline free: " + alloc.lastError());
          continue;
        }
        b_munmap.push_back(double(f.munmap_ns));
        b_unlink.push_back(double(f.unlink_ns));
        b_cleanup.push_back(double(f.total_ns));
        b_both.push_back(alloc_totals[i] + double(f.total_ns));
      }
    }
    // First write to a fresh 4 KiB buffer: one page fault on a new object.
    for (std::size_t i = 0; i < n && rep.ok(); ++i) {
      void* p = alloc.allocate(4096);
      if (!p) {
        rep.error("baseline allocate(4096): " + alloc.lastError());
        break;
      }
      uint64_t t0 = nowNs();
      *static_cast<volatile char*>(p) = static_cast<char>(i);
      uint64_t t1 = nowNs();
      b_touch.push_back(double(t1 - t0));
      alloc.free(p);
    }
    alloc.freeAll();
  }

  const std::string bg = "baseline: shm object per buffer (per-op timing)";
  if (FLAGS_measure_mmap_only) {
    rep.add(makeRow(bg, "mmap (only mmap timed)", b_mmap, ""));
  } else {
    rep.add(makeRow(bg, "shm_open", b_open, ""));
    rep.add(makeRow(bg, "ftruncate", b_trunc, ""));
    rep.add(makeRow(bg, "mmap", b_mmap, ""));
    rep.add(makeRow(bg, "close", b_close, ""));
    rep.add(makeRow(bg, "allocate total", b_total, ""));
    const std::string when = FLAGS_cleanup ? "" : "(deferred to end of run)";
    rep.add(makeRow(bg, "munmap", b_munmap, when));
    rep.add(makeRow(bg, "shm_unlink", b_unlink, when));
    rep.add(makeRow(bg, "cleanup total (munmap+unlink)", b_cleanup, when));
    rep.add(makeRow(bg, "allocate + cleanup", b_both, ""));
  }
  rep.add(makeRow(bg, "first write, fresh 4 KiB object", b_touch, "(page fault)"));
  rep.note("baseline: fd is closed right after mmap (as Mooncake does); cleanup = munmap + "
           "shm_unlink, close is its own row");
  if (!FLAGS_cleanup)
    rep.note("--cleanup=false: objects stayed alive during the run and were removed at its "
             "end; nothing is left in /dev/shm after exit");

  const Stats s_total = summarize(b_total);
  const Stats s_cleanup = summarize(b_cleanup);
  const Stats s_both = summarize(b_both);
  const Stats s_mmap = summarize(b_mmap);
  const Stats s_btouch = summarize(b_touch);
  // The baseline reference for speedups.
  const double ref_pair = FLAGS_measure_mmap_only ? s_mmap.median : s_both.median;
  const double ref_alloc = FLAGS_measure_mmap_only ? s_mmap.median : s_total.median;

  if (!rep.ok()) return finish(rep);

  if (FLAGS_measure_mmap_only) {
    rep.summary("baseline_mmap_median_ns", s_mmap.median, "ns");
  } else {
    rep.summary("baseline_alloc_median_ns", s_total.median, "ns");
    rep.summary("baseline_cleanup_median_ns", s_cleanup.median, "ns");
    rep.summary("baseline_alloc_free_median_ns", s_both.median, "ns");
    if (alloc_wall_ns > 0)
      rep.summary("baseline_allocations_per_s", double(b_total.size()) * 1e9 / alloc_wall_ns);
  }
  rep.summary("baseline_first_write_4k_median_ns", s_btouch.median, "ns");

  // --------------------------------------------------------------- arena --
  const uint64_t live = uint64_t(std::max(FLAGS_churn_live, 64));
  uint64_t capacity = std::max<uint64_t>(2 * max_size, 2 * live * max_size) + (2u << 20);
  capacity = (capacity + (2u << 20) - 1) & ~uint64_t((2u << 20) - 1);
  mcshm_bench::Pool pool;
  std::string err;
  std::printf("arena: pool of %llu MiB, MCSHM_POOL_PREFAULT, %u shard(s)\n",
              static_cast<unsigned long long>(capacity >> 20),
              std::max<uint32_t>(1, FLAGS_arena_shards));
  if (pool.create("alloc", capacity, MCSHM_POOL_PREFAULT, 0, &err, FLAGS_arena_shards) !=
      MCSHM_OK) {
    rep.error("arena pool: " + err);
    return finish(rep);
  }
  ArenaResult ar;
  err = runArena(pool, sizes, ar);
  pool.reset();
  if (!err.empty()) {
    rep.error("arena: " + err);
    return finish(rep);
  }

  const std::string ag = "arena: mooncake-shm pool via C ABI (batch-mean samples)";
  const std::string nb = "batch mean of " + std::to_string(FLAGS_batch);
  // Adds a row whose speedup is `ref` (0: none) over its median; returns its stats.
  auto addRow = [&](const std::string& op, const std::vector<double>& ns, const std::string& note,
                    double ref) {
    Row r = makeRow(ag, op, ns, note);
    if (ref > 0) r.speedup = ref / r.stats.median;
    rep.add(r);
    return r.stats;
  };
  const std::string nlive = std::to_string(FLAGS_churn_live) + " live";
  const Stats s_alloc = addRow("alloc", ar.alloc, "batch mean of 64", ref_alloc);
  const Stats s_free = addRow("free", ar.free, "batch mean of 64",
                              FLAGS_measure_mmap_only ? 0 : s_cleanup.median);
  const Stats s_pair = addRow("alloc + free", ar.pair, nb, ref_pair);
  const Stats s_churn = addRow("churn, " + nlive + " (free+alloc)", ar.churn, nb, ref_pair);
  const Stats s_cpair = addRow("thread cache: alloc + free", ar.cache_pair, nb, ref_pair);
  const Stats s_cchurn = addRow("thread cache: churn, " + nlive, ar.cache_churn, nb, ref_pair);
  const Stats s_atouch =
      addRow("first write, 4 KiB from prefaulted pool", ar.touch, nb, s_btouch.median);
  rep.note(std::string("speedup column: baseline ") +
           (FLAGS_measure_mmap_only ? "mmap" : "allocate(+cleanup)") +
           " median / arena median of the same row kind; first write: baseline page fault / "
           "prefaulted pool");
  rep.note("arena rows time " + std::to_string(FLAGS_batch) +
           " ops (64 for alloc/free) per sample and report the median/p99 of the batch means");

  rep.summary("arena_alloc_median_ns", s_alloc.median, "ns");
  rep.summary("arena_free_median_ns", s_free.median, "ns");
  rep.summary("arena_alloc_free_median_ns", s_pair.median, "ns");
  rep.summary("arena_churn_median_ns", s_churn.median, "ns");
  rep.summary("cache_alloc_free_median_ns", s_cpair.median, "ns");
  rep.summary("cache_churn_median_ns", s_cchurn.median, "ns");
  rep.summary("pool_first_write_4k_median_ns", s_atouch.median, "ns");
  rep.summary("speedup_alloc_free", ref_pair / s_pair.median, "x");
  rep.summary("speedup_cache_alloc_free", ref_pair / s_cpair.median, "x");
  return finish(rep);
}
