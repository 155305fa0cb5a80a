// Tests of the C ABI (include/mooncake_shm.h) as a C caller sees it.
#include "mooncake_shm.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace {

using mcshm_test::unique_name;

const bool kLeakCheck = mcshm_test::install_leak_check();

constexpr uint64_t kCap = 1 << 20;  // 1 MiB pools keep the tests cheap

/// Creates an owner pool of `cap` bytes named `name`; asserts success.
mcshm_pool* make_pool(const std::string& name, uint64_t cap = kCap) {
    mcshm_pool_options o;
    mcshm_pool_options_init(&o);
    o.capacity = cap;
    mcshm_pool* p = nullptr;
    int rc = mcshm_pool_create(name.c_str(), &o, &p);
    EXPECT_EQ(rc, MCSHM_OK) << mcshm_strerror(rc);
    return p;
}

struct PoolGuard {
    mcshm_pool* p;
    ~PoolGuard() { mcshm_pool_destroy(p); }
};

TEST(CApi, OptionsAndConfigDefaults) {
    mcshm_pool_options o;
    std::memset(&o, 0xAB, sizeof o);
    mcshm_pool_options_init(&o);
    EXPECT_EQ(o.capacity, 64u << 20);
    EXPECT_EQ(o.mode, 0600u);
    EXPECT_EQ(o.flags, 0u);
    EXPECT_EQ(o.dir, nullptr);
    EXPECT_EQ(o.max_blocks, 65536u);
    EXPECT_EQ(o.shards, 1u);
    mcshm_pool_options_init(nullptr);  // no-op

    mcshm_table_config c;
    std::memset(&c, 0, sizeof c);
    mcshm_table_config_init(&c);
    EXPECT_GT(c.max_segments, 0u);
    EXPECT_GT(c.max_peers, 0u);
    EXPECT_GT(c.max_ranges, 0u);
    EXPECT_GT(c.max_nodes, 0u);
    mcshm_table_config_init(nullptr);
}

TEST(CApi, CreateAllocFreePtrOffsetStats) {
    const std::string name = unique_name();
    mcshm_pool* pool = make_pool(name);
    ASSERT_NE(pool, nullptr);
    PoolGuard g{pool};
    EXPECT_TRUE(mcshm_test::shm_exists(name));

    void* base = nullptr;
    uint64_t len = 0;
    ASSERT_EQ(mcshm_pool_mapping(pool, &base, &len), MCSHM_OK);
    ASSERT_NE(base, nullptr);
    EXPECT_GE(len, kCap);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(base) % 4096, 0u);

    mcshm_pool_stats st;
    ASSERT_EQ(mcshm_pool_stats_get(pool, &st), MCSHM_OK);
    EXPECT_EQ(st.capacity, kCap);
    EXPECT_EQ(st.in_use, 0u);
    EXPECT_EQ(st.live, 0u);
    EXPECT_EQ(st.free, kCap);

    uint64_t a = 0, b = 0;
    ASSERT_EQ(mcshm_pool_alloc(pool, 4096, 0, &a), MCSHM_OK);
    ASSERT_EQ(mcshm_pool_alloc(pool, 1000, 64, &b), MCSHM_OK);
    EXPECT_NE(a, b);
    EXPECT_EQ(b % 64, 0u);
    EXPECT_TRUE(b >= a + 4096 || a >= b + 1000) << "blocks overlap";
    EXPECT_LE(a + 4096, len);
    EXPECT_LE(b + 1000, len);

    void* pa = nullptr;
    ASSERT_EQ(mcshm_pool_ptr(pool, a, 4096, &pa), MCSHM_OK);
    EXPECT_EQ(pa, static_cast<char*>(base) + a);
    std::memset(pa, 0x5A, 4096);  // the memory is writable
    uint64_t back = 0;
    ASSERT_EQ(mcshm_pool_offset_of(pool, static_cast<char*>(pa) + 17, &back), MCSHM_OK);
    EXPECT_EQ(back, a + 17);

    ASSERT_EQ(mcshm_pool_stats_get(pool, &st), MCSHM_OK);
    EXPECT_EQ(st.live, 2u);
    EXPECT_GE(st.in_use, 4096u + 1000u);
    EXPECT_EQ(st.in_use + st.free, st.capacity);
    EXPECT_LE(st.largest_free, st.free);

    EXPECT_EQ(mcshm_pool_free(pool, a), MCSHM_OK);
    EXPECT_EQ(mcshm_pool_free(pool, b), MCSHM_OK);
    ASSERT_EQ(mcshm_pool_stats_get(pool, &st), MCSHM_OK);
    EXPECT_EQ(st.live, 0u);
    EXPECT_EQ(st.in_use, 0u);
    EXPECT_EQ(st.largest_free, kCap);  // coalesced back into one block

    mcshm_pool_destroy(pool);
    g.p = nullptr;
    EXPECT_FALSE(mcshm_test::shm_exists(name)) << "owner destroy must unlink";
    mcshm_pool_destroy(nullptr);  // no-op
}

TEST(CApi, NullArguments) {
    const std::string name = unique_name();
    mcshm_pool* out = nullptr;
    EXPECT_EQ(mcshm_pool_create(nullptr, nullptr, &out), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(mcshm_pool_create(name.c_str(), nullptr, nullptr), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_FALSE(mcshm_test::shm_exists(name)) << "a failed create must not create";
    EXPECT_EQ(mcshm_pool_open(nullptr, nullptr, &out), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(mcshm_pool_open(name.c_str(), nullptr, nullptr), MCSHM_ERR_NULL_ARGUMENT);

    uint64_t off = 0;
    void* p = nullptr;
    mcshm_pool_stats st;
    EXPECT_EQ(mcshm_pool_alloc(nullptr, 64, 0, &off), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(mcshm_pool_free(nullptr, 0), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(mcshm_pool_ptr(nullptr, 0, 1, &p), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(mcshm_pool_offset_of(nullptr, &off, &off), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(mcshm_pool_mapping(nullptr, &p, &off), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(mcshm_pool_stats_get(nullptr, &st), MCSHM_ERR_NULL_ARGUMENT);

    mcshm_table* t = nullptr;
    uint32_t id = 0;
    EXPECT_EQ(mcshm_table_create(nullptr, nullptr), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(mcshm_table_insert_segment(nullptr, 0, &off, 8), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(mcshm_table_remove_segment(nullptr, 0), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(mcshm_table_resolve(nullptr, 0, 0, 1, &p), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(mcshm_table_locate(nullptr, &off, &id, &off), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(mcshm_table_insert_remote(nullptr, 0, 4096, 4096, &off), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(mcshm_table_remove_remote(nullptr, 0, 4096), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(mcshm_table_relocate(nullptr, 0, 4096, 1, &p), MCSHM_ERR_NULL_ARGUMENT);
    mcshm_table_destroy(t);  // NULL: no-op

    // NULL out-parameters on a live pool.
    mcshm_pool* pool = make_pool(unique_name());
    ASSERT_NE(pool, nullptr);
    PoolGuard g{pool};
    EXPECT_EQ(mcshm_pool_alloc(pool, 64, 0, nullptr), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(mcshm_pool_ptr(pool, 4096, 1, nullptr), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(mcshm_pool_mapping(pool, nullptr, &off), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(mcshm_pool_mapping(pool, &p, nullptr), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(mcshm_pool_stats_get(pool, nullptr), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(mcshm_pool_stats_get(pool, &st), MCSHM_OK);
    EXPECT_EQ(st.live, 0u) << "the failed alloc must not have allocated";
}

TEST(CApi, MisalignedOutParameterIsInvalidArgument) {
    mcshm_pool* pool = make_pool(unique_name());
    ASSERT_NE(pool, nullptr);
    PoolGuard g{pool};
    alignas(8) unsigned char buf[32];
    auto* mis = reinterpret_cast<uint64_t*>(buf + 1);
    EXPECT_EQ(mcshm_pool_alloc(pool, 64, 0, mis), MCSHM_ERR_INVALID_ARGUMENT);
}

TEST(CApi, AllocErrors) {
    mcshm_pool* pool = make_pool(unique_name());
    ASSERT_NE(pool, nullptr);
    PoolGuard g{pool};
    uint64_t off = 0;
    EXPECT_EQ(mcshm_pool_alloc(pool, 0, 0, &off), MCSHM_ERR_ZERO_SIZE);
    EXPECT_EQ(mcshm_pool_alloc(pool, 64, 3, &off), MCSHM_ERR_BAD_ALIGNMENT);
    EXPECT_EQ(mcshm_pool_alloc(pool, 64, 48, &off), MCSHM_ERR_BAD_ALIGNMENT);
    EXPECT_EQ(mcshm_pool_alloc(pool, 64, 8192, &off), MCSHM_ERR_BAD_ALIGNMENT);
    EXPECT_EQ(mcshm_pool_alloc(pool, kCap + 1, 0, &off), MCSHM_ERR_TOO_LARGE);
    EXPECT_EQ(mcshm_pool_alloc(pool, UINT64_MAX, 0, &off), MCSHM_ERR_TOO_LARGE);
    for (uint64_t a : {1u, 2u, 8u, 64u, 256u, 4096u}) {
        ASSERT_EQ(mcshm_pool_alloc(pool, 100, a, &off), MCSHM_OK) << "align " << a;
        EXPECT_EQ(off % a, 0u);
        EXPECT_EQ(mcshm_pool_free(pool, off), MCSHM_OK);
    }

    // Exhausted: two blocks of 3/4 of the pool cannot both fit.
    uint64_t big = 0;
    ASSERT_EQ(mcshm_pool_alloc(pool, kCap / 4 * 3, 0, &big), MCSHM_OK);
    EXPECT_EQ(mcshm_pool_alloc(pool, kCap / 4 * 3, 0, &off), MCSHM_ERR_EXHAUSTED);
    // The whole capacity fits once free again.
    ASSERT_EQ(mcshm_pool_free(pool, big), MCSHM_OK);
    ASSERT_EQ(mcshm_pool_alloc(pool, kCap, 0, &big), MCSHM_OK);
    EXPECT_EQ(mcshm_pool_free(pool, big), MCSHM_OK);
}

TEST(CApi, FreeErrors) {
    mcshm_pool* pool = make_pool(unique_name());
    ASSERT_NE(pool, nullptr);
    PoolGuard g{pool};
    uint64_t a = 0, b = 0;
    ASSERT_EQ(mcshm_pool_alloc(pool, 4096, 0, &a), MCSHM_OK);
    ASSERT_EQ(mcshm_pool_alloc(pool, 4096, 0, &b), MCSHM_OK);
    // Inside a live block, not its start.
    EXPECT_EQ(mcshm_pool_free(pool, a + 64), MCSHM_ERR_INVALID_OFFSET);
    EXPECT_EQ(mcshm_pool_free(pool, a), MCSHM_OK);
    EXPECT_EQ(mcshm_pool_free(pool, a), MCSHM_ERR_DOUBLE_FREE);
    EXPECT_EQ(mcshm_pool_free(pool, b), MCSHM_OK);
    mcshm_pool_stats st;
    ASSERT_EQ(mcshm_pool_stats_get(pool, &st), MCSHM_OK);
    EXPECT_EQ(st.live, 0u);
}

TEST(CApi, MetadataFull) {
    mcshm_pool_options o;
    mcshm_pool_options_init(&o);
    o.capacity = kCap;
    o.max_blocks = 8;
    mcshm_pool* pool = nullptr;
    ASSERT_EQ(mcshm_pool_create(unique_name().c_str(), &o, &pool), MCSHM_OK);
    PoolGuard g{pool};
    int rc = MCSHM_OK;
    int n = 0;
    uint64_t off = 0;
    while (n < 100000 && (rc = mcshm_pool_alloc(pool, 64, 0, &off)) == MCSHM_OK) ++n;
    EXPECT_EQ(rc, MCSHM_ERR_METADATA_FULL) << mcshm_strerror(rc) << " after " << n;
    EXPECT_LT(n, 100000);
}

TEST(CApi, ShardedPoolThreadsAndLimits) {
    const std::string bad = unique_name();
    mcshm_pool_options o;
    mcshm_pool_options_init(&o);
    o.capacity = 4 * kCap;
    o.shards = 17;  // more than MAX_SHARDS
    mcshm_pool* pool = nullptr;
    EXPECT_EQ(mcshm_pool_create(bad.c_str(), &o, &pool), MCSHM_ERR_INVALID_ARGUMENT);
    EXPECT_FALSE(mcshm_test::shm_exists(bad));

    o.shards = 4;
    ASSERT_EQ(mcshm_pool_create(unique_name().c_str(), &o, &pool), MCSHM_OK);
    PoolGuard g{pool};
    // A request no shard can hold fails although the pool could.
    uint64_t off = 0;
    EXPECT_EQ(mcshm_pool_alloc(pool, 2 * kCap, 0, &off), MCSHM_ERR_EXHAUSTED);
    EXPECT_EQ(mcshm_pool_alloc(pool, kCap, 0, &off), MCSHM_OK);
    EXPECT_EQ(mcshm_pool_free(pool, off), MCSHM_OK);

    // Four threads allocate at once; each frees the blocks of the next one.
    constexpr int kThreads = 4, kPer = 200;
    std::vector<std::vector<uint64_t>> offs(kThreads);
    std::vector<std::thread> ts;
    std::atomic<int> failures{0};
    for (int t = 0; t < kThreads; ++t) {
        ts.emplace_back([&, t] {
            for (int i = 0; i < kPer; ++i) {
                uint64_t o2 = 0;
                if (mcshm_pool_alloc(pool, 1000 + 16 * i, 64, &o2) != MCSHM_OK) ++failures;
                else offs[t].push_back(o2);
            }
        });
    }
    for (auto& th : ts) th.join();
    ts.clear();
    EXPECT_EQ(failures.load(), 0);
    std::set<uint64_t> all;
    for (auto& v : offs) all.insert(v.begin(), v.end());
    EXPECT_EQ(all.size(), size_t(kThreads * kPer));
    for (int t = 0; t < kThreads; ++t) {
        ts.emplace_back([&, t] {
            for (uint64_t o2 : offs[(t + 1) % kThreads])
                if (mcshm_pool_free(pool, o2) != MCSHM_OK) ++failures;
        });
    }
    for (auto& th : ts) th.join();
    EXPECT_EQ(failures.load(), 0);
    mcshm_pool_stats st;
    ASSERT_EQ(mcshm_pool_stats_get(pool, &st), MCSHM_OK);
    EXPECT_EQ(st.live, 0u);
    EXPECT_EQ(st.in_use, 0u);
    EXPECT_EQ(st.largest_free, kCap);
}

// Several shards have their own quick path through the C ABI (a freed block
// kept whole in its shard and handed back); it must behave as the full path.
TEST(CApi, ShardedPoolQuickPathAndErrors) {
    mcshm_pool_options o;
    mcshm_pool_options_init(&o);
    o.capacity = 4 * kCap;  // two shards of 2 MiB
    o.shards = 2;
    mcshm_pool* pool = nullptr;
    ASSERT_EQ(mcshm_pool_create(unique_name().c_str(), &o, &pool), MCSHM_OK);
    PoolGuard g{pool};

    // The same thread frees and allocates the same size: the same block.
    uint64_t a = 0, again = 0;
    ASSERT_EQ(mcshm_pool_alloc(pool, 4096, 0, &a), MCSHM_OK);
    ASSERT_EQ(mcshm_pool_free(pool, a), MCSHM_OK);
    ASSERT_EQ(mcshm_pool_alloc(pool, 4096, 64, &again), MCSHM_OK);
    EXPECT_EQ(again, a);
    EXPECT_EQ(mcshm_pool_free(pool, a + 64), MCSHM_ERR_INVALID_OFFSET);
    EXPECT_EQ(mcshm_pool_free(pool, a), MCSHM_OK);
    EXPECT_EQ(mcshm_pool_free(pool, a), MCSHM_ERR_DOUBLE_FREE);
    EXPECT_EQ(mcshm_pool_free(pool, 0), MCSHM_ERR_INVALID_OFFSET);
    EXPECT_EQ(mcshm_pool_free(pool, UINT64_MAX), MCSHM_ERR_INVALID_OFFSET);
    // Bad requests get their errors, not a quick block.
    uint64_t off = 0;
    EXPECT_EQ(mcshm_pool_alloc(pool, 0, 0, &off), MCSHM_ERR_ZERO_SIZE);
    EXPECT_EQ(mcshm_pool_alloc(pool, 4096, 3, &off), MCSHM_ERR_BAD_ALIGNMENT);

    // Fill the pool with 1 MiB blocks: once this thread's shard is full the
    // rest come from the other one (the 4 KiB block above, carved from the
    // end of its shard, leaves room for one 1 MiB block there), and a block
    // freed in the other shard comes back from there.
    std::vector<uint64_t> blocks;
    while (mcshm_pool_alloc(pool, kCap, 0, &off) == MCSHM_OK) blocks.push_back(off);
    ASSERT_GE(blocks.size(), 3u);
    const uint64_t other = blocks.back();
    EXPECT_EQ(mcshm_pool_free(pool, other), MCSHM_OK);
    EXPECT_EQ(mcshm_pool_free(pool, other), MCSHM_ERR_DOUBLE_FREE);
    ASSERT_EQ(mcshm_pool_alloc(pool, kCap, 0, &off), MCSHM_OK);
    EXPECT_EQ(off, other);
    for (uint64_t b : blocks) EXPECT_EQ(mcshm_pool_free(pool, b), MCSHM_OK);
    mcshm_pool_stats st;
    ASSERT_EQ(mcshm_pool_stats_get(pool, &st), MCSHM_OK);
    EXPECT_EQ(st.live, 0u);
    EXPECT_EQ(st.in_use, 0u);
    EXPECT_EQ(st.largest_free, 2 * kCap);
}

TEST(CApi, PtrAndOffsetOfBounds) {
    mcshm_pool* pool = make_pool(unique_name());
    ASSERT_NE(pool, nullptr);
    PoolGuard g{pool};
    void* base = nullptr;
    uint64_t len = 0;
    ASSERT_EQ(mcshm_pool_mapping(pool, &base, &len), MCSHM_OK);
    void* p = nullptr;
    EXPECT_EQ(mcshm_pool_ptr(pool, len - 1, 1, &p), MCSHM_OK);
    EXPECT_EQ(p, static_cast<char*>(base) + len - 1);
    EXPECT_EQ(mcshm_pool_ptr(pool, len - 1, 2, &p), MCSHM_ERR_OUT_OF_BOUNDS);
    EXPECT_EQ(mcshm_pool_ptr(pool, len, 1, &p), MCSHM_ERR_OUT_OF_BOUNDS);
    EXPECT_EQ(mcshm_pool_ptr(pool, UINT64_MAX - 1, 16, &p), MCSHM_ERR_OUT_OF_BOUNDS);
    EXPECT_EQ(mcshm_pool_ptr(pool, 4096, UINT64_MAX, &p), MCSHM_ERR_OUT_OF_BOUNDS);
    uint64_t off = 0;
    int local = 0;
    EXPECT_EQ(mcshm_pool_offset_of(pool, &local, &off), MCSHM_ERR_OUT_OF_BOUNDS);
    EXPECT_EQ(mcshm_pool_offset_of(pool, static_cast<char*>(base) + len, &off),
              MCSHM_ERR_OUT_OF_BOUNDS);
}

TEST(CApi, NamesAndExistence) {
    const std::string name = unique_name();
    mcshm_pool* out = nullptr;
    EXPECT_EQ(mcshm_pool_open(name.c_str(), nullptr, &out), MCSHM_ERR_NOT_FOUND);
    EXPECT_EQ(out, nullptr);

    mcshm_pool* pool = make_pool(name);
    ASSERT_NE(pool, nullptr);
    PoolGuard g{pool};
    mcshm_pool* dup = nullptr;
    EXPECT_EQ(mcshm_pool_create(name.c_str(), nullptr, &dup), MCSHM_ERR_ALREADY_EXISTS);
    EXPECT_EQ(dup, nullptr);
    // The collision did not disturb the existing pool.
    uint64_t off = 0;
    EXPECT_EQ(mcshm_pool_alloc(pool, 64, 0, &off), MCSHM_OK);

    for (const std::string& bad : {std::string(""), std::string("a/b"),
                                   mcshm_test::run_prefix() + std::string(300, 'x')}) {
        EXPECT_EQ(mcshm_pool_create(bad.c_str(), nullptr, &out), MCSHM_ERR_INVALID_NAME)
            << "'" << bad << "'";
        EXPECT_EQ(mcshm_pool_open(bad.c_str(), nullptr, &out), MCSHM_ERR_INVALID_NAME)
            << "'" << bad << "'";
    }
}

TEST(CApi, UnknownFlagIsInvalidArgument) {
    const std::string name = unique_name();
    mcshm_pool_options o;
    mcshm_pool_options_init(&o);
    o.capacity = kCap;
    o.flags = 0x80;
    mcshm_pool* out = nullptr;
    EXPECT_EQ(mcshm_pool_create(name.c_str(), &o, &out), MCSHM_ERR_INVALID_ARGUMENT);
    EXPECT_FALSE(mcshm_test::shm_exists(name));
}

TEST(CApi, NotOwner) {
    const std::string name = unique_name();
    mcshm_pool* pool = make_pool(name);
    ASSERT_NE(pool, nullptr);
    PoolGuard g{pool};
    uint64_t off = 0;
    ASSERT_EQ(mcshm_pool_alloc(pool, 128, 0, &off), MCSHM_OK);

    mcshm_pool* peer = nullptr;
    ASSERT_EQ(mcshm_pool_open(name.c_str(), nullptr, &peer), MCSHM_OK);
    PoolGuard gp{peer};
    uint64_t o2 = 0;
    EXPECT_EQ(mcshm_pool_alloc(peer, 64, 0, &o2), MCSHM_ERR_NOT_OWNER);
    EXPECT_EQ(mcshm_pool_free(peer, off), MCSHM_ERR_NOT_OWNER);
    // A peer maps the same bytes at its own address.
    void *po = nullptr, *pp = nullptr;
    ASSERT_EQ(mcshm_pool_ptr(pool, off, 128, &po), MCSHM_OK);
    ASSERT_EQ(mcshm_pool_ptr(peer, off, 128, &pp), MCSHM_OK);
    EXPECT_NE(po, pp);
    std::memcpy(po, "hello", 6);
    EXPECT_STREQ(static_cast<const char*>(pp), "hello");
    mcshm_pool_stats st;
    ASSERT_EQ(mcshm_pool_stats_get(peer, &st), MCSHM_OK);
    EXPECT_EQ(st.live, 0u);  // a peer's stats are zero

    // Destroying the peer does not unlink.
    mcshm_pool_destroy(peer);
    gp.p = nullptr;
    EXPECT_TRUE(mcshm_test::shm_exists(name));
}

TEST(CApi, OpenRejectsForeignObjects) {
    // Header layout of src/pool.rs (PoolHeader): magic u64 "MCSHMPL1" at 0,
    // version u32 at 8; an all-zero header is a pool still being created.
    const std::string tiny = unique_name("raw");
    ASSERT_TRUE(mcshm_test::make_raw_shm(tiny, 16));
    const std::string zeros = unique_name("raw");
    ASSERT_TRUE(mcshm_test::make_raw_shm(zeros, 3 * 4096));
    const std::string junk = unique_name("raw");
    ASSERT_TRUE(mcshm_test::make_raw_shm(junk, 3 * 4096, [](unsigned char* h) {
        std::memset(h, 0xEE, 4096);
    }));
    const std::string future = unique_name("raw");
    ASSERT_TRUE(mcshm_test::make_raw_shm(future, 3 * 4096, [](unsigned char* h) {
        std::memcpy(h, "MCSHMPL1", 8);
        const uint32_t v = 999;
        std::memcpy(h + 8, &v, 4);
    }));
    mcshm_pool* out = nullptr;
    EXPECT_EQ(mcshm_pool_open(tiny.c_str(), nullptr, &out), MCSHM_ERR_TRUNCATED);
    EXPECT_EQ(mcshm_pool_open(zeros.c_str(), nullptr, &out), MCSHM_ERR_NOT_READY);
    EXPECT_EQ(mcshm_pool_open(junk.c_str(), nullptr, &out), MCSHM_ERR_BAD_MAGIC);
    EXPECT_EQ(mcshm_pool_open(future.c_str(), nullptr, &out), MCSHM_ERR_VERSION_MISMATCH);
    EXPECT_EQ(out, nullptr);
    for (const auto& n : {tiny, zeros, junk, future}) ::shm_unlink(("/" + n).c_str());
}

TEST(CApi, OsErrorCarriesErrno) {
    // A directory that is a regular file: creating the pool's file fails in a syscall.
    mcshm_pool_options o;
    mcshm_pool_options_init(&o);
    o.capacity = kCap;
    o.dir = "/proc/self/status";
    mcshm_pool* out = nullptr;
    int rc = mcshm_pool_create(unique_name().c_str(), &o, &out);
    ASSERT_EQ(rc, MCSHM_ERR_OS) << mcshm_strerror(rc);
    EXPECT_NE(mcshm_last_os_error(), 0);
}

TEST(CApi, StrerrorCoversEveryCode) {
    std::set<std::string> seen;
    const std::string unknown = mcshm_strerror(9999);
    for (int c = MCSHM_OK; c <= MCSHM_ERR_WRONG_THREAD; ++c) {
        const char* s = mcshm_strerror(c);
        ASSERT_NE(s, nullptr) << c;
        EXPECT_GT(std::strlen(s), 0u) << c;
        EXPECT_NE(unknown, s) << "code " << c << " has no message";
        EXPECT_TRUE(seen.insert(s).second) << "code " << c << " shares message '" << s << "'";
    }
    EXPECT_NE(mcshm_strerror(-1), nullptr);
    EXPECT_NE(mcshm_strerror(MCSHM_ERR_WRONG_THREAD + 1), nullptr);
    EXPECT_EQ(unknown, mcshm_strerror(MCSHM_ERR_WRONG_THREAD + 1))
        << "MCSHM_ERR_WRONG_THREAD is the last code";
}

TEST(CApi, CrossProcessThroughOpen) {
    const std::string name = unique_name("xp");
    mcshm_pool* pool = make_pool(name);
    ASSERT_NE(pool, nullptr);
    PoolGuard g{pool};
    constexpr uint64_t kLen = 64 * 1024;
    uint64_t off = 0;
    ASSERT_EQ(mcshm_pool_alloc(pool, 2 * kLen, 4096, &off), MCSHM_OK);
    void* p = nullptr;
    ASSERT_EQ(mcshm_pool_ptr(pool, off, 2 * kLen, &p), MCSHM_OK);
    mcshm_test::fill_pattern(p, kLen, 7);
    std::memset(static_cast<char*>(p) + kLen, 0, kLen);

    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        // Child: only C calls, no gtest; report through the exit status.
        mcshm_pool* peer = nullptr;
        if (mcshm_pool_open(name.c_str(), nullptr, &peer) != MCSHM_OK) _exit(10);
        void* q = nullptr;
        if (mcshm_pool_ptr(peer, off, 2 * kLen, &q) != MCSHM_OK) _exit(11);
        if (q == p) {
            // Possible but unlikely (fork keeps the parent's mapping at p too); not an error.
        }
        if (!mcshm_test::check_pattern(q, kLen, 7)) _exit(12);
        uint64_t tmp = 0;
        if (mcshm_pool_alloc(peer, 64, 0, &tmp) != MCSHM_ERR_NOT_OWNER) _exit(13);
        mcshm_test::fill_pattern(static_cast<char*>(q) + kLen, kLen, 99);
        mcshm_pool_destroy(peer);
        _exit(0);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0) << "child failed at step " << WEXITSTATUS(status);
    EXPECT_TRUE(mcshm_test::check_pattern(static_cast<char*>(p) + kLen, kLen, 99));
    EXPECT_TRUE(mcshm_test::shm_exists(name)) << "a peer must not unlink";
    EXPECT_EQ(mcshm_pool_free(pool, off), MCSHM_OK);
}

// ---- thread caches through C ----------------------------------------------

struct CacheGuard {
    mcshm_cache* c;
    ~CacheGuard() { mcshm_cache_destroy(c); }
};

/// An owner pool and one thread cache of it; destroys the cache, then the pool.
struct PoolWithCache {
    mcshm_pool* pool = nullptr;
    mcshm_cache* cache = nullptr;

    PoolWithCache() = default;
    PoolWithCache(const PoolWithCache&) = delete;
    PoolWithCache& operator=(const PoolWithCache&) = delete;
    ~PoolWithCache() {
        mcshm_cache_destroy(cache);
        mcshm_pool_destroy(pool);
    }

    /// Creates a fresh pool (kCap bytes) and a cache of it keeping at most
    /// `max_bytes` (0: the default); asserts success. Call through ASSERT_NO_FATAL_FAILURE.
    void create(uint64_t max_bytes) {
        pool = make_pool(unique_name());
        ASSERT_NE(pool, nullptr);
        ASSERT_EQ(mcshm_cache_create(pool, max_bytes, &cache), MCSHM_OK);
        ASSERT_NE(cache, nullptr);
    }

    /// Destroys the cache now, before the pool.
    void destroy_cache() {
        mcshm_cache_destroy(cache);
        cache = nullptr;
    }
};

/// Live blocks of `pool` (stats), or UINT64_MAX if the call fails.
uint64_t live_blocks(const mcshm_pool* pool) {
    mcshm_pool_stats st;
    if (mcshm_pool_stats_get(pool, &st) != MCSHM_OK) return UINT64_MAX;
    return st.live;
}

TEST(CApi, ThreadCacheAllocFreeReuse) {
    PoolWithCache pc;
    ASSERT_NO_FATAL_FAILURE(pc.create(0));
    mcshm_pool* pool = pc.pool;
    mcshm_cache* c = pc.cache;

    uint64_t a = 0, b = 0, again = 0;
    ASSERT_EQ(mcshm_cache_alloc(c, 4096, 0, &a), MCSHM_OK);
    ASSERT_EQ(mcshm_cache_alloc(c, 1000, 64, &b), MCSHM_OK);
    EXPECT_EQ(b % 64, 0u);
    EXPECT_TRUE(b >= a + 4096 || a >= b + 1000) << "blocks overlap";
    void* pa = nullptr;
    ASSERT_EQ(mcshm_pool_ptr(pool, a, 4096, &pa), MCSHM_OK);
    std::memset(pa, 0x5A, 4096);  // the memory is writable
    EXPECT_EQ(live_blocks(pool), 2u);

    // A freed block is kept (still live for the pool) and comes back for the same size.
    ASSERT_EQ(mcshm_cache_free(c, a), MCSHM_OK);
    EXPECT_EQ(live_blocks(pool), 2u) << "a kept block counts as live";
    ASSERT_EQ(mcshm_cache_alloc(c, 4096, 0, &again), MCSHM_OK);
    EXPECT_EQ(again, a);
    ASSERT_EQ(mcshm_cache_free(c, b), MCSHM_OK);
    ASSERT_EQ(mcshm_cache_alloc(c, 1000, 64, &again), MCSHM_OK);
    EXPECT_EQ(again, b);

    // Errors as mcshm_pool_alloc/free.
    uint64_t off = 0;
    EXPECT_EQ(mcshm_cache_alloc(c, 0, 0, &off), MCSHM_ERR_ZERO_SIZE);
    EXPECT_EQ(mcshm_cache_alloc(c, 64, 3, &off), MCSHM_ERR_BAD_ALIGNMENT);
    EXPECT_EQ(mcshm_cache_alloc(c, 64, 8192, &off), MCSHM_ERR_BAD_ALIGNMENT);
    EXPECT_EQ(mcshm_cache_alloc(c, kCap + 1, 0, &off), MCSHM_ERR_TOO_LARGE);
    EXPECT_EQ(mcshm_cache_alloc(c, UINT64_MAX, 0, &off), MCSHM_ERR_TOO_LARGE);
    EXPECT_EQ(mcshm_cache_free(c, a + 64), MCSHM_ERR_INVALID_OFFSET);
    EXPECT_EQ(mcshm_cache_free(c, UINT64_MAX), MCSHM_ERR_INVALID_OFFSET);

    EXPECT_EQ(mcshm_cache_free(c, a), MCSHM_OK);
    EXPECT_EQ(mcshm_cache_free(c, b), MCSHM_OK);
    EXPECT_EQ(live_blocks(pool), 2u);
    EXPECT_EQ(mcshm_cache_flush(c), MCSHM_OK);
    EXPECT_EQ(live_blocks(pool), 0u) << "flush gives the kept blocks back";
    EXPECT_EQ(mcshm_cache_flush(c), MCSHM_OK);  // nothing kept: still fine
}

TEST(CApi, ThreadCacheKeptBlocksNeverExhaustTheCache) {
    PoolWithCache pc;
    ASSERT_NO_FATAL_FAILURE(pc.create(0));
    mcshm_pool* pool = pc.pool;
    mcshm_cache* c = pc.cache;
    uint64_t half = 0, whole = 0;
    ASSERT_EQ(mcshm_cache_alloc(c, kCap / 2, 0, &half), MCSHM_OK);
    ASSERT_EQ(mcshm_cache_free(c, half), MCSHM_OK);  // kept
    // The pool itself cannot serve the whole capacity while the cache keeps half...
    uint64_t off = 0;
    EXPECT_EQ(mcshm_pool_alloc(pool, kCap, 0, &off), MCSHM_ERR_EXHAUSTED);
    // ...but the cache gives its kept blocks back rather than fail.
    ASSERT_EQ(mcshm_cache_alloc(c, kCap, 0, &whole), MCSHM_OK);
    EXPECT_EQ(live_blocks(pool), 1u);
    EXPECT_EQ(mcshm_cache_free(c, whole), MCSHM_OK);
    EXPECT_EQ(mcshm_cache_flush(c), MCSHM_OK);
    mcshm_pool_stats st;
    ASSERT_EQ(mcshm_pool_stats_get(pool, &st), MCSHM_OK);
    EXPECT_EQ(st.live, 0u);
    EXPECT_EQ(st.in_use, 0u);
    EXPECT_EQ(st.largest_free, kCap);
}

TEST(CApi, ThreadCacheByteBudget) {
    PoolWithCache pc;
    ASSERT_NO_FATAL_FAILURE(pc.create(8192));
    mcshm_pool* pool = pc.pool;
    mcshm_cache* c = pc.cache;
    uint64_t small = 0, big = 0;
    ASSERT_EQ(mcshm_cache_alloc(c, 4096, 0, &small), MCSHM_OK);
    ASSERT_EQ(mcshm_cache_alloc(c, 64 * 1024, 0, &big), MCSHM_OK);
    EXPECT_EQ(live_blocks(pool), 2u);
    ASSERT_EQ(mcshm_cache_free(c, big), MCSHM_OK);
    EXPECT_EQ(live_blocks(pool), 1u) << "a block over max_bytes goes back to the pool";
    ASSERT_EQ(mcshm_cache_free(c, small), MCSHM_OK);
    EXPECT_EQ(live_blocks(pool), 1u) << "a block within max_bytes is kept";
    // Either way a second free is a double free.
    EXPECT_EQ(mcshm_cache_free(c, big), MCSHM_ERR_DOUBLE_FREE);
    EXPECT_EQ(mcshm_cache_free(c, small), MCSHM_ERR_DOUBLE_FREE);
    EXPECT_EQ(mcshm_pool_free(pool, big), MCSHM_ERR_DOUBLE_FREE);
    EXPECT_EQ(live_blocks(pool), 1u);
    pc.destroy_cache();
    EXPECT_EQ(live_blocks(pool), 0u);
}

TEST(CApi, ThreadCacheDoubleFree) {
    PoolWithCache pc;
    ASSERT_NO_FATAL_FAILURE(pc.create(0));
    mcshm_pool* pool = pc.pool;
    mcshm_cache* c = pc.cache;
    uint64_t a = 0;
    ASSERT_EQ(mcshm_cache_alloc(c, 256, 0, &a), MCSHM_OK);
    EXPECT_EQ(mcshm_cache_free(c, a), MCSHM_OK);
    EXPECT_EQ(mcshm_cache_free(c, a), MCSHM_ERR_DOUBLE_FREE);
    EXPECT_EQ(mcshm_cache_free(c, a), MCSHM_ERR_DOUBLE_FREE);
    // The failed frees changed nothing: the block comes back once, then is new.
    uint64_t x = 0, y = 0;
    ASSERT_EQ(mcshm_cache_alloc(c, 256, 0, &x), MCSHM_OK);
    EXPECT_EQ(x, a);
    ASSERT_EQ(mcshm_cache_alloc(c, 256, 0, &y), MCSHM_OK);
    EXPECT_NE(y, a);
    EXPECT_EQ(mcshm_cache_free(c, x), MCSHM_OK);
    EXPECT_EQ(mcshm_cache_free(c, y), MCSHM_OK);
    EXPECT_EQ(mcshm_cache_flush(c), MCSHM_OK);
    EXPECT_EQ(live_blocks(pool), 0u);
    // After the flush the block is free in the pool: a double free there too.
    EXPECT_EQ(mcshm_cache_free(c, a), MCSHM_ERR_DOUBLE_FREE);
}

// Hundreds of blocks: most of their entries in the cache's offset table sit
// away from their home position, which mcshm_cache_free's fast path does not
// probe (its slow path does). Every one is still kept, found again, and
// caught on a second free.
TEST(CApi, ThreadCacheKeepsBlocksWhateverTheirTablePosition) {
    PoolWithCache pc;
    ASSERT_NO_FATAL_FAILURE(pc.create(0));
    mcshm_pool* pool = pc.pool;
    mcshm_cache* c = pc.cache;
    const std::size_t n = 480;
    std::vector<uint64_t> offs(n);
    for (auto& o : offs) ASSERT_EQ(mcshm_cache_alloc(c, 512, 0, &o), MCSHM_OK);
    for (uint64_t o : offs) ASSERT_EQ(mcshm_cache_free(c, o), MCSHM_OK);
    EXPECT_EQ(live_blocks(pool), n) << "every block kept by the cache";
    for (uint64_t o : offs) EXPECT_EQ(mcshm_cache_free(c, o), MCSHM_ERR_DOUBLE_FREE);
    std::set<uint64_t> before(offs.begin(), offs.end()), after;
    for (std::size_t k = 0; k < n; ++k) {
        uint64_t o = 0;
        ASSERT_EQ(mcshm_cache_alloc(c, 512, 0, &o), MCSHM_OK);
        after.insert(o);
    }
    EXPECT_EQ(after, before) << "the kept blocks come back, and only they";
    EXPECT_EQ(live_blocks(pool), n);
    for (uint64_t o : after) ASSERT_EQ(mcshm_cache_free(c, o), MCSHM_OK);
    EXPECT_EQ(mcshm_cache_flush(c), MCSHM_OK);
    EXPECT_EQ(live_blocks(pool), 0u);
}

TEST(CApi, ThreadCachePoolFreeOfCacheBlockIsCacheOwned) {
    PoolWithCache pc;
    ASSERT_NO_FATAL_FAILURE(pc.create(0));
    mcshm_pool* pool = pc.pool;
    mcshm_cache* c = pc.cache;
    uint64_t a = 0, kept = 0;
    ASSERT_EQ(mcshm_cache_alloc(c, 4096, 0, &a), MCSHM_OK);
    ASSERT_EQ(mcshm_cache_alloc(c, 512, 0, &kept), MCSHM_OK);
    ASSERT_EQ(mcshm_cache_free(c, kept), MCSHM_OK);
    void* pa = nullptr;
    ASSERT_EQ(mcshm_pool_ptr(pool, a, 4096, &pa), MCSHM_OK);
    mcshm_test::fill_pattern(pa, 4096, 3);

    // Handed out or kept: the pool refuses it and changes nothing.
    EXPECT_EQ(mcshm_pool_free(pool, a), MCSHM_ERR_CACHE_OWNED);
    EXPECT_EQ(mcshm_pool_free(pool, kept), MCSHM_ERR_CACHE_OWNED);
    EXPECT_EQ(live_blocks(pool), 2u);
    uint64_t other = 0;
    ASSERT_EQ(mcshm_pool_alloc(pool, 4096, 0, &other), MCSHM_OK);
    EXPECT_NE(other, a) << "a refused free must not free";
    EXPECT_EQ(mcshm_pool_free(pool, other), MCSHM_OK);

    // Still the cache's: usable, and freed through it.
    EXPECT_TRUE(mcshm_test::check_pattern(pa, 4096, 3));
    std::memset(pa, 0, 4096);
    uint64_t again = 0;
    ASSERT_EQ(mcshm_cache_alloc(c, 512, 0, &again), MCSHM_OK);
    EXPECT_EQ(again, kept);
    EXPECT_EQ(mcshm_cache_free(c, a), MCSHM_OK);
    EXPECT_EQ(mcshm_cache_free(c, kept), MCSHM_OK);
    EXPECT_EQ(mcshm_cache_flush(c), MCSHM_OK);
    EXPECT_EQ(live_blocks(pool), 0u);
}

TEST(CApi, ThreadCacheFreesOrdinaryPoolBlock) {
    PoolWithCache pc;
    ASSERT_NO_FATAL_FAILURE(pc.create(0));
    mcshm_pool* pool = pc.pool;
    mcshm_cache* c = pc.cache;
    uint64_t b = 0;
    ASSERT_EQ(mcshm_pool_alloc(pool, 2048, 0, &b), MCSHM_OK);
    EXPECT_EQ(live_blocks(pool), 1u);
    EXPECT_EQ(mcshm_cache_free(c, b), MCSHM_OK);
    EXPECT_EQ(live_blocks(pool), 0u) << "passed on to the pool, not kept";
    EXPECT_EQ(mcshm_cache_free(c, b), MCSHM_ERR_DOUBLE_FREE);
    EXPECT_EQ(mcshm_pool_free(pool, b), MCSHM_ERR_DOUBLE_FREE);
}

TEST(CApi, ThreadCacheBlockOfAnotherCacheIsCacheOwned) {
    PoolWithCache pc;
    ASSERT_NO_FATAL_FAILURE(pc.create(0));
    mcshm_pool* pool = pc.pool;
    mcshm_cache *ca = pc.cache, *cb = nullptr;
    ASSERT_EQ(mcshm_cache_create(pool, 0, &cb), MCSHM_OK);
    CacheGuard gb{cb};
    // Two size classes (a cache's blocks are at least 512 bytes).
    uint64_t a = 0, kept = 0;
    ASSERT_EQ(mcshm_cache_alloc(ca, 2048, 0, &a), MCSHM_OK);
    ASSERT_EQ(mcshm_cache_alloc(ca, 1000, 0, &kept), MCSHM_OK);
    ASSERT_EQ(mcshm_cache_free(ca, kept), MCSHM_OK);
    EXPECT_EQ(mcshm_cache_free(cb, a), MCSHM_ERR_CACHE_OWNED);
    EXPECT_EQ(mcshm_cache_free(cb, kept), MCSHM_ERR_CACHE_OWNED);
    EXPECT_EQ(live_blocks(pool), 2u);
    EXPECT_EQ(mcshm_cache_free(ca, a), MCSHM_OK);
    uint64_t again = 0;
    ASSERT_EQ(mcshm_cache_alloc(ca, 1000, 0, &again), MCSHM_OK);
    EXPECT_EQ(again, kept);
    EXPECT_EQ(mcshm_cache_free(ca, kept), MCSHM_OK);
    // Once cache A is gone, its blocks are plain pool blocks again.
    pc.destroy_cache();
    EXPECT_EQ(live_blocks(pool), 0u);
}

TEST(CApi, ThreadCacheWrongThread) {
    PoolWithCache pc;
    ASSERT_NO_FATAL_FAILURE(pc.create(0));
    mcshm_pool* pool = pc.pool;
    mcshm_cache* c = pc.cache;
    uint64_t a = 0, kept = 0, plain = 0;
    ASSERT_EQ(mcshm_cache_alloc(c, 256, 0, &a), MCSHM_OK);
    ASSERT_EQ(mcshm_cache_alloc(c, 512, 0, &kept), MCSHM_OK);
    ASSERT_EQ(mcshm_cache_free(c, kept), MCSHM_OK);
    ASSERT_EQ(mcshm_pool_alloc(pool, 1024, 0, &plain), MCSHM_OK);

    // Another thread: every call fails and changes nothing, even those the
    // cache could serve from its kept blocks.
    int rc_alloc = -1, rc_alloc_kept = -1, rc_free = -1, rc_free_kept = -1, rc_free_plain = -1,
        rc_flush = -1, rc_bad = -1;
    uint64_t off = 12345;
    std::thread([&] {
        rc_alloc = mcshm_cache_alloc(c, 256, 0, &off);
        rc_alloc_kept = mcshm_cache_alloc(c, 512, 0, &off);
        rc_free = mcshm_cache_free(c, a);
        rc_free_kept = mcshm_cache_free(c, kept);
        rc_free_plain = mcshm_cache_free(c, plain);
        rc_flush = mcshm_cache_flush(c);
        rc_bad = mcshm_cache_alloc(c, 0, 0, &off);
    }).join();
    EXPECT_EQ(rc_alloc, MCSHM_ERR_WRONG_THREAD);
    EXPECT_EQ(rc_alloc_kept, MCSHM_ERR_WRONG_THREAD);
    EXPECT_EQ(rc_free, MCSHM_ERR_WRONG_THREAD);
    EXPECT_EQ(rc_free_kept, MCSHM_ERR_WRONG_THREAD);
    EXPECT_EQ(rc_free_plain, MCSHM_ERR_WRONG_THREAD);
    EXPECT_EQ(rc_flush, MCSHM_ERR_WRONG_THREAD);
    EXPECT_EQ(rc_bad, MCSHM_ERR_WRONG_THREAD);
    EXPECT_EQ(off, 12345u) << "a refused alloc must not write its out-parameter";
    EXPECT_EQ(live_blocks(pool), 3u);

    // The creating thread still has its cache as it was.
    uint64_t again = 0;
    ASSERT_EQ(mcshm_cache_alloc(c, 512, 0, &again), MCSHM_OK);
    EXPECT_EQ(again, kept) << "the other thread's flush must not have flushed";
    EXPECT_EQ(mcshm_cache_free(c, plain), MCSHM_OK);
    EXPECT_EQ(live_blocks(pool), 2u);

    // A cache created on another thread is that thread's.
    mcshm_cache* theirs = nullptr;
    uint64_t tb = 0;
    int rc_create = -1, rc_talloc = -1;
    std::thread([&] {
        rc_create = mcshm_cache_create(pool, 0, &theirs);
        if (rc_create == MCSHM_OK) rc_talloc = mcshm_cache_alloc(theirs, 128, 0, &tb);
    }).join();
    ASSERT_EQ(rc_create, MCSHM_OK);
    ASSERT_EQ(rc_talloc, MCSHM_OK);
    EXPECT_EQ(mcshm_cache_alloc(theirs, 128, 0, &off), MCSHM_ERR_WRONG_THREAD);
    EXPECT_EQ(mcshm_cache_free(theirs, tb), MCSHM_ERR_WRONG_THREAD);
    EXPECT_EQ(mcshm_cache_flush(theirs), MCSHM_ERR_WRONG_THREAD);
    EXPECT_EQ(mcshm_pool_free(pool, tb), MCSHM_ERR_CACHE_OWNED);
    mcshm_cache_destroy(theirs);  // from a thread other than its creator
    EXPECT_EQ(mcshm_pool_free(pool, tb), MCSHM_OK);

    // Destroying from another thread works; its handed-out blocks become plain.
    std::thread([&pc] { pc.destroy_cache(); }).join();
    EXPECT_EQ(mcshm_pool_free(pool, a), MCSHM_OK);
    EXPECT_EQ(mcshm_pool_free(pool, kept), MCSHM_OK);
    EXPECT_EQ(live_blocks(pool), 0u);
}

TEST(CApi, ThreadCacheNullAndBadArguments) {
    mcshm_cache* out = nullptr;
    EXPECT_EQ(mcshm_cache_create(nullptr, 0, &out), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(out, nullptr);
    uint64_t off = 0;
    EXPECT_EQ(mcshm_cache_alloc(nullptr, 64, 0, &off), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(mcshm_cache_free(nullptr, 4096), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(mcshm_cache_flush(nullptr), MCSHM_ERR_NULL_ARGUMENT);
    mcshm_cache_destroy(nullptr);  // no-op

    mcshm_pool* pool = make_pool(unique_name());
    ASSERT_NE(pool, nullptr);
    PoolGuard g{pool};
    EXPECT_EQ(mcshm_cache_create(pool, 0, nullptr), MCSHM_ERR_NULL_ARGUMENT);
    alignas(8) unsigned char buf[32];
    EXPECT_EQ(mcshm_cache_create(pool, 0, reinterpret_cast<mcshm_cache**>(buf + 1)),
              MCSHM_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(live_blocks(pool), 0u);

    mcshm_cache* c = nullptr;
    ASSERT_EQ(mcshm_cache_create(pool, 0, &c), MCSHM_OK);
    CacheGuard cg{c};
    EXPECT_EQ(mcshm_cache_alloc(c, 64, 0, nullptr), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(mcshm_cache_alloc(c, 64, 0, reinterpret_cast<uint64_t*>(buf + 1)),
              MCSHM_ERR_INVALID_ARGUMENT);
    // Also with a kept block that would serve the request.
    ASSERT_EQ(mcshm_cache_alloc(c, 64, 0, &off), MCSHM_OK);
    ASSERT_EQ(mcshm_cache_free(c, off), MCSHM_OK);
    EXPECT_EQ(mcshm_cache_alloc(c, 64, 0, nullptr), MCSHM_ERR_NULL_ARGUMENT);
    uint64_t again = 0;
    ASSERT_EQ(mcshm_cache_alloc(c, 64, 0, &again), MCSHM_OK);
    EXPECT_EQ(again, off) << "the failed alloc must not have taken the kept block";
    EXPECT_EQ(mcshm_cache_free(c, again), MCSHM_OK);
}

TEST(CApi, ThreadCacheOfPeerIsNotOwner) {
    const std::string name = unique_name();
    mcshm_pool* pool = make_pool(name);
    ASSERT_NE(pool, nullptr);
    PoolGuard g{pool};
    mcshm_pool* peer = nullptr;
    ASSERT_EQ(mcshm_pool_open(name.c_str(), nullptr, &peer), MCSHM_OK);
    PoolGuard gp{peer};
    mcshm_cache* c = nullptr;
    EXPECT_EQ(mcshm_cache_create(peer, 0, &c), MCSHM_ERR_NOT_OWNER);
    EXPECT_EQ(c, nullptr);
    // The failed create took no reference: destroying the peer only unmaps.
    mcshm_pool_destroy(peer);
    gp.p = nullptr;
    EXPECT_TRUE(mcshm_test::shm_exists(name));
    mcshm_pool_destroy(pool);
    g.p = nullptr;
    EXPECT_FALSE(mcshm_test::shm_exists(name));
}

TEST(CApi, ThreadCacheOutlivesPoolHandle) {
    const std::string name = unique_name();
    mcshm_pool* pool = make_pool(name);
    ASSERT_NE(pool, nullptr);
    void* base = nullptr;
    uint64_t len = 0;
    ASSERT_EQ(mcshm_pool_mapping(pool, &base, &len), MCSHM_OK);
    mcshm_cache *c1 = nullptr, *c2 = nullptr;
    ASSERT_EQ(mcshm_cache_create(pool, 0, &c1), MCSHM_OK);
    ASSERT_EQ(mcshm_cache_create(pool, 0, &c2), MCSHM_OK);
    uint64_t a = 0, kept = 0;
    ASSERT_EQ(mcshm_cache_alloc(c1, 4096, 0, &a), MCSHM_OK);
    ASSERT_EQ(mcshm_cache_alloc(c1, 512, 0, &kept), MCSHM_OK);
    ASSERT_EQ(mcshm_cache_free(c1, kept), MCSHM_OK);

    // Legal: the pool is really released only with its last cache.
    mcshm_pool_destroy(pool);
    EXPECT_TRUE(mcshm_test::shm_exists(name)) << "the caches keep the pool";

    mcshm_test::fill_pattern(static_cast<char*>(base) + a, 4096, 9);  // still mapped
    uint64_t again = 0, b = 0;
    ASSERT_EQ(mcshm_cache_alloc(c1, 512, 0, &again), MCSHM_OK);
    EXPECT_EQ(again, kept);
    ASSERT_EQ(mcshm_cache_alloc(c1, 8192, 0, &b), MCSHM_OK);
    EXPECT_LE(b + 8192, len);
    std::memset(static_cast<char*>(base) + b, 0x77, 8192);
    EXPECT_EQ(mcshm_cache_free(c1, b), MCSHM_OK);
    EXPECT_EQ(mcshm_cache_free(c2, a), MCSHM_ERR_CACHE_OWNED);
    EXPECT_EQ(mcshm_cache_free(c1, kept), MCSHM_OK);
    EXPECT_EQ(mcshm_cache_flush(c1), MCSHM_OK);
    EXPECT_TRUE(mcshm_test::check_pattern(static_cast<char*>(base) + a, 4096, 9));

    mcshm_cache_destroy(c1);  // `a` still handed out: dropped with the pool
    EXPECT_TRUE(mcshm_test::shm_exists(name)) << "c2 still keeps the pool";
    uint64_t c2b = 0;
    ASSERT_EQ(mcshm_cache_alloc(c2, 128, 0, &c2b), MCSHM_OK);
    EXPECT_EQ(mcshm_cache_free(c2, a), MCSHM_OK) << "a plain block now, passed to the pool";
    mcshm_cache_destroy(c2);
    EXPECT_FALSE(mcshm_test::shm_exists(name)) << "the last cache releases and unlinks";
}

TEST(CApi, ThreadCacheStatsAndDestroy) {
    PoolWithCache pc;
    ASSERT_NO_FATAL_FAILURE(pc.create(0));
    mcshm_pool* pool = pc.pool;
    mcshm_cache* c = pc.cache;
    uint64_t plain = 0;
    ASSERT_EQ(mcshm_pool_alloc(pool, 300, 0, &plain), MCSHM_OK);
    std::vector<uint64_t> out;
    for (uint64_t sz : {64u, 200u, 4096u, 10000u, 64u, 777u}) {
        uint64_t o = 0;
        ASSERT_EQ(mcshm_cache_alloc(c, sz, 0, &o), MCSHM_OK) << sz;
        out.push_back(o);
    }
    mcshm_pool_stats st;
    ASSERT_EQ(mcshm_pool_stats_get(pool, &st), MCSHM_OK);
    EXPECT_EQ(st.live, 7u);
    EXPECT_GE(st.in_use, 300u + 64u + 200u + 4096u + 10000u + 64u + 777u);
    EXPECT_EQ(st.in_use + st.free, st.capacity);

    // Three freed through the cache: kept, so still live and in use.
    for (int i = 0; i < 3; ++i) ASSERT_EQ(mcshm_cache_free(c, out[i]), MCSHM_OK);
    const uint64_t in_use_before = st.in_use;
    ASSERT_EQ(mcshm_pool_stats_get(pool, &st), MCSHM_OK);
    EXPECT_EQ(st.live, 7u);
    EXPECT_EQ(st.in_use, in_use_before);
    // After a flush only the handed-out ones (and the plain one).
    ASSERT_EQ(mcshm_cache_flush(c), MCSHM_OK);
    ASSERT_EQ(mcshm_pool_stats_get(pool, &st), MCSHM_OK);
    EXPECT_EQ(st.live, 4u);
    EXPECT_LT(st.in_use, in_use_before);

    // Keep one more, then destroy: kept blocks go back, handed-out ones stay live...
    ASSERT_EQ(mcshm_cache_free(c, out[3]), MCSHM_OK);
    EXPECT_EQ(live_blocks(pool), 4u);
    EXPECT_EQ(mcshm_pool_free(pool, out[4]), MCSHM_ERR_CACHE_OWNED);
    pc.destroy_cache();
    EXPECT_EQ(live_blocks(pool), 3u);
    // ...as ordinary pool blocks.
    EXPECT_EQ(mcshm_pool_free(pool, out[3]), MCSHM_ERR_DOUBLE_FREE);
    EXPECT_EQ(mcshm_pool_free(pool, out[4]), MCSHM_OK);
    EXPECT_EQ(mcshm_pool_free(pool, out[5]), MCSHM_OK);
    EXPECT_EQ(mcshm_pool_free(pool, plain), MCSHM_OK);
    ASSERT_EQ(mcshm_pool_stats_get(pool, &st), MCSHM_OK);
    EXPECT_EQ(st.live, 0u);
    EXPECT_EQ(st.in_use, 0u);
    EXPECT_EQ(st.largest_free, kCap);
}

// ---- table through C -------------------------------------------------------

struct TableGuard {
    mcshm_table* t;
    ~TableGuard() { mcshm_table_destroy(t); }
};

TEST(CApi, TableBasics) {
    mcshm_table* t = nullptr;
    ASSERT_EQ(mcshm_table_create(nullptr, &t), MCSHM_OK);
    TableGuard g{t};
    alignas(4096) static unsigned char seg[3 * 4096];
    ASSERT_EQ(mcshm_table_insert_segment(t, 3, seg, sizeof seg), MCSHM_OK);
    void* p = nullptr;
    ASSERT_EQ(mcshm_table_resolve(t, 3, 100, 10, &p), MCSHM_OK);
    EXPECT_EQ(p, seg + 100);
    uint32_t id = 0;
    uint64_t off = 0;
    ASSERT_EQ(mcshm_table_locate(t, seg + 4097, &id, &off), MCSHM_OK);
    EXPECT_EQ(id, 3u);
    EXPECT_EQ(off, 4097u);
    EXPECT_EQ(mcshm_table_resolve(t, 3, sizeof seg - 1, 2, &p), MCSHM_ERR_OUT_OF_BOUNDS);
    EXPECT_EQ(mcshm_table_resolve(t, 4, 0, 1, &p), MCSHM_ERR_NOT_FOUND);
    EXPECT_EQ(mcshm_table_insert_segment(t, 3, seg, sizeof seg), MCSHM_ERR_ALREADY_EXISTS);
    EXPECT_EQ(mcshm_table_remove_segment(t, 3), MCSHM_OK);
    EXPECT_EQ(mcshm_table_remove_segment(t, 3), MCSHM_ERR_NOT_FOUND);

    ASSERT_EQ(mcshm_table_insert_remote(t, 1, 0x7f0000000000ull, 8192, seg), MCSHM_OK);
    ASSERT_EQ(mcshm_table_relocate(t, 1, 0x7f0000000000ull + 8191, 1, &p), MCSHM_OK);
    EXPECT_EQ(p, seg + 8191);
    EXPECT_EQ(mcshm_table_relocate(t, 1, 0x7f0000000000ull + 8191, 2, &p),
              MCSHM_ERR_OUT_OF_BOUNDS);
    EXPECT_EQ(mcshm_table_relocate(t, 2, 0x7f0000000000ull, 1, &p), MCSHM_ERR_NOT_FOUND);
    EXPECT_EQ(mcshm_table_insert_remote(t, 1, 0x7f0000000000ull + 1, 4096, seg + 4096),
              MCSHM_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(mcshm_table_remove_remote(t, 1, 0x7f0000000000ull), MCSHM_OK);
    EXPECT_EQ(mcshm_table_relocate(t, 1, 0x7f0000000000ull, 1, &p), MCSHM_ERR_NOT_FOUND);
}

// ---- mcshm_table_relocate_batch ---------------------------------------------

/// Peer 0's ranges for the batch tests: two 3-page ranges back to back
/// (the table's granule becomes 8 KiB, so the window [kBatchB + 0x2000,
/// kBatchB + 0x4000) is shared by both and answered through their records)
/// and one 64 MiB range (direct entries). The local bases are only
/// recorded, never dereferenced.
constexpr uint64_t kBatchB = 0x7f0000100000ull;
constexpr uint64_t kBatchBig = 0x7f0040000000ull;
constexpr uint64_t kBatchBigLen = 64ull << 20;
struct BatchRange {
    uint64_t remote;
    uint64_t len;
    uintptr_t local;
};
constexpr BatchRange kBatchRanges[] = {
    {kBatchB, 0x3000, 0x200000000000u},
    {kBatchB + 0x3000, 0x3000, 0x210000000000u},
    {kBatchBig, kBatchBigLen, 0x220000000000u},
};
constexpr uint32_t kBatchPeers = 2;  // peer 0 has the ranges, peer 1 none

void* const kUnwritten = reinterpret_cast<void*>(uintptr_t{0xdeadbeefcafef00dull});

/// A table with kBatchRanges registered for peer 0; asserts success.
mcshm_table* make_batch_table() {
    mcshm_table_config c;
    mcshm_table_config_init(&c);
    c.max_peers = kBatchPeers;
    mcshm_table* t = nullptr;
    EXPECT_EQ(mcshm_table_create(&c, &t), MCSHM_OK);
    for (const BatchRange& r : kBatchRanges)
        EXPECT_EQ(mcshm_table_insert_remote(t, 0, r.remote, r.len,
                                            reinterpret_cast<void*>(r.local)),
                  MCSHM_OK);
    return t;
}

/// The batch tests' table (make_batch_table), destroyed after each test.
class TableRelocateBatch : public ::testing::Test {
protected:
    void SetUp() override { ASSERT_NE(t = make_batch_table(), nullptr); }
    void TearDown() override { mcshm_table_destroy(t); }
    mcshm_table* t = nullptr;
};

/// The local pointer of peer 0's address `addr` by kBatchRanges (nullptr if none).
void* batch_local_of(uint64_t addr) {
    for (const BatchRange& r : kBatchRanges)
        if (addr >= r.remote && addr - r.remote < r.len)
            return reinterpret_cast<void*>(r.local + (addr - r.remote));
    return nullptr;
}

/// Runs the batch over `spans` on peer 0 and checks it against single calls:
/// it must stop at the first span whose single call fails (`want_stop`,
/// spans.size() if none), with that call's code (`want_rc`), `out` written
/// below it and untouched from it, and `*out_done` the stop index. The same
/// again with `out_done` NULL.
void check_batch_against_singles(const mcshm_table* t, const std::vector<mcshm_span>& spans,
                                 size_t want_stop, int want_rc) {
    const size_t n = spans.size();
    size_t stop = n;
    int stop_rc = MCSHM_OK;
    std::vector<void*> single(n, kUnwritten);
    for (size_t i = 0; i < n; ++i) {
        const int rc = mcshm_table_relocate(t, 0, spans[i].addr, spans[i].len, &single[i]);
        if (rc != MCSHM_OK) {
            stop = i;
            stop_rc = rc;
            break;
        }
        EXPECT_EQ(single[i], batch_local_of(spans[i].addr)) << "single call, span " << i;
    }
    ASSERT_EQ(stop, want_stop) << "single calls";
    ASSERT_EQ(stop_rc, want_rc) << "single calls";

    for (bool with_done : {true, false}) {
        SCOPED_TRACE(with_done ? "out_done given" : "out_done NULL");
        size_t done = 12345;
        std::vector<void*> out(n + 1, kUnwritten);  // one more: nothing past n is written
        const int rc = mcshm_table_relocate_batch(t, 0, spans.data(), n, out.data(),
                                                  with_done ? &done : nullptr);
        EXPECT_EQ(rc, want_rc) << mcshm_strerror(rc);
        EXPECT_EQ(done, with_done ? want_stop : 12345u);
        for (size_t i = 0; i <= n; ++i) {
            if (i < want_stop)
                EXPECT_EQ(out[i], single[i]) << "span " << i;
            else
                EXPECT_EQ(out[i], kUnwritten) << "span " << i << " must be untouched";
        }
    }
}

TEST_F(TableRelocateBatch, MatchesSingleCalls) {
    const std::vector<mcshm_span> mixed = {
        {kBatchBig + 0x10, 16},              // direct entry
        {kBatchB + 0x2fff, 1},               // shared window: record of the first range
        {kBatchB + 0x3000, 0x3000},          // shared window: all of the second range
        {kBatchBig + kBatchBigLen - 1, 1},   // last byte of the big range
        {kBatchB, 0x3000},                   // direct window, access runs past it
        {kBatchB + 0x5fff, 0},               // len 0 inside a direct window
        {kBatchBig + 0x2000, 0},             // len 0 at a window start
        {kBatchBig, kBatchBigLen},           // the whole big range
        {kBatchB + 0x1000, 0x1000},          // direct, first range
        {kBatchBig + 0x1fff, 2},             // crosses a window of the big range
        {kBatchBig + 0x10, 16},              // the first span again
    };
    check_batch_against_singles(t, mixed, mixed.size(), MCSHM_OK);

    // A longer batch over all three ranges: every span stays inside its range.
    std::vector<mcshm_span> many;
    for (uint64_t i = 0; i < 500; ++i) {
        const BatchRange& r = kBatchRanges[i % 3];
        const uint64_t off = (i * 0x12345679u) % r.len;
        const uint64_t len = std::min<uint64_t>(r.len - off, (i * 0x377) % 0x5000);
        many.push_back({r.remote + off, len});
    }
    check_batch_against_singles(t, many, many.size(), MCSHM_OK);

    // Peer 1 is valid but has no ranges: NOT_FOUND at the first span.
    void* out[2] = {kUnwritten, kUnwritten};
    size_t done = 12345;
    EXPECT_EQ(mcshm_table_relocate_batch(t, 1, mixed.data(), 2, out, &done), MCSHM_ERR_NOT_FOUND);
    EXPECT_EQ(done, 0u);
    for (void* o : out) EXPECT_EQ(o, kUnwritten);
}

TEST_F(TableRelocateBatch, StopsAtTheFirstFailure) {
    const mcshm_span ok0{kBatchBig + 0x10, 16}, ok1{kBatchB + 0x2fff, 1},
        ok2{kBatchB + 0x3000, 0x3000}, ok3{kBatchBig, 1};
    // OUT_OF_BOUNDS at index 2, through a shared window's record...
    check_batch_against_singles(t, {ok0, ok1, {kBatchB + 0x2fff, 2}, ok2, ok3}, 2,
                                MCSHM_ERR_OUT_OF_BOUNDS);
    // ...and past the end of the big range (a direct entry's range).
    check_batch_against_singles(t, {ok0, ok1, {kBatchBig + kBatchBigLen - 1, 2}, ok2, ok3}, 2,
                                MCSHM_ERR_OUT_OF_BOUNDS);
    // NOT_FOUND: the page after the second range, a gap, an address of 2^48 or more.
    check_batch_against_singles(t, {ok0, {kBatchB + 0x6000, 1}, ok2}, 1, MCSHM_ERR_NOT_FOUND);
    check_batch_against_singles(t, {ok0, ok3, ok1, {kBatchB - 1, 1}}, 3, MCSHM_ERR_NOT_FOUND);
    check_batch_against_singles(t, {{(1ull << 48) | kBatchBig, 0}, ok0}, 0, MCSHM_ERR_NOT_FOUND);
    // The last span fails: everything before it is written.
    check_batch_against_singles(t, {ok3, ok2, ok1, ok0, {kBatchBig + kBatchBigLen, 0}}, 4,
                                MCSHM_ERR_NOT_FOUND);
}

TEST_F(TableRelocateBatch, EmptyAndNullArguments) {
    const mcshm_span spans[2] = {{kBatchB, 1}, {kBatchBig, 1}};
    void* out[2] = {kUnwritten, kUnwritten};
    size_t done = 12345;

    // n == 0: NULL arrays are fine, nothing is translated.
    EXPECT_EQ(mcshm_table_relocate_batch(t, 0, nullptr, 0, nullptr, &done), MCSHM_OK);
    EXPECT_EQ(done, 0u);
    done = 12345;
    EXPECT_EQ(mcshm_table_relocate_batch(t, 0, spans, 0, out, &done), MCSHM_OK);
    EXPECT_EQ(done, 0u);
    EXPECT_EQ(mcshm_table_relocate_batch(t, 0, nullptr, 0, nullptr, nullptr), MCSHM_OK);

    // NULL table, with or without accesses.
    done = 12345;
    EXPECT_EQ(mcshm_table_relocate_batch(nullptr, 0, spans, 2, out, &done),
              MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(done, 0u);
    done = 12345;
    EXPECT_EQ(mcshm_table_relocate_batch(nullptr, 0, nullptr, 0, nullptr, &done),
              MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(done, 0u);

    // A NULL array with n > 0.
    done = 12345;
    EXPECT_EQ(mcshm_table_relocate_batch(t, 0, nullptr, 2, out, &done), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(done, 0u);
    done = 12345;
    EXPECT_EQ(mcshm_table_relocate_batch(t, 0, spans, 2, nullptr, &done), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(done, 0u);
    EXPECT_EQ(mcshm_table_relocate_batch(t, 0, spans, 1, nullptr, nullptr),
              MCSHM_ERR_NULL_ARGUMENT);
    for (void* o : out) EXPECT_EQ(o, kUnwritten);

    // out_done NULL on success.
    ASSERT_EQ(mcshm_table_relocate_batch(t, 0, spans, 2, out, nullptr), MCSHM_OK);
    EXPECT_EQ(out[0], reinterpret_cast<void*>(kBatchRanges[0].local));
    EXPECT_EQ(out[1], reinterpret_cast<void*>(kBatchRanges[2].local));
}

TEST_F(TableRelocateBatch, BadPeerAndMisalignedPointers) {
    const mcshm_span spans[2] = {{kBatchB, 1}, {kBatchBig, 1}};
    void* out[2] = {kUnwritten, kUnwritten};
    size_t done = 12345;

    for (uint32_t peer : {kBatchPeers, kBatchPeers + 1, UINT32_MAX}) {
        done = 12345;
        EXPECT_EQ(mcshm_table_relocate_batch(t, peer, spans, 2, out, &done),
                  MCSHM_ERR_INVALID_ARGUMENT)
            << "peer " << peer;
        EXPECT_EQ(done, 0u);
        for (void* o : out) EXPECT_EQ(o, kUnwritten);
        // An empty batch checks the peer too, as Table::relocate_batch does.
        done = 12345;
        EXPECT_EQ(mcshm_table_relocate_batch(t, peer, nullptr, 0, nullptr, &done),
                  MCSHM_ERR_INVALID_ARGUMENT)
            << "peer " << peer;
        EXPECT_EQ(done, 0u);
    }

    // Misaligned out: nothing is written through it.
    alignas(8) unsigned char raw[3 * sizeof(void*)];
    std::memset(raw, 0xa5, sizeof raw);
    done = 12345;
    EXPECT_EQ(mcshm_table_relocate_batch(t, 0, spans, 2, reinterpret_cast<void**>(raw + 1), &done),
              MCSHM_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(done, 0u);
    for (unsigned char b : raw) EXPECT_EQ(b, 0xa5);

    // Misaligned spans.
    alignas(8) unsigned char span_raw[sizeof spans + 8];
    std::memcpy(span_raw + 4, spans, sizeof spans);
    done = 12345;
    EXPECT_EQ(mcshm_table_relocate_batch(t, 0, reinterpret_cast<const mcshm_span*>(span_raw + 4),
                                         2, out, &done),
              MCSHM_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(done, 0u);
    EXPECT_EQ(out[0], kUnwritten);

    // Misaligned out_done: rejected (even for n == 0) and not written.
    alignas(8) unsigned char done_raw[2 * sizeof(size_t)];
    std::memset(done_raw, 0xa5, sizeof done_raw);
    auto* mis_done = reinterpret_cast<size_t*>(done_raw + 1);
    EXPECT_EQ(mcshm_table_relocate_batch(t, 0, spans, 2, out, mis_done),
              MCSHM_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(mcshm_table_relocate_batch(t, 0, nullptr, 0, nullptr, mis_done),
              MCSHM_ERR_INVALID_ARGUMENT);
    for (unsigned char b : done_raw) EXPECT_EQ(b, 0xa5);
    for (void* o : out) EXPECT_EQ(o, kUnwritten);
}

TEST_F(TableRelocateBatch, OverlappingArrays) {
    const std::vector<mcshm_span> want = {{kBatchB, 1}, {kBatchBig, 1}, {kBatchB + 0x3000, 1}};

    // `out` is the spans buffer itself, or starts inside it.
    for (size_t at : {size_t{0}, size_t{1}, size_t{2}}) {
        std::vector<mcshm_span> spans = want;
        size_t done = 12345;
        EXPECT_EQ(mcshm_table_relocate_batch(t, 0, spans.data(), 3,
                                             reinterpret_cast<void**>(&spans[at]), &done),
                  MCSHM_ERR_INVALID_ARGUMENT)
            << "out at spans[" << at << "]";
        EXPECT_EQ(done, 0u);
        EXPECT_EQ(std::memcmp(spans.data(), want.data(), 3 * sizeof(mcshm_span)), 0)
            << "the spans must not be written";
    }
    // `spans` starts inside `out` (its second element).
    {
        void* out[8];
        for (void*& o : out) o = kUnwritten;
        size_t done = 12345;
        EXPECT_EQ(mcshm_table_relocate_batch(t, 0, reinterpret_cast<const mcshm_span*>(&out[1]), 2,
                                             out, &done),
                  MCSHM_ERR_INVALID_ARGUMENT);
        EXPECT_EQ(done, 0u);
        for (void* o : out) EXPECT_EQ(o, kUnwritten);
    }

    // Adjacent arrays do not overlap: both orders are accepted.
    struct SpansThenOut {
        mcshm_span spans[2];
        void* out[2];
    };
    struct OutThenSpans {
        void* out[2];
        mcshm_span spans[2];
    };
    static_assert(offsetof(SpansThenOut, out) == 2 * sizeof(mcshm_span), "adjacent");
    static_assert(offsetof(OutThenSpans, spans) == 2 * sizeof(void*), "adjacent");
    SpansThenOut a{{want[0], want[1]}, {kUnwritten, kUnwritten}};
    EXPECT_EQ(mcshm_table_relocate_batch(t, 0, a.spans, 2, a.out, nullptr), MCSHM_OK);
    EXPECT_EQ(a.out[0], batch_local_of(want[0].addr));
    EXPECT_EQ(a.out[1], batch_local_of(want[1].addr));
    OutThenSpans b{{kUnwritten, kUnwritten}, {want[1], want[2]}};
    EXPECT_EQ(mcshm_table_relocate_batch(t, 0, b.spans, 2, b.out, nullptr), MCSHM_OK);
    EXPECT_EQ(b.out[0], batch_local_of(want[1].addr));
    EXPECT_EQ(b.out[1], batch_local_of(want[2].addr));
}

TEST(CApi, TableFull) {
    mcshm_table_config c;
    mcshm_table_config_init(&c);
    c.max_ranges = 2;
    mcshm_table* t = nullptr;
    ASSERT_EQ(mcshm_table_create(&c, &t), MCSHM_OK);
    TableGuard g{t};
    alignas(4096) static unsigned char mem[4096];
    const uint64_t base = 0x600000000000ull;
    ASSERT_EQ(mcshm_table_insert_remote(t, 0, base, 4096, mem), MCSHM_OK);
    ASSERT_EQ(mcshm_table_insert_remote(t, 0, base + (1 << 20), 4096, mem), MCSHM_OK);
    EXPECT_EQ(mcshm_table_insert_remote(t, 0, base + (2 << 20), 4096, mem), MCSHM_ERR_TABLE_FULL);
}

}  // namespace
