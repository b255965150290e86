"""Fake Binance and Coinbase websocket servers for the feed tests, and tests of the fakes themselves.

Each fake is a gevent StreamServer on a free 127.0.0.1 port speaking the real protocol through
simple-websocket (RFC 6455 framing, server pings), and every message it sends is built from the
stored samples in tests/data with only the values replaced (price, times, ids, sequence), so the
clients under test see exactly the exchanges' formats. Controls used by the tests: `price`
(cents), `pause()` / `resume()` (a stalled feed: connected, silent), `inject(text)` (garbage),
`drop_all()` (TCP close), `lose_until` (Coinbase: tickers are lost until this monotonic time while
the heartbeats still announce their trades).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import socket
import time
from pathlib import Path

import gevent
import gevent.event
import orjson
import pytest
import simple_websocket
import websocket
from gevent.server import StreamServer

from app.units import format_price

DATA = Path(__file__).parent / "data"
# The exchanges' own clock: bound now, so a test that moves this machine's wall clock (patching
# time.time) does not move the remote exchanges' clocks with it.
exchange_time = time.time


def sample(name: str) -> dict:
    """A stored exchange message (key order preserved)."""
    return json.loads((DATA / name).read_text())


def iso_time(ms: int, micros: int = 0) -> str:
    t = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).replace(microsecond=(ms % 1000) * 1000 + micros)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def binance_trade(price: str, t_ms: int, agg_id: int) -> str:
    msg = sample("binance_aggTrade.json")
    msg.update(E=t_ms + 2, a=agg_id, p=price, f=agg_id * 2, l=agg_id * 2 + 1, T=t_ms)
    return orjson.dumps(msg).decode()


def coinbase_ticker(price: str, t_ms: int, seq: int, trade_id: int) -> str:
    msg = sample("coinbase_ticker.json")
    msg.update(sequence=seq, price=price, best_ask=price, time=iso_time(t_ms, 456), trade_id=trade_id)
    return orjson.dumps(msg).decode()


def coinbase_heartbeat(seq: int, last_trade_id: int, t_ms: int) -> str:
    msg = sample("coinbase_heartbeat.json")
    msg.update(sequence=seq, last_trade_id=last_trade_id, time=iso_time(t_ms, 123))
    return orjson.dumps(msg).decode()


class FakeExchange:
    """A websocket server on 127.0.0.1 that speaks Binance (`kind="binance"`) or Coinbase."""

    def __init__(
        self,
        kind: str,
        *,
        price_cents: int = 6_712_345,
        interval_s: float = 0.05,
        ping_interval: float | None = None,
        heartbeat_s: float = 1.0,
        seed: int = 1,
    ) -> None:
        assert kind in ("binance", "coinbase")
        self.kind = kind
        self.price = price_cents
        self.interval_s = interval_s
        self.ping_interval = ping_interval
        self.heartbeat_s = heartbeat_s
        self.rng = random.Random(seed)
        self.streaming = gevent.event.Event()
        self.streaming.set()
        self.clients: set = set()
        self.connections = 0
        self.received: list[str] = []
        self.lose_until = 0.0  # coinbase: tickers are lost (not sent) until this monotonic time
        self.greeting: str | None = None  # binance: sent first on every new connection
        self._seq = 93_525_999_403
        self._trade = 734_680_334
        self._agg = 3_130_483_914
        self._server = StreamServer(("127.0.0.1", 0), self._handle)
        self._greenlets: set = set()

    # ---- control ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        port = self._server.server_port
        path = "/ws/btcusdt@aggTrade" if self.kind == "binance" else "/"
        return f"ws://127.0.0.1:{port}{path}"

    def start(self) -> FakeExchange:
        self._server.start()
        return self

    def __enter__(self) -> FakeExchange:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._server.stop(timeout=1)
        self.drop_all()

    def pause(self) -> None:
        self.streaming.clear()

    def resume(self) -> None:
        self.streaming.set()

    def inject(self, text: str) -> None:
        for ws in list(self.clients):
            with contextlib.suppress(Exception):
                ws.send(text)

    def drop_all(self) -> None:
        for ws in list(self.clients):
            with contextlib.suppress(Exception):
                ws.sock.shutdown(socket.SHUT_RDWR)

    def price_text(self) -> str:
        text = format_price(self.price)
        return text + "000000" if self.kind == "binance" else text

    # ---- the server ---------------------------------------------------------------------------------
    def _handle(self, sock: socket.socket, _addr) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = sock.recv(4096)
            if not chunk:
                return
            request += chunk
        lines = request.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        _method, path, _version = lines[0].split(" ", 2)
        environ = {"gunicorn.socket": sock, "PATH_INFO": path}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            environ["HTTP_" + key.strip().upper().replace("-", "_")] = value.strip()
        ws = simple_websocket.Server(environ, ping_interval=self.ping_interval)
        self.clients.add(ws)
        self.connections += 1
        try:
            if self.kind == "coinbase":
                self._coinbase(ws)
            else:
                self._binance(ws)
        except (simple_websocket.ConnectionClosed, OSError):
            pass
        finally:
            self.clients.discard(ws)
            with contextlib.suppress(Exception):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _binance(self, ws) -> None:
        if self.greeting is not None:
            ws.send(self.greeting)
        while ws.connected:
            self.streaming.wait()
            if not ws.connected:
                break
            self._agg += 1
            ws.send(binance_trade(self.price_text(), int(exchange_time() * 1000), self._agg))
            gevent.sleep(self.interval_s)

    def _coinbase(self, ws) -> None:
        first = ws.receive(timeout=5)
        if first is None:
            return  # Coinbase drops clients that do not subscribe within 5 s
        self.received.append(first)
        sub = json.loads(first)
        if sub.get("type") != "subscribe":
            ws.send(orjson.dumps(sample("coinbase_error.json")).decode())
            return
        ws.send(orjson.dumps(sample("coinbase_subscriptions.json")).decode())
        next_hb = time.monotonic() + self.heartbeat_s
        while ws.connected:
            self.streaming.wait()
            if not ws.connected:
                break
            self._seq += self.rng.randint(1, 40)  # tickers skip the book events' sequence numbers
            self._trade += self.rng.randint(1, 3)  # and batch cascading matches
            if time.monotonic() >= self.lose_until:
                ws.send(
                    coinbase_ticker(self.price_text(), int(exchange_time() * 1000), self._seq, self._trade)
                )
            if time.monotonic() >= next_hb:
                next_hb += self.heartbeat_s
                self._seq += 1
                ws.send(coinbase_heartbeat(self._seq, self._trade, int(exchange_time() * 1000)))
            gevent.sleep(self.interval_s)


def fake_binance(**kw) -> FakeExchange:
    return FakeExchange("binance", **kw)


def fake_coinbase(**kw) -> FakeExchange:
    kw.setdefault("price_cents", 6_712_355)
    kw.setdefault("seed", 2)
    return FakeExchange("coinbase", **kw)


@pytest.fixture
def binance():
    with fake_binance() as fake:
        yield fake


@pytest.fixture
def coinbase():
    with fake_coinbase() as fake:
        yield fake


# ---- the fakes speak the stored formats ---------------------------------------------------------------
def _recv_json(conn) -> dict:
    return json.loads(conn.recv())


def test_fake_binance_sends_sample_shaped_trades(binance):
    conn = websocket.create_connection(binance.url, timeout=3)
    try:
        msg = _recv_json(conn)
    finally:
        conn.close()
    assert list(msg) == list(sample("binance_aggTrade.json"))  # same keys, same order
    assert msg["e"] == "aggTrade" and msg["s"] == "BTCUSDT"
    assert msg["p"] == "67123.45000000" and isinstance(msg["T"], int)


def test_fake_coinbase_requires_the_subscription_then_streams(coinbase):
    conn = websocket.create_connection(coinbase.url, timeout=3)
    try:
        conn.send(json.dumps(sample("coinbase_subscribe.json")))
        assert _recv_json(conn) == sample("coinbase_subscriptions.json")
        tick = _recv_json(conn)
    finally:
        conn.close()
    assert list(tick) == list(sample("coinbase_ticker.json"))
    assert tick["price"] == "67123.55" and tick["product_id"] == "BTC-USD"
    assert json.loads(coinbase.received[0]) == sample("coinbase_subscribe.json")


def test_fake_pings_are_answered_by_the_client_library():
    # The fake closes a connection that does not answer its ping within one interval (simple-websocket).
    fake = FakeExchange("binance", ping_interval=0.1, interval_s=0.02).start()
    try:
        conn = websocket.create_connection(fake.url, timeout=3)
        got = 0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            conn.recv()  # recv answers pings with pongs as they come
            got += 1
        conn.close()
        assert got > 20 and fake.connections == 1
    finally:
        fake.stop()
