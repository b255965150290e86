"""Tap Trading: the Flask application factory.

`create_app()` builds the app and its service objects and starts nothing: no greenlet, no
connection. Long-running work (SQLite writer, price feed, pub/sub listener, …) lives in `workers/`
and is started by gunicorn's `post_worker_init` hook, or explicitly by tests.

This module imports nothing heavy on purpose: gunicorn's master reads `app.config` to validate the
settings before it forks, and gevent must patch the worker before flask, redis or ssl are imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from app.config import Settings


def create_app(settings: Settings | None = None) -> Flask:
    from app.factory import build_app

    return build_app(settings)
