"""The open-loop sender (request i due at t0 + i/R, latency from that instant: no coordinated
omission) and the websocket listeners that time `bet:confirmed`."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import orjson

from loadtest.lib.rawhttp import RawHttp, Trader

# ---- the open-loop sender ----------------------------------------------------------------------------


@dataclass
class RunResult:
    n: int
    intended: list  # monotonic due time per request
    sent: list
    done: list
    status: list
    body: list  # bet id (202) or error code


def open_loop(
    host: str, port: int, requests: list[bytes], rate: float, conns: int, grace_s: float, parse=True
) -> RunResult:
    """Send `requests[i]` at t0 + i/rate on a shared pool of `conns` keep-alive connections.

    Latency is counted from the due instant, so a slow server cannot hide behind a busy generator
    (no coordinated omission). Requests not started by the end of the schedule + `grace_s` are not sent.
    """
    import gevent
    from gevent.queue import Queue

    n = len(requests)
    res = RunResult(n, [0.0] * n, [0.0] * n, [0.0] * n, [0] * n, [None] * n)
    q: Queue = Queue()
    t0 = time.monotonic() + 0.3
    hard_stop = t0 + n / rate + grace_s
    for i in range(n):
        res.intended[i] = t0 + i / rate

    def dispatcher() -> None:
        i = 0
        while i < n:
            now = time.monotonic()
            due = min(n, int((now - t0) * rate) + 1) if now >= t0 else 0
            while i < due:
                q.put(i)
                i += 1
            if i < n:
                gevent.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        for _ in range(conns):
            q.put(None)

    def worker() -> None:
        http = RawHttp(host, port, timeout=grace_s)
        while True:
            i = q.get()
            if i is None:
                break
            now = time.monotonic()
            if now > hard_stop:
                res.status[i] = -2  # not sent: the generator's backlog outlived the run
                continue
            res.sent[i] = now
            try:
                status, body = http.request(requests[i])
            except Exception as exc:
                res.done[i] = time.monotonic()
                res.status[i] = -1
                res.body[i] = type(exc).__name__
                continue
            res.done[i] = time.monotonic()
            res.status[i] = status
            if parse:
                try:
                    doc = orjson.loads(body)
                    res.body[i] = doc["bet_id"] if status == 202 else doc["error"]["code"]
                except Exception:
                    res.body[i] = body[:80]
        http.close()

    greenlets = [gevent.spawn(worker) for _ in range(conns)]
    d = gevent.spawn(dispatcher)
    gevent.joinall([d, *greenlets], timeout=n / rate + grace_s + 30)
    gevent.killall([d, *greenlets], timeout=2)
    return res


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def latency_summary(res: RunResult, ok_status: int | None = None) -> dict:
    lat = [(res.done[i] - res.intended[i]) * 1000 for i in range(res.n) if res.status[i] > 0]
    svc = [(res.done[i] - res.sent[i]) * 1000 for i in range(res.n) if res.status[i] > 0]
    sent = [res.sent[i] for i in range(res.n) if res.sent[i]]
    statuses: dict[str, int] = {}
    for i in range(res.n):
        key = str(res.status[i]) if res.status[i] != 202 or ok_status is None else "202"
        if res.status[i] not in (200, 202) and res.status[i] > 0:
            key = f"{res.status[i]} {res.body[i]}"
        elif res.status[i] == -1:
            key = f"error {res.body[i]}"
        elif res.status[i] == -2:
            key = "not sent"
        statuses[key] = statuses.get(key, 0) + 1
    span = (max(sent) - min(sent)) if len(sent) > 1 else float("nan")
    return {
        "offered": res.n,
        "send_span_s": span,
        "sent_per_s": (len(sent) - 1) / span if len(sent) > 1 else float("nan"),
        "statuses": statuses,
        "p50_ms": pct(lat, 0.50),
        "p90_ms": pct(lat, 0.90),
        "p99_ms": pct(lat, 0.99),
        "p999_ms": pct(lat, 0.999),
        "max_ms": max(lat) if lat else float("nan"),
        "service_p50_ms": pct(svc, 0.50),
        "service_p99_ms": pct(svc, 0.99),
    }


# ---- websockets (time to bet:confirmed) --------------------------------------------------------------


class WsListeners:
    """One websocket per sampled trader; records when each `bet:confirmed` / `bet:rejected` arrives."""

    def __init__(self, host: str, port: int, traders: list[Trader]) -> None:
        self.url = f"ws://{host}:{port}/ws?token="
        self.traders = traders
        self.confirmed: dict[str, float] = {}
        self.rejected: dict[str, str] = {}
        self.frames = 0
        self.errors: list[str] = []
        self._greenlets = []
        self._sockets = []

    def start(self) -> None:
        import gevent
        import websocket  # websocket-client; sockets are gevent-patched in this process

        def listen(trader: Trader) -> None:
            try:
                ws = websocket.create_connection(self.url + trader.token, timeout=5)
            except Exception as exc:
                self.errors.append(f"connect: {exc!r}")
                return
            self._sockets.append(ws)
            ws.settimeout(None)
            try:
                while True:
                    raw = ws.recv()
                    now = time.monotonic()
                    self.frames += 1
                    if not raw or '"bet:' not in raw:
                        continue
                    msg = orjson.loads(raw)
                    if msg.get("type") == "bet:confirmed":
                        self.confirmed[msg["bet_id"]] = now
                    elif msg.get("type") == "bet:rejected":
                        self.rejected[msg["bet_id"]] = msg.get("reason", "")
            except Exception as exc:
                if not isinstance(exc, (websocket.WebSocketConnectionClosedException, OSError)):
                    self.errors.append(f"recv: {exc!r}")

        self._greenlets = [gevent.spawn(listen, t) for t in self.traders]
        gevent.sleep(1.0)  # connected and past the first status/price/grid frames

    def stop(self) -> None:
        import gevent

        for ws in self._sockets:
            with contextlib.suppress(Exception):
                ws.close(timeout=1)
        gevent.killall(self._greenlets, timeout=3)
