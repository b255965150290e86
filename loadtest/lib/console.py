"""The operator console during a benchmark (issue 14): an admin session polling the overview.

`login_admin` signs an operator in (its wallet must be in the server's TAP_ADMIN_ADDRESSES: the stack
is started with it) and checks `GET /api/v1/admin/whoami`; `ConsolePoller` then polls
`GET /api/v1/admin/overview` every S seconds on its own keep-alive connection, as the web console at
/admin does (``?window=10`` after its first load), and keeps each poll's latency; `console_table`
prints them beside a benchmark's own table. Used by bet_ceiling.py and tap_ceiling.py
(``--console-poll S --console-window N``).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

from loadtest.lib.openloop import pct
from loadtest.lib.rawhttp import Api, RawHttp, build_request
from loadtest.lib.signing import Key, siwe_message


class ConsolePoller:
    """An operator's console: GET /api/v1/admin/overview every `every_s` seconds, latencies kept."""

    def __init__(self, host: str, port: int, token: str, every_s: float, window_s: int | None = None) -> None:
        self.http = RawHttp(host, port)
        path = "/api/v1/admin/overview" + (f"?window={window_s}" if window_s else "")
        self.req = build_request("GET", path, f"{host}:{port}", token=token)
        self.every_s = every_s
        self.latencies_ms: list[float] = []
        self.bytes = 0
        self.errors: list[str] = []
        self._g = None

    def start(self) -> None:
        import gevent

        self.latencies_ms, self.errors, self.bytes = [], [], 0
        self._g = gevent.spawn(self._run)

    def _run(self) -> None:
        import gevent

        nxt = time.monotonic()
        while True:
            t0 = time.monotonic()
            try:
                status, body = self.http.request(self.req)
                if status != 200:
                    self.errors.append(f"{status} {body[:100]!r}")
                self.bytes += len(body)
            except (OSError, ConnectionError) as exc:
                self.errors.append(repr(exc))
            self.latencies_ms.append((time.monotonic() - t0) * 1000)
            nxt += self.every_s
            gevent.sleep(max(0.0, nxt - time.monotonic()))

    def stop(self) -> dict:
        if self._g is not None:
            self._g.kill()
            self._g = None
        self.http.close()
        lat = self.latencies_ms
        return {
            "polls": len(lat),
            "p50_ms": pct(lat, 0.5),
            "p99_ms": pct(lat, 0.99),
            "max_ms": max(lat) if lat else float("nan"),
            "mean_bytes": self.bytes / max(1, len(lat)),
            "errors": self.errors[:5],
        }


def login_admin(api: Api, key: Key, domain: str, chain_id: int) -> str:
    """A session token for `key`'s wallet, checked to be an operator's (whoami answers 200)."""
    status, body = api.call("GET", "/api/v1/auth/nonce")
    assert status == 200, (status, body)
    text = siwe_message(domain, chain_id, key, body["nonce"], None, int(time.time() * 1000))
    status, body = api.call(
        "POST", "/api/v1/auth/login", {"message": text, "signature": key.personal_sign(text)}
    )
    assert status == 200, (status, body)
    status, who = api.call("GET", "/api/v1/admin/whoami", token=body["token"])
    assert status == 200, (status, who)
    return body["token"]


def _f(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


def console_line(c: dict) -> str:
    """One poller's figures in a sentence (for a benchmark's log)."""
    return (
        f"console {c['polls']} polls, overview p50/p99 {_f(c['p50_ms'])}/{_f(c['p99_ms'])} ms "
        f"(max {_f(c['max_ms'])}), {c['mean_bytes']:.0f} B, errors {c['errors'] or 'none'}"
    )


def console_table(results: list[dict], label: Callable[[dict], str]) -> None:
    """A markdown table of the runs that had a console polling (`r["console"]`), if any."""
    consoles = [r for r in results if r.get("console")]
    if not consoles:
        return
    print()
    print("| run | offered/s | console polls | overview p50 / p99 / max ms | mean bytes | errors |")
    print("|---|---:|---:|---|---:|---|")
    for r in consoles:
        c = r["console"]
        print(
            f"| {label(r)} | {r['rate']} | {c['polls']} | {_f(c['p50_ms'])} / "
            f"{_f(c['p99_ms'])} / {_f(c['max_ms'])} | {c['mean_bytes']:.0f} | {c['errors'] or 'none'} |"
        )


def add_console_args(ap: argparse.ArgumentParser) -> None:
    """`--console-poll S` and `--console-window N`, the same in every load script that has an operator."""
    ap.add_argument(
        "--console-poll",
        type=float,
        default=0,
        help="an operator polls GET /api/v1/admin/overview every this many seconds during each run (0: no)",
    )
    ap.add_argument(
        "--console-window",
        type=int,
        default=None,
        help="poll with ?window=N (the web console polls ?window=10 after its first load); default: 900",
    )


def check_console_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.console_window is not None and not 10 <= args.console_window <= 900:
        ap.error("--console-window must be 10 to 900 seconds (the API's range)")
