"""Reading the house's open liability (SPEC §8b): for the quote book's shading and the console.

The claim script (`app.bets.claims`) is the only writer of the counters; these are plain reads, one
pipelined round trip for any number of columns, never on a tap's path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import redis

from app.keys import EXPOSURE_COLUMNS, exposure_key
from app.market.quotes import Exposure


def column_hashes(r: redis.Redis, columns: Iterable[int]) -> dict[int, dict[str, int]]:
    """{t_start: {"t": column total, "<row>": cell total}} for `columns` (absent ones left out)."""
    cols = list(columns)
    if not cols:
        return {}
    pipe = r.pipeline(transaction=False)
    for t in cols:
        pipe.hgetall(exposure_key(t))
    out: dict[int, dict[str, int]] = {}
    for t, raw in zip(cols, pipe.execute(), strict=True):
        if raw:
            out[t] = {k.decode(): int(v) for k, v in cast("dict[bytes, bytes]", raw).items()}
    return out


def read_exposure(r: redis.Redis, columns: Iterable[int], *, cell_cap: int, column_cap: int) -> Exposure:
    """The snapshot the quote book is shaded by: the open liability of `columns` and their cells."""
    cells: dict[tuple[int, int], int] = {}
    totals: dict[int, int] = {}
    for t, fields in column_hashes(r, columns).items():
        for name, value in fields.items():
            if name == "t":
                totals[t] = value
            elif value:
                cells[(t, int(name))] = value
    return Exposure(cell_cap=cell_cap, column_cap=column_cap, cells=cells, columns=totals)


def exposed_columns(r: redis.Redis, since: int) -> list[int]:
    """Columns (t_start ≥ `since`) that have exposure keys, oldest first."""
    return [int(m) for m in cast("list[bytes]", r.zrangebyscore(EXPOSURE_COLUMNS, since, "+inf"))]
