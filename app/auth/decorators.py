"""`login_required`, `admin_required` and `current_session` for routes of any module.

    from app.auth.decorators import login_required, current_session

    @bp.post("/bets")
    @login_required
    def place_bet():
        session = current_session()   # app.auth.sessions.Session: address, session_key, user_id, …

Authentication is one Redis round trip (session lookup + per-IP and per-address rate counting, see
`app.auth.ratelimit`). With Redis unreachable or misbehaving the request is refused with 503
``dependency_unavailable``: nothing is let through unchecked (fail closed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

import redis
from flask import g, request

from app.auth import errors as E
from app.auth.ratelimit import client_ip
from app.auth.sessions import Session, parse_bearer, resolve_ws_token
from app.auth.state import auth_state
from app.errors import RateLimited
from app.services import Services, services

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

# Set on decorated views; app.http.openapi reads it to mark operations with bearer security.
AUTH_ATTR = "_tap_auth"


@contextmanager
def redis_guard() -> Iterator[None]:
    """Turn any Redis failure into 503 dependency_unavailable (the app handler covers connection
    errors and timeouts; this also covers LOADING, READONLY, script errors and the like)."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError):
        raise
    except redis.RedisError as exc:
        log.warning("redis error on an auth path: %s", exc)
        raise E.dependency_unavailable() from None


def authenticate() -> Session:
    """Check the request's bearer token (and rate limits); store and return the session."""
    token = parse_bearer(request.headers.get("Authorization"))
    state = auth_state()
    with redis_guard():
        session = state.lookup(token, client_ip(), services().now_ms())
    g.tap_session = session
    return session


def authenticate_despite_limits() -> tuple[Session, RateLimited | None]:
    """`authenticate`, except that a valid session over its rate limit is returned with that 429 instead
    of raising it: for `POST /api/v1/bets`, whose retry of an accepted nonce gets its bet whatever the
    load (SPEC §6; app.bets.placement decides). A bad token is refused as `authenticate` refuses it."""
    token = parse_bearer(request.headers.get("Authorization"))
    state = auth_state()
    with redis_guard():
        session, limited = state.lookup.lookup(token, client_ip(), services().now_ms())
    g.tap_session = session
    return session, limited


def current_session() -> Session:
    """The session of this request; only valid inside a `login_required`/`admin_required` view."""
    session = g.get("tap_session")
    if session is None:
        raise RuntimeError("current_session() outside a login_required view")
    return session


def login_required(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        authenticate()
        return fn(*args, **kwargs)

    setattr(wrapper, AUTH_ATTR, "session")
    return wrapper  # type: ignore[return-value]


def authenticates_itself(fn: F) -> F:
    """For a view that calls `authenticate()` itself, after checks SPEC orders before the session
    (`POST /api/v1/bets`: the body's schema first, SPEC §6). Marks it as `login_required` does, so
    that app.http.openapi documents its bearer security; checks nothing by itself."""
    setattr(fn, AUTH_ATTR, "session")
    return fn


def admin_required(fn: F) -> F:
    """A session whose wallet is in TAP_ADMIN_ADDRESSES; any other session gets 403 forbidden."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        session = authenticate()
        if session.address not in services().settings.admin_addresses:
            raise E.forbidden()
        return fn(*args, **kwargs)

    setattr(wrapper, AUTH_ATTR, "admin")
    return wrapper  # type: ignore[return-value]


class WebsocketRefused(Exception):
    """A websocket ``?token=`` that cannot be accepted; close the socket with `close_code`/`reason`."""

    def __init__(self, close_code: int, reason: str) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason


WS_CLOSE_INVALID_SESSION = 4401  # application range 4000-4999, mirrors HTTP 401
WS_CLOSE_TRY_AGAIN_LATER = 1013  # RFC 6455 registry: "Try Again Later"


def websocket_session() -> Session | None:
    """The session of ``/ws?token=<token>``, or None when no token is given (public streams).

    A token that is given but malformed, unknown or expired raises `WebsocketRefused` (close code 4401,
    reason ``invalid_session``) instead of silently downgrading to a public stream: a client that
    believes it is authenticated would otherwise wait forever for its bet events. With Redis down it
    raises close code 1013 ``dependency_unavailable`` (fail closed); the client reconnects later.
    A client may instead send the token in a first message (`app.realtime.taps`), so that no token
    ever sits in a URL.
    """
    token = request.args.get("token")
    return None if not token else websocket_token_session(services(), token)


def websocket_token_session(svc: Services, token: str) -> Session:
    """The session of a websocket token (from the URL or an `auth` message), or `WebsocketRefused`."""
    try:
        session = resolve_ws_token(svc.redis, token, svc.now_ms())
    except redis.RedisError as exc:
        log.warning("redis unavailable for a websocket token: %s", exc)
        raise WebsocketRefused(WS_CLOSE_TRY_AGAIN_LATER, E.DEPENDENCY_UNAVAILABLE) from None
    if session is None:
        raise WebsocketRefused(WS_CLOSE_INVALID_SESSION, E.INVALID_SESSION)
    return session


def websocket_address() -> str | None:
    """The lowercase wallet of ``/ws?token=``, or None without a token (see `websocket_session`)."""
    session = websocket_session()
    return None if session is None else session.address
