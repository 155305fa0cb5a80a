// A Mooncake-shaped consumer of mooncake-shm, built by tests/consumer/run.sh
// twice: inside a throwaway parent project that does
// add_subdirectory(benchmark/shm), and against the installed package
// (find_package(mooncake_shm)).
// Exits 0 on success, 1 (with a message) on the first failed check.
#include "mooncake_shm.hpp"
#include "mooncake_shm_adapter.h"

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace ms = mooncake::shm;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            std::fprintf(stderr, "consumer_app: check failed at %s:%d: %s\n", \
                         __FILE__, __LINE__, #cond);                         \
            return 1;                                                        \
        }                                                                    \
    } while (0)

#define CHECK_OK(expr)                                                            \
    do {                                                                          \
        const int rc_ = (expr);                                                   \
        if (rc_ != MCSHM_OK) {                                                    \
            std::fprintf(stderr, "consumer_app: %s failed at %s:%d: %s (%d)\n", \
                         #expr, __FILE__, __LINE__, mcshm_strerror(rc_), rc_);    \
            return 1;                                                             \
        }                                                                         \
    } while (0)

static bool shm_exists(const std::string& name) {
    return ::access(("/dev/shm/" + name).c_str(), F_OK) == 0;
}

static int run() {
    std::string pool_name;
    {
        ms::ShmTransportAdapter adapter("mcshm_consumer", 8 << 20);
        std::vector<ms::LocalBuffer> bufs(8);
        for (size_t i = 0; i < bufs.size(); ++i) {
            CHECK_OK(adapter.allocateLocal(4096 * (i + 1), &bufs[i]));
            std::memset(bufs[i].addr, int('A' + i), bufs[i].length);
        }
        pool_name = adapter.localPoolName();
        CHECK(!pool_name.empty() && shm_exists(pool_name));

        // Register our own published buffers as if a peer (target 1) had sent them.
        const uint64_t target = 1;
        for (const auto& b : bufs)
            CHECK_OK(adapter.registerRemote(target, b.pool_name, b.offset, b.length,
                                            reinterpret_cast<uintptr_t>(b.addr)));
        CHECK(adapter.remotePoolCount() == 1);

        for (size_t i = 0; i < bufs.size(); ++i) {
            const auto& b = bufs[i];
            uint64_t first = reinterpret_cast<uintptr_t>(b.addr);
            uint64_t last = first + b.length - 1;
            CHECK_OK(adapter.relocate(first, 1, target));
            CHECK_OK(adapter.relocate(last, 1, target));
            CHECK(first != reinterpret_cast<uintptr_t>(b.addr));  // a second mapping
            CHECK(last == first + b.length - 1);
            CHECK(*reinterpret_cast<const char*>(first) == char('A' + i));
            CHECK(*reinterpret_cast<const char*>(last) == char('A' + i));
            uint64_t past = reinterpret_cast<uintptr_t>(b.addr) + b.length - 1;
            CHECK(adapter.relocate(past, 2, target) != MCSHM_OK);
        }
        for (const auto& b : bufs) CHECK_OK(adapter.freeLocal(b.addr, b.length));
    }
    CHECK(!shm_exists(pool_name));  // the adapter unlinked its pool

    // The plain RAII layer, too.
    const std::string name = "mcshm_consumer_raii_" + std::to_string(::getpid());
    {
        ms::PoolOptions opts;
        opts.capacity = 1 << 20;
        ms::Pool pool = ms::Pool::create(name, opts);
        ms::Allocation a = pool.alloc(4096, 4096);
        ms::Table table = ms::Table::create();
        table.insert_segment(0, pool.base(), pool.size());
        CHECK(table.resolve(0, a.offset(), a.size()) == a.data());
        CHECK(table.locate(a.data()).offset == a.offset());
    }
    CHECK(!shm_exists(name));
    return 0;
}

int main() {
    try {
        const int rc = run();
        if (rc == 0) std::printf("consumer_app: OK\n");
        return rc;
    } catch (const ms::Error& e) {
        std::fprintf(stderr, "consumer_app: %s\n", e.what());
        return 1;
    }
}
