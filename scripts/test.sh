#!/usr/bin/env bash
# The CI run (.ci/run calls it). Run as root on Debian 12:
#   sudo bash scripts/test.sh
# 1. installs the dependencies, 2. builds build/ (RelWithDebInfo) and runs every ctest test
# (unit, integration, conformance, fault, ceph), 3. builds build-asan/ with clang 16 and
# -DZUMA_SANITIZE=address,undefined and runs the unit and integration tests again there
# (ZUMA_ASAN_LABELS adds others: the conformance and Ceph runs are long and exercise the
# same code paths as the integration tests; kept out to stay inside CI's time),
# 4. builds the libFuzzer targets (clang 16, ASan + UBSan, build-fuzz/), runs each for
# ZUMA_FUZZ_RUNS inputs (tests/fuzz/run.sh: a crash, leak or invariant failure fails it)
# and replays their seeds and reproducers (ctest -L fuzz).
# Exits non-zero if any step or test failed. Environment:
#   ZUMA_TEST_JOBS=N      ctest parallelism (default 2)
#   ZUMA_SKIP_ASAN=1      skip step 3
#   ZUMA_ASAN_LABELS=RE   labels for step 3 (default 'unit|integration')
#   ZUMA_SKIP_FUZZ=1      skip step 4
#   ZUMA_FUZZ_RUNS=N      inputs per fuzz target in step 4 (default 2000)
set -uo pipefail
cd "$(dirname "$0")/.."

JOBS=${ZUMA_TEST_JOBS:-2}
ASAN_LABELS=${ZUMA_ASAN_LABELS:-unit|integration}
failed=()
summary=()
t0=$SECONDS

note() { printf '\n=== %s (%ds) ===\n' "$*" $((SECONDS - t0)); }

# run_ctest NAME BUILD_DIR [ctest args...]: runs ctest, keeps its summary lines.
run_ctest() {
  local name=$1 dir=$2; shift 2
  local log=$dir/ctest-output.log rc=0
  (cd "$dir" && ctest --output-on-failure -j"$JOBS" "$@") 2>&1 | tee "$log" || true
  rc=${PIPESTATUS[0]}
  # ctest's own verdict lines, and the failed-test list if any.
  summary+=("--- $name ---")
  while IFS= read -r l; do summary+=("$l"); done < <(
    grep -E '^[0-9]+% tests passed|^Total Test time|^The following tests FAILED|^[[:space:]]+[0-9]+ - ' "$log" |
    grep -v -E '^[[:space:]]+[0-9]+/[0-9]+ Test')
  grep -q -E '^100% tests passed' "$log" || rc=1
  return $rc
}

note "install dependencies"
if ! bash scripts/install-deps.sh; then
  echo "install-deps failed" >&2
  exit 1
fi

note "build (build/, RelWithDebInfo)"
if bash scripts/build.sh build; then
  note "ctest build/ (all labels)"
  run_ctest "build/ (RelWithDebInfo): all tests" build || failed+=("ctest build/")
else
  failed+=("build build/")
fi

if [[ ${ZUMA_SKIP_ASAN:-0} == 0 ]]; then
  note "build (build-asan/, address+undefined sanitizers)"
  # clang 16 (installed for the fuzz step too), -O0 -g1: the sanitizers need no
  # optimisation to find what they find and report lines. On two cores clang builds this
  # tree in about 360 s where GCC 12 took about 500 s at -O0 (709 s at -O1); the tests run
  # about as fast. GCC's -Wall -Wextra -Werror build is step 2; this one adds clang's.
  # Only what the labels run here need: not the benchmark tool, the fault and Ceph tests.
  asan_cc=() asan_symbolizer=""
  if command -v clang++-16 >/dev/null; then
    asan_cc=(-DCMAKE_C_COMPILER=clang-16 -DCMAKE_CXX_COMPILER=clang++-16)
    source scripts/clang-env.sh
    asan_symbolizer=$(zuma_llvm_symbolizer clang++-16)
  fi
  asan_skip=""
  [[ $ASAN_LABELS == "unit|integration" ]] &&
    asan_skip='zuma-bench|fault_snapshot_crash|fault_zumad_kill_cycles|fault_replication|it_rbd_backend'
  if ZUMA_BUILD_SKIP=$asan_skip bash scripts/build.sh build-asan -DZUMA_SANITIZE=address,undefined \
      "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O0 -g1 -DNDEBUG" "${asan_cc[@]}"; then
    note "ctest build-asan/ (labels: $ASAN_LABELS)"
    # Sanitizer reports fail the process (-fno-sanitize-recover=all, exit code != 0).
    export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1:strict_string_checks=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
    # Stacks with function names and lines (clang's runtime looks for llvm-symbolizer).
    [[ -n $asan_symbolizer ]] && export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-$asan_symbolizer}
    run_ctest "build-asan/ (address,undefined): labels $ASAN_LABELS" build-asan -L "$ASAN_LABELS" \
      || failed+=("ctest build-asan/")
  else
    failed+=("build build-asan/")
  fi
fi

if [[ ${ZUMA_SKIP_FUZZ:-0} == 0 ]]; then
  note "fuzz smoke (build-fuzz/, ${ZUMA_FUZZ_RUNS:-2000} inputs per target)"
  fuzz_log=$(mktemp)
  ZUMA_FUZZ_RUNS=${ZUMA_FUZZ_RUNS:-2000} ZUMA_FUZZ_BUILD=build-fuzz bash tests/fuzz/run.sh 2>&1 |
    tee "$fuzz_log"
  fuzz_rc=${PIPESTATUS[0]}
  summary+=("--- fuzz smoke (tests/fuzz/run.sh) ---")
  while IFS= read -r l; do summary+=("$l"); done < <(grep -E '^fuzz_[a-z_]+: ' "$fuzz_log")
  rm -f "$fuzz_log"
  if ((fuzz_rc != 0)); then
    failed+=("fuzz smoke")
  else
    note "ctest build-fuzz/ (label fuzz: seeds and reproducers)"
    run_ctest "build-fuzz/: label fuzz" build-fuzz -L fuzz || failed+=("ctest build-fuzz/")
  fi
fi

note "summary"
printf '%s\n' "${summary[@]}"
echo "total time: $((SECONDS - t0)) s"
if ((${#failed[@]})); then
  printf 'FAILED: %s\n' "${failed[@]}"
  exit 1
fi
echo "ALL PASSED"
