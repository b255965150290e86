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
# pytest in two stages. The core runs on pytest-xdist workers (`-n auto --dist loadfile` in pyproject.toml;
# TAP_TEST_WORKERS sets how many, 3 by default): most of its time is spent waiting on servers, not on the
# CPU. The browser and fault stages run after it, one test at a time: frame budgets and load tests
# measure, so nothing else of ours may share the machine with them. Arguments go to both stages
# (`bash scripts/test.sh -x -k foo`); a stage they leave without tests (pytest's exit status 5) is not a
# failure unless both are empty. A failed core does not skip the second stage, unless -x was given.
if [ "${QUICK:-0}" = 1 ]; then
  echo "[test] pytest: every test that starts no gunicorn/nginx process"
  exec .venv/bin/python -m pytest -m "not e2e" "$@"
fi
echo "[test] pytest: the core (in parallel)"
set +e
.venv/bin/python -m pytest -m "not browser and not faults" "$@"
core=$?
case " $* " in
  *" -x "* | *" --exitfirst "*) [ $core = 0 ] || [ $core = 5 ] || exit $core ;;
esac
echo "[test] pytest: the browser and fault stages (one test at a time)"
.venv/bin/python -m pytest -m "browser or faults" -n 0 "$@"
serial=$?
set -e
for status in $core $serial; do
  [ "$status" = 0 ] || [ "$status" = 5 ] || exit "$status"
done
[ $core = 5 ] && [ $serial = 5 ] && exit 5
exit 0
