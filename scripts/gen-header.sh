#!/usr/bin/env bash
# Regenerates include/mooncake_shm.h from src/ffi.rs with cbindgen (build.rs, feature gen-header).
set -euo pipefail
cd "$(dirname "$0")/.."
MCSHM_UPDATE_HEADER=1 cargo build --quiet --lib --features gen-header
echo "include/mooncake_shm.h is up to date"
