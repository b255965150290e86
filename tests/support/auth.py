"""Helpers for the auth tests: log in and sign the way an outside client would, a fake clock, an app
with its workers; the message texts themselves are in `tests.support.client`."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct

from app.config import Settings
from tests.support.client import siwe_message

_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141  # secp256k1 order


def siwe_text(
    settings: Settings,
    address: str,
    nonce: str,
    *,
    domain: str | None = None,
    chain_id: int | None = None,
    uri: str | None = None,
    **kw: Any,
) -> str:
    """`client.siwe_message` for this settings' domain and chain (each overridable for negative tests)."""
    dom = settings.siwe_domain if domain is None else domain
    return siwe_message(
        dom,
        address,
        nonce,
        chain_id=settings.chain_id if chain_id is None else chain_id,
        uri=f"https://{settings.siwe_domain}" if uri is None else uri,
        **kw,
    )


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
