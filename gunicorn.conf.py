"""gunicorn settings for Tap Trading: one gevent worker, greenlet workers started after the fork.

Run: ``gunicorn -c gunicorn.conf.py`` (the app is ``wsgi:app``). Settings come from `TAP_*`; a bad
value stops the master before it forks, with one line naming the variable.
"""

import sys
import time

from app.config import ConfigError, Settings

try:
    _settings = Settings.from_env()
except ConfigError as exc:
    sys.exit(f"tap-trading: configuration error: {exc}")

wsgi_app = "wsgi:app"
bind = [_settings.bind]
# One process owns the single SQLite writer (ADR-001/005). Worker class measured in BENCHMARKS.md:
# gevent_pywsgi is 13-23 % faster on /healthz, but it leaves a websocket's TCP connection open after the
# close handshake, so a TERM waits out graceful_timeout and worker_exit (the writer's flush) never runs.
# "gevent" plus the per-request yield (app.factory.YieldFirst) has the same tail and closes cleanly.
workers = 1
worker_class = "gevent"
worker_connections = 10000  # websockets are long-lived connections too
backlog = 4096
timeout = 30  # the hub must stay responsive: SQLite runs on threads, so a 30 s stall is a real hang
graceful_timeout = 20
keepalive = 75  # nginx keeps upstream connections open
proc_name = "tap-trading"
accesslog = None  # nginx writes the access log; a second one here costs ~10% of throughput
errorlog = "-"
loglevel = _settings.log_level.lower()
limit_request_line = 8190
limit_request_fields = 64
control_socket_disable = True  # gunicornc is not used; signals (HUP/TERM) are the control interface


def on_starting(server):
    """In the master, once: create the current week file and apply migrations before any worker."""
    from app.db import prepare_database

    path = prepare_database(_settings.db_dir, time.time(), _settings.sqlite_synchronous)
    server.log.info("SQLite current week file: %s", path)


def post_worker_init(worker):
    """gevent has patched this process by now: start the worker greenlets."""
    import gevent

    from workers import runtime

    runtime.start(worker.wsgi)

    def watch_alive():
        # gunicorn flips `alive` on SIGTERM/SIGHUP-replacement and then waits for open connections;
        # closing the websockets right away lets the old worker exit promptly during a reload.
        while worker.alive:
            gevent.sleep(0.2)
        runtime.begin_shutdown(worker.wsgi)

    gevent.spawn(watch_alive)


def worker_int(worker):
    """SIGINT/SIGQUIT: quick stop, but the writer still commits what it has queued."""
    from workers import runtime

    runtime.stop(worker.wsgi)


def worker_exit(server, worker):
    """Last hook in the worker: stop producers, flush and close the SQLite writer."""
    from workers import runtime

    runtime.stop(worker.wsgi)
