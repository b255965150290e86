"""A trader's websocket as an outside client would use it (SPEC §8a), and the server settings the
websocket tests share: `Socket` reads what the server sends into a list and waits for a message by
predicate; `placeable_cells` picks cells from GET /api/v1/grid; `tap` wraps a signed bet body."""

from __future__ import annotations

import json
import time

import pytest
import websocket


class Settings:
    """The SIWE domain and chain id `server_env` gives the server, as `Trader` needs them."""

    siwe_domain = "localhost:8443"
    chain_id = 1


def server_env(tmp, redis_server, **extra: str) -> dict:
    """The server's settings, on the shared redis-server flushed first: a previous server's price
    history would be replayed as a feed stall (betting suspended) by the next one (module_redis_url)."""
    redis_server.client().flushall()
    return {
        "TAP_DATA_DIR": str(tmp / "data"),
        "TAP_REDIS_URL": redis_server.url,
        "TAP_SIWE_DOMAIN": Settings.siwe_domain,
        "TAP_DEV_MODE": "1",
        "TAP_RATE_PER_ADDRESS": "0",
        "TAP_RATE_PER_IP": "0",
        "TAP_QUOTE_MAX_AGE_S": "30",  # a busy test machine may stall the simulated feed a little
        **extra,
    }


class Socket:
    """A trader's websocket, reading what the server sends into typed buckets."""

    def __init__(self, url: str) -> None:
        self.ws = websocket.create_connection(url, timeout=10)
        self.seen: list[dict] = []

    def send(self, msg: dict | str) -> None:
        self.ws.send(msg if isinstance(msg, str) else json.dumps(msg))

    def next(self, want, timeout: float = 10.0) -> dict:
        """The first message (already seen or coming) for which `want(msg)` is true."""
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.seen):
                if want(m):
                    return self.seen.pop(i)
            left = deadline - time.monotonic()
            assert left > 0, f"no matching message; saw {[m.get('type') for m in self.seen]}"
            self.ws.settimeout(left)
            opcode, data = self.ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise ConnectionError(int.from_bytes(data[:2], "big"), data[2:].decode())
            if opcode == websocket.ABNF.OPCODE_TEXT:
                self.seen.append(json.loads(data))

    def answer(self, req: str) -> dict:
        return self.next(lambda m: m.get("req") == req)

    def close_code(self, timeout: float = 5.0) -> int:
        with pytest.raises(ConnectionError) as err:
            self.next(lambda m: False, timeout=timeout)
        return err.value.args[0]

    def close(self) -> None:
        self.ws.close()


def placeable_cells(trader, n: int) -> list[str]:
    """`n` distinct cells well inside the placeable window (columns 4.., rows near the price)."""
    _, grid, _ = trader.call("GET", "/api/v1/grid")
    rows, cols = grid["rows"], grid["columns"][4:]
    mid = len(rows) // 2
    return [f"{c}:{r}" for r in rows[mid - 3 : mid + 4] for c in cols][:n]


def tap(body: dict, req: str) -> dict:
    """A signed bet body as a websocket `bet` message (SPEC §8a)."""
    return {"type": "bet", "req": req, **body}
