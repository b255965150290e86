"""Which cells a run may bet on, and the signed bodies for them."""

from __future__ import annotations

import math
import secrets

from loadtest.lib.rawhttp import Trader, build_request
from loadtest.lib.signing import bet_text

# ---- planning cells ------------------------------------------------------------------------------------


def column_of(t: float, cs: int) -> int:
    return int(t // cs) * cs


def plan_cells(grid: dict, start_s: float, end_s: float, row_margin: int) -> list[str]:
    """Cells placeable at every instant of [start_s, end_s] (SPEC §3) that the grid quotes now,
    within `row_margin` rows of the current price row."""
    st = grid["settings"]
    cs, lead, ahead = st["column_seconds"], st["min_lead_columns"], st["columns_ahead"]
    lo_t = column_of(end_s, cs) + lead * cs
    hi_t = column_of(start_s, cs) + ahead * cs  # exclusive
    step_cents = round(float(st["price_step"]) * 100)
    cur_row = round(float(grid["price"]) * 100) // step_cents
    cells = []
    for ci, t in enumerate(grid["columns"]):
        if not lo_t <= t < hi_t:
            continue
        for ri, r in enumerate(grid["rows"]):
            if abs(r - cur_row) <= row_margin and grid["quotes"][ci][ri] is not None:
                cells.append(f"{t}:{r}")
    return cells


def cells_per_trader_estimate(
    duration: float, margin_s: float, cs: int = 5, lead: int = 2, ahead: int = 12, row_margin: int = 6
) -> int:
    cols = ahead - lead - math.ceil((duration + margin_s) / cs) - 1
    return max(0, cols) * (2 * row_margin + 1)


# ---- one measured run ----------------------------------------------------------------------------------


def assign_pairs(traders: list[Trader], cells: list[str], n: int) -> list[tuple[int, str]]:
    """n (trader index, cell) pairs never used before, interleaved so each trader's bets spread over the run."""
    free = [[c for c in cells if c not in t.used_cells] for t in traders]
    pairs: list[tuple[int, str]] = []
    for j in range(len(cells)):
        for k, fk in enumerate(free):
            if j < len(fk):
                pairs.append((k, fk[j]))
                if len(pairs) == n:
                    return pairs
    raise RuntimeError(f"only {len(pairs)} unused (trader, cell) pairs for {n} bets; use more --traders")


def sign_bodies(
    traders: list[Trader],
    cells: list[str],
    n: int,
    domain: str,
    chain_id: int,
    ts: int,
    host: str,
    stake: str,
) -> tuple[list[bytes], list[int]]:
    """n signed bet requests; request i belongs to traders[owner[i]], each (trader, cell) used once."""
    reqs, owner = [], []
    for k, cell in assign_pairs(traders, cells, n):
        tr = traders[k]
        tr.used_cells.add(cell)
        nonce = secrets.token_hex(8)
        text = bet_text(domain, chain_id, tr.address, cell, stake, "1.01", nonce, ts)
        body = (
            b'{"cell":"'
            + cell.encode()
            + b'","stake":"'
            + stake.encode()
            + b'","min_multiplier":"1.01","nonce":"'
            + nonce.encode()
            + b'","ts":'
            + str(ts).encode()
            + b',"signature":"'
            + tr.session_key.personal_sign(text).encode()
            + b'"}'
        )
        reqs.append(build_request("POST", "/api/v1/bets", host, body, tr.token))
        owner.append(k)
    return reqs, owner
