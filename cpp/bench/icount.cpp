// Runs one hot path of the C ABI a given number of times, for counting its
// instructions under callgrind (scripts/icount.sh runs it with N operations
// and with 0 and reports the difference per operation). Instruction counts do
// not depend on the machine's speed of the moment, unlike the benchmarks'
// nanoseconds, so they show what a change to a hot path costs.
//
//   mooncake_shm_icount <case> <ops>
//
// Cases (the workloads of shm_allocation_bench and shm_address_lookup_bench):
//   pair      alloc + free of one block, 4 KiB-1 MiB, align 64, one-shard pool
//   pair2     the same on a pool with two shards
//   churn     free a random one of 64 live blocks, allocate another size
//   churn2    the same on a pool with two shards
//   cpair     pair through a thread cache (mcshm_cache_alloc/free)
//   cchurn    churn through a thread cache
//   relocate  mcshm_table_relocate over 100 ranges of 64 MiB
//   rbatch    the same queries through mcshm_table_relocate_batch, 256 a call
//   resolve   mcshm_table_resolve over 100 segments of 64 MiB
//
// Everything but the timed loop is the same for every <ops>, so the setup
// cancels out in the difference. Exit status 1 on any error.
#include "mooncake_shm.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

constexpr std::size_t kSeq = 4096;  // pre-drawn sizes / queries, cycled
constexpr uint64_t kAlign = 64;
constexpr uint32_t kLive = 64;
constexpr uint32_t kSegments = 100;
constexpr uint64_t kSegmentBytes = uint64_t(64) << 20;
constexpr uint64_t kLookupLen = 4096;

uint64_t g_rng = 0x9e3779b97f4a7c15ULL;
volatile uintptr_t g_sink;  // keeps the lookups' results alive
uint64_t next() {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return g_rng;
}

int fail(const char* what, int32_t rc) {
  std::fprintf(stderr, "mooncake_shm_icount: %s: %s\n", what, mcshm_strerror(rc));
  return 1;
}

// 0 if every call of a timed loop succeeded (`bad`, their results or-ed, is
// MCSHM_OK), else 1 with a message.
int loopFailed(const std::string& c, int32_t bad) {
  if (bad == MCSHM_OK) return 0;
  std::fprintf(stderr, "mooncake_shm_icount: %s: a call failed (result codes or-ed: %d)\n",
               c.c_str(), bad);
  return 1;
}

// The allocation bench's sizes: whole KiB, uniform in [4 KiB, 1 MiB].
std::vector<uint64_t> sizes() {
  std::vector<uint64_t> s(kSeq);
  for (uint64_t& v : s) v = (4 + next() % 1021) * 1024;
  return s;
}

// The setup and timed loops of the allocation cases, through `alloc(size,
// &offset)` and `release(offset)` (inlined lambdas: no call of their own).
template <class Alloc, class Release>
int32_t allocLoops(bool churn, long ops, Alloc alloc, Release release) {
  const std::vector<uint64_t> s = sizes();
  std::vector<uint32_t> victims(kSeq);
  for (uint32_t& v : victims) v = uint32_t(next() % kLive);
  uint64_t live[kLive];
  int32_t rc = MCSHM_OK;
  for (uint32_t k = 0; k < kLive && rc == MCSHM_OK; ++k) rc = alloc(s[k], &live[k]);
  if (rc == MCSHM_OK && !churn) {
    for (uint32_t k = 0; k < kLive && rc == MCSHM_OK; ++k) rc = release(live[k]);
  }
  if (rc != MCSHM_OK) return rc;
  // The loops collect errors rather than stop at one: a test per call
  // would be loop overhead in every count.
  int32_t bad = MCSHM_OK;
  if (churn) {
    for (long i = 0; i < ops; ++i) {
      const std::size_t j = std::size_t(i) % kSeq;
      bad |= release(live[victims[j]]);
      bad |= alloc(s[j], &live[victims[j]]);
    }
  } else {
    for (long i = 0; i < ops; ++i) {
      uint64_t off = 0;
      bad |= alloc(s[std::size_t(i) % kSeq], &off);
      bad |= release(off);
    }
  }
  return bad;
}

int allocCase(const std::string& c, long ops) {
  mcshm_pool_options o;
  mcshm_pool_options_init(&o);
  o.capacity = (uint64_t(2) * kLive + 2) << 20;  // as shm_allocation_bench
  o.shards = (c == "pair2" || c == "churn2") ? 2 : 1;
  mcshm_pool* p = nullptr;  // a memfd pool: no name to leave behind
  int32_t rc = mcshm_pool_create_memfd(&o, &p);
  if (rc != MCSHM_OK) return fail("mcshm_pool_create_memfd", rc);
  const bool churn = c == "churn" || c == "churn2" || c == "cchurn";
  int32_t bad = MCSHM_OK;
  if (c == "cpair" || c == "cchurn") {
    mcshm_cache* cache = nullptr;
    rc = mcshm_cache_create(p, 0, &cache);  // the default budget, as shm_allocation_bench
    if (rc == MCSHM_OK) {
      bad = allocLoops(
          churn, ops,
          [&](uint64_t size, uint64_t* off) { return mcshm_cache_alloc(cache, size, kAlign, off); },
          [&](uint64_t off) { return mcshm_cache_free(cache, off); });
    }
    mcshm_cache_destroy(cache);
  } else {
    bad = allocLoops(
        churn, ops,
        [&](uint64_t size, uint64_t* off) { return mcshm_pool_alloc(p, size, kAlign, off); },
        [&](uint64_t off) { return mcshm_pool_free(p, off); });
  }
  mcshm_pool_destroy(p);  // also releases the churn's live blocks
  return rc != MCSHM_OK ? fail(c.c_str(), rc) : loopFailed(c, bad);
}

int lookupCase(const std::string& c, long ops) {
  mcshm_table_config cfg;
  mcshm_table_config_init(&cfg);
  mcshm_table* t = nullptr;
  int32_t rc = mcshm_table_create(&cfg, &t);
  if (rc != MCSHM_OK) return fail("mcshm_table_create", rc);
  // Distinct 64 MiB-aligned remote bases in a 46-bit space, as the lookup
  // bench draws them; local addresses are synthetic (never dereferenced).
  std::vector<uint64_t> remote(kSegments);
  const uint64_t slots = (uint64_t(1) << 46) / kSegmentBytes;
  for (uint32_t i = 0; i < kSegments && rc == MCSHM_OK; ++i) {
    bool taken = true;
    while (taken) {
      remote[i] = (1 + next() % (slots - 1)) * kSegmentBytes;
      taken = false;
      for (uint32_t k = 0; k < i; ++k) taken |= remote[k] == remote[i];
    }
    void* local = reinterpret_cast<void*>(uintptr_t(0x100000000000ULL) + i * kSegmentBytes);
    rc = mcshm_table_insert_remote(t, 0, remote[i], kSegmentBytes, local);
    if (rc == MCSHM_OK) rc = mcshm_table_insert_segment(t, i, local, kSegmentBytes);
  }
  struct Query {
    uint32_t seg;
    uint64_t offset, remote;
  };
  std::vector<Query> qs(kSeq);
  for (Query& q : qs) {
    q.seg = uint32_t(next() % kSegments);
    q.offset = next() % (kSegmentBytes - kLookupLen);
    q.remote = remote[q.seg] + q.offset;
  }
  uintptr_t sink = 0;
  int32_t bad = rc;  // as in allocCase
  if (rc == MCSHM_OK && c == "rbatch") {
    constexpr std::size_t kBatch = 256;  // divides kSeq
    std::vector<mcshm_span> spans(kSeq);
    for (std::size_t i = 0; i < kSeq; ++i) spans[i] = {qs[i].remote, kLookupLen};
    std::vector<void*> out(kBatch);
    for (long i = 0; i < ops; i += long(kBatch)) {
      const std::size_t n = std::min<std::size_t>(kBatch, std::size_t(ops - i));
      bad |= mcshm_table_relocate_batch(t, 0, &spans[std::size_t(i) % kSeq], n, out.data(),
                                        nullptr);
      for (std::size_t k = 0; k < n; ++k) sink ^= reinterpret_cast<uintptr_t>(out[k]);
    }
  } else if (rc == MCSHM_OK && c == "relocate") {
    for (long i = 0; i < ops; ++i) {
      void* out = nullptr;
      bad |= mcshm_table_relocate(t, 0, qs[std::size_t(i) % kSeq].remote, kLookupLen, &out);
      sink ^= reinterpret_cast<uintptr_t>(out);
    }
  } else if (rc == MCSHM_OK) {
    for (long i = 0; i < ops; ++i) {
      const Query& q = qs[std::size_t(i) % kSeq];
      void* out = nullptr;
      bad |= mcshm_table_resolve(t, q.seg, q.offset, kLookupLen, &out);
      sink ^= reinterpret_cast<uintptr_t>(out);
    }
  }
  g_sink = sink;
  mcshm_table_destroy(t);
  return rc != MCSHM_OK ? fail(c.c_str(), rc) : loopFailed(c, bad);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr,
                 "usage: mooncake_shm_icount pair|pair2|churn|churn2|cpair|cchurn|relocate|rbatch|resolve <ops>\n");
    return 1;
  }
  const std::string c = argv[1];
  char* end = nullptr;
  const long ops = std::strtol(argv[2], &end, 10);
  if (end == argv[2] || *end != '\0' || ops < 0) {
    std::fprintf(stderr, "mooncake_shm_icount: bad operation count %s\n", argv[2]);
    return 1;
  }
  if (c == "pair" || c == "pair2" || c == "churn" || c == "churn2" || c == "cpair" ||
      c == "cchurn")
    return allocCase(c, ops);
  if (c == "relocate" || c == "rbatch" || c == "resolve") return lookupCase(c, ops);
  std::fprintf(stderr, "mooncake_shm_icount: unknown case %s\n", c.c_str());
  return 1;
}
