// C wrappers around the C++ baseline model (cpp/baseline), so the Criterion
// benches can call it. Compiled by build.rs only with feature `bench-baseline`.
// No exception crosses this boundary: failures come back as null / 0.
#include <cstddef>
#include <cstdint>
#include <new>

#include "mcshm_baseline/relocator.h"
#include "mcshm_baseline/shm_allocator.h"

using mcshm_baseline::LinearRelocator;
using mcshm_baseline::MapRelocator;
using mcshm_baseline::ShmAllocator;

extern "C" {

// ---------------------------------------------------------- allocator ----

void* mcb_allocator_new(uint64_t seed) noexcept {
  try {
    return new ShmAllocator(seed);
  } catch (...) {
    return nullptr;
  }
}

void mcb_allocator_delete(void* a) noexcept {
  try {
    delete static_cast<ShmAllocator*>(a);
  } catch (...) {
  }
}

// shm_open + ftruncate + mmap + close + bookkeeping; null on failure.
void* mcb_allocator_allocate(void* a, size_t size) noexcept {
  try {
    return static_cast<ShmAllocator*>(a)->allocate(size);
  } catch (...) {
    return nullptr;
  }
}

// munmap + shm_unlink + erase; 1 on success.
int mcb_allocator_free(void* a, void* addr) noexcept {
  try {
    return static_cast<ShmAllocator*>(a)->free(addr) ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

// ------------------------------------------------------------- linear ----

void* mcb_linear_new() noexcept {
  try {
    return new LinearRelocator();
  } catch (...) {
    return nullptr;
  }
}

void mcb_linear_delete(void* r) noexcept {
  try {
    delete static_cast<LinearRelocator*>(r);
  } catch (...) {
  }
}

// 1 on success.
int mcb_linear_insert(void* r, uint64_t target, uint64_t remote_base, uint64_t local_addr,
                      uint64_t length) noexcept {
  try {
    static_cast<LinearRelocator*>(r)->insert(
        target, remote_base, reinterpret_cast<void*>(static_cast<uintptr_t>(local_addr)), length);
    return 1;
  } catch (...) {
    return 0;
  }
}

// Hit path of relocateSharedMemoryAddress(); 0 on a miss.
uint64_t mcb_linear_lookup(const void* r, uint64_t target, uint64_t addr,
                           uint64_t len) noexcept {
  try {
    return reinterpret_cast<uintptr_t>(
        static_cast<const LinearRelocator*>(r)->lookup(target, addr, len));
  } catch (...) {
    return 0;
  }
}

// ---------------------------------------------------------------- map ----

void* mcb_map_new() noexcept {
  try {
    return new MapRelocator();
  } catch (...) {
    return nullptr;
  }
}

void mcb_map_delete(void* r) noexcept {
  try {
    delete static_cast<MapRelocator*>(r);
  } catch (...) {
  }
}

int mcb_map_insert(void* r, uint64_t target, uint64_t remote_base, uint64_t local_addr,
                   uint64_t length) noexcept {
  try {
    static_cast<MapRelocator*>(r)->insert(
        target, remote_base, reinterpret_cast<void*>(static_cast<uintptr_t>(local_addr)), length);
    return 1;
  } catch (...) {
    return 0;
  }
}

uint64_t mcb_map_lookup(const void* r, uint64_t target, uint64_t addr, uint64_t len) noexcept {
  try {
    return reinterpret_cast<uintptr_t>(
        static_cast<const MapRelocator*>(r)->lookup(target, addr, len));
  } catch (...) {
    return 0;
  }
}

}  // extern "C"
