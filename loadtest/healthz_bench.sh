#!/usr/bin/env bash
# /healthz throughput and latency through gunicorn directly (no nginx), per worker class and with
# the per-request yield (app.factory.YieldFirst) on or off. Self-contained and bounded:
#   - starts a private redis-server (loopback, free port, tmp dir, no persistence) and, for each
#     (worker class, yield) pair, a gunicorn (`-c gunicorn.conf.py -k <class>`) pinned to CPU 0;
#   - waits for /readyz 200, checks that /ws works (status then price messages, clean close);
#   - runs wrk pinned to CPU 1 (`--latency`, warm-up run discarded) at each connection count;
#   - prints one markdown table row per run; stops everything it started on exit.
#
# Usage: loadtest/healthz_bench.sh [options]
#   -k, --classes "gevent gevent_pywsgi"   worker classes to measure
#   -y, --yield "on off"                   on: wsgi:app (YieldFirst); off: loadtest.wsgi_noyield:app
#   -c, --conns "8 64 256"                 wrk connection counts
#   -d, --duration 10                      measured seconds per run
#   -w, --warmup 3                         warm-up seconds before each measured run (discarded)
#   -t, --threads 2                        wrk threads
#   -r, --repeat 1                         rounds over the whole matrix (a fresh gunicorn each time)
#       --max-other 25                     re-run a measurement if other processes used more than
#                                          this % of one CPU during it (shared machine), and
#       --retries 2                        at most this many times; every run waits (<= 60 s) for
#                                          the machine to be quiet first
#       --no-ws                            skip the websocket check
#       --logs DIR                         keep the gunicorn/redis/wrk logs in DIR
# Needs: .venv (scripts/setup.sh), wrk, redis-server, taskset, curl. Targets 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

CLASSES="gevent gevent_pywsgi"
YIELDS="on off"
CONNS="8 64 256"
DURATION=10
WARMUP=3
THREADS=2
REPEAT=1
WS_CHECK=1
KEEP_LOGS=""
MAX_OTHER=25
RETRIES=2
while [ $# -gt 0 ]; do
  case "$1" in
    -k|--classes) CLASSES=$2; shift 2 ;;
    -y|--yield) YIELDS=$2; shift 2 ;;
    -c|--conns) CONNS=$2; shift 2 ;;
    -d|--duration) DURATION=$2; shift 2 ;;
    -w|--warmup) WARMUP=$2; shift 2 ;;
    -t|--threads) THREADS=$2; shift 2 ;;
    -r|--repeat) REPEAT=$2; shift 2 ;;
    --max-other) MAX_OTHER=$2; shift 2 ;;
    --retries) RETRIES=$2; shift 2 ;;
    --no-ws) WS_CHECK=0; shift ;;
    --logs) KEEP_LOGS=$2; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "healthz_bench: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
for y in $YIELDS; do
  case "$y" in on|off) ;; *) echo "healthz_bench: --yield takes on/off, got $y" >&2; exit 2 ;; esac
done

PY=$ROOT/.venv/bin/python
GUNICORN=$ROOT/.venv/bin/gunicorn
for tool in wrk redis-server redis-cli taskset curl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "healthz_bench: $tool not found (run scripts/setup.sh)" >&2; exit 1; }
done
[ -x "$GUNICORN" ] || { echo "healthz_bench: $GUNICORN missing (run scripts/setup.sh)" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "healthz_bench: needs 2 CPUs (gunicorn on 0, wrk on 1)" >&2; exit 1; }

log() { printf '[bench] %s\n' "$*" >&2; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/healthz-bench.XXXXXX")
REDIS_PID=""
GUNICORN_PID=""
GUNICORN_KIDS=""

stop_gunicorn() {
  [ -n "$GUNICORN_PID" ] || return 0
  GUNICORN_KIDS="$GUNICORN_KIDS $(pgrep -P "$GUNICORN_PID" 2>/dev/null | tr '\n' ' ')"
  kill -TERM "$GUNICORN_PID" 2>/dev/null || true
  for _ in $(seq 1 250); do   # graceful_timeout is 20 s; the writer flushes on the way out
    kill -0 "$GUNICORN_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$GUNICORN_PID" 2>/dev/null || true
  wait "$GUNICORN_PID" 2>/dev/null || true
  for p in $GUNICORN_KIDS; do   # the worker exits with its master; make sure of it
    for _ in $(seq 1 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  GUNICORN_PID=""
  GUNICORN_KIDS=""
}

cleanup() {
  trap - INT TERM EXIT
  stop_gunicorn
  if [ -n "$REDIS_PID" ]; then
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || kill -TERM "$REDIS_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$REDIS_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  if [ -n "$KEEP_LOGS" ]; then
    mkdir -p "$KEEP_LOGS" && cp "$TMP"/*.log "$KEEP_LOGS"/ 2>/dev/null || true
    log "logs kept in $KEEP_LOGS"
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# ---- Redis: private, loopback, no persistence; on CPU 1 with wrk (it is nearly idle here) -------
REDIS_PORT=$(free_port)
mkdir -p "$TMP/redis"
taskset -c 1 redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$TMP/redis" \
  --save "" --appendonly no --daemonize no --logfile "$TMP/redis.log" &
REDIS_PID=$!
for i in $(seq 1 100); do
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break
  [ "$i" = 100 ] && { log "redis did not start"; tail -n 5 "$TMP/redis.log" >&2; exit 1; }
  sleep 0.1
done

# Share of both CPUs busy over one second (everything counted: run it while our load is stopped).
# The figures are meaningless if something else is using the machine, so say so.
cpu_busy() {
  local a b
  a=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  sleep 1
  b=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  echo "$a $b" | awk '{d = $4 - $2; printf "%.0f", (d > 0 ? 100 * ($3 - $1) / d : 0)}'
}
quiet_check() {  # $1 label
  local busy
  busy=$(cpu_busy)
  if [ "$busy" -gt 10 ]; then
    log "WARNING: machine ${busy}% busy before $1 with our load stopped: something else is running, figures are suspect"
  else
    log "machine ${busy}% busy before $1 (idle check ok)"
  fi
}

wait_quiet() {  # $1 label; up to 60 s for a second with the machine < 10% busy (our gunicorn idles at ~1%)
  local busy
  for _ in $(seq 1 60); do
    busy=$(cpu_busy)
    [ "$busy" -lt 10 ] && return 0
  done
  log "WARNING: machine still ${busy}% busy before $1 after waiting 60 s; measuring anyway"
}

# ---- gunicorn --------------------------------------------------------------------------------
start_gunicorn() {  # $1 worker class, $2 yield on/off, $3 log file
  local cls=$1 yld=$2 logf=$3 app_arg=()
  [ "$yld" = off ] && app_arg=(loadtest.wsgi_noyield:app)
  PORT=$(free_port)
  rm -rf "$TMP/data"; mkdir -p "$TMP/data"
  # a fresh start each time: no price history or worker leases left by the previous gunicorn
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" flushall >/dev/null
  TAP_DATA_DIR="$TMP/data" TAP_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" TAP_BIND="127.0.0.1:$PORT" \
    taskset -c 0 "$GUNICORN" -c gunicorn.conf.py -k "$cls" "${app_arg[@]}" >>"$logf" 2>&1 &
  GUNICORN_PID=$!
  for i in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/readyz" 2>/dev/null)" = 200 ] && return 0
    kill -0 "$GUNICORN_PID" 2>/dev/null || { log "gunicorn exited during start-up"; tail -n 20 "$logf" >&2; exit 1; }
    [ "$i" = 300 ] && { log "gunicorn not ready after 30 s"; tail -n 20 "$logf" >&2; exit 1; }
    sleep 0.1
  done
}

# Websocket check, on its own gunicorn (production app): handshake 101, `status` first, then
# `price` messages, client-initiated close (1000 must be echoed), then the server must close the TCP
# connection (RFC 6455 §7.1.1). The client keeps its end open for up to 60 s, so if the server does
# not close it, the TERM that follows shows what a lingering connection does to a graceful stop.
ws_client() {  # $1 port, $2 result file
  taskset -c 1 timeout 90 "$PY" - "$1" "$2" <<'PYEOF' || true
import base64, json, os, socket, struct, sys, time

port, out = int(sys.argv[1]), sys.argv[2]

def report(msg):
    with open(out, "w") as f:
        f.write(msg + "\n")

def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("server closed the connection")
        buf += chunk
    return buf

def recv_frame(s):  # server frames are not masked
    b0, b1 = recv_exact(s, 2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", recv_exact(s, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", recv_exact(s, 8))[0]
    return b0 & 0x0F, recv_exact(s, n)

def send_frame(s, opcode, payload):  # client frames are masked
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    s.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body)

s = None
try:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += recv_exact(s, 1)
    assert head.startswith(b"HTTP/1.1 101"), f"handshake: {head[:40]!r}"
    op, data = recv_frame(s)
    first = json.loads(data)
    assert op == 1 and first.get("type") == "status", f"first message is not status: {data[:80]!r}"
    prices, deadline = 0, time.monotonic() + 5
    while prices < 3 and time.monotonic() < deadline:
        op, data = recv_frame(s)
        prices += op == 1 and json.loads(data).get("type") == "price"
    assert prices >= 3, f"only {prices} price messages in 5 s"
    send_frame(s, 0x8, struct.pack("!H", 1000))
    while True:
        op, data = recv_frame(s)
        if op == 0x8:
            break
    code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
    assert code == 1000, f"close code {code}"
    s.settimeout(3)
    try:
        eof = s.recv(1) == b""
    except TimeoutError:
        eof = False
    if eof:
        report(f"ok: status + {prices} price, close 1000 echoed, server closed TCP")
    else:
        report(f"PARTIAL: status + {prices} price, close 1000 echoed, but the server did NOT close "
               "the TCP connection within 3 s")
        s.settimeout(60)  # hold our end open; the server's graceful stop comes next
        try:
            s.recv(1)
        except OSError:
            pass
except Exception as exc:
    report(f"FAIL {type(exc).__name__}: {exc}")
finally:
    if s is not None:
        s.close()
PYEOF
}

ws_check() {  # $1 worker class; appends one line to $TMP/ws-summary.txt (no subshell: the EXIT trap must see GUNICORN_PID)
  local cls=$1 glog="$TMP/gunicorn-$1-ws.log" res="$TMP/ws-$1.txt" cpid t0 t1 probs flushed
  start_gunicorn "$cls" on "$glog"
  rm -f "$res"
  ws_client "$PORT" "$res" &
  cpid=$!
  for _ in $(seq 1 150); do [ -s "$res" ] && break; sleep 0.1; done
  [ -s "$res" ] || echo "FAIL no result within 15 s" >"$res"
  sleep 0.5
  t0=$(date +%s.%N)
  stop_gunicorn
  t1=$(date +%s.%N)
  wait "$cpid" 2>/dev/null || true
  probs=$(log_problems "$glog")
  flushed=no
  grep -q 'workers stopped' "$glog" && flushed=yes
  printf -- '- %s | %s | gunicorn log problem lines: %s | TERM to exit: %.1f s | worker_exit ran ("workers stopped" logged): %s\n' \
    "$cls" "$(cat "$res")" "$probs" "$(echo "$t1 - $t0" | bc)" "$flushed" >>"$TMP/ws-summary.txt"
  log "ws check $cls: $(cat "$res")"
}

# Problems gunicorn logged (tracebacks, errors, worker timeouts, pywsgi's "Invalid HTTP method").
PROBLEMS='traceback|\[error\]|\[critical\]|exception|assertionerror|worker timeout|invalid http'
log_problems() {  # $1 log file
  grep -ciE "$PROBLEMS" "$1" || true
}

# wrk duration strings ("312.00us", "1.20ms", "1.70s", "2.00m") -> milliseconds
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    printf (n < 10 ? "%.2f" : (n < 100 ? "%.1f" : "%.0f")), n
  }'
}

# CPU seconds used by processes other than ours while wrk runs: all busy time (/proc/stat) minus
# gunicorn (master + worker, all threads), redis and wrk (bash `times`: waited-for children). Kernel
# time spent on loopback traffic outside any process shows up here too, so a few % is normal; much
# more means something else was running and the row is suspect.
CLK_TCK=$(getconf CLK_TCK)
cpu_snapshot() {  # sets SNAP; no subshell, or `times` would not see wrk
  local busy ours=0 p kids child
  busy=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9}' /proc/stat)
  kids=$(pgrep -P "$GUNICORN_PID" 2>/dev/null | tr '\n' ' ')
  for p in $GUNICORN_PID $kids $REDIS_PID; do
    ours=$((ours + $(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  times >"$TMP/times.txt"
  child=$(awk 'NR == 2 {split($1, u, "m"); split($2, s, "m"); print 60 * u[1] + u[2] + 60 * s[1] + s[2]}' "$TMP/times.txt")
  SNAP="$busy $ours $child"
}

run_wrk() {  # $1 conns, $2 seconds, $3 output file; sets OTHER_CPU (% of one CPU)
  local threads=$THREADS before after t0 t1
  [ "$1" -lt "$threads" ] && threads=$1
  cpu_snapshot; before=$SNAP; t0=$(date +%s.%N)
  taskset -c 1 timeout $(($2 + 30)) wrk -t "$threads" -c "$1" -d "${2}s" --timeout 10s --latency \
    "http://127.0.0.1:$PORT/healthz" >"$3" 2>&1 || true
  cpu_snapshot; after=$SNAP; t1=$(date +%s.%N)
  OTHER_CPU=$(echo "$before $after $t0 $t1 $CLK_TCK" | awk '{
    other = ($4 - $1) / $9 - ($5 - $2) / $9 - ($6 - $3)
    printf "%.0f", (other > 0 ? 100 * other / ($8 - $7) : 0) }')
}

row() {  # $1 class, $2 yield, $3 conns, $4 round, $5 wrk output
  local f=$5 rps p50 p99 max errs non2xx
  rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$f")
  p50=$(awk '$1 == "50%" {print $2}' "$f")
  p99=$(awk '$1 == "99%" {print $2}' "$f")
  max=$(awk '$1 == "Latency" && NF >= 4 {print $4; exit}' "$f")
  errs=$(awk '/Socket errors:/ {gsub(",", ""); print "connect " $4 ", read " $6 ", write " $8 ", timeout " $10}' "$f")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$f")
  if [ -z "$rps" ] || [ -z "$p99" ]; then
    printf '| %s | %s | %s | %s | wrk failed: %s | | | | | |\n' "$1" "$2" "$3" "$4" "$(tr '\n' ' ' <"$f" | cut -c1-120)"
    return
  fi
  local note="none"
  [ -n "$errs" ] && note=$errs
  [ -n "$non2xx" ] && note="$note; non-2xx $non2xx"
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
    "$1" "$2" "$3" "$4" "$rps" "$(to_ms "$p50")" "$(to_ms "$p99")" "$(to_ms "$max")" "$note" "$OTHER_CPU"
}

log "machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo); $(date -u '+%Y-%m-%d %H:%M UTC')"
log "gunicorn on CPU 0, wrk ($THREADS threads) on CPU 1; ${WARMUP}s warm-up + ${DURATION}s per run; redis on :$REDIS_PORT"
if [ "$WS_CHECK" = 1 ]; then
  echo "Websocket check (/ws, production app wsgi:app):"
  for cls in $CLASSES; do ws_check "$cls"; done
  cat "$TMP/ws-summary.txt"
  echo
fi
echo "| worker class | yield | conns | round | req/s | p50 ms | p99 ms | max ms | wrk errors | other CPU % |"
echo "|---|---|---|---|---:|---:|---:|---:|---|---:|"
for round in $(seq 1 "$REPEAT"); do
  for cls in $CLASSES; do
    for yld in $YIELDS; do
      glog="$TMP/gunicorn-$cls-yield-$yld-r$round.log"
      quiet_check "$cls yield=$yld round $round"
      start_gunicorn "$cls" "$yld" "$glog"
      for c in $CONNS; do
        out="$TMP/wrk-$cls-$yld-$c-r$round.log"
        for try in $(seq 0 "$RETRIES"); do
          wait_quiet "$cls yield=$yld c=$c"
          [ "$WARMUP" -gt 0 ] && run_wrk "$c" "$WARMUP" "$TMP/warmup.txt"
          run_wrk "$c" "$DURATION" "$out"
          [ "$OTHER_CPU" -le "$MAX_OTHER" ] && break
          if [ "$try" -lt "$RETRIES" ]; then
            log "$cls yield=$yld c=$c: other processes used ${OTHER_CPU}% of a CPU during the run; measuring again"
          else
            log "$cls yield=$yld c=$c: still ${OTHER_CPU}% other CPU after $RETRIES retries; keeping this run (suspect)"
          fi
        done
        row "$cls" "$yld" "$c" "$round" "$out"
      done
      probs=$(log_problems "$glog")
      [ "$probs" != 0 ] && { log "gunicorn $cls yield=$yld logged $probs problem line(s):"; grep -iE "$PROBLEMS" "$glog" | sort | uniq -c | head -n 10 >&2; }
      stop_gunicorn
      # The worker greenlets share the hub with the HTTP load: count how often they fell behind
      # (price feed turned critical, a lease expired) while it ran, before the TERM.
      awk -v cfg="$cls | $yld | $round" '
        /Handling signal: term/ {exit}
        /price feed .*-> critical/ {crit++}
        /lost (the feed lease|its lease)/ {lease++}
        END {printf "| %s | %d | %d |\n", cfg, crit, lease}' "$glog" >>"$TMP/background.txt"
    done
  done
done
echo
echo "Worker greenlets during the runs (log lines before the TERM):"
echo
echo "| worker class | yield | round | feed -> critical | lease lost |"
echo "|---|---|---|---:|---:|"
cat "$TMP/background.txt"
