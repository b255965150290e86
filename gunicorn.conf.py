"""gunicorn settings for Tap Trading: one gevent worker, greenlet workers started after the fork.

Run: ``gunicorn -c gunicorn.conf.py`` (the app is ``wsgi:app``). Settings come from `TAP_*`; a bad
value stops the master before it forks, with one line naming the variable.
"""

import gc
import importlib
import os
import signal
import socket
import sys
import time

import gevent
from gevent.monkey import get_original
from gunicorn.workers.ggevent import GeventWorker

from app.config import ConfigError, Settings

try:
    _settings = Settings.from_env()
except ConfigError as exc:
    sys.exit(f"tap-trading: configuration error: {exc}")


class TapGeventWorker(GeventWorker):
    """gunicorn's gevent worker, plus: when it is told to stop (SIGTERM, so also the old worker of
    every SIGHUP reload), close at once the keep-alive connections that sit idle between requests.

    Stock gunicorn waits `graceful_timeout` for them: nginx keeps up to 64 idle upstream connections
    (plus direct clients), so each reload held the old worker 20 s, and gunicorn's master, which waits
    for the old worker inside its reload, handled the next HUP that much later. A connection busy
    with a request is left alone: gunicorn answers it with ``Connection: close``. An idle connection
    with bytes already waiting (a request just arriving) is left alone for the same reason, and so is
    a fresh connection that has not sent its first request yet.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._idle: set[socket.socket] = set()  # connections waiting for their *next* request

    def handle(self, listener, client, addr) -> None:
        # A connection joins `_idle` only once it has carried a request (handle_request). A fresh one
        # is about to send its first: shutting it down at the stop lost that request to the client
        # (RemoteDisconnected during a reload on a busy core: the request's bytes had not arrived when
        # the old worker looked). gunicorn reads and answers it with ``Connection: close`` instead.
        try:
            super().handle(listener, client, addr)
        finally:
            self._idle.discard(client)

    def handle_request(self, listener_name, req, sock, addr):
        self._idle.discard(sock)
        try:
            return super().handle_request(listener_name, req, sock, addr)
        finally:
            if self.alive:
                self._idle.add(sock)
            else:  # kept alive because the request began before the stop: idle now, so close it
                _close_if_quiet(sock)

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)  # alive = False: gunicorn stops accepting, drains the rest
        gevent.spawn(self._close_idle)  # not from the signal handler itself (as gunicorn's handle_quit)

    def _close_idle(self) -> None:
        for sock in list(self._idle):
            _close_if_quiet(sock)


_real_select = get_original("select", "select")


def _close_if_quiet(sock: socket.socket) -> None:
    """Shut an idle connection down unless a request is already arriving on it; the greenlet that
    reads it then sees end-of-file and closes it the usual way."""
    try:
        # The unpatched select: a zero-timeout poll must not yield to the hub. gevent's would, and a
        # greenlet killed meanwhile (a websocket dropped or closed at shutdown) would raise
        # GreenletExit here, which gunicorn logs as an error handling the request.
        readable, _, _ = _real_select([sock], [], [], 0)
        if readable:
            return
        # Through a duplicate descriptor: shutdown() acts on the connection, so the reader sees a
        # plain end-of-file. gevent's own sock.shutdown() would cancel the reader with EBADF instead,
        # which gunicorn logs as a socket error with a traceback.
        with socket.fromfd(sock.fileno(), sock.family, sock.type) as dup:
            dup.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError):  # already closed by its own greenlet
        pass


wsgi_app = "wsgi:app"
bind = [_settings.bind]
# One process owns the single SQLite writer (ADR-001/005). Worker class measured in BENCHMARKS.md:
# gevent_pywsgi is 13-23 % faster on /healthz, but it leaves a websocket's TCP connection open after the
# close handshake, so a TERM waits out graceful_timeout and worker_exit (the writer's flush) never runs.
# "gevent" plus the per-request yield (app.http.middleware.YieldFirst) has the same tail and closes cleanly.
workers = 1
worker_class = TapGeventWorker  # "gevent", closing idle keep-alive connections at once on stop (above)
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
    """In the master, once: create the current week file and apply migrations before any worker.

    An empty data directory while the replica holds week files is refused (a lost disk: `flask restore`
    first), before anything is created: see `app.storage.replication.check_first_start_apart`."""
    from app.storage.db import prepare_database
    from app.storage.replication import ReplicationError, check_first_start_apart

    try:
        check_first_start_apart(_settings)
    except ReplicationError as exc:
        sys.exit(f"tap-trading: {exc}")
    path = prepare_database(
        _settings.db_dir, time.time(), _settings.sqlite_synchronous, autocheckpoint=not _settings.replicating
    )
    server.log.info("SQLite current week file: %s", path)


# How long a new worker may wait for its first quote book before it takes connections (measured:
# 0.08-0.6 s). Bounded: with no tick at all (Redis down, a fresh feed) it serves, betting suspended.
WARM_UP_MAX_S = 3.0
# A young generation of 50,000 instead of 700, from the start (the master's, which the worker inherits):
# a tap's objects die by reference count long before a collection would look at them, so far fewer
# survive into the older generations and far fewer full collections follow. At 3,000 taps/s: 1 full
# collection a run and ≤ 4 young ones over 5 ms, against 3-8 full (up to 88 ms) and up to 55 young
# ones over 5 ms (BENCHMARKS.md, "Garbage collection").
GC_THRESHOLDS = (50_000, 20, 10)
gc.set_threshold(*GC_THRESHOLDS)


def post_fork(server, worker):
    """In the new worker, first thing: a stop signal ends it at once until gunicorn's own handlers are in.

    gunicorn installs the worker's signal handlers only in ``init_process``, after gevent has patched
    the process (~0.1-0.2 s); until then the worker has the master's handlers, which queue a signal
    for the master's loop, a loop that does not run in the worker. A SIGTERM the master passed on in
    that window (a stop during start-up: make run's Ctrl-C, systemd) was lost: the worker booted and
    served, and the master waited its graceful_timeout (20 s), then SIGKILLed it. Nothing is started
    yet (no app, no writer, no greenlet), so there is nothing to flush: exit without any cleanup.
    """
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, _exit_before_boot)


def _exit_before_boot(signum: int, _frame: object) -> None:
    os._exit(0)


def post_worker_init(worker):
    """gevent has patched this process by now: start the worker greenlets, then wait for the book.

    gunicorn accepts connections only after this hook returns, so a worker that would serve before its
    pub/sub listener replayed the feed and its grid publisher built the first quote book would refuse
    bets with 503 `betting_suspended` for a fraction of a second — visible to traders on each SIGHUP.
    Meanwhile the old worker (reload) has stopped accepting and new connections wait in the listen
    backlog, so a reload costs a short delay, not a refusal.
    """
    from workers import runtime

    # The SIWE login imports eth_account on first use (app.auth.signatures.recover_personal_sign_
    # reference): ~550 ms of imports in the hub thread, during which no socket, tap or price tick
    # moved (GEVENT_MONITOR_THREAD_ENABLE showed it at the first login of each new worker, so also
    # after every SIGHUP). Imported here, before the worker serves, it delays only the start.
    importlib.import_module("eth_account.messages")

    # The SQLite writer's thread takes the GIL back after every apsw call; from a busy hub thread that
    # can take up to the switch interval each time (the GIL convoy, BENCHMARKS.md).
    if _settings.switch_interval_ms > 0:
        sys.setswitchinterval(_settings.switch_interval_ms / 1000)
    runtime.start(worker.wsgi)
    _wait_for_quote_book(worker)
    # What start-up made (modules, the app, the first quote book: most of the heap) lives as long as
    # the worker: out of the collector's sight, a full collection no longer walks it. Measured during
    # a tap run, full collections walked 98-141k objects before, 84-102k after: fewer, though what a
    # run keeps alive still makes a 60-76 ms pause (BENCHMARKS.md, "Garbage collection").
    gc.freeze()

    def watch_alive():
        # gunicorn flips `alive` on SIGTERM/SIGHUP-replacement and then waits for open connections;
        # closing the websockets right away lets the old worker exit promptly during a reload.
        while worker.alive:
            gevent.sleep(0.2)
        runtime.begin_shutdown(worker.wsgi)

    gevent.spawn(watch_alive)


def _wait_for_quote_book(worker) -> None:
    """Until the book is built from a fresh tick and betting open, or the replayed feed shows a stall
    (betting is rightly closed, so there is nothing to wait for), or WARM_UP_MAX_S has passed (no tick
    at all yet). Fresh matters: during a reload no worker publishes prices between the old worker's
    exit and this one taking the feed lease, and a book built from the last tick before that gap would
    refuse every tap with 503 `quotes_stale` until the next tick."""
    from app.services import services

    svc = services(worker.wsgi)
    started = time.monotonic()
    while time.monotonic() - started < WARM_UP_MAX_S:
        book = svc.quotes.book
        if (
            book is not None
            and svc.feed.betting_open()
            and book.age_s(svc.clock()) <= svc.settings.quote_max_age_s
        ):
            outcome = "quote book ready"
            break
        if svc.feed.last_tick is not None and not svc.feed.betting_open():
            outcome = f"feed {svc.feed.state().value}: betting suspended"
            break
        gevent.sleep(0.01)
    else:
        outcome = "no quote book yet (no price tick): serving with betting suspended"
    worker.log.info("worker warm-up: %s after %.2fs", outcome, time.monotonic() - started)


def worker_int(worker):
    """SIGINT/SIGQUIT: quick stop, but the writer still commits what it has queued."""
    from workers import runtime

    runtime.stop(worker.wsgi)


def worker_exit(server, worker):
    """Last hook in the worker: stop producers, flush and close the SQLite writer."""
    from workers import runtime

    runtime.stop(worker.wsgi)
