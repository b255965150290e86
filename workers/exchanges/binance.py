"""Binance spot trade stream (``<symbol>@aggTrade`` or ``<symbol>@trade``) as a price source.

``TAP_BINANCE_WS_URL`` names the stream, raw (``wss://stream.binance.com:9443/ws/btcusdt@aggTrade``)
or combined (``/stream?streams=btcusdt@aggTrade``, events wrapped as ``{"stream": …, "data": …}``).
Nothing is sent to the server. An event (samples in tests/data/binance_*.json)::

    {"e":"aggTrade","E":1763711990125,"s":"BTCUSDT","a":3130483914,"p":"67123.45000000",
     "q":"0.00150000","f":5479113790,"l":5479113791,"T":1763711990123,"m":false,"M":true}

- price ``p``: decimal string → integer cents (`parse_price_cents`, never a float);
- time: ``T``, the trade time in Unix ms (``E``, the event time, is when Binance sent it);
- ``{"e":"serverShutdown","E":…}``: the server is going away → switch connections now;
- a connection lives at most 24 h: it is replaced (make-before-break) after `MAX_AGE_S`;
- Binance pings every 20 s; websocket-client answers with the pong.

Anything else that is not a subscription reply is garbage: counted
(``tap_feed_source_dropped{source="binance",reason="garbage"}``) and ignored.
"""

from __future__ import annotations

import orjson

from app.metrics import Metrics
from workers.aggregator import PriceAggregator, PriceFormatError, Quote, parse_price_cents
from workers.exchanges.wsclient import ReconnectingClient, Rotate

MAX_AGE_S = 23 * 3600 + 30 * 60  # Binance cuts connections at 24 h; switch half an hour before


class BinanceFormatError(ValueError):
    pass


def parse_trade(msg: object) -> tuple[int, int] | None:
    """(price cents, trade time ms) for a trade/aggTrade event; None for a non-trade message.

    Raises BinanceFormatError for a malformed trade. Raises Rotate for ``serverShutdown``.
    """
    if not isinstance(msg, dict):
        raise BinanceFormatError("not a JSON object")
    data = msg.get("data")
    event_msg: dict = data if "stream" in msg and isinstance(data, dict) else msg
    event = event_msg.get("e")
    if event in ("aggTrade", "trade"):
        t = event_msg.get("T")
        if not isinstance(t, int) or isinstance(t, bool) or t <= 0:
            raise BinanceFormatError(f"trade time T is not a positive integer: {t!r}")
        try:
            price = parse_price_cents(event_msg.get("p"))
        except PriceFormatError as exc:
            raise BinanceFormatError(str(exc)) from None
        return price, t
    if event == "serverShutdown":
        raise Rotate("serverShutdown event")
    if event is None and "id" in event_msg and ("result" in event_msg or "error" in event_msg):
        return None  # reply to a (live) subscription request
    raise BinanceFormatError(f"unexpected message {str(event_msg)[:120]}")


class BinanceSource(ReconnectingClient):
    source = "binance"

    def __init__(
        self, url: str, aggregator: PriceAggregator, *, idle_s: float, metrics: Metrics | None = None, **kw
    ) -> None:
        kw.setdefault("max_age_s", MAX_AGE_S)
        super().__init__(url, idle_s=idle_s, metrics=metrics, **kw)
        self.aggregator = aggregator

    def on_message(self, raw: bytes, recv_mono: float) -> bool:
        try:
            parsed = parse_trade(orjson.loads(raw))
        except (orjson.JSONDecodeError, BinanceFormatError) as exc:
            self.aggregator.count_dropped(self.source, "garbage")
            self.warn_rarely("garbage", "binance: ignoring malformed message (%s)", exc)
            return False
        if parsed is None:
            return False
        price, trade_ms = parsed
        self.aggregator.offer(Quote(self.source, price, trade_ms, recv_mono))
        return True
