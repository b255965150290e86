#!/usr/bin/env bash
# make test: install what is missing, then the linters and the whole suite. The tests start their own
# servers (redis-server on free ports, gunicorn, nginx) and stop them; nothing needs to be running first.
# Arguments go to pytest (e.g. `bash scripts/test.sh -x -k bets`); QUICK=1 skips the tests that start
# gunicorn/nginx processes (marker e2e) for the inner loop (`make quick`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] ruff check"
.venv/bin/ruff check .
echo "[test] ruff format --check"
.venv/bin/ruff format --check .
echo "[test] mypy (app/, workers/)"
.venv/bin/mypy
echo "[test] web app: tsc, vitest, build"
bash scripts/web.sh test
bash scripts/web.sh build   # the end-to-end tests load web/dist through nginx
echo "[test] pytest"
if [ "${QUICK:-0}" = 1 ]; then
  exec .venv/bin/python -m pytest -m "not e2e" "$@"
fi
exec .venv/bin/python -m pytest "$@"
