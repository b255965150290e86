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

from app.auth.signatures import NONCE_TTL_S
from app.bets.claims import BetClaims, rejected_record
from app.config import Settings
from app.keys import PENDING_INDEX, bet_key, cell_key, events_key
from app.ledger.store import time_ordered_id
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


class RacingClaims(BetClaims):
    """The app's BetClaims, on the same Redis, but each of its next `rivals` claims is preceded by
    another attempt of the same signed body (say, the trader's app re-sending it on a new socket) whose
    claim went through in Redis and whose reply was lost: that attempt abandons its claim, to be
    released in the background (`abandon`, as `_claim` does on a Redis timeout). This is the race a
    retry meets between releasing such a claim and claiming the nonce again, made to happen every time:
    the background release waits a minute, so it never frees a rival first, however slow the machine."""

    def __init__(self, svc, rivals: int) -> None:
        super().__init__(svc.redis, svc.redis_batch, retry_every_s=60.0)
        self.rivals = rivals
        self.rival_ids: list[str] = []

    def claim(self, **kw):
        if self.rivals > 0:
            self.rivals -= 1
            bet_id = time_ordered_id(kw["placed_at"] + len(self.rival_ids) + 1)
            record = orjson.dumps(orjson.loads(kw["pending_json"]) | {"bet_id": bet_id})
            super().claim(**{**kw, "bet_id": bet_id, "pending_json": record})  # its reply is lost
            self.abandon(
                address=kw["address"],
                nonce=kw["nonce"],
                fingerprint=kw["fingerprint"],
                cell=kw["cell"],
                bet_id=bet_id,
                record=rejected_record(record, "not_queued"),
                ttl_s=NONCE_TTL_S,
                now=False,
            )
            self.rival_ids.append(bet_id)
        return super().claim(**kw)


def _record(desk: Desk, bet_id: str) -> tuple[str, str | None]:
    rec = orjson.loads(desk.svc.redis.get(bet_key(bet_id)))
    return rec["status"], rec.get("reason")


def test_a_retry_that_meets_claims_of_its_body_abandoned_again_and_again_is_placed_not_a_conflict(
    desk: Desk,
) -> None:
    """A retry meets its body's claim abandoned by an attempt whose reply was lost, releases it, and
    meets another such claim (a concurrent attempt that claimed in between and lost its reply too).
    It answered 409 `nonce_conflict`, "already being processed", which is also the answer to another
    body under that nonce: the trader's app could not tell a retry from a conflict. Nothing was accepted
    under the nonce, so the retry is judged afresh: 202 and the bet, committed; the abandoned claims
    are released as `not_queued`."""
    t = desk.trader()
    cell = desk.cell()
    body = t.bet_body(cell, "2", ts=desk.clock.ms)
    claims = RacingClaims(desk.svc, rivals=2)
    desk.svc.bet_claims = claims
    status, out, _ = t.call("POST", "/api/v1/bets", body)
    assert status == 202, out
    assert out["bet_id"] not in claims.rival_ids
    assert [_record(desk, b) for b in claims.rival_ids] == [("rejected", "not_queued")] * 2
    _wait_confirmed(t, out["bet_id"])
    _, me, _ = t.call("GET", "/api/v1/me")
    assert me["balance"] == "98"
    status, again, _ = t.call("POST", "/api/v1/bets", body)  # and it is the nonce's bet from now on
    assert status == 202 and again["bet_id"] == out["bet_id"], again


def test_a_retry_that_keeps_meeting_abandoned_claims_of_its_body_is_told_to_retry(desk: Desk) -> None:
    """Bounded: a retry that meets a fresh abandoned claim of its body at every round gives up with 503
    `nonce_busy` and Retry-After (send the same body again), not 409 `nonce_conflict`; having released
    them all, it leaves nothing claimed, and the same body sent again is placed."""
    t = desk.trader()
    cell = desk.cell()
    body = t.bet_body(cell, "2", ts=desk.clock.ms)
    claims = RacingClaims(desk.svc, rivals=100)
    desk.svc.bet_claims = claims
    status, out, headers = t.call("POST", "/api/v1/bets", body)
    assert status == 503 and out["error"]["code"] == "nonce_busy", out
    assert headers["Retry-After"] == "1"
    assert len(claims.rival_ids) == 3
    assert [_record(desk, b) for b in claims.rival_ids] == [("rejected", "not_queued")] * 3
    r = desk.svc.redis
    assert r.get(cell_key(t.address, cell)) is None and r.zcard(PENDING_INDEX) == 0
    assert desk.nonces_with_a_bet() == 0

    claims.rivals = 0  # the other attempts have stopped
    status, out, _ = t.call("POST", "/api/v1/bets", body)
    assert status == 202, out
    _wait_confirmed(t, out["bet_id"])
