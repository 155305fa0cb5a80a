// Tests of the C++ RAII layer (cpp/include/mooncake_shm.hpp).
#include "mooncake_shm.hpp"

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "test_util.h"

namespace {

namespace ms = mooncake::shm;
using mcshm_test::shm_exists;
using mcshm_test::unique_name;

const bool kLeakCheck = mcshm_test::install_leak_check();

static_assert(!std::is_copy_constructible_v<ms::Pool>);
static_assert(!std::is_copy_assignable_v<ms::Pool>);
static_assert(std::is_nothrow_move_constructible_v<ms::Pool>);
static_assert(std::is_nothrow_move_assignable_v<ms::Pool>);
static_assert(!std::is_copy_constructible_v<ms::Allocation>);
static_assert(std::is_nothrow_move_constructible_v<ms::Allocation>);
static_assert(std::is_nothrow_move_assignable_v<ms::Allocation>);
static_assert(!std::is_copy_constructible_v<ms::Table>);
static_assert(std::is_nothrow_move_constructible_v<ms::Table>);
static_assert(!std::is_copy_constructible_v<ms::ThreadCache>);
static_assert(!std::is_copy_assignable_v<ms::ThreadCache>);
static_assert(std::is_nothrow_move_constructible_v<ms::ThreadCache>);
static_assert(std::is_nothrow_move_assignable_v<ms::ThreadCache>);
static_assert(std::is_nothrow_default_constructible_v<ms::ThreadCache>);
static_assert(ms::kLastErrorCode == MCSHM_ERR_WRONG_THREAD);
static_assert(std::is_base_of_v<std::runtime_error, ms::Error>);

ms::PoolOptions small() {
    ms::PoolOptions o;
    o.capacity = 1 << 20;
    return o;
}

/// Runs `f`, expecting ms::Error with `code`.
template <class F>
void expect_error(int code, F&& f) {
    try {
        f();
        ADD_FAILURE() << "no exception; expected code " << code;
    } catch (const ms::Error& e) {
        EXPECT_EQ(e.code(), code) << e.what();
        EXPECT_NE(std::string(e.what()).find(mcshm_strerror(code)), std::string::npos) << e.what();
    }
}

TEST(Wrapper, OptionDefaultsMatchC) {
    ms::PoolOptions o;
    mcshm_pool_options c;
    mcshm_pool_options_init(&c);
    EXPECT_EQ(o.capacity, c.capacity);
    EXPECT_EQ(o.mode, c.mode);
    EXPECT_EQ(o.max_blocks, c.max_blocks);
    EXPECT_EQ(o.shards, c.shards);
    mcshm_pool_options oc = o.to_c();
    EXPECT_EQ(oc.flags, 0u);
    EXPECT_EQ(oc.dir, nullptr);
    o.prefault = true;
    o.huge_pages = true;
    o.dir = "/mnt/huge";
    oc = o.to_c();
    EXPECT_EQ(oc.flags, unsigned(MCSHM_POOL_PREFAULT | MCSHM_POOL_HUGE_PAGES));
    EXPECT_STREQ(oc.dir, "/mnt/huge");

    ms::TableConfig t;
    mcshm_table_config tc;
    mcshm_table_config_init(&tc);
    EXPECT_EQ(t.max_segments, tc.max_segments);
    EXPECT_EQ(t.max_peers, tc.max_peers);
    EXPECT_EQ(t.max_ranges, tc.max_ranges);
    EXPECT_EQ(t.max_nodes, tc.max_nodes);
}

TEST(Wrapper, ErrorCarriesCodeAndMessage) {
    ms::Error e(MCSHM_ERR_NOT_FOUND, "ctx");
    EXPECT_EQ(e.code(), MCSHM_ERR_NOT_FOUND);
    EXPECT_EQ(e.os_error(), 0);
    EXPECT_NE(std::string(e.what()).find("ctx: not found"), std::string::npos) << e.what();

    ms::Error os(MCSHM_ERR_OS, ENOENT, "open");
    EXPECT_EQ(os.os_error(), ENOENT);
    EXPECT_NE(std::string(os.what()).find(std::strerror(ENOENT)), std::string::npos) << os.what();
    EXPECT_NE(std::string(os.what()).find("errno 2"), std::string::npos) << os.what();
}

TEST(Wrapper, CreateAllocFreeAndUnlinkOnDestroy) {
    const std::string name = unique_name();
    {
        ms::Pool pool = ms::Pool::create(name, small());
        ASSERT_TRUE(pool);
        EXPECT_TRUE(shm_exists(name));
        EXPECT_EQ(pool.name(), name);
        EXPECT_TRUE(pool.is_owner());
        EXPECT_NE(pool.base(), nullptr);
        EXPECT_GE(pool.size(), uint64_t(1) << 20);

        ms::Allocation a = pool.alloc(4096, 4096);
        ASSERT_TRUE(a);
        EXPECT_EQ(a.size(), 4096u);
        EXPECT_EQ(a.offset() % 4096, 0u);
        EXPECT_EQ(a.data(), static_cast<char*>(pool.base()) + a.offset());
        EXPECT_EQ(pool.ptr(a.offset(), a.size()), a.data());
        EXPECT_EQ(pool.offset_of(static_cast<char*>(a.data()) + 5), a.offset() + 5);
        std::memset(a.data(), 1, a.size());
        EXPECT_EQ(pool.stats().live, 1u);
        {
            ms::Allocation b = pool.alloc(100);
            EXPECT_EQ(pool.stats().live, 2u);
        }
        EXPECT_EQ(pool.stats().live, 1u) << "~Allocation frees";
        a.reset();
        EXPECT_FALSE(a);
        EXPECT_EQ(pool.stats().live, 0u);
    }
    EXPECT_FALSE(shm_exists(name)) << "~Pool (owner) unlinks";
}

TEST(Wrapper, MoveSemantics) {
    const std::string n1 = unique_name(), n2 = unique_name();
    ms::Pool a = ms::Pool::create(n1, small());
    void* base = a.base();
    ms::Pool b(std::move(a));
    EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move)
    EXPECT_EQ(a.base(), nullptr);
    EXPECT_EQ(b.base(), base);
    EXPECT_EQ(b.name(), n1);
    EXPECT_TRUE(b.is_owner());
    EXPECT_TRUE(shm_exists(n1));

    // An Allocation survives moving its Pool object (it holds the C handle).
    ms::Allocation al = b.alloc(64);
    ms::Pool c = ms::Pool::create(n2, small());
    c = std::move(b);  // destroys n2's pool, takes n1's
    EXPECT_FALSE(shm_exists(n2));
    EXPECT_TRUE(shm_exists(n1));
    EXPECT_EQ(c.name(), n1);
    EXPECT_EQ(c.stats().live, 1u);

    ms::Allocation al2 = std::move(al);
    EXPECT_FALSE(al);  // NOLINT(bugprone-use-after-move)
    ms::Allocation al3;
    al3 = std::move(al2);
    EXPECT_EQ(c.stats().live, 1u);
    al3 = ms::Allocation();
    EXPECT_EQ(c.stats().live, 0u) << "move-assigning over an Allocation frees it";

    c.reset();
    EXPECT_FALSE(shm_exists(n1));
    c.reset();  // idempotent
}

TEST(Wrapper, ReleaseKeepsBlockAndHandle) {
    const std::string name = unique_name();
    ms::Pool pool = ms::Pool::create(name, small());
    ms::Allocation a = pool.alloc(256);
    const uint64_t off = a.release();
    EXPECT_FALSE(a);
    EXPECT_EQ(pool.stats().live, 1u);
    pool.free(off);
    EXPECT_EQ(pool.stats().live, 0u);
    expect_error(MCSHM_ERR_DOUBLE_FREE, [&] { pool.free(off); });

    mcshm_pool* raw = pool.release();
    EXPECT_FALSE(pool);
    EXPECT_TRUE(shm_exists(name));
    mcshm_pool_destroy(raw);
    EXPECT_FALSE(shm_exists(name));
}

TEST(Wrapper, ErrorsThrowAndTryVariantsReturnCodes) {
    const std::string name = unique_name();
    expect_error(MCSHM_ERR_NOT_FOUND, [&] { ms::Pool::open(name); });
    expect_error(MCSHM_ERR_INVALID_NAME, [&] { ms::Pool::create("a/b", small()); });

    ms::Pool pool = ms::Pool::create(name, small());
    expect_error(MCSHM_ERR_ALREADY_EXISTS, [&] { ms::Pool::create(name, small()); });
    expect_error(MCSHM_ERR_ZERO_SIZE, [&] { (void)pool.alloc(0); });
    expect_error(MCSHM_ERR_BAD_ALIGNMENT, [&] { (void)pool.alloc(64, 3); });
    expect_error(MCSHM_ERR_TOO_LARGE, [&] { (void)pool.alloc(2 << 20); });
    expect_error(MCSHM_ERR_OUT_OF_BOUNDS, [&] { (void)pool.ptr(pool.size(), 1); });
    int x = 0;
    expect_error(MCSHM_ERR_OUT_OF_BOUNDS, [&] { (void)pool.offset_of(&x); });

    uint64_t off = 0;
    EXPECT_EQ(pool.try_alloc(0, 0, &off), MCSHM_ERR_ZERO_SIZE);
    ASSERT_EQ(pool.try_alloc(128, 0, &off), MCSHM_OK);
    void* p = nullptr;
    EXPECT_EQ(pool.try_ptr(off, 128, &p), MCSHM_OK);
    uint64_t back = 0;
    EXPECT_EQ(pool.try_offset_of(p, &back), MCSHM_OK);
    EXPECT_EQ(back, off);
    ms::PoolStats st{};
    EXPECT_EQ(pool.try_stats(&st), MCSHM_OK);
    EXPECT_EQ(st.live, 1u);
    EXPECT_EQ(pool.try_free(off), MCSHM_OK);
    EXPECT_EQ(pool.try_free(off), MCSHM_ERR_DOUBLE_FREE);

    // try_create/try_open leave the target untouched on failure.
    ms::Pool keep = ms::Pool::create(unique_name(), small());
    void* keep_base = keep.base();
    EXPECT_EQ(ms::Pool::try_create(name, small(), keep), MCSHM_ERR_ALREADY_EXISTS);
    EXPECT_EQ(ms::Pool::try_open(unique_name(), nullptr, keep), MCSHM_ERR_NOT_FOUND);
    EXPECT_EQ(keep.base(), keep_base);
    EXPECT_TRUE(keep.is_owner());
}

TEST(Wrapper, PeerHandle) {
    const std::string name = unique_name();
    ms::Pool owner = ms::Pool::create(name, small());
    ms::Allocation a = owner.alloc(64);
    std::strcpy(static_cast<char*>(a.data()), "peer sees this");
    {
        ms::Pool peer = ms::Pool::open(name);
        EXPECT_FALSE(peer.is_owner());
        EXPECT_EQ(peer.name(), name);
        EXPECT_EQ(peer.size(), owner.size());
        EXPECT_STREQ(static_cast<const char*>(peer.ptr(a.offset(), 64)), "peer sees this");
        expect_error(MCSHM_ERR_NOT_OWNER, [&] { (void)peer.alloc(64); });
        expect_error(MCSHM_ERR_NOT_OWNER, [&] { peer.free(a.offset()); });
        EXPECT_EQ(peer.stats().live, 0u);
    }
    EXPECT_TRUE(shm_exists(name)) << "~Pool (peer) must not unlink";
}

TEST(Wrapper, FailedCreateLeavesNothing) {
    const std::string name = unique_name();
    ms::PoolOptions o = small();
    o.extra_flags = 0x80;  // rejected by the C layer
    expect_error(MCSHM_ERR_INVALID_ARGUMENT, [&] { ms::Pool::create(name, o); });
    EXPECT_FALSE(shm_exists(name));
}

TEST(Wrapper, ManyAllocationsInAVector) {
    ms::Pool pool = ms::Pool::create(unique_name(), small());
    {
        std::vector<ms::Allocation> v;
        for (int i = 0; i < 64; ++i) v.push_back(pool.alloc(1000 + i));  // reallocations move
        EXPECT_EQ(pool.stats().live, 64u);
        for (size_t i = 0; i < v.size(); ++i) std::memset(v[i].data(), int(i), v[i].size());
        for (size_t i = 0; i < v.size(); ++i)
            EXPECT_EQ(static_cast<unsigned char*>(v[i].data())[v[i].size() - 1], i);
    }
    EXPECT_EQ(pool.stats().live, 0u);
    EXPECT_EQ(pool.stats().in_use, 0u);
}

TEST(Wrapper, PoolInADirectory) {
    char tmpl[] = "/tmp/mcshm_t_dir_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    const std::string dir = tmpl;
    const std::string name = unique_name("d");
    {
        ms::PoolOptions o = small();
        o.dir = dir;
        ms::Pool owner = ms::Pool::create(name, o);
        EXPECT_EQ(::access((dir + "/" + name).c_str(), F_OK), 0);
        EXPECT_FALSE(shm_exists(name));
        ms::Allocation a = owner.alloc(64);
        std::strcpy(static_cast<char*>(a.data()), "in a dir");
        ms::Pool peer = ms::Pool::open(name, dir.c_str());
        EXPECT_STREQ(static_cast<const char*>(peer.ptr(a.offset(), 9)), "in a dir");
        expect_error(MCSHM_ERR_NOT_FOUND, [&] { ms::Pool::open(name); });  // not in /dev/shm
    }
    EXPECT_NE(::access((dir + "/" + name).c_str(), F_OK), 0) << "owner unlinks in its dir";
    ::unlink((dir + "/" + name).c_str());
    ::rmdir(dir.c_str());
}

// ---- ThreadCache -----------------------------------------------------------

TEST(ThreadCacheWrapper, AllocFreeReuseAndRaiiDestroy) {
    const std::string name = unique_name();
    ms::Pool pool = ms::Pool::create(name, small());
    uint64_t handed_out = 0;
    {
        ms::ThreadCache cache = ms::ThreadCache::create(pool);
        ASSERT_TRUE(cache);
        const uint64_t a = cache.alloc(4096, 64);
        EXPECT_EQ(a % 64, 0u);
        std::memset(pool.ptr(a, 4096), 0x11, 4096);
        cache.free(a);
        EXPECT_EQ(pool.stats().live, 1u) << "a kept block counts as live";
        EXPECT_EQ(cache.alloc(4096), a) << "the kept block comes back";
        expect_error(MCSHM_ERR_CACHE_OWNED, [&] { pool.free(a); });
        EXPECT_EQ(pool.try_free(a), MCSHM_ERR_CACHE_OWNED);
        cache.free(a);
        expect_error(MCSHM_ERR_DOUBLE_FREE, [&] { cache.free(a); });
        EXPECT_EQ(cache.try_free(a), MCSHM_ERR_DOUBLE_FREE);
        expect_error(MCSHM_ERR_ZERO_SIZE, [&] { (void)cache.alloc(0); });
        expect_error(MCSHM_ERR_BAD_ALIGNMENT, [&] { (void)cache.alloc(64, 3); });
        uint64_t off = 0;
        EXPECT_EQ(cache.try_alloc(2 << 20, 0, &off), MCSHM_ERR_TOO_LARGE);

        // An ordinary block of the pool is passed on.
        ms::Allocation plain = pool.alloc(100);
        cache.free(plain.release());
        EXPECT_EQ(pool.stats().live, 1u);

        cache.flush();
        EXPECT_EQ(cache.try_flush(), MCSHM_OK);
        EXPECT_EQ(pool.stats().live, 0u);
        const uint64_t k = cache.alloc(512);
        cache.free(k);  // kept at destruction
        // Another class (a smaller request would take `k`: a cache's
        // blocks are at least 512 bytes).
        handed_out = cache.alloc(1024);
        EXPECT_EQ(pool.stats().live, 2u);
    }
    // ~ThreadCache: the kept block went back, the handed-out one is plain.
    EXPECT_EQ(pool.stats().live, 1u);
    pool.free(handed_out);
    EXPECT_EQ(pool.stats().live, 0u);
    EXPECT_EQ(pool.stats().in_use, 0u);

    // Peers and empty pools have no cache; a failed try_create leaves `out` as it was.
    ms::Pool peer = ms::Pool::open(name);
    expect_error(MCSHM_ERR_NOT_OWNER, [&] { ms::ThreadCache::create(peer); });
    ms::ThreadCache keep = ms::ThreadCache::create(pool, 4096);
    mcshm_cache* raw = keep.get();
    EXPECT_EQ(ms::ThreadCache::try_create(peer, 0, keep), MCSHM_ERR_NOT_OWNER);
    EXPECT_EQ(ms::ThreadCache::try_create(ms::Pool(), 0, keep), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(keep.get(), raw);
    ms::ThreadCache empty;
    EXPECT_FALSE(empty);
    expect_error(MCSHM_ERR_NULL_ARGUMENT, [&] { (void)empty.alloc(64); });
    EXPECT_EQ(empty.try_free(4096), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(empty.try_flush(), MCSHM_ERR_NULL_ARGUMENT);
}

TEST(ThreadCacheWrapper, WrongThreadMoveAndOutlivingThePool) {
    const std::string name = unique_name();
    ms::Pool pool = ms::Pool::create(name, small());
    ms::ThreadCache cache = ms::ThreadCache::create(pool);
    const uint64_t a = cache.alloc(128);

    int thrown = -1, rc_alloc = -1, rc_free = -1, rc_flush = -1;
    std::thread([&] {
        try {
            (void)cache.alloc(64);
        } catch (const ms::Error& e) {
            thrown = e.code();
        }
        uint64_t off = 0;
        rc_alloc = cache.try_alloc(64, 0, &off);
        rc_free = cache.try_free(a);
        rc_flush = cache.try_flush();
    }).join();
    EXPECT_EQ(thrown, MCSHM_ERR_WRONG_THREAD);
    EXPECT_EQ(rc_alloc, MCSHM_ERR_WRONG_THREAD);
    EXPECT_EQ(rc_free, MCSHM_ERR_WRONG_THREAD);
    EXPECT_EQ(rc_flush, MCSHM_ERR_WRONG_THREAD);
    EXPECT_EQ(pool.stats().live, 1u);

    // Moves keep the C handle (and its thread).
    mcshm_cache* raw = cache.get();
    ms::ThreadCache moved(std::move(cache));
    EXPECT_FALSE(cache);  // NOLINT(bugprone-use-after-move)
    EXPECT_EQ(moved.get(), raw);
    moved.free(a);
    EXPECT_EQ(moved.alloc(128), a);
    ms::ThreadCache other = ms::ThreadCache::create(pool);
    const uint64_t b = other.alloc(64);
    other.free(b);  // kept
    EXPECT_EQ(pool.stats().live, 2u);
    other = std::move(moved);  // destroys other's cache (b goes back), takes moved's
    EXPECT_EQ(pool.stats().live, 1u);
    other.free(a);

    // Destroyed on another thread; the pool object may go first.
    ms::ThreadCache last = ms::ThreadCache::create(pool);
    const uint64_t c = last.alloc(256);
    std::thread([t = std::move(other)]() mutable { t.reset(); }).join();
    EXPECT_EQ(pool.stats().live, 1u);
    pool.reset();
    EXPECT_TRUE(shm_exists(name)) << "the cache keeps the pool";
    last.free(c);
    EXPECT_EQ(last.alloc(256), c);
    last.reset();
    EXPECT_FALSE(shm_exists(name)) << "released with its last cache";
    last.reset();  // idempotent
}

// ---- Table -----------------------------------------------------------------

TEST(TableWrapper, SegmentsResolveLocate) {
    ms::Table t = ms::Table::create();
    ASSERT_TRUE(t);
    alignas(4096) static unsigned char seg0[8192], seg1[4096];
    t.insert_segment(0, seg0, sizeof seg0);
    t.insert_segment(7, seg1, sizeof seg1);
    EXPECT_EQ(t.resolve(0, 0, 8192), seg0);
    EXPECT_EQ(t.resolve(7, 4095, 1), seg1 + 4095);
    ms::Location l = t.locate(seg0 + 8191);
    EXPECT_EQ(l.segment, 0u);
    EXPECT_EQ(l.offset, 8191u);
    l = t.locate(seg1);
    EXPECT_EQ(l.segment, 7u);
    EXPECT_EQ(l.offset, 0u);

    expect_error(MCSHM_ERR_OUT_OF_BOUNDS, [&] { (void)t.resolve(7, 4095, 2); });
    expect_error(MCSHM_ERR_OUT_OF_BOUNDS, [&] { (void)t.resolve(7, UINT64_MAX, 2); });
    expect_error(MCSHM_ERR_NOT_FOUND, [&] { (void)t.resolve(1, 0, 1); });
    expect_error(MCSHM_ERR_ALREADY_EXISTS, [&] { t.insert_segment(7, seg1, sizeof seg1); });
    int x = 0;
    expect_error(MCSHM_ERR_NOT_FOUND, [&] { (void)t.locate(&x); });
    ms::TableConfig cfg;
    expect_error(MCSHM_ERR_INVALID_ARGUMENT,
                 [&] { t.insert_segment(cfg.max_segments, seg1, sizeof seg1); });

    t.remove_segment(7);
    expect_error(MCSHM_ERR_NOT_FOUND, [&] { (void)t.resolve(7, 0, 1); });
    expect_error(MCSHM_ERR_NOT_FOUND, [&] { t.remove_segment(7); });
    void* p = nullptr;
    EXPECT_EQ(t.try_resolve(7, 0, 1, &p), MCSHM_ERR_NOT_FOUND);
    EXPECT_EQ(t.try_resolve(0, 10, 1, &p), MCSHM_OK);
    EXPECT_EQ(p, seg0 + 10);
    ms::Location loc;
    EXPECT_EQ(t.try_locate(seg0 + 3, &loc), MCSHM_OK);
    EXPECT_EQ(loc.offset, 3u);
    EXPECT_EQ(t.try_locate(seg0, nullptr), MCSHM_ERR_NULL_ARGUMENT);
}

TEST(TableWrapper, RemoteRangesRelocate) {
    ms::Table t = ms::Table::create();
    alignas(4096) static unsigned char local[4 * 4096];
    const uint64_t r0 = 0x7f1234560000ull;   // peer 1, 2 pages
    const uint64_t r1 = r0 + 0x10000;        // peer 1, 1 page, after a gap
    t.insert_remote(1, r0, 8192, local);
    t.insert_remote(1, r1, 4096, local + 8192);
    t.insert_remote(2, r0, 4096, local + 12288);  // same address, other peer

    EXPECT_EQ(t.relocate(1, r0, 1), local);
    EXPECT_EQ(t.relocate(1, r0 + 8191, 1), local + 8191);
    EXPECT_EQ(t.relocate(1, r0, 8192), local);
    EXPECT_EQ(t.relocate(1, r1 + 4095, 1), local + 8192 + 4095);
    EXPECT_EQ(t.relocate(2, r0 + 5, 10), local + 12288 + 5);

    expect_error(MCSHM_ERR_OUT_OF_BOUNDS, [&] { (void)t.relocate(1, r0 + 8191, 2); });
    expect_error(MCSHM_ERR_NOT_FOUND, [&] { (void)t.relocate(1, r0 + 8192, 1); });
    expect_error(MCSHM_ERR_NOT_FOUND, [&] { (void)t.relocate(1, r0 - 1, 1); });
    expect_error(MCSHM_ERR_NOT_FOUND, [&] { (void)t.relocate(3, r0, 1); });
    // Overlap with a range of the same peer.
    expect_error(MCSHM_ERR_ALREADY_EXISTS, [&] { t.insert_remote(1, r0 + 4096, 4096, local); });
    // Unaligned bases.
    expect_error(MCSHM_ERR_INVALID_ARGUMENT, [&] { t.insert_remote(1, r0 + 0x20001, 4096, local); });
    expect_error(MCSHM_ERR_INVALID_ARGUMENT,
                 [&] { t.insert_remote(1, r0 + 0x20000, 4096, local + 1); });

    t.remove_remote(1, r0);
    expect_error(MCSHM_ERR_NOT_FOUND, [&] { (void)t.relocate(1, r0, 1); });
    EXPECT_EQ(t.relocate(1, r1, 1), local + 8192);
    expect_error(MCSHM_ERR_NOT_FOUND, [&] { t.remove_remote(1, r0); });
    void* p = nullptr;
    EXPECT_EQ(t.try_relocate(2, r0, 1, &p), MCSHM_OK);
    EXPECT_EQ(p, local + 12288);
    EXPECT_EQ(t.try_insert_remote(1, r0, 4096, local), MCSHM_OK);  // reinsert after removal
    EXPECT_EQ(t.try_remove_remote(1, r0), MCSHM_OK);
}

TEST(TableWrapper, RelocateBatch) {
    static_assert(std::is_same_v<decltype(std::declval<const ms::Table&>().relocate_batch(
                                     0, nullptr, 0, nullptr)),
                                 std::size_t>);
    static_assert(noexcept(std::declval<const ms::Table&>().try_relocate_batch(0, nullptr, 0,
                                                                               nullptr, nullptr)));
    ms::Table t = ms::Table::create();
    alignas(4096) static unsigned char local[3 * 4096];
    const uint64_t r0 = 0x7f2234560000ull;  // peer 1, 2 pages
    const uint64_t r1 = r0 + 0x10000;       // peer 1, 1 page, after a gap
    t.insert_remote(1, r0, 8192, local);
    t.insert_remote(1, r1, 4096, local + 8192);

    const std::vector<mcshm_span> spans = {
        {r0, 1}, {r0 + 8191, 1}, {r1 + 4095, 1}, {r0, 8192}, {r1, 0}};
    void* const unwritten = &t;  // any pointer no answer can equal
    std::vector<void*> out(spans.size() + 1, unwritten);
    EXPECT_EQ(t.relocate_batch(1, spans.data(), spans.size(), out.data()), spans.size());
    const std::vector<void*> want = {local, local + 8191, local + 8192 + 4095, local,
                                     local + 8192};
    for (std::size_t i = 0; i < spans.size(); ++i) {
        EXPECT_EQ(out[i], want[i]) << i;
        EXPECT_EQ(out[i], t.relocate(1, spans[i].addr, spans[i].len)) << i;
    }
    EXPECT_EQ(out.back(), unwritten);
    EXPECT_EQ(t.relocate_batch(1, nullptr, 0, nullptr), 0u);

    // try_: the code, and in `done` how far it got.
    std::size_t done = 99;
    std::fill(out.begin(), out.end(), unwritten);
    EXPECT_EQ(t.try_relocate_batch(1, spans.data(), spans.size(), out.data(), &done), MCSHM_OK);
    EXPECT_EQ(done, spans.size());
    EXPECT_EQ(out[2], want[2]);

    // A failure at index 2: the code, the index, out written below it only.
    const std::vector<mcshm_span> bad = {{r0 + 5, 10}, {r1, 4096}, {r0 + 8191, 2}, {r0, 1}};
    std::fill(out.begin(), out.end(), unwritten);
    done = 99;
    EXPECT_EQ(t.try_relocate_batch(1, bad.data(), bad.size(), out.data(), &done),
              MCSHM_ERR_OUT_OF_BOUNDS);
    EXPECT_EQ(done, 2u);
    EXPECT_EQ(out[0], local + 5);
    EXPECT_EQ(out[1], local + 8192);
    EXPECT_EQ(out[2], unwritten);
    EXPECT_EQ(out[3], unwritten);
    std::fill(out.begin(), out.end(), unwritten);
    EXPECT_EQ(t.try_relocate_batch(1, bad.data(), bad.size(), out.data(), nullptr),
              MCSHM_ERR_OUT_OF_BOUNDS);
    EXPECT_EQ(out[1], local + 8192);
    EXPECT_EQ(out[2], unwritten);

    // The throwing form: the same code and the same partial output.
    std::fill(out.begin(), out.end(), unwritten);
    expect_error(MCSHM_ERR_OUT_OF_BOUNDS,
                 [&] { (void)t.relocate_batch(1, bad.data(), bad.size(), out.data()); });
    EXPECT_EQ(out[0], local + 5);
    EXPECT_EQ(out[1], local + 8192);
    EXPECT_EQ(out[2], unwritten);
    try {
        (void)t.relocate_batch(1, bad.data(), bad.size(), out.data());
        ADD_FAILURE() << "no exception";
    } catch (const ms::Error& e) {
        EXPECT_NE(std::string(e.what()).find("mcshm_table_relocate_batch"), std::string::npos)
            << e.what();
    }
    expect_error(MCSHM_ERR_NOT_FOUND,
                 [&] { (void)t.relocate_batch(2, spans.data(), spans.size(), out.data()); });
    ms::TableConfig cfg;
    expect_error(MCSHM_ERR_INVALID_ARGUMENT, [&] {
        (void)t.relocate_batch(cfg.max_peers, spans.data(), spans.size(), out.data());
    });
    expect_error(MCSHM_ERR_NULL_ARGUMENT,
                 [&] { (void)t.relocate_batch(1, spans.data(), spans.size(), nullptr); });
    std::vector<mcshm_span> same = spans;  // out over the spans themselves
    expect_error(MCSHM_ERR_INVALID_ARGUMENT, [&] {
        (void)t.relocate_batch(1, same.data(), same.size(), reinterpret_cast<void**>(same.data()));
    });

    // An empty handle.
    ms::Table empty;
    done = 99;
    EXPECT_EQ(empty.try_relocate_batch(1, spans.data(), spans.size(), out.data(), &done),
              MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(done, 0u);
    expect_error(MCSHM_ERR_NULL_ARGUMENT,
                 [&] { (void)empty.relocate_batch(1, spans.data(), spans.size(), out.data()); });
}

TEST(TableWrapper, ManyRangesStayExact) {
    ms::TableConfig cfg;
    ms::Table t = ms::Table::create(cfg);
    alignas(4096) static unsigned char local[4096];
    const uint64_t base = 0x500000000000ull;
    constexpr int kN = 1000;
    for (int i = 0; i < kN; ++i)  // ranges of 1..3 pages, each followed by a 1-page gap
        t.insert_remote(4, base + uint64_t(i) * 4 * 4096, uint64_t(1 + i % 3) * 4096, local);
    for (int i = 0; i < kN; ++i) {
        const uint64_t r = base + uint64_t(i) * 4 * 4096;
        const uint64_t len = uint64_t(1 + i % 3) * 4096;
        void* p = nullptr;
        ASSERT_EQ(t.try_relocate(4, r + len - 1, 1, &p), MCSHM_OK) << i;
        EXPECT_EQ(p, local + len - 1);
        EXPECT_EQ(t.try_relocate(4, r + len, 1, &p), MCSHM_ERR_NOT_FOUND) << i;
    }
}

TEST(TableWrapper, MoveAndReset) {
    ms::Table a = ms::Table::create();
    mcshm_table* raw = a.get();
    ms::Table b = std::move(a);
    EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move)
    EXPECT_EQ(b.get(), raw);
    b.reset();
    EXPECT_FALSE(b);
    ms::Table c;
    EXPECT_EQ(ms::Table::try_create(ms::TableConfig{}, c), MCSHM_OK);
    EXPECT_TRUE(c);
}

}  // namespace
