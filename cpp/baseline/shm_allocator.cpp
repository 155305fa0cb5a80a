#include "mcshm_baseline/shm_allocator.h"

#include <cerrno>
#include <chrono>
#include <cstring>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mcshm_baseline/shm_registry.h"

namespace mcshm_baseline {
namespace {

inline uint64_t nowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

std::string errnoText(const char* what, int err) {
  return std::string(what) + ": " + std::strerror(err);
}

}  // namespace

ShmAllocator::ShmAllocator(uint64_t seed)
    : rng_(seed != 0 ? seed : (static_cast<uint64_t>(::getpid()) << 32) ^ nowNs()) {
  installShmCleanupHandlers();
}

ShmAllocator::~ShmAllocator() { freeAll(); }

std::string ShmAllocator::randomName() {
  static const char kLetters[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  std::string name = "mooncake_" + std::to_string(::getpid()) + "_";
  std::uniform_int_distribution<int> pick(0, static_cast<int>(sizeof(kLetters)) - 2);
  for (int i = 0; i < 8; ++i) name.push_back(kLetters[pick(rng_)]);
  return name;
}

void* ShmAllocator::allocate(std::size_t size, AllocTimings* timings) {
  AllocTimings t;
  const uint64_t t0 = nowNs();
  if (size == 0) {
    std::lock_guard<std::mutex> g(mu_);
    last_error_ = "allocate: zero size";
    return nullptr;
  }

  // 1. shm_open(O_CREAT|O_EXCL) under a random name, retrying on EEXIST.
  std::string name;
  int slot = -1;
  int fd = -1;
  for (int attempt = 0; attempt < kMaxRetries; ++attempt) {
    {
      std::lock_guard<std::mutex> g(mu_);
      name = randomName();
    }
    slot = registerShmName(name.c_str());  // before creating: no window for a leak
    const uint64_t a = nowNs();
    fd = ::shm_open(("/" + name).c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    t.shm_open_ns += nowNs() - a;
    if (fd >= 0) break;
    int err = errno;
    unregisterShmName(slot);
    slot = -1;
    if (err != EEXIST) {
      std::lock_guard<std::mutex> g(mu_);
      last_error_ = errnoText("shm_open", err);
      return nullptr;
    }
    ++t.retries;
  }
  if (fd < 0) {
    std::lock_guard<std::mutex> g(mu_);
    last_error_ = "shm_open: EEXIST after 8 retries";
    return nullptr;
  }

  auto fail = [&](const char* what, int err) -> void* {
    ::close(fd);
    ::shm_unlink(("/" + name).c_str());
    unregisterShmName(slot);
    std::lock_guard<std::mutex> g(mu_);
    last_error_ = errnoText(what, err);
    return nullptr;
  };

  // 2. ftruncate to the exact size.
  uint64_t a = nowNs();
  int rc = ::ftruncate(fd, static_cast<off_t>(size));
  t.ftruncate_ns = nowNs() - a;
  if (rc != 0) return fail("ftruncate", errno);

  // 3. mmap shared, read-write.
  a = nowNs();
  void* addr = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  t.mmap_ns = nowNs() - a;
  if (addr == MAP_FAILED) return fail("mmap", errno);

  // 4. The mapping keeps the object alive; the fd is not needed any more.
  a = nowNs();
  ::close(fd);
  t.close_ns = nowNs() - a;

  // 5. Bookkeeping: address -> name under a mutex.
  {
    std::lock_guard<std::mutex> g(mu_);
    live_.emplace(addr, Entry{std::move(name), size, slot});
  }
  t.total_ns = nowNs() - t0;
  if (timings) *timings = t;
  return addr;
}

bool ShmAllocator::free(void* addr, FreeTimings* timings, bool unlink) {
  FreeTimings t;
  const uint64_t t0 = nowNs();
  Entry e;
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = live_.find(addr);
    if (it == live_.end()) {
      last_error_ = "free: unknown address";
      return false;
    }
    e = std::move(it->second);
    live_.erase(it);
  }
  bool ok = true;
  uint64_t a = nowNs();
  if (::munmap(addr, e.size) != 0) ok = false;
  t.munmap_ns = nowNs() - a;
  if (unlink) {
    a = nowNs();
    if (::shm_unlink(("/" + e.name).c_str()) != 0) ok = false;
    t.unlink_ns = nowNs() - a;
    unregisterShmName(e.registry_slot);
  } else {
    std::lock_guard<std::mutex> g(mu_);
    std::string key = e.name;
    deferred_.emplace(std::move(key), Deferred{std::move(e.name), e.registry_slot});
  }
  t.total_ns = nowNs() - t0;
  if (timings) *timings = t;
  if (!ok) {
    std::lock_guard<std::mutex> g(mu_);
    last_error_ = errnoText("free", errno);
  }
  return ok;
}

std::size_t ShmAllocator::unlinkDeferred() {
  std::unordered_map<std::string, Deferred> d;
  {
    std::lock_guard<std::mutex> g(mu_);
    d.swap(deferred_);
  }
  std::size_t n = 0;
  for (auto& kv : d) {
    if (::shm_unlink(("/" + kv.second.name).c_str()) == 0) ++n;
    unregisterShmName(kv.second.registry_slot);
  }
  return n;
}

void ShmAllocator::freeAll() {
  std::unordered_map<void*, Entry> live;
  {
    std::lock_guard<std::mutex> g(mu_);
    live.swap(live_);
  }
  for (auto& kv : live) {
    ::munmap(kv.first, kv.second.size);
    ::shm_unlink(("/" + kv.second.name).c_str());
    unregisterShmName(kv.second.registry_slot);
  }
  unlinkDeferred();
}

std::string ShmAllocator::nameOf(void* addr) const {
  std::lock_guard<std::mutex> g(mu_);
  auto it = live_.find(addr);
  return it == live_.end() ? std::string() : it->second.name;
}

std::size_t ShmAllocator::liveCount() const {
  std::lock_guard<std::mutex> g(mu_);
  return live_.size();
}

}  // namespace mcshm_baseline
