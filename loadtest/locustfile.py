"""Locust traders for Tap Trading (gevent-native, FastHttpUser).

Each simulated trader does what the SPA does (SPEC §5, §6, §8):

1. SIWE login with a fresh wallet, binding a fresh session key (`urn:tap-trading:session-key:...`);
2. a mock deposit (`TAP_DEV_MODE=1` on the server);
3. opens `/ws?token=<token>` and keeps the latest `grid` message (the quote matrix, every second);
4. taps: a signed bet (EIP-191 by the session key, coincurve) on a placeable, quoted cell it has not
   bet on yet, at a constant pace per trader;
5. reports, as locust request type ``WS`` / name ``bet:confirmed``, the time from the tap to the
   `bet:confirmed` frame on its websocket (``bet:rejected`` is reported as a failure with its reason).

    .venv/bin/locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 \\
        --headless -u 200 -r 50 -t 60s --only-summary

Settings (environment):
  TAP_LOCUST_BET_INTERVAL  seconds between two taps of one trader (default 1.0: u traders ≈ u bets/s)
  TAP_LOCUST_STAKE         stake of each bet (default "1")
  TAP_LOCUST_DEPOSIT       deposit at start (default "1000")
  TAP_LOCUST_ROW_MARGIN    bet only within this many rows of the current row (default 6)
  TAP_LOCUST_INSECURE      "1": do not verify TLS (https host through nginx, self-signed)

The server must be reachable with its per-IP limits off or raised for a load test from one IP
(TAP_RATE_PER_IP=0, TAP_RATE_PER_ADDRESS=0, TAP_RATE_AUTH_PER_IP=0; nginx `limit_req` too if used).
For a fixed offered rate well past what one Python process can sign and send, use
loadtest/bet_ceiling.py (bodies signed ahead, open-loop sender).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import ssl
import sys
import time
from pathlib import Path

import gevent
import orjson
import websocket  # websocket-client: blocking API, cooperative under locust's gevent patching
from locust import between, constant_pacing, events, task  # noqa: F401
from locust.contrib.fasthttp import FastHttpUser

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from loadtest.lib.signing import Key, bet_text, siwe_message

BET_INTERVAL = float(os.environ.get("TAP_LOCUST_BET_INTERVAL", "1.0"))
STAKE = os.environ.get("TAP_LOCUST_STAKE", "1")
DEPOSIT = os.environ.get("TAP_LOCUST_DEPOSIT", "1000")
ROW_MARGIN = int(os.environ.get("TAP_LOCUST_ROW_MARGIN", "6"))
INSECURE = os.environ.get("TAP_LOCUST_INSECURE", "0") == "1"


class Trader(FastHttpUser):
    wait_time = constant_pacing(BET_INTERVAL)
    # Connection reuse like a browser: one keep-alive connection per trader.
    concurrency = 1
    insecure = INSECURE

    def on_start(self) -> None:
        self.wallet, self.session_key = Key(), Key()
        self.token: str | None = None
        self.grid: dict | None = None
        self.settings: dict | None = None
        self.used: set[str] = set()
        self.tapped_at: dict[str, float] = {}  # bet id → perf_counter at the tap
        self.ws = None
        self.ws_greenlet = None

        with self.client.get("/api/v1/grid", name="/api/v1/grid", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"grid {resp.status_code}")
                self.stop_self()
                return
            body = resp.json()
            self.settings, self.grid = body["settings"], body
        domain, chain_id = self.settings["siwe_domain"], self.settings["chain_id"]

        with self.client.get("/api/v1/auth/nonce", name="/api/v1/auth/nonce", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"nonce {resp.status_code}: {resp.text[:200]}")
                self.stop_self()
                return
            nonce = resp.json()["nonce"]
        text = siwe_message(domain, chain_id, self.wallet, nonce, self.session_key, int(time.time() * 1000))
        with self.client.post(
            "/api/v1/auth/login",
            json={"message": text, "signature": self.wallet.personal_sign(text)},
            name="/api/v1/auth/login",
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"login {resp.status_code}: {resp.text[:200]}")
                self.stop_self()
                return
            self.token = resp.json()["token"]
        self.auth = {"Authorization": f"Bearer {self.token}"}
        with self.client.post(
            "/api/v1/deposits",
            json={"amount": DEPOSIT},
            headers=self.auth,
            name="/api/v1/deposits",
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"deposit {resp.status_code}: {resp.text[:200]}")
        self.ws_greenlet = gevent.spawn(self._listen)

    def stop_self(self) -> None:
        self.token = None  # this trader stays idle; the failure is in the stats

    # ---- websocket -----------------------------------------------------------------------------------

    def _ws_url(self) -> str:
        base = self.host.rstrip("/")
        scheme = "wss" if base.startswith("https") else "ws"
        return f"{scheme}://{base.split('://', 1)[1]}/ws?token={self.token}"

    def _listen(self) -> None:
        sslopt = {"cert_reqs": ssl.CERT_NONE, "check_hostname": False} if INSECURE else None
        while self.token:
            try:
                self.ws = websocket.create_connection(self._ws_url(), timeout=10, sslopt=sslopt)
                self.ws.settimeout(None)
                while True:
                    raw = self.ws.recv()
                    if not raw:
                        break
                    self._on_frame(raw)
            except Exception as exc:
                if not self.token:
                    return
                events.request.fire(
                    request_type="WS",
                    name="connection",
                    response_time=0,
                    response_length=0,
                    exception=exc,
                    context={},
                )
                gevent.sleep(1.0)

    def _on_frame(self, raw: str) -> None:
        now = time.perf_counter()
        if '"type":"grid"' in raw:
            self.grid = orjson.loads(raw)
            return
        if '"bet:' not in raw:
            return
        msg = orjson.loads(raw)
        started = self.tapped_at.pop(msg.get("bet_id"), None)
        if started is None:
            return  # not ours, or it arrived before the 202 was read (rare): not timed
        elapsed_ms = (now - started) * 1000
        if msg["type"] == "bet:confirmed":
            events.request.fire(
                request_type="WS",
                name="bet:confirmed",
                response_time=elapsed_ms,
                response_length=len(raw),
                exception=None,
                context={},
            )
        elif msg["type"] == "bet:rejected":
            events.request.fire(
                request_type="WS",
                name="bet:confirmed",
                response_time=elapsed_ms,
                response_length=len(raw),
                exception=Exception(f"rejected: {msg.get('reason')}"),
                context={},
            )

    def on_stop(self) -> None:
        token, self.token = self.token, None
        if self.ws is not None:
            with contextlib.suppress(Exception):
                self.ws.close(timeout=1)
        if self.ws_greenlet is not None:
            self.ws_greenlet.kill(block=False)
        del token

    # ---- the tap -------------------------------------------------------------------------------------

    def _pick_cell(self) -> str | None:
        g, st = self.grid, self.settings
        if not g or not g.get("columns") or not g.get("price"):
            return None
        cs, lead = st["column_seconds"], st["min_lead_columns"]
        now = time.time()
        first_ok = int(now // cs) * cs + (lead + 1) * cs  # one column of margin: it may close in flight
        step = round(float(st["price_step"]) * 100)
        cur = round(float(g["price"]) * 100) // step
        choices = [
            f"{t}:{r}"
            for ci, t in enumerate(g["columns"])
            if t >= first_ok
            for ri, r in enumerate(g["rows"])
            if abs(r - cur) <= ROW_MARGIN and g["quotes"][ci][ri] is not None and f"{t}:{r}" not in self.used
        ]
        return secrets.choice(choices) if choices else None

    @task
    def place_bet(self) -> None:
        if not self.token:
            return
        cell = self._pick_cell()
        if cell is None:
            return
        self.used.add(cell)
        st = self.settings
        nonce, ts = secrets.token_hex(8), int(time.time() * 1000)
        text = bet_text(
            st["siwe_domain"], st["chain_id"], self.wallet.address, cell, STAKE, "1.01", nonce, ts
        )
        body = {
            "cell": cell,
            "stake": STAKE,
            "min_multiplier": "1.01",
            "nonce": nonce,
            "ts": ts,
            "signature": self.session_key.personal_sign(text),
        }
        tapped = time.perf_counter()
        with self.client.post(
            "/api/v1/bets", json=body, headers=self.auth, name="/api/v1/bets", catch_response=True
        ) as resp:
            if resp.status_code == 202:
                self.tapped_at[resp.json()["bet_id"]] = tapped
                if len(self.tapped_at) > 10_000:  # confirmations lost: do not grow without bound
                    self.tapped_at.clear()
            else:
                try:
                    code = resp.json()["error"]["code"]
                except Exception:
                    code = resp.text[:80]
                resp.failure(f"{resp.status_code} {code}")
