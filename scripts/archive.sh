#!/usr/bin/env bash
# Weekly archival, for cron or a systemd timer: `flask archive run` with one run at a time (flock),
# a timestamped log, and an exit status that means something. Runbook: docs/OPERATIONS.md.
#
#   scripts/archive.sh [args for `flask archive run`, e.g. --dry-run, --week 2026_40, --verify-download]
#
# Environment:
#   TAP_*              the app's settings (TAP_DATA_DIR, TAP_S3_BUCKET, …), as for gunicorn
#   TAP_ENV_FILE       optional file of KEY=value lines to load first (e.g. /etc/tap-trading/env)
#   ARCHIVE_LOG        log file (default: $TAP_DATA_DIR/logs/archive.log; rotated at 10 MiB, 5 kept)
#   ARCHIVE_LOCK       lock file (default: $TAP_DATA_DIR/archive.lock)
#   ARCHIVE_NICE       1 (default): run under nice/ionice so the live server keeps the CPU and disk
#   TAP_FLASK          the flask executable (default: <repo>/.venv/bin/flask)
#
# Output: everything goes to the log; on a terminal it is shown too. On failure the last lines of the
# log go to stderr, so cron's MAILTO (or the journal) carries the reason; success is silent under cron.
#
# Exit status: 0 done (also "nothing to archive"); 1 archive failed (the week files that were not
# verified in the target are still on disk); 2 bad usage or configuration; 75 another run holds the lock.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${TAP_ENV_FILE:-}" ]; then
  if [ ! -r "$TAP_ENV_FILE" ]; then
    echo "archive.sh: TAP_ENV_FILE=$TAP_ENV_FILE is not readable" >&2
    exit 2
  fi
  set -a
  # shellcheck disable=SC1090
  . "$TAP_ENV_FILE"
  set +a
fi

DATA_DIR=${TAP_DATA_DIR:-$ROOT/var}
LOG=${ARCHIVE_LOG:-$DATA_DIR/logs/archive.log}
LOCK=${ARCHIVE_LOCK:-$DATA_DIR/archive.lock}
FLASK=${TAP_FLASK:-$ROOT/.venv/bin/flask}

mkdir -p "$(dirname "$LOG")" "$(dirname "$LOCK")" || exit 2
if [ ! -x "$FLASK" ]; then
  echo "archive.sh: $FLASK not found (run make test or scripts/setup.sh, or set TAP_FLASK)" >&2
  exit 2
fi

# Rotate before writing: archive.log → .1 → … → .5
if [ -f "$LOG" ] && [ "$(stat -c %s "$LOG")" -gt $((10 * 1024 * 1024)) ]; then
  for i in 4 3 2 1; do [ -f "$LOG.$i" ] && mv -f "$LOG.$i" "$LOG.$((i + 1))"; done
  mv -f "$LOG" "$LOG.1"
fi

stamp() { date -u +%Y-%m-%dT%H:%M:%SZ; }
log() { printf '%s archive.sh[%d]: %s\n' "$(stamp)" "$$" "$*" >>"$LOG"; }
show() { if [ -t 2 ]; then cat >&2; else cat >/dev/null; fi; }

# One run at a time. The lock is held on fd 9 for the whole script and inherited by flask, so it
# lasts exactly as long as the archive run, even if this shell is killed first.
exec 9>>"$LOCK" || exit 2
if ! flock -n 9; then
  log "another archive run holds $LOCK; not starting"
  echo "archive.sh: another archive run holds $LOCK; not starting" >&2
  exit 75
fi

cmd=("$FLASK" --app wsgi archive run "$@")
if [ "${ARCHIVE_NICE:-1}" = "1" ]; then
  cmd=(nice -n 10 ionice -c 2 -n 7 "${cmd[@]}")
fi

first_line=1
[ -f "$LOG" ] && first_line=$(($(wc -l <"$LOG") + 1))
log "start: ${cmd[*]} (data dir $DATA_DIR)"
start=$(date +%s)
cd "$ROOT" || exit 2
# Timestamp every line of output into the log (and echo it when run by hand).
"${cmd[@]}" 2>&1 | while IFS= read -r line; do
  printf '%s %s\n' "$(stamp)" "$line" | tee -a "$LOG" | show
done
rc=${PIPESTATUS[0]}
log "end: exit $rc after $(($(date +%s) - start)) s"

if [ "$rc" -ne 0 ]; then
  {
    echo "archive.sh: flask archive run failed with exit $rc; from $LOG:"
    tail -n "+$first_line" "$LOG" | tail -n 15
  } >&2
  [ "$rc" -eq 2 ] && exit 2
  exit 1
fi
exit 0
