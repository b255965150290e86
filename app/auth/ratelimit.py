"""Rate limits in Redis, per client IP and per wallet address, answered with 429 + Retry-After.

nginx's ``limit_req`` stays the outer layer (per IP, coarse); these are the application's own:

- ``auth`` bucket: nonce + login requests per IP per minute (`TAP_RATE_AUTH_PER_IP`).
- authenticated requests per IP per second (`TAP_RATE_PER_IP`) and per wallet per second
  (`TAP_RATE_PER_ADDRESS`). Both are counted by the *same* Lua call that looks the session up, so an
  authenticated request costs one Redis round trip, not three.

Fixed windows (``INCR`` + ``PEXPIRE`` on the first hit): cheap and exact enough; a burst can reach
twice the limit across a window boundary, which nginx's leaky bucket smooths in front.

The client IP is ``X-Real-IP`` only when the TCP peer is loopback (our nginx); from anywhere else the
header is ignored, so a client cannot pick its own rate-limit bucket.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import redis
from flask import request

from app.auth import errors as E
from app.auth.sessions import Session, decode_session, session_key_for
from app.errors import RateLimited
from app.keys import RATE_LIMIT_PREFIX
from app.storage.redis_batch import ScriptBatcher, batched

# KEYS[1] session key, KEYS[2] per-IP counter ('' = off).
# ARGV[1] per-address counter prefix ('' = off), ARGV[2] window suffix, ARGV[3] counter TTL in ms.
# Returns {session value or nil, ip count, address count}.
# The per-address key is derived from the session value inside the script, so this script suits a
# single Redis (as deployed), not Redis Cluster.
_LOOKUP_LUA = """
local ipn = 0
if KEYS[2] ~= '' then
  ipn = redis.call('INCR', KEYS[2])
  if ipn == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
end
local s = redis.call('GET', KEYS[1])
if not s then return {false, ipn, 0} end
local an = 0
if ARGV[1] ~= '' then
  local k = ARGV[1] .. string.sub(s, 1, 42) .. ARGV[2]
  an = redis.call('INCR', k)
  if an == 1 then redis.call('PEXPIRE', k, ARGV[3]) end
end
return {s, ipn, an}
"""


@dataclass(frozen=True, slots=True)
class Limits:
    auth_per_ip_per_min: int  # 0 = off
    per_ip_per_s: int  # 0 = off
    per_address_per_s: int  # 0 = off


def client_ip() -> str:
    """The client's IP: X-Real-IP when the TCP peer is loopback (nginx), else the peer address."""
    peer = request.remote_addr or ""
    if _is_loopback(peer):
        real = request.headers.get("X-Real-IP")
        if real:
            try:
                return str(ipaddress.ip_address(real.strip()))
            except ValueError:
                pass
    return peer or "unknown"


def _is_loopback(peer: str) -> bool:
    if peer.startswith("127.") or peer == "::1":
        return True
    if ":" in peer:
        try:
            ip = ipaddress.ip_address(peer)
        except ValueError:
            return False
        mapped = getattr(ip, "ipv4_mapped", None)
        return ip.is_loopback or (mapped is not None and mapped.is_loopback)
    return False


def _window(now_ms: int, window_s: int) -> tuple[str, int, int]:
    """(key suffix, seconds until the window ends, counter TTL ms) for a fixed window."""
    size = window_s * 1000
    index = now_ms // size
    retry_after = -(-((index + 1) * size - now_ms) // 1000)
    return f":{index}", max(1, retry_after), size + 1000


# KEYS[1] the counter, ARGV[1] its TTL in ms. One script call, so a tap's count can join the batch of
# concurrent taps' calls (app.storage.redis_batch) instead of costing its own round trip.
_HIT_LUA = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class Counter:
    """Fixed-window counters (`hit`) in one script call, batched with concurrent calls if given a batcher.

    The same keys as the session lookup's per-address counter: a wallet's taps and its HTTP requests
    share one limit (`TAP_RATE_PER_ADDRESS`), whichever transport and worker they come through.
    """

    def __init__(self, r: redis.Redis, batch: ScriptBatcher | None = None) -> None:
        self._script = batched(r.register_script(_HIT_LUA), batch)

    def hit(self, bucket: str, who: str, *, limit: int, window_s: int, now_ms: int) -> None:
        """Count one request of `who` in `bucket`; 429 rate_limited past `limit` per window. 0 = off."""
        if limit <= 0:
            return
        suffix, retry_after, ttl_ms = _window(now_ms, window_s)
        count = self._script(keys=[f"{RATE_LIMIT_PREFIX}{bucket}:{who}{suffix}"], args=[ttl_ms])
        if count > limit:
            raise E.rate_limited(retry_after, "from this address" if bucket != "auth" else "to sign in")


def hit(r: redis.Redis, bucket: str, who: str, *, limit: int, window_s: int, now_ms: int) -> None:
    """Count one request of `who` in `bucket`; 429 rate_limited past `limit` per window. 0 = off."""
    if limit <= 0:
        return
    suffix, retry_after, ttl_ms = _window(now_ms, window_s)
    key = f"{RATE_LIMIT_PREFIX}{bucket}:{who}{suffix}"
    pipe = r.pipeline(transaction=False)
    pipe.incr(key)
    pipe.pexpire(key, ttl_ms, nx=True)
    count, _ = pipe.execute()
    if count > limit:
        raise E.rate_limited(retry_after, "from this address" if bucket != "auth" else "to sign in")


class SessionLookup:
    """Session lookup + per-IP + per-address counting in one Redis round trip (a Lua script)."""

    def __init__(self, r: redis.Redis, limits: Limits, batch: ScriptBatcher | None = None) -> None:
        self.limits = limits
        self._script = batched(r.register_script(_LOOKUP_LUA), batch)

    def __call__(self, token: str, ip: str, now_ms: int) -> Session:
        """The session for `token`; raises 429 rate_limited or 401 invalid_session."""
        session, limited = self.lookup(token, ip, now_ms)
        if limited is not None:
            raise limited
        return session

    def lookup(self, token: str, ip: str, now_ms: int) -> tuple[Session, RateLimited | None]:
        """The session for `token` and the 429 its request has earned (per IP, then per wallet), if any,
        for a caller that must answer some requests despite it: a retry of an accepted bet gets its
        bet (SPEC §6), which a rate limit is no reason to refuse. Raises 401 invalid_session, or the
        per-IP 429 when the token names no session (that limit comes first, as in `__call__`)."""
        lim = self.limits
        suffix, retry_after, ttl_ms = _window(now_ms, 1)
        key = session_key_for(token)
        ip_key = f"{RATE_LIMIT_PREFIX}ip:{ip}{suffix}" if lim.per_ip_per_s > 0 else ""
        addr_prefix = f"{RATE_LIMIT_PREFIX}addr:" if lim.per_address_per_s > 0 else ""
        raw, ip_count, addr_count = self._script(keys=[key, ip_key], args=[addr_prefix, suffix, ttl_ms])
        limited = None
        if ip_key and ip_count > lim.per_ip_per_s:
            limited = E.rate_limited(retry_after, "from this IP")
        session = None if raw is None else decode_session(raw, key, now_ms)
        if session is None:
            if limited is not None:
                raise limited
            raise E.unauthorized(
                E.INVALID_SESSION, "The session is unknown, expired or logged out; sign in again."
            )
        if limited is None and addr_prefix and addr_count > lim.per_address_per_s:
            limited = E.rate_limited(retry_after, "for this wallet")
        return session, limited
