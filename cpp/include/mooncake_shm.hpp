// mooncake_shm.hpp: C++17 RAII wrappers over the mooncake-shm C ABI
// (include/mooncake_shm.h). Header-only; link mooncake_shm::mooncake_shm.
//
//   namespace mooncake::shm
//     Error       std::runtime_error carrying an MCSHM_* code (+ errno for MCSHM_ERR_OS)
//     PoolOptions options for Pool::create (defaults are the C library's)
//     Pool        move-only owner of an mcshm_pool* (owner: unlinks on destruction)
//     Allocation  move-only owner of one block of a Pool (frees on destruction)
//     ThreadCache move-only owner of an mcshm_cache* (one thread's lock-free cache of a Pool)
//     TableConfig capacities for Table::create (defaults are the C library's)
//     Table       move-only owner of an mcshm_table*
//
// Every throwing member has a non-throwing `try_*` twin returning the MCSHM_*
// code (0 = MCSHM_OK): use those on hot paths or when building with
// -fno-exceptions (then the throwing members abort instead of throwing).
//
// Thread safety follows the C ABI: a Pool's alloc/free/ptr/offset_of and a
// Table's lookups may be called concurrently; a ThreadCache's alloc/free/flush
// only from the thread that created it (others get MCSHM_ERR_WRONG_THREAD);
// creating, moving and destroying a handle may not race with its use.
#ifndef MOONCAKE_SHM_HPP
#define MOONCAKE_SHM_HPP

#include "mooncake_shm.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
#define MOONCAKE_SHM_HAS_EXCEPTIONS 1
#else
#define MOONCAKE_SHM_HAS_EXCEPTIONS 0
#endif

namespace mooncake::shm {

/// Number of the last MCSHM_* code (codes are 0 ..= kLastErrorCode).
inline constexpr int kLastErrorCode = MCSHM_ERR_WRONG_THREAD;

/// "description" for a code, plus " (errno N: text)" when `code` is
/// MCSHM_ERR_OS and `os_errno` is non-zero.
inline std::string error_string(int code, int os_errno = 0) {
    std::string s = mcshm_strerror(code);
    if (code == MCSHM_ERR_OS && os_errno != 0) {
        s += " (errno ";
        s += std::to_string(os_errno);
        s += ": ";
        s += std::strerror(os_errno);
        s += ')';
    }
    return s;
}

/// A failed mooncake-shm call. `code()` is the MCSHM_* result code;
/// `os_error()` the errno behind MCSHM_ERR_OS (0 otherwise).
class Error : public std::runtime_error {
public:
    /// `context` (e.g. "mcshm_pool_create(\"name\")") prefixes the message.
    /// Construct it right after the failing call, on the same thread: it reads
    /// mcshm_last_os_error() for MCSHM_ERR_OS.
    explicit Error(int code, const std::string& context = std::string())
        : Error(code, code == MCSHM_ERR_OS ? mcshm_last_os_error() : 0, context) {}

    Error(int code, int os_errno, const std::string& context)
        : std::runtime_error(compose(code, os_errno, context)),
          code_(code),
          os_errno_(os_errno) {}

    int code() const noexcept { return code_; }
    int os_error() const noexcept { return os_errno_; }

private:
    static std::string compose(int code, int os_errno, const std::string& context) {
        std::string s;
        if (!context.empty()) {
            s = context;
            s += ": ";
        }
        s += error_string(code, os_errno);
        s += " [mcshm code ";
        s += std::to_string(code);
        s += ']';
        return s;
    }

    int code_;
    int os_errno_;
};

namespace detail {

/// Throws Error(code, context) (or aborts without exceptions) if code != 0.
inline void check(int code, const char* context) {
    if (code == MCSHM_OK) return;
#if MOONCAKE_SHM_HAS_EXCEPTIONS
    throw Error(code, context);
#else
    (void)context;
    std::abort();
#endif
}

inline void check(int code, const char* what, const std::string& name) {
    if (code == MCSHM_OK) return;
#if MOONCAKE_SHM_HAS_EXCEPTIONS
    std::string ctx = what;
    ctx += "(\"";
    ctx += name;
    ctx += "\")";
    throw Error(code, ctx);
#else
    (void)what;
    (void)name;
    std::abort();
#endif
}

struct PoolDeleter {
    void operator()(mcshm_pool* p) const noexcept { mcshm_pool_destroy(p); }
};
struct TableDeleter {
    void operator()(mcshm_table* t) const noexcept { mcshm_table_destroy(t); }
};
struct CacheDeleter {
    void operator()(mcshm_cache* c) const noexcept { mcshm_cache_destroy(c); }
};

inline const mcshm_pool_options& c_pool_defaults() noexcept {
    static const mcshm_pool_options d = [] {
        mcshm_pool_options o{};
        mcshm_pool_options_init(&o);
        return o;
    }();
    return d;
}

inline const mcshm_table_config& c_table_defaults() noexcept {
    static const mcshm_table_config d = [] {
        mcshm_table_config c{};
        mcshm_table_config_init(&c);
        return c;
    }();
    return d;
}

}  // namespace detail

/// Options for Pool::create. Defaults are those of mcshm_pool_options_init
/// (64 MiB, mode 0600, no flags, /dev/shm, 65536 blocks).
struct PoolOptions {
    /// Allocatable bytes (a header page comes on top of the mapping).
    uint64_t capacity = detail::c_pool_defaults().capacity;
    /// Permission bits of the shm object.
    uint32_t mode = detail::c_pool_defaults().mode;
    /// Fault every page in at creation (MCSHM_POOL_PREFAULT).
    bool prefault = false;
    /// Back the pool with huge pages (MCSHM_POOL_HUGE_PAGES).
    bool huge_pages = false;
    /// Empty: /dev/shm via shm_open; otherwise a directory (hugetlbfs, DAX).
    std::string dir;
    /// Arena metadata capacity (live + free blocks).
    uint32_t max_blocks = detail::c_pool_defaults().max_blocks;
    /// Independently locked arena shards (1-16): N shards let N threads
    /// allocate at once; one allocation must fit in capacity / shards.
    uint32_t shards = detail::c_pool_defaults().shards;
    /// Extra raw MCSHM_POOL_* bits OR-ed into the C flags (normally 0).
    uint32_t extra_flags = 0;

    /// The C struct; `dir` points into this object, keep it alive meanwhile.
    mcshm_pool_options to_c() const noexcept {
        mcshm_pool_options o = detail::c_pool_defaults();
        o.capacity = capacity;
        o.mode = mode;
        o.flags = extra_flags | (prefault ? MCSHM_POOL_PREFAULT : 0u) |
                  (huge_pages ? MCSHM_POOL_HUGE_PAGES : 0u);
        o.dir = dir.empty() ? nullptr : dir.c_str();
        o.max_blocks = max_blocks;
        o.shards = shards;
        return o;
    }
};

/// A pool's arena accounting (see mcshm_pool_stats; a peer's are all zero).
using PoolStats = mcshm_pool_stats;

class Pool;

/// One live block of a Pool, freed on destruction unless release()d.
///
/// Holds the pool's C handle (stable across moves of the Pool object), so it
/// must not outlive the Pool it came from.
class Allocation {
public:
    Allocation() noexcept = default;
    Allocation(const Allocation&) = delete;
    Allocation& operator=(const Allocation&) = delete;
    Allocation(Allocation&& o) noexcept
        : pool_(std::exchange(o.pool_, nullptr)),
          offset_(std::exchange(o.offset_, 0)),
          size_(std::exchange(o.size_, 0)),
          data_(std::exchange(o.data_, nullptr)) {}
    Allocation& operator=(Allocation&& o) noexcept {
        if (this != &o) {
            reset();
            pool_ = std::exchange(o.pool_, nullptr);
            offset_ = std::exchange(o.offset_, 0);
            size_ = std::exchange(o.size_, 0);
            data_ = std::exchange(o.data_, nullptr);
        }
        return *this;
    }
    ~Allocation() { reset(); }

    /// Start of the block in this process's mapping (nullptr when empty).
    void* data() const noexcept { return data_; }
    /// Offset from the pool's mapping base: what a peer adds to its own base.
    uint64_t offset() const noexcept { return offset_; }
    /// Requested size in bytes.
    uint64_t size() const noexcept { return size_; }
    /// The pool's C handle (nullptr when empty).
    const mcshm_pool* pool() const noexcept { return pool_; }
    bool valid() const noexcept { return pool_ != nullptr; }
    explicit operator bool() const noexcept { return valid(); }

    /// Gives up ownership: the block stays allocated; returns its offset.
    uint64_t release() noexcept {
        pool_ = nullptr;
        data_ = nullptr;
        size_ = 0;
        return std::exchange(offset_, 0);
    }

    /// Frees the block now (no-op when empty). Returns the C code.
    int reset() noexcept {
        int rc = MCSHM_OK;
        if (pool_ != nullptr) rc = mcshm_pool_free(pool_, offset_);
        pool_ = nullptr;
        offset_ = 0;
        size_ = 0;
        data_ = nullptr;
        return rc;
    }

private:
    friend class Pool;
    Allocation(const mcshm_pool* pool, uint64_t offset, uint64_t size, void* data) noexcept
        : pool_(pool), offset_(offset), size_(size), data_(data) {}

    const mcshm_pool* pool_ = nullptr;
    uint64_t offset_ = 0;
    uint64_t size_ = 0;
    void* data_ = nullptr;
};

/// A shared-memory pool: created (owner: allocates, unlinks on destruction)
/// or opened by name (peer: maps only, never allocates).
class Pool {
public:
    /// An empty handle; assign the result of create()/open() to it.
    Pool() noexcept = default;
    Pool(const Pool&) = delete;
    Pool& operator=(const Pool&) = delete;
    Pool(Pool&& o) noexcept
        : handle_(std::move(o.handle_)),
          name_(std::move(o.name_)),
          base_(std::exchange(o.base_, nullptr)),
          size_(std::exchange(o.size_, 0)),
          owner_(std::exchange(o.owner_, false)) {}
    /// Destroys this object's pool first (owner unlinks), then takes `o`'s.
    Pool& operator=(Pool&& o) noexcept {
        if (this != &o) {
            reset();
            handle_ = std::move(o.handle_);
            name_ = std::move(o.name_);
            base_ = std::exchange(o.base_, nullptr);
            size_ = std::exchange(o.size_, 0);
            owner_ = std::exchange(o.owner_, false);
        }
        return *this;
    }
    /// Owner: unmaps and unlinks. Peer: unmaps.
    ~Pool() = default;

    /// Creates pool `name` exclusively; throws Error (MCSHM_ERR_ALREADY_EXISTS,
    /// MCSHM_ERR_INVALID_NAME, ...) without leaving anything behind.
    static Pool create(const std::string& name, const PoolOptions& opts = {}) {
        Pool p;
        detail::check(try_create(name, opts, p), "mcshm_pool_create", name);
        return p;
    }

    /// Opens an existing pool as a peer (`dir` nullptr: /dev/shm).
    static Pool open(const std::string& name, const char* dir = nullptr) {
        Pool p;
        detail::check(try_open(name, dir, p), "mcshm_pool_open", name);
        return p;
    }

    /// Non-throwing create: on success `out` holds the pool (its previous pool
    /// is destroyed); on failure `out` is untouched. Returns the C code.
    static int try_create(const std::string& name, const PoolOptions& opts, Pool& out) {
        Pool p;
        p.name_ = name;  // may throw bad_alloc: nothing created yet
        p.owner_ = true;
        const mcshm_pool_options c = opts.to_c();
        mcshm_pool* raw = nullptr;
        int rc = mcshm_pool_create(name.c_str(), &c, &raw);
        if (rc != MCSHM_OK) return rc;
        p.handle_.reset(raw);  // from here the segment is owned: no leak on any failure
        rc = p.load_mapping();
        if (rc != MCSHM_OK) return rc;  // ~Pool unlinks
        out = std::move(p);
        return MCSHM_OK;
    }

    /// Non-throwing open; same conventions as try_create.
    static int try_open(const std::string& name, const char* dir, Pool& out) {
        Pool p;
        p.name_ = name;
        p.owner_ = false;
        mcshm_pool* raw = nullptr;
        int rc = mcshm_pool_open(name.c_str(), dir, &raw);
        if (rc != MCSHM_OK) return rc;
        p.handle_.reset(raw);
        rc = p.load_mapping();
        if (rc != MCSHM_OK) return rc;
        out = std::move(p);
        return MCSHM_OK;
    }

    // ---- allocation (owner only) -------------------------------------------

    /// Allocates `size` bytes aligned to `align` (0: default, else a power of
    /// two up to 4096). The block is freed when the Allocation dies.
    Allocation alloc(uint64_t size, uint64_t align = 0) const {
        uint64_t off = 0;
        detail::check(try_alloc(size, align, &off), "mcshm_pool_alloc");
        return Allocation(handle_.get(), off, size, static_cast<char*>(base_) + off);
    }
    int try_alloc(uint64_t size, uint64_t align, uint64_t* out_offset) const noexcept {
        return mcshm_pool_alloc(handle_.get(), size, align, out_offset);
    }

    /// Frees the block that starts at `offset` (one not owned by an Allocation).
    void free(uint64_t offset) const { detail::check(try_free(offset), "mcshm_pool_free"); }
    int try_free(uint64_t offset) const noexcept { return mcshm_pool_free(handle_.get(), offset); }

    // ---- translation (owner and peers) -------------------------------------

    /// `(offset, len)` -> pointer into this process's mapping, bounds-checked.
    void* ptr(uint64_t offset, uint64_t len) const {
        void* p = nullptr;
        detail::check(try_ptr(offset, len, &p), "mcshm_pool_ptr");
        return p;
    }
    int try_ptr(uint64_t offset, uint64_t len, void** out) const noexcept {
        return mcshm_pool_ptr(handle_.get(), offset, len, out);
    }

    /// Pointer into this process's mapping -> offset.
    uint64_t offset_of(const void* p) const {
        uint64_t off = 0;
        detail::check(try_offset_of(p, &off), "mcshm_pool_offset_of");
        return off;
    }
    int try_offset_of(const void* p, uint64_t* out_offset) const noexcept {
        return mcshm_pool_offset_of(handle_.get(), p, out_offset);
    }

    /// Base of this process's mapping (header included; offsets count from here).
    void* base() const noexcept { return base_; }
    /// Length of the whole mapping in bytes, header included.
    uint64_t size() const noexcept { return size_; }

    /// Arena statistics (owner; a peer's are zero).
    PoolStats stats() const {
        PoolStats s{};
        detail::check(try_stats(&s), "mcshm_pool_stats_get");
        return s;
    }
    int try_stats(PoolStats* out) const noexcept { return mcshm_pool_stats_get(handle_.get(), out); }

    /// The name given to create()/open().
    const std::string& name() const noexcept { return name_; }
    /// True if this handle created the pool (allocates, unlinks on destruction).
    bool is_owner() const noexcept { return owner_; }

    bool valid() const noexcept { return handle_ != nullptr; }
    explicit operator bool() const noexcept { return valid(); }
    /// The C handle (still owned by this object).
    mcshm_pool* get() const noexcept { return handle_.get(); }
    /// Gives up the C handle; the caller must mcshm_pool_destroy() it.
    mcshm_pool* release() noexcept {
        base_ = nullptr;
        size_ = 0;
        return handle_.release();
    }
    /// Destroys the pool now (owner unlinks); the handle becomes empty.
    void reset() noexcept {
        handle_.reset();
        base_ = nullptr;
        size_ = 0;
    }

private:
    int load_mapping() noexcept {
        void* b = nullptr;
        uint64_t len = 0;
        int rc = mcshm_pool_mapping(handle_.get(), &b, &len);
        if (rc == MCSHM_OK) {
            base_ = b;
            size_ = len;
        }
        return rc;
    }

    std::unique_ptr<mcshm_pool, detail::PoolDeleter> handle_;
    std::string name_;
    void* base_ = nullptr;
    uint64_t size_ = 0;
    bool owner_ = false;
};

/// One thread's cache of an owner Pool's blocks (mcshm_cache): alloc/free
/// without the pool's lock, keeping up to `max_bytes` of freed blocks for
/// reuse. alloc/free/flush work only on the thread that created the cache
/// (MCSHM_ERR_WRONG_THREAD elsewhere); destruction works on any thread.
///
/// A block allocated through a cache must be freed through it (Pool::free
/// gives MCSHM_ERR_CACHE_OWNED) until the cache is destroyed: then kept
/// blocks go back to the pool and handed-out ones become ordinary blocks.
/// The cache holds a reference on the pool, so it may outlive the Pool
/// object (the owner's segment is unlinked when both are gone).
class ThreadCache {
public:
    /// An empty handle; assign the result of create() to it.
    ThreadCache() noexcept = default;
    ThreadCache(const ThreadCache&) = delete;
    ThreadCache& operator=(const ThreadCache&) = delete;
    ThreadCache(ThreadCache&&) noexcept = default;
    /// Destroys this object's cache and takes `o`'s.
    ThreadCache& operator=(ThreadCache&&) noexcept = default;
    /// Gives kept blocks back to the pool; handed-out ones become ordinary.
    ~ThreadCache() = default;

    /// Creates a cache of `pool` (an owner's; MCSHM_ERR_NOT_OWNER for a peer)
    /// for the calling thread. `max_bytes` 0: MCSHM_CACHE_DEFAULT_BYTES.
    static ThreadCache create(const Pool& pool, uint64_t max_bytes = 0) {
        ThreadCache c;
        detail::check(try_create(pool, max_bytes, c), "mcshm_cache_create");
        return c;
    }
    /// On success `out` holds the cache (its previous cache is destroyed);
    /// on failure it is untouched. Returns the C code.
    static int try_create(const Pool& pool, uint64_t max_bytes, ThreadCache& out) noexcept {
        mcshm_cache* raw = nullptr;
        int rc = mcshm_cache_create(pool.get(), max_bytes, &raw);
        if (rc == MCSHM_OK) out.handle_.reset(raw);
        return rc;
    }

    /// Allocates `size` bytes aligned to `align` (as Pool::alloc) and returns
    /// the block's offset; free it with free() on this cache.
    uint64_t alloc(uint64_t size, uint64_t align = 0) const {
        uint64_t off = 0;
        detail::check(try_alloc(size, align, &off), "mcshm_cache_alloc");
        return off;
    }
    int try_alloc(uint64_t size, uint64_t align, uint64_t* out_offset) const noexcept {
        return mcshm_cache_alloc(handle_.get(), size, align, out_offset);
    }

    /// Frees the block at `offset`: one of this cache's (kept for reuse) or
    /// an ordinary block of the pool (passed on to it).
    void free(uint64_t offset) const { detail::check(try_free(offset), "mcshm_cache_free"); }
    int try_free(uint64_t offset) const noexcept { return mcshm_cache_free(handle_.get(), offset); }

    /// Gives the kept blocks back to the pool (handed-out ones stay owned).
    void flush() const { detail::check(try_flush(), "mcshm_cache_flush"); }
    int try_flush() const noexcept { return mcshm_cache_flush(handle_.get()); }

    bool valid() const noexcept { return handle_ != nullptr; }
    explicit operator bool() const noexcept { return valid(); }
    /// The C handle (still owned by this object).
    mcshm_cache* get() const noexcept { return handle_.get(); }
    /// Gives up the C handle; the caller must mcshm_cache_destroy() it.
    mcshm_cache* release() noexcept { return handle_.release(); }
    /// Destroys the cache now; the handle becomes empty.
    void reset() noexcept { handle_.reset(); }

private:
    std::unique_ptr<mcshm_cache, detail::CacheDeleter> handle_;
};

/// Capacities of a Table; defaults are those of mcshm_table_config_init.
struct TableConfig {
    uint32_t max_segments = detail::c_table_defaults().max_segments;
    uint32_t max_peers = detail::c_table_defaults().max_peers;
    uint32_t max_ranges = detail::c_table_defaults().max_ranges;
    uint32_t max_nodes = detail::c_table_defaults().max_nodes;

    mcshm_table_config to_c() const noexcept {
        mcshm_table_config c = detail::c_table_defaults();
        c.max_segments = max_segments;
        c.max_peers = max_peers;
        c.max_ranges = max_ranges;
        c.max_nodes = max_nodes;
        return c;
    }
};

/// Result of Table::locate.
struct Location {
    uint32_t segment = 0;
    uint64_t offset = 0;
};

/// O(1) translation table: local segments by id, remote ranges by
/// (peer, address). Lookups are lock-free and may run concurrently with
/// inserts/removes. The table never maps or unmaps anything.
class Table {
public:
    Table() noexcept = default;
    Table(const Table&) = delete;
    Table& operator=(const Table&) = delete;
    Table(Table&&) noexcept = default;
    Table& operator=(Table&&) noexcept = default;
    ~Table() = default;

    static Table create(const TableConfig& cfg = {}) {
        Table t;
        detail::check(try_create(cfg, t), "mcshm_table_create");
        return t;
    }
    /// On success `out` holds the table; on failure it is untouched.
    static int try_create(const TableConfig& cfg, Table& out) noexcept {
        const mcshm_table_config c = cfg.to_c();
        mcshm_table* raw = nullptr;
        int rc = mcshm_table_create(&c, &raw);
        if (rc == MCSHM_OK) out.handle_.reset(raw);
        return rc;
    }

    // ---- local segments ----------------------------------------------------
    void insert_segment(uint32_t id, void* base, uint64_t len) const {
        detail::check(try_insert_segment(id, base, len), "mcshm_table_insert_segment");
    }
    int try_insert_segment(uint32_t id, void* base, uint64_t len) const noexcept {
        return mcshm_table_insert_segment(handle_.get(), id, base, len);
    }
    void remove_segment(uint32_t id) const {
        detail::check(try_remove_segment(id), "mcshm_table_remove_segment");
    }
    int try_remove_segment(uint32_t id) const noexcept {
        return mcshm_table_remove_segment(handle_.get(), id);
    }
    /// `(segment, offset, len)` -> local pointer, bounds-checked.
    void* resolve(uint32_t id, uint64_t offset, uint64_t len) const {
        void* p = nullptr;
        detail::check(try_resolve(id, offset, len, &p), "mcshm_table_resolve");
        return p;
    }
    int try_resolve(uint32_t id, uint64_t offset, uint64_t len, void** out) const noexcept {
        return mcshm_table_resolve(handle_.get(), id, offset, len, out);
    }
    /// Local pointer -> (segment, offset).
    Location locate(const void* p) const {
        Location l;
        detail::check(try_locate(p, &l), "mcshm_table_locate");
        return l;
    }
    int try_locate(const void* p, Location* out) const noexcept {
        if (out == nullptr) return MCSHM_ERR_NULL_ARGUMENT;
        return mcshm_table_locate(handle_.get(), p, &out->segment, &out->offset);
    }

    // ---- remote ranges -----------------------------------------------------
    /// Registers `[remote_base, remote_base + len)` of `peer`, mapped here at
    /// `local_base`. Both bases page-aligned; a peer's ranges never overlap.
    void insert_remote(uint32_t peer, uint64_t remote_base, uint64_t len, void* local_base) const {
        detail::check(try_insert_remote(peer, remote_base, len, local_base),
                      "mcshm_table_insert_remote");
    }
    int try_insert_remote(uint32_t peer, uint64_t remote_base, uint64_t len,
                          void* local_base) const noexcept {
        return mcshm_table_insert_remote(handle_.get(), peer, remote_base, len, local_base);
    }
    void remove_remote(uint32_t peer, uint64_t remote_base) const {
        detail::check(try_remove_remote(peer, remote_base), "mcshm_table_remove_remote");
    }
    int try_remove_remote(uint32_t peer, uint64_t remote_base) const noexcept {
        return mcshm_table_remove_remote(handle_.get(), peer, remote_base);
    }
    /// `(peer, remote address, len)` -> local pointer; the whole
    /// `[remote_addr, remote_addr + len)` must lie in one registered range.
    void* relocate(uint32_t peer, uint64_t remote_addr, uint64_t len) const {
        void* p = nullptr;
        detail::check(try_relocate(peer, remote_addr, len, &p), "mcshm_table_relocate");
        return p;
    }
    int try_relocate(uint32_t peer, uint64_t remote_addr, uint64_t len, void** out) const noexcept {
        return mcshm_table_relocate(handle_.get(), peer, remote_addr, len, out);
    }
    /// relocate() for `n` accesses to one peer in one call: `out[i]` gets the
    /// local pointer of `spans[i]`, as relocate(peer, spans[i].addr,
    /// spans[i].len) would give it. Returns `n` (every access translated).
    /// Throws at the first access that fails, with its code; `out` is then
    /// written below that access and untouched from it. Error does not say
    /// which access failed: try_relocate_batch does. `spans` and `out` may be
    /// nullptr only when `n` is 0, and must not overlap.
    std::size_t relocate_batch(uint32_t peer, const mcshm_span* spans, std::size_t n,
                               void** out) const {
        detail::check(try_relocate_batch(peer, spans, n, out, nullptr),
                      "mcshm_table_relocate_batch");
        return n;
    }
    /// `*done` (if `done` is not nullptr) gets the number of accesses
    /// translated: `n` on MCSHM_OK, else the index of the failing access
    /// (0 for a bad argument); `out` is written below it, untouched from it.
    int try_relocate_batch(uint32_t peer, const mcshm_span* spans, std::size_t n, void** out,
                           std::size_t* done) const noexcept {
        return mcshm_table_relocate_batch(handle_.get(), peer, spans, n, out, done);
    }

    bool valid() const noexcept { return handle_ != nullptr; }
    explicit operator bool() const noexcept { return valid(); }
    mcshm_table* get() const noexcept { return handle_.get(); }
    mcshm_table* release() noexcept { return handle_.release(); }
    void reset() noexcept { handle_.reset(); }

private:
    std::unique_ptr<mcshm_table, detail::TableDeleter> handle_;
};

}  // namespace mooncake::shm

#endif  // MOONCAKE_SHM_HPP
