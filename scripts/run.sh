#!/usr/bin/env bash
# make run: install what is missing, start a private Redis (AOF on), gunicorn (one gevent worker)
# and nginx (TLS, limits), print the URL, and on Ctrl-C stop everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
bash scripts/setup.sh

export TAP_DATA_DIR=${TAP_DATA_DIR:-$ROOT/var}
export TAP_DEV_MODE=${TAP_DEV_MODE:-1}   # mock deposits on: this command is for local use
export TAP_REDIS_URL=${TAP_REDIS_URL:-redis://127.0.0.1:6390/0}
PY=.venv/bin/python
log() { printf '[run] %s\n' "$*" 2>/dev/null || true; }

# Validate every TAP_* setting first: one line naming the bad variable, then stop.
eval "$($PY - <<'PYEOF'
import shlex, sys
from urllib.parse import urlsplit
from app.config import ConfigError, Settings
try:
    s = Settings.from_env()
except ConfigError as exc:
    print(f"echo {shlex.quote('tap-trading: configuration error: ' + str(exc))} >&2; exit 2")
    sys.exit(0)
u = urlsplit(s.redis_url)
print(f"REDIS_HOST={shlex.quote(u.hostname or '127.0.0.1')} REDIS_PORT={u.port or 6379}")
print(f"BIND={shlex.quote(s.bind)} HTTP_PORT={s.http_port} HTTPS_PORT={s.https_port}")
PYEOF
)"
mkdir -p "$TAP_DATA_DIR/redis" "$TAP_DATA_DIR/logs"

pids=()
cleanup() {
  # Nothing may interrupt the shutdown: not a second Ctrl-C, not a closed terminal or pipe (| tee).
  trap '' INT TERM HUP PIPE
  trap - EXIT
  log "stopping…"
  [ -n "${NGINX_PID:-}" ] && kill -QUIT "$NGINX_PID" 2>/dev/null || true
  [ -n "${GUNICORN_PID:-}" ] && kill -TERM "$GUNICORN_PID" 2>/dev/null || true
  for _ in $(seq 1 250); do   # gunicorn flushes the SQLite writer on the way out; give it 25 s
    kill -0 "${GUNICORN_PID:-0}" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "${REDIS_PID:-}" ] && { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" shutdown >/dev/null 2>&1 || kill -TERM "$REDIS_PID" 2>/dev/null || true; }
  for p in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  log "stopped"
}
trap cleanup EXIT
trap 'exit 130' INT    # exit runs the EXIT trap: one cleanup, whatever the signal
trap 'exit 143' TERM
trap 'exit 129' HUP

port_busy() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
if port_busy "$REDIS_HOST" "$REDIS_PORT"; then
  log "port $REDIS_PORT is already in use; set TAP_REDIS_URL to a free port"; exit 1
fi

# Each child gets its own session (setsid) so Ctrl-C reaches only this script, which then stops
# them in order: nginx, gunicorn (flushes writes), Redis.
log "starting Redis on $REDIS_HOST:$REDIS_PORT (AOF on, data in $TAP_DATA_DIR/redis)"
setsid redis-server --bind "$REDIS_HOST" --port "$REDIS_PORT" --dir "$TAP_DATA_DIR/redis" \
  --appendonly yes --appendfsync everysec --save "" --daemonize no \
  --logfile "$TAP_DATA_DIR/logs/redis.log" &
REDIS_PID=$!; pids+=("$REDIS_PID")
for _ in $(seq 1 100); do
  redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1
done

log "starting gunicorn on $BIND"
setsid .venv/bin/gunicorn -c gunicorn.conf.py >>"$TAP_DATA_DIR/logs/gunicorn.log" 2>&1 &
GUNICORN_PID=$!; pids+=("$GUNICORN_PID")
echo "$GUNICORN_PID" > "$TAP_DATA_DIR/gunicorn.pid"

log "starting nginx on :$HTTP_PORT and :$HTTPS_PORT (TLS, self-signed for localhost)"
setsid $PY nginx/render.py --exec >>"$TAP_DATA_DIR/logs/nginx.log" 2>&1 &
NGINX_PID=$!; pids+=("$NGINX_PID")

for i in $(seq 1 300); do
  if curl -sfk "https://127.0.0.1:$HTTPS_PORT/readyz" >/dev/null 2>&1; then
    log "ready: https://localhost:$HTTPS_PORT/  (http://localhost:$HTTP_PORT/, websocket /ws)"
    log "gunicorn master pid $GUNICORN_PID (kill -HUP to reload); logs in $TAP_DATA_DIR/logs; Ctrl-C stops all"
    break
  fi
  for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null || { log "a process exited during start-up; see $TAP_DATA_DIR/logs"; tail -n 5 "$TAP_DATA_DIR"/logs/*.log >&2; exit 1; }
  done
  [ "$i" = 300 ] && { log "not ready after 30 s; see $TAP_DATA_DIR/logs"; exit 1; }
  sleep 0.1
done

# Stay in the foreground until Ctrl-C or until one of the services dies.
while true; do
  for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null || { log "process $p exited unexpectedly; stopping the rest"; exit 1; }
  done
  sleep 1
done
