"""The normalised price tick and where it lives in Redis.

A tick is published once, already encoded as the websocket ``price`` message, so the fan-out relays
the same bytes to every client without re-encoding. History is a sorted set scored by tick time (ms)
and trimmed to seven days; the latest tick is also kept under its own key for cheap reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import redis

from app.units import format_price, parse_price

CHANNEL_PRICE = "tap:price"
HISTORY_KEY = "tap:prices"
LAST_KEY = "tap:price:last"
HISTORY_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Tick:
    price: int  # cents
    ts: int  # Unix ms (exchange time for exchanges, generation time for the simulator)

    def encode(self) -> bytes:
        return orjson.dumps({"type": "price", "price": format_price(self.price), "ts": self.ts})

    @classmethod
    def decode(cls, raw: bytes | str) -> Tick:
        msg = orjson.loads(raw)
        return cls(price=parse_price(msg["price"]), ts=int(msg["ts"]))


def publish_tick(r: redis.Redis, tick: Tick, *, trim: bool = False) -> None:
    """Store and broadcast one tick in a single round trip (pipeline, no MULTI needed)."""
    raw = tick.encode()
    pipe = r.pipeline(transaction=False)
    pipe.zadd(HISTORY_KEY, {f"{tick.ts}:{tick.price}": tick.ts})
    pipe.set(LAST_KEY, raw)
    pipe.publish(CHANNEL_PRICE, raw)
    if trim:
        pipe.zremrangebyscore(HISTORY_KEY, "-inf", f"({tick.ts - HISTORY_MS}")
    pipe.execute()


def last_tick(r: redis.Redis) -> Tick | None:
    raw = r.get(LAST_KEY)
    return Tick.decode(raw) if raw else None


def ticks_since(r: redis.Redis, since_ms: int, limit: int = 5000) -> list[Tick]:
    """Ticks with ts >= since_ms, oldest first, at most `limit`."""
    members = r.zrangebyscore(HISTORY_KEY, since_ms, "+inf", start=0, num=limit)
    out = []
    for m in members:
        ts, _, cents = m.partition(b":")
        out.append(Tick(price=int(cents), ts=int(ts)))
    return out
