"""Helpers for the auth tests: build and sign messages the way an outside client would (SPEC §5/§6).

No tests live here; the other ``test_auth_*`` modules import these helpers and fixtures.
"""

from __future__ import annotations

import datetime as dt
import time
from contextlib import contextmanager

from eth_account import Account
from eth_account.messages import encode_defunct

from app.config import Settings

_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141  # secp256k1 order
ISSUED_FMT = "%Y-%m-%dT%H:%M:%S.%f"


def iso(ms: int) -> str:
    """RFC 3339 with milliseconds and Z, like JavaScript's Date.toISOString()."""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime(ISSUED_FMT)[:-3] + "Z"


def siwe_text(
    settings: Settings,
    address: str,
    nonce: str,
    *,
    now_ms: int | None = None,
    domain: str | None = None,
    uri: str | None = None,
    chain_id: int | None = None,
    version: str = "1",
    statement: str | None = "Sign in to Tap Trading.",
    issued_at: str | None = None,
    expiration: str | None = None,
    not_before: str | None = None,
    request_id: str | None = None,
    resources: list[str] | None = None,
    session_key: str | None = None,
    scheme: str | None = None,
) -> str:
    """An EIP-4361 message built by hand from the EIP's layout (not with the server's own code)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    domain = settings.siwe_domain if domain is None else domain
    uri = f"https://{settings.siwe_domain}" if uri is None else uri
    chain_id = settings.chain_id if chain_id is None else chain_id
    head = f"{scheme}://{domain}" if scheme else domain
    lines = [f"{head} wants you to sign in with your Ethereum account:", address, ""]
    if statement is not None:
        lines += [statement, ""]
    else:
        lines += [""]
    lines += [
        f"URI: {uri}",
        f"Version: {version}",
        f"Chain ID: {chain_id}",
        f"Nonce: {nonce}",
        f"Issued At: {issued_at or iso(now_ms)}",
    ]
    if expiration:
        lines.append(f"Expiration Time: {expiration}")
    if not_before:
        lines.append(f"Not Before: {not_before}")
    if request_id is not None:
        lines.append(f"Request ID: {request_id}")
    res = list(resources or [])
    if session_key:
        res.append(f"urn:tap-trading:session-key:{session_key}")
    if res:
        lines.append("Resources:")
        lines += [f"- {r}" for r in res]
    return "\n".join(lines)


def sign(account, text: str) -> str:
    return "0x" + bytes(account.sign_message(encode_defunct(text=text)).signature).hex()


def new_account():
    return Account.create()


def get_nonce(client, **kw) -> str:
    resp = client.get("/api/v1/auth/nonce", **kw)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["nonce"]


def login(client, settings: Settings, account, *, session_key=None, now_ms=None, **kw) -> dict:
    """Full SIWE login; returns the JSON body (token, address, session_key, expires_at)."""
    nonce = get_nonce(client)
    text = siwe_text(settings, account.address, nonce, now_ms=now_ms, session_key=session_key, **kw)
    resp = client.post("/api/v1/auth/login", json={"message": text, "signature": sign(account, text)})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def error_code(resp) -> str:
    body = resp.get_json()
    assert isinstance(body, dict) and "error" in body, (resp.status_code, resp.data[:200])
    assert set(body["error"]) >= {"code", "message"}
    return body["error"]["code"]


class FakeClock:
    """A settable wall clock (seconds) for the auth checks."""

    def __init__(self, start: float | None = None) -> None:
        self.t = time.time() if start is None else start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    @property
    def ms(self) -> int:
        return int(self.t * 1000)


def flip_to_high_s(sig: str) -> str:
    raw = bytes.fromhex(sig[2:])
    s = int.from_bytes(raw[32:64], "big")
    v = raw[64]
    v2 = {27: 28, 28: 27, 0: 1, 1: 0}[v]
    return "0x" + (raw[:32] + (_N - s).to_bytes(32, "big") + bytes((v2,))).hex()


def with_v(sig: str, v: int) -> str:
    return sig[:-2] + f"{v:02x}"


@contextmanager
def started_app(settings: Settings):
    """A created app with its worker greenlets (SQLite writer included) running; stopped on exit."""
    from app import create_app
    from app.services import services
    from app.storage.db import prepare_database
    from workers import runtime

    prepare_database(settings.db_dir, time.time(), settings.sqlite_synchronous)
    app = create_app(settings)
    app.testing = True
    runtime.start(app)
    try:
        yield app
    finally:
        runtime.stop(app)
        services(app).reads.close()


def clear_auth_keys(app) -> None:
    from app.services import services

    r = services(app).redis
    for pattern in ("tap:sess:*", "tap:auth:*", "tap:rl:*", "tap:bn:*"):
        for key in r.scan_iter(pattern):
            r.delete(key)
