# Finds gflags and provides the target mooncake_shm_gflags.
#   1. gflags' own CMake package (gflags::gflags or gflags);
#   2. a plain find_library/find_path (Debian's libgflags-dev without config).
if(TARGET mooncake_shm_gflags)
  return()
endif()

find_package(gflags CONFIG QUIET)
add_library(mooncake_shm_gflags INTERFACE)
if(TARGET gflags::gflags)
  target_link_libraries(mooncake_shm_gflags INTERFACE gflags::gflags)
elseif(TARGET gflags)
  target_link_libraries(mooncake_shm_gflags INTERFACE gflags)
else()
  find_path(GFLAGS_INCLUDE_DIR gflags/gflags.h)
  find_library(GFLAGS_LIBRARY NAMES gflags)
  if(NOT GFLAGS_INCLUDE_DIR OR NOT GFLAGS_LIBRARY)
    message(FATAL_ERROR
      "mooncake_shm: gflags was not found (needed by the shm_* benchmarks). "
      "Install it (Debian/Ubuntu: apt-get install libgflags-dev), set gflags_DIR, "
      "or configure with -DMOONCAKE_SHM_BUILD_BENCHMARKS=OFF.")
  endif()
  target_include_directories(mooncake_shm_gflags INTERFACE "${GFLAGS_INCLUDE_DIR}")
  target_link_libraries(mooncake_shm_gflags INTERFACE "${GFLAGS_LIBRARY}" Threads::Threads)
endif()
