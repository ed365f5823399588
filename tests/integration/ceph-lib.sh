# A throwaway single-node Ceph cluster on 127.0.0.1 for tests and benchmarks. Source it:
#   ceph_start DIR [POOL]    # mon + osd (memstore) in DIR, pool POOL (default rbd), cephx
#   rbd -c "$CEPH_CONF" --id zuma --keyring "$CEPH_KEYRING" create --size 64M rbd/img
#   ...
#   ceph_stop                # kills the daemons by pid; removes DIR's cluster files
# After ceph_start: CEPH_CONF (ceph.conf), CEPH_KEYRING (client.zuma's keyring: rbd
# profile on POOL), CEPH_ADMIN_KEYRING, CEPH_MON_PORT, CEPH_MON_PID, CEPH_OSD_PID.
# ceph_cli ARGS runs `ceph` as client.admin; ceph_rbd ARGS runs `rbd` as client.zuma.
#
# One mon (msgr2 only, on a free port) and one OSD with memstore (data in RAM, so the
# cluster holds at most what fits there; `memstore device bytes` is its advertised size),
# pool size 1 and `paxos propose interval = 0.1`: up in a few seconds. No ceph-mgr: RBD
# I/O, pool and image commands need only the mon and the OSD (the mgr serves stats and
# modules). A watchdog stops the daemons when the shell that started them exits without
# ceph_stop (SIGKILL), or after CEPH_TTL seconds (default 1800).
# Needs ceph-mon, ceph-osd and ceph-common (scripts/install-deps.sh).

CEPH_DIR=""
CEPH_CONF=""
CEPH_KEYRING=""
CEPH_ADMIN_KEYRING=""
CEPH_MON_PORT=""
CEPH_MON_PID=""
CEPH_OSD_PID=""
CEPH_WATCHDOG_PID=""

_ceph_log() { printf '[%s] ceph: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# A port on 127.0.0.1 nothing listens on (zumad-lib.sh's zuma_free_port when sourced).
_ceph_free_port() {
  if declare -F zuma_free_port >/dev/null; then zuma_free_port; return; fi
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 12000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
  done
  return 1
}

ceph_cli() { timeout 30 ceph -c "$CEPH_CONF" -n client.admin "$@"; }
ceph_rbd() { timeout 60 rbd -c "$CEPH_CONF" --id zuma "$@"; }

# ceph_start DIR [POOL]: returns non-zero (and prints the daemons' logs) if the cluster is
# not serving I/O within 60 s.
ceph_start() {
  local dir=$1 pool=${2:-rbd}
  for b in ceph-mon ceph-osd ceph ceph-authtool monmaptool rbd; do
    command -v "$b" >/dev/null || { _ceph_log "$b not installed (scripts/install-deps.sh)"; return 2; }
  done
  CEPH_DIR=$dir/ceph
  mkdir -p "$CEPH_DIR"/{mon.a,osd.0,run,log}
  CEPH_CONF=$CEPH_DIR/ceph.conf
  CEPH_KEYRING=$CEPH_DIR/client.zuma.keyring
  CEPH_ADMIN_KEYRING=$CEPH_DIR/client.admin.keyring
  CEPH_MON_PORT=$(_ceph_free_port) || return 1
  local fsid osd_uuid
  fsid=$(cat /proc/sys/kernel/random/uuid)
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  cat >"$CEPH_CONF" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$CEPH_MON_PORT
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
run dir = $CEPH_DIR/run
admin socket = $CEPH_DIR/run/\$name.asok
log file = $CEPH_DIR/log/\$name.log
pid file = $CEPH_DIR/run/\$name.pid
crash dir = $CEPH_DIR/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
paxos propose interval = 0.1
mon data avail warn = 1
mon data avail crit = 0
[client.admin]
keyring = $CEPH_ADMIN_KEYRING
[client.zuma]
keyring = $CEPH_KEYRING
[mon]
mon data = $CEPH_DIR/mon.\$id
keyring = $CEPH_DIR/mon.keyring
[osd]
osd data = $CEPH_DIR/osd.\$id
keyring = $CEPH_DIR/osd.\$id/keyring
osd objectstore = memstore
memstore device bytes = 4294967296
osd op num shards = 2
osd op num threads per shard = 1
EOF
  ceph-authtool "$CEPH_DIR/mon.keyring" --create-keyring --gen-key -n mon. --cap mon 'allow *' >/dev/null &&
  ceph-authtool "$CEPH_ADMIN_KEYRING" --create-keyring --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null &&
  ceph-authtool "$CEPH_DIR/osd.0/keyring" --create-keyring --gen-key -n osd.0 \
    --cap mon 'allow profile osd' --cap osd 'allow *' --cap mgr 'allow profile osd' >/dev/null &&
  ceph-authtool "$CEPH_KEYRING" --create-keyring --gen-key -n client.zuma \
    --cap mon 'profile rbd' --cap osd "profile rbd pool=$pool" >/dev/null &&
  cat "$CEPH_ADMIN_KEYRING" "$CEPH_DIR/osd.0/keyring" "$CEPH_KEYRING" >>"$CEPH_DIR/mon.keyring" &&
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$CEPH_MON_PORT]" \
    "$CEPH_DIR/monmap" >/dev/null &&
  ceph-mon -c "$CEPH_CONF" --mkfs -i a --monmap "$CEPH_DIR/monmap" \
    --keyring "$CEPH_DIR/mon.keyring" >"$CEPH_DIR/log/mkfs.log" 2>&1 ||
    { _ceph_log "mon mkfs failed"; cat "$CEPH_DIR/log/mkfs.log" >&2; return 1; }
  ceph-mon -c "$CEPH_CONF" -i a -f >"$CEPH_DIR/log/mon.out" 2>&1 &
  CEPH_MON_PID=$!
  _ceph_watchdog
  # The OSD: registered with the mon (its key is already there), then mkfs and start.
  local id
  id=$(ceph_cli osd create "$osd_uuid") && [[ $id == 0 ]] &&
  ceph-osd -c "$CEPH_CONF" -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$CEPH_DIR/log/mkfs.log" 2>&1 ||
    { _ceph_log "osd create/mkfs failed"; _ceph_dump; return 1; }
  ceph-osd -c "$CEPH_CONF" -i 0 -f >"$CEPH_DIR/log/osd.out" 2>&1 &
  CEPH_OSD_PID=$!
  _ceph_watchdog
  ceph_cli osd pool create "$pool" 8 8 >/dev/null 2>&1 &&
  ceph_cli osd pool application enable "$pool" rbd >/dev/null 2>&1 ||
    { _ceph_log "pool $pool not created"; _ceph_dump; return 1; }
  # Serving once a write to the pool goes through (the OSD is up and its PGs active).
  local deadline=$((SECONDS + 60))
  until timeout 10 rados -c "$CEPH_CONF" -n client.admin --rados-osd-op-timeout 5 -p "$pool" \
      put zuma-probe /dev/null 2>/dev/null; do
    if ((SECONDS >= deadline)); then _ceph_log "no I/O after 60 s"; _ceph_dump; return 1; fi
    kill -0 "$CEPH_OSD_PID" 2>/dev/null || { _ceph_log "ceph-osd exited"; _ceph_dump; return 1; }
    sleep 0.2
  done
  return 0
}

# (Re)starts the watchdog over the current daemon pids: it kills them when this shell is
# gone or after CEPH_TTL seconds.
_ceph_watchdog() {
  [[ -z $CEPH_WATCHDOG_PID ]] || kill "$CEPH_WATCHDOG_PID" 2>/dev/null || true
  local parent=$$ ttl=${CEPH_TTL:-1800} pids="$CEPH_MON_PID $CEPH_OSD_PID" dir=$CEPH_DIR
  (
    trap - EXIT INT TERM
    end=$((SECONDS + ttl))
    while kill -0 "$parent" 2>/dev/null && ((SECONDS < end)); do sleep 1; done
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null
    sleep 1
    rm -rf "$dir"
  ) </dev/null >/dev/null 2>&1 &
  CEPH_WATCHDOG_PID=$!
}

_ceph_dump() {
  local f
  for f in "$CEPH_DIR"/log/*; do
    echo "----- $f (last 30 lines) -----" >&2
    tail -n 30 "$f" >&2
  done
}

# ceph_stop: kills the daemons (SIGKILL: the cluster is thrown away, and a SIGTERMed OSD
# takes seconds to shut down) and removes the cluster's files.
ceph_stop() {
  local pid
  [[ -z $CEPH_WATCHDOG_PID ]] || kill "$CEPH_WATCHDOG_PID" 2>/dev/null || true
  CEPH_WATCHDOG_PID=""
  for pid in $CEPH_OSD_PID $CEPH_MON_PID; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in $CEPH_OSD_PID $CEPH_MON_PID; do wait "$pid" 2>/dev/null || true; done
  CEPH_OSD_PID=""
  CEPH_MON_PID=""
  if [[ -n $CEPH_DIR && ${ZUMA_TEST_KEEP:-0} == 0 ]]; then rm -rf "$CEPH_DIR"; fi
  return 0
}
