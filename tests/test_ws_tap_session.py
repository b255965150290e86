"""A tap on a socket whose session has ended is refused at once (SPEC §8a: "A socket without a session
answers every `bet` with `bet:error` 401"), as `POST /api/v1/bets` refuses it, not only once the
socket's 4401 close reaches its writer.

The pinned desk (tests/support/pinned.py): a frozen clock and a pinned book, so the only thing that
changes between the accepted tap and the refused one is the session.
"""

from __future__ import annotations

import dataclasses

import orjson

from app.auth.decorators import WS_CLOSE_INVALID_SESSION
from app.auth.ratelimit import Limits
from app.auth.sessions import lookup_session
from app.auth.state import auth_state
from app.realtime.taps import TapSocket
from tests.support.pinned import Desk, desk_fixture  # noqa: F401 - fixtures


def _limits(desk: Desk) -> Limits:
    with desk.app.app_context():
        return auth_state().limits


def _socket(desk: Desk, session_ends_in_ms: int | None = None) -> tuple[TapSocket, list[dict], object]:
    trader = desk.trader()
    session = lookup_session(desk.svc.redis, trader.token, desk.clock.ms)
    assert session is not None
    if session_ends_in_ms is not None:
        session = dataclasses.replace(session, expires_at=desk.clock.ms + session_ends_in_ms)
    answers: list[dict] = []
    sock = TapSocket(desk.svc, desk.svc.fanout.register(), session, _limits(desk), send=answers.append)
    return sock, answers, trader


def _tap(sock: TapSocket, trader, desk: Desk, req: str, col: int) -> None:
    body = trader.bet_body(desk.cell(col=col), "1", ts=desk.clock.ms)
    sock.handle(orjson.dumps({"type": "bet", "req": req, **body}))


def _assert_refused_401(answer: dict) -> None:
    assert (answer["type"], answer["status"], answer["error"]["code"]) == (
        "bet:error",
        401,
        "invalid_session",
    )


def test_a_tap_after_the_session_expired_is_refused_401(desk: Desk) -> None:
    sock, answers, trader = _socket(desk, session_ends_in_ms=1_000)
    _tap(sock, trader, desk, "before", col=2)
    assert answers[-1]["type"] == "bet:accepted", answers[-1]
    desk.clock.advance(1.0)  # now == expires_at: expired, as HTTP's session lookup counts it
    _tap(sock, trader, desk, "after", col=3)
    _assert_refused_401(answers[-1])


def test_a_tap_on_a_socket_whose_session_logged_out_is_refused_401(desk: Desk) -> None:
    sock, answers, trader = _socket(desk)
    _tap(sock, trader, desk, "before", col=2)
    assert answers[-1]["type"] == "bet:accepted", answers[-1]
    # what the pub/sub listener does when the session logs out: the socket's 4401 close is queued
    assert desk.svc.fanout.end_session(sock.session.key, WS_CLOSE_INVALID_SESSION, "invalid_session") == 1
    _tap(sock, trader, desk, "after", col=3)
    _assert_refused_401(answers[-1])


def test_the_message_size_limit_counts_bytes_not_characters(desk: Desk) -> None:
    sock, answers, _ = _socket(desk)
    limit = desk.svc.settings.ws_max_message
    text = orjson.dumps({"type": "auth", "token": "é" * (limit // 2)}).decode()
    assert len(text) < limit < len(text.encode())
    sock.handle(text)
    assert answers[-1]["error"]["code"] == "message_too_large", answers[-1]


def test_a_resume_id_with_non_ascii_digits_is_invalid_not_a_crash(desk: Desk) -> None:
    sock, answers, _ = _socket(desk)
    for after in ("²-0", "1-①", "٣-0"):
        sock.handle(orjson.dumps({"type": "resume", "after": after}))
        assert answers[-1]["error"]["code"] == "invalid_resume", (after, answers[-1])


def test_the_sockets_own_refusals_count_in_the_consoles_taps_by_code(desk: Desk) -> None:
    """SPEC §8c: taps refused per second by code, the transport's own checks included."""
    anonymous = TapSocket(desk.svc, desk.svc.fanout.register(), None, _limits(desk), send=lambda _m: None)
    sock, answers, trader = _socket(desk)
    anonymous.handle(orjson.dumps({"type": "bet", "req": "r0", **trader.bet_body(desk.cell(col=2), "1")}))
    sock.in_flight = 64  # as many bets waiting for their commit as a socket may have
    _tap(sock, trader, desk, "r1", col=3)
    assert answers[-1]["error"]["code"] == "too_many_in_flight"
    status, _, _ = trader.call("GET", "/api/v1/me")  # the trader is fine; an anonymous POST is not
    assert status == 200
    resp = desk.app.test_client().post("/api/v1/bets", json=trader.bet_body(desk.cell(col=4), "1"))
    assert resp.status_code == 401
    totals = desk.svc.taps.series(desk.svc.clock())["totals"]
    assert totals == {"invalid_session": 1, "too_many_in_flight": 1, "missing_authorization": 1}, totals
