#!/usr/bin/env bash
# iscsi-test-cu -d against zumad LUs on Ceph RBD sub-units (issue 9): a single-node cluster
# on 127.0.0.1 (tests/integration/ceph-lib.sh), then run-iscsi-test-cu.sh --luns with the
# usual four LUs, each on RBD: thin (one image), full (striped over two images, 64 KiB
# stripe unit), pbs (one image, 4 KiB physical blocks), ro (one image, read-only).
# Skips allowed: expected-skips.txt plus expected-skips-rbd.txt (each with its reason).
#   run-on-rbd.sh --zumad PATH [--out DIR] [other run-iscsi-test-cu.sh options]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../integration/ceph-lib.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/zuma-rbd-conformance-XXXXXX")
trap 'ceph_stop; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
start=$SECONDS
ceph_start "$work" rbd || { echo "the Ceph cluster did not come up" >&2; exit 1; }
for img in thin:64M full0:32M full1:32M pbs:64M ro:64M; do
  ceph_rbd create --size "${img#*:}" "rbd/${img%%:*}"
done
echo "Ceph cluster up, images created in $((SECONDS - start)) s"
rbd_su() {
  echo "{ backend: rbd, pool: rbd, image: $1, user: zuma, keyring: $CEPH_KEYRING, ceph_conf: $CEPH_CONF }"
}
cat >"$work/luns.yaml" <<YAML
      - { id: 0, name: thin, size: 64MiB, block_size: 512, thin: true, subunits: [ $(rbd_su thin) ] }
      - { id: 1, name: full, size: 64MiB, block_size: 512, layout: striped, stripe_unit: 64KiB, subunits: [ $(rbd_su full0), $(rbd_su full1) ] }
      - { id: 2, name: pbs, size: 64MiB, block_size: 512, physical_block_size: 4KiB, thin: true, subunits: [ $(rbd_su pbs) ] }
      - { id: 3, name: ro, size: 64MiB, block_size: 512, thin: true, read_only: true, subunits: [ $(rbd_su ro) ] }
YAML
cat "$HERE/expected-skips.txt" "$HERE/expected-skips-rbd.txt" >"$work/skips.txt"
rc=0
bash "$HERE/run-iscsi-test-cu.sh" --luns "$work/luns.yaml" --skips "$work/skips.txt" "$@" || rc=$?
echo "run-on-rbd: $((SECONDS - start)) s in all"
exit $rc
