#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, -DZUMA_FUZZ=ON, ASan + UBSan) in their own build
# directory and runs each for a fixed number of inputs.
#
#   bash tests/fuzz/run.sh                 # every target, ZUMA_FUZZ_RUNS inputs each
#   bash tests/fuzz/run.sh fuzz_pdu_stream -max_total_time=300   # one target, 5 minutes
#
# Arguments: target names (default: all five), then any libFuzzer flags (-name=value),
# which replace the default -runs.
# Environment:
#   ZUMA_FUZZ_RUNS=N    inputs per target (default 20000)
#   ZUMA_FUZZ_BUILD=DIR build directory (default build-fuzz)
#   CC, CXX             compilers (default clang-16/clang++-16, else clang/clang++)
#   ZUMA_FUZZ_JOBS=N    ninja parallelism (default: ninja's)
#   ZUMA_FUZZ_PER_INPUT_LEAKS=1  libFuzzer's leak check after every input that allocated more
#                       than it freed (-detect_leaks=1), which names the input that leaked.
#                       Off by default: it scans the whole heap, 15-20 ms an input for the
#                       targets with a server (1,000 against 58 inputs a second for
#                       fuzz_pdu_stream). A leak still fails the run: LeakSanitizer's check
#                       at exit reports it with the allocation's stack.
#
# Each target starts from its seeds (tests/fuzz/corpus/<target>, read only) and adds what
# it finds to DIR/corpus-work/<target>. A crash, leak, timeout or out-of-memory writes its
# input to DIR/artifacts/<target>/ (reproduce: DIR/<target> FILE) and makes the script exit
# non-zero. Fixed seed (-seed=1), so runs are reproducible.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

all_targets=(fuzz_text_keys fuzz_pdu_stream fuzz_scsi_dispatch fuzz_replica_stream fuzz_site_link)
targets=()
flags=()
for a in "$@"; do
  case $a in
    -*) flags+=("$a") ;;
    *) targets+=("$a") ;;
  esac
done
((${#targets[@]})) || targets=("${all_targets[@]}")
runs=${ZUMA_FUZZ_RUNS:-20000}
((${#flags[@]})) || flags=("-runs=$runs")
build=${ZUMA_FUZZ_BUILD:-build-fuzz}
[[ $build = /* ]] || build=$root/$build

if [[ -z ${CC:-} || -z ${CXX:-} ]]; then
  if command -v clang++-16 >/dev/null; then
    export CC=clang-16 CXX=clang++-16
  else
    export CC=clang CXX=clang++
  fi
fi
command -v "$CXX" >/dev/null || { echo "run.sh: $CXX not found (apt-get install clang-16 libclang-rt-16-dev)" >&2; exit 2; }

# -O1 -g1 and asserts on: builds in 166 s instead of 195 s here (-O2 -g -DNDEBUG), and an
# assert that fails is a finding.
cmake_args=(-S "$root" -B "$build" -G Ninja -DZUMA_FUZZ=ON -DZUMA_WERROR=OFF
            -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1"
            -DCMAKE_C_COMPILER="$CC" -DCMAKE_CXX_COMPILER="$CXX")
# Until tests/CMakeLists.txt adds the fuzz directory itself, bring it in from here.
if ! grep -qs 'add_subdirectory(fuzz)' tests/CMakeLists.txt CMakeLists.txt; then
  mkdir -p "$build"
  printf 'cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL include %s)\n' \
    "$root/tests/fuzz/CMakeLists.txt" >"$build/zuma-fuzz-include.cmake"
  cmake_args+=(-DCMAKE_PROJECT_zuma_INCLUDE="$build/zuma-fuzz-include.cmake")
fi
echo "=== configure $build ($CXX)"
cmake "${cmake_args[@]}" >"$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 2; }
echo "=== build ${targets[*]}"
ninja -C "$build" ${ZUMA_FUZZ_JOBS:+-j"$ZUMA_FUZZ_JOBS"} "${targets[@]}" || exit 2

declare -A max_len=([fuzz_text_keys]=4096 [fuzz_pdu_stream]=16384 [fuzz_scsi_dispatch]=8192 [fuzz_replica_stream]=32768 [fuzz_site_link]=16384)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
# Stacks with function names and lines: the symbolizer of the compiler's LLVM.
source "$root/scripts/clang-env.sh"
if [[ -z ${ASAN_SYMBOLIZER_PATH:-} ]] && s=$(zuma_llvm_symbolizer "$CXX"); then
  export ASAN_SYMBOLIZER_PATH=$s
fi
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
summary=()
for t in "${targets[@]}"; do
  work=$build/corpus-work/$t
  art=$build/artifacts/$t
  mkdir -p "$work" "$art"
  log=$build/$t.log
  echo "=== run $t ${flags[*]} (log: $log)"
  start=$SECONDS
  "$build/$t" -seed=1 -max_len="${max_len[$t]:-4096}" -timeout=30 -rss_limit_mb=4096 \
    -detect_leaks="${ZUMA_FUZZ_PER_INPUT_LEAKS:-0}" \
    -print_final_stats=1 -artifact_prefix="$art/" "${flags[@]}" \
    "$work" "$root/tests/fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  secs=$((SECONDS - start))
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  if ((rc != 0)); then
    failed+=("$t")
    summary+=("$t: FAILED (exit $rc) after ${secs}s; ${execs:-?} inputs; see $log and $art/")
    grep -E 'ERROR|SUMMARY|invariant|==[0-9]+==|fuzz_[a-z_]+:' "$log" | head -20
  else
    summary+=("$t: ok, ${execs:-?} inputs in ${secs}s, ${cov:-cov: ?}")
  fi
done
echo "=== summary"
printf '%s\n' "${summary[@]}"
((${#failed[@]} == 0))
