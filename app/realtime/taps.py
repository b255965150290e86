"""What a client sends on `/ws` (SPEC §8, §8a): `auth`, then `bet` messages — taps.

A tap is one message on the trader's open socket: no HTTP request, no session lookup (the session
is bound to the socket), no popup. The rules are those of `POST /api/v1/bets`, the same function
(`app.bets.placement.place_bet`), the same error codes and statuses; each `bet` message gets exactly
one answer, `bet:accepted` (the 202 body) or `bet:error` (the status and error of that refusal),
then `bet:confirmed` / `bet:rejected` / `bet:resolved` arrive as for any bet.

- `{"type": "auth", "token": "…"}` as a first message authenticates the socket without a token in the
  URL (nginx logs no token either way). A bad token closes the socket with 4401, as `?token=` does.
- At most `MAX_IN_FLIGHT` bets accepted but not yet confirmed per socket (429 `too_many_in_flight`);
  the per-wallet rate limit counts taps as it counts HTTP requests. Neither, nor a full write queue,
  refuses a retry of an accepted nonce: that gets its bet (`place_bet(refusal=…)`).
- `{"type": "resume", "after": "<event id>"}` replays the trader's `bet:*`/`balance` events it missed
  (each event carries an `id`; app.realtime.events), then live ones, each once; answered `resumed`.
- A malformed message (not JSON, not an object, unknown `type`, a bad `req`, over `TAP_WS_MAX_MESSAGE`)
  gets `{"type": "error", "error": {…}}`; the `MAX_MALFORMED`-th closes the socket with 1008.

Messages are handled one at a time by the socket's reader greenlet; answers go through the socket's
bounded fan-out queue, so the writer greenlet stays the only one writing to the socket.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import orjson
import redis

from app.auth.decorators import WS_CLOSE_INVALID_SESSION, WebsocketRefused, websocket_token_session
from app.auth.ratelimit import Counter, Limits
from app.auth.sessions import Session
from app.auth.signatures import to_checksum_address
from app.bets.placement import count_refusal, parse_bet, place_bet, queue_full
from app.bets.recovery import rebuilt_at
from app.errors import ApiError, RateLimited, Unauthorized, as_api_error
from app.keys import REDIS_STATE_KEY, events_key
from app.realtime.events import STREAM_TTL_MS, parse_id, with_id
from app.realtime.fanout import Client, text_frame
from app.services import Services

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 64
MAX_MALFORMED = 3
WS_CLOSE_POLICY_VIOLATION = 1008  # RFC 6455: a message that violates the server's policy
_REQ_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ENVELOPE = ("type", "req")


class TapSocket:
    """The message side of one `/ws` connection: its session, its taps in flight, its malformed count."""

    def __init__(
        self,
        svc: Services,
        client: Client,
        session: Session | None,
        limits: Limits,
        counter: Counter | None = None,
        send: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.svc = svc
        # where answers go: the socket (through Fanout.reply) unless a caller collects them (tests)
        self._deliver = send
        # the app's (auth state) in the route; a fresh one on the same batcher otherwise (tests)
        self.counter = counter or Counter(svc.redis, svc.redis_batch)
        self.client = client
        self.session = session
        self.limits = limits
        self.in_flight = 0
        self.malformed = 0
        if session is not None:
            svc.fanout.bind(client, session.address, session.key, session.expires_at)

    @property
    def expires_at_ms(self) -> int | None:
        return None if self.session is None else self.session.expires_at

    def handle(self, data: str | bytes) -> None:
        """One client message; queues at most one answer (or closes the socket)."""
        limit = self.svc.settings.ws_max_message
        # The limit is in bytes, as received: a text message arrives decoded, and a character of it
        # may have taken up to 4 of them.
        if len(data) > limit or (isinstance(data, str) and not data.isascii() and len(data.encode()) > limit):
            self._malformed("message_too_large", "The message is larger than the server accepts.")
            return
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._malformed("invalid_json", "The message is not valid JSON.")
            return
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "bet":
            self._bet(msg)
        elif kind == "auth":
            self._auth(msg)
        elif kind == "resume":
            self._resume(msg)
        else:
            self._malformed(
                "unknown_type", 'Messages are JSON objects with "type": "auth", "bet" or "resume".'
            )

    # ---- auth ------------------------------------------------------------------------------------
    def _auth(self, msg: dict[str, Any]) -> None:
        token = msg.get("token")
        if not isinstance(token, str) or not token:
            self._malformed("invalid_request", 'An auth message carries "token": the login token.')
            return
        if self.session is not None:
            self._malformed("already_authenticated", "This socket is already authenticated.")
            return
        try:
            session = websocket_token_session(self.svc, token)
        except WebsocketRefused as exc:
            self.svc.fanout.close(self.client, exc.close_code, exc.reason)
            return
        self.session = session
        self.svc.fanout.bind(self.client, session.address, session.key, session.expires_at)
        self._send({"type": "auth:ok", "address": to_checksum_address(session.address)})

    # ---- resume ----------------------------------------------------------------------------------
    def _resume(self, msg: dict[str, Any]) -> None:
        """Replay the trader's events after `after` (its Stream, app.realtime.events), then go on live.

        Live events that arrive meanwhile are held in the client's resume buffer; an event is queued
        only if its id is above the last one queued to this socket, so each reaches it once. Answers
        `resumed` with `complete: false` when events after `after` may have been trimmed or expired
        (the client then reads GET /api/v1/bets and /me).
        """
        after = msg.get("after")
        after_id = parse_id(after) if isinstance(after, str) else None
        if after_id is None:
            self._malformed(
                "invalid_resume", 'A resume message carries "after": an event id such as "1764230000000-0".'
            )
            return
        if self.session is None:
            self._send(
                {
                    "type": "error",
                    "error": {"code": "invalid_session", "message": "Authenticate the socket first."},
                }
            )
            return
        svc, client = self.svc, self.client
        key = events_key(self.session.address)
        start = max(after_id, client.last_event or (0, 0))
        client.resume_buffer = []
        try:
            pipe = svc.redis.pipeline(transaction=False)
            pipe.xinfo_stream(key)
            pipe.xrange(key, min=f"({start[0]}-{start[1]}", max="+")
            pipe.get(REDIS_STATE_KEY)
            info, entries, state = pipe.execute(raise_on_error=False)
            if isinstance(entries, Exception):
                raise entries
            if isinstance(state, Exception):
                raise state
            for raw_id, fields in entries:
                eid = parse_id(raw_id)
                if eid is not None and b"m" in fields:
                    svc.fanout.replay(client, eid, text_frame(with_id(raw_id, fields[b"m"])))
        except redis.RedisError as exc:
            log.warning("resume failed: %s", exc)
            self._flush_resume()
            self._send(
                {
                    "type": "error",
                    "error": {
                        "code": "dependency_unavailable",
                        "message": "Could not read your events; retry.",
                    },
                }
            )
            return
        self._flush_resume()
        if isinstance(info, Exception):  # no Stream: no event for 24 h, or none ever
            complete = after_id[0] > svc.now_ms() - STREAM_TTL_MS
        else:
            trimmed = parse_id(info.get("max-deleted-entry-id", b"0-0")) or (0, 0)
            complete = trimmed <= after_id
        # Redis lost its data after `after` (the Stream with it): the events in between are gone, and
        # an absent or new Stream does not show it. The bet state's rebuild time does (app.bets.recovery).
        since = rebuilt_at(state)
        if since is None or after_id[0] < since:
            complete = False
        last = client.last_event
        self._send(
            {
                "type": "resumed",
                "after": after,
                "last": None if last is None else f"{last[0]}-{last[1]}",
                "complete": complete,
            }
        )

    def _flush_resume(self) -> None:
        buffered, self.client.resume_buffer = self.client.resume_buffer or [], None
        for eid, frame in buffered:
            self.svc.fanout.deliver(self.client, eid, frame)

    # ---- bet -------------------------------------------------------------------------------------
    def _bet(self, msg: dict[str, Any]) -> None:
        req = msg.get("req")
        if not isinstance(req, str) or not _REQ_RE.fullmatch(req):
            self._malformed("invalid_req", 'A bet message carries "req": 1-64 of [A-Za-z0-9_-].')
            return
        try:
            answer = self._place({k: v for k, v in msg.items() if k not in _ENVELOPE})
        except Exception as exc:  # noqa: BLE001 - every refusal becomes its bet:error, never a crash
            err = as_api_error(exc)
            out: dict[str, Any] = {
                "type": "bet:error",
                "req": req,
                "status": err.status,
                "error": {"code": err.code, "message": err.message},
            }
            if err.details:
                out["error"]["details"] = err.details
            if err.retry_after is not None and err.status in (429, 503):
                out["retry_after"] = err.retry_after
            self._send(out)
            return
        self._send({"type": "bet:accepted", "req": req, **answer})

    def _place(self, fields: dict[str, Any]) -> dict[str, Any]:
        svc, session = self.svc, self.session
        now_ms = svc.now_ms()
        try:
            if session is None:
                raise Unauthorized(
                    'Authenticate the socket first: {"type": "auth", "token": …}.', code="invalid_session"
                )
            # A session that ended is refused here as HTTP refuses it, not only once the socket's close
            # (queued by the sweeper at expiry, by the pub/sub listener at logout) reaches its writer.
            if session.expires_at <= now_ms or self.client.close_code == WS_CLOSE_INVALID_SESSION:
                raise Unauthorized(
                    "The session is unknown, expired or logged out; sign in again.", code="invalid_session"
                )
        except Exception as exc:
            count_refusal(svc, exc)
            raise
        req = parse_bet(svc, fields)  # the schema, as HTTP checks it before anything but the session
        refusal = self._load_refusal(session, now_ms)  # answered by place_bet, unless to a retry
        self.in_flight += 1  # reserved before the writer can answer; released below unless queued
        try:
            placed = place_bet(svc, session, req, now_ms, on_done=self._settled, refusal=refusal)
        except BaseException:
            self.in_flight -= 1
            raise
        if not placed.queued:
            self.in_flight -= 1
        return placed.body

    def _load_refusal(self, session: Session, now_ms: int) -> ApiError | None:
        """The first of: a full write queue (503), this socket's in-flight cap, the per-wallet rate
        limit (429); None when the tap may be judged. Not raised here: a retry of an accepted nonce
        still gets its bet (SPEC §8a, app.bets.placement)."""
        svc = self.svc
        refusal: ApiError | None = queue_full(svc)
        if refusal is None and self.in_flight >= MAX_IN_FLIGHT:
            refusal = RateLimited(
                f"At most {MAX_IN_FLIGHT} bets may wait for confirmation on one socket.",
                code="too_many_in_flight",
                retry_after=1,
            )
        if refusal is None:
            # The per-wallet counter HTTP requests count too (one limit for both transports), as a
            # script call that shares its round trip with concurrent taps' calls.
            try:
                self.counter.hit(
                    "addr", session.address, limit=self.limits.per_address_per_s, window_s=1, now_ms=now_ms
                )
            except RateLimited as exc:
                refusal = exc
            except Exception as exc:
                count_refusal(svc, exc)
                raise
        return refusal

    def _settled(self, ok: bool, value: object) -> None:
        self.in_flight -= 1

    # ---- helpers ---------------------------------------------------------------------------------
    def _malformed(self, code: str, message: str) -> None:
        self.malformed += 1
        self._send({"type": "error", "error": {"code": code, "message": message}})
        if self.malformed >= MAX_MALFORMED:
            self.svc.fanout.close(self.client, WS_CLOSE_POLICY_VIOLATION, "too many malformed messages")

    def _send(self, msg: dict[str, Any]) -> None:
        if self._deliver is not None:
            self._deliver(msg)
            return
        self.svc.fanout.reply(self.client, orjson.dumps(msg))
