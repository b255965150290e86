"""The hand-written bet body check (`bet_request_fields`) agrees with `BetRequestSchema`.

The check only *accepts*: a body it accepts must be one the schema accepts, with the same fields out;
every other body goes to the schema, so its refusal is the schema's own (code, message, details).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.auth.schemas import TS_MAX
from app.bets.schemas import BetRequestSchema, bet_request_fields
from app.errors import ApiError
from app.http.json import validate_object

SCHEMA = BetRequestSchema()
SIG = "0x" + "ab" * 65
VALID = {
    "cell": "1763712005:6712",
    "stake": "10",
    "min_multiplier": "2.5",
    "nonce": "k2j3h4g5f6d7s8a9",
    "ts": 1763711990123,
    "signature": SIG,
}


def _with(**changes: Any) -> dict[str, Any]:
    body = dict(VALID)
    for k, v in changes.items():
        if v is _DROP:
            body.pop(k)
        else:
            body[k] = v
    return body


_DROP = object()

# (body, does the fast check accept it)
TABLE: list[tuple[object, bool]] = [
    (VALID, True),
    (_with(ts=0), True),
    (_with(ts=TS_MAX), True),
    (_with(cell="x" * 32, stake="9" * 32, min_multiplier="1" * 32), True),
    (_with(cell="", stake="", min_multiplier=""), True),  # the units and the cell refuse these later
    (_with(stake="1e2", min_multiplier="-1", cell="a:b"), True),
    (_with(nonce="a" * 8), True),
    (_with(nonce="A-z_0" * 12 + "abcd"), True),  # 64
    (_with(signature="0x" + "AbCdEf0123" * 13), True),
    (_with(cell="é" * 32), True),
    # refused by the fast check: the schema decides
    (_with(ts=-1), False),
    (_with(ts=TS_MAX + 1), False),
    (_with(ts=True), False),
    (_with(ts=False), False),
    (_with(ts=1.0), False),
    (_with(ts=1763711990123.5), False),
    (_with(ts="1763711990123"), False),
    (_with(ts=None), False),
    (_with(cell="x" * 33), False),
    (_with(stake="1" * 33), False),
    (_with(min_multiplier="1" * 33), False),
    (_with(stake=10), False),
    (_with(min_multiplier=2), False),
    (_with(min_multiplier=2.5), False),
    (_with(cell=None), False),
    (_with(cell=["1763712005:6712"]), False),
    (_with(nonce="a" * 7), False),
    (_with(nonce="a" * 65), False),
    (_with(nonce="abcdefgh!"), False),
    (_with(nonce="abcdefgh\n"), False),  # refused by both (app.auth.schemas.Pattern)
    (_with(nonce=12345678), False),
    (_with(signature=SIG[:-1]), False),
    (_with(signature=SIG + "a"), False),
    (_with(signature="0X" + SIG[2:]), False),
    (_with(signature=SIG[:-1] + "g"), False),
    (_with(signature=SIG + "\n"), False),
    (_with(signature=None), False),
    (_with(cell=_DROP), False),
    (_with(ts=_DROP), False),
    (_with(signature=_DROP, nonce=_DROP), False),
    (_with(extra=1), False),
    (_with(extra=1, more="x", cell=_DROP), False),
    ({}, False),
    ([], False),
    ("x", False),
    (None, False),
    (1, False),
]


def test_a_trailing_newline_after_the_nonce_or_the_signature_is_refused() -> None:
    """marshmallow's Regexp with a `$` pattern let one "\n" through: a line break in the signed text."""
    for field, body in (("nonce", _with(nonce="abcdefgh\n")), ("signature", _with(signature=SIG + "\n"))):
        kind, (_, status, _, _, details) = _outcome(_today, body)
        assert kind == "error" and status == 400 and field in str(details), details


def _outcome(fn: Any, body: object) -> tuple[str, Any]:
    try:
        return "ok", fn(body)
    except ApiError as exc:
        return "error", (type(exc), exc.status, exc.code, exc.message, exc.details)


def _today(body: object) -> Any:
    return validate_object(SCHEMA, body)


def _now(body: object) -> Any:  # what app.bets.placement runs
    return bet_request_fields(body) or validate_object(SCHEMA, body)


@pytest.mark.parametrize(("body", "fast"), TABLE, ids=[str(i) for i in range(len(TABLE))])
def test_the_fast_check_agrees_with_the_schema(body: object, fast: bool) -> None:
    got = bet_request_fields(body)
    assert (got is not None) is fast
    if got is not None:
        assert got == SCHEMA.load(body)  # type: ignore[arg-type]
        assert type(got["ts"]) is int
    assert _outcome(_now, body) == _outcome(_today, body)


_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="0123456789abcdefABCDEF_-x:.", max_size=70),
    st.builds(lambda s: "0x" + s, st.text(alphabet="0123456789abcdefABCDEFg", min_size=128, max_size=132)),
)
_value = st.one_of(
    _text,
    st.integers(min_value=-2, max_value=TS_MAX + 2),
    st.integers(),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
)


@settings(max_examples=400, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={k: (_value if k != "ts" else st.one_of(st.integers(), _value)) for k in VALID},
    ),
    st.dictionaries(st.sampled_from(["extra", "type", "req"]), _value, max_size=2),
    st.data(),
)
def test_random_bodies_agree(body: dict[str, Any], extra: dict[str, Any], data: st.DataObject) -> None:
    # most draws are near-valid: fill the missing fields from VALID unless told not to
    if data.draw(st.booleans()):
        body = {**VALID, **body}
    if data.draw(st.booleans()):
        body = {**body, **extra}
    got = bet_request_fields(body)
    if got is not None:
        assert got == SCHEMA.load(body)
    assert _outcome(_now, body) == _outcome(_today, body)
