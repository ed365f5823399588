#!/usr/bin/env bash
# The CI run (.ci/run calls it). Run as root on Debian 12:
#   sudo bash scripts/test.sh
# 1. installs the dependencies, 2. builds build/ (RelWithDebInfo) and runs every ctest test
# (unit, integration, conformance, fault, ceph), 3. builds build-asan/ with
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
#   ZUMA_CI_OVERLAP=0     build build-asan/ and build-fuzz/ after, not beside, the tests before
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

# Overlap: while one stage's tests run (they wait on sockets and processes much of the time:
# about one CPU of two), the next stage's build runs beside them at nice 19, so it takes
# only the CPU the tests leave idle and does not slow them. ZUMA_CI_OVERLAP=0 runs every
# step in turn.
OVERLAP=${ZUMA_CI_OVERLAP:-1}
bg_pid=""
# bg_start LOG FUNC: runs FUNC in the background at the lowest CPU priority, output to LOG.
bg_start() {
  local log=$1 fn=$2
  ( renice -n 19 -p "$BASHPID" >/dev/null; "$fn" ) >"$log" 2>&1 &
  bg_pid=$!
}
# bg_finish LOG: waits for the background build; prints its log (all of it if it failed).
bg_finish() {
  local log=$1 rc=0
  wait "$bg_pid" || rc=$?
  if ((rc == 0)); then tail -n 5 "$log"; else cat "$log"; fi
  rm -f "$log"
  return $rc
}

# The sanitizer build: -O0 -g1, since the sanitizers need no optimisation to find what they
# find and report lines; on two cores it compiles in about a quarter less time than -O1
# (525 s against 709 s here) and the tests run about as fast (194 s against 181 s).
# Only what the labels run here need: not the benchmark tool, the fault and Ceph tests.
asan_skip=""
[[ $ASAN_LABELS == "unit|integration" ]] &&
  asan_skip='zuma-bench|fault_snapshot_crash|fault_zumad_kill_cycles|fault_replication|it_rbd_backend'
asan_build() {
  ZUMA_BUILD_SKIP=$asan_skip bash scripts/build.sh build-asan -DZUMA_SANITIZE=address,undefined \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O0 -g1 -DNDEBUG"
}
fuzz_build() {
  ZUMA_FUZZ_BUILD_ONLY=1 ZUMA_FUZZ_BUILD=build-fuzz bash tests/fuzz/run.sh
}
want_asan=$((${ZUMA_SKIP_ASAN:-0} == 0))
want_fuzz=$((${ZUMA_SKIP_FUZZ:-0} == 0))
asan_log=$(mktemp) fuzz_build_log=$(mktemp)

note "build (build/, RelWithDebInfo)"
if bash scripts/build.sh build; then
  if ((OVERLAP && want_asan)); then
    note "build-asan/ builds in the background (nice 19) while build/'s tests run"
    bg_start "$asan_log" asan_build
  fi
  note "ctest build/ (all labels)"
  run_ctest "build/ (RelWithDebInfo): all tests" build || failed+=("ctest build/")
else
  failed+=("build build/")
fi

if ((want_asan)); then
  note "build (build-asan/, address+undefined sanitizers)"
  asan_ok=1
  if [[ -n $bg_pid ]]; then
    bg_finish "$asan_log" || asan_ok=0
    bg_pid=""
  else
    asan_build || asan_ok=0
  fi
  if ((asan_ok)); then
    if ((OVERLAP && want_fuzz)); then
      note "build-fuzz/ builds in the background (nice 19) while build-asan/'s tests run"
      bg_start "$fuzz_build_log" fuzz_build
    fi
    note "ctest build-asan/ (labels: $ASAN_LABELS)"
    # Sanitizer reports fail the process (-fno-sanitize-recover=all, exit code != 0).
    ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1:strict_string_checks=1} \
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
      run_ctest "build-asan/ (address,undefined): labels $ASAN_LABELS" build-asan -L "$ASAN_LABELS" \
      || failed+=("ctest build-asan/")
  else
    failed+=("build build-asan/")
  fi
fi

if ((want_fuzz)); then
  note "fuzz smoke (build-fuzz/, ${ZUMA_FUZZ_RUNS:-2000} inputs per target)"
  # A failed background build is built again here, in the foreground, where its errors show.
  if [[ -n $bg_pid ]]; then bg_finish "$fuzz_build_log" || true; bg_pid=""; fi
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
rm -f "$asan_log" "$fuzz_build_log"

note "summary"
printf '%s\n' "${summary[@]}"
echo "total time: $((SECONDS - t0)) s"
if ((${#failed[@]})); then
  printf 'FAILED: %s\n' "${failed[@]}"
  exit 1
fi
echo "ALL PASSED"
