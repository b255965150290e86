"""Binance and Coinbase clients against local fake exchanges: data, reconnects, idle, rotation, gaps."""

import math
import time

import gevent
import orjson
import pytest
import redis

from app.metrics import Metrics
from tests.support.servers import free_port, wait_until
from tests.test_exchanges_fakes import (
    FakeExchange,
    binance_trade,
    coinbase_ticker,
    fake_binance,
    fake_coinbase,
    sample,
)
from workers.aggregator import PriceAggregator
from workers.exchanges import BinanceSource, CoinbaseSource

FAST = {"backoff_initial_s": 0.05, "backoff_max_s": 0.2}


@pytest.fixture
def binance():
    with fake_binance() as fake:
        yield fake


@pytest.fixture
def coinbase():
    with fake_coinbase() as fake:
        yield fake


@pytest.fixture
def metrics():
    return Metrics()


@pytest.fixture
def agg(redis_url, metrics):
    return PriceAggregator(
        redis.Redis.from_url(redis_url), fresh_s=2, max_deviation=100, publish_ms=50, metrics=metrics
    )


def value(m, name, **labels):
    return m.registry.get_sample_value(name, labels) or 0


def latest(agg, source):
    return agg.latest(source)


class Running:
    def __init__(self, client):
        self.client = client
        self.greenlet = gevent.spawn(client.run)

    def stop(self):
        self.client.stop()
        self.greenlet.join(3)
        assert self.greenlet.dead


@pytest.fixture
def run():
    started = []

    def start(client):
        started.append(Running(client))
        return client

    yield start
    for r in started:
        r.stop()


def test_binance_trades_reach_the_aggregator_as_integer_cents(binance, agg, run):
    src = run(BinanceSource(binance.url, agg, idle_s=2, **FAST))
    wait_until(lambda: latest(agg, "binance") is not None, timeout=3, what="first quote")
    binance.price = 6_800_012
    wait_until(lambda: latest(agg, "binance").price == 6_800_012, timeout=3, what="new price")
    quote = latest(agg, "binance")
    assert abs(quote.exch_ts - time.time() * 1000) < 1000
    assert src.connections == 1


def test_binance_server_pings_are_answered(agg, run):
    # The fake closes a connection whose pong has not arrived by its next ping. That a connection is
    # NOT closed can only be seen by letting real ping rounds pass, so this waits in wall time; the
    # interval is wide (0.25 s) so that a busy machine delaying the client's pong is not mistaken
    # for a client that does not answer.
    fake = FakeExchange("binance", ping_interval=0.25, interval_s=0.02).start()
    try:
        src = run(BinanceSource(fake.url, agg, idle_s=2, **FAST))
        wait_until(lambda: src.connections == 1, timeout=3, what="connected")
        gevent.sleep(1.5)  # six ping rounds
        assert src.connections == 1 and fake.connections == 1
    finally:
        fake.stop()


def test_dropped_connection_is_reconnected_with_backoff(binance, agg, run, metrics):
    src = run(BinanceSource(binance.url, agg, idle_s=2, metrics=metrics, **FAST))
    wait_until(lambda: src.connections == 1 and latest(agg, "binance"), timeout=3, what="connected")
    binance.drop_all()
    wait_until(lambda: src.connections == 2, timeout=3, what="reconnect")
    before = latest(agg, "binance").recv_mono
    wait_until(lambda: latest(agg, "binance").recv_mono > before, timeout=3, what="data again")
    assert value(metrics, "tap_feed_source_reconnects_total", source="binance", reason="retry") == 0
    assert value(metrics, "tap_feed_source_reconnects_total", source="binance", reason="error") == 1


def test_a_silent_connection_is_replaced_after_the_idle_time(binance, agg, run, metrics):
    src = run(BinanceSource(binance.url, agg, idle_s=0.3, metrics=metrics, **FAST))
    wait_until(lambda: src.connections == 1 and latest(agg, "binance"), timeout=3, what="connected")
    binance.pause()  # connected, but nothing arrives
    wait_until(lambda: src.connections >= 2, timeout=3, what="idle reconnect")
    assert value(metrics, "tap_feed_source_reconnects_total", source="binance", reason="idle") >= 1
    binance.resume()
    t = time.monotonic()
    wait_until(lambda: latest(agg, "binance").recv_mono > t, timeout=3, what="data after resume")


def test_connections_are_rotated_before_the_24h_limit_without_a_gap(binance, agg, run, metrics):
    src = run(BinanceSource(binance.url, agg, idle_s=2, metrics=metrics, max_age_s=0.4, **FAST))
    wait_until(lambda: latest(agg, "binance") is not None, timeout=3, what="first quote")
    gaps = []
    last = latest(agg, "binance").recv_mono
    third_at = None  # len(gaps) when the third connection opened

    def rotated_twice_and_flowing():  # meanwhile, record the time between quotes
        nonlocal last, third_at
        q = latest(agg, "binance")
        if q is not None and q.recv_mono > last:
            gaps.append(q.recv_mono - last)
            last = q.recv_mono
        if third_at is None and src.connections >= 3:
            third_at = len(gaps)
        return third_at is not None and len(gaps) >= third_at + 3

    wait_until(rotated_twice_and_flowing, timeout=10, interval=0.01, what="two rotations, then quotes again")
    assert value(metrics, "tap_feed_source_reconnects_total", source="binance", reason="max_age") >= 2
    for reason in ("error", "closed", "idle", "reconnect", "retry", "connect_failed"):  # nothing broke
        assert value(metrics, "tap_feed_source_reconnects_total", source="binance", reason=reason) == 0
    assert max(gaps) < 0.3  # make-before-break: data never stopped for long
    assert len(binance.clients) == 1  # old connections were closed


def test_server_shutdown_event_switches_connections(binance, agg, run, metrics):
    src = run(BinanceSource(binance.url, agg, idle_s=2, metrics=metrics, **FAST))
    wait_until(lambda: src.connections == 1, timeout=3, what="connected")
    binance.inject(orjson.dumps(sample("binance_serverShutdown.json")).decode())
    wait_until(lambda: src.connections == 2, timeout=3, what="switched")
    assert value(metrics, "tap_feed_source_reconnects_total", source="binance", reason="rotate") == 1


def test_a_server_announcing_its_shutdown_on_every_connection_is_not_hammered(binance, agg, run, metrics):
    """A draining server that still accepts connections and tells each one to move: the client switches
    once, then backs off as after any failure (before: ~650 connections a second)."""
    binance.greeting = orjson.dumps(sample("binance_serverShutdown.json")).decode()
    run(BinanceSource(binance.url, agg, idle_s=2, metrics=metrics, backoff_initial_s=0.2, backoff_max_s=0.4))
    gevent.sleep(1.0)
    assert 2 <= binance.connections <= 10, binance.connections
    assert value(metrics, "tap_feed_source_reconnects_total", source="binance", reason="rotate") >= 1


def test_garbage_is_ignored_and_counted_while_prices_keep_flowing(binance, agg, run, metrics):
    src = run(BinanceSource(binance.url, agg, idle_s=2, metrics=metrics, **FAST))
    wait_until(lambda: latest(agg, "binance") is not None, timeout=3, what="connected")
    now = int(time.time() * 1000)
    for junk in (
        "not json",
        "[1,2,3]",
        '{"e":"aggTrade","p":67000.5,"T":1}',
        binance_trade("-5.00", now, 1),
        binance_trade("6.7e4", now, 2),
        '{"e":"aggTrade","p":"1.00","T":"soon"}',
        "\xff\xfe",
    ):
        binance.inject(junk)
    binance.price = 6_712_399
    wait_until(lambda: latest(agg, "binance").price == 6_712_399, timeout=3, what="price after garbage")
    assert value(metrics, "tap_feed_source_dropped_total", source="binance", reason="garbage") == 7
    assert src.connections == 1


def test_unreachable_exchange_is_retried_with_backoff(agg, run, metrics):
    src = run(
        BinanceSource(
            f"ws://127.0.0.1:{free_port()}/ws/btcusdt@aggTrade", agg, idle_s=2, metrics=metrics, **FAST
        )
    )
    wait_until(
        lambda: (
            value(metrics, "tap_feed_source_reconnects_total", source="binance", reason="connect_failed") >= 3
        ),
        timeout=3,
        what="retries",
    )
    assert src.connections == 0


def test_coinbase_subscribes_and_streams_tickers(coinbase, agg, run):
    src = run(CoinbaseSource(coinbase.url, agg, idle_s=2, **FAST))
    wait_until(lambda: latest(agg, "coinbase") is not None, timeout=3, what="first ticker")
    assert orjson.loads(coinbase.received[0]) == sample("coinbase_subscribe.json")
    assert src.subscribed
    coinbase.price = 6_690_001
    wait_until(lambda: latest(agg, "coinbase").price == 6_690_001, timeout=3, what="new price")


class RecordingCoinbase(CoinbaseSource):
    """A CoinbaseSource that records the type of every message it handles, in order."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.kinds: list[str] = []

    def on_message(self, raw: bytes, recv_mono: float) -> bool:
        self.kinds.append(orjson.loads(raw).get("type"))
        return super().on_message(raw, recv_mono)

    def heartbeats(self) -> int:
        return self.kinds.count("heartbeat")

    def silent_heartbeats(self) -> int:
        """Heartbeats with no ticker since the previous heartbeat: the intervals that lost tickers."""
        silent, prev = 0, None
        for kind in self.kinds:
            if kind == "heartbeat":
                silent += prev == "heartbeat"
                prev = kind
            elif kind == "ticker":
                prev = kind
        return silent


def test_coinbase_missed_tickers_are_counted_from_the_heartbeat(agg, run, metrics):
    fake = FakeExchange("coinbase", interval_s=0.02, heartbeat_s=0.2).start()
    try:
        src = run(RecordingCoinbase(fake.url, agg, idle_s=2, metrics=metrics, **FAST))
        wait_until(lambda: latest(agg, "coinbase") is not None, timeout=3, what="first ticker")
        wait_until(lambda: src.heartbeats() >= 3, timeout=5, what="three heartbeats")
        assert src.gaps == 0  # non-consecutive sequence numbers are normal for tickers
        fake.lose_until = math.inf  # tickers lost; the heartbeats announce their trades
        wait_until(lambda: src.gaps >= 2, timeout=5, what="gaps counted")
        fake.lose_until = 0.0
        t = time.monotonic()
        wait_until(lambda: latest(agg, "coinbase").recv_mono > t, timeout=3, what="tickers again")
        seen = src.heartbeats()
        wait_until(lambda: src.heartbeats() >= seen + 2, timeout=5, what="two heartbeats after the loss")
        gaps = src.gaps
        # once per heartbeat interval with a loss: the first silent interval may still be covered
        # by the ticker sent together with the heartbeat that opened it
        assert src.silent_heartbeats() - 1 <= gaps <= src.silent_heartbeats()
        seen = src.heartbeats()
        wait_until(lambda: src.heartbeats() >= seen + 2, timeout=5, what="two more heartbeats")
        assert src.gaps == gaps  # not fatal, and nothing more once tickers arrive again
        assert value(metrics, "tap_feed_source_gaps_total", source="coinbase") == gaps
        assert src.connections == 1
    finally:
        fake.stop()


def test_coinbase_backwards_sequence_is_ignored(coinbase, agg, run, metrics):
    src = run(CoinbaseSource(coinbase.url, agg, idle_s=2, metrics=metrics, **FAST))
    wait_until(lambda: latest(agg, "coinbase") is not None, timeout=3, what="first ticker")
    coinbase.pause()
    now = int(time.time() * 1000)
    coinbase.inject(coinbase_ticker("1.00", now, 5, 1))  # an old sequence number with a silly price
    wait_until(
        lambda: value(metrics, "tap_feed_source_dropped_total", source="coinbase", reason="stale_sequence"),
        timeout=3,
        what="the old ticker dropped",
    )
    assert latest(agg, "coinbase").price == 6_712_355
    assert value(metrics, "tap_feed_source_dropped_total", source="coinbase", reason="stale_sequence") == 1
    assert src.connections == 1


@pytest.mark.parametrize(
    "subscriptions",
    [{"type": "subscriptions", "channels": 5}, {"type": "subscriptions", "channels": [{"name": ["ticker"]}]}],
    ids=["channels-not-a-list", "name-not-a-string"],
)
def test_a_malformed_coinbase_subscriptions_message_reconnects(coinbase, agg, run, metrics, subscriptions):
    """Not a confirmed ticker subscription: reconnect (it crashed the client with a TypeError)."""
    src = run(CoinbaseSource(coinbase.url, agg, idle_s=2, metrics=metrics, **FAST))
    wait_until(lambda: src.connections == 1 and latest(agg, "coinbase"), timeout=3, what="connected")
    coinbase.inject(orjson.dumps(subscriptions).decode())
    wait_until(lambda: src.connections == 2, timeout=3, what="reconnected")


def test_coinbase_error_message_reconnects(coinbase, agg, run, metrics):
    src = run(CoinbaseSource(coinbase.url, agg, idle_s=2, metrics=metrics, **FAST))
    wait_until(lambda: src.connections == 1 and latest(agg, "coinbase"), timeout=3, what="connected")
    coinbase.inject(orjson.dumps(sample("coinbase_error.json")).decode())
    wait_until(lambda: src.connections == 2, timeout=3, what="reconnected")
    assert value(metrics, "tap_feed_source_reconnects_total", source="coinbase", reason="start") == 1
