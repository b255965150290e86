#!/usr/bin/env bash
# make run: install what is missing, start a private Redis (AOF on), gunicorn (one gevent worker)
# and nginx (TLS, limits), print the URL, and keep them running until Ctrl-C, which stops them all.
#
# Supervision: a service that dies after start-up is started again, alone, after 1 s, then 2, 4, 8,
# 16 s while it keeps dying within STABLE_S of its start; the others keep serving. After
# RESTART_LIMIT such quick deaths in a row it is a crash loop, not a hiccup: the script says so,
# names the log, stops everything and exits 1. A failure during start-up stops everything at once.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
bash scripts/setup.sh
bash scripts/web.sh build   # the web app nginx serves at /; rebuilt only when web/ changed

export TAP_DATA_DIR=${TAP_DATA_DIR:-$ROOT/var}
export TAP_DEV_MODE=${TAP_DEV_MODE:-1}   # mock deposits on: this command is for local use
export TAP_REDIS_URL=${TAP_REDIS_URL:-redis://127.0.0.1:6390/0}
PY=.venv/bin/python
STABLE_S=30        # a service that ran this long before dying starts a new series of restarts
RESTART_LIMIT=5    # quick deaths in a row before giving up
BACKOFF_MAX_S=16
log() { printf '[run] %s\n' "$*" 2>/dev/null || true; }

# Validate every TAP_* setting first: one line naming the bad variable, then stop. (Captured before
# it is evaluated: inside `eval "$(…)"` a crash of this step would go unnoticed by set -e.)
SETTINGS_SH=$($PY - <<'PYEOF'
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
if s.replicating:
    # Litestream's configuration is derived from the same TAP_* settings, rewritten at every start.
    # An empty data directory over a replica that holds week files is a lost disk: gunicorn would
    # create an empty week file and Litestream upload it over the replica's newest state. Refused here,
    # before anything starts (gunicorn's on_starting refuses it too).
    from app.storage.replication import ReplicationError, check_first_start, litestream_bin, write_config
    try:
        check_first_start(s)
        exe, cfg = litestream_bin(), write_config(s)
    except ReplicationError as exc:
        print(f"echo {shlex.quote('tap-trading: ' + str(exc))} >&2; exit 2")
        sys.exit(0)
    where = f"s3://{s.s3_bucket}/{s.s3_replica_prefix}" + (f" at {s.s3_endpoint_url}" if s.s3_endpoint_url else "")
    print(f"REPLICA={shlex.quote(where)} LITESTREAM={shlex.quote(str(exe))} LITESTREAM_CONFIG={shlex.quote(str(cfg))}")
else:
    print("REPLICA=")
PYEOF
) || { log "could not read the configuration (the error is above)"; exit 2; }
eval "$SETTINGS_SH"
LOGS=$TAP_DATA_DIR/logs
mkdir -p "$TAP_DATA_DIR/redis" "$LOGS"

# One `make run` per data directory. A second one (say after this script was killed with kill -9 and
# its services kept running) would start a second writer, resolver and Redis over the same week
# files. The lock's descriptor is inherited by every service started below, so it is held until the
# last of them has exited, whatever happened to this script.
RUN_LOCK=$(cd "$TAP_DATA_DIR" && pwd -P)/run.lock
exec 9>>"$RUN_LOCK"
if ! flock -n 9; then
  holders=""
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = $$ ] && continue  # this script holds it too, unlocked
    for fd in "$p"/fd/*; do
      if [ "$(readlink "$fd" 2>/dev/null)" = "$RUN_LOCK" ]; then holders+=" ${p#/proc/}"; break; fi
    done
  done
  log "another make run, or what it started, is using $TAP_DATA_DIR (pids:${holders:- not visible to you}); stop it, or set TAP_DATA_DIR"
  exit 1
fi

SERVICES=(redis gunicorn nginx)   # start order
[ -n "$REPLICA" ] && SERVICES=(redis gunicorn litestream nginx)
declare -A PID=() STARTED_MS=() QUICK_DEATHS=() RESTART_AT_MS=() TICKS=()
declare -A LOG=([redis]=$LOGS/redis.log [gunicorn]=$LOGS/gunicorn.log [nginx]=$LOGS/nginx.log
                [litestream]=$LOGS/litestream.log)
NGINX_PREFIX=$TAP_DATA_DIR/nginx
NGINX_RUNTIME=""   # set when this script made a runtime dir for nginx (removed at exit)

now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
# PROC_PPID and PROC_TICKS (its start time, in clock ticks after boot) of process $1, from /proc/<pid>/stat
# (fields counted after the command name, which may hold spaces and parentheses); fails if it is gone.
# No subshell: `alive` runs this for every service twice a second.
proc_stat() {
  local stat f
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  read -r -a f <<<"${stat##*) }"
  PROC_PPID=${f[1]} PROC_TICKS=${f[19]}
}
# Whether `pid` is still the service this script started under that pid: its child, started when it was
# (TICKS, read by `start`). bash reaps a dead child by itself (at SIGCHLD), and from then on its pid may
# be given to any new process: `kill -0` took that process for the service, and a signal meant for the
# service reached it. (A process group is safe to signal: its id stays in use while any member lives.)
own_child() { [ -n "${TICKS[$1]:-}" ] && proc_stat "$1" && [ "$PROC_PPID $PROC_TICKS" = "$$ ${TICKS[$1]}" ]; }
alive() { [ -n "${PID[$1]:-}" ] && own_child "${PID[$1]}"; }
describe() { if [ "$1" -gt 128 ]; then echo "signal $(kill -l $(($1 - 128)))"; else echo "status $1"; fi; }

# Stop a service and what is left of its process group (gunicorn's worker, nginx's worker); wait up to
# `waits` tenths of a second, then SIGKILL. Just after its start the service has no group of its own yet
# (setsid runs after the fork): then the process alone is signalled, or it would outlive this script —
# but only while it is still this script's own child (`own_child`): once it has died (`on_death`, a
# failed start-up) its pid may belong to some other process by now.
# With `again`, the signal is sent again each second: nginx notes a QUIT that arrives between installing
# its handlers and entering its main loop, then sleeps until some other signal comes.
reap_group() {
  local pgid=$1 sig=$2 waits=$3 again=${4:-} i
  for ((i = 0; i < waits; i++)); do
    if ((i == 0)) || { [ -n "$again" ] && ((i % 10 == 0)); }; then
      kill "-$sig" -- "-$pgid" 2>/dev/null || signal_child "$pgid" "$sig" || return 0
    fi
    sleep 0.1
    kill -0 -- "-$pgid" 2>/dev/null || signal_child "$pgid" 0 || return 0
  done
  kill -KILL -- "-$pgid" 2>/dev/null || signal_child "$pgid" KILL || true
}
signal_child() { own_child "$1" && kill "-$2" "$1" 2>/dev/null; }

cleanup() {
  # Nothing may interrupt the shutdown: not a second Ctrl-C, not a closed terminal or pipe (| tee).
  trap '' INT TERM HUP PIPE
  trap - EXIT
  log "stopping…"
  # nginx first (no new requests), gunicorn next (it flushes the SQLite writer: up to 25 s), Redis last.
  [ -n "${PID[nginx]:-}" ] && reap_group "${PID[nginx]}" QUIT 50 again
  [ -n "${PID[gunicorn]:-}" ] && reap_group "${PID[gunicorn]}" TERM 250
  # Litestream after gunicorn: its TERM handler uploads what the writer's last commits left (<= 30 s).
  [ -n "${PID[litestream]:-}" ] && reap_group "${PID[litestream]}" TERM 350
  if [ -n "${PID[redis]:-}" ]; then
    redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" shutdown >/dev/null 2>&1 || true
    reap_group "${PID[redis]}" TERM 50
  fi
  if [ -n "$NGINX_RUNTIME" ] && [ -d "$NGINX_RUNTIME" ]; then
    cat "$NGINX_RUNTIME/logs/access.log" >>"$LOGS/nginx-access.log" 2>/dev/null || true
    rm -rf -- "$NGINX_RUNTIME"
  fi
  log "stopped"
}
trap cleanup EXIT
trap 'exit 130' INT    # exit runs the EXIT trap: one cleanup, whatever the signal
trap 'exit 143' TERM
trap 'exit 129' HUP

port_busy() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
check_free() {  # name host port variable
  if port_busy "$2" "$3"; then log "$1 port $2:$3 is already in use; set $4 to a free port"; exit 1; fi
}
check_free Redis "$REDIS_HOST" "$REDIS_PORT" TAP_REDIS_URL
case "$BIND" in
  unix:*) ;;
  *) check_free gunicorn "${BIND%:*}" "${BIND##*:}" TAP_BIND ;;
esac
check_free nginx 127.0.0.1 "$HTTP_PORT" TAP_HTTP_PORT
check_free nginx 127.0.0.1 "$HTTPS_PORT" TAP_HTTPS_PORT

# The services inherit this shell's limit of open files. A normal user's login gets a soft limit of
# 1024 (the hard one is higher): nginx warned at every start that its 8192 worker_connections exceed
# it, and gunicorn's worker, made for 10,000 connections, refused sockets past ~1,020 (EMFILE). The
# soft limit goes up to the hard one, at most 65536.
nofile=$(ulimit -Hn)
if [ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ]; then nofile=65536; fi
if [ "$(ulimit -Sn)" != unlimited ] && [ "$(ulimit -Sn)" -lt "$nofile" ]; then
  ulimit -Sn "$nofile" 2>/dev/null || log "could not raise the open-file limit to $nofile (it is $(ulimit -Sn))"
fi

if [ "$(id -u)" = 0 ]; then
  # nginx drops to 'nobody', who may not be able to enter the checkout or TAP_DATA_DIR (a clone under
  # /root, mode 700; a mktemp -d data dir): it gets a runtime dir of its own, removed at exit.
  NGINX_RUNTIME=$(mktemp -d -p /run tap-trading-nginx.XXXXXX 2>/dev/null || mktemp -d -t tap-trading-nginx.XXXXXX)
  NGINX_PREFIX=$NGINX_RUNTIME
fi

# Each service gets its own session (setsid) so Ctrl-C reaches only this script, which then stops
# them in order: nginx, gunicorn (flushes writes), Redis. A script's background command (`setsid … &`)
# starts with SIGINT and SIGQUIT ignored (POSIX, for a shell without job control), and a program keeps
# that until it installs handlers of its own: render.py, and nginx while it read its config, dropped the
# QUIT that stops nginx, which ran on until the SIGKILL 5 s later. So each service is exec'd from a
# `( … ) &` subshell that gives SIGINT and SIGQUIT their defaults back ($! stays the service's pid).
start_redis() {
  ( trap - INT QUIT; exec setsid redis-server --bind "$REDIS_HOST" --port "$REDIS_PORT" \
    --dir "$TAP_DATA_DIR/redis" --appendonly yes --appendfsync everysec --save "" --daemonize no \
    --logfile "${LOG[redis]}" ) >>"${LOG[redis]}" 2>&1 &
  PID[redis]=$!
}
start_gunicorn() {
  ( trap - INT QUIT; exec setsid .venv/bin/gunicorn -c gunicorn.conf.py ) \
    >>"${LOG[gunicorn]}" 2>&1 &
  PID[gunicorn]=$!
  echo "${PID[gunicorn]}" >"$TAP_DATA_DIR/gunicorn.pid"
}
start_litestream() {
  # AWS_CA_BUNDLE makes litestream 0.5.17 refuse to start; Go reads the same bundle from SSL_CERT_FILE
  # (app/storage/replication.py: litestream_env).
  ( trap - INT QUIT; exec env -u AWS_CA_BUNDLE ${AWS_CA_BUNDLE:+SSL_CERT_FILE=$AWS_CA_BUNDLE} \
    setsid "$LITESTREAM" replicate -config "$LITESTREAM_CONFIG" ) >>"${LOG[litestream]}" 2>&1 &
  PID[litestream]=$!
}
start_nginx() {
  ( trap - INT QUIT; exec setsid $PY nginx/render.py --prefix "$NGINX_PREFIX" --exec ) \
    >>"${LOG[nginx]}" 2>&1 &
  PID[nginx]=$!
}
start() {
  "start_$1"
  STARTED_MS[$1]=$(now_ms)
  # Read at once: the child exists from the fork on (the service execs in it, keeping pid and start
  # time); should it already be gone, its pid is never signalled on its own.
  TICKS[${PID[$1]}]=""
  if proc_stat "${PID[$1]}" && [ "$PROC_PPID" = $$ ]; then TICKS[${PID[$1]}]=$PROC_TICKS; fi
}

# During start-up any death is fatal, at once, naming the log to read. The dead service's PID stays set:
# its group may outlive it (gunicorn's worker, when its master was killed) and is stopped with the rest.
fail_if_dead() {
  local s status=0
  for s in "${SERVICES[@]}"; do
    if [ -n "${PID[$s]:-}" ] && ! alive "$s"; then
      wait "${PID[$s]}" || status=$?
      log "$s exited during start-up ($(describe "$status")); see ${LOG[$s]}:"
      tail -n 15 "${LOG[$s]}" >&2 || true
      exit 1
    fi
  done
}

log "starting Redis on $REDIS_HOST:$REDIS_PORT (AOF on, data in $TAP_DATA_DIR/redis)"
start redis
for i in $(seq 1 100); do
  redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break
  fail_if_dead
  [ "$i" = 100 ] && { log "Redis not answering after 10 s; see ${LOG[redis]}"; exit 1; }
  sleep 0.1
done

log "starting gunicorn on $BIND"
start gunicorn
if [ -n "$REPLICA" ]; then
  log "starting litestream: replicating $TAP_DATA_DIR/db/bets_*.db to $REPLICA (lag on /readyz; log ${LOG[litestream]})"
  start litestream
else
  log "replication off: TAP_S3_BUCKET is not set (or TAP_REPLICATION=OFF); the week files live on this disk only"
fi
log "starting nginx on :$HTTP_PORT and :$HTTPS_PORT (TLS, self-signed for localhost; files in $NGINX_PREFIX)"
start nginx

for i in $(seq 1 300); do
  if curl -sfk "https://127.0.0.1:$HTTPS_PORT/readyz" >/dev/null 2>&1; then
    log "ready: https://localhost:$HTTPS_PORT/  (http://localhost:$HTTP_PORT/, websocket /ws)"
    log "gunicorn master pid ${PID[gunicorn]} (kill -HUP to reload); logs in $LOGS; Ctrl-C stops all"
    break
  fi
  fail_if_dead
  [ "$i" = 300 ] && { log "not ready after 30 s; see the logs in $LOGS"; exit 1; }
  sleep 0.1
done

# A service died: note how, and schedule its restart (or give up on a crash loop).
on_death() {
  local s=$1 status=0 pid=${PID[$1]} now ran_s delay
  wait "$pid" || status=$?
  now=$(now_ms)
  ran_s=$(((now - STARTED_MS[$s]) / 1000))
  reap_group "$pid" TERM 250   # e.g. gunicorn's worker outliving a killed master: let it flush, then go
  PID[$s]=""
  if [ "$ran_s" -ge "$STABLE_S" ]; then QUICK_DEATHS[$s]=0; fi
  QUICK_DEATHS[$s]=$((${QUICK_DEATHS[$s]:-0} + 1))
  if [ "${QUICK_DEATHS[$s]}" -gt "$RESTART_LIMIT" ]; then
    log "ERROR: $s keeps dying: $RESTART_LIMIT restarts in a row each lived under ${STABLE_S}s (last: $(describe "$status"))."
    log "ERROR: giving up and stopping everything; see ${LOG[$s]}:"
    tail -n 15 "${LOG[$s]}" >&2 || true
    exit 1
  fi
  delay=$((1 << (QUICK_DEATHS[$s] - 1)))
  [ "$delay" -gt "$BACKOFF_MAX_S" ] && delay=$BACKOFF_MAX_S
  log "$s (pid $pid) exited with $(describe "$status") after ${ran_s}s; restarting it in ${delay}s" \
    "(quick restart ${QUICK_DEATHS[$s]} of $RESTART_LIMIT); see ${LOG[$s]}"
  RESTART_AT_MS[$s]=$((now + delay * 1000))
}

# Stay in the foreground until Ctrl-C, restarting whichever service dies.
while true; do
  for s in "${SERVICES[@]}"; do
    if [ -n "${PID[$s]:-}" ]; then
      alive "$s" || on_death "$s"
    elif [ "$(now_ms)" -ge "${RESTART_AT_MS[$s]}" ]; then
      start "$s"
      log "$s restarted (pid ${PID[$s]})"
    fi
  done
  sleep 0.5
done
