"""The single Redis round trip of a bet: claim its nonce, claim its cell, record it as pending.

One Lua script, so the three happen atomically and cost one round trip on the hot path:

- ``tap:bn:<address>:<nonce>`` = ``<fingerprint>|<bet id>`` for 90 s (ADR-007), taken only when the bet
  is accepted. A request refused by a check leaves no trace, so the same signed body can be retried
  (e.g. after a 503 `betting_suspended` and its Retry-After) and is judged afresh; a nonce that was
  accepted once answers every retry with that same bet.
- ``tap:cell:<address>:<cell>`` = bet id, until the column has ended: the fast answer to a second tap
  on the same cell (the database's UNIQUE constraint is the final word). Freed if the bet is rejected.
- ``tap:bet:<bet id>`` = the pending bet as JSON, so `GET /bets/<id>` and a retry can see it before
  the batch commits.
"""

from __future__ import annotations

from enum import IntEnum
from typing import cast

import redis

from app.auth.signatures import NONCE_TTL_S, nonce_key

_CLAIM = """
local old = redis.call('GET', KEYS[1])
if old then return {0, old} end
if ARGV[3] == '0' then return {1, ''} end
local owner = redis.call('GET', KEYS[2])
if owner then return {2, owner} end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[5])
redis.call('SET', KEYS[3], ARGV[6], 'EX', ARGV[7])
return {3, ''}
"""

PENDING_TTL_S = 24 * 3600


class Claim(IntEnum):
    NONCE_USED = 0  # detail: "<fingerprint>|<bet id>" stored by the first request
    REFUSED = 1  # nonce unused and nothing stored: an earlier check refused the bet
    CELL_TAKEN = 2  # detail: the bet id holding the cell
    ACCEPTED = 3


def cell_key(address: str, cell: str) -> str:
    return f"tap:cell:{address}:{cell}"


def bet_key(bet_id: str) -> str:
    return f"tap:bet:{bet_id}"


class BetClaims:
    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self._script = r.register_script(_CLAIM)

    def claim(
        self,
        *,
        address: str,
        nonce: str,
        fingerprint: str,
        bet_id: str,
        cell: str,
        proceed: bool,
        cell_ttl_s: int,
        pending_json: bytes,
    ) -> tuple[Claim, str]:
        """Run the claim script. With `proceed` False it only looks the nonce up (a check already failed)."""
        res = self._script(
            keys=[nonce_key(address, nonce), cell_key(address, cell), bet_key(bet_id)],
            args=[
                f"{fingerprint}|{bet_id}",
                NONCE_TTL_S,
                "1" if proceed else "0",
                bet_id,
                max(1, cell_ttl_s),
                pending_json,
                PENDING_TTL_S,
            ],
        )
        detail = res[1].decode() if isinstance(res[1], bytes) else str(res[1])
        return Claim(int(res[0])), detail

    def release(self, *, address: str, nonce: str, cell: str, bet_id: str) -> None:
        """Undo an accepted claim whose bet could not be queued (overload): the client may retry."""
        self.r.delete(nonce_key(address, nonce), cell_key(address, cell), bet_key(bet_id))

    def pending(self, bet_id: str) -> bytes | None:
        return cast("bytes | None", self.r.get(bet_key(bet_id)))  # decode_responses is off: bytes
