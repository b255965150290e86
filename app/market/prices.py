"""The normalised price tick and where it lives in Redis.

A tick is published once, already encoded as the websocket ``price`` message, so the fan-out relays
the same bytes to every client without re-encoding. History is a sorted set scored by tick time (ms)
and trimmed to seven days; the latest tick is also kept under its own key for cheap reads.

Tick times (`ts`) are strictly increasing across the whole stream: the aggregator
(``workers.aggregator``) stamps each normalised tick with the exchange time of the newest quote that
contributed to it, nudged to one millisecond after the previous tick when needed, so the history
has exactly one price per millisecond and "the last tick at or before t" is always well defined.
That history is the authority the resolver reads (`window_stats`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import cast

import orjson
import redis

from app.keys import CHANNEL_PRICE, PRICE_HISTORY_KEY, PRICE_LAST_KEY
from app.units import format_price, parse_price

HISTORY_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Tick:
    price: int  # cents
    ts: int  # Unix ms (exchange time of the newest contributing quote; see the module docstring)

    def encode(self) -> bytes:
        return orjson.dumps({"type": "price", "price": format_price(self.price), "ts": self.ts})

    @classmethod
    def decode(cls, raw: bytes | str) -> Tick:
        msg = orjson.loads(raw)
        return cls(price=parse_price(msg["price"]), ts=int(msg["ts"]))


def _member(tick: Tick) -> str:
    return f"{tick.ts}:{tick.price}"


def _parse_member(m: bytes) -> Tick:
    ts, _, cents = m.partition(b":")
    return Tick(price=int(cents), ts=int(ts))


def publish_tick(r: redis.Redis, tick: Tick, *, trim: bool = False) -> None:
    """Store and broadcast one tick in a single round trip (pipeline, no MULTI needed).

    Unfenced: for tools and tests. The price feed publishes with `publish_tick_fenced`.
    """
    raw = tick.encode()
    pipe = r.pipeline(transaction=False)
    pipe.zadd(PRICE_HISTORY_KEY, {_member(tick): tick.ts})
    pipe.set(PRICE_LAST_KEY, raw)
    pipe.publish(CHANNEL_PRICE, raw)
    if trim:
        pipe.zremrangebyscore(PRICE_HISTORY_KEY, "-inf", f"({tick.ts - HISTORY_MS}")
    pipe.execute()


# Store + broadcast only while the caller holds the feed lease (KEYS[1] == token), renewing it in the
# same step. Atomic in Redis, so two workers overlapping during a SIGHUP reload can never both
# publish, not even for the few hundred milliseconds a lease takes to expire.
_PUBLISH_FENCED = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('pexpire', KEYS[1], ARGV[2])
redis.call('zadd', KEYS[2], ARGV[4], ARGV[3])
redis.call('set', KEYS[3], ARGV[5])
redis.call('publish', ARGV[6], ARGV[5])
if ARGV[7] ~= '' then redis.call('zremrangebyscore', KEYS[2], '-inf', '(' .. ARGV[7]) end
return 1
"""


class FencedPublisher:
    """`publish(tick)` → True if published, False if the lease is not ours (nothing written)."""

    def __init__(self, r: redis.Redis, lease_key: str, token: str, ttl_ms: int) -> None:
        self.r = r
        self.lease_key = lease_key
        self.token = token
        self.ttl_ms = ttl_ms
        self._script = r.register_script(_PUBLISH_FENCED)

    def publish(self, tick: Tick, *, trim: bool = False) -> bool:
        raw = tick.encode()
        trim_before = str(tick.ts - HISTORY_MS) if trim else ""
        ok = self._script(
            keys=[self.lease_key, PRICE_HISTORY_KEY, PRICE_LAST_KEY],
            args=[self.token, self.ttl_ms, _member(tick), tick.ts, raw, CHANNEL_PRICE, trim_before],
        )
        return bool(ok)


def last_tick(r: redis.Redis) -> Tick | None:
    raw = r.get(PRICE_LAST_KEY)
    return Tick.decode(raw) if raw else None


def ticks_since(r: redis.Redis, since_ms: int, limit: int = 5000) -> list[Tick]:
    """Ticks with ts >= since_ms, oldest first, at most `limit`."""
    members = cast("list[bytes]", r.zrangebyscore(PRICE_HISTORY_KEY, since_ms, "+inf", start=0, num=limit))
    return [_parse_member(m) for m in members]


def tick_at_or_before(r: redis.Redis, ts_ms: int) -> Tick | None:
    """The price in force at `ts_ms`: the newest tick with ts <= ts_ms, if the history has one."""
    members = cast("list[bytes]", r.zrevrangebyscore(PRICE_HISTORY_KEY, ts_ms, "-inf", start=0, num=1))
    return _parse_member(members[0]) if members else None


@dataclass(frozen=True, slots=True)
class WindowStats:
    """What the price did during one column ``[t_start, t_start + column_s)`` (integer cents, Unix ms).

    - `open_price` / `open_ts`: the price in force when the window opens (the last tick at or before
      its start), None if the history does not reach back that far.
    - `lo` / `hi`: lowest / highest of `open_price` and every tick inside the window. With the path
      continuous between ticks (SPEC §3) a band ``[low, high]`` is touched iff ``low <= hi and
      high >= lo``.
    - `max_gap_ms`: the longest stretch of the window without a tick, counting window start → first
      tick and last tick → window end (the whole window if it has no tick). The resolver voids the
      window when this exceeds ``TAP_FEED_CRITICAL_S``. Note it starts counting at the window start:
      use `open_ts` to judge how old the opening price was.
    - `ticks`: ticks inside the window.
    - `complete`: a tick at or after the window end exists, so no late tick can still land inside
      (the feed's tick times are strictly increasing). Resolve only complete windows, or windows
      whose end is older than ``TAP_FEED_CRITICAL_S`` (then the trailing gap is already too long).
    """

    t_start_ms: int
    t_end_ms: int
    open_price: int | None
    open_ts: int | None
    lo: int
    hi: int
    max_gap_ms: int
    ticks: int
    complete: bool
    last_ts: int | None = None  # the newest known tick up to the window end (inside, else the opening one)
    next_ts: int | None = None  # the first tick at or after the window end, if any yet
    known_gap_ms: int = 0  # longest interval between known ticks that overlaps the window


def window_stats(r: redis.Redis, t_start_s: int, column_s: int) -> WindowStats | None:
    """Touch data for the column starting at `t_start_s` (Unix seconds), from the 7-day history.

    One round trip. None when nothing is known: no tick inside the window and none before it.
    """
    if column_s <= 0:
        raise ValueError("column_s must be positive")
    start_ms = t_start_s * 1000
    end_ms = start_ms + column_s * 1000
    pipe = r.pipeline(transaction=False)
    pipe.zrevrangebyscore(PRICE_HISTORY_KEY, start_ms, "-inf", start=0, num=1)
    pipe.zrangebyscore(PRICE_HISTORY_KEY, start_ms, f"({end_ms}")
    pipe.zrangebyscore(PRICE_HISTORY_KEY, end_ms, "+inf", start=0, num=1)
    before, inside, after = pipe.execute()
    opening = _parse_member(before[0]) if before else None
    ticks = [_parse_member(m) for m in inside]
    if opening is None and not ticks:
        return None
    prices = [t.price for t in ticks]
    if opening is not None:
        prices.append(opening.price)
    if ticks:
        edges = [start_ms, *(t.ts for t in ticks), end_ms]
        max_gap = max(b - a for a, b in itertools.pairwise(edges))
    else:
        max_gap = end_ms - start_ms
    following = _parse_member(after[0]) if after else None
    known = [t.ts for t in ([opening] if opening else []) + ticks + ([following] if following else [])]
    return WindowStats(
        t_start_ms=start_ms,
        t_end_ms=end_ms,
        open_price=opening.price if opening else None,
        open_ts=opening.ts if opening else None,
        lo=min(prices),
        hi=max(prices),
        max_gap_ms=max_gap,
        ticks=len(ticks),
        complete=bool(after),
        last_ts=ticks[-1].ts if ticks else (opening.ts if opening else None),
        next_ts=following.ts if following else None,
        known_gap_ms=max((b - a for a, b in itertools.pairwise(known)), default=0),
    )
