"""Issue 10 item 16: bets lost with a killed worker's queue are announced at once.

The "killed worker" is a second app on the same Redis and SQLite whose write queue nobody drains: it
answers 202 and its queue dies with it. Before the fix the trader heard nothing, and GET said
`rejected: not_committed` only after 30 s; now the next worker's reconciler announces `bet:rejected`
as soon as the dead worker's heartbeat is gone, after checking SQLite, and frees the cell. A pending
bet of the *other live* worker (a SIGHUP overlap) is left alone until its queue deadline has passed.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import gevent
import orjson
import pytest
from flask import Flask

from app import create_app
from app.bets.reconcile import beat, reconcile_orphans
from app.bets.store import get_bet
from app.keys import PENDING_INDEX, bet_key, cell_key, events_key, heartbeat_key
from app.services import services, set_clock
from tests.support.pinned import Desk, desk_fixture, frozen_feed, settings_fixture  # noqa: F401 - fixtures
from workers.bet_reconciler import BetReconciler
from workers.sqlite_writer import SqliteWriter
from workers.supervisor import Supervisor


@pytest.fixture
def other(desk: Desk) -> Iterator[Flask]:
    """Another worker process on the same Redis and SQLite whose writer never runs."""
    app = create_app(desk.svc.settings)
    set_clock(app, desk.clock)
    svc = services(app)
    svc.quotes.book = desk.svc.quotes.book
    svc.feed = frozen_feed(svc.settings)
    svc.feed.record(desk.svc.feed.last_tick)  # type: ignore[arg-type]
    yield app
    svc.reads.close()


def _on(other: Flask, trader):
    return dataclasses.replace(trader, client=other.test_client())


def _messages(pubsub, timeout: float = 3.0) -> list[dict]:
    out, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = pubsub.get_message(timeout=0.05)
        if m and m["type"] == "message":  # one event per line, each with its id (app.realtime.events)
            for line in m["data"].split(b"\n"):
                event = orjson.loads(line)
                assert event.pop("id", None), event
                out.append(event)
            if out[-1]["type"] == "bet:rejected":
                break
        gevent.sleep(0.01)
    return out


def test_bet_in_a_dead_workers_queue_is_rejected_at_once(desk: Desk, other: Flask, redis_server) -> None:
    t = desk.trader()
    cell = desk.cell()
    status, out, _ = _on(other, t).bet(cell, "3", ts=desk.clock.ms)
    assert status == 202, out
    r = redis_server.client()
    ps = r.pubsub()
    ps.subscribe(f"tap:user:{t.address}")
    ps.get_message(timeout=1)

    sup = Supervisor()  # the next worker starts: its reconciler runs at once
    sup.start(BetReconciler(desk.svc, lambda: desk.clock.ms))
    try:
        msgs = _messages(ps)
    finally:
        sup.stop(timeout=5)
    assert {"type": "bet:rejected", "bet_id": out["bet_id"], "cell": cell, "reason": "not_committed"} in msgs
    status, got, _ = t.call("GET", f"/api/v1/bets/{out['bet_id']}")
    assert got["status"] == "rejected" and got["reason"] == "not_committed", got
    assert r.get(cell_key(t.address, cell)) is None  # the trader may tap that cell again at once
    status, again, _ = t.bet(cell, "3", ts=desk.clock.ms)
    assert status == 202, again
    _, me, _ = t.call("GET", "/api/v1/me")
    assert me["balance"] in ("100", "97")  # the lost bet moved no money


def test_pending_bet_of_a_live_worker_is_left_alone_until_its_deadline(desk: Desk, other: Flask) -> None:
    t = desk.trader()
    status, out, _ = _on(other, t).bet(desk.cell(), "3", ts=desk.clock.ms)
    assert status == 202, out
    beat(services(other).redis, services(other).bet_claims.instance)  # the other worker is alive
    assert reconcile_orphans(desk.svc, desk.clock.ms).rejected == []
    status, got, _ = t.call("GET", f"/api/v1/bets/{out['bet_id']}")
    assert got["status"] == "pending"
    desk.clock.advance(31)  # long past QUEUE_MAX_WAIT_S: it will never commit now
    assert reconcile_orphans(desk.svc, desk.clock.ms).rejected == [out["bet_id"]]


def test_own_young_pending_bets_are_left_alone(desk: Desk) -> None:
    """The reconciler of the worker that queued a bet never takes it for lost while it is young."""
    t = desk.trader()
    from tests.test_money_idempotency import stalled_writer

    with stalled_writer(desk.svc):
        status, out, _ = t.bet(desk.cell(), "3", ts=desk.clock.ms)
        assert status == 202, out
        assert reconcile_orphans(desk.svc, desk.clock.ms).rejected == []
    deadline = time.monotonic() + 5
    while t.call("GET", f"/api/v1/bets/{out['bet_id']}")[1]["status"] != "confirmed":
        assert time.monotonic() < deadline
        gevent.sleep(0.05)
    assert reconcile_orphans(desk.svc, desk.clock.ms) == reconcile_orphans(desk.svc, desk.clock.ms)


def test_reconciliation_is_announced_once(desk: Desk, other: Flask) -> None:
    t = desk.trader()
    status, out, _ = _on(other, t).bet(desk.cell(), "3", ts=desk.clock.ms)
    assert status == 202, out
    first = reconcile_orphans(desk.svc, desk.clock.ms)
    second = reconcile_orphans(services(other), desk.clock.ms, instance="a-third-worker")
    assert first.rejected == [out["bet_id"]] and second.rejected == []


def test_runtime_start_runs_the_reconciler(running_app: Flask, redis_server) -> None:
    """workers.runtime.start wires it in: this worker's heartbeat appears in Redis at once."""

    r = redis_server.client()
    key = heartbeat_key(services(running_app).bet_claims.instance)
    deadline = time.monotonic() + 5
    while not r.exists(key):
        assert time.monotonic() < deadline, "no heartbeat: the reconciler is not running"
        gevent.sleep(0.05)
    assert 0 < r.ttl(key) <= 5


# ---- a live worker whose heartbeat lapsed (review of the reconciler, issue 16 follow-up) -----------


def _writer_of(app: Flask) -> Supervisor:
    """Start `app`'s SQLite writer: the worker whose queue held the bet turns out to be alive."""
    s = services(app).settings
    sup = Supervisor()
    sup.start(SqliteWriter(services(app).writes, s.db_dir, synchronous=s.sqlite_synchronous, batch_max=10))
    return sup


def _bet_events(r, address: str, bet_id: str) -> list[dict]:
    """The trader's `bet:*` events for `bet_id`, in the order the trader's socket gets them (its Stream)."""
    out = []
    for _, fields in r.xrange(events_key(address)):
        event = orjson.loads(fields[b"m"])
        if event.get("bet_id") == bet_id:
            out.append(event)
    return out


def _committed(desk: Desk, bet_id: str) -> bool:
    return desk.svc.reads.run(lambda c: get_bet(c, bet_id)) is not None


def test_a_live_workers_bet_is_decided_once_when_its_heartbeat_lapses(
    desk: Desk, other: Flask, redis_server
) -> None:
    """A SIGHUP overlap and a Redis outage of 5-10 s: the old worker's heartbeat expires while the bet
    it answered 202 still waits in its queue. The other worker's reconciler takes it for lost; the old
    worker's writer then drains. Before the fix the reconciler said `bet:rejected` (and freed the cell
    and the liability) and the writer then committed the bet and said `bet:confirmed`: two outcomes,
    the stake taken from a trader who was told "rejected". Now exactly one of them wins, in SQLite."""
    t = desk.trader()
    cell = desk.cell()
    r = redis_server.client()
    status, out, _ = _on(other, t).bet(cell, "3", ts=desk.clock.ms)
    assert status == 202, out
    bet_id = out["bet_id"]
    a = services(other).bet_claims.instance
    beat(r, a)  # the old worker is alive ...
    r.delete(heartbeat_key(a))  # ... and its heartbeat lapses (expired during the outage)

    first = reconcile_orphans(desk.svc, desk.clock.ms)  # the new worker's pass, Redis back
    sup = _writer_of(other)  # the old worker's writer drains its queue
    try:
        assert _on(other, t).deposit("1")  # queued behind the bet: its notifications are out after it
    finally:
        sup.stop(timeout=5)

    events = _bet_events(r, t.address, bet_id)
    outcomes = [e["type"] for e in events]
    assert len(outcomes) == 1, events  # one outcome, told once
    _, got, _ = t.call("GET", f"/api/v1/bets/{bet_id}")
    _, me, _ = t.call("GET", "/api/v1/me")
    if outcomes == ["bet:rejected"]:
        assert first.rejected == [bet_id]
        assert not _committed(desk, bet_id), "rejected, yet the stake was taken"
        assert got["status"] == "rejected" and got["reason"] == "not_committed", got
        assert me["balance"] == "101"
    else:
        assert outcomes == ["bet:confirmed"] and got["status"] == "confirmed", (events, got)
        assert me["balance"] == "98"


# ---- Redis forgot what SQLite knows (Redis restarted without persistence, or lost its last second) ----


def _wait(pred, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        gevent.sleep(0.02)


def test_a_bet_committed_after_redis_forgot_its_claim_is_confirmed_once(
    desk: Desk, other: Flask, redis_server
) -> None:
    """Redis restarts empty (no persistence) between the claim and the commit: the pending record, the
    index and every heartbeat are gone. The reconcilers have nothing to judge (nothing is rejected);
    the writer's own notification (published even without a record) tells the trader, once."""
    t = desk.trader()
    status, out, _ = _on(other, t).bet(desk.cell(), "3", ts=desk.clock.ms)
    assert status == 202, out
    bet_id = out["bet_id"]
    redis_server.stop()
    redis_server.start()  # empty
    r = redis_server.client()
    sup = _writer_of(other)
    try:
        _wait(lambda: _committed(desk, bet_id), "the writer never committed the bet")
        _wait(lambda: _bet_events(r, t.address, bet_id), "the trader was never told")
    finally:
        sup.stop(timeout=5)
    for svc in (desk.svc, services(other)):
        assert reconcile_orphans(svc, desk.clock.ms) == reconcile_orphans(svc, desk.clock.ms, instance="x")
        assert reconcile_orphans(svc, desk.clock.ms).rejected == []
    assert [e["type"] for e in _bet_events(r, t.address, bet_id)] == ["bet:confirmed"]
    t.login()  # the session went with Redis
    _, got, _ = t.call("GET", f"/api/v1/bets/{bet_id}")
    _, me, _ = t.call("GET", "/api/v1/me")
    assert got["status"] == "confirmed" and me["balance"] == "97", (got, me)


def test_a_committed_bet_whose_confirmation_redis_lost_is_confirmed_from_sqlite(
    desk: Desk, other: Flask, redis_server
) -> None:
    """The writer committed the bet and its notification dropped the pending record, but Redis then lost
    that last second (an AOF restart): the record is pending again, its owner's heartbeat gone. The
    reconciler must find the bet in SQLite and confirm it — never mark it lost, never move money."""
    t = desk.trader()
    r = redis_server.client()
    status, out, _ = _on(other, t).bet(desk.cell(), "3", ts=desk.clock.ms)
    assert status == 202, out
    bet_id = out["bet_id"]
    record, placed = r.get(bet_key(bet_id)), r.zscore(PENDING_INDEX, bet_id)
    sup = _writer_of(other)
    try:
        assert _on(other, t).deposit("1")  # behind the bet: its confirmation is out
    finally:
        sup.stop(timeout=5)
    assert _committed(desk, bet_id) and r.get(bet_key(bet_id)) is None
    # Redis loses its last second: the bet's confirmation (and the events it published) never happened
    r.set(bet_key(bet_id), record)
    r.zadd(PENDING_INDEX, {bet_id: placed})
    r.delete(events_key(t.address))

    out2 = reconcile_orphans(desk.svc, desk.clock.ms)
    assert out2.confirmed == [bet_id] and out2.rejected == []
    assert reconcile_orphans(desk.svc, desk.clock.ms) == reconcile_orphans(desk.svc, desk.clock.ms)
    assert [e["type"] for e in _bet_events(r, t.address, bet_id)] == ["bet:confirmed"]
    assert r.get(bet_key(bet_id)) is None and r.zscore(PENDING_INDEX, bet_id) is None
    _, got, _ = t.call("GET", f"/api/v1/bets/{bet_id}")
    _, me, _ = t.call("GET", "/api/v1/me")
    assert got["status"] == "confirmed" and me["balance"] == "98", (got, me)
