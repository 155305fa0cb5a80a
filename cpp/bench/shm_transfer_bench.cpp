// shm_transfer_bench: copy bandwidth between two buffers allocated in ONE
// mooncake-shm pool (through the C ABI) vs between two anonymous mmap
// buffers. Both sides are written once before timing, their first touches
// interleaved (see `Sides`); pool and anonymous samples alternate (each
// follows one of the other side) to cancel drift, and the sweep runs in
// rounds over freshly mapped buffers so that no side keeps one lucky or
// unlucky set of physical pages. Small copies are
// timed in batches so a sample lasts at least ~64 KiB of copying; each
// sample is the batch mean.
#include <gflags/gflags.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <sys/mman.h>

#include "bench_common.h"
#include "mooncake_shm.h"

DEFINE_int32(transfer_size_kb, 4, "Transfer size in KB (first size of the sweep)");
DEFINE_int32(max_transfer_size_mb, 64, "Maximum transfer size for sweep in MB");
DEFINE_int32(num_transfers, 1000, "Number of transfers per size");
DEFINE_bool(use_memcpy, true,
            "Use memcpy for transfers (false: std::copy over uint64_t words; the crate has no "
            "copy routine of its own)");
DEFINE_bool(verify_data, false, "Verify every byte after each transfer");
DEFINE_uint64(max_bytes_per_size, 8ULL << 30,
              "Cap on bytes copied per size and side: transfers = min(num_transfers, "
              "max_bytes_per_size / size) so the default sweep stays well under a minute "
              "(0 = no cap)");
DEFINE_string(json, "", "Also write the results as JSON to this file");
DEFINE_uint64(seed, 42, "Seed of the data pattern");
DEFINE_int32(min_batch_kb, 64, "Small copies are batched so one sample copies >= this many KiB");
DEFINE_string(fault_order, "interleaved",
              "Which side's pages are faulted in first: interleaved (2 MiB chunks taken in "
              "turn), pool_first (a MCSHM_POOL_PREFAULT pool, then the anonymous buffers) or "
              "anon_first");
DEFINE_int32(rounds, 8,
             "Rounds, each with freshly mapped buffers on both sides; the transfers of a size "
             "are split between them and their samples pooled (averages out where pages land)");

namespace {

using mcshm_bench::nowNs;
using mcshm_bench::Report;
using mcshm_bench::Row;
using mcshm_bench::Stats;
using mcshm_bench::summarize;

constexpr const char* kBench = "shm_transfer_bench";

inline void copyBytes(char* dst, const char* src, std::size_t n) {
  if (FLAGS_use_memcpy) {
    std::memcpy(dst, src, n);
  } else {
    const uint64_t* s = reinterpret_cast<const uint64_t*>(src);
    std::copy(s, s + n / 8, reinterpret_cast<uint64_t*>(dst));
    std::memcpy(dst + (n & ~std::size_t(7)), src + (n & ~std::size_t(7)), n & 7);
  }
}

void fillPattern(char* p, std::size_t n, uint64_t seed) {
  uint64_t x = seed | 1;
  uint64_t* w = reinterpret_cast<uint64_t*>(p);
  for (std::size_t i = 0; i < n / 8; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    w[i] = x;
  }
}

struct AnonBuffer {
  void* p = MAP_FAILED;
  std::size_t n = 0;
  ~AnonBuffer() {
    if (p != MAP_FAILED) ::munmap(p, n);
  }
  bool map(std::size_t bytes) {
    n = bytes;
    p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p != MAP_FAILED;
  }
  char* get() const { return static_cast<char*>(p); }
};

// The pool holds both buffers plus room for its own metadata rounding.
uint64_t poolCapacity(std::size_t max_size) { return 2 * uint64_t(max_size) + (2u << 20); }

// Where a page lands in physical memory depends on when it is first touched,
// and on this kind of (virtual) machine that alone moves large copies by
// several percent: whichever side is faulted in first copies slower. The
// interleaved order touches the two sides in turn, 2 MiB at a time, so both
// get the same mix; pool_first and anon_first show the effect.
struct Sides {
  AnonBuffer a_src, a_dst;
  mcshm_bench::Pool pool;
  char* p_src = nullptr;
  char* p_dst = nullptr;

  // Maps both sides and writes every byte once (a pattern in src, zeros in
  // dst); returns "" or an error message.
  std::string setUp(const std::string& order, std::size_t max_size) {
    if (!a_src.map(max_size) || !a_dst.map(max_size))
      return std::string("anonymous mmap of ") + std::to_string(max_size) +
             " bytes: " + std::strerror(errno);
    if (order == "anon_first") touch(a_src.get(), a_dst.get(), 0, max_size);
    const uint32_t flags = order == "interleaved" ? 0 : MCSHM_POOL_PREFAULT;
    std::string err;
    if (pool.create("xfer", poolCapacity(max_size), flags, 0, &err) != MCSHM_OK)
      return "pool: " + err;
    uint64_t off_src = 0, off_dst = 0;
    void* v_src = nullptr;
    void* v_dst = nullptr;
    int32_t rc = mcshm_pool_alloc(pool.get(), max_size, 4096, &off_src);
    const char* what = "mcshm_pool_alloc";
    if (rc == MCSHM_OK) rc = mcshm_pool_alloc(pool.get(), max_size, 4096, &off_dst);
    if (rc == MCSHM_OK) {
      what = "mcshm_pool_ptr";
      rc = mcshm_pool_ptr(pool.get(), off_src, max_size, &v_src);
    }
    if (rc == MCSHM_OK) rc = mcshm_pool_ptr(pool.get(), off_dst, max_size, &v_dst);
    if (rc != MCSHM_OK) return "pool: " + mcshm_bench::describeError(what, rc);
    p_src = static_cast<char*>(v_src);
    p_dst = static_cast<char*>(v_dst);
    const std::size_t chunk = order == "interleaved" ? std::size_t(2) << 20 : max_size;
    for (std::size_t at = 0; at < max_size; at += chunk) {
      const std::size_t n = std::min(chunk, max_size - at);
      if (order != "anon_first") touch(a_src.get(), a_dst.get(), at, n);
      touch(p_src, p_dst, at, n);
    }
    return "";
  }

  static void touch(char* src, char* dst, std::size_t at, std::size_t n) {
    fillPattern(src + at, n, FLAGS_seed + at);
    std::memset(dst + at, 0, n);
  }
};

// One timed sample: `reps` copies of `size` bytes; returns ns per copy.
// With verify, every copy is checked byte for byte (outside the timed part),
// after stamping the source so that a stale destination cannot pass.
double sample(char* dst, char* src, std::size_t size, std::size_t reps, uint64_t stamp,
              bool* verify_failed) {
  if (!FLAGS_verify_data) {
    uint64_t t0 = nowNs();
    for (std::size_t r = 0; r < reps; ++r) {
      copyBytes(dst, src, size);
      mcshm_bench::clobberMemory();
    }
    return double(nowNs() - t0) / double(reps);
  }
  uint64_t total = 0;
  for (std::size_t r = 0; r < reps; ++r) {
    std::memcpy(src, &stamp, sizeof(stamp));
    std::memcpy(src + size - sizeof(stamp), &stamp, sizeof(stamp));
    ++stamp;
    uint64_t t0 = nowNs();
    copyBytes(dst, src, size);
    mcshm_bench::clobberMemory();
    total += nowNs() - t0;
    if (std::memcmp(dst, src, size) != 0) *verify_failed = true;
  }
  return double(total) / double(reps);
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("SHM transfer: memcpy inside a mooncake-shm pool vs anonymous memory");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  mcshm_bench::benchInit(kBench, argc, argv);
  Report rep(kBench);

  if (FLAGS_transfer_size_kb <= 0 || FLAGS_max_transfer_size_mb <= 0 ||
      FLAGS_num_transfers <= 0 ||
      uint64_t(FLAGS_transfer_size_kb) * 1024 > (uint64_t(FLAGS_max_transfer_size_mb) << 20)) {
    rep.error("invalid flags: need 0 < transfer_size_kb*1024 <= max_transfer_size_mb*2^20 and "
              "num_transfers > 0");
    rep.printSummary();
    return 1;
  }
  const std::size_t max_size = std::size_t(FLAGS_max_transfer_size_mb) << 20;
  std::vector<std::size_t> sizes;
  for (std::size_t s = std::size_t(FLAGS_transfer_size_kb) * 1024; s <= max_size; s *= 2)
    sizes.push_back(s);

  const char* routine =
      FLAGS_use_memcpy ? "memcpy" : "std::copy over uint64_t words (no crate copy routine)";
  std::printf("copy routine: %s; verify_data=%s\n", routine, FLAGS_verify_data ? "true" : "false");
  rep.config("transfer_size_kb", FLAGS_transfer_size_kb);
  rep.config("max_transfer_size_mb", FLAGS_max_transfer_size_mb);
  rep.config("num_transfers", FLAGS_num_transfers);
  rep.config("use_memcpy", FLAGS_use_memcpy ? "true" : "false");
  rep.config("copy_routine", routine);
  rep.config("verify_data", FLAGS_verify_data ? "true" : "false");
  rep.config("max_bytes_per_size", double(FLAGS_max_bytes_per_size));
  rep.config("seed", double(FLAGS_seed));

  auto finish = [&]() {
    rep.printTable();
    if (std::size_t n = mcshm_bench::countLeftovers())
      rep.error(std::to_string(n) + " shm object(s) of this process still in /dev/shm");
    rep.printSummary();
    if (!rep.writeJson(FLAGS_json)) return 1;
    return rep.ok() ? 0 : 1;
  };

  const std::string order = FLAGS_fault_order;
  if (order != "interleaved" && order != "pool_first" && order != "anon_first") {
    rep.error("invalid --fault_order=" + order +
              " (want interleaved, pool_first or anon_first)");
    return finish();
  }
  if (FLAGS_rounds <= 0) {
    rep.error("invalid --rounds=" + std::to_string(FLAGS_rounds) + " (want >= 1)");
    return finish();
  }
  rep.config("fault_order", order);

  std::printf("pool: %llu MiB%s; anonymous: 2 x %zu MiB; fault order: %s; %d round(s)\n",
              static_cast<unsigned long long>(poolCapacity(max_size) >> 20),
              order == "interleaved" ? "" : ", MCSHM_POOL_PREFAULT", max_size >> 20,
              order.c_str(), FLAGS_rounds);
  rep.config("rounds", FLAGS_rounds);

  // Per size: the samples of every round, pooled.
  std::vector<std::vector<double>> s_pool(sizes.size()), s_anon(sizes.size());
  std::vector<std::size_t> transfers(sizes.size()), per_sample(sizes.size());
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    std::size_t t = std::size_t(FLAGS_num_transfers);
    if (FLAGS_max_bytes_per_size > 0)
      t = std::max<std::size_t>(1, std::min<std::size_t>(t, FLAGS_max_bytes_per_size / sizes[i]));
    transfers[i] = t;
    const std::size_t min_batch = std::size_t(std::max(1, FLAGS_min_batch_kb)) * 1024;
    const std::size_t b = FLAGS_verify_data ? 1 : std::max<std::size_t>(1, min_batch / sizes[i]);
    per_sample[i] = std::min(b, t);
  }

  bool verify_failed = false;
  uint64_t stamp = FLAGS_seed * 1000003;
  for (int round = 0; round < FLAGS_rounds && !verify_failed; ++round) {
    // Fresh buffers (fresh physical pages) every round.
    Sides sides;
    std::string err = sides.setUp(order, max_size);
    if (!err.empty()) {
      rep.error(err);
      return finish();
    }
    char* const p_src = sides.p_src;
    char* const p_dst = sides.p_dst;
    char* const a_src = sides.a_src.get();
    char* const a_dst = sides.a_dst.get();
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      const std::size_t size = sizes[i];
      // This round's share of the transfers (round 0 takes the remainder).
      const std::size_t share = transfers[i] / std::size_t(FLAGS_rounds) +
                                (round == 0 ? transfers[i] % std::size_t(FLAGS_rounds) : 0);
      // one untimed warm-up copy each
      copyBytes(p_dst, p_src, size);
      copyBytes(a_dst, a_src, size);
      for (std::size_t done = 0; done < share; done += per_sample[i]) {
        // the last sample takes the remainder so exactly `share` copies run
        const std::size_t reps = std::min(per_sample[i], share - done);
        // Strictly in turn, so that every sample of either side follows one
        // of the other side (the warm-up copies included): where a copy
        // fits L1 but both sides do not, a sample right after one of its
        // own side starts warm, and one after the other side starts by
        // reloading from L2. (Swapping the order every other pair gave
        // the pool one warm sample fewer per round than the anonymous
        // side, and at 16 KiB, where the two kinds are far apart, the
        // medians 0.87 of each other.)
        s_pool[i].push_back(sample(p_dst, p_src, size, reps, stamp, &verify_failed));
        s_anon[i].push_back(sample(a_dst, a_src, size, reps, stamp, &verify_failed));
        stamp += reps;
      }
      if (verify_failed) {
        rep.error("VERIFY FAILED: destination differs from source at size " +
                  std::to_string(size));
        break;
      }
    }
  }

  double ratio_small = 0, ratio_large = 0, min_ratio = 1e9;
  double pool_gbps_large = 0, anon_gbps_large = 0;
  for (std::size_t i = 0; i < sizes.size() && !verify_failed; ++i) {
    const std::size_t size = sizes[i];
    char label[64];
    if (size >= (1u << 20))
      std::snprintf(label, sizeof(label), "%zu MiB", size >> 20);
    else
      std::snprintf(label, sizeof(label), "%zu KiB", size >> 10);
    const std::string note = std::to_string(transfers[i]) + " transfers, batch " +
                             std::to_string(per_sample[i]);
    Row ra;
    ra.group = std::string("size ") + label;
    ra.operation = std::string("anonymous mmap ") + (FLAGS_use_memcpy ? "memcpy" : "std::copy");
    ra.stats = summarize(s_anon[i]);
    ra.unit_note = note;
    ra.throughput = double(size) / ra.stats.median;  // bytes/ns == GB/s
    ra.throughput_unit = "GB/s";
    ra.extra.emplace_back("size_bytes", double(size));
    ra.extra.emplace_back("transfers", double(transfers[i]));
    Row rp = ra;
    rp.operation = std::string("pool ") + (FLAGS_use_memcpy ? "memcpy" : "std::copy");
    rp.stats = summarize(s_pool[i]);
    rp.throughput = double(size) / rp.stats.median;
    const double ratio = rp.throughput / ra.throughput;
    rp.speedup = ratio;
    rp.extra.emplace_back("ratio_pool_over_anon", ratio);
    rep.add(ra);
    rep.add(rp);
    if (ratio_small == 0) ratio_small = ratio;
    ratio_large = ratio;
    pool_gbps_large = rp.throughput;
    anon_gbps_large = ra.throughput;
    min_ratio = std::min(min_ratio, ratio);
    std::printf("  %-8s pool %7.2f GB/s  anon %7.2f GB/s  ratio %.3f  (%zu transfers)\n", label,
                rp.throughput, ra.throughput, ratio, transfers[i]);
  }
  std::fflush(stdout);
  rep.note(std::string("copy routine: ") + routine);
  rep.note("latency = median over samples of the mean copy time within a sample (small sizes "
           "are batched to >= " + std::to_string(FLAGS_min_batch_kb) +
           " KiB per sample; with --verify_data every copy is its own sample); GB/s = size / "
           "median latency (1 GB = 1e9 B)");
  rep.note("speedup column for pool rows = pool GB/s / anonymous GB/s (>= 0.95 is the target)");
  {
    // Anonymous memory may get transparent huge pages while shmem usually
    // does not: worth knowing when reading the ratio of large copies.
    auto readSys = [](const char* path) {
      std::string v;
      if (FILE* f = std::fopen(path, "r")) {
        char buf[256];
        if (std::fgets(buf, sizeof(buf), f)) v = buf;
        std::fclose(f);
      }
      while (!v.empty() && (v.back() == '\n' || v.back() == ' ')) v.pop_back();
      return v.empty() ? std::string("unknown") : v;
    };
    rep.note("THP anon: " + readSys("/sys/kernel/mm/transparent_hugepage/enabled") +
             "; THP shmem: " + readSys("/sys/kernel/mm/transparent_hugepage/shmem_enabled"));
  }
  if (FLAGS_max_bytes_per_size > 0)
    rep.note("transfers per size capped at max_bytes_per_size / size (--max_bytes_per_size=" +
             std::to_string(FLAGS_max_bytes_per_size) + ")");

  if (rep.ok()) {
    rep.summaryText("copy_routine", FLAGS_use_memcpy ? "memcpy" : "std::copy_u64");
    rep.summary("ratio_pool_over_anon_smallest_size", ratio_small);
    rep.summary("ratio_pool_over_anon_largest_size", ratio_large);
    rep.summary("ratio_pool_over_anon_min", min_ratio);
    rep.summary("pool_gbps_largest_size", pool_gbps_large, "GB/s");
    rep.summary("anon_gbps_largest_size", anon_gbps_large, "GB/s");
    if (FLAGS_verify_data) rep.summaryText("verify_data", "passed");
  }
  return finish();
}
