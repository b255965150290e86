"""A tap in flight when its socket is closed by the server: the reader finishes it before the socket
goes, so the bet gets its real outcome instead of being left claimed and unanswered (the reconciler
would reject it 30 s later). Here the closing is a worker's graceful stop (SIGTERM, as at every
SIGHUP reload) while Redis holds the tap's claim."""

from __future__ import annotations

import time

import apsw
import pytest

from app.storage import db
from tests.support.servers import Gunicorn
from tests.support.traders import HttpClient, Trader
from tests.test_ws_taps import Settings, Socket, _cells, _env, _tap

pytestmark = pytest.mark.e2e

PAUSE_MS = 1500  # Redis holds every write (the tap's claim) this long


def test_a_tap_mid_claim_when_the_worker_stops_is_committed_not_left_claimed(tmp_path, redis_server):
    env = _env(tmp_path, redis_server)
    g = Gunicorn(env, tmp_path / "gunicorn.log")
    g.start()
    try:
        trader = Trader(HttpClient(g.url), Settings()).login()
        trader.deposit("100")
        sock = Socket(g.url.replace("http", "ws") + "/ws")
        sock.send({"type": "auth", "token": trader.token})
        sock.next(lambda m: m["type"] == "auth:ok")
        body = trader.bet_body(_cells(trader, 1)[0], "10", "1.01")
        r = redis_server.client()
        r.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")  # the claim script waits for it
        sock.send(_tap(body, "in-flight"))
        time.sleep(0.5)  # the tap is read and waits for its claim; then the worker is told to stop
    finally:
        code = g.stop()
    assert code == 0
    assert "Traceback" not in g.log(), g.log()

    conn = apsw.Connection(
        str(db.current_week_file(tmp_path / "data" / "db")), flags=apsw.SQLITE_OPEN_READONLY
    )
    try:
        rows = list(conn.execute("SELECT stake, status FROM bets WHERE nonce = ?", (body["nonce"],)))
        (balance,) = conn.execute("SELECT balance FROM users WHERE address = ?", (trader.address,)).fetchone()
    finally:
        conn.close()
    assert rows == [(10_000_000, "confirmed")]  # committed by the stopping worker's writer
    assert balance == 90_000_000
    assert r.zcard("tap:pending") == 0  # nothing left for a reconciler: no claim without its bet
