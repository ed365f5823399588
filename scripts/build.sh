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
# ZUMA_BUILD_SKIP=REGEX: build every executable whose name does not match (and what they
# need) instead of everything; the sanitizer stage of scripts/test.sh skips those only
# the labels it does not run use.
targets=()
if [[ -n ${ZUMA_BUILD_SKIP:-} ]]; then
  mapfile -t targets < <(ninja -C "$BUILD_DIR" -t targets all |
    sed -n 's/^\([^:]*\): CXX_EXECUTABLE_LINKER.*/\1/p' | grep -Ev "(^|/)($ZUMA_BUILD_SKIP)\$")
  ((${#targets[@]})) || { echo "build.sh: ZUMA_BUILD_SKIP leaves nothing to build" >&2; exit 2; }
fi
ninja -C "$BUILD_DIR" ${ZUMA_BUILD_JOBS:+-j"$ZUMA_BUILD_JOBS"} "${targets[@]}"
