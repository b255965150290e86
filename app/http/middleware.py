"""WSGI middleware of the app."""

from __future__ import annotations

import gevent


class YieldFirst:
    """WSGI middleware: yield to the gevent hub before each request.

    gunicorn's gevent worker serves a keep-alive connection in a loop that never blocks while the
    next request is already buffered, so a busy connection can starve the others (p99 of 160 ms –
    1.7 s measured with a bare Flask app, ARCHITECTURE.md). One `gevent.sleep(0)` per request puts
    that greenlet at the back of the run queue and restores fairness (figures in BENCHMARKS.md).
    """

    def __init__(self, wsgi_app) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        gevent.sleep(0)
        return self.wsgi_app(environ, start_response)
