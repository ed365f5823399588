#!/usr/bin/env bash
# Runs libiscsi's conformance suite (iscsi-test-cu -d) against a fresh zumad and compares
# the outcome with expected-failures.txt.
#
#   run-iscsi-test-cu.sh --zumad PATH [--out DIR] [--update] [--expected FILE]
#                        [--runs thin,full] [--timeout SECONDS] [--target zuma|tgt]
#
# zumad gets two portals on free 127.0.0.1 ports and one target with LUN 0 thin (file) and
# LUN 1 fully provisioned (file). Each run is `iscsi-test-cu -d URL MULTIPATH-URL`, the
# second URL through the other portal. iscsi-test-cu reports skipped tests as passed, so
# the verbose log is parsed: a test is "failed" if CUnit says FAILED, "skipped" if it
# printed [SKIPPED] and did not fail, "notrun" if `iscsi-test-cu -l` lists it but the log
# does not (crash or hang), else "passed".
#
# expected-failures.txt: one name per line, `# reason` comments allowed. A name is
# Suite.Test (any run), RUN:Suite.Test (thin: or full: only); `*` globs are allowed.
# The script fails if a test outside the list fails, is skipped or did not run. --update
# rewrites the list from this run (keeping existing reasons).
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
RUNS=thin,full
RUN_TIMEOUT=300
TARGET=zuma
IQN=iqn.2026-11.org.zuma:conformance

usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
  case $1 in
    --zumad) ZUMAD=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --update) UPDATE=1; shift ;;
    --expected) EXPECTED=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --timeout) RUN_TIMEOUT=$2; shift 2 ;;
    --target) TARGET=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 >&2 ;;
  esac
done
command -v iscsi-test-cu >/dev/null || { echo "iscsi-test-cu not installed (libiscsi-bin)" >&2; exit 2; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

if [[ $TARGET == tgt ]]; then
  ZUMAD=${ZUMAD:-/bin/true}  # the harness wants a binary; unused for tgt
fi
source "$HERE/../integration/zumad-lib.sh"
zuma_init

TGTD_PID=""
TGT_CP=""
stop_tgt() {
  [[ -n "$TGTD_PID" ]] || return 0
  tgtadm -C "$TGT_CP" --lld iscsi --mode target --op delete --force --tid 1 >/dev/null 2>&1 || true
  kill -TERM "$TGTD_PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$TGTD_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$TGTD_PID" 2>/dev/null || true
  wait "$TGTD_PID" 2>/dev/null || true
  rm -f "/var/run/tgtd/socket.$TGT_CP" "/var/run/tgtd/socket.$TGT_CP.lock"
  TGTD_PID=""
}
cleanup_all() { local rc=$?; set +e; stop_tgt; cp -f "$ZUMA_DIR/zumad.log" "$OUT/zumad.log" 2>/dev/null || true; (exit $rc); zuma_cleanup; }
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
      - { id: 0, name: thin, size: 64MiB, block_size: 512, thin: true, subunits: [ {backend: file, path: $ZUMA_DIR/thin.img} ] }
      - { id: 1, name: full, size: 64MiB, block_size: 512, subunits: [ {backend: file, path: $ZUMA_DIR/full.img} ] }
YAML
  zuma_start "$ZUMA_DIR/zumad.yaml" "$PORT0" "$PORT1"
  LUN_OF[thin]=0
  LUN_OF[full]=1
  MP_PORT=$PORT1
elif [[ $TARGET == tgt ]]; then
  command -v tgtd >/dev/null || { echo "tgtd not installed (tgt)" >&2; exit 2; }
  for _ in $(seq 100); do
    TGT_CP=$((20000 + RANDOM % 10000))
    [[ -e /var/run/tgtd/socket.$TGT_CP ]] || break
  done
  # -C: a private control socket; the portal is confined to 127.0.0.1 and a free port.
  tgtd -f -C "$TGT_CP" --iscsi "portal=127.0.0.1:$PORT0" >"$ZUMA_DIR/tgtd.log" 2>&1 &
  TGTD_PID=$!
  deadline=$((SECONDS + 10))
  until zuma_port_open "$PORT0"; do
    kill -0 "$TGTD_PID" 2>/dev/null || { cat "$ZUMA_DIR/tgtd.log" >&2; exit 1; }
    ((SECONDS < deadline)) || { echo "tgtd does not listen" >&2; exit 1; }
    sleep 0.1
  done
  truncate -s 64M "$ZUMA_DIR/full.img" "$ZUMA_DIR/thin.img"
  tgt() { tgtadm -C "$TGT_CP" --lld iscsi "$@"; }
  tgt --mode target --op new --tid 1 --targetname "$IQN"
  tgt --mode logicalunit --op new --tid 1 --lun 1 --backing-store "$ZUMA_DIR/full.img"
  tgt --mode logicalunit --op new --tid 1 --lun 2 --backing-store "$ZUMA_DIR/thin.img"
  tgt --mode logicalunit --op update --tid 1 --lun 2 --params thin_provisioning=1 || true
  tgt --mode target --op bind --tid 1 --initiator-address 127.0.0.1
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
  ' alltests="$ZUMA_DIR/all-tests.txt" "$1"
}

# Patterns of expected-failures.txt: "REGEX<TAB>PATTERN" per line.
expected_patterns() {
  [[ -f "$EXPECTED" ]] || return 0
  sed -e 's/#.*//' -e 's/[[:space:]]//g' "$EXPECTED" | { grep -v '^$' || true; } | while read -r pat; do
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
  lun=${LUN_OF[$run]:?unknown run $run (thin or full)}
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
     iscsi-test-cu -d -t ALL "$url" "$mp_url") >"$log" 2>&1 </dev/null || rc=$?
  secs=$((SECONDS - start))
  if ((rc == 124 || rc == 137)); then
    zuma_log "iscsi-test-cu ($run) timed out after ${RUN_TIMEOUT}s"; overall=1
  elif ! grep -q '^Run Summary:' "$log"; then
    zuma_log "iscsi-test-cu ($run) ended without a summary (exit status $rc)"; overall=1
  fi
  parse_log "$log" "$run" >"$OUT/results-$run.txt"
  cat "$OUT/results-$run.txt" >>"$ALL_RESULTS"
  read -r p f s n < <(awk '{ c[$1]++ } END { printf "%d %d %d %d\n", c["passed"], c["failed"], c["skipped"], c["notrun"] }' "$OUT/results-$run.txt")
  echo "iscsi-test-cu ($TARGET, $run LU): $p passed, $f failed, $s skipped, $n not run, in ${secs}s"
done

if [[ $TARGET == zuma ]]; then
  if ! kill -0 "$ZUMA_PID" 2>/dev/null; then
    zuma_log "zumad died during the suite"; overall=1; ZUMA_PID=""
  else
    src=0; zuma_stop || src=$?
    if ((src != 0)); then zuma_log "zumad exit status $src after SIGTERM"; overall=1; fi
  fi
else
  stop_tgt
fi

patterns=$ZUMA_DIR/expected.pat
expected_patterns >"$patterns"
bad=$ZUMA_DIR/unexpected.txt
stale=$ZUMA_DIR/stale.txt
# Not passed and matching no pattern -> unexpected; patterns matching nothing -> stale.
awk -F'\t' -v PAT="$patterns" -v BAD="$bad" -v STALE="$stale" '
  BEGIN { while ((getline l < PAT) > 0) { split(l, x, "\t"); re[++n] = x[1]; pat[n] = x[2] }
          printf "" > BAD; printf "" > STALE }
  { split($1, a, " "); st = a[1]; nm = a[2]
    if (st == "passed") next
    ok = 0
    for (i = 1; i <= n; i++) if (nm ~ re[i]) { ok = 1; used[i] = 1 }
    if (!ok) printf "  %-8s %s  %s\n", st, nm, $2 > BAD }
  END { for (i = 1; i <= n; i++) if (!(i in used)) print "  " pat[i] > STALE }
' "$ALL_RESULTS"

read -r P F S N < <(awk '{ c[$1]++ } END { printf "%d %d %d %d\n", c["passed"], c["failed"], c["skipped"], c["notrun"] }' "$ALL_RESULTS")
echo "iscsi-test-cu ($TARGET, all runs): $P passed, $F failed, $S skipped, $N not run"

if ((UPDATE)); then
  declare -A reason
  if [[ -f "$EXPECTED" ]]; then
    while IFS= read -r line; do
      n=$(sed -e 's/#.*//' -e 's/[[:space:]]//g' <<<"$line")
      [[ -n $n && $line == *"#"* ]] && reason[$n]=${line#*#}
    done <"$EXPECTED"
  fi
  tmp=$ZUMA_DIR/expected.new
  {
    echo "# iscsi-test-cu tests that do not pass against zumad (failed, skipped or not run)."
    echo "# One name per line: Suite.Test (every run) or thin:/full:Suite.Test; '*' globs; '# reason'."
    echo "# Regenerate: tests/conformance/run-iscsi-test-cu.sh --zumad build/apps/zumad --update"
    # Names not passing in every run become unqualified.
    awk -F'\t' -v nruns="${#run_list[@]}" '
      { split($1, a, " "); st = a[1]; full = a[2]; i = index(full, ":"); run = substr(full, 1, i - 1); t = substr(full, i + 1)
        if (!(t in cnt)) order[++n] = t
        cnt[t]++; runs[t] = runs[t] " " run; msg[t] = msg[t] == "" ? st ": " $2 : msg[t] }
      END { for (k = 1; k <= n; k++) { t = order[k]
              if (cnt[t] == nruns) print t "\t" msg[t]
              else { m = split(runs[t], r, " "); for (j = 1; j <= m; j++) print r[j] ":" t "\t" msg[t] } } }
    ' <(awk '$1 != "passed"' "$ALL_RESULTS") | sort | while IFS=$'\t' read -r n m; do
      r=${reason[$n]:-${reason[${n#*:}]:-${reason[thin:$n]:-${reason[full:$n]:-}}}}
      if [[ -n $r ]]; then printf '%s  #%s\n' "$n" "$r"
      else printf '%s  # %s\n' "$n" "$(tr -s ' ' <<<"$m" | cut -c1-150)"; fi
    done
  } >"$tmp"
  cp "$tmp" "$EXPECTED"
  echo "updated $EXPECTED ($(grep -c -v '^#' "$EXPECTED") entries)"
  exit $overall
fi

if [[ -s $stale ]]; then
  echo "Listed in $(basename "$EXPECTED") but passed (remove them or run --update):"
  cat "$stale"
fi
if [[ -s $bad ]]; then
  echo "UNEXPECTED (not passed and not in $(basename "$EXPECTED")): $(wc -l <"$bad")"
  cat "$bad"
  overall=1
fi
if [[ $TARGET == tgt ]]; then exit 0; fi
((overall == 0)) && echo "conformance: OK (logs in $OUT)" || echo "conformance: FAILED (logs in $OUT)"
exit $overall
