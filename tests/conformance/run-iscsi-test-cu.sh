#!/usr/bin/env bash
# Runs libiscsi's conformance suite (iscsi-test-cu -d) against a fresh zumad and compares
# the outcome with expected-failures.txt and expected-skips.txt.
#
#   run-iscsi-test-cu.sh --zumad PATH [--out DIR] [--update] [--expected FILE] [--skips FILE]
#                        [--runs thin,full,pbs,ro] [--timeout SECONDS] [--target zuma|cluster|tgt]
#                        [--luns FILE]
#
# zumad gets two portals on free 127.0.0.1 ports and one target with LUN 0 thin (file),
# LUN 1 fully provisioned (file), LUN 2 thin with 4 KiB physical blocks (LBPPBE 3) and
# LUN 3 thin and write protected (read_only: true); --luns FILE replaces these four with
# the LU entries in FILE (YAML list items under `luns:`, with the same ids and properties,
# e.g. on other backends: run-on-rbd.sh). The pbs and ro runs are short: the pbs
# run only the tests that need several logical blocks per physical block (PBS_TESTS; they
# skip on the other LUs, which keep LBPPBE 0 because libiscsi 1.19's
# GetLBAStatus.UnmapSingle expects the first descriptor at LBA i+LBPPB), the ro run only
# those that need a write-protected LU (RO_TESTS; they skip on the writable LUs, and most
# other tests write). Each run is `iscsi-test-cu -d URL MULTIPATH-URL`, the second URL
# through the other portal. iscsi-test-cu reports skipped tests as passed, so
# the verbose log is parsed: a test is "failed" if CUnit says FAILED, "skipped" if it
# printed [SKIPPED] and did not fail, "notrun" if `iscsi-test-cu -l` lists it but the log
# does not (crash or hang), else "passed".
#
# Both lists: one name per line, `# reason` comments. A name is Suite.Test (any run) or
# RUN:Suite.Test (thin:, full:, pbs: or ro: only); `*` globs are allowed.
#   expected-failures.txt  tests allowed to fail or not run (issue 3: it must stay empty);
#   expected-skips.txt     tests allowed to skip; every entry needs a reason, and only
#                          reasons that do not apply to a disk are acceptable.
# The script fails if a test fails, does not run or skips outside its list, if a skip entry
# has no reason, or if a skip entry no longer skips (stale). --update rewrites both lists
# from this run (keeping existing reasons).
#
# --target cluster (issue 9) runs it against two zumad nodes that export the same shared
# LUs (LUN 0 thin, LUN 1 full) with their state in etcd (ETCD_MEMBERS=1 or 3 members on
# loopback ports): URL 1 through node A, the multipath URL through node B, so the
# MultipathIO and reservation tests cross the nodes. Same lists and rules as zuma.
#
# --target tgt runs the same suite against tgtd (LUN 1 full, LUN 2 thin) on free
# 127.0.0.1 ports with a private control port, for comparison; it never fails on results.
#
# Logs and per-run results go to --out DIR (default: the current directory):
# iscsi-test-cu-RUN.log, results-RUN.txt (STATUS NAME), zumad.log.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ZUMAD=${ZUMAD:-}
OUT=$PWD
UPDATE=0
EXPECTED=$HERE/expected-failures.txt
SKIPS=$HERE/expected-skips.txt
RUNS=""
RUN_TIMEOUT=300
PBS_TESTS=ALL.CompareAndWrite.InvalidDataOutSize,ALL.WriteSame10.InvalidDataOutSize,ALL.WriteSame16.InvalidDataOutSize,ALL.WriteSame10.UnmapUnaligned,ALL.WriteSame16.UnmapUnaligned
RO_TESTS=ALL.ReadOnly.ReadOnlySBC
TARGET=zuma
LUNS_FILE=""
IQN=iqn.2026-11.org.zuma:conformance

usage() { sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
  case $1 in
    --zumad) ZUMAD=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --update) UPDATE=1; shift ;;
    --expected) EXPECTED=$2; shift 2 ;;
    --skips) SKIPS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --timeout) RUN_TIMEOUT=$2; shift 2 ;;
    --target) TARGET=$2; shift 2 ;;
    --luns) LUNS_FILE=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 >&2 ;;
  esac
done
[[ -n $RUNS ]] || { [[ $TARGET == zuma ]] && RUNS=thin,full,pbs,ro || RUNS=thin,full; }
command -v iscsi-test-cu >/dev/null || { echo "iscsi-test-cu not installed (libiscsi-bin)" >&2; exit 2; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

if [[ $TARGET == tgt ]]; then
  ZUMAD=${ZUMAD:-/bin/true}  # the harness wants a binary; unused for tgt
fi
source "$HERE/../integration/zumad-lib.sh"
zuma_init

TGTD_PID=""
TGT_SOCK=""
TGT_IMG_DIR=""
tgtadm_() { TGT_IPC_SOCKET=$TGT_SOCK timeout 10 tgtadm --lld iscsi "$@"; }
stop_tgt() {
  [[ -n "$TGTD_PID" ]] || return 0
  tgtadm_ --mode target --op delete --force --tid 1 >/dev/null 2>&1 || true
  kill -TERM "$TGTD_PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$TGTD_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$TGTD_PID" 2>/dev/null || true
  wait "$TGTD_PID" 2>/dev/null || true
  TGTD_PID=""
  [[ -n "$TGT_IMG_DIR" ]] && rm -rf "$TGT_IMG_DIR"
  TGT_IMG_DIR=""
}
cleanup_all() { local rc=$?; set +e; stop_tgt; [[ $TARGET == cluster ]] && stop_cluster_extras; cp -f "$ZUMA_DIR/zumad.log" "$OUT/zumad.log" 2>/dev/null || true; (exit $rc); zuma_cleanup; }
trap cleanup_all EXIT

PORT0=$(zuma_free_port)
PORT1=$(zuma_free_port)
declare -A LUN_OF

if [[ $TARGET == zuma ]]; then
  [[ -x "$ZUMAD" ]] || { echo "zumad not found: '$ZUMAD' (use --zumad)" >&2; exit 2; }
  cat >"$ZUMA_DIR/zumad.yaml" <<YAML
node: { name: conformance, data_dir: $ZUMA_DIR/var, reactors: 2, log_level: warn }
portals: [ "127.0.0.1:$PORT0", "127.0.0.1:$PORT1" ]
targets:
  - iqn: $IQN
    luns:
YAML
  if [[ -n $LUNS_FILE ]]; then
    cat "$LUNS_FILE" >>"$ZUMA_DIR/zumad.yaml"
  else
    cat >>"$ZUMA_DIR/zumad.yaml" <<YAML
      - { id: 0, name: thin, size: 64MiB, block_size: 512, thin: true, subunits: [ {backend: file, path: $ZUMA_DIR/thin.img} ] }
      - { id: 1, name: full, size: 64MiB, block_size: 512, subunits: [ {backend: file, path: $ZUMA_DIR/full.img} ] }
      - { id: 2, name: pbs, size: 64MiB, block_size: 512, physical_block_size: 4KiB, thin: true, subunits: [ {backend: file, path: $ZUMA_DIR/pbs.img} ] }
      - { id: 3, name: ro, size: 64MiB, block_size: 512, thin: true, read_only: true, subunits: [ {backend: file, path: $ZUMA_DIR/ro.img} ] }
YAML
  fi
  zuma_start "$ZUMA_DIR/zumad.yaml" "$PORT0" "$PORT1"
  LUN_OF[thin]=0
  LUN_OF[full]=1
  LUN_OF[pbs]=2
  LUN_OF[ro]=3
  MP_PORT=$PORT1
elif [[ $TARGET == cluster ]]; then
  # Issue 9: two zumad nodes export the same shared LUs (one file each, opened by both),
  # their state in etcd; URL 1 goes to node A, the multipath URL to node B. ETCD_MEMBERS
  # (1 or 3) etcd members on loopback ports.
  [[ -x "$ZUMAD" ]] || { echo "zumad not found: '$ZUMAD' (use --zumad)" >&2; exit 2; }
  command -v etcd >/dev/null || { echo "etcd not installed (etcd-server)" >&2; exit 2; }
  ETCD_PIDS=()
  endpoints="" initial=""
  declare -a EC EP
  for ((i = 0; i < ${ETCD_MEMBERS:-1}; i++)); do
    EC[i]=$(zuma_free_port); EP[i]=$(zuma_free_port)
    initial+="${initial:+,}m$i=http://127.0.0.1:${EP[i]}"
    endpoints+="${endpoints:+, }\"http://127.0.0.1:${EC[i]}\""
  done
  for ((i = 0; i < ${ETCD_MEMBERS:-1}; i++)); do
    etcd --name "m$i" --data-dir "$ZUMA_DIR/etcd-$i" \
      --listen-client-urls "http://127.0.0.1:${EC[i]}" --advertise-client-urls "http://127.0.0.1:${EC[i]}" \
      --listen-peer-urls "http://127.0.0.1:${EP[i]}" --initial-advertise-peer-urls "http://127.0.0.1:${EP[i]}" \
      --initial-cluster "$initial" --heartbeat-interval 50 --election-timeout 500 \
      >>"$ZUMA_DIR/etcd-$i.log" 2>&1 &
    ETCD_PIDS+=($!)
  done
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/${EC[0]}" && printf 'GET /health HTTP/1.0\r\n\r\n' >&3 && cat <&3) \
      2>/dev/null | grep -q '"true"' && break
    sleep 0.1
  done
  NODE_B_PID=""
  stop_cluster_extras() {
    if [[ -n $NODE_B_PID ]]; then
      kill -TERM "$NODE_B_PID" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 "$NODE_B_PID" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$NODE_B_PID" 2>/dev/null || true
      wait "$NODE_B_PID" 2>/dev/null || true
      NODE_B_PID=""
    fi
    local p
    for p in "${ETCD_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    ETCD_PIDS=()
  }
  cluster_luns() {
    cat <<YAML
targets:
  - iqn: $IQN
    luns:
      - { id: 0, name: thin, size: 64MiB, block_size: 512, thin: true, shared: true, subunits: [ {backend: file, path: $ZUMA_DIR/thin.img} ] }
      - { id: 1, name: full, size: 64MiB, block_size: 512, shared: true, subunits: [ {backend: file, path: $ZUMA_DIR/full.img} ] }
YAML
  }
  for node in a b; do
    [[ $node == a ]] && { pg=1; port=$PORT0; } || { pg=2; port=$PORT1; }
    mkdir -p "$ZUMA_DIR/var-$node"
    { echo "node: { name: node-$node, data_dir: $ZUMA_DIR/var-$node, control_socket: $ZUMA_DIR/$node.sock, reactors: 2, log_level: warn }"
      echo "portals: [ { address: \"127.0.0.1:$port\", tpgt: $pg } ]"
      echo "cluster: { name: conformance, etcd: [ $endpoints ], port_group: $pg, lease_ttl: 5s }"
      cluster_luns; } >"$ZUMA_DIR/zumad-$node.yaml"
  done
  zuma_start "$ZUMA_DIR/zumad-a.yaml" "$PORT0"
  (cd "$ZUMA_DIR" && exec "$ZUMAD" --config "$ZUMA_DIR/zumad-b.yaml") >>"$ZUMA_DIR/zumad-b.log" 2>&1 &
  NODE_B_PID=$!
  for _ in $(seq 200); do zuma_port_open "$PORT1" && break; sleep 0.05; done
  zuma_port_open "$PORT1" || { zuma_log "node B does not listen"; cat "$ZUMA_DIR/zumad-b.log" >&2; exit 1; }
  # Both nodes must know both before the suite logs in: node A learning of node B later
  # reports ASYMMETRIC ACCESS STATE CHANGED (2A/06, SPC-5 5.16.2.5) to every nexus, and the
  # suite's first test would take that unit attention on its READ (seen under ctest -j2).
  ZUMACTL=$(dirname "$ZUMAD")/zumactl
  live_nodes() { "$ZUMACTL" --socket "$ZUMA_DIR/$1.sock" --json cluster status 2>/dev/null | grep -o '"yes"' | wc -l; }
  both_live=0
  for _ in $(seq 200); do
    (($(live_nodes a) == 2 && $(live_nodes b) == 2)) && { both_live=1; break; }
    sleep 0.05
  done
  ((both_live)) || {
    zuma_log "the nodes do not both see two live nodes after 10 s"
    "$ZUMACTL" --socket "$ZUMA_DIR/a.sock" cluster status >&2 || true
    cat "$ZUMA_DIR/zumad-b.log" >&2; exit 1; }
  LUN_OF[thin]=0
  LUN_OF[full]=1
  MP_PORT=$PORT1
elif [[ $TARGET == tgt ]]; then
  command -v tgtd >/dev/null || { echo "tgtd not installed (tgt)" >&2; exit 2; }
  # A private control socket (TGT_IPC_SOCKET: tgtd binds $TGT_SOCK.0, never the system's
  # /var/run/tgtd/socket.0), as bench/compare does; the portal is 127.0.0.1 on a free port;
  # the LUs are files in /dev/shm (tmpfs, as zumad's would be fastest too).
  TGT_SOCK=$ZUMA_DIR/tgt-ipc
  TGT_IMG_DIR=$(mktemp -d /dev/shm/zuma-conformance-tgt-XXXXXX)
  (cd "$ZUMA_DIR" && exec env TGT_IPC_SOCKET="$TGT_SOCK" tgtd -f --iscsi "portal=127.0.0.1:$PORT0") \
    >"$ZUMA_DIR/tgtd.log" 2>&1 &
  TGTD_PID=$!
  deadline=$((SECONDS + 10))
  until zuma_port_open "$PORT0"; do
    kill -0 "$TGTD_PID" 2>/dev/null || { cat "$ZUMA_DIR/tgtd.log" >&2; exit 1; }
    ((SECONDS < deadline)) || { echo "tgtd does not listen" >&2; exit 1; }
    sleep 0.1
  done
  truncate -s 64M "$TGT_IMG_DIR/full.img" "$TGT_IMG_DIR/thin.img"
  for i in $(seq 50); do
    tgtadm_ --mode target --op new --tid 1 --targetname "$IQN" 2>/dev/null && break
    ((i == 50)) && { echo "tgtadm cannot reach tgtd at $TGT_SOCK.0" >&2; exit 1; }
    sleep 0.1
  done
  tgtadm_ --mode logicalunit --op new --tid 1 --lun 1 --backing-store "$TGT_IMG_DIR/full.img"
  tgtadm_ --mode logicalunit --op new --tid 1 --lun 2 --backing-store "$TGT_IMG_DIR/thin.img"
  tgtadm_ --mode logicalunit --op update --tid 1 --lun 2 --params thin_provisioning=1 || true
  tgtadm_ --mode target --op bind --tid 1 --initiator-address 127.0.0.1
  LUN_OF[thin]=2
  LUN_OF[full]=1
  MP_PORT=$PORT0
else
  echo "--target must be zuma or tgt" >&2; exit 2
fi

iscsi-test-cu -l | awk -F. 'NF == 3 && $1 == "ALL" { print $2 "." $3 }' >"$ZUMA_DIR/all-tests.txt"

# parse LOG RUN > results: "STATUS RUN:Suite.Test<TAB>message"
parse_log() {
  awk -v run="$2" '
    function flush() {
      if (name == "") return
      st = result == "FAILED" ? "failed" : skipped ? "skipped" : result == "passed" ? "passed" : "notrun"
      m = st == "skipped" ? smsg : ""
      if (st == "failed") m = amsg != "" ? amsg (fmsg != "" ? " [" fmsg "]" : "") : fmsg
      if (st == "notrun") m = "no result in the log (crash or timeout)"
      printf "%s %s:%s\t%s\n", st, run, name, m
      seen[name] = 1
      name = ""
    }
    # Text of the running test up to its CUnit result ("passed"/"FAILED", after "..." or at
    # the start of a line) belongs to it; what follows the result (other than the numbered
    # assertion lines) comes from suite set-up/tear-down and is ignored.
    function analyze(s,   t, pos) {
      if (name == "") return
      if (result != "") {
        if (amsg == "" && s ~ /^    1\. /) { t = s; sub(/^ +/, "", t); sub(/    \[[A-Z]+\].*/, "", t); amsg = t }
        return
      }
      pos = 0
      if (match(s, /^(\.\.\. *)?(passed|FAILED)/) || match(s, /\.\.\.(passed|FAILED)/)) {
        pos = RSTART
        t = substr(s, RSTART, RLENGTH)
        result = t ~ /FAILED$/ ? "FAILED" : "passed"
        s = substr(s, 1, pos - 1)
      }
      if (index(s, "[SKIPPED]")) { skipped = 1; if (smsg == "") { t = s; sub(/.*\[SKIPPED\] */, "", t); smsg = t } }
      if (index(s, "[FAILED]") && fmsg == "") { t = s; sub(/.*\[FAILED\] */, "", t); fmsg = t }
    }
    /^Suite: / { flush(); suite = substr($0, 8); sub(/[ \t]+$/, "", suite); next }
    /^  Test: / {
      flush()
      line = substr($0, 9); i = index(line, " ...")
      name = suite "." (i ? substr(line, 1, i - 1) : line)
      if (name in seen) { name = ""; next }  # repeated output: keep the first
      rest = i ? substr(line, i + 1) : ""
      result = ""; skipped = 0; smsg = ""; fmsg = ""; amsg = ""
      analyze(rest)
      next
    }
    /^Run Summary:/ { flush(); name = ""; next }
    { analyze($0) }
    END {
      flush()
      while ((getline t < alltests) > 0) if (!(t in seen)) printf "notrun %s:%s\tnot in the log (crash or timeout)\n", run, t
    }
  ' alltests="${3:-$ZUMA_DIR/all-tests.txt}" "$1"
}

# Patterns of a list file: "REGEX<TAB>PATTERN" per line.
list_patterns() {
  [[ -f "$1" ]] || return 0
  sed -e 's/#.*//' -e 's/[[:space:]]//g' "$1" | { grep -v '^$' || true; } | while read -r pat; do
    local p=$pat
    [[ $p == *:* ]] || p="*:$p"
    printf '^%s$\t%s\n' "$(printf '%s' "$p" | sed -e 's/[].[^$\\+?(){}|]/\\&/g' -e 's/\*/.*/g')" "$pat"
  done
}

ALL_RESULTS=$OUT/results-all.txt
: >"$ALL_RESULTS"
overall=0
IFS=, read -ra run_list <<<"$RUNS"
for run in "${run_list[@]}"; do
  lun=${LUN_OF[$run]:?unknown run $run (thin, full, pbs or ro)}
  tests=ALL run_tests=$ZUMA_DIR/all-tests.txt
  if [[ $run == pbs || $run == ro ]]; then
    [[ $run == pbs ]] && tests=$PBS_TESTS || tests=$RO_TESTS
    run_tests=$ZUMA_DIR/$run-tests.txt
    tr , '\n' <<<"$tests" | sed 's/^ALL\.//' >"$run_tests"
  fi
  url="iscsi://127.0.0.1:$PORT0/$IQN/$lun"
  mp_url="iscsi://127.0.0.1:$MP_PORT/$IQN/$lun"
  log=$OUT/iscsi-test-cu-$run.log
  zuma_log "iscsi-test-cu -d $url $mp_url  (log: $log)"
  start=$SECONDS
  rc=0
  # -t ALL: the ALL family holds every test once (the default run repeats them under the
  # SCSI, iSCSI and LINUX families). Unbuffered: some tests fork, and a child would
  # otherwise repeat buffered output. SIGPIPE ignored, as real initiators do: libiscsi
  # writes to sockets without MSG_NOSIGNAL, and a target closing a connection on a bad PDU
  # (which some tests expect) would otherwise kill the whole suite.
  (trap '' PIPE; exec timeout -k 10 "$RUN_TIMEOUT" stdbuf -o0 -e0 \
     iscsi-test-cu -d -t "$tests" "$url" "$mp_url") >"$log" 2>&1 </dev/null || rc=$?
  secs=$((SECONDS - start))
  if ((rc == 124 || rc == 137)); then
    zuma_log "iscsi-test-cu ($run) timed out after ${RUN_TIMEOUT}s"; overall=1
  elif ! grep -q '^Run Summary:' "$log"; then
    zuma_log "iscsi-test-cu ($run) ended without a summary (exit status $rc)"; overall=1
  fi
  parse_log "$log" "$run" "$run_tests" >"$OUT/results-$run.txt"
  cat "$OUT/results-$run.txt" >>"$ALL_RESULTS"
  read -r p f s n < <(awk '{ c[$1]++ } END { printf "%d %d %d %d\n", c["passed"], c["failed"], c["skipped"], c["notrun"] }' "$OUT/results-$run.txt")
  echo "iscsi-test-cu ($TARGET, $run LU): $p passed, $f failed, $s skipped, $n not run, in ${secs}s"
done

if [[ $TARGET == cluster ]]; then
  if [[ -n $NODE_B_PID ]] && ! kill -0 "$NODE_B_PID" 2>/dev/null; then
    zuma_log "node B died during the suite"; overall=1; NODE_B_PID=""
  fi
  stop_cluster_extras
fi
if [[ $TARGET == zuma || $TARGET == cluster ]]; then
  if ! kill -0 "$ZUMA_PID" 2>/dev/null; then
    zuma_log "zumad died during the suite"; overall=1; ZUMA_PID=""
  else
    src=0; zuma_stop || src=$?
    if ((src != 0)); then zuma_log "zumad exit status $src after SIGTERM"; overall=1; fi
  fi
else
  stop_tgt
fi

fail_pat=$ZUMA_DIR/expected-failures.pat
skip_pat=$ZUMA_DIR/expected-skips.pat
list_patterns "$EXPECTED" >"$fail_pat"
list_patterns "$SKIPS" >"$skip_pat"
bad=$ZUMA_DIR/unexpected.txt
stale_fail=$ZUMA_DIR/stale-failures.txt
stale_skip=$ZUMA_DIR/stale-skips.txt
# Failed/not run must match expected-failures, skipped must match expected-skips. A pattern
# that matches nothing is stale; a qualified one (RUN:...) only counts when RUN ran.
awk -F'\t' -v FP="$fail_pat" -v SP="$skip_pat" -v BAD="$bad" -v SF="$stale_fail" \
    -v SS="$stale_skip" -v RUNS=",$RUNS," '
  function load(file, kind,   l, x) {
    while ((getline l < file) > 0) { split(l, x, "\t"); n++; re[n] = x[1]; pat[n] = x[2]; knd[n] = kind }
  }
  function applies(i,   r) {
    if (index(pat[i], ":") == 0) return 1
    r = substr(pat[i], 1, index(pat[i], ":") - 1)
    return r == "*" || index(RUNS, "," r ",") > 0
  }
  BEGIN { load(FP, "f"); load(SP, "s"); printf "" > BAD; printf "" > SF; printf "" > SS }
  { split($1, a, " "); st = a[1]; nm = a[2]
    if (st == "passed") next
    want = st == "skipped" ? "s" : "f"
    ok = 0
    for (i = 1; i <= n; i++) if (knd[i] == want && nm ~ re[i]) { ok = 1; used[i] = 1 }
    if (!ok) printf "  %-8s %s  %s\n", st, nm, $2 > BAD }
  END { for (i = 1; i <= n; i++) if (!(i in used) && applies(i)) print "  " pat[i] > (knd[i] == "s" ? SS : SF) }
' "$ALL_RESULTS"
# Every skip needs its reason.
noreason=$ZUMA_DIR/skips-without-reason.txt
if [[ -f $SKIPS ]]; then
  awk '{ l = $0; sub(/^[ \t]+/, "", l) } l == "" || l ~ /^#/ { next }
       { i = index(l, "#"); r = i ? substr(l, i + 1) : ""; gsub(/[ \t]/, "", r)
         if (r == "") print "  " l }' "$SKIPS" >"$noreason"
else
  : >"$noreason"
fi

read -r P F S N < <(awk '{ c[$1]++ } END { printf "%d %d %d %d\n", c["passed"], c["failed"], c["skipped"], c["notrun"] }' "$ALL_RESULTS")
echo "iscsi-test-cu ($TARGET, all runs): $P passed, $F failed, $S skipped, $N not run"

# write_list FILE STATUS-REGEX HEADER...: the tests of this run whose status matches, one
# name per line (unqualified when the same in every run), with the list's old reasons.
write_list() {
  local file=$1 status_re=$2; shift 2
  declare -A reason=()
  if [[ -f "$file" ]]; then
    while IFS= read -r line; do
      n=$(sed -e 's/#.*//' -e 's/[[:space:]]//g' <<<"$line")
      [[ -n $n && $line == *"#"* ]] && reason[$n]=${line#*#}
    done <"$file"
  fi
  local tmp=$ZUMA_DIR/list.new
  {
    printf '%s\n' "$@"
    # Names in the same state in every run become unqualified.
    awk -F'\t' -v nruns="${#run_list[@]}" '
      { split($1, a, " "); st = a[1]; full = a[2]; i = index(full, ":"); run = substr(full, 1, i - 1); t = substr(full, i + 1)
        if (!(t in cnt)) order[++n] = t
        cnt[t]++; runs[t] = runs[t] " " run; msg[t] = msg[t] == "" ? st ": " $2 : msg[t] }
      END { for (k = 1; k <= n; k++) { t = order[k]
              if (cnt[t] == nruns) print t "\t" msg[t]
              else { m = split(runs[t], r, " "); for (j = 1; j <= m; j++) print r[j] ":" t "\t" msg[t] } } }
    ' <(awk -v re="$status_re" '$1 ~ re' "$ALL_RESULTS") | sort | while IFS=$'\t' read -r n m; do
      r=${reason[$n]:-${reason[${n#*:}]:-${reason[thin:$n]:-${reason[full:$n]:-}}}}
      if [[ -n $r ]]; then printf '%s  #%s\n' "$n" "$r"
      else printf '%s  # %s\n' "$n" "$(tr -s ' ' <<<"$m" | cut -c1-150)"; fi
    done
  } >"$tmp"
  cp "$tmp" "$file"
  echo "updated $file ($(grep -c -v '^#' "$file" || true) entries)"
}

if ((UPDATE)); then
  write_list "$EXPECTED" '^(failed|notrun)$' \
    "# iscsi-test-cu tests that fail or do not run against zumad (issue 3: none may)." \
    "# One name per line: Suite.Test (every run) or thin:/full:/pbs:/ro:Suite.Test; '*' globs; '# reason'." \
    "# Regenerate: tests/conformance/run-iscsi-test-cu.sh --zumad build/apps/zumad --update"
  write_list "$SKIPS" '^skipped$' \
    "# iscsi-test-cu tests that skip against zumad, each with the reason it does not apply." \
    "# Acceptable reasons only: removable media, sanitize, write-protected media, a LU property" \
    "# the test needs and the LU under test does not have (it runs on the other LU), a flag." \
    "# One name per line: Suite.Test (every run) or thin:/full:/pbs:/ro:Suite.Test; '*' globs; '# reason'." \
    "# Regenerate: tests/conformance/run-iscsi-test-cu.sh --zumad build/apps/zumad --update"
  exit $overall
fi

if [[ -s $stale_fail ]]; then
  echo "Listed in $(basename "$EXPECTED") but passed (remove them or run --update):"
  cat "$stale_fail"
fi
if [[ -s $stale_skip ]]; then
  echo "STALE: listed in $(basename "$SKIPS") but did not skip (remove them or run --update):"
  cat "$stale_skip"
  overall=1
fi
if [[ -s $noreason ]]; then
  echo "Skips without a reason in $(basename "$SKIPS"):"
  cat "$noreason"
  overall=1
fi
if [[ -s $bad ]]; then
  echo "UNEXPECTED (failed, not run, or skipped outside the lists): $(wc -l <"$bad")"
  cat "$bad"
  overall=1
fi
if [[ $TARGET == tgt ]]; then exit 0; fi
((overall == 0)) && echo "conformance: OK (logs in $OUT)" || echo "conformance: FAILED (logs in $OUT)"
exit $overall
