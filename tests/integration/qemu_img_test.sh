#!/usr/bin/env bash
# qemu-img and qemu-io (libiscsi inside qemu's block layer) against zumad:
# convert a random image onto LUN 0, compare it, read it back; qemu-io patterns on the
# 4 KiB-block LUN 1. Usage: qemu_img_test.sh ZUMAD
set -euo pipefail
ZUMAD=${1:?usage: $0 ZUMAD}
source "$(dirname "$0")/zumad-lib.sh"
for tool in qemu-img qemu-io; do
  command -v "$tool" >/dev/null || { echo "$tool not installed (qemu-utils)" >&2; exit 1; }
done

zuma_init
PORT=$(zuma_free_port)
IQN=iqn.2026-11.org.zuma:test
cat >"$ZUMA_DIR/zumad.yaml" <<YAML
node: { name: qemu-it, data_dir: $ZUMA_DIR/var, reactors: 2, log_level: info }
portals: [ "127.0.0.1:$PORT" ]
targets:
  - iqn: $IQN
    luns:
      - { id: 0, name: a, size: 64MiB, block_size: 512, subunits: [ {backend: file, path: $ZUMA_DIR/a1.img, size: 32MiB}, {backend: file, path: $ZUMA_DIR/a2.img} ] }
      - { id: 1, name: b, size: 16MiB, block_size: 4096, backend: memory }
YAML
zuma_start "$ZUMA_DIR/zumad.yaml" "$PORT"

URL0="iscsi://127.0.0.1:$PORT/$IQN/0"
URL1="iscsi://127.0.0.1:$PORT/$IQN/1"
fail() { zuma_log "FAIL: $*"; exit 1; }

zuma_log "qemu-img info $URL0"
info=$(qemu-img info --output=json "$URL0") || fail "qemu-img info"
grep -q '"virtual-size": 67108864' <<<"$info" || fail "virtual size is not 64 MiB: $info"

head -c 64M /dev/urandom >"$ZUMA_DIR/random.img"
zuma_log "qemu-img convert -n -O raw random.img $URL0"
start=$SECONDS
qemu-img convert -n -f raw -O raw "$ZUMA_DIR/random.img" "$URL0" || fail "qemu-img convert to iSCSI"
zuma_log "  done in $((SECONDS - start)) s"
zuma_log "qemu-img compare random.img $URL0"
qemu-img compare -f raw -F raw "$ZUMA_DIR/random.img" "$URL0" || fail "qemu-img compare"
zuma_log "qemu-img convert $URL0 back.img"
qemu-img convert -f raw -O raw "$URL0" "$ZUMA_DIR/back.img" || fail "qemu-img convert from iSCSI"
cmp "$ZUMA_DIR/random.img" "$ZUMA_DIR/back.img" || fail "read-back image differs"

# The sub-unit files hold the two halves of the image.
cmp <(head -c 32M "$ZUMA_DIR/random.img") "$ZUMA_DIR/a1.img" || fail "a1.img is not the first half"
cmp <(tail -c 32M "$ZUMA_DIR/random.img") <(head -c 32M "$ZUMA_DIR/a2.img") || fail "a2.img is not the second half"

zuma_log "qemu-io patterns on $URL1 (4 KiB blocks)"
out=$(qemu-io -f raw -c "write -P 0xa5 4k 3M" -c "read -P 0xa5 4k 3M" -c "write -P 0x5a 16380k 4k" \
      -c "read -P 0x5a 16380k 4k" -c "read -P 0 0 4k" "$URL1" 2>&1) || fail "qemu-io: $out"
grep -q -i "pattern verification failed\|fail" <<<"$out" && fail "qemu-io: $out"
echo "$out"

zuma_log "stopping zumad"
rc=0; zuma_stop || rc=$?
[[ $rc -eq 0 ]] || fail "zumad exit status $rc after SIGTERM"
cmp <(head -c 32M "$ZUMA_DIR/random.img") "$ZUMA_DIR/a1.img" || fail "a1.img changed after shutdown"
zuma_log "PASS"
