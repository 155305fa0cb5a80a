// Model of Mooncake's current per-buffer shared-memory allocation path:
// one named POSIX shm object per buffer.
//
//   allocate: name "mooncake_<pid>_<8 letters>", shm_open(O_CREAT|O_EXCL|O_RDWR,
//             0600) with up to 8 retries on EEXIST, ftruncate(exact size),
//             mmap(MAP_SHARED, RW), close(fd), record addr -> name in an
//             unordered_map under a std::mutex.
//   free:     munmap, shm_unlink, erase.
//
// Every created name is also put in the process-wide cleanup registry
// (shm_registry.h) so a signal never leaves an object behind.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <random>
#include <string>
#include <unordered_map>

namespace mcshm_baseline {

// Per-step wall-clock durations of one allocate() call, in nanoseconds.
struct AllocTimings {
  uint64_t shm_open_ns = 0;   // including EEXIST retries
  uint64_t ftruncate_ns = 0;
  uint64_t mmap_ns = 0;
  uint64_t close_ns = 0;
  uint64_t total_ns = 0;      // whole call, bookkeeping included
  int retries = 0;
};

// Per-step durations of one free() call, in nanoseconds.
struct FreeTimings {
  uint64_t munmap_ns = 0;
  uint64_t unlink_ns = 0;     // 0 when unlinking was deferred
  uint64_t total_ns = 0;      // whole call, bookkeeping included
};

class ShmAllocator {
 public:
  static constexpr int kMaxRetries = 8;

  explicit ShmAllocator(uint64_t seed = 0);
  ~ShmAllocator();  // frees (munmap + unlink) everything still live
  ShmAllocator(const ShmAllocator&) = delete;
  ShmAllocator& operator=(const ShmAllocator&) = delete;

  // Returns nullptr on failure (see lastError()). `timings` may be null.
  void* allocate(std::size_t size, AllocTimings* timings = nullptr);

  // munmap + shm_unlink + erase. With unlink=false the object is unmapped but
  // its name stays (deferred): unlinkDeferred() removes those later.
  // Returns false if addr is unknown or a syscall failed.
  bool free(void* addr, FreeTimings* timings = nullptr, bool unlink = true);

  // shm_unlink()s every name whose unlinking was deferred by free(.., false);
  // returns how many were removed.
  std::size_t unlinkDeferred();

  // Frees every live buffer and unlinks every deferred name.
  void freeAll();

  // Name (without '/') of the object backing addr, or "" if unknown.
  std::string nameOf(void* addr) const;
  std::size_t liveCount() const;
  const std::string& lastError() const { return last_error_; }

 private:
  struct Entry {
    std::string name;
    std::size_t size;
    int registry_slot;
  };
  struct Deferred {
    std::string name;
    int registry_slot;
  };

  std::string randomName();

  mutable std::mutex mu_;
  std::unordered_map<void*, Entry> live_;
  std::unordered_map<std::string, Deferred> deferred_;
  std::mt19937_64 rng_;
  std::string last_error_;
};

}  // namespace mcshm_baseline
