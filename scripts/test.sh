#!/usr/bin/env bash
# make test: install what is missing, then run the suite. The tests start their own servers
# (redis-server on free ports, gunicorn, nginx) and stop them; nothing needs to be running first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] ruff"
.venv/bin/ruff check .
echo "[test] pytest"
exec .venv/bin/python -m pytest "$@"
