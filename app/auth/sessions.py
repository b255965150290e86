"""Sessions and login nonces in Redis (SPEC §5).

- Login nonce: ``tap:auth:nonce:<nonce>`` = "1", 5-minute TTL, deleted by the login that uses it
  (``DEL`` returning 1 is the atomic single use).
- Session: ``tap:sess:<sha256(token) hex>`` = ``<address>|<session key or empty>|<user id>|<expires ms>``,
  TTL up to 24 h. Only a hash of the bearer token is stored, so a Redis dump or ``MONITOR`` leaks no
  usable token. The value starts with the 42-character lowercase address on purpose: the Lua lookup
  in `app.auth.ratelimit` reads it to count the per-address rate limit in the same round trip.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import string
from dataclasses import dataclass
from typing import cast

import redis

from app.auth import errors as E
from app.auth.signatures import to_checksum_address
from app.keys import LOGIN_NONCE_PREFIX, SESSION_KEY_PREFIX

log = logging.getLogger(__name__)

SESSION_TTL_MS = 24 * 3600 * 1000
LOGIN_NONCE_TTL_S = 300
LOGIN_NONCE_LEN = 24  # base62: ~143 bits

TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
_BEARER_RE = re.compile(r"Bearer ([A-Za-z0-9_-]{43})", re.IGNORECASE)  # the scheme is case-insensitive
_ALNUM = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class Session:
    """An authenticated session. Addresses are lowercase 0x hex (checksummed only on the wire)."""

    address: str
    session_key: str | None
    user_id: int
    expires_at: int  # Unix ms
    key: str  # the Redis key (hash of the token), for logout

    @property
    def checksum_address(self) -> str:
        return to_checksum_address(self.address)

    @property
    def checksum_session_key(self) -> str | None:
        return to_checksum_address(self.session_key) if self.session_key else None

    def to_json(self) -> dict:
        return {
            "address": self.checksum_address,
            "session_key": self.checksum_session_key,
            "expires_at": self.expires_at,
        }


def session_key_for(token: str) -> str:
    return SESSION_KEY_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def encode_session(address: str, session_key: str | None, user_id: int, expires_at: int) -> bytes:
    return f"{address.lower()}|{(session_key or '').lower()}|{user_id}|{expires_at}".encode()


def decode_session(raw: bytes, key: str, now_ms: int) -> Session | None:
    """The session stored at `key`, or None if it is unreadable or past its expiry."""
    try:
        address, skey, user_id, expires_at = raw.decode().split("|")
        session = Session(address, skey or None, int(user_id), int(expires_at), key)
    except (ValueError, UnicodeDecodeError):
        log.warning("unreadable session value at %s; treating it as no session", key[:24])
        return None
    if session.expires_at <= now_ms:
        return None
    return session


def parse_bearer(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; 401 on anything else."""
    if header is None:
        raise E.unauthorized(E.MISSING_AUTHORIZATION, "Send Authorization: Bearer <token> from /auth/login.")
    m = _BEARER_RE.fullmatch(header.strip())
    if m is None:
        raise E.unauthorized(
            E.INVALID_AUTHORIZATION, "Authorization must be 'Bearer ' followed by the 43-character token."
        )
    return m.group(1)


def create_session(
    r: redis.Redis,
    *,
    address: str,
    session_key: str | None,
    user_id: int,
    now_ms: int,
    expires_at: int,
) -> tuple[str, Session]:
    """Store a new session; return (bearer token, session). The token itself is never stored."""
    token = secrets.token_urlsafe(32)
    key = session_key_for(token)
    r.set(key, encode_session(address, session_key, user_id, expires_at), px=max(1, expires_at - now_ms))
    return token, Session(
        address.lower(), session_key.lower() if session_key else None, user_id, expires_at, key
    )


def lookup_session(r: redis.Redis, token: str, now_ms: int) -> Session | None:
    """One GET: the session for `token`, or None. (Routes use the rate-counting lookup instead.)"""
    key = session_key_for(token)
    raw = cast("bytes | None", r.get(key))  # the client returns bytes (decode_responses is off)
    return None if raw is None else decode_session(raw, key, now_ms)


def end_session(r: redis.Redis, session: Session) -> bool:
    return bool(r.delete(session.key))


def issue_login_nonce(r: redis.Redis) -> str:
    """A fresh single-use login nonce (24 base62 characters), valid for 5 minutes."""
    nonce = "".join(secrets.choice(_ALNUM) for _ in range(LOGIN_NONCE_LEN))
    r.set(LOGIN_NONCE_PREFIX + nonce, b"1", ex=LOGIN_NONCE_TTL_S)
    return nonce


def consume_login_nonce(r: redis.Redis, nonce: str) -> bool:
    """Use a login nonce up: True exactly once for a nonce this server issued less than 5 minutes ago."""
    return r.delete(LOGIN_NONCE_PREFIX + nonce) == 1


def resolve_ws_token(r: redis.Redis, token: str, now_ms: int) -> Session | None:
    """The session for a websocket ``?token=``, or None if the token is malformed, unknown or expired.

    Redis errors propagate: the caller closes the socket rather than guessing (fail closed).
    """
    if not TOKEN_RE.fullmatch(token):
        return None
    return lookup_session(r, token, now_ms)
