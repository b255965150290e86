"""Money safety through real processes: gunicorn (gevent worker), real Redis, real SQLite file.

kill -9 of the worker under load (and the other process faults) is in tests/test_faults.py."""

import os
import subprocess
import sys
import time

import gevent
import pytest

from app.config import Settings
from tests.support.servers import ROOT, Gunicorn
from tests.support.traders import HttpClient, Trader

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(tmp_path, redis_url):
    env = {
        "TAP_DATA_DIR": str(tmp_path / "data"),
        "TAP_REDIS_URL": redis_url,
        "TAP_DEV_MODE": "1",
        "TAP_RATE_PER_ADDRESS": "0",
        "TAP_RATE_PER_IP": "0",
        "TAP_COLUMNS_AHEAD": "14",
        "TAP_ROWS_EACH_SIDE": "30",
        # 200 bets at once queue for the Redis pool; on a busy machine the default 2 s wait for a
        # connection runs out and the bet is refused 503 (fail closed, correctly), which is not
        # what these tests are about: they get a patient pool
        "TAP_REDIS_TIMEOUT_S": "10",
        "TAP_QUOTE_MAX_AGE_S": "30",  # a busy test machine may stall the simulated feed a little
    }
    server = Gunicorn(env, tmp_path / "gunicorn.log")
    server.start()
    settings = Settings.from_env(env)
    yield server, settings, env
    server.stop()


def _placeable_cells(trader):
    status, grid, _ = trader.call("GET", "/api/v1/grid")
    assert status == 200
    # Skip the first column (it may close while 200 requests are in flight) and keep to the 21 rows
    # around the price: with ±30 placeable, a price move of up to 20 rows meanwhile changes nothing.
    mid = len(grid["rows"]) // 2
    return [f"{t}:{r}" for t in grid["columns"][1:] for r in grid["rows"][mid - 10 : mid + 11]]


def test_double_spend_200_concurrent_bets_exactly_k_confirmed(stack):
    server, settings, _ = stack
    trader = Trader(HttpClient(server.url), settings).login()
    k = 37
    assert trader.deposit(str(k)) == str(k)
    cells = _placeable_cells(trader)[:200]
    assert len(cells) == 200
    bodies = [trader.bet_body(c, "1") for c in cells]  # signed ahead, fired together
    results = [None] * 200

    def fire(i):
        results[i] = trader.call("POST", "/api/v1/bets", bodies[i])

    gevent.joinall([gevent.spawn(fire, i) for i in range(200)], timeout=60)
    assert all(r is not None and r[0] == 202 for r in results), [r[:2] for r in results if r and r[0] != 202][
        :3
    ]
    ids = [r[1]["bet_id"] for r in results]
    final = {}
    deadline = time.monotonic() + 20
    while len(final) < 200 and time.monotonic() < deadline:
        for bet_id in ids:
            if bet_id not in final:
                _, body, _ = trader.call("GET", f"/api/v1/bets/{bet_id}")
                if body["status"] in ("confirmed", "rejected"):
                    final[bet_id] = body
        gevent.sleep(0.05)
    statuses = [b["status"] for b in final.values()]
    assert statuses.count("confirmed") == k
    assert statuses.count("rejected") == 200 - k
    assert {b["reason"] for b in final.values() if b["status"] == "rejected"} == {"insufficient_funds"}
    _, me, _ = trader.call("GET", "/api/v1/me")
    assert me["balance"] == "0" and me["open_stakes"] == str(k)
    entries, cursor = [], None
    while True:
        _, page, _ = trader.call("GET", "/api/v1/ledger?limit=200" + (f"&cursor={cursor}" if cursor else ""))
        entries += page["entries"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(entries) == k + 1
    assert sum(int(e["amount"]) for e in entries) == 0  # k × -1 + the deposit of k


def _integrity(env):
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "integrity-check"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_trader_websocket_sees_confirmation_resolution_and_balance(tmp_path, redis_url):
    """Short columns so the whole life of a bet fits in a few seconds: placed, committed, settled."""
    import json

    import websocket

    env = {
        "TAP_DATA_DIR": str(tmp_path / "data"),
        "TAP_REDIS_URL": redis_url,
        "TAP_DEV_MODE": "1",
        "TAP_COLUMN_SECONDS": "1",
        "TAP_MIN_LEAD_COLUMNS": "2",
        # The bets go on the last column shown, placeable for ~6 s after the grid is read: a slow
        # machine's login, GET and five signed POSTs fit in that (with 4 columns it was ~1.5 s).
        "TAP_COLUMNS_AHEAD": "8",
        "TAP_RATE_PER_ADDRESS": "0",
        "TAP_QUOTE_MAX_AGE_S": "30",  # a busy test machine may stall the simulated feed a little
    }
    server = Gunicorn(env, tmp_path / "gunicorn.log")
    server.start()
    try:
        settings = Settings.from_env(env)
        trader = Trader(HttpClient(server.url), settings).login()
        trader.deposit("20")
        ws = websocket.create_connection(
            f"{server.url.replace('http', 'ws')}/ws?token={trader.token}", timeout=10
        )
        _, grid, _ = trader.call("GET", "/api/v1/grid")
        cells = [f"{grid['columns'][-1]}:{r}" for r in grid["rows"][8:13]]  # around the current price
        placed = {}
        for cell in cells:
            status, body, _ = trader.bet(cell, "1")
            assert status == 202, body
            placed[body["bet_id"]] = body
        seen: dict[str, list[dict]] = {}
        balances = []
        deadline = time.monotonic() + 20
        while (
            time.monotonic() < deadline
            and sum(1 for m in seen.values() for x in m if x["type"] == "bet:resolved") < 5
        ):
            msg = json.loads(ws.recv())
            if msg["type"].startswith("bet:"):
                seen.setdefault(msg["bet_id"], []).append(msg)
            elif msg["type"] == "balance":
                balances.append(msg["balance"])
        _, me, _ = trader.call("GET", "/api/v1/me")
        # the balance after the payouts follows the bet:resolved messages
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (balances and balances[-1] == me["balance"]):
            msg = json.loads(ws.recv())
            if msg["type"] == "balance":
                balances.append(msg["balance"])
        ws.close()
        assert set(seen) == set(placed)
        for bet_id, msgs in seen.items():
            kinds = [m["type"] for m in msgs]
            assert kinds == ["bet:confirmed", "bet:resolved"], kinds
            resolved = msgs[1]
            assert resolved["status"] in ("won", "lost", "void")
            _, body, _ = trader.call("GET", f"/api/v1/bets/{bet_id}")
            assert body["status"] == resolved["status"] and body["payout"] == resolved["payout"]
        assert balances and balances[-1] == me["balance"]
        assert me["open_bets"] == 0
        result = _integrity(env)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        server.stop()
