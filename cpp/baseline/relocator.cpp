#include "mcshm_baseline/relocator.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace mcshm_baseline {

// ---------------------------------------------------------------- linear ----

LinearRelocator::~LinearRelocator() {
  for (const Mapping& m : owned_) ::munmap(m.local_addr, m.length);
}

void LinearRelocator::insert(uint64_t target, uint64_t remote_base, void* local_addr,
                             uint64_t length) {
  ExclusiveGuard g(lock_);
  targets_[target][remote_base] = Mapping{local_addr, length};
}

void LinearRelocator::setDescriptors(uint64_t target, std::vector<RemoteBufferDesc> descs) {
  ExclusiveGuard g(lock_);
  descs_[target] = std::move(descs);
}

void* LinearRelocator::lookup(uint64_t target, uint64_t addr, uint64_t len) const {
  SharedGuard g(lock_);
  auto t = targets_.find(target);
  if (t == targets_.end()) return nullptr;
  for (const auto& kv : t->second) {
    const uint64_t base = kv.first;
    const Mapping& m = kv.second;
    if (base <= addr && addr + len <= base + m.length)
      return static_cast<char*>(m.local_addr) + (addr - base);
  }
  return nullptr;
}

void* LinearRelocator::relocate(uint64_t target, uint64_t addr, uint64_t len) {
  if (void* p = lookup(target, addr, len)) return p;

  // Miss: find the peer's buffer that covers the address.
  RemoteBufferDesc desc;
  bool found = false;
  {
    SharedGuard g(lock_);
    auto d = descs_.find(target);
    if (d == descs_.end()) return nullptr;
    for (const RemoteBufferDesc& b : d->second) {
      if (b.remote_base <= addr && addr + len <= b.remote_base + b.length) {
        desc = b;
        found = true;
        break;
      }
    }
  }
  if (!found) return nullptr;

  // Open (never create), check the size, map, close.
  int fd = ::shm_open(("/" + desc.shm_name).c_str(), O_RDWR, 0);
  if (fd < 0) return nullptr;
  struct stat st;
  if (::fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) < desc.length) {
    ::close(fd);
    return nullptr;
  }
  void* local = ::mmap(nullptr, desc.length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (local == MAP_FAILED) return nullptr;

  ExclusiveGuard g(lock_);
  auto& inner = targets_[target];
  auto it = inner.find(desc.remote_base);
  if (it != inner.end()) {  // raced with another thread: keep the first mapping
    ::munmap(local, desc.length);
    local = it->second.local_addr;
  } else {
    inner.emplace(desc.remote_base, Mapping{local, desc.length});
    owned_.push_back(Mapping{local, desc.length});
  }
  return static_cast<char*>(local) + (addr - desc.remote_base);
}

std::size_t LinearRelocator::size() const {
  SharedGuard g(lock_);
  std::size_t n = 0;
  for (const auto& kv : targets_) n += kv.second.size();
  return n;
}

// ------------------------------------------------------------------- map ----

void MapRelocator::insert(uint64_t target, uint64_t remote_base, void* local_addr,
                          uint64_t length) {
  ExclusiveGuard g(lock_);
  targets_[target][remote_base] = Mapping{local_addr, length};
}

void* MapRelocator::lookup(uint64_t target, uint64_t addr, uint64_t len) const {
  SharedGuard g(lock_);
  auto t = targets_.find(target);
  if (t == targets_.end()) return nullptr;
  const auto& m = t->second;
  auto it = m.upper_bound(addr);  // first base > addr
  if (it == m.begin()) return nullptr;
  --it;                           // last base <= addr
  const uint64_t base = it->first;
  if (addr + len <= base + it->second.length)
    return static_cast<char*>(it->second.local_addr) + (addr - base);
  return nullptr;
}

}  // namespace mcshm_baseline
