# The two commands. Both install whatever is missing first (scripts/setup.sh).
.PHONY: run test lint format bench-healthz clean

run:  ## start Redis, gunicorn and nginx; Ctrl-C stops them
	bash scripts/run.sh

test:  ## install, start what the tests need, run the whole suite
	bash scripts/test.sh

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format:
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .

clean:
	rm -rf var .pytest_cache .ruff_cache
