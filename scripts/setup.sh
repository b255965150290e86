#!/usr/bin/env bash
# Installs whatever is missing for running or testing Tap Trading, and nothing else.
#   - Debian packages: redis-server, nginx, openssl, wrk, chromium, fonts-liberation (apt-get; services
#     are NOT started by apt)
#   - a virtualenv in .venv with the project installed in editable mode (+ dev extras)
#   - the web app's Node packages (npm ci from web/package-lock.json; scripts/web.sh install)
# Safe to run again: every step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
log() { printf '[setup] %s\n' "$*"; }

# ---- Debian packages -------------------------------------------------------------------------
missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
have redis-server || missing+=(redis-server)
have nginx || missing+=(nginx)
have openssl || missing+=(openssl)
have wrk || missing+=(wrk)
# The web app's end-to-end tests drive Debian's Chromium (never a browser downloaded by Playwright).
have chromium || missing+=(chromium)
dpkg -s fonts-liberation >/dev/null 2>&1 || missing+=(fonts-liberation)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "setup: need root or sudo to apt-get install: ${missing[*]}" >&2; exit 1; }
    SUDO="sudo"
  fi
  log "installing Debian packages: ${missing[*]}"
  # Keep apt from starting the system-wide services (port 80 nginx, port 6379 redis):
  # this project starts its own private instances.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    created_policy=1
  fi
  trap '[ $created_policy = 1 ] && $SUDO rm -f "$policy"' EXIT
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  log "Debian packages installed"
fi

# ---- Python virtualenv ------------------------------------------------------------------------
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating virtualenv .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.tap-installed
want=$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing the project and its dependencies into .venv (pip)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
  log "python packages installed"
fi
# ---- the web app's Node packages --------------------------------------------------------------
bash scripts/web.sh install
log "ready ($ROOT)"
