"""Coinbase Exchange public feed, ``ticker`` + ``heartbeat`` channels, as a price source.

``TAP_COINBASE_WS_URL`` (default ``wss://ws-feed.exchange.coinbase.com``). On connect we send::

    {"type":"subscribe","product_ids":["BTC-USD"],"channels":["ticker","heartbeat"]}

(Coinbase disconnects a client that has not subscribed within 5 s) and get a ``subscriptions``
reply, then (samples in tests/data/coinbase_*.json)::

    {"type":"ticker","sequence":93525999403,"product_id":"BTC-USD","price":"67123.45", …,
     "time":"2025-11-21T08:39:50.123456Z","trade_id":734680334,"last_size":"0.00026100"}
    {"type":"heartbeat","sequence":93526000122,"last_trade_id":734680334,"product_id":"BTC-USD",
     "time":"2025-11-21T08:39:51.000123Z"}

- price: decimal string → integer cents (`parse_price_cents`); time: RFC 3339 UTC → Unix ms.
- **Sequence.** Tracked per product and channel. A message whose sequence is not above the last one
  seen on its channel is stale or a duplicate (Coinbase does repeat tickers) and is ignored
  (``tap_feed_source_dropped{reason="stale_sequence"}``).
- **Gaps.** Ticker sequence numbers are *not* consecutive: they number every order-book event of
  the product, and a ticker is sent only for matches (batched in cascades), so a jump in them is
  normal. What the heartbeat offers instead ("sequence numbers and last trade IDs that can be used
  to verify that no messages were missed") is `last_trade_id`: if the trade a heartbeat announced
  has not been covered by a ticker by the time the next heartbeat arrives (a second later), a
  ticker was lost. That is counted (``tap_feed_source_gaps{source="coinbase"}``) and logged, and is
  not fatal: the next ticker carries the current price.
- ``error`` messages (e.g. a refused subscription) drop the connection; reconnect with backoff.
- Unknown message types are ignored, as Coinbase asks of clients.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re

import orjson
import websocket

from app.metrics import Metrics
from workers.aggregator import PriceAggregator, PriceFormatError, Quote, parse_price_cents
from workers.exchanges.wsclient import Reconnect, ReconnectingClient

PRODUCT = "BTC-USD"

_TIME_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:Z|\+00:00)")


class CoinbaseFormatError(ValueError):
    pass


def subscribe_message(product: str = PRODUCT) -> dict:
    return {"type": "subscribe", "product_ids": [product], "channels": ["ticker", "heartbeat"]}


def parse_time_ms(value: object) -> int:
    """RFC 3339 UTC time ("2025-11-21T08:39:50.123456Z") → Unix ms (sub-ms digits truncated)."""
    if not isinstance(value, str):
        raise CoinbaseFormatError("time must be a string")
    m = _TIME_RE.fullmatch(value)
    if m is None:
        raise CoinbaseFormatError(f"not an RFC 3339 UTC time: {value[:40]!r}")
    parts = [int(g) for g in m.groups()[:6]]
    year, month, day, hour, minute, second = parts
    try:
        dt.datetime(year, month, day, hour, minute, second)  # validates the ranges only (month 13, Feb 30 …)
    except ValueError as exc:
        raise CoinbaseFormatError(str(exc)) from None
    ms = int((m.group(7) or "")[:3].ljust(3, "0"))
    return calendar.timegm((*parts, 0, 0, 0)) * 1000 + ms


def _int_field(msg: dict, key: str) -> int:
    v = msg.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise CoinbaseFormatError(f"{key} is not a non-negative integer: {v!r}")
    return v


class _ProductState:
    __slots__ = ("hb_seq", "max_trade", "pending_hb_trade", "ticker_seq")

    def __init__(self) -> None:
        self.ticker_seq: int | None = None
        self.hb_seq: int | None = None
        self.max_trade: int | None = None  # newest trade id covered by a ticker
        self.pending_hb_trade: int | None = None  # last_trade_id of the previous heartbeat


class CoinbaseSource(ReconnectingClient):
    source = "coinbase"

    def __init__(
        self,
        url: str,
        aggregator: PriceAggregator,
        *,
        idle_s: float,
        metrics: Metrics | None = None,
        product: str = PRODUCT,
        **kw,
    ) -> None:
        super().__init__(url, idle_s=idle_s, metrics=metrics, **kw)
        self.aggregator = aggregator
        self.product = product
        self._products: dict[str, _ProductState] = {}
        self.gaps = 0
        self.subscribed = False

    def on_open(self, conn: websocket.WebSocket) -> None:
        # a new connection starts its own sequence tracking (Coinbase may renumber after maintenance)
        self._products = {}
        self.subscribed = False
        conn.send(orjson.dumps(subscribe_message(self.product)).decode())

    def on_message(self, raw: bytes, recv_mono: float) -> bool:
        try:
            msg = orjson.loads(raw)
            if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
                raise CoinbaseFormatError("not an object with a type")
            kind = msg["type"]
            if kind == "ticker":
                return self._ticker(msg, recv_mono)
            if kind == "heartbeat":
                return self._heartbeat(msg)
        except (orjson.JSONDecodeError, CoinbaseFormatError, PriceFormatError) as exc:
            self.aggregator.count_dropped(self.source, "garbage")
            self.warn_rarely("garbage", "coinbase: ignoring malformed message (%s)", exc)
            return False
        if kind == "subscriptions":
            channels = msg.get("channels")
            # a list compared by ==, not a set: a name that is not hashable (a list) must not crash
            names = (
                [c.get("name") if isinstance(c, dict) else c for c in channels]
                if isinstance(channels, list)
                else []
            )
            self.subscribed = "ticker" in names
            if not self.subscribed:
                raise Reconnect(f"subscription not confirmed: {str(msg)[:200]}")
            return True
        if kind == "error":
            raise Reconnect(f"error from Coinbase: {msg.get('message')!r} ({msg.get('reason')!r})")
        return False  # a type we do not use

    def _state(self, msg: dict) -> _ProductState:
        product = msg.get("product_id")
        if product != self.product:
            raise CoinbaseFormatError(f"unexpected product_id {product!r}")
        return self._products.setdefault(product, _ProductState())

    def _ticker(self, msg: dict, recv_mono: float) -> bool:
        st = self._state(msg)
        seq = _int_field(msg, "sequence")
        price = parse_price_cents(msg.get("price"))
        ts = parse_time_ms(msg.get("time"))
        trade_id = msg.get("trade_id")
        if st.ticker_seq is not None and seq <= st.ticker_seq:
            self.aggregator.count_dropped(self.source, "stale_sequence")
            return True  # the connection is alive, the message is old news
        st.ticker_seq = seq
        if isinstance(trade_id, int) and not isinstance(trade_id, bool):
            st.max_trade = trade_id if st.max_trade is None else max(st.max_trade, trade_id)
        self.aggregator.offer(Quote(self.source, price, ts, recv_mono))
        return True

    def _heartbeat(self, msg: dict) -> bool:
        st = self._state(msg)
        seq = _int_field(msg, "sequence")
        last_trade = _int_field(msg, "last_trade_id")
        parse_time_ms(msg.get("time"))
        if st.hb_seq is not None and seq <= st.hb_seq:
            self.aggregator.count_dropped(self.source, "stale_sequence")
            return True
        st.hb_seq = seq
        pending = st.pending_hb_trade
        if pending is not None and st.max_trade is not None and pending > st.max_trade:
            self.gaps += 1
            if self.metrics:
                self.metrics.source_gaps.labels(self.source).inc()
            self.warn_rarely(
                "gap",
                "coinbase: missed ticker(s): trade %d announced, last ticker trade %d",
                pending,
                st.max_trade,
            )
            st.max_trade = pending  # counted once
        st.pending_hb_trade = last_trade
        if st.max_trade is None:
            st.max_trade = last_trade  # baseline: trades before our first ticker are not gaps
        return True
