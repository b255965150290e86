#!/usr/bin/env python3
"""Tap Trading from the outside: SIWE login with a session key, then a signed bet (SPEC §5, §6).

Written the way a third party would write it from SPEC.md alone: it imports nothing from the
server's code, only eth-account, the standard library and (for the websocket check) websocket-client.

    python loadtest/auth_flow.py --url http://127.0.0.1:8000 --domain localhost:8443 --chain-id 1
    python loadtest/auth_flow.py --url https://localhost:8443 --insecure        # through nginx

`--domain` and `--chain-id` must match the server's TAP_SIWE_DOMAIN and TAP_CHAIN_ID. A new wallet
and a new session key are generated unless `--key` is given. Exit status 0 when login, the session
check and the signed request behaved as the SPEC says (202 for a bet), 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import secrets
import ssl
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct


class Http:
    def __init__(self, base: str, insecure: bool = False, timeout: float = 10.0) -> None:
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.ctx = None
        if base.startswith("https") and insecure:
            self.ctx = ssl.create_default_context()
            self.ctx.check_hostname = False
            self.ctx.verify_mode = ssl.CERT_NONE

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ctx) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw.decode(errors="replace")


def personal_sign(account, text: str) -> str:
    """EIP-191 personal_sign, as a wallet does it; 0x + 65 bytes hex (r, s, v=27/28)."""
    return "0x" + bytes(account.sign_message(encode_defunct(text=text)).signature).hex()


def siwe_message(domain: str, address: str, uri: str, chain_id: int, nonce: str, session_key: str) -> str:
    """EIP-4361, laid out exactly as the EIP's ABNF says (LF line ends, no trailing newline)."""
    issued_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return "\n".join(
        [
            f"{domain} wants you to sign in with your Ethereum account:",
            address,  # EIP-55 checksummed, as eth-account gives it
            "",
            "Sign in to Tap Trading.",
            "",
            f"URI: {uri}",
            "Version: 1",
            f"Chain ID: {chain_id}",
            f"Nonce: {nonce}",
            f"Issued At: {issued_at}",
            "Resources:",
            f"- urn:tap-trading:session-key:{session_key}",
        ]
    )


def bet_text(domain: str, chain_id: int, address: str, bet: dict[str, Any]) -> str:
    """The SPEC §6 text: values exactly as sent, address lowercase, no trailing newline."""
    return "\n".join(
        [
            "tap-trading:bet",
            f"domain:{domain}",
            f"chain-id:{chain_id}",
            f"address:{address.lower()}",
            f"cell:{bet['cell']}",
            f"stake:{bet['stake']}",
            f"min-multiplier:{bet['min_multiplier']}",
            f"nonce:{bet['nonce']}",
            f"ts:{bet['ts']}",
        ]
    )


def _cents(price: str) -> int:
    """ "67123.45" -> 6712345, without ever going through a float (SPEC §2)."""
    whole, _, frac = price.partition(".")
    return int(whole) * 100 + int((frac + "00")[:2])


def pick_cell(http: Http) -> str:
    """A placeable cell (SPEC §3), from GET /api/v1/grid: the current price's row, a few columns ahead."""
    status, grid = http.call("GET", "/api/v1/grid")
    now = int(time.time())
    if status == 200 and isinstance(grid, dict) and grid.get("price") and grid.get("settings"):
        s = grid["settings"]
        col = int(s["column_seconds"])
        step_cents = _cents(s["price_step"])
        price_cents = _cents(grid["price"])
        lead = int(s["min_lead_columns"]) + 1
        start = (int(grid.get("server_time", now * 1000)) // 1000) // col * col + lead * col
        return f"{start}:{price_cents // step_cents}"
    # no grid yet: a cell three 5-second columns ahead near the SPEC's example row
    return f"{now - now % 5 + 15}:6712"


def run_flow(
    url: str,
    domain: str,
    chain_id: int,
    *,
    key: str | None = None,
    insecure: bool = False,
    log=print,
) -> dict[str, Any]:
    """Log in, check the session, send one signed bet and its retry, log out. Returns what happened."""
    http = Http(url, insecure)
    wallet = Account.from_key(key) if key else Account.create()
    session_key = Account.create()  # lives only in this client's memory; signs taps without popups
    out: dict[str, Any] = {"wallet": wallet.address, "session_key": session_key.address}

    status, body = http.call("GET", "/api/v1/auth/nonce")
    assert status == 200, (status, body)
    nonce = body["nonce"]
    log(f"nonce        {nonce}")

    message = siwe_message(domain, wallet.address, f"https://{domain}", chain_id, nonce, session_key.address)
    status, body = http.call(
        "POST", "/api/v1/auth/login", {"message": message, "signature": personal_sign(wallet, message)}
    )
    assert status == 200, (status, body)
    token = body["token"]
    out["login"] = body
    log(f"login        200 address={body['address']} session_key={body['session_key']}")
    assert body["address"] == wallet.address and body["session_key"] == session_key.address

    status, body = http.call("GET", "/api/v1/auth/session", token=token)
    assert status == 200, (status, body)
    log(f"session      200 {body}")

    # Optional: fund the account where the server runs in dev mode (mock deposits).
    status, body = http.call("POST", "/api/v1/deposits", {"amount": "100"}, token=token)
    log(f"deposit      {status} {body}")

    bet = {
        "cell": pick_cell(http),
        "stake": "1",
        "min_multiplier": "1.01",
        "nonce": secrets.token_hex(8),
        "ts": int(time.time() * 1000),
    }
    bet["signature"] = personal_sign(session_key, bet_text(domain, chain_id, wallet.address, bet))
    status, body = http.call("POST", "/api/v1/bets", bet, token=token)
    out["bet"] = (status, body)
    log(f"signed bet   {status} {body}")
    # A retry of the very same request must return the same bet, not place a second one.
    status2, body2 = http.call("POST", "/api/v1/bets", bet, token=token)
    out["bet_retry"] = (status2, body2)
    log(f"retry        {status2} {body2}")

    # The same request signed by a key that is not this session's must be refused (401).
    forged = dict(bet, nonce=secrets.token_hex(8))
    forged["signature"] = personal_sign(Account.create(), bet_text(domain, chain_id, wallet.address, forged))
    status, body = http.call("POST", "/api/v1/bets", forged, token=token)
    out["forged"] = (status, body)
    log(f"forged bet   {status} {body}")

    status, body = http.call("POST", "/api/v1/auth/logout", token=token)
    assert status == 200, (status, body)
    status, body = http.call("GET", "/api/v1/auth/session", token=token)
    assert status == 401, (status, body)
    log(f"logout       200; the token now gets {status} {body['error']['code']}")
    out["token"] = token
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    p.add_argument("--domain", default="localhost:8443", help="the server's TAP_SIWE_DOMAIN")
    p.add_argument("--chain-id", type=int, default=1, help="the server's TAP_CHAIN_ID")
    p.add_argument("--key", help="wallet private key (hex); default: a new random wallet")
    p.add_argument("--insecure", action="store_true", help="accept a self-signed TLS certificate")
    args = p.parse_args(argv)
    try:
        out = run_flow(args.url, args.domain, args.chain_id, key=args.key, insecure=args.insecure)
    except AssertionError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    (bet_status, bet), (retry_status, retry) = out["bet"], out["bet_retry"]
    ok = (
        bet_status == 202
        and retry_status == 202
        and retry.get("bet_id") == bet.get("bet_id")
        and out["forged"][0] == 401
    )
    print("OK" if ok else "UNEXPECTED bet responses")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
