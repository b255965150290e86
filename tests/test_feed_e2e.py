"""The whole feed in real time: fake Binance + Coinbase → source workers → aggregator → Redis pub/sub →
listener → breaker → websocket clients.

The app and its workers run in this process (`running_app`) behind a gevent WSGI server, so the tests
can read `services().feed.betting_open()` directly while a websocket client records the `status`
and `price` messages. Small thresholds keep it quick: DEGRADED 0.3 s, CRITICAL 1 s, recovery 3 s.
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
from tests.servers import wait_until
from tests.test_exchanges_fakes import fake_binance, fake_coinbase

DEGRADED, CRITICAL, RECOVERY = 0.3, 1.0, 3.0


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

    def close(self) -> None:
        self.greenlet.kill()
        self.conn.close()


@pytest.fixture
def reader(ws_url, running_app):
    feed = services(running_app).feed
    wait_until(feed.betting_open, timeout=10, what="feed healthy")
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
    gevent.sleep(1.5)
    assert feed.state() is FeedState.HEALTHY and feed.betting_open()
    assert reader.prices()[-1]["price"] == format_price(c.price)  # binance aged out of the median
    assert reader.statuses() == [("healthy", True)]

    # both down: DEGRADED at 0.3 s, CRITICAL at 1 s
    c.pause()
    stalled = time.monotonic()
    wait_until(lambda: ("critical", False) in reader.statuses(), timeout=3, what="critical")
    assert not feed.betting_open() and feed.state() is FeedState.CRITICAL
    (t_deg, *_), (t_crit, *_) = [s for s in reader.status_times() if s[1] != "healthy"][:2]
    assert DEGRADED - 0.05 <= t_deg - stalled <= DEGRADED + 0.35
    assert CRITICAL - 0.05 <= t_crit - stalled <= CRITICAL + 0.35

    # ticks again: recovering (degraded, betting closed) for the whole recovery period
    b.resume()
    c.resume()
    wait_until(lambda: reader.prices(since=t_crit), timeout=3, what="prices again")
    resumed = reader.prices(since=t_crit) and time.monotonic()
    assert not feed.betting_open()
    gevent.sleep(RECOVERY - 0.6)
    assert not feed.betting_open() and feed.state() is FeedState.DEGRADED and feed.recovering()
    wait_until(feed.betting_open, timeout=3, what="recovery")
    reopened = time.monotonic()
    assert reopened - resumed >= RECOVERY - 0.1
    wait_until(lambda: reader.statuses()[-1] == ("healthy", True), timeout=1, what="status broadcast")
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
    while time.monotonic() - start < 2 * RECOVERY:  # flap: 0.5 s of ticks, 0.5 s of silence
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
    wait_until(feed.betting_open, timeout=RECOVERY + 2, what="recovery once steady")


def test_outliers_and_garbage_are_ignored_and_counted(running_app, fakes, reader):
    b, c = fakes
    feed = services(running_app).feed
    b.price = c.price * 11 // 10  # binance 10 % off: the last price arbitrates between two sources
    t = time.monotonic()
    gevent.sleep(0.5)
    assert {p["price"] for p in reader.prices(since=t + 0.2)} == {format_price(c.price)}
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
        gevent.sleep(1.5)
        prices = reader.prices(since=t + 0.1)
        assert len(prices) >= 10
        assert all(abs(p["ts"] - real_time() * 1000) < 2000 for p in prices)  # exchange time, not ours
        assert feed.state() is FeedState.HEALTHY and feed.betting_open()
    monkeypatch.setattr(time, "time", real_time)
    assert reader.statuses() == [("healthy", True)]
