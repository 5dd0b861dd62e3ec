#!/usr/bin/env bash
# Installs dependencies, configures, builds and runs every test tier that can run here (ctest).
# Usage: scripts/test.sh [extra ctest args], e.g. scripts/test.sh -L unit
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install_deps.sh
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo}
cmake --build "$BUILD_DIR" -j "$JOBS"
# Open MPI refuses root without these; oversubscribe lets 4-rank tests run on 2 cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
cd "$BUILD_DIR"
ctest --output-on-failure -j "$JOBS" "$@"
