#include "mcshm_baseline/shm_registry.h"

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include <sys/mman.h>
#include <unistd.h>

namespace mcshm_baseline {
namespace {

enum : int { kFree = 0, kBusy = 1, kValid = 2 };

struct Slot {
  std::atomic<int> state{kFree};
  char name[kRegistryMaxName + 1];
};

// Zero-initialised static storage: untouched pages cost nothing.
Slot g_slots[kRegistryCapacity];
std::atomic<std::size_t> g_hint{0};
std::atomic<std::size_t> g_count{0};

constexpr char kShmDir[] = "/dev/shm/";

// Async-signal-safe: only atomics, a stack buffer and unlink(2).
// On Linux shm_unlink(name) is unlink("/dev/shm/" name).
std::size_t unlinkAllImpl() {
  std::size_t removed = 0;
  char path[sizeof(kShmDir) + kRegistryMaxName + 1];
  for (std::size_t i = 0; i < kRegistryCapacity; ++i) {
    int expected = kValid;
    if (!g_slots[i].state.compare_exchange_strong(expected, kBusy)) continue;
    std::size_t n = 0;
    for (; kShmDir[n] != '\0'; ++n) path[n] = kShmDir[n];
    for (std::size_t k = 0; g_slots[i].name[k] != '\0' && k < kRegistryMaxName; ++k)
      path[n++] = g_slots[i].name[k];
    path[n] = '\0';
    if (::unlink(path) == 0) ++removed;
    g_slots[i].state.store(kFree);
    g_count.fetch_sub(1);
  }
  return removed;
}

void signalHandler(int sig) {
  unlinkAllImpl();
  ::_exit(128 + sig);
}

void atexitHandler() { unlinkAllImpl(); }

}  // namespace

void installShmCleanupHandlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof(sa));
    sa.sa_handler = signalHandler;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT);
    sigaddset(&sa.sa_mask, SIGTERM);
    sigaddset(&sa.sa_mask, SIGHUP);
    sa.sa_flags = 0;
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
    ::sigaction(SIGHUP, &sa, nullptr);
    std::atexit(atexitHandler);
  });
}

int registerShmName(const char* name) {
  if (name == nullptr) return -1;
  std::size_t len = std::strlen(name);
  if (len == 0 || len > kRegistryMaxName) return -1;
  std::size_t start = g_hint.load(std::memory_order_relaxed);
  for (std::size_t step = 0; step < kRegistryCapacity; ++step) {
    std::size_t i = (start + step) % kRegistryCapacity;
    int expected = kFree;
    if (!g_slots[i].state.compare_exchange_strong(expected, kBusy)) continue;
    std::memcpy(g_slots[i].name, name, len + 1);
    g_slots[i].state.store(kValid);
    g_count.fetch_add(1);
    g_hint.store((i + 1) % kRegistryCapacity, std::memory_order_relaxed);
    return static_cast<int>(i);
  }
  return -1;
}

void unregisterShmName(int slot) {
  if (slot < 0 || static_cast<std::size_t>(slot) >= kRegistryCapacity) return;
  int expected = kValid;
  if (g_slots[slot].state.compare_exchange_strong(expected, kBusy)) {
    g_slots[slot].name[0] = '\0';
    g_slots[slot].state.store(kFree);
    g_count.fetch_sub(1);
  }
}

std::size_t unlinkAllRegistered() { return unlinkAllImpl(); }

std::size_t registeredCount() { return g_count.load(); }

}  // namespace mcshm_baseline
