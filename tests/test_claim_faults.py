"""Issue 10 items 5 and 15: a claim whose bet is never queued must not dangle.

Real faults, real Redis:
- the claim script runs but its reply is lost: the app's Redis timeout is short and, right after the
  session lookup, another connection keeps Redis busy in a Lua loop; the claim waits behind it, the
  client gives up (503), and Redis runs the claim afterwards. Before the fix the retry of the same
  body answered 202 with that never-queued bet (pending for 30 s, then rejected) and the cell stayed
  blocked until the column ended + 60 s.
- the writer rejects a bet while Redis refuses writes (NOREPLICAS): the rejection notification failed
  and the cell claim was never deleted, so the trader could not bet that cell again.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import gevent
import orjson
import pytest

from app.config import Settings
from app.keys import bet_key, cell_key, events_key
from tests.support.auth import FakeClock
from tests.support.pinned import Desk, desk_fixture, desk_settings  # noqa: F401 - fixtures
from tests.test_money_idempotency import stalled_writer

BUSY_LUA = (
    "local t0 = redis.call('TIME') local s = t0[1] * 1000000 + t0[2] "
    "while true do local t = redis.call('TIME') "
    "if t[1] * 1000000 + t[2] - s > tonumber(ARGV[1]) then break end end return 1"
)


def _resp(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for p in parts:
        b = p.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class StallOnNthCall(FakeClock):
    """The app's clock. Armed, its n-th reading (the bet route's, after the session lookup) sends Redis
    a busy Lua loop from another connection, synchronously, so the claim that follows waits behind it."""

    def __init__(self, redis_url: str) -> None:
        super().__init__()
        u = urlsplit(redis_url)
        self.addr = (u.hostname or "127.0.0.1", u.port or 6379)
        self.arm_at: int | None = None
        self.busy_us = 0
        self.sock: socket.socket | None = None

    def arm(self, nth: int, busy_s: float) -> None:
        self.arm_at, self.busy_us = nth, int(busy_s * 1e6)
        self.sock = socket.create_connection(self.addr)  # accepted by Redis now, not when it fires
        self.sock.sendall(_resp("PING"))
        assert self.sock.recv(64) == b"+PONG\r\n"

    def __call__(self) -> float:
        if self.arm_at is not None:
            self.arm_at -= 1
            if self.arm_at == 0:
                self.arm_at = None
                assert self.sock is not None
                self.sock.sendall(_resp("EVAL", BUSY_LUA, "0", str(self.busy_us)))
        return super().__call__()


@pytest.fixture
def settings(request, tmp_path, redis_url) -> Settings:
    """The desk's settings; a test that needs others names them (`parametrize(..., indirect=True)`),
    so only the test that stalls Redis past a short timeout runs with one."""
    return desk_settings(tmp_path, redis_url, **getattr(request, "param", {}))


SHORT_REDIS_TIMEOUT = pytest.mark.parametrize(
    "settings", [{"redis_timeout_s": 0.25}], indirect=True, ids=["redis_timeout_0.25s"]
)


def _wait(pred, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        gevent.sleep(0.05)


def _wait_confirmed(trader, bet_id: str) -> None:
    def done() -> bool:
        status, body, _ = trader.call("GET", f"/api/v1/bets/{bet_id}")
        assert status == 200, body
        assert body["status"] in ("pending", "confirmed"), body
        return body["status"] == "confirmed"

    _wait(done, what=f"bet {bet_id} confirmed")


@SHORT_REDIS_TIMEOUT
def test_claim_whose_reply_was_lost_is_released_and_the_retry_goes_through(desk: Desk, redis_server) -> None:
    from app.services import set_clock

    t = desk.trader()
    clock = StallOnNthCall(desk.svc.settings.redis_url)
    clock.t = desk.clock.t
    set_clock(desk.app, clock)
    desk.clock = clock
    cell = desk.cell()
    body = t.bet_body(cell, "2", ts=clock.ms)
    r = redis_server.client()
    warm_up = t.bet(desk.cell(col=1), "1", ts=clock.ms)  # loads the claim script (EVALSHA, not EVAL)
    assert warm_up[0] == 202, warm_up
    _wait_confirmed(t, warm_up[1]["bet_id"])

    clock.arm(2, busy_s=1.0)  # 1st reading: the session lookup; 2nd: the route, just before the claim
    status, out, _ = t.call("POST", "/api/v1/bets", body)
    assert status == 503 and out["error"]["code"] == "dependency_unavailable", out
    # Redis ran the claim after the client had given up: the claim exists, or is already released
    _wait(lambda: r.get(cell_key(t.address, cell)) is None, what="the dangling cell claim released")
    assert r.zcard("tap:pending") == 0
    stray = [orjson.loads(r.get(k)) for k in r.keys(bet_key("*"))]
    assert [(rec["status"], rec["reason"]) for rec in stray] == [("rejected", "not_queued")], stray

    status, out, _ = t.call("POST", "/api/v1/bets", body)  # the retry: judged afresh, queued, confirmed
    assert status == 202, out
    _wait_confirmed(t, out["bet_id"])
    _, me, _ = t.call("GET", "/api/v1/me")
    assert me["balance"] == "97"


def _bet_events(desk: Desk, address: str) -> list[tuple[str, str, str]]:
    """(type, bet id, reason) of the trader's bet:* events kept in its Stream, oldest first."""
    out = []
    for _id, fields in desk.svc.redis.xrange(events_key(address)):
        m = orjson.loads(fields[b"m"])
        if m["type"].startswith("bet:"):
            out.append((m["type"], m["bet_id"], m.get("reason", "")))
    return out


def test_claim_refused_by_the_writer_queue_is_released(desk: Desk) -> None:
    """503 after the claim went through (the queue refuses the job): the same body can be retried.
    The released bet is announced rejected, once: a retry answered with it before the release (from
    another worker, during a reload) would otherwise have left its trader with a pending bet forever."""
    t = desk.trader()
    body = t.bet_body(desk.cell(), "1", ts=desk.clock.ms)
    desk.svc.writes.accepting = False
    try:
        status, out, _ = t.call("POST", "/api/v1/bets", body)
    finally:
        desk.svc.writes.accepting = True
    assert status == 503 and out["error"]["code"] == "shutting_down", out
    (released,) = [orjson.loads(desk.svc.redis.get(k)) for k in desk.svc.redis.keys(bet_key("*"))]
    assert (released["status"], released["reason"]) == ("rejected", "not_queued"), released
    assert _bet_events(desk, t.address) == [("bet:rejected", released["bet_id"], "not_queued")]
    status, out, _ = t.call("POST", "/api/v1/bets", body)
    assert status == 202, out
    _wait_confirmed(t, out["bet_id"])
    # The notifier publishes after the commit, on its own time: wait for the event, not the row.
    _wait(lambda: len(_bet_events(desk, t.address)) >= 2, what="bet:confirmed in the trader's Stream")
    assert _bet_events(desk, t.address) == [
        ("bet:rejected", released["bet_id"], "not_queued"),
        ("bet:confirmed", out["bet_id"], ""),
    ]


def test_rejection_whose_notification_failed_still_frees_the_cell(
    desk: Desk, redis_server, caplog: pytest.LogCaptureFixture
) -> None:
    t = desk.trader(deposit="5")
    cell = desk.cell()
    r = redis_server.client()
    with stalled_writer(desk.svc):
        status, out, _ = t.bet(cell, "10", ts=desk.clock.ms)  # more than the balance: the writer refuses
        assert status == 202, out
        r.config_set("min-replicas-to-write", 1)  # Redis refuses every write when the writer reports
    try:
        _wait(  # the writer has rejected it and the notifier's first attempt failed
            lambda: any("could not send" in rec.getMessage() for rec in caplog.records),
            what="a failed notification",
        )
        assert r.get(cell_key(t.address, cell)) is not None
    finally:
        r.config_set("min-replicas-to-write", 0)
    _wait(lambda: r.get(cell_key(t.address, cell)) is None, what="the rejected bet's cell freed")
    status, got, _ = t.call("GET", f"/api/v1/bets/{out['bet_id']}")
    assert got["status"] == "rejected" and got["reason"] == "insufficient_funds", got
    status, again, _ = t.bet(cell, "1", ts=desk.clock.ms)  # the cell is free again
    assert status == 202, again
