"""A trader as an outside client would write it from SPEC.md: SIWE login binding a session key,
mock deposit, signed bets. Works against the Flask test client or a live HTTP base URL."""

from __future__ import annotations

import json
import secrets
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from eth_account import Account
from eth_account.messages import encode_defunct

from tests.support.auth import siwe_text
from tests.support.client import bet_text


class HttpClient:
    """Same surface as the Flask test client, over real HTTP (for gunicorn/nginx tests)."""

    def __init__(self, base: str) -> None:
        self.base = base

    def _do(self, method, path, json_body=None, headers=None):
        data = None if json_body is None else json.dumps(json_body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers or {})
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null"), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null"), dict(exc.headers)


def _call(client, method, path, body=None, headers=None):
    if isinstance(client, HttpClient):
        return client._do(method, path, body, headers)
    resp = client.open(path, method=method, json=body, headers=headers or {})
    return resp.status_code, resp.get_json(), dict(resp.headers)


@dataclass
class Trader:
    client: object
    settings: object
    wallet: object = field(default_factory=Account.create)
    key: object = field(default_factory=Account.create)
    token: str | None = None
    clock: Callable[[], float] = time.time  # the bet's `ts`; tests that freeze the server's clock pass it

    @property
    def address(self) -> str:
        return self.wallet.address.lower()

    def call(self, method, path, body=None):
        return _call(self.client, method, path, body, {"Authorization": f"Bearer {self.token}"})

    def login(self) -> Trader:
        status, body, _ = _call(self.client, "GET", "/api/v1/auth/nonce")
        assert status == 200, body
        text = siwe_text(self.settings, self.wallet.address, body["nonce"], session_key=self.key.address)
        sig = "0x" + bytes(self.wallet.sign_message(encode_defunct(text=text)).signature).hex()
        status, body, _ = _call(
            self.client, "POST", "/api/v1/auth/login", {"message": text, "signature": sig}
        )
        assert status == 200, body
        self.token = body["token"]
        return self

    def deposit(self, amount: str) -> str:
        status, body, _ = self.call("POST", "/api/v1/deposits", {"amount": amount})
        assert status == 200, body
        return body["balance"]

    def bet_body(
        self,
        cell: str,
        stake: str,
        min_multiplier: str = "1.01",
        *,
        nonce: str | None = None,
        ts: int | None = None,
        signer=None,
    ) -> dict:
        nonce = nonce or secrets.token_hex(8)
        ts = int(self.clock() * 1000) if ts is None else ts
        text = bet_text(
            self.settings.siwe_domain,
            self.settings.chain_id,
            self.address,
            cell,
            stake,
            min_multiplier,
            nonce,
            ts,
        )
        sig = (signer or self.key).sign_message(encode_defunct(text=text)).signature
        return {
            "cell": cell,
            "stake": stake,
            "min_multiplier": min_multiplier,
            "nonce": nonce,
            "ts": ts,
            "signature": "0x" + bytes(sig).hex(),
        }

    def bet(self, cell: str, stake: str, min_multiplier: str = "1.01", **kw):
        return self.call("POST", "/api/v1/bets", self.bet_body(cell, stake, min_multiplier, **kw))
