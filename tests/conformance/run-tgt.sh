#!/usr/bin/env bash
# Measures libiscsi's conformance suite against zumad and against tgt (Debian's tgtd) in one
# run on this machine, for docs/COMPLIANCE.md:
#
#   run-tgt.sh --zumad PATH [--out DIR] [--timeout SECONDS]
#
# Both go through run-iscsi-test-cu.sh (same parser, same iscsi-test-cu -d -t ALL): zumad
# with its thin LU and fully provisioned LU and a second portal for the multipath URL (and
# its two short runs: pbs, a LU with 4 KiB physical blocks; ro, a write-protected LU);
# tgtd with a private control socket, a free 127.0.0.1 port, one 64 MiB file LU in /dev/shm
# fully provisioned and one with thin_provisioning=1 (tgt has one portal: the multipath URL
# names the same one). Prints one line per target and LU: passed, failed, skipped, not run.
# Logs: DIR/zuma and DIR/tgt (default DIR: a new directory under $TMPDIR or /tmp).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ZUMAD=""
OUT=""
TIMEOUT=300
while (($#)); do
  case $1 in
    --zumad) ZUMAD=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[[ -x "$ZUMAD" ]] || { echo "zumad not found: '$ZUMAD' (use --zumad)" >&2; exit 2; }
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/zuma-conformance-XXXXXX")}
mkdir -p "$OUT/zuma" "$OUT/tgt"

zrc=0
bash "$HERE/run-iscsi-test-cu.sh" --zumad "$ZUMAD" --out "$OUT/zuma" --timeout "$TIMEOUT" \
  >"$OUT/zuma/summary.txt" 2>&1 || zrc=$?
bash "$HERE/run-iscsi-test-cu.sh" --target tgt --out "$OUT/tgt" --timeout "$TIMEOUT" \
  >"$OUT/tgt/summary.txt" 2>&1

libiscsi=$(dpkg-query -W -f='${Version}' libiscsi-bin 2>/dev/null || echo unknown)
tgtver=$(dpkg-query -W -f='${Version}' tgt 2>/dev/null || echo unknown)
echo "iscsi-test-cu (libiscsi-bin $libiscsi) -d -t ALL, $(date -u +%Y-%m-%d), $(uname -m)"
printf '%-22s %-5s %7s %7s %8s %8s\n' target LU passed failed skipped "not run"
for t in zuma tgt; do
  runs="thin full"
  [[ $t == zuma ]] && runs="thin full pbs ro"  # the two short runs: 4 KiB physical blocks, read-only
  for run in $runs; do
    f=$OUT/$t/results-$run.txt
    [[ -f $f ]] || { printf '%-22s %-5s  (no results: see %s)\n' "$t" "$run" "$OUT/$t/summary.txt"; continue; }
    read -r p fl s n < <(awk '{ c[$1]++ } END { printf "%d %d %d %d\n", c["passed"], c["failed"], c["skipped"], c["notrun"] }' "$f")
    name=$t
    [[ $t == tgt ]] && name="tgt $tgtver"
    printf '%-22s %-5s %7d %7d %8d %8d\n' "$name" "$run" "$p" "$fl" "$s" "$n"
  done
done
echo "logs: $OUT (zumad's check against the lists: exit status $zrc)"
