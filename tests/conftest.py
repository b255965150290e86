"""Shared fixtures. Everything is real: redis-server on a free port, SQLite files in tmp dirs,
gunicorn with the project's gunicorn.conf.py, nginx with the project's config.

Fixtures follow the flaskr convention: `app`, `client`, `runner`; plus `running_app` (the app with
its worker greenlets started) and process-level servers in `tests/servers.py`.
"""

from gevent import monkey

monkey.patch_all()

import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from flask import Flask  # noqa: E402

from app import create_app  # noqa: E402
from app.config import Settings  # noqa: E402
from app.storage.db import prepare_database  # noqa: E402
from tests.support.servers import RedisServer  # noqa: E402


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
    yield app
    from workers import runtime

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
