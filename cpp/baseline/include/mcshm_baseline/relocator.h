// Models of remote -> local address translation.
//
// LinearRelocator reproduces Mooncake's relocateSharedMemoryAddress():
// per target an unordered_map<remote_base, {local_addr, length}>, the outer
// (target -> inner map) and inner levels behind one reader-writer spinlock;
// a hit scans the target's map testing base <= addr && addr+len <= base+length.
// A miss opens (never creates) the object by name, checks its size with fstat,
// maps it and inserts it under the write lock.
//
// MapRelocator is the seed's O(log n) middle strategy: std::map keyed by the
// remote base, upper_bound then one step back, behind the same kind of lock.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

namespace mcshm_baseline {

// Small reader-writer spinlock: state -1 = writer, n > 0 = n readers.
class RWSpinLock {
 public:
  void lock_shared() noexcept {
    for (;;) {
      int32_t s = state_.load(std::memory_order_relaxed);
      if (s >= 0 && state_.compare_exchange_weak(s, s + 1, std::memory_order_acquire,
                                                 std::memory_order_relaxed))
        return;
      pause();
    }
  }
  void unlock_shared() noexcept { state_.fetch_sub(1, std::memory_order_release); }
  void lock() noexcept {
    for (;;) {
      int32_t expected = 0;
      if (state_.compare_exchange_weak(expected, -1, std::memory_order_acquire,
                                       std::memory_order_relaxed))
        return;
      pause();
    }
  }
  void unlock() noexcept { state_.store(0, std::memory_order_release); }

 private:
  static void pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }
  std::atomic<int32_t> state_{0};
};

class SharedGuard {
 public:
  explicit SharedGuard(RWSpinLock& l) : l_(l) { l_.lock_shared(); }
  ~SharedGuard() { l_.unlock_shared(); }
  SharedGuard(const SharedGuard&) = delete;
  SharedGuard& operator=(const SharedGuard&) = delete;

 private:
  RWSpinLock& l_;
};

class ExclusiveGuard {
 public:
  explicit ExclusiveGuard(RWSpinLock& l) : l_(l) { l_.lock(); }
  ~ExclusiveGuard() { l_.unlock(); }
  ExclusiveGuard(const ExclusiveGuard&) = delete;
  ExclusiveGuard& operator=(const ExclusiveGuard&) = delete;

 private:
  RWSpinLock& l_;
};

struct Mapping {
  void* local_addr;
  uint64_t length;
};

// What a peer publishes about one of its buffers (the segment descriptor).
struct RemoteBufferDesc {
  std::string shm_name;  // without leading '/'
  uint64_t remote_base;
  uint64_t length;
};

class LinearRelocator {
 public:
  LinearRelocator() = default;
  ~LinearRelocator();  // unmaps what the miss path mapped (never unlinks)
  LinearRelocator(const LinearRelocator&) = delete;
  LinearRelocator& operator=(const LinearRelocator&) = delete;

  // Pre-registers an existing local mapping (not owned: never unmapped here).
  void insert(uint64_t target, uint64_t remote_base, void* local_addr, uint64_t length);

  // Publishes a target's buffer descriptors, used by the miss path.
  void setDescriptors(uint64_t target, std::vector<RemoteBufferDesc> descs);

  // Hit path only: nullptr if no registered mapping covers [addr, addr+len).
  void* lookup(uint64_t target, uint64_t addr, uint64_t len) const;

  // Full relocate: hit path, else open + fstat + mmap + insert (miss path).
  // nullptr if the address is not in any descriptor or a syscall failed.
  void* relocate(uint64_t target, uint64_t addr, uint64_t len);

  std::size_t size() const;

 private:
  using Inner = std::unordered_map<uint64_t, Mapping>;
  mutable RWSpinLock lock_;
  std::unordered_map<uint64_t, Inner> targets_;
  std::unordered_map<uint64_t, std::vector<RemoteBufferDesc>> descs_;
  std::vector<Mapping> owned_;  // mapped by the miss path
};

class MapRelocator {
 public:
  void insert(uint64_t target, uint64_t remote_base, void* local_addr, uint64_t length);
  // nullptr if no registered mapping covers [addr, addr+len).
  void* lookup(uint64_t target, uint64_t addr, uint64_t len) const;

 private:
  mutable RWSpinLock lock_;
  std::unordered_map<uint64_t, std::map<uint64_t, Mapping>> targets_;
};

}  // namespace mcshm_baseline
