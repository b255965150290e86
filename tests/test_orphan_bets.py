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
from app.keys import cell_key, heartbeat_key
from app.services import services, set_clock
from tests.support.pinned import Desk, desk_fixture, frozen_feed, settings_fixture  # noqa: F401 - fixtures
from workers.bet_reconciler import BetReconciler
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
