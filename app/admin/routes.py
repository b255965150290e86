"""`/api/v1/admin/*`: the operator console's API (SPEC §8b halt switch, §8c console).

Every route is `admin_required`: a session whose wallet is in `TAP_ADMIN_ADDRESSES`; any other session
gets 403 `forbidden`, no session 401. Reads are cached about a second (`app.admin.console`), so an
operator (or a script) polling every second costs the trader path nothing noticeable. Shapes and
codes: docs/API.md ("Operator console").
"""

from __future__ import annotations

from typing import Any

import apsw
import gevent
from flask import Blueprint, Response, current_app, jsonify, request

from app.admin import schemas as _schemas  # noqa: F401 - registers the schemas the docstrings name
from app.admin.console import Console
from app.admin.integrity import AlreadyRunning, IntegrityRunner
from app.admin.store import record_betting_action
from app.auth.decorators import admin_required, current_session
from app.auth.ratelimit import client_ip
from app.errors import ApiError, BadRequest, Conflict
from app.http.params import whole_number
from app.services import Services, services
from app.storage.writes import OutcomeUnknown

bp = Blueprint("console", __name__, url_prefix="/api/v1/admin")

EXT_KEY = "tap.admin"
REASON_MAX = 200
WINDOW_DEFAULT_S = 900
WINDOW_MIN_S, WINDOW_MAX_S = 10, 900
RECORD_TIMEOUT_S = 5.0


class AdminState:
    def __init__(self, svc: Services) -> None:
        self.console = Console(svc)
        self.integrity = IntegrityRunner(svc)


def admin_state() -> AdminState:
    """This app's console and integrity runner (built by `app.admin.init_app`)."""
    return current_app.extensions[EXT_KEY]


def _window() -> int:
    raw = request.args.get("window")
    if raw is None:
        return WINDOW_DEFAULT_S
    window = whole_number(raw)
    if window is None or not WINDOW_MIN_S <= window <= WINDOW_MAX_S:
        raise BadRequest(
            f"window must be a whole number of seconds from {WINDOW_MIN_S} to {WINDOW_MAX_S}.",
            code="invalid_window",
        )
    return window


def _no_store(resp: Response) -> Response:
    resp.headers["Cache-Control"] = "no-store"
    return resp


# ---- the halt switch (SPEC §8b) -------------------------------------------------------------------


@bp.get("/betting")
@admin_required
def betting_state() -> Response:
    """Whether betting is open, the operator's halt (reason, by, at) and the recent actions.
    ---
    get:
      tags: [admin]
      summary: Betting open or halted, and the last 50 halts/reopens (newest first)
      responses:
        200:
          description: The switch, the breaker and the actions log
          content: {application/json: {schema: app.admin.schemas.BettingStateSchema}}
        401: Unauthorized
        403: Forbidden
        503: Unavailable
    """
    return _no_store(jsonify(admin_state().console.betting()))


@bp.post("/betting")
@admin_required
def set_betting() -> Response:
    """Halt all betting (``{"open": false, "reason": "…"}``) or reopen it (``{"open": true}``).
    ---
    post:
      tags: [admin]
      summary: Halt or reopen betting for everyone
      description: >
        Takes effect at once on every worker: each tap, over HTTP or the websocket, is refused with
        503 `betting_halted` (the reason in the message and in `details.reason`, `Retry-After: 30`),
        and every websocket gets `status` with `betting: false`, `halted: true` and the reason. The
        action is recorded with the operator's address, client address and time (`recorded` says
        whether that SQLite write succeeded; the switch itself is set first and does not depend on it).
      requestBody:
        required: true
        content: {application/json: {schema: app.admin.schemas.BettingRequestSchema}}
      responses:
        200:
          description: The new state and the actions log
          content: {application/json: {schema: app.admin.schemas.BettingStateSchema}}
        400: BadRequest
        401: Unauthorized
        403: Forbidden
        503: Unavailable
    """
    svc = services()
    body = request.get_json()
    open_, reason = _parse_betting(body)
    session = current_session()
    now_ms = svc.now_ms()
    svc.betting.set(svc.redis, open_=open_, reason=reason, by=session.address, at=now_ms)
    recorded = True
    try:
        svc.writes.call(
            record_betting_action(
                at=now_ms,
                address=session.address,
                action="reopen" if open_ else "halt",
                reason=reason,
                ip=client_ip(),
            ),
            timeout=RECORD_TIMEOUT_S,
            priority=True,
        )
    except (ApiError, OutcomeUnknown, gevent.Timeout, apsw.Error) as exc:
        recorded = False
        current_app.logger.error(
            "betting %s by %s (%s) is in effect but was not recorded: %r",
            "reopened" if open_ else "halted",
            session.address,
            reason,
            exc,
        )
    current_app.logger.warning(
        "betting %s by %s: %s", "reopened" if open_ else "HALTED", session.address, reason or "-"
    )
    console = admin_state().console
    console.actions.expire()  # show this action now, not after the cache period
    return _no_store(jsonify(console.betting() | {"recorded": recorded}))


def _parse_betting(body: Any) -> tuple[bool, str | None]:
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.", code="invalid_json")
    unknown = sorted(set(body) - {"open", "reason"})
    if unknown:
        raise BadRequest(f"Unknown field {unknown[0][:64]!r}.", code="invalid_request")
    open_ = body.get("open")
    if not isinstance(open_, bool):
        raise BadRequest('"open" must be true or false.', code="invalid_request")
    reason = body.get("reason")
    if reason is not None:
        if not isinstance(reason, str) or not 1 <= len(reason.strip()) <= REASON_MAX:
            raise BadRequest(f'"reason" must be text of 1 to {REASON_MAX} characters.', code="invalid_reason")
        if any(ord(c) < 32 or ord(c) == 127 for c in reason):  # traders see it; SQLite's CHECK stops at NUL
            raise BadRequest('"reason" must not contain control characters.', code="invalid_reason")
        reason = reason.strip()
    if not open_ and reason is None:
        raise BadRequest(
            'Halting needs a "reason" (1 to 200 characters): traders see it.', code="invalid_reason"
        )
    return open_, reason


# ---- the console's panels (SPEC §8c) --------------------------------------------------------------


@bp.get("/overview")
@admin_required
def overview() -> Response:
    """Every panel of the console in one answer (what the console polls each second).
    ---
    get:
      tags: [admin]
      summary: Feed, breaker, betting, writer, taps, websockets, resolver, exposure, house result, weeks
      parameters:
        - name: window
          in: query
          description: Seconds of per-second series (taps, writer, feed age per source)
          schema: {type: integer, minimum: 10, maximum: 900, default: 900}
      responses:
        200:
          description: The overview
          content: {application/json: {schema: app.admin.schemas.OverviewSchema}}
        400: BadRequest
        401: Unauthorized
        403: Forbidden
        503: Unavailable
    """
    state = admin_state()
    return _no_store(jsonify(state.console.overview(_window(), state.integrity.last())))


@bp.get("/feed")
@admin_required
def feed() -> Response:
    """Feed health per source (now, and each source's age per second over the window) and the breaker's
    state with its recent transitions.
    ---
    get:
      tags: [admin]
      summary: Per source age, last price, deviation from the median; the breaker and its transitions
      parameters:
        - {name: window, in: query, schema: {type: integer, minimum: 10, maximum: 900, default: 900}}
      responses:
        200: {description: The feed panel, content: {application/json: {schema: PanelSchema}}}
        400: BadRequest
        401: Unauthorized
        403: Forbidden
    """
    return _no_store(jsonify(admin_state().console.feed(_window())))


@bp.get("/writer")
@admin_required
def writer() -> Response:
    """Write-queue depth, batch size and commit latency per second.
    ---
    get:
      tags: [admin]
      summary: The SQLite writer, per second over the window
      parameters:
        - {name: window, in: query, schema: {type: integer, minimum: 10, maximum: 900, default: 900}}
      responses:
        200: {description: The writer panel, content: {application/json: {schema: PanelSchema}}}
        400: BadRequest
        401: Unauthorized
        403: Forbidden
    """
    console = admin_state().console
    return _no_store(jsonify({**console.writer(_window()), **console.origin()}))


@bp.get("/taps")
@admin_required
def taps() -> Response:
    """Taps per second by outcome (accepted, retry, or the refusal's code) over the window.
    ---
    get:
      tags: [admin]
      summary: Taps accepted and refused per second, by code
      parameters:
        - {name: window, in: query, schema: {type: integer, minimum: 10, maximum: 900, default: 900}}
      responses:
        200: {description: The taps panel, content: {application/json: {schema: PanelSchema}}}
        400: BadRequest
        401: Unauthorized
        403: Forbidden
    """
    console = admin_state().console
    return _no_store(jsonify({**console.taps(_window()), **console.origin()}))


@bp.get("/resolver")
@admin_required
def resolver() -> Response:
    """Resolver lag: the oldest closed window that still holds open bets.
    ---
    get:
      tags: [admin]
      summary: Resolver lag
      responses:
        200: {description: The resolver panel, content: {application/json: {schema: PanelSchema}}}
        401: Unauthorized
        403: Forbidden
    """
    return _no_store(jsonify(admin_state().console.resolver.get()))


@bp.get("/exposure")
@admin_required
def exposure() -> Response:
    """Open liability per column (every cell, for a heat map) and the largest cells, against the caps.
    ---
    get:
      tags: [admin]
      summary: Open potential payout per column and cell
      responses:
        200: {description: The exposure panel, content: {application/json: {schema: PanelSchema}}}
        401: Unauthorized
        403: Forbidden
        503: Unavailable
    """
    return _no_store(jsonify(admin_state().console.exposure.get()))


@bp.get("/house")
@admin_required
def house() -> Response:
    """The house's result and the realised return to players, today and this week, vs 1 − house_edge.
    ---
    get:
      tags: [admin]
      summary: House result and realised return (today, this week, per multiplier bucket)
      responses:
        200: {description: The house panel, content: {application/json: {schema: PanelSchema}}}
        401: Unauthorized
        403: Forbidden
    """
    return _no_store(jsonify(admin_state().console.house.get()))


@bp.get("/weeks")
@admin_required
def weeks() -> Response:
    """Local week files (current, attached, eligible for archive) and archived weeks.

    Never waits for the archive target: the archived weeks are the last listing's, with its age and the
    last attempt's error; a listing older than 30 s is redone in the background (`Console.weeks`).
    ---
    get:
      tags: [admin]
      summary: Attached and archived weeks (the archived ones as of the last listing, with its age)
      responses:
        200:
          description: The weeks panel
          content: {application/json: {schema: app.admin.schemas.WeeksPanelSchema}}
        401: Unauthorized
        403: Forbidden
    """
    return _no_store(jsonify(admin_state().console.weeks()))


# ---- integrity-check ------------------------------------------------------------------------------


@bp.get("/integrity-check")
@admin_required
def integrity_state() -> Response:
    """The last integrity-check started from the console: running (with progress) or its result.
    ---
    get:
      tags: [admin]
      summary: The last integrity-check and its progress
      responses:
        200:
          description: The last run, or null
          content: {application/json: {schema: app.admin.schemas.IntegrityStateSchema}}
        401: Unauthorized
        403: Forbidden
        503: Unavailable
    """
    return _no_store(jsonify(last=admin_state().integrity.last()))


@bp.post("/integrity-check")
@admin_required
def integrity_start() -> tuple[Response, int]:
    """Start an integrity-check of every local week file in the background; returns at once (202).
    ---
    post:
      tags: [admin]
      summary: Run the integrity-check (SPEC §10) in the background
      responses:
        202:
          description: Started; poll GET /api/v1/admin/integrity-check for progress and the result
          content: {application/json: {schema: app.admin.schemas.IntegrityStateSchema}}
        401: Unauthorized
        403: Forbidden
        409: Conflict
        503: Unavailable
    """
    try:
        run = admin_state().integrity.start(current_session().address)
    except AlreadyRunning:
        raise Conflict(
            "An integrity-check is already running; its progress is at GET /api/v1/admin/integrity-check.",
            code="integrity_check_running",
        ) from None
    return _no_store(jsonify(last=run)), 202
