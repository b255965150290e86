"""The reference client's texts, built from docs/API.md (and EIP-4361) by hand, never with the server's
own code: the SIWE message a wallet signs at login, and the exact text a bet signature covers.
Used by the tests (`traders`, `auth`) and the load generators (`loadtest/lib/signing.py`) alike."""

from __future__ import annotations

import datetime as dt
import time

ISSUED_FMT = "%Y-%m-%dT%H:%M:%S.%f"


def iso(ms: int) -> str:
    """RFC 3339 with milliseconds and Z, like JavaScript's Date.toISOString()."""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime(ISSUED_FMT)[:-3] + "Z"


def siwe_message(
    domain: str,
    address: str,
    nonce: str,
    *,
    chain_id: int = 1,
    now_ms: int | None = None,
    uri: str | None = None,
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
    uri = f"https://{domain}" if uri is None else uri
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


def bet_text(
    domain: str, chain_id: int, address: str, cell: str, stake: str, min_multiplier: str, nonce: str, ts: int
) -> str:
    """The exact text a bet signature covers: lines joined by LF, no trailing newline, values as sent,
    the wallet address in lowercase hex."""
    return "\n".join(
        [
            "tap-trading:bet",
            f"domain:{domain}",
            f"chain-id:{chain_id}",
            f"address:{address.lower()}",
            f"cell:{cell}",
            f"stake:{stake}",
            f"min-multiplier:{min_multiplier}",
            f"nonce:{nonce}",
            f"ts:{ts}",
        ]
    )
