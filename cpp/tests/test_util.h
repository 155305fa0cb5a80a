// Shared helpers for the mooncake-shm C++ tests: unique names and /dev/shm checks.
#ifndef MOONCAKE_SHM_TEST_UTIL_H
#define MOONCAKE_SHM_TEST_UTIL_H

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace mcshm_test {

/// "mcshm_t_<pid>_<8 random hex>": every name a test binary makes starts with it.
inline const std::string& run_prefix() {
    static const std::string p = [] {
        std::random_device rd;
        char buf[64];
        snprintf(buf, sizeof buf, "mcshm_t_%d_%08x", static_cast<int>(::getpid()),
                 static_cast<unsigned>(rd()));
        return std::string(buf);
    }();
    return p;
}

/// A fresh, unique shm name: run prefix + tag + counter.
inline std::string unique_name(const std::string& tag = "p") {
    static std::atomic<unsigned> counter{0};
    return run_prefix() + "_" + tag + std::to_string(counter.fetch_add(1));
}

inline bool shm_exists(const std::string& name) {
    return ::access(("/dev/shm/" + name).c_str(), F_OK) == 0;
}

/// Names in /dev/shm that start with `prefix`.
inline std::vector<std::string> shm_entries_with_prefix(const std::string& prefix) {
    std::vector<std::string> out;
    if (DIR* d = ::opendir("/dev/shm")) {
        while (dirent* e = ::readdir(d)) {
            std::string n = e->d_name;
            if (n.compare(0, prefix.size(), prefix) == 0) out.push_back(n);
        }
        ::closedir(d);
    }
    return out;
}

/// Fails the run if any object of this run is left in /dev/shm (and removes it).
class NoLeftoversEnvironment : public ::testing::Environment {
public:
    explicit NoLeftoversEnvironment(std::vector<std::string> prefixes)
        : prefixes_(std::move(prefixes)) {}
    void TearDown() override {
        for (const auto& p : prefixes_) {
            for (const auto& n : shm_entries_with_prefix(p)) {
                ADD_FAILURE() << "left behind in /dev/shm: " << n;
                ::shm_unlink(("/" + n).c_str());
            }
        }
    }

private:
    std::vector<std::string> prefixes_;
};

/// Registers the environment for this run's prefix (+ extra prefixes).
inline bool install_leak_check(std::vector<std::string> extra = {}) {
    extra.push_back(run_prefix());
    ::testing::AddGlobalTestEnvironment(new NoLeftoversEnvironment(std::move(extra)));
    return true;
}

/// Makes a plain (non-pool) shm object of `size` zero bytes, then lets
/// `init` write its first page; returns success.
inline bool make_raw_shm(const std::string& name, off_t size,
                         void (*init)(unsigned char* first_page) = nullptr) {
    int fd = ::shm_open(("/" + name).c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) return false;
    bool ok = ::ftruncate(fd, size) == 0;
    if (ok && init != nullptr && size >= 4096) {
        void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            ok = false;
        } else {
            init(static_cast<unsigned char*>(p));
            ::munmap(p, 4096);
        }
    }
    ::close(fd);
    return ok;
}

inline void fill_pattern(void* p, size_t n, uint8_t seed) {
    auto* b = static_cast<uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + i * 31 + (i >> 8));
}

inline bool check_pattern(const void* p, size_t n, uint8_t seed) {
    const auto* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i)
        if (b[i] != static_cast<uint8_t>(seed + i * 31 + (i >> 8))) return false;
    return true;
}

}  // namespace mcshm_test

#endif
