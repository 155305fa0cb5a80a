# Builds the Rust crate as a static library with the C ABI (feature `capi`)
# and exposes it as mooncake_shm::mooncake_shm.
#
# Sets MOONCAKE_SHM_STATICLIB (path of the .a) in the including scope.

find_program(CARGO_EXECUTABLE cargo HINTS "$ENV{CARGO_HOME}/bin" "$ENV{HOME}/.cargo/bin")
if(NOT CARGO_EXECUTABLE)
  message(FATAL_ERROR
    "mooncake_shm: `cargo` was not found. The Rust core is built with cargo; "
    "install a Rust toolchain (https://rustup.rs) or pass -DCARGO_EXECUTABLE=/path/to/cargo.")
endif()

# Release profile for Release/RelWithDebInfo/MinSizeRel and for an empty build
# type; the debug profile only for Debug (and unknown custom types).
set(_mcshm_bt "${CMAKE_BUILD_TYPE}")
if(_mcshm_bt STREQUAL "" OR _mcshm_bt MATCHES "^(Release|RelWithDebInfo|MinSizeRel)$")
  set(_mcshm_cargo_profile_flag "--release")
  set(_mcshm_cargo_profile_dir "release")
else()
  set(_mcshm_cargo_profile_flag "")
  set(_mcshm_cargo_profile_dir "debug")
endif()

set(MOONCAKE_SHM_CARGO_TARGET_DIR "${CMAKE_CURRENT_BINARY_DIR}/cargo" CACHE PATH
    "Cargo target directory for the Rust staticlib (share one between build trees to build it once)")
set(MOONCAKE_SHM_STATICLIB
    "${MOONCAKE_SHM_CARGO_TARGET_DIR}/${_mcshm_cargo_profile_dir}/libmooncake_shm.a")

file(GLOB_RECURSE _mcshm_rust_sources CONFIGURE_DEPENDS
     "${CMAKE_CURRENT_SOURCE_DIR}/src/*.rs")
set(_mcshm_cargo_deps ${_mcshm_rust_sources} "${CMAKE_CURRENT_SOURCE_DIR}/Cargo.toml")
foreach(_f Cargo.lock build.rs)
  if(EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${_f}")
    list(APPEND _mcshm_cargo_deps "${CMAKE_CURRENT_SOURCE_DIR}/${_f}")
  endif()
endforeach()

# Loops start on a 64-byte boundary (LLVM pads before them; the crate's own
# code only, not its dependencies). Without it, the batch relocate's unrolled
# loop sped up or slowed down by 5-8% whenever an unrelated change moved it by
# 16 bytes (1.84-1.93 vs 1.95-2.09 ns per address, shm_address_lookup_bench,
# same table code); with it, both layouts measure the same. The padding runs
# where a hot path falls into a loop: the pool's spinlock and offset-index
# probes (callgrind: 171 -> 177 instructions per pool alloc+free, no change in
# time measured), not the thread cache's pair, whose free keeps its probe loop
# off the fast path for this reason (ThreadCache::free_kept_at_home).
set(_mcshm_rustc_flags -C llvm-args=-align-loops=64)
list(APPEND _mcshm_cargo_deps "${CMAKE_CURRENT_LIST_FILE}")  # the flags above

add_custom_command(
  OUTPUT "${MOONCAKE_SHM_STATICLIB}"
  COMMAND ${CMAKE_COMMAND} -E env "CARGO_TARGET_DIR=${MOONCAKE_SHM_CARGO_TARGET_DIR}"
          "${CARGO_EXECUTABLE}" rustc --lib --features capi --crate-type staticlib
          ${_mcshm_cargo_profile_flag}
          --manifest-path "${CMAKE_CURRENT_SOURCE_DIR}/Cargo.toml"
          -- ${_mcshm_rustc_flags}
  DEPENDS ${_mcshm_cargo_deps}
  WORKING_DIRECTORY "${CMAKE_CURRENT_SOURCE_DIR}"
  COMMENT "cargo: building the mooncake_shm Rust staticlib (${_mcshm_cargo_profile_dir})"
  USES_TERMINAL
  VERBATIM)
add_custom_target(mooncake_shm_cargo DEPENDS "${MOONCAKE_SHM_STATICLIB}")

# The raw archive, as an imported target that depends on the cargo step.
add_library(mooncake_shm_rust STATIC IMPORTED GLOBAL)
set_target_properties(mooncake_shm_rust PROPERTIES
  IMPORTED_LOCATION "${MOONCAKE_SHM_STATICLIB}")
add_dependencies(mooncake_shm_rust mooncake_shm_cargo)

# The public target: archive + headers + the native libs the staticlib needs
# (`cargo rustc -- --print native-static-libs`: gcc_s util rt pthread m dl c;
# gcc_s and c come with the C++ driver, util is empty on glibc >= 2.34).
add_library(mooncake_shm INTERFACE)
target_include_directories(mooncake_shm INTERFACE
  "$<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>"
  "$<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/cpp/include>")
target_link_libraries(mooncake_shm INTERFACE
  mooncake_shm_rust Threads::Threads ${CMAKE_DL_LIBS} m rt)
add_library(mooncake_shm::mooncake_shm ALIAS mooncake_shm)
