// Shared code for the shm_* benchmarks: timing, statistics, the result table,
// a tiny JSON writer, SUMMARY lines, and RAII owners for the C ABI handles.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "mooncake_shm.h"

namespace mcshm_bench {

// ------------------------------------------------------------------ timing --

inline uint64_t nowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

// Keeps a value alive for the optimizer without emitting code.
template <class T>
inline void doNotOptimize(const T& v) {
  asm volatile("" : : "r,m"(v) : "memory");
}
inline void clobberMemory() { asm volatile("" : : : "memory"); }

// What one out-of-line call costs a lookup loop before any lookup: the
// pointer checks of the C ABI's lookups (handle and out non-null and
// 8-aligned) and one store, `*out = addr + len`. Defined in
// bench_common.cpp and never inlined, so each use is a real call.
int32_t callFloor(const void* t, uint32_t peer, uint64_t addr, uint64_t len, void** out);

// ------------------------------------------------------------- statistics --

struct Stats {
  std::size_t samples = 0;
  double median = 0, p99 = 0, mean = 0, min = 0, max = 0;
};

// Percentiles by nearest rank on a sorted copy.
Stats summarize(std::vector<double> values);
double percentile(const std::vector<double>& sorted, double p);

// ------------------------------------------------------------------- table --

struct Row {
  std::string group;       // e.g. "baseline", "arena", "segments=100"
  std::string operation;   // e.g. "shm_open"
  Stats stats;             // nanoseconds per op
  std::string unit_note;   // e.g. "per op", "batch mean of 256"
  double throughput = 0;   // in throughput_unit
  std::string throughput_unit;  // "ops/s" or "GB/s"
  double speedup = 0;      // 0 = not applicable
  std::vector<std::pair<std::string, double>> extra;  // extra JSON fields
};

// Human-friendly duration: "12.3 ns", "7.21 us", "1.20 ms".
std::string fmtDuration(double ns);
std::string fmtThroughput(double v, const std::string& unit);

class Report {
 public:
  explicit Report(std::string bench) : bench_(std::move(bench)) {}
  void config(const std::string& key, const std::string& value);
  void config(const std::string& key, double value);
  void note(const std::string& text) { notes_.push_back(text); }
  Row& add(Row r) {
    rows_.push_back(std::move(r));
    return rows_.back();
  }
  // SUMMARY lines: "SUMMARY <bench> <key>=<value>" (also in the JSON).
  void summary(const std::string& key, double value, const std::string& unit = "");
  void summaryText(const std::string& key, const std::string& value);
  void error(const std::string& text);  // printed on stderr + recorded in JSON

  void printTable(FILE* out = stdout) const;
  void printSummary(FILE* out = stdout) const;
  bool writeJson(const std::string& path) const;  // "" -> no-op, true
  bool ok() const { return errors_.empty(); }
  const std::vector<Row>& rows() const { return rows_; }

 private:
  std::string bench_;
  std::vector<std::pair<std::string, std::string>> config_;  // value already JSON
  std::vector<std::string> notes_;
  std::vector<Row> rows_;
  struct Sum {
    std::string key, text, unit;
    double value;
    bool is_text;
  };
  std::vector<Sum> summary_;
  std::vector<std::string> errors_;
};

// ---------------------------------------------------------- C ABI helpers --

// "mcshm_pool_create: MCSHM_ERR_... (code 5: <strerror>) [errno 12: ...]"
std::string describeError(const char* call, int32_t code);

// Unique pool name "mcshm_bench_<pid>_<tag>_<n>" (no leading '/').
std::string uniquePoolName(const char* tag);

// Owner of an mcshm_pool*. Registers the pool's name in the baseline cleanup
// registry (so SIGINT/SIGTERM unlink it) and destroys the pool in all paths.
class Pool {
 public:
  Pool() = default;
  ~Pool() { reset(); }
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // Returns MCSHM_OK or the error code (message in *err if given).
  // `max_blocks` and `shards` 0: the defaults of mcshm_pool_options_init.
  int32_t create(const char* tag, uint64_t capacity, uint32_t flags, uint32_t max_blocks,
                 std::string* err, uint32_t shards = 0);
  void reset();
  mcshm_pool* get() const { return pool_; }
  char* base() const { return base_; }
  uint64_t mappingLen() const { return len_; }
  const std::string& name() const { return name_; }

 private:
  mcshm_pool* pool_ = nullptr;
  std::string name_;
  int slot_ = -1;
  char* base_ = nullptr;
  uint64_t len_ = 0;
};

class Table {
 public:
  Table() = default;
  ~Table() { reset(); }
  Table(const Table&) = delete;
  Table& operator=(const Table&) = delete;
  int32_t create(const mcshm_table_config& cfg, std::string* err);
  void reset() {
    mcshm_table_destroy(t_);
    t_ = nullptr;
  }
  mcshm_table* get() const { return t_; }

 private:
  mcshm_table* t_ = nullptr;
};

// Installs the cleanup handlers; prints the header line for a benchmark.
void benchInit(const char* bench, int argc, char** argv);

// Leftover check: names starting with "mooncake_<pid>_" or
// "mcshm_bench_<pid>_" still in /dev/shm. Returns how many.
std::size_t countLeftovers();

}  // namespace mcshm_bench
