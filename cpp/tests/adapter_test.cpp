// Tests of ShmTransportAdapter (cpp/include/mooncake_shm_adapter.h).
#include "mooncake_shm_adapter.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace {

namespace ms = mooncake::shm;
using mcshm_test::shm_exists;

const bool kLeakCheck = mcshm_test::install_leak_check();

constexpr uint64_t kCap = 4 << 20;
constexpr uint64_t kPage = 4096;

/// A unique adapter prefix (pool names are "<prefix>_<pid>_<random>").
std::string prefix() { return mcshm_test::unique_name("ad"); }

uint64_t addr_of(const void* p) { return reinterpret_cast<uintptr_t>(p); }

TEST(Adapter, LazyPoolAllocateAndFree) {
    std::string pool_name;
    {
        const std::string pre = prefix();
        ms::ShmTransportAdapter ad(pre, kCap);
        EXPECT_EQ(ad.localPoolName(), "");
        EXPECT_TRUE(mcshm_test::shm_entries_with_prefix(pre).empty()) << "pool must be lazy";

        ms::LocalBuffer b1, b2;
        ASSERT_EQ(ad.allocateLocal(10000, &b1), MCSHM_OK);
        ASSERT_EQ(ad.allocateLocal(4096, &b2), MCSHM_OK);
        pool_name = ad.localPoolName();
        EXPECT_EQ(pool_name.rfind(pre + "_" + std::to_string(::getpid()) + "_", 0), 0u) << pool_name;
        EXPECT_EQ(pool_name.size(), pre.size() + 1 + std::to_string(::getpid()).size() + 1 + 8);
        EXPECT_TRUE(shm_exists(pool_name));
        EXPECT_EQ(mcshm_test::shm_entries_with_prefix(pre).size(), 1u) << "ONE pool";

        EXPECT_EQ(b1.pool_name, pool_name);
        EXPECT_EQ(b2.pool_name, pool_name);
        EXPECT_EQ(b1.length, 10000u);
        EXPECT_EQ(b2.length, 4096u);
        EXPECT_EQ(addr_of(b1.addr) % kPage, 0u);
        EXPECT_EQ(b1.offset % kPage, 0u);
        EXPECT_EQ(b1.addr, static_cast<char*>(ad.localPool().base()) + b1.offset);
        std::memset(b1.addr, 0xAA, b1.length);
        std::memset(b2.addr, 0xBB, b2.length);

        // What a peer sees through the published (pool_name, offset).
        ms::Pool peer = ms::Pool::open(b1.pool_name);
        EXPECT_EQ(static_cast<unsigned char*>(peer.ptr(b1.offset, b1.length))[9999], 0xAA);
        EXPECT_EQ(static_cast<unsigned char*>(peer.ptr(b2.offset, b2.length))[0], 0xBB);

        EXPECT_EQ(ad.localPool().stats().live, 2u);
        EXPECT_EQ(ad.freeLocal(b1.addr), MCSHM_OK);
        EXPECT_EQ(ad.freeLocal(b2.addr, b2.length), MCSHM_OK);
        EXPECT_EQ(ad.localPool().stats().live, 0u);
        EXPECT_EQ(ad.freeLocal(b1.addr), MCSHM_ERR_DOUBLE_FREE);
    }
    EXPECT_FALSE(shm_exists(pool_name)) << "~ShmTransportAdapter unlinks its pool";
}

TEST(Adapter, AllocateAndFreeErrors) {
    ms::ShmTransportAdapter ad(prefix(), 1 << 20);
    int x = 0;
    EXPECT_EQ(ad.freeLocal(&x), MCSHM_ERR_NOT_FOUND) << "no pool yet";
    EXPECT_EQ(ad.allocateLocal(64, nullptr), MCSHM_ERR_NULL_ARGUMENT);
    ms::LocalBuffer b;
    EXPECT_EQ(ad.allocateLocal(0, &b), MCSHM_ERR_ZERO_SIZE);
    EXPECT_EQ(ad.allocateLocal((2 << 20), &b), MCSHM_ERR_TOO_LARGE);
    ASSERT_EQ(ad.allocateLocal(8192, &b), MCSHM_OK);
    EXPECT_EQ(ad.freeLocal(nullptr), MCSHM_ERR_NULL_ARGUMENT);
    EXPECT_EQ(ad.freeLocal(&x), MCSHM_ERR_OUT_OF_BOUNDS);
    EXPECT_EQ(ad.freeLocal(static_cast<char*>(b.addr) + 100), MCSHM_ERR_INVALID_OFFSET);
    EXPECT_EQ(ad.freeLocal(b.addr), MCSHM_OK);
}

/// `threads` threads allocate `per` blocks of `size` bytes each from `ad` at
/// once, filling block i of thread t with the byte t * per + i so that
/// overlapping blocks show. Returns each thread's blocks; counts failures.
std::vector<std::vector<ms::LocalBuffer>> allocate_at_once(ms::ShmTransportAdapter& ad,
                                                           int threads, int per, size_t size,
                                                           std::atomic<int>& failures) {
    std::vector<std::vector<ms::LocalBuffer>> bufs(threads);
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t)
        ts.emplace_back([&, t] {
            for (int i = 0; i < per; ++i) {
                ms::LocalBuffer b;
                if (ad.allocateLocal(size, &b) != MCSHM_OK) {
                    ++failures;
                } else {
                    std::memset(b.addr, t * per + i, b.length);
                    bufs[t].push_back(b);
                }
            }
        });
    for (auto& th : ts) th.join();
    return bufs;
}

ms::ShmTransportAdapter::Options growing(uint32_t max_pools) {
    ms::ShmTransportAdapter::Options o;
    o.max_pools = max_pools;
    return o;
}

TEST(Adapter, OnePoolByDefaultAndAFullPoolFails) {
    const std::string pre = prefix();
    ms::ShmTransportAdapter ad(pre, 1 << 20);
    ms::LocalBuffer a, b;
    ASSERT_EQ(ad.allocateLocal(768 << 10, &a), MCSHM_OK);
    EXPECT_EQ(ad.allocateLocal(768 << 10, &b), MCSHM_ERR_EXHAUSTED);
    EXPECT_EQ(ad.localPoolCount(), 1u);
    EXPECT_EQ(mcshm_test::shm_entries_with_prefix(pre).size(), 1u);
    EXPECT_EQ(ad.freeLocal(a.addr), MCSHM_OK);
}

TEST(Adapter, GrowsIntoNewPoolsUpToMaxPools) {
    const std::string pre = prefix();
    std::vector<std::string> names;
    {
        ms::ShmTransportAdapter ad(pre, 1 << 20, growing(3));
        // 768 KiB: one block per 1 MiB pool.
        std::vector<ms::LocalBuffer> bufs(3);
        for (size_t i = 0; i < bufs.size(); ++i) {
            ASSERT_EQ(ad.allocateLocal(768 << 10, &bufs[i]), MCSHM_OK) << i;
            EXPECT_EQ(ad.localPoolCount(), i + 1);
            EXPECT_EQ(bufs[i].pool_name, ad.localPool(i).name());
            EXPECT_EQ(bufs[i].addr, static_cast<char*>(ad.localPool(i).base()) + bufs[i].offset);
            std::memset(bufs[i].addr, 0x10 + int(i), bufs[i].length);
            names.push_back(bufs[i].pool_name);
        }
        EXPECT_NE(names[0], names[1]);
        EXPECT_NE(names[1], names[2]);
        EXPECT_EQ(ad.localPoolName(), names[0]);
        EXPECT_EQ(mcshm_test::shm_entries_with_prefix(pre).size(), 3u);
        EXPECT_FALSE(ad.localPool(3).valid());

        // max_pools reached: fails as a full pool does, and makes nothing.
        ms::LocalBuffer more;
        EXPECT_EQ(ad.allocateLocal(768 << 10, &more), MCSHM_ERR_EXHAUSTED);
        EXPECT_EQ(ad.localPoolCount(), 3u);
        EXPECT_EQ(mcshm_test::shm_entries_with_prefix(pre).size(), 3u);

        // Each buffer is where its descriptor says, for a peer.
        for (size_t i = 0; i < bufs.size(); ++i) {
            ms::Pool peer = ms::Pool::open(bufs[i].pool_name);
            auto* p = static_cast<unsigned char*>(peer.ptr(bufs[i].offset, bufs[i].length));
            EXPECT_EQ(p[0], 0x10 + i);
            EXPECT_EQ(p[bufs[i].length - 1], 0x10 + i);
        }

        // freeLocal finds each block's pool; errors name the right one.
        EXPECT_EQ(ad.freeLocal(static_cast<char*>(bufs[2].addr) + 64), MCSHM_ERR_INVALID_OFFSET);
        int x = 0;
        EXPECT_EQ(ad.freeLocal(&x), MCSHM_ERR_OUT_OF_BOUNDS);
        for (auto& b : bufs) EXPECT_EQ(ad.freeLocal(b.addr, b.length), MCSHM_OK);
        EXPECT_EQ(ad.freeLocal(bufs[1].addr), MCSHM_ERR_DOUBLE_FREE);
        for (size_t i = 0; i < 3; ++i) EXPECT_EQ(ad.localPool(i).stats().live, 0u);

        // Room again: served by the pools there are, none made.
        for (auto& b : bufs) ASSERT_EQ(ad.allocateLocal(768 << 10, &b), MCSHM_OK);
        EXPECT_EQ(ad.localPoolCount(), 3u);
        for (auto& b : bufs) EXPECT_EQ(ad.freeLocal(b.addr), MCSHM_OK);

        // A request no pool can ever hold makes no pool either.
        EXPECT_EQ(ad.allocateLocal(2 << 20, &more), MCSHM_ERR_TOO_LARGE);
        EXPECT_EQ(ad.localPoolCount(), 3u);
    }
    for (const auto& n : names) EXPECT_FALSE(shm_exists(n)) << n;
    EXPECT_TRUE(mcshm_test::shm_entries_with_prefix(pre).empty());
}

TEST(Adapter, MaxPoolsIsClamped) {
    const std::string pre = prefix();
    ms::ShmTransportAdapter ad(pre, 1 << 20, growing(0));
    ms::LocalBuffer a, b;
    ASSERT_EQ(ad.allocateLocal(768 << 10, &a), MCSHM_OK);
    EXPECT_EQ(ad.allocateLocal(768 << 10, &b), MCSHM_ERR_EXHAUSTED) << "0 counts as 1";
    EXPECT_EQ(ad.freeLocal(a.addr), MCSHM_OK);

    ms::ShmTransportAdapter big(prefix(), 64 << 10, growing(1000));
    std::vector<ms::LocalBuffer> bufs;
    ms::LocalBuffer c;
    int rc = MCSHM_OK;
    while ((rc = big.allocateLocal(48 << 10, &c)) == MCSHM_OK) bufs.push_back(c);
    EXPECT_EQ(rc, MCSHM_ERR_EXHAUSTED);
    EXPECT_EQ(big.localPoolCount(), ms::ShmTransportAdapter::kMaxPools);
    EXPECT_EQ(bufs.size(), size_t(ms::ShmTransportAdapter::kMaxPools));
    for (auto& x : bufs) EXPECT_EQ(big.freeLocal(x.addr), MCSHM_OK);
}

TEST(Adapter, ConcurrentAllocateGrowsWithoutLosingBlocks) {
    const std::string pre = prefix();
    ms::ShmTransportAdapter ad(pre, 1 << 20, growing(16));
    constexpr int kThreads = 4, kPer = 6;  // 24 x 256 KiB: several 1 MiB pools
    std::atomic<int> failures{0};
    const auto bufs = allocate_at_once(ad, kThreads, kPer, 256 << 10, failures);
    EXPECT_EQ(failures.load(), 0);
    const size_t pools = ad.localPoolCount();
    EXPECT_GE(pools, 6u);
    EXPECT_LE(pools, 16u);
    EXPECT_EQ(mcshm_test::shm_entries_with_prefix(pre).size(), pools);
    uint64_t live = 0;
    for (size_t i = 0; i < pools; ++i) live += ad.localPool(i).stats().live;
    EXPECT_EQ(live, uint64_t(kThreads * kPer));
    for (int t = 0; t < kThreads; ++t)
        for (int i = 0; i < kPer; ++i) {
            const auto& b = bufs[t][i];
            const auto* p = static_cast<const unsigned char*>(b.addr);
            EXPECT_EQ(p[0], t * kPer + i) << "blocks overlap";
            EXPECT_EQ(p[b.length - 1], t * kPer + i) << "blocks overlap";
        }
    for (auto& v : bufs)
        for (auto& b : v) EXPECT_EQ(ad.freeLocal(b.addr), MCSHM_OK);
}

TEST(Adapter, InvalidPrefixReportsInvalidName) {
    ms::ShmTransportAdapter ad("bad/prefix", 1 << 20);
    ms::LocalBuffer b;
    EXPECT_EQ(ad.allocateLocal(64, &b), MCSHM_ERR_INVALID_NAME);
}

TEST(Adapter, ConcurrentAllocateCreatesOnePool) {
    const std::string pre = prefix();
    ms::ShmTransportAdapter ad(pre, kCap);
    constexpr int kThreads = 4, kPer = 50;
    std::atomic<int> failures{0};
    const auto bufs = allocate_at_once(ad, kThreads, kPer, 4096, failures);
    EXPECT_EQ(failures.load(), 0);
    EXPECT_EQ(mcshm_test::shm_entries_with_prefix(pre).size(), 1u);
    EXPECT_EQ(ad.localPool().stats().live, uint64_t(kThreads * kPer));
    for (auto& v : bufs)
        for (auto& b : v) EXPECT_EQ(ad.freeLocal(b.addr), MCSHM_OK);
}

/// Owner side A, peer side B in one process, under different pool names.
TEST(Adapter, RegisterRemoteAndRelocateSameProcess) {
    ms::ShmTransportAdapter owner(prefix(), kCap);
    ms::ShmTransportAdapter peer(prefix(), kCap);
    constexpr int kBufs = 16;
    std::vector<ms::LocalBuffer> bufs(kBufs);
    for (int i = 0; i < kBufs; ++i) {
        ASSERT_EQ(owner.allocateLocal(kPage * (1 + i % 4), &bufs[i]), MCSHM_OK);
        mcshm_test::fill_pattern(bufs[i].addr, bufs[i].length, uint8_t(i));
    }
    const uint64_t target = 3;
    for (auto& b : bufs)
        ASSERT_EQ(peer.registerRemote(target, b.pool_name, b.offset, b.length, addr_of(b.addr)),
                  MCSHM_OK);
    EXPECT_EQ(peer.remotePoolCount(), 1u) << "the pool is opened once for all its buffers";
    EXPECT_EQ(peer.remoteBufferCount(), size_t(kBufs));

    for (int i = 0; i < kBufs; ++i) {
        const auto& b = bufs[i];
        // Whole buffer.
        uint64_t a = addr_of(b.addr);
        ASSERT_EQ(peer.relocate(a, b.length, target), MCSHM_OK);
        EXPECT_NE(a, addr_of(b.addr)) << "the peer has its own mapping";
        EXPECT_TRUE(mcshm_test::check_pattern(reinterpret_cast<void*>(a), b.length, uint8_t(i)));
        const uint64_t local_base = a;
        // First and last byte.
        a = addr_of(b.addr);
        ASSERT_EQ(peer.relocate(a, 1, target), MCSHM_OK);
        EXPECT_EQ(a, local_base);
        a = addr_of(b.addr) + b.length - 1;
        ASSERT_EQ(peer.relocate(a, 1, target), MCSHM_OK);
        EXPECT_EQ(a, local_base + b.length - 1);
        EXPECT_EQ(*reinterpret_cast<uint8_t*>(a), static_cast<uint8_t*>(b.addr)[b.length - 1]);
        // Writes through the relocated address land in the owner's buffer.
        *reinterpret_cast<uint8_t*>(a) ^= 0xFF;
        EXPECT_EQ(*reinterpret_cast<uint8_t*>(a), static_cast<uint8_t*>(b.addr)[b.length - 1]);
        // Running past the end fails and leaves dest_addr alone.
        a = addr_of(b.addr) + b.length - 1;
        EXPECT_NE(peer.relocate(a, 2, target), MCSHM_OK);
        EXPECT_EQ(a, addr_of(b.addr) + b.length - 1);
    }
    // The whole set in one batch: the same answers; then a batch that runs
    // past the end of its sixth buffer stops there.
    std::vector<mcshm_span> spans;
    for (const auto& b : bufs) spans.push_back({addr_of(b.addr), b.length});
    std::vector<void*> out(kBufs + 1, nullptr);
    size_t done = 99;
    ASSERT_EQ(peer.relocateBatch(target, spans.data(), spans.size(), out.data(), &done), MCSHM_OK);
    EXPECT_EQ(done, size_t(kBufs));
    for (int i = 0; i < kBufs; ++i) {
        uint64_t want = addr_of(bufs[i].addr);
        ASSERT_EQ(peer.relocate(want, bufs[i].length, target), MCSHM_OK);
        EXPECT_EQ(addr_of(out[i]), want) << "buffer " << i;
    }
    EXPECT_EQ(out[kBufs], nullptr);
    spans[5].len += 1;
    std::fill(out.begin(), out.end(), nullptr);
    EXPECT_EQ(peer.relocateBatch(target, spans.data(), spans.size(), out.data(), &done),
              MCSHM_ERR_OUT_OF_BOUNDS);
    EXPECT_EQ(done, 5u);
    EXPECT_NE(out[4], nullptr);
    EXPECT_EQ(out[5], nullptr);
    EXPECT_EQ(peer.relocateBatch(1u << 20, spans.data(), 1, out.data(), &done),
              MCSHM_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(done, 0u);

    uint64_t a = addr_of(bufs[0].addr);
    EXPECT_NE(peer.relocate(a, 1, target + 1), MCSHM_OK) << "unknown target";
    a = 0x10000000;
    EXPECT_EQ(peer.relocate(a, 1, target), MCSHM_ERR_NOT_FOUND);
    a = addr_of(bufs[0].addr);
    EXPECT_EQ(peer.relocate(a, 1, 1u << 20), MCSHM_ERR_INVALID_ARGUMENT) << "target >= max_peers";

    // The same buffers as another target open a second mapping.
    ASSERT_EQ(peer.registerRemote(target + 1, bufs[0].pool_name, bufs[0].offset, bufs[0].length,
                                  addr_of(bufs[0].addr)),
              MCSHM_OK);
    EXPECT_EQ(peer.remotePoolCount(), 2u);
    a = addr_of(bufs[0].addr);
    EXPECT_EQ(peer.relocate(a, 1, target + 1), MCSHM_OK);

    for (auto& b : bufs) EXPECT_EQ(owner.freeLocal(b.addr), MCSHM_OK);
}

TEST(Adapter, RegisterRemoteErrorsAndIdempotence) {
    ms::ShmTransportAdapter owner(prefix(), kCap);
    ms::ShmTransportAdapter peer(prefix(), kCap);
    ms::LocalBuffer b;
    ASSERT_EQ(owner.allocateLocal(3 * kPage, &b), MCSHM_OK);
    const uint64_t rb = addr_of(b.addr);

    EXPECT_EQ(peer.registerRemote(0, b.pool_name, b.offset, b.length, rb + 8),
              MCSHM_ERR_INVALID_ARGUMENT) << "remote base must be page-aligned";
    EXPECT_EQ(peer.registerRemote(0, b.pool_name, b.offset + 8, b.length, rb),
              MCSHM_ERR_INVALID_ARGUMENT) << "offset must be page-aligned";
    EXPECT_EQ(peer.registerRemote(0, b.pool_name, b.offset, 0, rb), MCSHM_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(peer.registerRemote(100000, b.pool_name, b.offset, b.length, rb),
              MCSHM_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(peer.registerRemote(0, mcshm_test::unique_name("missing"), 4096, 4096, rb),
              MCSHM_ERR_NOT_FOUND);
    EXPECT_EQ(peer.registerRemote(0, "bad/name", 4096, 4096, rb), MCSHM_ERR_INVALID_NAME);
    EXPECT_EQ(peer.registerRemote(0, b.pool_name, b.offset, uint64_t(1) << 40, rb),
              MCSHM_ERR_OUT_OF_BOUNDS);
    EXPECT_EQ(peer.remoteBufferCount(), 0u);

    ASSERT_EQ(peer.registerRemote(0, b.pool_name, b.offset, b.length, rb), MCSHM_OK);
    EXPECT_EQ(peer.registerRemote(0, b.pool_name, b.offset, b.length, rb), MCSHM_OK)
        << "re-registering the same buffer is a no-op";
    EXPECT_EQ(peer.registerRemote(0, b.pool_name, b.offset, kPage, rb), MCSHM_ERR_ALREADY_EXISTS);
    EXPECT_EQ(peer.registerRemote(0, b.pool_name, b.offset, kPage, rb + kPage),
              MCSHM_ERR_ALREADY_EXISTS) << "overlaps the registered buffer";
    EXPECT_EQ(peer.remoteBufferCount(), 1u);

    // Unregister: relocate misses, the mapping (and old pointers) stay valid.
    uint64_t a = rb;
    ASSERT_EQ(peer.relocate(a, 1, 0), MCSHM_OK);
    auto* old = reinterpret_cast<volatile uint8_t*>(a);
    EXPECT_EQ(peer.unregisterRemote(0, rb), MCSHM_OK);
    EXPECT_EQ(peer.unregisterRemote(0, rb), MCSHM_ERR_NOT_FOUND);
    uint64_t c = rb;
    EXPECT_EQ(peer.relocate(c, 1, 0), MCSHM_ERR_NOT_FOUND);
    static_cast<uint8_t*>(b.addr)[0] = 42;
    EXPECT_EQ(*old, 42);
    EXPECT_EQ(peer.remotePoolCount(), 1u);
    ASSERT_EQ(peer.registerRemote(0, b.pool_name, b.offset, b.length, rb), MCSHM_OK);
    EXPECT_EQ(peer.remotePoolCount(), 1u) << "re-registering reuses the mapping";
}

TEST(Adapter, RelocateBeforeAnyRegistration) {
    const ms::ShmTransportAdapter ad(prefix(), kCap);
    uint64_t a = 0x7f0000000000ull;
    EXPECT_EQ(ad.relocate(a, 1, 0), MCSHM_ERR_NOT_FOUND);
    EXPECT_EQ(a, 0x7f0000000000ull);
    const mcshm_span span{a, 1};
    void* out = nullptr;
    size_t done = 7;
    EXPECT_EQ(ad.relocateBatch(0, &span, 1, &out, &done), MCSHM_ERR_NOT_FOUND);
    EXPECT_EQ(done, 0u);
    EXPECT_EQ(out, nullptr);
    EXPECT_EQ(ad.relocateBatch(0, nullptr, 0, nullptr, &done), MCSHM_OK);
}

TEST(Adapter, RelocateWithLookupMissPath) {
    ms::ShmTransportAdapter owner(prefix(), kCap);
    ms::ShmTransportAdapter peer(prefix(), kCap);
    ms::LocalBuffer b;
    ASSERT_EQ(owner.allocateLocal(2 * kPage, &b), MCSHM_OK);
    std::memcpy(b.addr, "via lookup", 11);
    int lookups = 0;
    auto lookup = [&](uint64_t target, uint64_t addr, ms::RemoteBuffer& out) {
        ++lookups;
        if (target != 5 || addr < addr_of(b.addr) || addr >= addr_of(b.addr) + b.length)
            return false;
        out.pool_name = b.pool_name;
        out.offset = b.offset;
        out.length = b.length;
        out.remote_base = addr_of(b.addr);
        return true;
    };
    uint64_t a = addr_of(b.addr) + 4;
    ASSERT_EQ(peer.relocate(a, 7, 5, lookup), MCSHM_OK);
    EXPECT_STREQ(reinterpret_cast<const char*>(a), "lookup");
    EXPECT_EQ(lookups, 1);
    a = addr_of(b.addr);
    ASSERT_EQ(peer.relocate(a, 1, 5, lookup), MCSHM_OK);
    EXPECT_EQ(lookups, 1) << "a hit does not call lookup";
    a = 0x10000;
    EXPECT_EQ(peer.relocate(a, 1, 5, lookup), MCSHM_ERR_NOT_FOUND);
    EXPECT_EQ(lookups, 2);
}

TEST(Adapter, ConcurrentRelocateWhileRegistering) {
    ms::ShmTransportAdapter owner(prefix(), kCap);
    ms::ShmTransportAdapter peer(prefix(), kCap);
    std::vector<ms::LocalBuffer> bufs(64);
    for (size_t i = 0; i < bufs.size(); ++i) {
        ASSERT_EQ(owner.allocateLocal(kPage, &bufs[i]), MCSHM_OK);
        std::memset(bufs[i].addr, int(i), kPage);
    }
    ASSERT_EQ(peer.registerRemote(1, bufs[0].pool_name, bufs[0].offset, kPage,
                                  addr_of(bufs[0].addr)),
              MCSHM_OK);
    std::atomic<bool> stop{false};
    std::atomic<long> bad{0};
    std::thread reader([&] {
        while (!stop.load(std::memory_order_relaxed)) {
            uint64_t a = addr_of(bufs[0].addr) + 100;
            if (peer.relocate(a, 8, 1) != MCSHM_OK || *reinterpret_cast<uint8_t*>(a) != 0) ++bad;
        }
    });
    for (size_t i = 1; i < bufs.size(); ++i)
        EXPECT_EQ(peer.registerRemote(1, bufs[i].pool_name, bufs[i].offset, kPage,
                                      addr_of(bufs[i].addr)),
                  MCSHM_OK);
    stop = true;
    reader.join();
    EXPECT_EQ(bad.load(), 0);
    for (size_t i = 0; i < bufs.size(); ++i) {
        uint64_t a = addr_of(bufs[i].addr) + kPage - 1;
        ASSERT_EQ(peer.relocate(a, 1, 1), MCSHM_OK);
        EXPECT_EQ(*reinterpret_cast<uint8_t*>(a), uint8_t(i));
    }
}

/// The owner is a forked child (its own adapter and pool); the parent registers
/// the child's published buffers and relocates the child's addresses.
TEST(Adapter, RegisterRemoteFromForkedChild) {
    const std::string pre = prefix();
    int to_parent[2], to_child[2];
    ASSERT_EQ(::pipe(to_parent), 0);
    ASSERT_EQ(::pipe(to_child), 0);
    struct Msg {
        uint64_t addr[2], offset[2], length[2];
        char pool_name[200];
    };
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        ::close(to_parent[0]);
        ::close(to_child[1]);
        int code = 0;
        {
            ms::ShmTransportAdapter ad(pre, kCap);
            ms::LocalBuffer b[2];
            Msg m{};
            if (ad.allocateLocal(3 * kPage, &b[0]) != MCSHM_OK ||
                ad.allocateLocal(5 * kPage, &b[1]) != MCSHM_OK)
                code = 10;
            for (int i = 0; i < 2 && code == 0; ++i) {
                mcshm_test::fill_pattern(b[i].addr, b[i].length, uint8_t(50 + i));
                m.addr[i] = addr_of(b[i].addr);
                m.offset[i] = b[i].offset;
                m.length[i] = b[i].length;
            }
            std::snprintf(m.pool_name, sizeof m.pool_name, "%s", b[0].pool_name.c_str());
            if (::write(to_parent[1], &m, sizeof m) != ssize_t(sizeof m)) code = 11;
            char answer = 0;
            if (::read(to_child[0], &answer, 1) != 1) code = 12;  // parent done
            else if (code == 0 && answer != 'k') code = 13;
            // The parent wrote into the second buffer's last byte.
            if (code == 0 && static_cast<uint8_t*>(b[1].addr)[b[1].length - 1] != 0x5C) code = 14;
        }  // ~ShmTransportAdapter unlinks the child's pool
        _exit(code);
    }
    ::close(to_parent[1]);
    ::close(to_child[0]);
    Msg m{};
    ASSERT_EQ(::read(to_parent[0], &m, sizeof m), ssize_t(sizeof m));
    {
        ms::ShmTransportAdapter ad(prefix(), kCap);
        const uint64_t target = 9;
        for (int i = 0; i < 2; ++i)
            ASSERT_EQ(ad.registerRemote(target, m.pool_name, m.offset[i], m.length[i], m.addr[i]),
                      MCSHM_OK);
        EXPECT_EQ(ad.remotePoolCount(), 1u);
        for (int i = 0; i < 2; ++i) {
            uint64_t a = m.addr[i];
            ASSERT_EQ(ad.relocate(a, m.length[i], target), MCSHM_OK);
            EXPECT_TRUE(mcshm_test::check_pattern(reinterpret_cast<void*>(a), m.length[i],
                                                  uint8_t(50 + i)));
            uint64_t last = m.addr[i] + m.length[i] - 1;
            ASSERT_EQ(ad.relocate(last, 1, target), MCSHM_OK);
            EXPECT_EQ(last, a + m.length[i] - 1);
        }
        // Past the end of each buffer, unless the other buffer starts right
        // there (the arena may place them in either order, adjacent or not).
        for (int i = 0; i < 2; ++i) {
            const uint64_t end = m.addr[i] + m.length[i];
            if (end == m.addr[1 - i]) continue;
            uint64_t past = end;
            EXPECT_NE(ad.relocate(past, 1, target), MCSHM_OK);
            past = end - 1;
            EXPECT_NE(ad.relocate(past, 2, target), MCSHM_OK);
        }
        uint64_t last = m.addr[1] + m.length[1] - 1;
        ASSERT_EQ(ad.relocate(last, 1, target), MCSHM_OK);
        *reinterpret_cast<uint8_t*>(last) = 0x5C;
        ASSERT_EQ(::write(to_child[1], "k", 1), 1);
        int status = 0;
        ASSERT_EQ(::waitpid(pid, &status, 0), pid);
        ASSERT_TRUE(WIFEXITED(status));
        EXPECT_EQ(WEXITSTATUS(status), 0) << "child failed at step " << WEXITSTATUS(status);
        EXPECT_FALSE(shm_exists(m.pool_name)) << "the child's adapter unlinked its pool";
        // Our mapping outlives the unlink: pointers stay valid until ~adapter.
        uint64_t a = m.addr[0];
        ASSERT_EQ(ad.relocate(a, 1, target), MCSHM_OK);
        EXPECT_EQ(*reinterpret_cast<uint8_t*>(a), uint8_t(50));
    }
    ::close(to_parent[0]);
    ::close(to_child[1]);
}

}  // namespace
