"""The whole feed in real time: fake Binance + Coinbase → source workers → aggregator → Redis pub/sub →
listener → breaker → websocket clients.

The app and its workers run in this process (`running_app`) behind a gevent WSGI server, so the tests
can read `services().feed.betting_open()` directly while a websocket client records the `status`
and `price` messages. Small thresholds keep it quick: DEGRADED 0.3 s, CRITICAL 1 s, recovery 2 s.

The breaker's rules, to the millisecond, are tested on an injected clock in test_feed_breaker.py;
here real time runs, so the tests wait for what they observe (`wait_until`) instead of sleeping,
and a wall-time wait remains only where the point is that something does NOT happen meanwhile.
"""

import json
import time

import gevent
import pytest
import websocket
from gevent import pywsgi

from app.config import Settings
from app.market.feed import FeedState
from app.services import services
from app.units import format_price
from tests.support.waiting import wait_until
from tests.test_exchanges_fakes import exchange_time, fake_binance, fake_coinbase

DEGRADED, CRITICAL, RECOVERY = 0.3, 1.0, 2.0


@pytest.fixture
def fakes():
    with fake_binance() as b, fake_coinbase() as c:
        yield b, c


@pytest.fixture
def settings(tmp_path, redis_url, fakes):
    b, c = fakes
    return Settings.from_env(
        {},
        data_dir=tmp_path / "data",
        redis_url=redis_url,
        dev_mode=True,
        price_sources=("binance", "coinbase"),
        binance_ws_url=b.url,
        coinbase_ws_url=c.url,
        feed_degraded_s=DEGRADED,
        feed_critical_s=CRITICAL,
        feed_recovery_s=RECOVERY,
        feed_publish_ms=50,
        feed_source_fresh_s=1.0,
        feed_idle_s=0.6,
    )


@pytest.fixture
def ws_url(running_app):
    server = pywsgi.WSGIServer(("127.0.0.1", 0), running_app, log=None)
    server.start()
    yield f"ws://127.0.0.1:{server.server_port}/ws"
    server.stop(timeout=0.2)


class Reader:
    """A websocket client that records every message with its arrival time."""

    def __init__(self, url: str) -> None:
        self.conn = websocket.create_connection(url, timeout=10)
        self.msgs: list[tuple[float, dict]] = []
        self.wall_minus_mono = exchange_time() - time.monotonic()
        self.greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            raw = self.conn.recv()
            if not raw:
                return
            self.msgs.append((time.monotonic(), json.loads(raw)))

    def status_times(self) -> list[tuple[float, str, bool]]:
        """Status changes seen, in order. A client that connects just as the status changes gets it
        twice (on connect and in the broadcast); repeating a status is harmless, so repeats fold."""
        out: list[tuple[float, str, bool]] = []
        for t, m in self.msgs:
            if m["type"] == "status" and (not out or out[-1][1:] != (m["feed"], m["betting"])):
                out.append((t, m["feed"], m["betting"]))
        return out

    def statuses(self) -> list[tuple[str, bool]]:
        return [s[1:] for s in self.status_times()]

    def prices(self, since: float = 0.0) -> list[dict]:
        return [m for t, m in self.msgs if m["type"] == "price" and t >= since]

    def sent_at(self, price: dict) -> float:
        """When the exchange sent the quote behind a price message, on our monotonic clock.

        A tick reaches the breaker after that, so an interval measured from here to a status change
        is never shorter than the breaker's own, however late a busy machine ran this greenlet."""
        return price["ts"] / 1000 - self.wall_minus_mono

    def last_price_before(self, t: float) -> dict:
        return [m for at, m in self.msgs if m["type"] == "price" and at <= t][-1]

    def close(self) -> None:
        self.greenlet.kill()
        self.conn.close()


@pytest.fixture
def reader(ws_url, running_app):
    feed = services(running_app).feed
    # healthy, not only open: the tests assert the status a socket is sent on connect
    wait_until(lambda: feed.state() is FeedState.HEALTHY, timeout=10, what="feed healthy")
    r = Reader(ws_url)
    wait_until(r.prices, timeout=5, what="first price")
    yield r
    r.close()


def metric(app, name, **labels):
    return services(app).metrics.registry.get_sample_value(name, labels) or 0


def test_prices_flow_and_a_stall_degrades_suspends_and_recovers_only_after_steady_ticks(
    running_app, fakes, reader
):
    b, c = fakes
    feed = services(running_app).feed
    assert reader.statuses()[0] == ("healthy", True)  # sent on connect
    median = format_price((b.price + c.price) // 2)
    wait_until(lambda: reader.prices()[-1]["price"] == median, timeout=3, what="median price")

    # one source of two down: the other carries on, nothing degrades
    b.pause()
    wait_until(  # binance ages out of the median after feed_source_fresh_s (1 s)
        lambda: reader.prices()[-1]["price"] == format_price(c.price), timeout=5, what="coinbase alone"
    )
    assert feed.state() is FeedState.HEALTHY and feed.betting_open()
    assert reader.statuses() == [("healthy", True)]

    # both down: DEGRADED at 0.3 s, CRITICAL at 1 s
    c.pause()
    wait_until(lambda: ("critical", False) in reader.statuses(), timeout=5, what="critical")
    assert not feed.betting_open() and feed.state() is FeedState.CRITICAL
    (t_deg, *_), (t_crit, *_) = [s for s in reader.status_times() if s[1] != "healthy"][:2]
    last_sent = reader.sent_at(reader.last_price_before(t_deg))
    # never early (20 ms: ms timestamps); late by the detection round trip (feed-watch polls every
    # 0.1 s) plus whatever a busy machine adds, hence the wide upper bound
    assert DEGRADED - 0.02 <= t_deg - last_sent <= DEGRADED + 1.0
    assert CRITICAL - 0.02 <= t_crit - last_sent <= CRITICAL + 1.0

    # ticks again: recovering (degraded, betting closed) for the whole recovery period
    b.resume()
    c.resume()
    snapshots = []  # what the monitor reports all along the recovery

    def reopened():
        snapshots.append(feed.snapshot())
        return snapshots[-1]["betting"]

    wait_until(lambda: reader.prices(since=t_crit), timeout=10, what="prices again")
    wait_until(reopened, timeout=RECOVERY + 5, what="recovery")
    reopened_at = time.monotonic()
    during = snapshots[:-1]
    assert during and all((s["state"], s["betting"]) == ("degraded", False) for s in during), during
    assert any(s["recovering"] for s in during)  # (a gap of 0.3 s would pause it: not a failure)
    resumed = reader.sent_at(reader.prices(since=t_crit)[0])  # the first tick after the stall
    assert reopened_at - resumed >= RECOVERY - 0.02
    wait_until(lambda: reader.statuses()[-1] == ("healthy", True), timeout=5, what="status broadcast")
    assert reader.statuses() == [
        ("healthy", True),
        ("degraded", True),
        ("critical", False),
        ("degraded", False),
        ("healthy", True),
    ]
    assert metric(running_app, "tap_feed_betting_open") == 1


def test_a_flapping_feed_never_reopens_betting(running_app, fakes, reader):
    feed = services(running_app).feed
    for f in fakes:
        f.pause()
    wait_until(lambda: not feed.betting_open(), timeout=3, what="critical")
    start = time.monotonic()
    opened = []
    # Flap (0.5 s of ticks, 0.5 s of silence) for well over the recovery period: were the silences
    # not restarting it, betting would reopen RECOVERY after the first ticks. The wait is in wall
    # time because the point is that something does not happen; a busy machine only lengthens it.
    while time.monotonic() - start < RECOVERY + 1.5:
        for f in fakes:
            f.resume()
        for _ in range(10):
            gevent.sleep(0.05)
            opened.append(feed.betting_open())
        for f in fakes:
            f.pause()
        for _ in range(10):
            gevent.sleep(0.05)
            opened.append(feed.betting_open())
    assert not any(opened)
    assert ("healthy", True) not in reader.statuses()[1:]
    for f in fakes:
        f.resume()
    wait_until(feed.betting_open, timeout=RECOVERY + 5, what="recovery once steady")


def test_outliers_and_garbage_are_ignored_and_counted(running_app, fakes, reader):
    b, c = fakes
    feed = services(running_app).feed
    median, alone = format_price((b.price + c.price) // 2), format_price(c.price)
    wait_until(lambda: reader.prices()[-1]["price"] == median, timeout=3, what="median price")
    before = len(reader.prices())
    b.price = c.price * 11 // 10  # binance 10 % off: the last price arbitrates between two sources
    # prices in order: the median of both until binance's off price arrives, coinbase's alone from
    # then on (ticks arrive in the order they were computed), never anything with binance's in it
    wait_until(lambda: len(reader.prices()) >= before + 15, timeout=5, what="fifteen more prices")
    prices = [p["price"] for p in reader.prices()[before:]]
    switch = prices.index(alone) if alone in prices else len(prices)
    assert set(prices[:switch]) <= {median} and set(prices[switch:]) == {alone}, prices
    assert metric(running_app, "tap_feed_source_dropped_total", source="binance", reason="outlier") >= 1
    for junk in ("{", '{"e":"aggTrade","p":67000.5,"T":1}', '"hello"'):
        b.inject(junk)
    wait_until(
        lambda: metric(running_app, "tap_feed_source_dropped_total", source="binance", reason="garbage") == 3,
        timeout=3,
        what="garbage counted",
    )
    assert feed.state() is FeedState.HEALTHY and feed.betting_open()
    assert reader.statuses() == [("healthy", True)]


def test_wall_clock_jumps_change_nothing(running_app, fakes, reader, monkeypatch):
    feed = services(running_app).feed
    real_time = time.time
    for jump in (3600.0, -3600.0):
        monkeypatch.setattr(time, "time", lambda j=jump: real_time() + j)
        t = time.monotonic()
        # 20 ticks at 50 ms: a second of the whole pipeline under the jumped clock
        wait_until(lambda t=t: len(reader.prices(since=t)) >= 20, timeout=10, what="prices after the jump")
        prices = reader.prices(since=t)
        assert all(abs(p["ts"] - real_time() * 1000) < 2000 for p in prices)  # exchange time, not ours
        # A breaker on the wall clock would see the last tick an hour old: CRITICAL, betting closed.
        # (Not "HEALTHY": a busy machine that stalls this process for 0.3 s makes the feed DEGRADED
        # for real, which is the breaker working, not a jump getting through.)
        assert feed.state() is not FeedState.CRITICAL and feed.betting_open()
    monkeypatch.setattr(time, "time", real_time)
    assert all(betting for _, betting in reader.statuses()), reader.statuses()
