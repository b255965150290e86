#!/usr/bin/env bash
# Installs whatever is missing for running or testing Tap Trading, and nothing else.
#   - Debian packages: redis-server, nginx, openssl, wrk, chromium, fonts-liberation (apt-get; services
#     are NOT started by apt)
#   - a virtualenv in .venv with the project installed in editable mode (+ dev extras), on Debian's
#     own python3 when it is 3.11 or newer (see "Python interpreter" below; $PYTHON overrides)
#   - the web app's Node packages (npm ci from web/package-lock.json; scripts/web.sh install)
# Safe to run again: every step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
log() { printf '[setup] %s\n' "$*"; }

# ---- Debian packages -------------------------------------------------------------------------
missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
can_apt() { [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null 2>&1; }  # root, or sudo to become it
# root, or sudo that asks for no password: for what is worth installing but not worth a prompt
can_apt_unasked() { [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; }
have redis-server || missing+=(redis-server)
have nginx || missing+=(nginx)
have openssl || missing+=(openssl)
have wrk || missing+=(wrk)
# The web app's end-to-end tests drive Debian's Chromium (never a browser downloaded by Playwright).
have chromium || missing+=(chromium)
dpkg -s fonts-liberation >/dev/null 2>&1 || missing+=(fonts-liberation)

# ---- Python interpreter -----------------------------------------------------------------------
# Debian's /usr/bin/python3 is linked statically and built by Debian's packaging with profile-guided
# and link-time optimisation; an interpreter built from source without them (pyenv's default, first
# in PATH on some machines) runs this app's Python slower. Same code, same VM: HTTP bets saturated at
# 1,220-1,239/s on pyenv's 3.11.7 against 1,506-1,654/s on Debian's 3.11.2 (BENCHMARKS.md, issue 12,
# eighth pass). So the virtualenv uses Debian's when it is new enough, with its venv and headers
# packages (some dependencies compile a C extension); $PYTHON chooses another.
debian_py=/usr/bin/python3
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
elif [ -x "$debian_py" ] && "$debian_py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  ver=$("$debian_py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  need=()
  dpkg -s "python$ver-venv" >/dev/null 2>&1 || need+=("python$ver-venv")
  dpkg -s "python$ver-dev" >/dev/null 2>&1 || need+=("python$ver-dev")
  # Installed along with packages that must be installed anyway, or when that asks for nothing: a
  # faster interpreter is not worth a password prompt, nor a failure where sudo cannot prompt (CI).
  if [ ${#need[@]} -eq 0 ] || can_apt_unasked || { [ ${#missing[@]} -gt 0 ] && can_apt; }; then
    PY=$debian_py
    missing+=("${need[@]}")
  else
    log "using python3 from PATH, not $debian_py: ${need[*]} not installed, and installing would take" \
      "root or a sudo password (install, then run this again, for the faster interpreter)"
    PY=python3
  fi
else
  PY=python3
fi
if [ ${#missing[@]} -gt 0 ]; then
  can_apt || { echo "setup: need root or sudo to apt-get install: ${missing[*]}" >&2; exit 1; }
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
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
# The interpreter itself, not a wrapper in front of it (pyenv's shims are shell scripts).
py_path=$(readlink -f "$("$PY" -c 'import sys; print(sys.executable)')")
if [ -x .venv/bin/python ] && [ "$(readlink -f .venv/bin/python)" != "$py_path" ]; then
  log "recreating .venv on $py_path (it was on $(readlink -f .venv/bin/python))"
  rm -rf .venv
elif [ -f .venv/bin/pip ] && ! grep -qF -e "$ROOT/.venv/bin/python" -e "$(pwd -P)/.venv/bin/python" .venv/bin/pip; then
  # The checkout was moved: the scripts in .venv/bin (gunicorn, flask, pip) start the old path.
  log "recreating .venv: it was made for another place of this checkout"
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  log "creating virtualenv .venv ($("$PY" -V) at $py_path)"
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
