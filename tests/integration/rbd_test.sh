#!/usr/bin/env bash
# LUs on Ceph RBD sub-units (issue 9) against a real single-node cluster (ceph-lib.sh):
# LU 0 on one image, LU 1 striped over two images. qemu-img writes a random image onto each
# and compares it; rbd export shows the bytes are in the images where the layout puts them;
# UNMAP and WRITE SAME (unmap/zero) through qemu-io read back as zeros, in the image too.
# Usage: rbd_test.sh ZUMAD
set -euo pipefail
ZUMAD=${1:?usage: $0 ZUMAD}
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/zumad-lib.sh"
source "$HERE/ceph-lib.sh"
for tool in qemu-img qemu-io; do
  command -v "$tool" >/dev/null || { echo "$tool not installed (qemu-utils)" >&2; exit 1; }
done

zuma_init
trap 'rc=$?; ceph_stop; (exit $rc); zuma_cleanup' EXIT
fail() { zuma_log "FAIL: $*"; exit 1; }

start=$SECONDS
ceph_start "$ZUMA_DIR" rbd || fail "the Ceph cluster did not come up"
for img in a s0 s1; do ceph_rbd create --size 64M "rbd/$img" || fail "rbd create $img"; done
zuma_log "Ceph cluster up, images created in $((SECONDS - start)) s"

PORT=$(zuma_free_port)
IQN=iqn.2026-11.org.zuma:rbd
rbd_su() {  # rbd_su IMAGE [TIMEOUT]: one sub-unit in flow style
  echo "{ backend: rbd, pool: rbd, image: $1, user: zuma, keyring: $CEPH_KEYRING, ceph_conf: $CEPH_CONF, timeout: ${2:-10} }"
}
cat >"$ZUMA_DIR/zumad.yaml" <<YAML
node: { name: rbd-it, data_dir: $ZUMA_DIR/var, reactors: 2, log_level: info }
portals: [ "127.0.0.1:$PORT" ]
targets:
  - iqn: $IQN
    luns:
      - { id: 0, name: a, size: 64MiB, block_size: 512, thin: true, subunits: [ $(rbd_su a 3) ] }
      - { id: 1, name: s, size: 64MiB, block_size: 512, thin: true, layout: striped, stripe_unit: 64KiB,
          subunits: [ $(rbd_su s0), $(rbd_su s1) ] }
YAML
zuma_start "$ZUMA_DIR/zumad.yaml" "$PORT"

head -c 64M /dev/urandom >"$ZUMA_DIR/random.img"
for lun in 0 1; do
  url="iscsi://127.0.0.1:$PORT/$IQN/$lun"
  zuma_log "qemu-img convert + compare on $url"
  qemu-img convert -n -f raw -O raw "$ZUMA_DIR/random.img" "$url" || fail "qemu-img convert to LUN $lun"
  qemu-img compare -f raw -F raw "$ZUMA_DIR/random.img" "$url" || fail "qemu-img compare LUN $lun"
done

# The bytes are in the images: LU a is image a; LU s alternates 64 KiB units over s0, s1.
ceph_rbd export rbd/a - 2>/dev/null | cmp - "$ZUMA_DIR/random.img" || fail "image a differs"
ceph_rbd export rbd/s0 "$ZUMA_DIR/s0.img" >/dev/null 2>&1 || fail "rbd export s0"
ceph_rbd export rbd/s1 "$ZUMA_DIR/s1.img" >/dev/null 2>&1 || fail "rbd export s1"
for unit in 0 1 2 3 1021 1022 1023; do  # unit u of the LU is unit u/2 of image s(u%2)
  cmp <(dd if="$ZUMA_DIR/random.img" bs=64K skip=$unit count=1 status=none) \
      <(dd if="$ZUMA_DIR/s$((unit % 2)).img" bs=64K skip=$((unit / 2)) count=1 status=none) ||
    fail "stripe unit $unit is not in image s$((unit % 2))"
done
# Sub-units hold half the LU each: the rest of each image was never written.
cmp <(head -c 32M /dev/zero) <(tail -c 32M "$ZUMA_DIR/s0.img") || fail "s0 beyond 32 MiB written"

# UNMAP (qemu-io discard) and WRITE SAME with UNMAP / zeros (write -z [-u]) read as zeros,
# through zumad and in the image; the bytes around them are intact. Unaligned to RBD's
# 4 MiB objects and to librbd's discard granularity.
URL0="iscsi://127.0.0.1:$PORT/$IQN/0"
zuma_log "qemu-io discard / write -z on $URL0"
out=$(qemu-io -f raw -c "discard 1028k 12k" -c "write -z -u 3076k 8k" -c "write -z 5124k 4k" \
      -c "read -P 0 1028k 12k" -c "read -P 0 3076k 8k" -c "read -P 0 5124k 4k" "$URL0" 2>&1) ||
  fail "qemu-io: $out"
grep -q -i "pattern verification failed\|fail" <<<"$out" && fail "qemu-io: $out"
ceph_rbd export rbd/a "$ZUMA_DIR/a.img" >/dev/null 2>&1 || fail "rbd export a"
want() { dd if="$ZUMA_DIR/random.img" bs=1k skip="$1" count="$2" status=none; }
got() { dd if="$ZUMA_DIR/a.img" bs=1k skip="$1" count="$2" status=none; }
for range in "1028 12" "3076 8" "5124 4"; do
  read -r off n <<<"$range"
  cmp <(got "$off" "$n") <(head -c "${n}K" /dev/zero) || fail "image a: ${n} KiB at ${off} KiB not zero"
  cmp <(got $((off - 4)) 4) <(want $((off - 4)) 4) || fail "image a: the 4 KiB before ${off} KiB changed"
  cmp <(got $((off + n)) 4) <(want $((off + n)) 4) || fail "image a: the 4 KiB after $((off + n)) KiB changed"
done

# The OSD stops answering (frozen, as a partition looks to the client): a read fails with
# NOT READY, LOGICAL UNIT IS IN PROCESS OF BECOMING READY (SPC-5: 04h/01h) after the
# sub-unit's 3 s timeout, never hangs; once the OSD answers again the LU serves its data.
zuma_log "freezing the OSD (pid $CEPH_OSD_PID)"
kill -STOP "$CEPH_OSD_PID"
# SIGSTOP takes effect thread by thread: wait until none of the OSD's threads can answer.
for _ in $(seq 500); do
  awk '{ sub(/.*\) /, ""); if ($1 != "T") bad = 1 } END { exit bad }' /proc/"$CEPH_OSD_PID"/task/*/stat && break
  sleep 0.01
done
t=$SECONDS
out=$(timeout 60 qemu-io -f raw -c "read 8M 64k" "$URL0" 2>&1) || true
kill -CONT "$CEPH_OSD_PID"
grep -q "NOT READY(2) ASCQ:(null)(0x0401)" <<<"$out" ||
  fail "a read with the OSD frozen did not fail with NOT READY 04h/01h: $out"
((SECONDS - t < 15)) || fail "the read took $((SECONDS - t)) s to fail"
grep -q "I/O fails with NOT READY until the cluster answers" "$ZUMA_DIR/zumad.log" ||
  fail "zumad did not log the outage"
zuma_log "read failed with NOT READY in $((SECONDS - t)) s; OSD resumed"
for _ in $(seq 10); do
  qemu-io -f raw -c "read 8M 64k" "$URL0" >/dev/null 2>&1 && break
done
qemu-img convert -f raw -O raw "$URL0" "$ZUMA_DIR/after.img" || fail "qemu-img convert after the outage"
cmp "$ZUMA_DIR/after.img" "$ZUMA_DIR/a.img" || fail "LU a does not read back its data after the outage"

zuma_log "stopping zumad"
rc=0; zuma_stop || rc=$?
[[ $rc -eq 0 ]] || fail "zumad exit status $rc after SIGTERM"
zuma_log "PASS in $((SECONDS - start)) s"
