"""The operator's API (SPEC §8b halt switch, §8c console) on the in-process pinned desk: real Redis and
SQLite, a frozen clock, a pinned quote book. The websocket side of the halt switch is in
tests/test_admin_e2e.py (a real gunicorn)."""

from __future__ import annotations

import dataclasses
import math
import socket
import sys
import time

import gevent
import gevent.event
import jsonschema
import pytest
import redis
from eth_account import Account

from app import create_app
from app.admin.console import Cached, Console, Refreshed
from app.admin.routes import EXT_KEY
from app.admin.samples import ConsoleSamples
from app.bets.recovery import DRAIN_S
from app.bets.resolution import Outcome
from app.config import Settings
from app.errors import Unavailable
from app.keys import BETTING_HALT_KEY, BETTING_KNOWN_KEY, INTEGRITY_LOCK_KEY, REDIS_STATE_KEY
from app.services import services
from app.storage import db
from app.units import MICRO
from tests.support.auth import FakeClock
from tests.support.pinned import Desk, desk_fixture  # noqa: F401 - fixtures
from tests.support.servers import SilentServer, free_port
from tests.support.traders import Trader
from tests.test_house_risk import make_traders
from workers.aggregator import PriceAggregator, Quote, SteadyClock
from workers.console import ConsoleWorker

ADMIN = Account.create()


@pytest.fixture(name="settings")
def settings_fixture(tmp_path, redis_url) -> Settings:
    return Settings.from_env(
        {},
        data_dir=tmp_path / "data",
        redis_url=redis_url,
        dev_mode=True,
        rate_per_address=0,
        rate_per_ip=0,
        admin_addresses=frozenset({ADMIN.address.lower()}),
        max_cell_payout=1000 * MICRO,
        max_column_payout=5000 * MICRO,
    )


@pytest.fixture(name="admin")
def admin_fixture(desk: Desk) -> Trader:
    return Trader(desk.app.test_client(), desk.svc.settings, wallet=ADMIN, clock=desk.clock).login()


def admin_routes(app) -> list[tuple[str, str]]:
    out = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/admin"):
            out += [(m, rule.rule) for m in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return sorted(out)


def test_every_admin_endpoint_refuses_a_trader_with_403_and_no_session_with_401(desk: Desk, admin) -> None:
    routes = admin_routes(desk.app)
    assert len(routes) >= 12, routes  # whoami, betting ×2, overview, feed, writer, taps, resolver, ...
    trader = desk.trader(deposit=None)
    client = desk.app.test_client()
    for method, path in routes:
        body = {"open": False, "reason": "x"} if method == "POST" else None
        status, out, _ = trader.call(method, path, body)
        assert status == 403 and out["error"]["code"] == "forbidden", (method, path, out)
        resp = client.open(path, method=method, json=body)
        assert resp.status_code == 401, (method, path)
    # nothing a trader sent changed anything
    assert desk.svc.betting.open


def test_the_admin_can_read_every_panel(desk: Desk, admin) -> None:
    for method, path in admin_routes(desk.app):
        if method == "GET":
            status, out, headers = admin.call("GET", path)
            assert status == 200, (path, out)
            assert headers.get("Cache-Control") == "no-store" or path.endswith("whoami")


def documented(desk: Desk, name: str) -> jsonschema.Draft4Validator:
    """The OpenAPI document's component `name` as a JSON Schema (additional properties refused, as
    generated; OpenAPI 3.0's `nullable` as a type that admits null)."""

    def as_json_schema(node: object) -> object:
        if isinstance(node, list):
            return [as_json_schema(v) for v in node]
        if not isinstance(node, dict):
            return node
        out = {k: as_json_schema(v) for k, v in node.items() if k != "nullable"}
        if node.get("nullable") and "type" in node:
            out["type"] = [node["type"], "null"]
        return out

    spec = desk.app.test_client().get("/api/openapi.json").get_json()
    components = as_json_schema(spec["components"])
    assert isinstance(components, dict)
    return jsonschema.Draft4Validator({**components["schemas"][name], "components": components})


def test_halting_refuses_every_tap_with_the_reason_and_records_who_did_it(desk: Desk, admin) -> None:
    (t,) = make_traders(desk, 1)
    accepted_body = t.bet_body(desk.cell(col=1), "1", ts=desk.clock.ms)
    status, accepted, _ = t.call("POST", "/api/v1/bets", accepted_body)
    assert status == 202

    status, out, _ = admin.call(
        "POST", "/api/v1/admin/betting", {"open": False, "reason": "feed looks wrong"}
    )
    assert status == 200, out
    assert out["open"] is False and out["halted"] is True and out["reason"] == "feed looks wrong"
    assert out["by"] == admin.address and out["recorded"] is True
    assert out["actions"][0]["action"] == "halt" and out["actions"][0]["address"] == admin.address
    assert out["actions"][0]["reason"] == "feed looks wrong" and out["actions"][0]["at"] == desk.clock.ms

    status, body, headers = t.bet(desk.cell(col=2), "1", ts=desk.clock.ms)
    assert status == 503 and body["error"]["code"] == "betting_halted", body
    assert "feed looks wrong" in body["error"]["message"]
    assert body["error"]["details"]["reason"] == "feed looks wrong"
    assert headers["Retry-After"] == "30"
    assert desk.nonces_with_a_bet() == 1  # only the first
    # a retry of the bet accepted before the halt still answers with that bet
    status, again, _ = t.call("POST", "/api/v1/bets", accepted_body)
    assert status == 202 and again["bet_id"] == accepted["bet_id"]
    # the websocket status message every worker sends says so
    assert desk.svc.status_message() | {"feed": "x"} == {
        "type": "status",
        "feed": "x",
        "betting": False,
        "halted": True,
        "reason": "feed looks wrong",
    }

    assert "tap_betting_halted 1.0" in desk.app.test_client().get("/metrics").get_data(as_text=True)
    # what a client generated from the OpenAPI document checks: the 202s (fresh and a retry's) and the
    # grid's feed while halted (its `halted` was undocumented; the 202 was documented as a full bet)
    status, grid, _ = t.call("GET", "/api/v1/grid")
    assert status == 200
    documented(desk, "FeedStatus").validate(grid["feed"])
    for body in (accepted, again):
        documented(desk, "BetAccepted").validate(body)

    desk.clock.advance(1)
    status, out, _ = admin.call("POST", "/api/v1/admin/betting", {"open": True})
    assert status == 200 and out["open"] is True and out["halted"] is False and out["reason"] is None
    assert [a["action"] for a in out["actions"]] == ["reopen", "halt"]
    status, body, _ = t.bet(desk.cell(col=2), "1", ts=desk.clock.ms)
    assert status == 202, body
    assert "halted" not in desk.svc.status_message()
    status, state, _ = admin.call("GET", "/api/v1/admin/betting")
    assert [a["action"] for a in state["actions"]] == ["reopen", "halt"]
    assert "tap_betting_halted 0.0" in desk.app.test_client().get("/metrics").get_data(as_text=True)


def test_a_halt_that_redis_forgot_is_set_again_from_the_actions_log(desk: Desk, admin) -> None:
    """The switch lives in Redis. A Redis that lost its data (a disaster-recovery restore onto a new
    machine, a restart without persistence) forgot a halt, and betting reopened with nobody deciding
    it. Each worker's once-a-second re-read now notices that Redis no longer knows the switch and puts
    back the newest recorded action if it is a halt; a recorded reopen is left open."""
    sampler = ConsoleWorker(desk.svc, None, (), wall=desk.clock)
    (t,) = make_traders(desk, 1)
    status, out, _ = admin.call("POST", "/api/v1/admin/betting", {"open": False, "reason": "exchange outage"})
    assert status == 200 and out["recorded"] is True, out
    desk.svc.redis.delete(BETTING_HALT_KEY, BETTING_KNOWN_KEY)  # what a Redis without its data holds

    desk.clock.advance(1)
    sampler.step()
    status, body, _ = t.bet(desk.cell(col=1), "1", ts=desk.clock.ms)
    assert status == 503 and body["error"]["code"] == "betting_halted", body
    assert body["error"]["details"]["reason"] == "exchange outage"
    _, state, _ = admin.call("GET", "/api/v1/admin/betting")
    assert state["halted"] is True and state["by"] == admin.address and state["reason"] == "exchange outage"
    assert desk.svc.status_message()["halted"] is True
    sampler.step()  # known again: nothing more to do
    assert [a["action"] for a in state["actions"]] == ["halt"]  # a restore is not an operator's action

    status, out, _ = admin.call("POST", "/api/v1/admin/betting", {"open": True})
    assert status == 200 and out["open"] is True, out
    desk.svc.redis.delete(BETTING_HALT_KEY, BETTING_KNOWN_KEY)
    sampler.step()
    status, body, _ = t.bet(desk.cell(col=1), "1", ts=desk.clock.ms)
    assert status == 202, body
    assert desk.svc.redis.get(BETTING_KNOWN_KEY) is not None


def test_a_halt_redis_lost_with_its_last_second_is_set_again_at_start(desk: Desk, admin) -> None:
    """Redis (append-only file, fsync once a second) kept everything but its last second when the machine
    crashed: the operator's halt in that second is gone, the marker of an earlier action is not. A worker
    starting after the crash finds the newest recorded action newer than the one Redis last took, and puts
    that halt back; a worker that finds Redis up to date changes nothing."""
    (t,) = make_traders(desk, 1)
    status, out, _ = admin.call("POST", "/api/v1/admin/betting", {"open": True})
    assert status == 200 and out["recorded"] is True, out
    before = desk.svc.redis.get(BETTING_KNOWN_KEY)
    assert before is not None
    desk.clock.advance(1)
    status, out, _ = admin.call("POST", "/api/v1/admin/betting", {"open": False, "reason": "exchange outage"})
    assert status == 200 and out["recorded"] is True, out
    ConsoleWorker(desk.svc, None, (), wall=desk.clock).step()  # up to date: the halt stays as it is
    assert desk.svc.betting.state.reason == "exchange outage"
    desk.svc.redis.set(BETTING_KNOWN_KEY, before)  # what the append-only file kept
    desk.svc.redis.delete(BETTING_HALT_KEY)
    desk.svc.betting.refresh(desk.svc.redis, desk.clock.ms)  # the workers' copy: open again
    status, body, _ = t.bet(desk.cell(col=1), "1", ts=desk.clock.ms)
    assert status == 202, body  # what the crash left: betting reopened with nobody deciding it

    desk.clock.advance(1)
    ConsoleWorker(desk.svc, None, (), wall=desk.clock).step()  # the app starts again
    status, body, _ = t.bet(desk.cell(col=2), "1", ts=desk.clock.ms)
    assert status == 503 and body["error"]["code"] == "betting_halted", body
    assert body["error"]["details"]["reason"] == "exchange outage"
    assert desk.svc.status_message()["halted"] is True


def test_a_halt_redis_lost_with_its_last_second_is_set_again_while_the_app_runs(desk: Desk, admin) -> None:
    """Redis crashed and restarted (append-only file, fsync once a second) while the app kept running:
    the halt of its last second is gone, the marker of an earlier action is not. Before: only a worker's
    start compared the two, so the running workers noticed the restart (by its run_id, app.bets.recovery),
    rebuilt the bet state 12 s later and took taps again with the operator's halt forgotten."""
    (t,) = make_traders(desk, 1)
    sampler = ConsoleWorker(desk.svc, None, (), wall=desk.clock)
    sampler.step()  # running: the start's comparison is done
    status, out, _ = admin.call("POST", "/api/v1/admin/betting", {"open": True})
    assert status == 200, out
    before = desk.svc.redis.get(BETTING_KNOWN_KEY)
    desk.clock.advance(1)
    status, out, _ = admin.call("POST", "/api/v1/admin/betting", {"open": False, "reason": "exchange outage"})
    assert status == 200, out
    sampler.step()
    r = desk.svc.redis
    r.set(BETTING_KNOWN_KEY, before)  # what the append-only file kept of the last second
    r.delete(BETTING_HALT_KEY)
    r.set(REDIS_STATE_KEY, "0123456789abcdef|1")  # and the bet state's marker names the crashed server

    desk.clock.advance(1)
    sampler.step()
    sampler.step()
    desk.clock.advance(DRAIN_S)
    desk.pin_book()
    sampler.step()
    assert r.exists(REDIS_STATE_KEY)  # the bet state is rebuilt: taps are judged again
    status, body, _ = t.bet(desk.cell(col=5), "1", ts=desk.clock.ms)
    assert status == 503 and body["error"]["code"] == "betting_halted", body
    assert body["error"]["details"]["reason"] == "exchange outage"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"open": False}, "invalid_reason"),
        ({"open": False, "reason": ""}, "invalid_reason"),
        ({"open": False, "reason": "   "}, "invalid_reason"),
        ({"open": False, "reason": "x" * 201}, "invalid_reason"),
        ({"open": False, "reason": 5}, "invalid_reason"),
        ({"open": False, "reason": "\u0000 feed"}, "invalid_reason"),  # was a 500, halted, unrecorded
        ({"open": False, "reason": "line\nbreak"}, "invalid_reason"),
        ({"open": 0, "reason": "x"}, "invalid_request"),
        ({"open": "false", "reason": "x"}, "invalid_request"),
        ({"reason": "x"}, "invalid_request"),
        ({"open": False, "reason": "x", "until": 5}, "invalid_request"),
        ([False], "invalid_json"),
    ],
)
def test_a_bad_halt_request_is_a_400_and_changes_nothing(desk: Desk, admin, body, code) -> None:
    status, out, _ = admin.call("POST", "/api/v1/admin/betting", body)
    assert status == 400 and out["error"]["code"] == code, out
    assert desk.svc.betting.open and desk.svc.redis.get("tap:betting:halt") is None


def test_the_overview_shows_taps_by_code_exposure_and_the_house_result(desk: Desk, admin) -> None:
    traders = make_traders(desk, 12)
    cell = desk.cell(col=1, row_offset=2)
    codes = []
    for t in traders:
        status, body, _ = t.bet(cell, "50", ts=desk.clock.ms)
        codes.append("accepted" if status == 202 else body["error"]["code"])
    t = traders[0]
    t.bet(cell, "10", ts=desk.clock.ms)  # a second tap on the same cell
    t.bet("nonsense", "10", ts=desk.clock.ms)  # bad input
    status, out, _ = admin.call("GET", "/api/v1/admin/overview?window=60")
    assert status == 200, out
    taps = out["taps"]
    assert taps["seconds"] == 60
    assert taps["totals"]["accepted"] == codes.count("accepted") > 0
    assert taps["totals"].get("exposure_limit", 0) == codes.count("exposure_limit") > 0
    assert taps["totals"]["invalid_cell"] == 1
    assert taps["totals"].get("duplicate_cell", 0) + taps["totals"].get("exposure_limit", 0) >= 1
    assert sum(taps["by_outcome"]["accepted"]) == taps["totals"]["accepted"]
    exp = out["exposure"]
    assert exp["cell_cap"] == "1000" and exp["column_cap"] == "5000"
    top = exp["largest_cells"][0]
    assert top["cell"] == cell and float(top["liability"]) <= 1000
    col = next(c for c in exp["columns"] if c["t_start"] == int(cell.split(":")[0]))
    assert col["cells"][cell.split(":")[1]] == top["liability"] == col["liability"]
    assert out["betting"]["open"] is True and out["websocket"] == {"clients": 0}
    assert out["feed"]["breaker"]["state"] == "healthy"
    assert out["resolver"] == {"oldest_open_window": None, "lag_s": 0.0} or out["resolver"]["lag_s"] == 0.0
    assert out["house"]["target_return"] == "0.95"

    # settle the column: the house's day appears, the exposure is released

    with gevent.Timeout(20):
        while desk.svc.reads.run(
            lambda c: c.execute("SELECT count(*) FROM bets").fetchone()[0]
        ) < codes.count("accepted"):
            gevent.sleep(0.02)
    t_start = int(cell.split(":")[0])
    res = desk.resolver()
    lo, hi = desk.svc.grid.band(int(cell.split(":")[1]))
    res.settle_window(t_start, Outcome(void=False, lo=lo, hi=hi), desk.clock.ms)  # the cell won
    desk.clock.advance(3)  # past the cache period
    status, out, _ = admin.call("GET", "/api/v1/admin/house")
    n = codes.count("accepted")
    today = out["today"]
    assert today["bets"] == today["won"] == n and today["staked"] == str(50 * n)
    assert float(today["paid"]) > 50 * n and today["house_result"].startswith("-")
    assert out["week"]["bets"] == n and today["buckets"]
    status, out, _ = admin.call("GET", "/api/v1/admin/exposure")
    assert out["largest_cells"] == []


def test_the_writer_panel_samples_commit_latency_and_batch_size(desk: Desk) -> None:
    samples = ConsoleSamples()
    m = desk.svc.metrics
    samples.sample_writer(m, 100, 0)  # the baseline
    for _ in range(10):
        m.write_batch_size.observe(4)
        m.write_commit_seconds.observe(0.003)
    m.write_commit_seconds.observe(0.2)
    m.write_batch_size.observe(4)
    s = samples.sample_writer(m, 101, 7)
    assert s is not None
    assert (s.commits, s.items, s.queue_depth) == (11, 44, 7)
    assert s.p50_ms == 5.0 and s.p99_ms == 250.0  # bucket upper bounds
    quiet = samples.sample_writer(m, 102, 0)
    assert quiet is not None and quiet.commits == 0


def test_the_feed_panel_keeps_each_sources_age_per_second_as_the_sampler_saw_it(desk: Desk, admin) -> None:
    desk.clock.advance(math.ceil(desk.clock()) - desk.clock() + 0.25)  # a quarter past a whole second
    start = int(desk.clock())
    mono = FakeClock(1000.0)
    agg = PriceAggregator(
        desk.svc.redis, fresh_s=2, max_deviation=100, publish_ms=100, clock=SteadyClock(mono, desk.clock)
    )
    sampler = ConsoleWorker(desk.svc, agg, ("binance", "coinbase"), wall=desk.clock)

    def tick(seconds: float = 1.0) -> None:
        desk.clock.advance(seconds)
        mono.advance(seconds)

    def quote(source: str) -> None:
        assert agg.offer(Quote(source, 6_700_000, agg.clock.wall_ms(), mono()))

    quote("binance")
    sampler.step()  # start: binance 0 s, coinbase never heard from
    tick()
    sampler.step()
    tick()
    quote("coinbase")
    sampler.step()
    tick(0.5)
    sampler.step()  # the same second again: the later sample counts
    tick(0.5)
    sampler.step()  # start + 3: binance 3 s (stale, still plotted), coinbase 1 s

    _, out, _ = admin.call("GET", "/api/v1/admin/overview")
    assert out["feed"]["age_series"] == {
        "at": [start, start + 1, start + 2, start + 3],
        "sources": {"binance": [0.0, 1.0, 2.5, 3.0], "coinbase": [None, None, 0.5, 1.0]},
    }
    for _ in range(12):  # 12 more seconds, coinbase fresh each time
        tick()
        quote("coinbase")
        sampler.step()
    _, out, _ = admin.call("GET", "/api/v1/admin/overview?window=10")
    series = out["feed"]["age_series"]
    assert series["at"] == list(range(start + 6, start + 16))
    assert series["sources"] == {"binance": [float(a) for a in range(6, 16)], "coinbase": [0.0] * 10}
    _, feed, _ = admin.call("GET", "/api/v1/admin/feed?window=10")
    assert feed["age_series"] == series
    status, out, _ = admin.call("GET", "/api/v1/admin/feed?window=9")
    assert status == 400 and out["error"]["code"] == "invalid_window"
    _, full, _ = admin.call("GET", "/api/v1/admin/feed")
    assert full["age_series"]["at"] == list(range(start, start + 16))


def test_the_integrity_check_runs_in_the_background_and_its_result_is_kept(desk: Desk, admin) -> None:
    traders = make_traders(desk, 3)
    for t in traders:
        assert t.bet(desk.cell(col=1), "1", ts=desk.clock.ms)[0] == 202
    status, out, _ = admin.call("GET", "/api/v1/admin/integrity-check")
    assert status == 200 and out == {"last": None}
    status, out, _ = admin.call("POST", "/api/v1/admin/integrity-check")
    assert status == 202 and out["last"]["state"] == "running" and out["last"]["by"] == admin.address
    status, again, _ = admin.call("POST", "/api/v1/admin/integrity-check")
    assert status == 409 and again["error"]["code"] == "integrity_check_running"
    with gevent.Timeout(60):
        while True:
            status, out, _ = admin.call("GET", "/api/v1/admin/integrity-check")
            if out["last"]["state"] != "running":
                break
            gevent.sleep(0.05)
    last = out["last"]
    assert last["state"] == "ok", last
    assert last["violations"] == 0 and last["files_total"] == 1 and last["files_done"] == 1
    assert last["finished_at"] is not None and desk.svc.redis.get(INTEGRITY_LOCK_KEY) is None
    # kept: still there on the next read, and in the overview
    status, out, _ = admin.call("GET", "/api/v1/admin/overview?window=10")
    assert out["integrity"]["id"] == last["id"] and out["integrity"]["state"] == "ok"


def test_a_run_whose_worker_died_is_reported_interrupted(desk: Desk, admin) -> None:
    r = desk.svc.redis
    r.set("tap:integrity:last", b'{"id": "abc", "state": "running", "violations": 0}')
    _, out, _ = admin.call("GET", "/api/v1/admin/integrity-check")
    assert out["last"]["state"] == "interrupted"


def test_the_openapi_document_lists_every_admin_endpoint(desk: Desk) -> None:
    doc = desk.app.test_client().get("/api/openapi.json").get_json()
    for method, path in admin_routes(desk.app):
        op = doc["paths"][path][method.lower()]
        assert op.get("security") == [{"bearerAuth": []}], path
        assert "403" in op["responses"], (method, path)
    body = doc["paths"]["/api/v1/admin/betting"]["post"]["requestBody"]
    assert "BettingRequest" in str(body)


def test_the_integrity_check_reports_violations_with_their_rows(desk: Desk, admin) -> None:
    from app.storage.db import connect, current_week_file

    (t,) = make_traders(desk, 1)
    path = current_week_file(desk.svc.settings.db_dir)
    conn = connect(path)
    try:
        conn.execute("UPDATE users SET balance = balance + 1 WHERE address = ?", (t.address,))  # a bad row
    finally:
        conn.close()
    status, out, _ = admin.call("POST", "/api/v1/admin/integrity-check")
    assert status == 202
    with gevent.Timeout(60):
        while out["last"]["state"] == "running":
            gevent.sleep(0.05)
            out = admin.call("GET", "/api/v1/admin/integrity-check")[1]
    last = out["last"]
    assert last["state"] == "violations" and last["violations"] == 1, last
    assert "balance_mismatch" in last["first_violations"][0] and t.address in last["first_violations"][0]
    assert last["files"] == [{"file": path.name, "violations": 1}]


def test_requests_waiting_for_a_computation_whose_request_was_killed_get_a_503_to_retry() -> None:
    """Concurrent console reads share one computation (`Cached`); killed (a shutdown), the computing
    request ends, and the waiting ones are answered 503 rather than ended by its kill."""
    release = gevent.event.Event()
    cached: Cached[int] = Cached(1.0, lambda: release.wait() and 1)
    computing = gevent.spawn(cached.get)
    waiting = gevent.spawn(cached.get)
    gevent.sleep(0)  # the first computes, the second waits for it
    computing.kill()
    waiting.join(timeout=5)
    assert isinstance(waiting.exception, Unavailable) and waiting.exception.status == 503
    release.set()
    assert cached.get() == 1  # the next request computes afresh


def test_a_wall_clock_stepped_back_does_not_freeze_the_console() -> None:
    """The panels' caches run on the app's wall clock (frozen in tests). Stepped back (NTP, a VM
    resumed), `now - computed_at` went negative and stayed under the period until the clock caught up:
    an hour's step served the same resolver, exposure, house and weeks figures for an hour, unmarked."""
    clock = FakeClock(1_000_000.0)
    calls = []
    cached: Cached[int] = Cached(1.0, lambda: calls.append(clock()) or len(calls), clock)
    assert cached.get() == 1 and cached.get() == 1
    clock.advance(-3600)
    assert cached.get() == 2, calls  # before: 1 until the clock was back at 1_000_001

    refreshed: Refreshed[int] = Refreshed(30.0, lambda: calls.append(clock()) or len(calls), "test", clock)
    refreshed.get()
    assert refreshed.join(timeout=5)
    clock.advance(-3600)
    assert refreshed.get().refreshing is True  # before: no listing for an hour, its age shown as 0
    assert refreshed.join(timeout=5)
    assert refreshed.get().value == 4


def test_the_integrity_checks_lock_is_held_however_long_one_file_takes(desk: Desk) -> None:
    """The lock was renewed per progress line: a check that printed nothing for longer than its TTL (one
    large week file) let it lapse, and a second run could start beside the first."""
    from app.admin.integrity import AlreadyRunning, IntegrityRunner

    # The renewal runs every third of the TTL: 0.6 s leaves a busy machine's greenlets 0.4 s of slack
    # (0.2 s lapsed once beside other test runs); the check is quiet for five TTLs.
    quiet_for_3s = [sys.executable, "-c", "import time; time.sleep(3.0)"]
    runner = IntegrityRunner(desk.svc, lock_ttl_s=0.6, command=quiet_for_3s)
    first = runner.start(by="0xadmin")
    assert runner.greenlet is not None
    while not runner.greenlet.ready():  # five TTLs without a line from the check
        with pytest.raises(AlreadyRunning):
            runner.start(by="0xadmin")
        gevent.sleep(0.05)
    assert runner.last()["id"] == first["id"]
    assert desk.svc.redis.get(INTEGRITY_LOCK_KEY) is None  # released at the end


def console_of(desk: Desk) -> Console:
    return desk.app.extensions[EXT_KEY].console


def test_the_weeks_panel_lists_this_machines_weeks_while_the_archive_target_fails(
    desk: Desk, admin, monkeypatch
) -> None:
    """S3 unreachable (here: no credentials at all, so it fails at once): the archived weeks are
    unknown, but the week files on this machine are still listed (they vanished with the error)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    unreachable = dataclasses.replace(
        desk.svc.settings, s3_bucket="tap-test", s3_endpoint_url="http://127.0.0.1:9"
    )
    monkeypatch.setattr(desk.svc, "settings", unreachable)
    admin.call("GET", "/api/v1/admin/overview")  # starts the listing
    assert console_of(desk).archived.join(timeout=30)
    status, out, _ = admin.call("GET", "/api/v1/admin/overview")
    assert status == 200, out
    weeks = out["weeks"]
    assert weeks["error"] and weeks["archived"] == [] and weeks["listed_at"] is None, weeks
    current = db.current_week_file(desk.svc.settings.db_dir)
    assert [w["file"] for w in weeks["local"]] == [current.name], weeks


def test_a_poll_never_waits_for_the_archive_listing_and_a_failed_one_is_retried_after_30_s(
    desk: Desk, admin, monkeypatch
) -> None:
    """The weeks panel's S3 listing ran inside GET /admin/overview whenever its 30 s cache expired: an
    S3 that accepts connections and never answers held that console poll ~5 s, every 30 s. The poll
    now answers at once with the last listing (none yet: `listed_at` null, `refreshing`), and the
    listing runs in the background; here it is held until the test lets S3 hang up."""
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    current = db.current_week_file(desk.svc.settings.db_dir)
    with socket.socket() as s3:  # accepts connections (the kernel's backlog), answers nothing
        s3.bind(("127.0.0.1", 0))
        s3.listen(8)
        s3.settimeout(30)
        endpoint = f"http://127.0.0.1:{s3.getsockname()[1]}"
        monkeypatch.setattr(
            desk.svc,
            "settings",
            dataclasses.replace(desk.svc.settings, s3_bucket="tap-test", s3_endpoint_url=endpoint),
        )
        status, out, _ = admin.call("GET", "/api/v1/admin/overview")
        assert status == 200, out
        weeks = out["weeks"]
        assert weeks.get("refreshing") is True, weeks  # before: the poll waited ~2.5 s for S3's error
        assert weeks["listed_at"] is None and weeks["age_s"] is None and weeks["error"] is None, weeks
        assert weeks["archived"] == [] and [w["file"] for w in weeks["local"]] == [current.name], weeks
        conn, _ = s3.accept()  # the listing is waiting for S3's answer now ...
        with conn:
            status, out, _ = admin.call("GET", "/api/v1/admin/weeks")  # ... and a poll does not wait
            assert status == 200 and out["refreshing"] is True, out
    archived = console_of(desk).archived
    assert archived.join(timeout=30)  # S3 hung up and went away: the attempt failed
    weeks = admin.call("GET", "/api/v1/admin/overview")[1]["weeks"]
    assert weeks["error"] and weeks["refreshing"] is False and weeks["listed_at"] is None, weeks

    desk.clock.advance(29)  # a failed attempt is not redone at every poll ...
    weeks = admin.call("GET", "/api/v1/admin/overview")[1]["weeks"]
    assert weeks["refreshing"] is False and weeks["error"], weeks
    desk.clock.advance(1)  # ... but 30 s after it ended
    weeks = admin.call("GET", "/api/v1/admin/overview")[1]["weeks"]
    assert weeks["refreshing"] is True and weeks["error"], weeks  # the last error shown meanwhile
    assert archived.join(timeout=30)
    documented(desk, "WeeksPanel").validate(admin.call("GET", "/api/v1/admin/weeks")[1])


def test_the_weeks_panels_listing_tries_a_silent_s3_once(desk: Desk, admin, monkeypatch) -> None:
    """The panel's own S3 client gives up after one attempt of a few seconds: one, not the two that
    botocore's ``max_attempts=1`` (a count of retries) made, so its error is at most ~2.5 s late."""
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    with SilentServer() as silent:
        monkeypatch.setattr(
            desk.svc,
            "settings",
            dataclasses.replace(desk.svc.settings, s3_bucket="tap-test", s3_endpoint_url=silent.url),
        )
        status, out, _ = admin.call("GET", "/api/v1/admin/overview")
        assert status == 200 and out["weeks"]["refreshing"] is True, out
        assert console_of(desk).archived.join(timeout=30)
        tries = silent.connections()
    weeks = admin.call("GET", "/api/v1/admin/overview")[1]["weeks"]
    assert weeks["error"] and weeks["local"], weeks
    assert tries == 1, f"the listing was tried {tries} times"


def test_a_corrupt_archive_index_is_the_weeks_panels_error_not_a_500_for_the_whole_console(
    desk: Desk, admin
) -> None:
    """Anything but an ArchiveError from the listing (here the archive index is not JSON) escaped the
    weeks panel's cache and every /admin/overview was a 500: the whole console went blank. Now it is
    logged and shown as the panel's error."""
    settings = desk.svc.settings
    (settings.db_dir / "archive-index.json").write_text("{not json")
    status, out, _ = admin.call("GET", "/api/v1/admin/overview")
    assert status == 200, out  # before: 500
    assert console_of(desk).archived.join(timeout=30)
    status, out, _ = admin.call("GET", "/api/v1/admin/overview")
    assert status == 200, out
    weeks = out["weeks"]
    assert "failed unexpectedly" in weeks["error"] and "JSONDecodeError" in weeks["error"], weeks
    assert weeks["archived"] == [] and weeks["listed_at"] is None and weeks["local"], weeks


def test_a_failed_listing_keeps_the_last_good_one_with_its_age(desk: Desk, admin) -> None:
    """A listing that fails keeps the last good one, its age growing, with the error beside it: the
    operator sees what was archived then, and since when it could not be checked."""
    settings = desk.svc.settings
    settings.archive_path.mkdir(parents=True, exist_ok=True)
    (settings.archive_path / "bets_2026_01.db.zst").write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 60)
    archived = console_of(desk).archived
    admin.call("GET", "/api/v1/admin/overview")
    assert archived.join(timeout=30)
    listed_at = desk.clock.ms
    status, out, _ = admin.call("GET", "/api/v1/admin/overview")
    assert status == 200, out
    weeks = out["weeks"]
    assert [a["week"] for a in weeks["archived"]] == ["2026_01"], weeks
    assert weeks["listed_at"] == listed_at and weeks["age_s"] == 0 and weeks["error"] is None, weeks
    assert weeks["refreshing"] is False and weeks["target"], weeks
    documented(desk, "Overview").validate(out)

    (settings.db_dir / "archive-index.json").write_text("{not json")
    desk.clock.advance(45)
    weeks = admin.call("GET", "/api/v1/admin/overview")[1]["weeks"]
    assert weeks["refreshing"] is True and weeks["age_s"] == 45, weeks
    assert archived.join(timeout=30)
    status, out, _ = admin.call("GET", "/api/v1/admin/overview")
    assert status == 200, out
    weeks = out["weeks"]
    assert weeks["error"] and weeks["refreshing"] is False, weeks
    assert [a["week"] for a in weeks["archived"]] == ["2026_01"] and weeks["listed_at"] == listed_at, weeks
    assert weeks["age_s"] == 45, weeks
    documented(desk, "Overview").validate(out)


def test_a_new_workers_overview_says_where_its_per_process_series_begin(desk: Desk, admin) -> None:
    """Taps per second and the writer's figures are counted in each worker's memory. After a SIGHUP the
    new worker answers the console with 0 for every second before it started: not measured, not quiet.
    Its overview says where its series begin (`series_since`, its start), so a console can keep what
    the previous worker reported for those seconds instead of overwriting them with zeros."""
    (t,) = make_traders(desk, 1)
    assert t.bet(desk.cell(col=1), "1", ts=desk.clock.ms)[0] == 202
    _, old, _ = admin.call("GET", "/api/v1/admin/overview?window=10")
    assert old["taps"]["totals"] == {"accepted": 1}
    assert old["series_since"] <= old["server_time"], old["series_since"]
    documented(desk, "Overview").validate(old)

    before = int(time.time() * 1000)
    reloaded = create_app(desk.svc.settings)  # a new worker: its own app, its own counters
    after = int(time.time() * 1000)
    try:
        new = Trader(reloaded.test_client(), desk.svc.settings, wallet=ADMIN, token=admin.token)
        status, out, _ = new.call("GET", "/api/v1/admin/overview?window=10")
        assert status == 200, out
        assert out["worker"] == old["worker"]  # one process here; under gunicorn, the new worker's pid
        assert before <= out["series_since"] <= after, (before, out["series_since"], after)
        assert out["series_since"] > old["series_since"]
        assert out["taps"]["totals"] == {}  # the old worker's tap is not this worker's to report
        assert out["writer"]["series"]["at"] == []  # its console worker has sampled nothing yet
        documented(desk, "Overview").validate(out)
        for panel in ("taps", "writer"):  # a console polling a panel's own route can tell too
            status, alone, _ = new.call("GET", f"/api/v1/admin/{panel}?window=10")
            assert status == 200, alone
            assert (alone["worker"], alone["series_since"]) == (out["worker"], out["series_since"]), alone
        assert console_of(desk).archived.join(timeout=30)
        assert reloaded.extensions[EXT_KEY].console.archived.join(timeout=30)
    finally:
        services(reloaded).reads.close()


def test_the_writers_first_sample_is_a_baseline_not_a_second_without_commits(desk: Desk) -> None:
    """The first sample only reads the histograms' totals so far: it cannot say how many commits its
    second had. Shown as 0 commits, it was a false quiet second in a new worker's series (after a
    SIGHUP, over the previous worker's real figures in the console)."""
    samples = ConsoleSamples()
    m = desk.svc.metrics
    m.write_batch_size.observe(4)
    m.write_commit_seconds.observe(0.003)
    assert samples.sample_writer(m, 100, 0) is None
    assert list(samples.writer) == []
    m.write_batch_size.observe(2)
    m.write_commit_seconds.observe(0.003)
    s = samples.sample_writer(m, 101, 0)
    assert s is not None and (s.at, s.commits, s.items) == (101, 1, 2)
    assert [w.at for w in samples.writer] == [101]


def test_the_betting_panel_says_when_the_halt_switch_could_not_be_read(
    desk: Desk, admin, monkeypatch
) -> None:
    """Each worker's copy of the operator's switch is re-read from Redis each second by its console
    worker. A failed read was only logged: the panel went on showing the last state read as if current.
    It now says when the switch was last read, and why the last attempt failed."""
    sampler = ConsoleWorker(desk.svc, None, (), wall=desk.clock)
    _, out, _ = admin.call("GET", "/api/v1/admin/betting")
    assert (out["read_at"], out["read_age_s"], out["read_error"]) == (None, None, None)  # not read yet
    sampler.step()
    read_at = desk.clock.ms
    _, out, _ = admin.call("GET", "/api/v1/admin/overview?window=10")
    b = out["betting"]
    assert (b["read_at"], b["read_age_s"], b["read_error"]) == (read_at, 0.0, None)
    documented(desk, "Overview").validate(out)

    dead = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1, socket_timeout=1)
    with monkeypatch.context() as m:
        m.setattr(desk.svc, "redis", dead)  # the console worker's Redis is unreachable
        for _ in range(7):
            desk.clock.advance(1)
            sampler.step()  # logged, as before, and now kept for the panel
    _, out, _ = admin.call("GET", "/api/v1/admin/overview?window=10")
    b = out["betting"]
    assert b["read_at"] == read_at and b["read_age_s"] == 7.0, b
    assert b["read_error"] and "Connection" in b["read_error"], b
    documented(desk, "Overview").validate(out)
    _, alone, _ = admin.call("GET", "/api/v1/admin/betting")
    assert alone["read_error"] == b["read_error"]

    desk.clock.advance(1)
    sampler.step()  # Redis answers again
    _, b, _ = admin.call("GET", "/api/v1/admin/betting")
    assert (b["read_at"], b["read_age_s"], b["read_error"]) == (desk.clock.ms, 0.0, None)

    status, b, _ = admin.call("POST", "/api/v1/admin/betting", {"open": False, "reason": "checking"})
    assert status == 200 and b["halted"] and b["read_at"] == desk.clock.ms and b["read_error"] is None
