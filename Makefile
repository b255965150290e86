# The two commands. Both install whatever is missing first (scripts/setup.sh).
.PHONY: run test quick lint typecheck format bench-healthz bench-bets clean

run:  ## start Redis, gunicorn and nginx; Ctrl-C stops them
	bash scripts/run.sh

test:  ## install, start what the tests need, run the whole suite
	bash scripts/test.sh

quick:  ## the inner loop: linters + every test that starts no gunicorn/nginx process, stop at the first failure
	QUICK=1 bash scripts/test.sh -x -q

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

typecheck:
	.venv/bin/mypy

format:
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .

bench-healthz:  ## /healthz through gunicorn, worker classes x yield on/off (BENCHMARKS.md)
	bash loadtest/healthz_bench.sh -r 2

bench-bets:  ## signed-bet ceiling at 500..3000 bets/s offered (BENCHMARKS.md)
	.venv/bin/python loadtest/bet_ceiling.py --rates 500,1000,2000,3000 --duration 20 --ws-traders 100 --healthz 10

clean:
	rm -rf var .pytest_cache .ruff_cache
