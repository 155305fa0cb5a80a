// Process-wide registry of POSIX shm object names this process created, so
// that SIGINT/SIGTERM (and exit) never leave an object behind in /dev/shm.
//
// Names are kept in a fixed array of char buffers so the signal handler can
// walk them without allocating or locking (async-signal-safe). Names are
// stored WITHOUT the leading '/', exactly as they appear under /dev/shm.
#pragma once

#include <cstddef>

namespace mcshm_baseline {

// Maximum number of simultaneously registered names.
constexpr std::size_t kRegistryCapacity = 65536;  // >= vm.max_map_count default
// Maximum length of a registered name (excluding the terminating NUL).
constexpr std::size_t kRegistryMaxName = 95;

// Installs SIGINT/SIGTERM/SIGHUP handlers that unlink every registered name
// and then terminate with status 128+sig, plus an atexit() hook that unlinks
// whatever is still registered. Idempotent.
void installShmCleanupHandlers();

// Registers `name` (no leading '/'); returns a slot id >= 0, or -1 if the
// registry is full or the name too long. Register BEFORE creating the object.
int registerShmName(const char* name);

// Forgets a slot (call after the object has been unlinked).
void unregisterShmName(int slot);

// Unlinks every registered object and clears the registry; returns how many
// objects were actually removed. Safe to call from normal code at any time.
std::size_t unlinkAllRegistered();

// Number of registered names (approximate under concurrency).
std::size_t registeredCount();

}  // namespace mcshm_baseline
