"""Every Redis key and channel name of the app, in one place (Redis is one instance, never a cluster).

| key | holds | written by |
|---|---|---|
| `tap:sess:<sha256 of token>` | a session: address, session key, user id, expiry (24 h TTL) | login |
| `tap:auth:nonce:<nonce>` | a SIWE login nonce (5 min, single use) | GET /auth/nonce |
| `tap:bn:<address>:<nonce>` | a signed bet's nonce: `<fingerprint>|<bet id>` (90 s) | the bet claim |
| `tap:cell:<address>:<cell>` | the claim on a cell: the bet id (until the column ends) | the bet claim |
| `tap:bet:<bet id>` | a bet not yet in SQLite: pending or rejected, as JSON | the claim, the notifier |
| `tap:pending` | sorted set of pending bet ids by placement time | the claim, the reconciler |
| `tap:worker:<instance>` | a worker process's heartbeat (a few seconds' TTL) | the bet reconciler |
| `tap:rl:<bucket>:<who>:<window>` | rate-limit counters (ip, addr, auth) | authenticated requests, taps |
| `tap:ev:<address>` | a trader's last ~1,000 events, with ids (Stream, 24 h) | publishers on `tap:user:*` |
| `tap:price:last`, `tap:prices` | the last tick; 7 days of ticks (sorted set) | the feed's lease holder |
| `tap:lease:feed`, `tap:lease:resolver` | singleton leases (one publisher, one resolver) | the workers |
| `tap:exp:<t_start>` | open potential payout: field `t` the column's, `<row>` each cell's | the claim (1) |
| `tap:expb:<t_start>` | bets counted there: bet id → `<row>:<payout>` (released once) | the claim (1) |
| `tap:exp:cols` | sorted set of columns with exposure keys (score = t_start) | the claim (1) |
| `tap:betting:halt` | present while an operator halts betting: JSON reason, by, at | admin betting route |
| `tap:integrity:last`, `:lock` | the console's last integrity-check (JSON); one run at a time | admin route |
| `tap:state:known` | run_id and time of the bet state's rebuild (absent: taps refused) | app.bets.recovery |
| `tap:state:rebuild` | the worker rebuilding the bet state (a lock, extended per step) | app.bets.recovery |

(1) released by a rejection, the reconciler, an abandoned claim (per bet) and settlement (per column).

Channels: `tap:price` (ticks), `tap:public` (pre-serialised JSON for every socket), `tap:user:<address>`
(a trader's `bet:*`/`balance` events, each with its id; several, one per line, in one message),
`tap:control` (messages for the workers, never relayed: a session ended, betting halted or reopened).
"""

from __future__ import annotations

import orjson

SESSION_KEY_PREFIX = "tap:sess:"
LOGIN_NONCE_PREFIX = "tap:auth:nonce:"
BET_NONCE_PREFIX = "tap:bn:"
RATE_LIMIT_PREFIX = "tap:rl:"
PENDING_INDEX = "tap:pending"
PRICE_LAST_KEY = "tap:price:last"
PRICE_HISTORY_KEY = "tap:prices"
FEED_LEASE_KEY = "tap:lease:feed"
RESOLVER_LEASE_KEY = "tap:lease:resolver"
EXPOSURE_COLUMNS = "tap:exp:cols"
BETTING_HALT_KEY = "tap:betting:halt"
BETTING_KNOWN_KEY = "tap:betting:known"  # set once this Redis holds the switch's state (app.bets.halt)
INTEGRITY_LAST_KEY = "tap:integrity:last"
INTEGRITY_LOCK_KEY = "tap:integrity:lock"
# Set once the bet state (exposure, cell claims, nonces) is known to this Redis server (app.bets.recovery)
REDIS_STATE_KEY = "tap:state:known"
REBUILD_LOCK_KEY = "tap:state:rebuild"  # held by the one worker rebuilding that state (app.bets.recovery)

CHANNEL_PRICE = "tap:price"
CHANNEL_PUBLIC = "tap:public"  # pre-serialised JSON for every websocket (grid, status from other workers)
CHANNEL_CONTROL = "tap:control"  # JSON for the workers themselves, never relayed: e.g. a session ended
USER_PREFIX = "tap:user:"
USER_PATTERN = USER_PREFIX + "*"
EVENTS_PREFIX = "tap:ev:"  # + address: a Stream of that trader's events, each with the id it was sent with


def nonce_key(address: str, nonce: str) -> str:
    """A signed request's nonce (SPEC §6: unused for this address, `SET NX`, 90 s)."""
    return f"{BET_NONCE_PREFIX}{address.lower()}:{nonce}"


def cell_key(address: str, cell: str) -> str:
    return f"tap:cell:{address}:{cell}"


def bet_key(bet_id: str) -> str:
    return f"tap:bet:{bet_id}"


def exposure_key(t_start: int) -> str:
    """A column's open potential payout: field ``t`` the column's total, ``<row>`` each cell's."""
    return f"tap:exp:{t_start}"


def exposure_bets_key(t_start: int) -> str:
    """The bets counted in `exposure_key(t_start)`: bet id → ``<row>:<payout>`` (releases are idempotent)."""
    return f"tap:expb:{t_start}"


def heartbeat_key(instance: str) -> str:
    return f"tap:worker:{instance}"


def user_channel(address: str) -> str:
    """The channel that reaches `address`'s websockets (publishers send the exact JSON text)."""
    return USER_PREFIX + address.lower()


def events_key(address: str) -> str:
    """The trader's recent `bet:*`/`balance` events (a Redis Stream, bounded), for `resume`."""
    return EVENTS_PREFIX + address.lower()


def session_ended_message(session_key: str) -> bytes:
    """Published on CHANNEL_CONTROL at logout: every worker closes that session's sockets."""
    return orjson.dumps({"type": "session_ended", "session": session_key})


def betting_message(open_: bool, reason: str | None) -> bytes:
    """Published on CHANNEL_CONTROL when an operator halts or reopens betting: every worker updates
    its switch at once and tells its websockets (`status`)."""
    return orjson.dumps({"type": "betting", "open": open_, "reason": reason})


def betting_change(data: bytes) -> tuple[bool, str | None] | None:
    """(open, reason) of a `betting` control message, or None for anything else."""
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if isinstance(msg, dict) and msg.get("type") == "betting" and isinstance(msg.get("open"), bool):
        reason = msg.get("reason")
        return msg["open"], reason if isinstance(reason, str) else None
    return None


def ended_session(data: bytes) -> str | None:
    """The session key of a `session_ended` control message, or None for anything else."""
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if isinstance(msg, dict) and msg.get("type") == "session_ended" and isinstance(msg.get("session"), str):
        return msg["session"]
    return None
