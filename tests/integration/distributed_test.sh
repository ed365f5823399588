#!/usr/bin/env bash
# Distributed LUs (issue 9; docs/DISTRIBUTED.md): a front zumad whose LU 0 is striped over
# three remote sub-units (two other zumad processes and one tgtd) and whose LU 1 mirrors a
# local file with a LUN of a remote zumad. Checked with qemu-img (libiscsi inside qemu):
#  1. the striped LU written and compared; each sub-unit holds its stripe units;
#  2. a sub-unit zumad killed mid-write: the write fails (NOT READY, never a hang), reads of
#     its units fail promptly; restarted: the front logs in again and the LU is whole again;
#  3. the mirror's remote member killed, the LU written while it is out, restarted: it is
#     resynchronised by itself and holds the new data.
# Usage: distributed_test.sh ZUMAD. Only 127.0.0.1; every process is stopped by its PID.
set -euo pipefail
ZUMAD=${1:?usage: $0 ZUMAD}
source "$(dirname "$0")/zumad-lib.sh"
for tool in qemu-img qemu-io tgtd tgtadm python3; do
  command -v "$tool" >/dev/null || { echo "$tool not installed" >&2; exit 1; }
done

zuma_init  # $ZUMA_DIR, cleanup of the front zumad ($ZUMA_PID)
declare -A PIDS=()
TGT_SOCK="$ZUMA_DIR/tgt/ipc"
tgtadm_() { TGT_IPC_SOCKET=$TGT_SOCK timeout 10 tgtadm --lld iscsi "$@"; }
stop_pid() {  # stop_pid PID: SIGTERM, SIGKILL after 10 s
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup_all() {
  local rc=$?
  set +e
  [[ -n "${PIDS[tgt]:-}" ]] && TGT_IPC_SOCKET=$TGT_SOCK timeout 3 tgtadm --op delete --mode system >/dev/null 2>&1
  for name in "${!PIDS[@]}"; do stop_pid "${PIDS[$name]}"; done
  if [[ $rc -ne 0 ]]; then
    for log in "$ZUMA_DIR"/remote-*.log "$ZUMA_DIR"/tgtd.log; do
      [[ -f $log ]] && { echo "----- $log -----" >&2; tail -n 40 "$log" >&2; }
    done
  fi
  (exit $rc)
  zuma_cleanup
}
trap cleanup_all EXIT
fail() { zuma_log "FAIL: $*"; exit 1; }

# A remote zumad: NAME PORT, LUN 0 = 16 MiB file (a stripe sub-unit), LUN 1 = 16 MiB + 4 KiB
# file (a mirror member: the sub-unit and the member header).
remote_config() {
  local name=$1 port=$2
  mkdir -p "$ZUMA_DIR/$name"
  cat >"$ZUMA_DIR/$name.yaml" <<YAML
node: { name: $name, data_dir: $ZUMA_DIR/$name/var, reactors: 1, log_level: info }
portals: [ "127.0.0.1:$port" ]
targets:
  - iqn: iqn.2026-11.org.zuma:$name
    luns:
      - { id: 0, name: s, size: 16MiB, backend: file, path: $ZUMA_DIR/$name/s.img }
      - { id: 1, name: m, size: 16388KiB, backend: file, path: $ZUMA_DIR/$name/m.img }
YAML
}
start_remote() {  # start_remote NAME PORT
  local name=$1 port=$2
  (cd "$ZUMA_DIR" && exec "$ZUMAD" --config "$ZUMA_DIR/$name.yaml") >>"$ZUMA_DIR/remote-$name.log" 2>&1 &
  PIDS[$name]=$!
  local deadline=$((SECONDS + 10))
  until zuma_port_open "$port"; do
    kill -0 "${PIDS[$name]}" 2>/dev/null || fail "remote $name exited at start"
    ((SECONDS < deadline)) || fail "remote $name does not listen on $port"
    sleep 0.05
  done
}

PORT_A=$(zuma_free_port); PORT_B=$(zuma_free_port); PORT_T=$(zuma_free_port); PORT=$(zuma_free_port)
remote_config ra "$PORT_A"; remote_config rb "$PORT_B"
start_remote ra "$PORT_A"; start_remote rb "$PORT_B"

# tgtd as bench/compare starts it: private control socket, free port, killed by PID.
mkdir -p "$ZUMA_DIR/tgt"
truncate -s 16M "$ZUMA_DIR/tgt/s.img"
(cd "$ZUMA_DIR/tgt" && exec env TGT_IPC_SOCKET="$TGT_SOCK" tgtd -f --iscsi "portal=127.0.0.1:$PORT_T") \
  >>"$ZUMA_DIR/tgtd.log" 2>&1 &
PIDS[tgt]=$!
for i in $(seq 100); do
  tgtadm_ --mode target --op new --tid 1 --targetname iqn.2026-11.org.tgt:s 2>/dev/null && break
  [[ $i == 100 ]] && fail "tgtd did not start"
  sleep 0.1
done
tgtadm_ --mode logicalunit --op new --tid 1 --lun 1 --bstype rdwr --backing-store "$ZUMA_DIR/tgt/s.img"
tgtadm_ --mode target --op bind --tid 1 --initiator-address ALL

cat >"$ZUMA_DIR/front.yaml" <<YAML
node: { name: front, data_dir: $ZUMA_DIR/var, reactors: 2, log_level: info }
portals: [ "127.0.0.1:$PORT" ]
targets:
  - iqn: iqn.2026-11.org.zuma:front
    luns:
      - id: 0
        name: striped
        size: 48MiB
        layout: striped
        stripe_unit: 64KiB
        subunits:
          - { backend: iscsi, url: "iscsi://127.0.0.1:$PORT_A/iqn.2026-11.org.zuma:ra/0", timeout: 5 }
          - { backend: iscsi, url: "iscsi://127.0.0.1:$PORT_B/iqn.2026-11.org.zuma:rb/0", timeout: 5 }
          - { backend: iscsi, url: "iscsi://127.0.0.1:$PORT_T/iqn.2026-11.org.tgt:s/1", timeout: 5 }
      - id: 1
        name: mirrored
        size: 16MiB
        subunits:
          - mirror:
              - { backend: file, path: $ZUMA_DIR/m0.img }
              - { backend: iscsi, url: "iscsi://127.0.0.1:$PORT_A/iqn.2026-11.org.zuma:ra/1", timeout: 5 }
YAML
zuma_start "$ZUMA_DIR/front.yaml" "$PORT"
URL0="iscsi://127.0.0.1:$PORT/iqn.2026-11.org.zuma:front/0"
URL1="iscsi://127.0.0.1:$PORT/iqn.2026-11.org.zuma:front/1"
wait_log() {  # wait_log PATTERN SECONDS
  local deadline=$((SECONDS + $2))
  until grep -q "$1" "$ZUMA_DIR/zumad.log"; do
    ((SECONDS < deadline)) || fail "no '$1' in the front's log after $2 s"
    sleep 0.2
  done
}
# The new mirror copies member 0 to member 1 first.
wait_log "member 1 resynchronised" 60

# ---- 1. striped over two zumads and a tgtd ----
head -c 48M /dev/urandom >"$ZUMA_DIR/r1.img"
zuma_log "qemu-img convert r1.img -> $URL0"
qemu-img convert -n -f raw -O raw "$ZUMA_DIR/r1.img" "$URL0" || fail "convert to the striped LU"
qemu-img compare -f raw -F raw "$ZUMA_DIR/r1.img" "$URL0" || fail "compare with the striped LU"
# Unit u (64 KiB) lies on sub-unit u % 3 at (u / 3) * 64 KiB.
python3 - "$ZUMA_DIR/r1.img" "$ZUMA_DIR/ra/s.img" "$ZUMA_DIR/rb/s.img" "$ZUMA_DIR/tgt/s.img" <<'PY' || fail "stripe units are not where the layout puts them"
import sys
img = open(sys.argv[1], 'rb').read()
parts = [open(p, 'rb').read() for p in sys.argv[2:5]]
U = 64 << 10
for u in range(len(img) // U):
    p, at = u % 3, (u // 3) * U
    if parts[p][at:at + U] != img[u * U:(u + 1) * U]:
        sys.exit(f"unit {u} is not at sub-unit {p} offset {at}")
PY
zuma_log "striped LU: written, compared, every unit in place"

# ---- 2. a sub-unit killed mid-write, restarted ----
head -c 48M /dev/urandom >"$ZUMA_DIR/r2.img"
zuma_log "killing remote ra (pid ${PIDS[ra]}) during qemu-img convert"
# At 8 MiB/s the 48 MiB take 6 s: the kill lands in the middle.
qemu-img convert -r 8M -n -f raw -O raw "$ZUMA_DIR/r2.img" "$URL0" >"$ZUMA_DIR/convert2.log" 2>&1 &
CONVERT=$!
sleep 1.5
kill -KILL "${PIDS[ra]}"; wait "${PIDS[ra]}" 2>/dev/null || true; unset 'PIDS[ra]'
start=$SECONDS
rc=0; wait "$CONVERT" || rc=$?
((SECONDS - start < 30)) || fail "qemu-img convert took $((SECONDS - start)) s to fail: a hang"
# NOT READY, LOGICAL UNIT IS IN PROCESS OF BECOMING READY (SPC-5: 04h/01h). (qemu-img 7.2
# reports each failed write and carries on, so its exit status says nothing.)
grep -q "NOT READY(2) ASCQ:(null)(0x0401)" "$ZUMA_DIR/convert2.log" ||
  fail "the writes to the dead sub-unit did not fail with NOT READY 04h/01h: $(head -c 2000 "$ZUMA_DIR/convert2.log")"
head -n 2 "$ZUMA_DIR/convert2.log" >&2
start=$SECONDS
out=$(timeout 30 qemu-io -f raw -c "read 0 64k" "$URL0" 2>&1) || true
grep -q "NOT READY(2) ASCQ:(null)(0x0401)" <<<"$out" ||
  fail "a read of a unit on the dead sub-unit did not fail with NOT READY 04h/01h: $out"
((SECONDS - start < 20)) || fail "the read took $((SECONDS - start)) s to fail"
wait_log "I/O fails with NOT READY" 10
# The failed read carried NOT READY / 04h/01h: a read of a unit on a live sub-unit works.
timeout 30 qemu-io -f raw -c "read 64k 64k" "$URL0" >/dev/null || fail "a unit on a live sub-unit cannot be read"
zuma_log "writes and reads of the dead sub-unit failed with NOT READY at once; restarting ra"
start_remote ra "$PORT_A"
wait_log "logged in again" 30
qemu-img convert -n -f raw -O raw "$ZUMA_DIR/r2.img" "$URL0" || fail "convert after the restart"
qemu-img compare -f raw -F raw "$ZUMA_DIR/r2.img" "$URL0" || fail "compare after the restart"
zuma_log "striped LU whole again after the sub-unit restart"

# ---- 3. the mirror's remote member killed, written while out, restarted ----
head -c 16M /dev/urandom >"$ZUMA_DIR/m1.img"
head -c 16M /dev/urandom >"$ZUMA_DIR/m2.img"
qemu-img convert -n -f raw -O raw "$ZUMA_DIR/m1.img" "$URL1" || fail "convert to the mirror"
zuma_log "killing remote ra (the mirror's member 1)"
kill -KILL "${PIDS[ra]}"; wait "${PIDS[ra]}" 2>/dev/null || true; unset 'PIDS[ra]'
# The first write that reaches the dead member marks it out; the LU carries on.
qemu-img convert -n -f raw -O raw "$ZUMA_DIR/m2.img" "$URL1" || fail "convert to the degraded mirror"
qemu-img compare -f raw -F raw "$ZUMA_DIR/m2.img" "$URL1" || fail "compare with the degraded mirror"
grep -q "member 1 (iscsi:.*) is out" "$ZUMA_DIR/zumad.log" || fail "member 1 was not marked out"
resyncs=$(grep -c "member 1 resynchronised" "$ZUMA_DIR/zumad.log")
start_remote ra "$PORT_A"
deadline=$((SECONDS + 60))
until (( $(grep -c "member 1 resynchronised" "$ZUMA_DIR/zumad.log") > resyncs )); do
  ((SECONDS < deadline)) || fail "member 1 was not resynchronised within 60 s"
  sleep 0.2
done
grep "member 1 .* is back" "$ZUMA_DIR/zumad.log" | tail -n 1 >&2
# The member itself (its first 16 MiB; a header follows) holds what was written while it was out.
cmp -n 16777216 "$ZUMA_DIR/m2.img" "$ZUMA_DIR/ra/m.img" || fail "the resynchronised member differs"
cmp -n 16777216 "$ZUMA_DIR/m2.img" "$ZUMA_DIR/m0.img" || fail "member 0 differs"
qemu-img compare -f raw -F raw "$ZUMA_DIR/m2.img" "$URL1" || fail "compare with the mirror"

zuma_log "stopping the front zumad"
rc=0; zuma_stop || rc=$?
[[ $rc -eq 0 ]] || fail "front zumad exit status $rc"
zuma_log "PASS"
