# Shared helpers for the bench/ scripts (bash). Source it, then:
#   bench_init NAME            # private work dir in $BENCH_DIR; cleanup on EXIT/INT/TERM
#   port=$(bench_free_port)    # a free TCP port on 127.0.0.1
#   bench_spawn NAME CMD...    # starts CMD in the background, logs to $BENCH_DIR/NAME.log,
#                              # remembers its PID (printed) for cleanup
#   bench_wait_port PID PORT   # waits until PORT accepts connections (or PID dies)
#   bench_stop PID             # SIGTERM, SIGKILL after 5 s
#   bench_run CMD...           # runs a client (zuma-bench) and returns its exit status
# Cleanup kills only the processes started through bench_spawn / bench_run, then removes
# $BENCH_DIR (BENCH_KEEP=1 keeps it). Only 127.0.0.1 is ever used.

BENCH_DIR=""
BENCH_PIDS=()
BENCH_PORTS=()
BENCH_EXTRA_CLEANUP=()   # more paths to remove at exit (files in /dev/shm)
BENCH_CURRENT=""         # the client bench_run is waiting for

bench_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
bench_die() { bench_log "error: $*"; exit 2; }

bench_cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  if [[ -n "$BENCH_CURRENT" ]] && kill -0 "$BENCH_CURRENT" 2>/dev/null; then
    kill -TERM "$BENCH_CURRENT" 2>/dev/null || true   # zuma-bench stops and drains
    for _ in $(seq 50); do kill -0 "$BENCH_CURRENT" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$BENCH_CURRENT" 2>/dev/null || true
    wait "$BENCH_CURRENT" 2>/dev/null || true
  fi
  for pid in "${BENCH_PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null || continue
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${BENCH_PIDS[@]}"; do
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true   # tgtd ignores SIGTERM
    wait "$pid" 2>/dev/null || true
  done
  local p
  for p in "${BENCH_EXTRA_CLEANUP[@]}"; do rm -rf -- "$p"; done
  if [[ -n "$BENCH_DIR" && -d "$BENCH_DIR" ]]; then
    if [[ "${BENCH_KEEP:-0}" != 0 ]]; then
      bench_log "keeping $BENCH_DIR"
    else
      rm -rf -- "$BENCH_DIR"
    fi
  fi
  exit "$rc"
}

bench_init() {
  BENCH_DIR=$(mktemp -d "${TMPDIR:-/tmp}/zuma-$1-XXXXXX")
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# True if something accepts TCP connections on 127.0.0.1:$1.
bench_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A port nothing listens on, below the ephemeral range, never handed out before here.
bench_free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 12000))
    [[ " ${BENCH_PORTS[*]} " == *" $p "* ]] && continue
    bench_port_open "$p" && continue
    ss -Htan 2>/dev/null | awk '{print $4}' | grep -q ":$p\$" && continue
    BENCH_PORTS+=("$p")
    echo "$p"
    return 0
  done
  bench_die "no free port found"
}

# bench_spawn NAME CMD... : runs CMD in the background; sets BENCH_LAST_PID.
bench_spawn() {
  local name=$1; shift
  "$@" >>"$BENCH_DIR/$name.log" 2>&1 &
  BENCH_LAST_PID=$!
  BENCH_PIDS+=("$BENCH_LAST_PID")
}

# bench_wait_port PID PORT [SECONDS]
# bench_run CMD...: runs CMD in the background and waits for it. A foreground command
# would make bash hold a SIGINT/SIGTERM (and so the cleanup) until it exits; `wait` is
# interrupted at once. The exit status is CMD's.
bench_run() {
  "$@" &
  BENCH_CURRENT=$!
  local rc=0
  wait "$BENCH_CURRENT" || rc=$?
  BENCH_CURRENT=""
  return "$rc"
}

bench_wait_port() {
  local pid=$1 port=$2 deadline=$((SECONDS + ${3:-10}))
  until bench_port_open "$port"; do
    kill -0 "$pid" 2>/dev/null || return 1
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
}

bench_stop() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
  kill -CONT "$pid" 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# json_get FILE KEY: the first "KEY":value in a one-line JSON object (zuma-bench --json
# puts the totals first, so the first match is the top-level one). Numbers and booleans.
json_get() {
  grep -o "\"$2\":[^,}]*" "$1" | head -n 1 | cut -d: -f2
}

# Utime+stime of a process (all its threads) in clock ticks.
proc_cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
proc_rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
proc_hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# Finds a binary: $1 = env override, $2 = name under apps/ of the build dirs.
bench_find_bin() {
  local override=$1 name=$2 root d
  if [[ -n "$override" ]]; then echo "$override"; return; fi
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  for d in build-bench build build-lead; do
    if [[ -x "$root/$d/apps/$name" ]]; then echo "$root/$d/apps/$name"; return; fi
  done
  echo ""
}

# bench_parse_size 1GiB -> 1073741824 (also 512, 4k, 4K, 4KiB, 16M, 16MiB, 2G, 1T).
bench_parse_size() {
  local s=$1 n unit
  [[ $s =~ ^([0-9]+)([kKmMgGtT]?)(i?B?)$ ]] || { echo "bad size: $s" >&2; return 1; }
  n=${BASH_REMATCH[1]}; unit=${BASH_REMATCH[2]}
  case $unit in
    k|K) n=$((n << 10)) ;; m|M) n=$((n << 20)) ;; g|G) n=$((n << 30)) ;; t|T) n=$((n << 40)) ;;
  esac
  echo "$n"
}
