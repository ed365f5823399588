#!/usr/bin/env bash
# CI smoke test for zuma-bench against zumad: checks that the tool runs end to end and
# that zumad returns every block intact. It asserts NO performance figure (those live in
# bench/compare and docs/PERFORMANCE.md).
#
#   bench/smoke.sh ZUMAD ZUMA_BENCH
#
# Starts zumad on 127.0.0.1 (a free port) with a memory-backed LUN, runs
#   zuma-bench --pattern randrw --sessions 2 --verify --time 2 --json
# and requires exit status 0, "ios" > 0, "errors" == 0, "verify_failures" == 0 and
# "verified_blocks" > 0. A second run with a sequential 128 KiB read checks the other
# --verify path (write the range first, then verify reads).
set -euo pipefail
ZUMAD=${1:?usage: $0 ZUMAD ZUMA_BENCH}
BENCH=${2:?usage: $0 ZUMAD ZUMA_BENCH}
source "$(dirname "$0")/lib.sh"
[[ -x "$ZUMAD" ]] || bench_die "zumad not found at $ZUMAD"
[[ -x "$BENCH" ]] || bench_die "zuma-bench not found at $BENCH"

bench_init smoke
PORT=$(bench_free_port)
IQN=iqn.2026-11.org.zuma:smoke
cat >"$BENCH_DIR/zumad.yaml" <<YAML
node: { name: bench-smoke, data_dir: $BENCH_DIR/var, reactors: 2, log_level: warn }
portals: [ "127.0.0.1:$PORT" ]
targets:
  - iqn: $IQN
    luns:
      - { id: 0, name: smoke0, size: 64MiB, backend: memory }
YAML
mkdir -p "$BENCH_DIR/var"
bench_spawn zumad "$ZUMAD" --config "$BENCH_DIR/zumad.yaml"
ZPID=$BENCH_LAST_PID
if ! bench_wait_port "$ZPID" "$PORT" 10; then
  cat "$BENCH_DIR/zumad.log" >&2
  bench_die "zumad did not start on 127.0.0.1:$PORT"
fi
URL="iscsi://127.0.0.1:$PORT/$IQN/0"

fail=0
check_run() {  # check_run NAME ARGS...
  local name=$1; shift
  local out="$BENCH_DIR/$name.json" rc=0
  bench_log "zuma-bench $URL $*"
  bench_run timeout 120 "$BENCH" "$URL" "$@" --json >"$out" 2>"$BENCH_DIR/$name.err" || rc=$?
  cat "$out"
  cat "$BENCH_DIR/$name.err" >&2
  local ios errors vfail verified
  ios=$(json_get "$out" ios); errors=$(json_get "$out" errors)
  vfail=$(json_get "$out" verify_failures); verified=$(json_get "$out" verified_blocks)
  if [[ $rc -ne 0 ]]; then bench_log "FAIL $name: zuma-bench exit status $rc"; fail=1; fi
  if [[ -z "$ios" || "$ios" -le 0 ]]; then bench_log "FAIL $name: no I/O done (ios=$ios)"; fail=1; fi
  if [[ "$errors" != 0 ]]; then bench_log "FAIL $name: errors=$errors"; fail=1; fi
  if [[ "$vfail" != 0 ]]; then bench_log "FAIL $name: verify_failures=$vfail"; fail=1; fi
  if [[ -z "$verified" || "$verified" -le 0 ]]; then
    bench_log "FAIL $name: nothing verified (verified_blocks=$verified)"; fail=1
  fi
}

check_run randrw --pattern randrw --rwmix 50 --bs 4k --qd 8 --sessions 2 --verify --time 2 --range 16MiB
check_run seqread --pattern read --bs 128k --qd 4 --sessions 2 --verify --time 1 --range 8MiB

if ! kill -0 "$ZPID" 2>/dev/null; then
  bench_log "FAIL: zumad is no longer running"; fail=1
fi
if [[ $fail -ne 0 ]]; then
  echo "----- zumad log -----" >&2; tail -n 100 "$BENCH_DIR/zumad.log" >&2
  exit 1
fi
bench_stop "$ZPID"
bench_log "PASS"
