#!/usr/bin/env bash
# Configures and builds Zuma with CMake + Ninja.
#   scripts/build.sh [BUILD_DIR] [extra cmake args...]
# BUILD_DIR defaults to build/ (relative to the repository root); the build type defaults
# to RelWithDebInfo. Example: scripts/build.sh build-asan -DZUMA_SANITIZE=address,undefined
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${1:-build}
(($#)) && shift
[[ $BUILD_DIR == -* ]] && { echo "usage: $0 [BUILD_DIR] [cmake args...]" >&2; exit 2; }

args=(-S . -B "$BUILD_DIR" -G Ninja)
# Keep an existing build type unless one is given explicitly.
if [[ " $* " != *" -DCMAKE_BUILD_TYPE="* ]] && ! grep -qs '^CMAKE_BUILD_TYPE:' "$BUILD_DIR/CMakeCache.txt"; then
  args+=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
fi
cmake "${args[@]}" "$@" >/dev/null
ninja -C "$BUILD_DIR" ${ZUMA_BUILD_JOBS:+-j"$ZUMA_BUILD_JOBS"}
