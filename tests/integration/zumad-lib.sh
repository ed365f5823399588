# Bash version of the integration harness (harness.hh): source it, then
#   zuma_init                      # temp dir in $ZUMA_DIR, cleanup trap on EXIT
#   PORT=$(zuma_free_port)
#   zuma_start "$config_file"      # zumad in the background, waits for its portals
#   ...
#   zuma_stop                      # SIGTERM, SIGKILL after 10 s; returns zumad's status
# Needs ZUMAD (path of the zumad binary). zumad's output goes to $ZUMA_DIR/zumad.log and is
# printed when the script exits with a non-zero status. ZUMA_TEST_KEEP=1 keeps $ZUMA_DIR.
# Only 127.0.0.1 is used.

ZUMA_PID=""
ZUMA_DIR=""
ZUMA_PORTS=()

zuma_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

zuma_cleanup() {
  local rc=$?
  set +e
  if [[ -n "$ZUMA_PID" ]] && kill -0 "$ZUMA_PID" 2>/dev/null; then
    kill -TERM "$ZUMA_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$ZUMA_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$ZUMA_PID" 2>/dev/null || true
    wait "$ZUMA_PID" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && -n "$ZUMA_DIR" && -f "$ZUMA_DIR/zumad.log" ]]; then
    echo "----- zumad log ($ZUMA_DIR/zumad.log, last 200 lines) -----" >&2
    tail -n 200 "$ZUMA_DIR/zumad.log" >&2
    echo "----- end of zumad log -----" >&2
  fi
  if [[ -n "$ZUMA_DIR" && -d "$ZUMA_DIR" ]]; then
    if [[ "${ZUMA_TEST_KEEP:-0}" != 0 ]]; then
      echo "keeping $ZUMA_DIR" >&2
    else
      rm -rf "$ZUMA_DIR"
    fi
  fi
  return $rc
}

zuma_init() {
  : "${ZUMAD:?ZUMAD must name the zumad binary}"
  [[ -x "$ZUMAD" ]] || { echo "zumad not found at $ZUMAD" >&2; exit 2; }
  ZUMAD=$(readlink -f "$ZUMAD")  # zumad runs in $ZUMA_DIR
  ZUMA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/zuma-it-XXXXXX")
  mkdir -p "$ZUMA_DIR/var"
  trap zuma_cleanup EXIT
  trap 'exit 130' INT TERM
}

# True if something accepts TCP connections on 127.0.0.1:$1.
zuma_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Prints a port on 127.0.0.1 that nothing listens on, below the ephemeral range so
# outgoing connections do not take it meanwhile; never one handed out before by this shell.
zuma_free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 12000))
    [[ " ${ZUMA_PORTS[*]} " == *" $p "* ]] && continue
    zuma_port_open "$p" && continue
    ZUMA_PORTS+=("$p")
    echo "$p"
    return 0
  done
  echo "no free port found" >&2
  return 1
}

# zuma_start CONFIG PORT... : starts zumad, waits up to 10 s for every PORT.
zuma_start() {
  local config=$1; shift
  echo "[harness] starting $ZUMAD --config $config" >>"$ZUMA_DIR/zumad.log"
  (cd "$ZUMA_DIR" && exec "$ZUMAD" --config "$config") >>"$ZUMA_DIR/zumad.log" 2>&1 &
  ZUMA_PID=$!
  local deadline=$((SECONDS + 10)) p
  for p in "$@"; do
    until zuma_port_open "$p"; do
      if ! kill -0 "$ZUMA_PID" 2>/dev/null; then
        local rc=0
        wait "$ZUMA_PID" || rc=$?
        ZUMA_PID=""
        zuma_log "zumad exited with status $rc before accepting connections"
        return 1
      fi
      if ((SECONDS >= deadline)); then
        zuma_log "zumad does not accept connections on 127.0.0.1:$p after 10 s"
        return 1
      fi
      sleep 0.05
    done
  done
}

# zuma_stop: SIGTERM, waits up to 10 s, SIGKILL. Returns zumad's exit status (137 if killed).
zuma_stop() {
  [[ -n "$ZUMA_PID" ]] || return 0
  kill -TERM "$ZUMA_PID" 2>/dev/null || true
  local i
  for i in $(seq 100); do kill -0 "$ZUMA_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$ZUMA_PID" 2>/dev/null; then
    zuma_log "zumad ignored SIGTERM for 10 s: SIGKILL"
    kill -KILL "$ZUMA_PID" 2>/dev/null || true
  fi
  local rc=0
  wait "$ZUMA_PID" || rc=$?
  ZUMA_PID=""
  return $rc
}
