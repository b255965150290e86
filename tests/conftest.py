"""Shared fixtures. Everything is real: redis-server on a free port, SQLite files in tmp dirs,
gunicorn with the project's gunicorn.conf.py, nginx with the project's config.

Fixtures follow the flaskr convention: `app`, `client`, `runner`; plus `running_app` (the app with
its worker greenlets started) and process-level servers in `tests/servers.py`.
"""

from tests.support.xdist_gevent import use_real_thread_primitives

use_real_thread_primitives()  # only in a pytest-xdist worker; before the patching (see the module)

from gevent import monkey  # noqa: E402

monkey.patch_all()

import os  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from flask import Flask  # noqa: E402

from app import create_app  # noqa: E402
from app.config import Settings  # noqa: E402
from app.storage.db import prepare_database  # noqa: E402
from tests.support.servers import RedisServer  # noqa: E402


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject.toml): TAP_TEST_WORKERS, else 3 workers. Most of the core's time is spent
    waiting on servers (gunicorn, nginx, redis-server, moto, litestream), so one worker more than this
    2-core machine's cores keeps both busy; more than that starves the timing-sensitive tests."""
    return int(os.environ.get("TAP_TEST_WORKERS", "3"))


# The test files that take longest (from `--durations=0`), longest first. Under `--dist loadfile` a file is
# one unit of work and the units are handed out in collection order (`--no-loadscope-reorder`): these go
# first, so that no worker is still starting a minute-long file when the others have run out of work.
SLOW_FILES_FIRST = [
    "test_replication.py",
    "test_ws_slow_consumer.py",
    "test_openapi_fuzz.py",
    "test_archive.py",
    "test_e2e.py",
    "test_grid_quotes.py",
    "test_bets_e2e.py",
    "test_ws_taps.py",
    "test_reload.py",
    "test_bets.py",
    "test_money_properties.py",
    "test_forced_rollover.py",
    "test_nginx.py",
    "test_admin.py",
    "test_admin_e2e.py",
    "test_run.py",
    "test_feed_e2e.py",
    "test_auth_ws.py",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's order is kept


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; each test gets it flushed (see `redis_url`)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if not redis_server.running:
        redis_server.start()
    redis_server.client().flushall()
    return redis_server.url


@pytest.fixture(scope="module")
def module_redis_url(redis_server: RedisServer) -> str:
    """The shared redis-server, flushed for a module whose server lives across its tests: a previous
    module's price history would otherwise be replayed as a feed stall (betting suspended for the
    30 s recovery) by the next server that starts on it."""
    if not redis_server.running:
        redis_server.start()
    redis_server.client().flushall()
    return redis_server.url


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return Settings.from_env({}, data_dir=tmp_path / "data", redis_url=redis_url, dev_mode=True)


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    prepare_database(settings.db_dir, time.time(), settings.sqlite_synchronous)
    app = create_app(settings)
    app.testing = True
    from workers import runtime

    runtime.recover_at_start(app)  # as a server process does before its workers (a new Redis: no state)
    yield app

    runtime.stop(app)
    app.extensions["tap"].reads.close()


@pytest.fixture
def client(app: Flask):
    return app.test_client()


@pytest.fixture
def runner(app: Flask):
    return app.test_cli_runner()


@pytest.fixture
def running_app(app: Flask) -> Flask:
    """The app with its worker greenlets (writer, listener, sim feed, …) running in this process."""
    from workers import runtime

    runtime.start(app)
    return app
