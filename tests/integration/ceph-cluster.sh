#!/usr/bin/env bash
# Runs a throwaway single-node Ceph cluster (ceph-lib.sh) for a program that cannot source
# a shell library (the C++ tests, bench scripts):
#   ceph-cluster.sh DIR POOL [IMAGE:SIZE ...]
# starts the cluster in DIR, creates the images (rbd create --size SIZE POOL/IMAGE), prints
#   CEPH_CONF=...  CEPH_KEYRING=...  CEPH_MON_PORT=...  CEPH_MON_PID=...  CEPH_OSD_PID=...
# one per line, then "ready", and runs until its standard input reaches end of file (the
# caller closed it or died) or it gets SIGTERM; then it stops the cluster and removes its
# files. Exits 1 (logs on stderr) if the cluster does not come up.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/ceph-lib.sh"

dir=${1:?usage: ceph-cluster.sh DIR POOL [IMAGE:SIZE ...]}
pool=${2:?usage: ceph-cluster.sh DIR POOL [IMAGE:SIZE ...]}
shift 2
trap 'ceph_stop' EXIT
trap 'exit 143' TERM INT
ceph_start "$dir" "$pool" || exit 1
for spec in "$@"; do
  ceph_rbd create --size "${spec#*:}" "$pool/${spec%%:*}" || exit 1
done
printf '%s\n' "CEPH_CONF=$CEPH_CONF" "CEPH_KEYRING=$CEPH_KEYRING" "CEPH_MON_PORT=$CEPH_MON_PORT" \
  "CEPH_MON_PID=$CEPH_MON_PID" "CEPH_OSD_PID=$CEPH_OSD_PID" ready
# In the background (explicit stdin: & would give it /dev/null) so SIGTERM is handled now.
cat <&0 >/dev/null &
wait $!
