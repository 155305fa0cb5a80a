// mooncake_shm_adapter.h: a drop-in shaped for Mooncake's SHM transport.
// Header-only; link mooncake_shm::mooncake_shm.
//
// Mooncake today (per buffer):               With the adapter:
//   allocateLocalMemory(size)                  allocateLocal(size, &buf)
//     shm_open+ftruncate+mmap, name per buf      a block of a pre-mapped pool (one,
//                                                or up to Options::max_pools);
//     -> publish {name, addr, length}            publish {buf.pool_name, buf.offset,
//                                                         buf.addr, buf.length}
//   freeLocalMemory(addr, size)                freeLocal(addr[, size])
//     munmap+shm_unlink                          returns the block to the arena
//   relocateSharedMemoryAddress(dest, len, id) relocate(dest, len, id)
//     linear scan under an rwlock; on a miss     O(1) table lookup, no lock; on a miss
//     shm_open+mmap the buffer's object          the transport calls registerRemote() with
//                                                the peer's published descriptor (or use
//                                                the relocate(..., lookup) overload)
//
// Rules and guarantees:
//  * Return values are MCSHM_* codes from mooncake_shm.h: 0 on success,
//    positive on failure (map any non-zero to the transport's own error).
//    No member throws.
//  * allocateLocal hands out page-aligned blocks (Options::alignment, 4096 by
//    default) so a peer can register them: remote bases and their local
//    mappings must be page-aligned (Mooncake's shm buffers are mmap()ed and
//    so always are). registerRemote rejects a remote_base or offset that is
//    not page-aligned with MCSHM_ERR_INVALID_ARGUMENT.
//  * target ids are used directly as table peer ids: they must be below
//    Options::table.max_peers (256 by default; Mooncake numbers segments
//    densely from 1). Larger ids get MCSHM_ERR_INVALID_ARGUMENT.
//  * Growth: with Options::max_pools > 1, an allocation that every local
//    pool turns away (MCSHM_ERR_EXHAUSTED or MCSHM_ERR_METADATA_FULL) makes
//    one more pool (same capacity and options, a fresh name) and is served
//    there, until there are max_pools; then it fails as a full pool does
//    (and if making the pool fails, with that error, e.g. MCSHM_ERR_OS).
//    Each LocalBuffer names its own pool, so peers need nothing new. Pools
//    are never dropped before the adapter: freeLocal finds an address's pool
//    among at most kMaxPools bases, without a lock.
//  * A peer's pool is opened and mapped once per (target id, pool name),
//    however many buffers it carries. Mappings (and the local pools) are kept
//    until the adapter is destroyed, so every pointer relocate() returned
//    stays valid for the adapter's lifetime, even after unregisterRemote().
//  * allocateLocal/freeLocal/relocate may be called from any thread at any
//    time; registerRemote/unregisterRemote serialize on an internal mutex;
//    relocate never takes it.
#ifndef MOONCAKE_SHM_ADAPTER_H
#define MOONCAKE_SHM_ADAPTER_H

#include "mooncake_shm.hpp"

#include <unistd.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <new>
#include <random>
#include <string>
#include <utility>

namespace mooncake::shm {

/// What the owner publishes for one buffer (Mooncake's buffer descriptor:
/// `pool_name` + `offset` replace the per-buffer shm name).
struct LocalBuffer {
    void* addr = nullptr;   ///< address in the owner's process (the descriptor's addr)
    std::string pool_name;  ///< shm object holding the buffer
    uint64_t offset = 0;    ///< offset of the buffer from the pool's mapping base
    uint64_t length = 0;    ///< bytes
};

/// A peer's published buffer, as the relocate(..., lookup) overload wants it.
struct RemoteBuffer {
    std::string pool_name;
    uint64_t offset = 0;
    uint64_t length = 0;
    uint64_t remote_base = 0;  ///< the buffer's address in the peer
};

class ShmTransportAdapter {
public:
    struct Options {
        /// Options of the local pool; `capacity` is overridden by the constructor's.
        PoolOptions pool;
        /// Capacities of the translation table (max_peers bounds target ids).
        TableConfig table;
        /// Alignment of allocateLocal blocks (power of two up to 4096).
        uint64_t alignment = 4096;
        /// Directory peers' pools live in (empty: /dev/shm).
        std::string remote_dir;
        /// Attempts at a fresh random local pool name on a collision.
        int name_retries = 8;
        /// Most local pools (see Growth above); 0 counts as 1, and more than
        /// kMaxPools as kMaxPools. 1: one pool, as without growth.
        uint32_t max_pools = 1;
    };

    static constexpr uint64_t kPageSize = 4096;
    /// Upper bound of Options::max_pools.
    static constexpr uint32_t kMaxPools = 64;

    /// Nothing is created yet: the local pool is made by the first
    /// allocateLocal (name `<prefix>_<pid>_<8 random letters>`), the table by
    /// the first registerRemote.
    ShmTransportAdapter(std::string name_prefix, uint64_t pool_capacity)
        : ShmTransportAdapter(std::move(name_prefix), pool_capacity, Options()) {}
    ShmTransportAdapter(std::string name_prefix, uint64_t pool_capacity, Options opts)
        : prefix_(std::move(name_prefix)), opts_(std::move(opts)) {
        opts_.pool.capacity = pool_capacity;
        if (opts_.max_pools == 0) opts_.max_pools = 1;
        if (opts_.max_pools > kMaxPools) opts_.max_pools = kMaxPools;
    }

    ShmTransportAdapter(const ShmTransportAdapter&) = delete;
    ShmTransportAdapter& operator=(const ShmTransportAdapter&) = delete;

    /// Drops the table, unmaps every peer pool, then destroys (unlinks) the
    /// local pools. No other thread may use the adapter meanwhile.
    ~ShmTransportAdapter() {
        table_handle_.store(nullptr, std::memory_order_relaxed);
        table_.reset();
        remote_pools_.clear();
        local_count_.store(0, std::memory_order_relaxed);
        for (Pool& p : local_) p.reset();
    }

    // ---- local buffers -----------------------------------------------------

    /// Allocates `size` bytes from a local pool (the first is created on
    /// first use, more as Growth above says) and describes the block in
    /// `*out`. The pool that served the last allocation is tried first.
    int allocateLocal(size_t size, LocalBuffer* out) {
        if (out == nullptr) return MCSHM_ERR_NULL_ARGUMENT;
        if (size == 0) return MCSHM_ERR_ZERO_SIZE;
        for (;;) {
            const uint32_t n = local_count_.load(std::memory_order_acquire);
            if (n > 0) {
                const uint32_t first = current_.load(std::memory_order_relaxed) % n;
                int rc = MCSHM_ERR_EXHAUSTED;
                for (uint32_t i = 0; i < n; ++i) {
                    const uint32_t k = (first + i) % n;
                    rc = allocateFrom(local_[k], size, out);
                    if (rc == MCSHM_OK) {
                        if (k != first) current_.store(k, std::memory_order_relaxed);
                        return rc;
                    }
                    if (rc != MCSHM_ERR_EXHAUSTED && rc != MCSHM_ERR_METADATA_FULL) return rc;
                }
                if (n >= opts_.max_pools) return rc;
            }
            // No pool yet, or every pool is full: one more (unless another
            // thread made it meanwhile).
            int rc = ensureLocalPools(n + 1);
            if (rc != MCSHM_OK) return rc;
        }
    }

    /// Frees the local block that starts at `addr` (as Mooncake's
    /// freeLocalMemory). MCSHM_ERR_NOT_FOUND before any allocation,
    /// MCSHM_ERR_OUT_OF_BOUNDS for an address outside every local pool,
    /// MCSHM_ERR_DOUBLE_FREE / MCSHM_ERR_INVALID_OFFSET as the arena says.
    int freeLocal(void* addr) {
        if (addr == nullptr) return MCSHM_ERR_NULL_ARGUMENT;
        const uint32_t n = local_count_.load(std::memory_order_acquire);
        if (n == 0) return MCSHM_ERR_NOT_FOUND;
        const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
        for (uint32_t k = 0; k < n; ++k) {
            const Pool& pool = local_[k];
            // Unsigned: an address below the base wraps to a huge distance.
            if (a - reinterpret_cast<uintptr_t>(pool.base()) >= pool.size()) continue;
            uint64_t off = 0;
            int rc = pool.try_offset_of(addr, &off);
            if (rc != MCSHM_OK) return rc;
            return pool.try_free(off);
        }
        // Outside every pool: the first one says so, with its own code.
        uint64_t off = 0;
        return local_[0].try_offset_of(addr, &off);
    }
    /// Mooncake's freeLocalMemory(addr, size) shape; the size is not needed.
    int freeLocal(void* addr, size_t /*size*/) { return freeLocal(addr); }

    // ---- remote buffers ----------------------------------------------------

    /// Registers peer `target_id`'s buffer `[remote_base, remote_base + length)`
    /// (its address in the peer), which lives at `offset` of the peer's pool
    /// `pool_name`. Opens/maps the pool the first time this (target, pool) is
    /// seen. Registering the same buffer again is a no-op returning 0; a
    /// different buffer overlapping a registered one gives
    /// MCSHM_ERR_ALREADY_EXISTS.
    int registerRemote(uint64_t target_id, const std::string& pool_name, uint64_t offset,
                       uint64_t length, uint64_t remote_base) {
        if (length == 0) return MCSHM_ERR_INVALID_ARGUMENT;
        if (remote_base % kPageSize != 0 || offset % kPageSize != 0)
            return MCSHM_ERR_INVALID_ARGUMENT;
        if (target_id >= opts_.table.max_peers) return MCSHM_ERR_INVALID_ARGUMENT;
#if MOONCAKE_SHM_HAS_EXCEPTIONS
        try {
            return registerRemoteLocked(target_id, pool_name, offset, length, remote_base);
        } catch (const std::bad_alloc&) {
            return MCSHM_ERR_EXHAUSTED;
        }
#else
        return registerRemoteLocked(target_id, pool_name, offset, length, remote_base);
#endif
    }

    /// Removes a registration made by registerRemote (relocate then misses).
    /// The pool stays mapped: pointers already handed out remain valid.
    int unregisterRemote(uint64_t target_id, uint64_t remote_base) {
        if (target_id >= opts_.table.max_peers) return MCSHM_ERR_INVALID_ARGUMENT;
        std::lock_guard<std::mutex> lk(mu_);
        auto it = ranges_.find({target_id, remote_base});
        if (it == ranges_.end() || !table_.valid()) return MCSHM_ERR_NOT_FOUND;
        int rc = table_.try_remove_remote(static_cast<uint32_t>(target_id), remote_base);
        if (rc == MCSHM_OK) ranges_.erase(it);
        return rc;
    }

    /// Mooncake's relocateSharedMemoryAddress: on success returns 0 and
    /// rewrites `dest_addr` (an address in peer `target_id`) to the local
    /// address; `[dest_addr, dest_addr + length)` must lie inside one
    /// registered buffer. Otherwise returns non-zero (MCSHM_ERR_NOT_FOUND for
    /// an unknown address, MCSHM_ERR_OUT_OF_BOUNDS for a range running past
    /// its buffer, ...) and leaves `dest_addr` unchanged. O(1), lock-free.
    int relocate(uint64_t& dest_addr, uint64_t length, uint64_t target_id) const noexcept {
        if (target_id >= opts_.table.max_peers) return MCSHM_ERR_INVALID_ARGUMENT;
        const mcshm_table* t = table_handle_.load(std::memory_order_acquire);
        if (t == nullptr) return MCSHM_ERR_NOT_FOUND;
        void* p = nullptr;
        int rc = mcshm_table_relocate(t, static_cast<uint32_t>(target_id), dest_addr, length, &p);
        if (rc == MCSHM_OK) dest_addr = reinterpret_cast<uintptr_t>(p);
        return rc;
    }

    /// relocate() for `n` accesses to peer `target_id` in one call (say, the
    /// slices of one transfer batch): `out[i]` gets the local address of
    /// `spans[i]` (`{addr, len}`), as relocate() would give it. Stops at the
    /// first access that fails and returns its code, with `out` written
    /// below it and `*done` (if `done` is not nullptr) set to its index; 0
    /// and `*done == n` when all succeed (mcshm_table_relocate_batch). O(1)
    /// per access, lock-free, and cheaper per access than relocate().
    int relocateBatch(uint64_t target_id, const mcshm_span* spans, size_t n, void** out,
                      size_t* done = nullptr) const noexcept {
        if (done != nullptr) *done = 0;
        if (target_id >= opts_.table.max_peers) return MCSHM_ERR_INVALID_ARGUMENT;
        const mcshm_table* t = table_handle_.load(std::memory_order_acquire);
        if (t == nullptr) return n == 0 ? MCSHM_OK : MCSHM_ERR_NOT_FOUND;
        return mcshm_table_relocate_batch(t, static_cast<uint32_t>(target_id), spans, n, out,
                                          done);
    }

    /// relocate() with Mooncake's miss path: on MCSHM_ERR_NOT_FOUND calls
    /// `lookup(target_id, dest_addr, RemoteBuffer& out) -> bool` to find the
    /// peer's published buffer containing the address, registers it and
    /// retries once.
    template <class Lookup>
    int relocate(uint64_t& dest_addr, uint64_t length, uint64_t target_id, Lookup&& lookup) {
        int rc = relocate(dest_addr, length, target_id);
        if (rc != MCSHM_ERR_NOT_FOUND) return rc;
        RemoteBuffer rb;
        if (!lookup(target_id, dest_addr, rb)) return rc;
        rc = registerRemote(target_id, rb.pool_name, rb.offset, rb.length, rb.remote_base);
        if (rc != MCSHM_OK) return rc;
        return relocate(dest_addr, length, target_id);
    }

    // ---- introspection -----------------------------------------------------

    /// The first local pool's name ("" before the first allocateLocal).
    std::string localPoolName() const {
        return localPoolCount() > 0 ? local_[0].name() : std::string();
    }
    /// Local pool `i`, in order of creation (an empty Pool if there is no
    /// such pool yet).
    const Pool& localPool(size_t i = 0) const noexcept {
        return i < localPoolCount() ? local_[i] : empty_;
    }
    /// Number of local pools made so far (0 before the first allocateLocal).
    size_t localPoolCount() const noexcept {
        return local_count_.load(std::memory_order_acquire);
    }
    /// Number of peer pools mapped so far (one per (target, pool name)).
    size_t remotePoolCount() const {
        std::lock_guard<std::mutex> lk(mu_);
        return remote_pools_.size();
    }
    /// Number of buffers currently registered.
    size_t remoteBufferCount() const {
        std::lock_guard<std::mutex> lk(mu_);
        return ranges_.size();
    }

private:
    struct Range {
        std::string pool_name;
        uint64_t offset;
        uint64_t length;
    };

    /// Allocates from `pool` and fills `*out`; the block goes back to the
    /// pool on any error after the allocation.
    int allocateFrom(const Pool& pool, size_t size, LocalBuffer* out) {
        uint64_t off = 0;
        int rc = pool.try_alloc(size, opts_.alignment, &off);
        if (rc != MCSHM_OK) return rc;
        void* p = nullptr;
        rc = pool.try_ptr(off, size, &p);
        if (rc != MCSHM_OK) {
            (void)pool.try_free(off);
            return rc;
        }
#if MOONCAKE_SHM_HAS_EXCEPTIONS
        try {
            out->pool_name = pool.name();
        } catch (const std::bad_alloc&) {
            (void)pool.try_free(off);
            return MCSHM_ERR_EXHAUSTED;
        }
#else
        out->pool_name = pool.name();
#endif
        out->addr = p;
        out->offset = off;
        out->length = size;
        return MCSHM_OK;
    }

    /// Makes one more local pool if there are fewer than `want` (callers ask
    /// for at most max_pools), under the mutex. A pool is published (by the
    /// release store of local_count_) only once complete, and readers touch
    /// only published pools.
    int ensureLocalPools(uint32_t want) {
        if (local_count_.load(std::memory_order_acquire) >= want) return MCSHM_OK;
        std::lock_guard<std::mutex> lk(mu_);
        const uint32_t n = local_count_.load(std::memory_order_relaxed);
        if (n >= want) return MCSHM_OK;
        int rc = MCSHM_ERR_ALREADY_EXISTS;
#if MOONCAKE_SHM_HAS_EXCEPTIONS
        try {
#endif
            std::random_device rd;
            std::mt19937_64 rng((static_cast<uint64_t>(rd()) << 32) ^ rd() ^
                                static_cast<uint64_t>(::getpid()));
            const int attempts = opts_.name_retries > 0 ? opts_.name_retries : 1;
            for (int i = 0; i < attempts && rc == MCSHM_ERR_ALREADY_EXISTS; ++i) {
                std::string name = prefix_;
                name += '_';
                name += std::to_string(::getpid());
                name += '_';
                for (int k = 0; k < 8; ++k) name += static_cast<char>('a' + rng() % 26);
                rc = Pool::try_create(name, opts_.pool, local_[n]);
            }
#if MOONCAKE_SHM_HAS_EXCEPTIONS
        } catch (const std::bad_alloc&) {
            return MCSHM_ERR_EXHAUSTED;
        }
#endif
        if (rc != MCSHM_OK) return rc;
        current_.store(n, std::memory_order_relaxed);
        local_count_.store(n + 1, std::memory_order_release);
        return rc;
    }

    int ensureTableLocked() {
        if (table_.valid()) return MCSHM_OK;
        int rc = Table::try_create(opts_.table, table_);
        if (rc == MCSHM_OK) table_handle_.store(table_.get(), std::memory_order_release);
        return rc;
    }

    int registerRemoteLocked(uint64_t target_id, const std::string& pool_name, uint64_t offset,
                             uint64_t length, uint64_t remote_base) {
        std::lock_guard<std::mutex> lk(mu_);
        // Already registered? Identical: no-op. Different: conflict.
        auto rit = ranges_.find({target_id, remote_base});
        if (rit != ranges_.end()) {
            const Range& r = rit->second;
            return (r.pool_name == pool_name && r.offset == offset && r.length == length)
                       ? MCSHM_OK
                       : MCSHM_ERR_ALREADY_EXISTS;
        }
        int rc = ensureTableLocked();
        if (rc != MCSHM_OK) return rc;

        // One mapping per (target, pool name), kept until destruction.
        auto key = std::make_pair(target_id, pool_name);
        auto pit = remote_pools_.find(key);
        if (pit == remote_pools_.end()) {
            Pool p;
            rc = Pool::try_open(pool_name,
                                opts_.remote_dir.empty() ? nullptr : opts_.remote_dir.c_str(), p);
            if (rc != MCSHM_OK) return rc;
            pit = remote_pools_.emplace(std::move(key), std::move(p)).first;
        }
        void* local = nullptr;
        rc = pit->second.try_ptr(offset, length, &local);
        if (rc != MCSHM_OK) return rc;
        if (reinterpret_cast<uintptr_t>(local) % kPageSize != 0) return MCSHM_ERR_INVALID_ARGUMENT;

        // Record first (may throw, nothing to undo), then publish in the table.
        rit = ranges_.emplace(std::make_pair(target_id, remote_base), Range{pool_name, offset, length})
                  .first;
        rc = table_.try_insert_remote(static_cast<uint32_t>(target_id), remote_base, length, local);
        if (rc != MCSHM_OK) ranges_.erase(rit);
        return rc;
    }

    const std::string prefix_;
    Options opts_;

    mutable std::mutex mu_;  // creation of pools and the table, registrations
    // Destroyed in reverse order: ranges, table, peer pools, local pools.
    const Pool empty_{};
    std::array<Pool, kMaxPools> local_;
    std::atomic<uint32_t> local_count_{0};  // local_[0, count) are published
    std::atomic<uint32_t> current_{0};      // the pool allocateLocal tries first
    std::map<std::pair<uint64_t, std::string>, Pool> remote_pools_;
    Table table_;
    std::atomic<const mcshm_table*> table_handle_{nullptr};
    std::map<std::pair<uint64_t, uint64_t>, Range> ranges_;
};

}  // namespace mooncake::shm

#endif  // MOONCAKE_SHM_ADAPTER_H
