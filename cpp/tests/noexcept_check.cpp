// Compiled with -fno-exceptions: the headers must stay usable through the
// try_* API (and the adapter) for users who build without exceptions.
#include "mooncake_shm.hpp"
#include "mooncake_shm_adapter.h"

int mooncake_shm_noexcept_check(const char* name) {
    mooncake::shm::Pool pool;
    int rc = mooncake::shm::Pool::try_create(name, mooncake::shm::PoolOptions{}, pool);
    if (rc != MCSHM_OK) return rc;
    uint64_t off = 0;
    rc = pool.try_alloc(64, 0, &off);
    if (rc != MCSHM_OK) return rc;
    mooncake::shm::ShmTransportAdapter ad("noexcept", 1 << 20);
    mooncake::shm::LocalBuffer b;
    rc = ad.allocateLocal(64, &b);
    if (rc != MCSHM_OK) return rc;
    uint64_t a = reinterpret_cast<uintptr_t>(b.addr);
    (void)ad.relocate(a, 1, 0);
    mooncake::shm::ThreadCache cache;
    rc = mooncake::shm::ThreadCache::try_create(pool, 0, cache);
    if (rc != MCSHM_OK) return rc;
    uint64_t c = 0;
    rc = cache.try_alloc(64, 0, &c);
    if (rc != MCSHM_OK) return rc;
    rc = cache.try_free(c);
    if (rc != MCSHM_OK) return rc;
    rc = cache.try_flush();
    if (rc != MCSHM_OK) return rc;
    mooncake::shm::Table table;
    rc = mooncake::shm::Table::try_create(mooncake::shm::TableConfig{}, table);
    if (rc != MCSHM_OK) return rc;
    rc = table.try_insert_remote(0, 0x7f0000000000ull, 4096, pool.base());
    if (rc != MCSHM_OK) return rc;
    const mcshm_span spans[2] = {{0x7f0000000000ull, 64}, {0x7f0000000fffull, 1}};
    void* out[2] = {nullptr, nullptr};
    std::size_t done = 0;
    rc = table.try_relocate_batch(0, spans, 2, out, &done);
    if (rc != MCSHM_OK) return rc;
    return pool.try_free(off);
}
