"""Placing a bet (SPEC §6): the one set of rules behind `POST /api/v1/bets` and the websocket's
`{"type": "bet"}` (SPEC §8a). The two transports are thin adapters around `place_bet`.

The checks run in the order SPEC §6 gives, each with its own error code:

1. schema and units (`parse_bet`): a number where a string is expected, too many decimals → 400;
2. session (the transport's job: a bearer token, or the session bound to the socket);
3. signature by the session key or the wallet; 4. `ts` within 30 s of the server;
5. nonce unused for this address (with the cell claim and the pending record: one Redis script);
6. the operator's halt switch (503 `betting_halted`), circuit breaker and quote freshness;
7. cell placeable, stake within limits, quote ≥ the minimum, one bet per cell, the house's exposure
   caps (422 `exposure_limit`, SPEC §8b); 8. queued to the writer.

Steps 6 and 7 are *decided* before step 5 (they need no Redis) but *reported* after it, so that a
retry of an accepted nonce is always answered with its bet, whatever the market does meanwhile. The
halt switch, the one-bet-per-cell rule and the exposure caps need Redis: the claim script of step 5
decides them in the same round trip (`app.bets.claims`), atomically with the claim.

The transports refuse for load before these rules run: a full write queue (503 `overloaded`, step 8
in SPEC §6, decided up front so that a refused tap costs next to nothing), the per-IP and per-wallet
rate limits (429), the socket's in-flight cap (429 `too_many_in_flight`, SPEC §8a). A retry adds no
bet, so none of them is the retry's to get: the transport hands its refusal to `place_bet`
(`refusal=`), which answers a retry of an accepted nonce with its bet and anything else with the
refusal (`_retry_or_refuse`). A tap that is not refused takes the path it always took: no round trip
more.

Every outcome from step 1 on is counted per second for the operator console (`app.bets.tapstats`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from app.auth.sessions import Session
from app.auth.signatures import (
    NONCE_TTL_S,
    NonceRecord,
    bet_signing_text,
    check_timestamp,
    request_fingerprint,
    same_request_or_conflict,
    verify_signer,
)
from app.bets.claims import Claim, Limits, rejected_record
from app.bets.halt import HALT_RETRY_AFTER_S, decode_halt
from app.bets.notify import pending_json
from app.bets.recovery import QUEUE_MAX_WAIT_S, UNKNOWN_FINGERPRINT
from app.bets.schemas import BetRequestSchema, bet_request_fields
from app.bets.store import NewBet, bet_row_json, get_bet, insert_bet
from app.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    Overloaded,
    Unavailable,
    Unprocessable,
)
from app.http.json import validate_object
from app.ledger.store import time_ordered_id
from app.market.grid import check_placeable, parse_cell
from app.services import Services
from app.units import UnitError, format_money, format_multiplier, parse_money, parse_multiplier, payout_for

LOST_AFTER_MS = 30_000  # a pending bet older than this that is not in SQLite will never commit
# Claim attempts of one request (`_claim`): each one after the first follows the release of an abandoned
# claim of the same body, so more than two are needed only when concurrent attempts of that body keep
# losing their claim replies (Redis timing out); bounded, so that a request never loops on them.
CLAIM_ROUNDS = 3
RECOVERING_RETRY_AFTER_S = 5  # the bet state is rebuilt DRAIN_S (12 s) after Redis is found without it

_schema = BetRequestSchema()


@dataclass(frozen=True, slots=True)
class BetRequest:
    """A bet as the trader signed it: the strings exactly as sent, and their parsed values."""

    cell: str
    stake: str
    min_multiplier: str
    nonce: str
    ts: int
    signature: str
    stake_units: int  # micro-units
    min_multiplier_units: int  # 1e-4 units
    t_start: int
    row: int


def parse_bet(svc: Services, body: object) -> BetRequest:
    """Step 1: the schema and the units. Raises a 400 with the field's own code."""
    try:
        return _parse_bet(svc, body)
    except ApiError as exc:
        svc.taps.record(exc.code, svc.clock())
        raise


def _parse_bet(svc: Services, body: object) -> BetRequest:
    # The hand-written check accepts a valid body without marshmallow; anything else goes through
    # the schema, which answers it exactly as before (app.bets.schemas.bet_request_fields).
    fields = bet_request_fields(body) or validate_object(_schema, body)
    try:
        stake = parse_money(fields["stake"], "stake")
    except UnitError as exc:
        raise BadRequest(str(exc), code="invalid_stake") from None
    try:
        min_multiplier = parse_multiplier(fields["min_multiplier"], "min_multiplier")
    except UnitError as exc:
        raise BadRequest(str(exc), code="invalid_min_multiplier") from None
    t_start, row = parse_cell(fields["cell"], svc.grid)
    return BetRequest(
        cell=fields["cell"],
        stake=fields["stake"],
        min_multiplier=fields["min_multiplier"],
        nonce=fields["nonce"],
        ts=fields["ts"],
        signature=fields["signature"],
        stake_units=stake,
        min_multiplier_units=min_multiplier,
        t_start=t_start,
        row=row,
    )


def count_refusal(svc: Services, exc: BaseException) -> None:
    """Count a refusal by a transport's own checks before the bet rules (the session, a Redis failure)
    in the console's taps per second by code, as the rules count their own (SPEC §8c); a load refusal
    passed to `place_bet` is counted there. The adapters call it from an `except`: nothing on an
    accepted tap's path."""
    if isinstance(exc, ApiError):
        svc.taps.record(exc.code, svc.clock())
    elif isinstance(exc, redis.RedisError):
        svc.taps.record("dependency_unavailable", svc.clock())


def queue_full(svc: Services) -> Overloaded | None:
    """503 `overloaded` while the writer's queue is full, else None: decided up front, so that a tap the
    queue could not take costs no signature and no claim (`place_bet(refusal=…)` reports it)."""
    if svc.writes.depth() >= svc.writes.maxsize:
        return Overloaded("Too many bets in flight; try again shortly.", retry_after=1)
    return None


@dataclass(frozen=True, slots=True)
class Placed:
    """The answer to a bet: the 202 body, and whether this call queued it (False: a retry)."""

    body: dict[str, Any]
    queued: bool


def place_bet(
    svc: Services,
    session: Session,
    req: BetRequest,
    now_ms: int,
    *,
    on_done: Callable[[bool, object], None] | None = None,
    refusal: ApiError | None = None,
) -> Placed:
    """Steps 3–8 for an authenticated trader; the 202 body is `bet:accepted` on the socket.

    A retry of an accepted nonce with the same signed text returns that bet as it stands now, also
    when the transport passes a `refusal` for load (a full write queue, a rate limit, the socket's
    in-flight cap): any other tap then gets that refusal and queues nothing.
    `on_done(ok, value)` is called once, after the writer's commit (or failure) of a bet this call
    queued, after the notifier; never for a refusal or a retry.
    """
    try:
        if refusal is not None:
            placed = Placed(_retry_or_refuse(svc, session, req, now_ms, refusal), queued=False)
        else:
            placed = _place_bet(svc, session, req, now_ms, on_done)
    except ApiError as exc:
        svc.taps.record(exc.code, svc.clock())
        raise
    except redis.RedisError:
        svc.taps.record("dependency_unavailable", svc.clock())
        raise
    svc.taps.record("accepted" if placed.queued else "retry", svc.clock())
    return placed


def _signing_text(svc: Services, session: Session, req: BetRequest) -> str:
    """The text the trader signed for `req` (SPEC §6), rebuilt from the request as the server reads it."""
    return bet_signing_text(
        svc.settings,
        address=session.address,
        cell=req.cell,
        stake=req.stake,
        min_multiplier=req.min_multiplier,
        nonce=req.nonce,
        ts=req.ts,
    )


def _place_bet(
    svc: Services,
    session: Session,
    req: BetRequest,
    now_ms: int,
    on_done: Callable[[bool, object], None] | None,
) -> Placed:
    text = _signing_text(svc, session, req)
    verify_signer(session, text, req.signature)  # 3.
    check_timestamp(req.ts, now_ms)  # 4.
    refusal, multiplier = _judge(svc, req, now_ms)  # 6. and 7., reported after 5.
    bet = _new_bet(svc, session, req, multiplier, now_ms)
    claim = _claim(svc, session, req, bet, request_fingerprint(text), refused=refusal is not None)  # 5.
    if claim.retry_of is not None:
        return Placed(load_bet(svc, claim.retry_of, session), queued=False)
    if claim.recovering:
        raise Unavailable(
            "Betting is suspended while the server rebuilds its open positions after a data loss.",
            code="recovering",
            retry_after=RECOVERING_RETRY_AFTER_S,
        )
    if claim.halted is not None:
        raise Unavailable(
            f"Betting is halted by the operator: {claim.halted}",
            code="betting_halted",
            retry_after=HALT_RETRY_AFTER_S,
            details={"reason": claim.halted},
        )
    if refusal is not None:
        raise refusal
    if claim.cell_taken:
        raise Conflict("You already have a bet on that cell.", code="duplicate_cell")
    if claim.exposure is not None:
        raise _exposure_limit(claim.exposure, claim.room)
    _queue(svc, bet, claim, on_done)  # 8.
    body = {
        "bet_id": bet.bet_id,
        "status": "pending",
        "cell": bet.cell,
        "stake": format_money(bet.stake),
        "multiplier": format_multiplier(bet.multiplier),
        "payout": format_money(bet.payout),
    }
    return Placed(body, queued=True)


def _retry_or_refuse(
    svc: Services, session: Session, req: BetRequest, now_ms: int, refusal: ApiError
) -> dict[str, Any]:
    """A tap the transport refuses for load: a retry of an accepted nonce gets its bet, else `refusal`.

    The nonce is read first (one read-only script call, batched with concurrent taps' calls; only on
    this refused path) and the signature and `ts` are checked only for a text that matches an accepted
    bet: a burst of refused taps costs no signature recovery, and a retry is answered only once steps
    3 and 4 pass, as SPEC §6 orders them before the nonce. Nothing is written: a refused tap uses no
    nonce. With Redis unreachable the refusal stands (it would have been the answer anyway).
    """
    text = _signing_text(svc, session, req)
    try:
        held = svc.bet_claims.accepted(session.address, req.nonce)
    except redis.RedisError:
        raise refusal from None
    if held is None:
        raise refusal
    fingerprint, bet_id = held
    if fingerprint != request_fingerprint(text) or svc.bet_claims.abandoned(bet_id):
        raise refusal  # another body under that nonce, or a claim of ours that was never queued
    verify_signer(session, text, req.signature)  # 3.
    check_timestamp(req.ts, now_ms)  # 4.
    return load_bet(svc, bet_id, session)


# ---- the steps -----------------------------------------------------------------------------------


def _judge(svc: Services, req: BetRequest, now_ms: int) -> tuple[ApiError | None, int]:
    """Steps 6 and 7: the refusal to report after the nonce check (or None), and the quote."""
    s = svc.settings
    book = svc.quotes.book
    if not svc.feed.betting_open() or book is None:
        return Unavailable(
            "Betting is suspended: the price feed is stale.", code="betting_suspended", retry_after=5
        ), 0
    if book.age_s(now_ms / 1000) > s.quote_max_age_s:
        # DEGRADED keeps betting open and the book is rebuilt every second from the last price; a
        # stalled publisher or feed must not sell bands the market has already moved toward.
        return Unavailable(
            "The quotes are out of date; try again in a moment.", code="quotes_stale", retry_after=1
        ), 0
    try:
        check_placeable(req.t_start, req.row, now_ms / 1000, book.current_row, svc.grid)
        tick = svc.feed.last_tick
        if tick is not None and tick.ts > now_ms:
            # The windows are settled on the prices' time (the exchanges'), the rule above on this
            # machine's wall clock: stepped back by S after the feed started, it would sell windows
            # S seconds closer to their open than min_lead_columns allows, or already open, their
            # touch partly known. The rule must hold on both clocks; this one only ever refuses more.
            check_placeable(req.t_start, req.row, tick.ts / 1000, book.current_row, svc.grid)
        if req.stake_units < s.min_stake:
            raise Unprocessable(f"The smallest stake is {format_money(s.min_stake)}.", code="stake_too_small")
        if req.stake_units > s.max_stake:
            raise Unprocessable(f"The largest stake is {format_money(s.max_stake)}.", code="stake_too_large")
        multiplier = book.quote(req.t_start, req.row)  # shaded by the cell's open liability
        if multiplier is None:
            raise Unprocessable("That cell is too likely to win to be offered.", code="cell_not_quoted")
        if multiplier < req.min_multiplier_units:
            raise Unprocessable(
                f"The multiplier is now {format_multiplier(multiplier)}, below your minimum.",
                code="multiplier_below_minimum",
                details={"multiplier": format_multiplier(multiplier)},
            )
        payout = payout_for(req.stake_units, multiplier)
        if payout > s.max_cell_payout:  # could never fit, however empty the cell
            raise Unprocessable(
                f"A payout of {format_money(payout)} is above the house's limit on one cell"
                f" ({format_money(s.max_cell_payout)}); lower the stake.",
                code="exposure_limit",
                details={"scope": "cell", "available_payout": format_money(s.max_cell_payout)},
            )
    except ApiError as exc:
        return exc, 0
    return None, multiplier


def _exposure_limit(scope: str, room: int) -> Unprocessable:
    """422 `exposure_limit`: the bet's payout would take the cell or column above the house's cap."""
    room = max(0, room)
    return Unprocessable(
        f"The house's open payouts on that {scope} are at its limit; at most"
        f" {format_money(room)} more can be paid there now.",
        code="exposure_limit",
        details={"scope": scope, "available_payout": format_money(room)},
    )


def _new_bet(svc: Services, session: Session, req: BetRequest, multiplier: int, now_ms: int) -> NewBet:
    lo, hi = svc.grid.band(req.row)
    return NewBet(
        bet_id=time_ordered_id(now_ms),
        user_id=session.user_id,
        address=session.address,
        cell=req.cell,
        t_start=req.t_start,
        row=req.row,
        min_price=lo,
        max_price=hi,
        stake=req.stake_units,
        multiplier=multiplier,
        payout=payout_for(req.stake_units, multiplier),
        nonce=req.nonce,
        placed_at=now_ms,
    )


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """What step 5 found: a retry of an accepted nonce, a cell already taken, or the claim made."""

    retry_of: str | None  # the bet id the nonce was accepted for (same signed text)
    cell_taken: bool
    fingerprint: str
    record: bytes  # the pending record stored with the claim
    cell_ttl_s: int
    halted: str | None = None  # the operator's reason: betting is halted, nothing was claimed
    exposure: str | None = None  # "cell"/"column": a cap refused the bet, nothing was claimed
    room: int = 0  # the payout still available under that cap
    recovering: bool = False  # Redis has lost the bet state, not rebuilt yet: nothing was claimed


def _claim(
    svc: Services, session: Session, req: BetRequest, bet: NewBet, fingerprint: str, *, refused: bool
) -> ClaimResult:
    """Step 5: nonce, cell claim and pending record in one Redis script; a lost reply is compensated."""
    cell_ttl_s = req.t_start + svc.grid.column_seconds - bet.placed_at // 1000 + 60
    record = pending_json(bet, svc.bet_claims.instance)
    s = svc.settings
    limits = Limits(
        payout=bet.payout,
        row=req.row,
        t_start=req.t_start,
        cell_cap=s.max_cell_payout,
        column_cap=s.max_column_payout,
        column_end=req.t_start + svc.grid.column_seconds,
    )
    for _ in range(CLAIM_ROUNDS):
        try:
            outcome, detail, room = svc.bet_claims.claim(
                address=session.address,
                nonce=req.nonce,
                fingerprint=fingerprint,
                bet_id=bet.bet_id,
                cell=req.cell,
                proceed=not refused,
                cell_ttl_s=cell_ttl_s,
                pending_json=record,
                limits=limits,
                placed_at=bet.placed_at,
            )
        except redis.RedisError as exc:
            if not refused:  # the script may have run and only its reply been lost
                lost = isinstance(exc, redis.ConnectionError | redis.TimeoutError)
                _abandon(svc, bet, fingerprint, record, cell_ttl_s, now=not lost)
            raise  # 503 dependency_unavailable
        if outcome is Claim.HALTED:
            reason = decode_halt(detail).reason
            return ClaimResult(None, False, fingerprint, record, cell_ttl_s, halted=reason)
        if outcome is Claim.EXPOSURE:
            return ClaimResult(None, False, fingerprint, record, cell_ttl_s, exposure=detail, room=room)
        if outcome is Claim.RECOVERING:
            return ClaimResult(None, False, fingerprint, record, cell_ttl_s, recovering=True)
        if outcome is not Claim.NONCE_USED:
            return ClaimResult(None, outcome is Claim.CELL_TAKEN, fingerprint, record, cell_ttl_s)
        stored_fp, _, first_bet_id = detail.partition("|")
        if stored_fp == UNKNOWN_FINGERPRINT:  # a nonce rebuilt from SQLite (app.bets.recovery)
            return ClaimResult(_same_bet(svc, req, first_bet_id), False, fingerprint, record, cell_ttl_s)
        same_request_or_conflict(NonceRecord(stored_fp, first_bet_id), fingerprint)  # else 409
        if not svc.bet_claims.abandoned(first_bet_id):
            return ClaimResult(first_bet_id, False, fingerprint, record, cell_ttl_s)
        # our own earlier attempt claimed it but never queued the bet: release, then judge afresh
        svc.bet_claims.release_abandoned(first_bet_id)
    # Every round met a claim of this same body that this process had abandoned (each one an attempt
    # whose claim reply was lost), and released it: nothing is accepted under the nonce now, so the same
    # body sent again is judged afresh (or answered with the bet of an attempt that claims it meanwhile).
    # That is a retry's answer, not 409 `nonce_conflict`, which says another body holds the nonce.
    raise Unavailable(
        "That request could not be placed yet: other attempts of it are still being settled; send the"
        " same signed body again.",
        code="nonce_busy",
        retry_after=1,
    )


def _same_bet(svc: Services, req: BetRequest, bet_id: str) -> str:
    """A nonce rebuilt after Redis lost its data names its bet but not the signed text's fingerprint
    (SQLite does not keep it): the request is that bet's retry if it names the same cell and stake
    (signed by this trader, under this trader's nonce), else 409 `nonce_conflict` as for another body.
    Only this path reads SQLite, and only for the nonce's 90 s after a rebuild."""
    row = svc.reads.run(lambda c: get_bet(c, bet_id))
    if row is None or f"{row['target_time']}:{row['row']}" != req.cell or row["stake"] != req.stake_units:
        same_request_or_conflict(NonceRecord(UNKNOWN_FINGERPRINT, bet_id), "")  # raises 409
    return bet_id


def _abandon(
    svc: Services, bet: NewBet, fingerprint: str, record: bytes, cell_ttl_s: int, *, now: bool = True
) -> None:
    """The claim may have gone through but this bet will never be queued: release it."""
    svc.bet_claims.abandon(
        address=bet.address,
        nonce=bet.nonce,
        fingerprint=fingerprint,
        cell=bet.cell,
        bet_id=bet.bet_id,
        record=rejected_record(record, "not_queued"),
        ttl_s=max(cell_ttl_s, NONCE_TTL_S),
        now=now,
    )


def _queue(
    svc: Services, bet: NewBet, claim: ClaimResult, on_done: Callable[[bool, object], None] | None
) -> None:
    """Step 8: hand the bet to the writer; the trader hears `bet:confirmed`/`bet:rejected` after it."""
    accepted_at = time.monotonic()

    def done(ok: bool, value: object) -> None:
        svc.bet_notifier.on_done(bet, accepted_at, ok, value)
        if on_done is not None:
            on_done(ok, value)

    try:
        svc.writes.submit(insert_bet(bet), on_done=done, max_wait_s=QUEUE_MAX_WAIT_S)
    except ApiError:
        _abandon(svc, bet, claim.fingerprint, claim.record, claim.cell_ttl_s)  # e.g. overloaded: retry
        raise
    svc.metrics.bets_accepted.inc()


# ---- reading a bet back --------------------------------------------------------------------------


def load_bet(svc: Services, bet_id: str, session: Session) -> dict[str, Any]:
    """The bet as committed in SQLite, else its pending/rejected record in Redis.

    Redis is read *first*: the pending record is deleted only after the commit, so "no record" means
    SQLite already has the bet (or it never existed). Reading SQLite first could miss a commit that
    lands between the two reads and then find the record already gone.
    """
    raw = svc.bet_claims.pending(bet_id)
    row = svc.reads.run(lambda c: get_bet(c, bet_id))  # any week's bet: it may be cold, so off the hub
    if row is not None:
        if row["user_id"] != session.user_id:
            raise Forbidden("That bet belongs to someone else.", code="not_your_bet")
        return bet_row_json(row)
    if raw is None:
        raise NotFound("No such bet.", code="bet_not_found")
    rec = orjson.loads(raw)
    if rec["address"] != session.address:
        raise Forbidden("That bet belongs to someone else.", code="not_your_bet")
    status = rec["status"]
    reason = rec.get("reason")
    if status == "pending" and svc.now_ms() - rec["placed_at"] > LOST_AFTER_MS:
        status, reason = "rejected", "not_committed"  # the queue deadline has passed: it never will
    out = {
        "bet_id": rec["bet_id"],
        "status": status,
        "cell": rec["cell"],
        "stake": format_money(rec["stake"]),
        "multiplier": format_multiplier(rec["multiplier"]),
        "payout": format_money(rec["payout"]),
        "potential_payout": format_money(rec["payout"]),
        "placed_at": rec["placed_at"],
        "settled_at": None,
    }
    if status == "rejected":
        out["reason"] = reason
    return out
