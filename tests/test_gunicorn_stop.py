"""Stopping gunicorn (`gunicorn.conf.py`) at any moment of its start: a real master and worker."""

import signal
import time

import pytest

from tests.support.servers import Gunicorn, wait_until

pytestmark = pytest.mark.e2e


def test_a_stop_while_the_worker_boots_is_not_lost(tmp_path, redis_url):
    """SIGTERM to the master just after it forked its worker (make run's Ctrl-C during start-up, a
    systemd stop). Until gunicorn gives the new worker its own signal handlers (after gevent's
    patching) the worker has the master's, which queue the signal for the master's loop: a loop that
    does not run in the worker. The TERM the master passed on was lost, the worker booted and served,
    and the master waited its graceful_timeout (20 s) before it SIGKILLed the worker."""
    server = Gunicorn(
        {"TAP_DATA_DIR": str(tmp_path / "data"), "TAP_REDIS_URL": redis_url}, tmp_path / "g.log"
    )
    server.start(wait_healthy=False)
    try:
        wait_until(lambda: "Booting worker with pid" in server.log(), timeout=30, interval=0.002, what="fork")
        stopped = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=60)
        took = time.monotonic() - stopped
    finally:
        server.stop()
    assert took < 8, f"gunicorn took {took:.1f}s to stop:\n{server.log()}"
    assert "SIGKILL" not in server.log()
