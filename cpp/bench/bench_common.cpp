#include "bench_common.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>

#include <dirent.h>
#include <unistd.h>

#include "mcshm_baseline/shm_registry.h"

namespace mcshm_bench {

// -------------------------------------------------------------- statistics --

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  double rank = std::ceil(p / 100.0 * static_cast<double>(sorted.size()));
  std::size_t idx = rank < 1 ? 0 : static_cast<std::size_t>(rank) - 1;
  if (idx >= sorted.size()) idx = sorted.size() - 1;
  return sorted[idx];
}

Stats summarize(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.samples = v.size();
  const std::size_t n = v.size();
  s.median = (n % 2 == 1) ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  s.p99 = percentile(v, 99.0);
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(n);
  s.min = v.front();
  s.max = v.back();
  return s;
}

// ------------------------------------------------------------- formatting --

std::string fmtDuration(double ns) {
  char buf[64];
  if (ns < 1e3)
    std::snprintf(buf, sizeof(buf), "%.2f ns", ns);
  else if (ns < 1e6)
    std::snprintf(buf, sizeof(buf), "%.2f us", ns / 1e3);
  else if (ns < 1e9)
    std::snprintf(buf, sizeof(buf), "%.2f ms", ns / 1e6);
  else
    std::snprintf(buf, sizeof(buf), "%.2f s", ns / 1e9);
  return buf;
}

std::string fmtThroughput(double v, const std::string& unit) {
  if (unit.empty() || v <= 0) return "-";
  char buf[64];
  if (unit == "ops/s") {
    if (v >= 1e9)
      std::snprintf(buf, sizeof(buf), "%.2f G/s", v / 1e9);
    else if (v >= 1e6)
      std::snprintf(buf, sizeof(buf), "%.2f M/s", v / 1e6);
    else if (v >= 1e3)
      std::snprintf(buf, sizeof(buf), "%.2f K/s", v / 1e3);
    else
      std::snprintf(buf, sizeof(buf), "%.1f /s", v);
  } else {
    std::snprintf(buf, sizeof(buf), "%.2f %s", v, unit.c_str());
  }
  return buf;
}

namespace {

std::string jsonEscape(const std::string& s) {
  std::string o;
  o.reserve(s.size() + 2);
  for (char c : s) {
    switch (c) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\n': o += "\\n"; break;
      case '\t': o += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char b[8];
          std::snprintf(b, sizeof(b), "\\u%04x", c);
          o += b;
        } else {
          o += c;
        }
    }
  }
  return o;
}

std::string jsonString(const std::string& s) {
  // Built by appending: GCC 12 warns (-Wrestrict, a false positive) on "lit" + std::string&&.
  std::string out(1, '"');
  out += jsonEscape(s);
  out += '"';
  return out;
}

std::string jsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  return buf;
}

}  // namespace

// ----------------------------------------------------------------- report --

void Report::config(const std::string& key, const std::string& value) {
  config_.emplace_back(key, jsonString(value));
}
void Report::config(const std::string& key, double value) {
  config_.emplace_back(key, jsonNumber(value));
}

void Report::summary(const std::string& key, double value, const std::string& unit) {
  summary_.push_back(Sum{key, "", unit, value, false});
}
void Report::summaryText(const std::string& key, const std::string& value) {
  summary_.push_back(Sum{key, value, "", 0, true});
}

void Report::error(const std::string& text) {
  std::fprintf(stderr, "ERROR [%s]: %s\n", bench_.c_str(), text.c_str());
  std::fflush(stderr);
  errors_.push_back(text);
}

void Report::printTable(FILE* out) const {
  const int wo = 46, wm = 12, wp = 12, wt = 14, ws = 10;
  std::string last_group = "\x01";
  std::fprintf(out, "\n%-*s %*s %*s %*s %*s  %s\n", wo, "operation", wm, "median", wp, "p99",
               wt, "throughput", ws, "speedup", "samples");
  std::fprintf(out, "%s\n", std::string(wo + wm + wp + wt + ws + 14, '-').c_str());
  for (const Row& r : rows_) {
    if (r.group != last_group) {
      if (!r.group.empty()) std::fprintf(out, "[%s]\n", r.group.c_str());
      last_group = r.group;
    }
    std::string sp = "-";
    if (r.speedup > 0) {
      char b[32];
      std::snprintf(b, sizeof(b), r.speedup >= 100 ? "%.0fx" : "%.2fx", r.speedup);
      sp = b;
    }
    std::string op = "  " + r.operation;
    std::fprintf(out, "%-*s %*s %*s %*s %*s  %zu%s%s\n", wo, op.c_str(), wm,
                 fmtDuration(r.stats.median).c_str(), wp, fmtDuration(r.stats.p99).c_str(), wt,
                 fmtThroughput(r.throughput, r.throughput_unit).c_str(), ws, sp.c_str(),
                 r.stats.samples, r.unit_note.empty() ? "" : " ", r.unit_note.c_str());
  }
  for (const std::string& n : notes_) std::fprintf(out, "note: %s\n", n.c_str());
  std::fflush(out);
}

void Report::printSummary(FILE* out) const {
  std::fprintf(out, "\n");
  for (const Sum& s : summary_) {
    if (s.is_text)
      std::fprintf(out, "SUMMARY %s %s=%s\n", bench_.c_str(), s.key.c_str(), s.text.c_str());
    else
      std::fprintf(out, "SUMMARY %s %s=%.6g%s%s\n", bench_.c_str(), s.key.c_str(), s.value,
                   s.unit.empty() ? "" : " ", s.unit.c_str());
  }
  for (const std::string& e : errors_)
    std::fprintf(out, "SUMMARY %s error=%s\n", bench_.c_str(), e.c_str());
  std::fprintf(out, "SUMMARY %s status=%s\n", bench_.c_str(), ok() ? "ok" : "FAILED");
  std::fflush(out);
}

bool Report::writeJson(const std::string& path) const {
  if (path.empty()) return true;
  std::string j = "{\n  \"bench\": " + jsonString(bench_) + ",\n  \"status\": " +
                  jsonString(ok() ? "ok" : "failed") + ",\n  \"config\": {";
  for (std::size_t i = 0; i < config_.size(); ++i)
    j += (i ? ", " : "") + jsonString(config_[i].first) + ": " + config_[i].second;
  j += "},\n  \"results\": [";
  for (std::size_t i = 0; i < rows_.size(); ++i) {
    const Row& r = rows_[i];
    j += i ? ",\n    {" : "\n    {";
    j += "\"group\": " + jsonString(r.group) + ", \"operation\": " + jsonString(r.operation) +
         ", \"samples\": " + jsonNumber(static_cast<double>(r.stats.samples)) +
         ", \"median_ns\": " + jsonNumber(r.stats.median) + ", \"p99_ns\": " +
         jsonNumber(r.stats.p99) + ", \"mean_ns\": " + jsonNumber(r.stats.mean) +
         ", \"min_ns\": " + jsonNumber(r.stats.min) + ", \"max_ns\": " + jsonNumber(r.stats.max);
    if (!r.throughput_unit.empty())
      j += ", \"throughput\": " + jsonNumber(r.throughput) + ", \"throughput_unit\": " +
           jsonString(r.throughput_unit);
    if (r.speedup > 0) j += ", \"speedup\": " + jsonNumber(r.speedup);
    if (!r.unit_note.empty()) j += ", \"note\": " + jsonString(r.unit_note);
    for (const auto& e : r.extra) j += ", " + jsonString(e.first) + ": " + jsonNumber(e.second);
    j += "}";
  }
  j += "\n  ],\n  \"summary\": {";
  for (std::size_t i = 0; i < summary_.size(); ++i) {
    const Sum& s = summary_[i];
    j += (i ? ", " : "") + jsonString(s.key) + ": " +
         (s.is_text ? jsonString(s.text) : jsonNumber(s.value));
  }
  j += "},\n  \"notes\": [";
  for (std::size_t i = 0; i < notes_.size(); ++i) j += (i ? ", " : "") + jsonString(notes_[i]);
  j += "],\n  \"errors\": [";
  for (std::size_t i = 0; i < errors_.size(); ++i)
    j += (i ? ", " : "") + jsonString(errors_[i]);
  j += "]\n}\n";

  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) {
    std::fprintf(stderr, "ERROR: cannot write %s: %s\n", path.c_str(), std::strerror(errno));
    return false;
  }
  bool ok = std::fwrite(j.data(), 1, j.size(), f) == j.size();
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) std::fprintf(stderr, "ERROR: short write to %s\n", path.c_str());
  return ok;
}

// ---------------------------------------------------------- C ABI helpers --

std::string describeError(const char* call, int32_t code) {
  std::string s = std::string(call) + " failed: code " + std::to_string(code) + " (" +
                  mcshm_strerror(code) + ")";
  if (code == MCSHM_ERR_OS) {
    int e = mcshm_last_os_error();
    s += " [errno " + std::to_string(e) + ": " + std::strerror(e) + "]";
  }
  return s;
}

std::string uniquePoolName(const char* tag) {
  static std::atomic<unsigned> counter{0};
  return "mcshm_bench_" + std::to_string(::getpid()) + "_" + tag + "_" +
         std::to_string(counter.fetch_add(1));
}

int32_t Pool::create(const char* tag, uint64_t capacity, uint32_t flags, uint32_t max_blocks,
                     std::string* err, uint32_t shards) {
  reset();
  mcshm_pool_options opts;
  mcshm_pool_options_init(&opts);
  opts.capacity = capacity;
  opts.flags = flags;
  if (max_blocks) opts.max_blocks = max_blocks;
  if (shards) opts.shards = shards;
  name_ = uniquePoolName(tag);
  slot_ = mcshm_baseline::registerShmName(name_.c_str());
  mcshm_pool* p = nullptr;
  int32_t rc = mcshm_pool_create(name_.c_str(), &opts, &p);
  if (rc != MCSHM_OK || p == nullptr) {
    if (rc == MCSHM_OK) rc = MCSHM_ERR_PANIC;
    if (err) *err = describeError(("mcshm_pool_create(\"" + name_ + "\")").c_str(), rc);
    mcshm_baseline::unregisterShmName(slot_);
    slot_ = -1;
    return rc;
  }
  pool_ = p;
  void* base = nullptr;
  rc = mcshm_pool_mapping(pool_, &base, &len_);
  if (rc != MCSHM_OK) {
    if (err) *err = describeError("mcshm_pool_mapping", rc);
    reset();
    return rc;
  }
  base_ = static_cast<char*>(base);
  return MCSHM_OK;
}

void Pool::reset() {
  if (pool_) mcshm_pool_destroy(pool_);  // the owner unlinks the object
  pool_ = nullptr;
  base_ = nullptr;
  len_ = 0;
  if (slot_ >= 0) mcshm_baseline::unregisterShmName(slot_);
  slot_ = -1;
}

int32_t Table::create(const mcshm_table_config& cfg, std::string* err) {
  reset();
  int32_t rc = mcshm_table_create(&cfg, &t_);
  if (rc != MCSHM_OK || t_ == nullptr) {
    if (rc == MCSHM_OK) rc = MCSHM_ERR_PANIC;
    t_ = nullptr;
    if (err) *err = describeError("mcshm_table_create", rc);
  }
  return rc;
}

void benchInit(const char* bench, int argc, char** argv) {
  mcshm_baseline::installShmCleanupHandlers();
  std::string cmd;
  for (int i = 0; i < argc; ++i) {
    if (i) cmd += ' ';
    cmd += argv[i];
  }
  std::printf("=== %s (pid %d) ===\ncommand: %s\n", bench, static_cast<int>(::getpid()),
              cmd.c_str());
}

__attribute__((noinline)) int32_t callFloor(const void* t, uint32_t, uint64_t addr, uint64_t len,
                                           void** out) {
  const uintptr_t tp = reinterpret_cast<uintptr_t>(t), op = reinterpret_cast<uintptr_t>(out);
  if (tp == 0 || op == 0 || ((tp | op) & 7) != 0) return MCSHM_ERR_NULL_ARGUMENT;
  *out = reinterpret_cast<void*>(uintptr_t(addr + len));
  return MCSHM_OK;
}

std::size_t countLeftovers() {
  const std::string a = "mooncake_" + std::to_string(::getpid()) + "_";
  const std::string b = "mcshm_bench_" + std::to_string(::getpid()) + "_";
  std::size_t n = 0;
  DIR* d = ::opendir("/dev/shm");
  if (!d) return 0;
  while (struct dirent* e = ::readdir(d)) {
    std::string s = e->d_name;
    if (s.compare(0, a.size(), a) == 0 || s.compare(0, b.size(), b) == 0) ++n;
  }
  ::closedir(d);
  return n;
}

}  // namespace mcshm_bench
