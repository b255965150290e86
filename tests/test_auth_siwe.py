"""The strict EIP-4361 parser and the server-side field checks (no server needed)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from app.auth.errors import SiweCheckError, SiweError
from app.auth.siwe import (
    MESSAGE_MAX,
    SiweMessage,
    check_message,
    parse_message,
)
from app.config import Settings
from tests.support.auth import siwe_text
from tests.support.client import iso

ADDR = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # EIP-55 test vector
KEY = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"
NOW = 1_763_712_000_000
S = Settings.from_env({}, siwe_domain="tap.example:8443", chain_id=1)


def msg(**kw) -> str:
    kw.setdefault("now_ms", NOW)
    return siwe_text(S, ADDR, "abcdEFGH12345678", **kw)


def check(text: str, now_ms: int = NOW, allow_http: bool = False) -> SiweMessage:
    m = parse_message(text)
    check_message(m, domain=S.siwe_domain, chain_id=S.chain_id, now_ms=now_ms, allow_http=allow_http)
    return m


# ---- parsing: the good forms --------------------------------------------------------------------


def test_full_message_parses_every_field():
    text = msg(
        expiration=iso(NOW + 600_000),
        not_before=iso(NOW - 1000),
        request_id="req-1",
        resources=["ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/"],
        session_key=KEY,
        scheme="https",
    )
    m = check(text)
    assert m.domain == "tap.example:8443"
    assert m.scheme == "https"
    assert m.address == ADDR
    assert m.statement == "Sign in to Tap Trading."
    assert m.uri == "https://tap.example:8443"
    assert m.version == "1"
    assert m.chain_id == 1
    assert m.nonce == "abcdEFGH12345678"
    assert m.issued_at_ms == NOW
    assert m.expiration_time_ms == NOW + 600_000
    assert m.not_before_ms == NOW - 1000
    assert m.request_id == "req-1"
    assert m.session_key == KEY.lower()
    assert len(m.resources) == 2
    assert m.to_text() == text


def test_message_without_statement_has_two_blank_lines():
    text = msg(statement=None)
    assert "\n\n\nURI: " in text
    m = check(text)
    assert m.statement is None
    assert m.to_text() == text


def test_timezone_offsets_and_fractions():
    m = parse_message(msg(issued_at="2025-11-21T09:00:00.123456789+02:00"))
    assert m.issued_at_ms == 1763708400123


# ---- parsing: everything else is refused with SiweError ----------------------------------------


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda t: t + "\n", id="trailing-newline"),
        pytest.param(lambda t: t.replace("\n", "\r\n"), id="crlf"),
        pytest.param(lambda t: t.replace(ADDR, ADDR.lower()), id="address-not-checksummed"),
        pytest.param(lambda t: t.replace(ADDR, ADDR[:-1]), id="address-short"),
        pytest.param(lambda t: t.replace("Version: 1", "Version: one"), id="version-text"),
        pytest.param(lambda t: t.replace("Chain ID: 1", "Chain ID: 01"), id="chain-leading-zero"),
        pytest.param(lambda t: t.replace("Nonce: abcdEFGH12345678", "Nonce: abc"), id="nonce-short"),
        pytest.param(
            lambda t: t.replace("Nonce: abcdEFGH12345678", "Nonce: abcd-EFGH-1234"), id="nonce-dash"
        ),
        pytest.param(lambda t: t.replace("Issued At: ", "Issued At: x"), id="issued-at-garbled"),
        pytest.param(lambda t: t.replace(".000Z", ".000"), id="issued-at-no-zone"),
        pytest.param(lambda t: t.replace("URI: ", "Uri: "), id="field-name-case"),
        pytest.param(lambda t: t.replace("URI: https://", "URI: https:// "), id="uri-space"),
        pytest.param(lambda t: t.replace("Sign in to Tap Trading.", 'Say "hi"'), id="statement-quote"),
        pytest.param(lambda t: t.replace("Sign in to Tap Trading.", "Café"), id="non-ascii"),
        pytest.param(lambda t: t.replace(" wants you", " want you"), id="header-typo"),
        pytest.param(lambda t: "\n".join(t.split("\n")[:-1]), id="truncated"),
        pytest.param(lambda t: t.replace("Version: 1\nChain ID: 1", "Chain ID: 1\nVersion: 1"), id="order"),
        pytest.param(lambda t: t + "\nExtra: field", id="unknown-field"),
        pytest.param(lambda t: t.replace("\n\nURI", "\nURI"), id="missing-blank-line"),
        pytest.param(lambda t: "", id="empty"),
    ],
)
def test_malformed_messages_are_refused(mutate):
    with pytest.raises(SiweError) as err:
        parse_message(mutate(msg()))
    assert err.value.status == 400
    assert err.value.code.startswith("siwe_")


def test_non_string_message_is_refused():
    for value in (None, 1, b"bytes", ["a"]):
        with pytest.raises(SiweError):
            parse_message(value)


@pytest.mark.parametrize(
    ("kw", "what"),
    [
        ({"domain": "a" * 256}, "domain"),
        ({"statement": "s" * 513}, "statement"),
        ({"uri": "https://tap.example:8443/" + "p" * 500}, "uri"),
        ({"request_id": "r" * 129}, "request id"),
        ({"resources": [f"https://x.example/{i}" for i in range(9)]}, "resources count"),
        ({"resources": ["https://x.example/" + "p" * 600]}, "resource length"),
    ],
)
def test_oversized_fields_are_refused(kw, what):
    with pytest.raises(SiweError):
        parse_message(msg(**kw))


def test_oversized_message_is_refused():
    with pytest.raises(SiweError, match="longer than"):
        parse_message(msg() + "x" * MESSAGE_MAX)


@pytest.mark.parametrize(
    "key",
    [
        "0x123",  # short
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d35A",  # mixed case, bad checksum
        "0x0000000000000000000000000000000000000000",  # zero address
    ],
)
def test_bad_session_key_resource(key):
    with pytest.raises(SiweError) as err:
        parse_message(msg(session_key=key))
    assert err.value.code == "siwe_invalid_session_key"


def test_two_session_keys_are_refused():
    text = msg(resources=[f"urn:tap-trading:session-key:{KEY}"], session_key=KEY)
    with pytest.raises(SiweError) as err:
        parse_message(text)
    assert err.value.code == "siwe_invalid_session_key"


def test_session_key_in_lowercase_is_accepted():
    assert parse_message(msg(session_key=KEY.lower())).session_key == KEY.lower()


# ---- checks -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"domain": "evil.example"}, "siwe_domain_mismatch"),
        ({"uri": "https://evil.example"}, "siwe_uri_mismatch"),
        ({"uri": "http://tap.example:8443"}, "siwe_uri_mismatch"),
        ({"scheme": "http"}, "siwe_scheme_mismatch"),
        ({"version": "2"}, "siwe_version_unsupported"),
        ({"chain_id": 5}, "siwe_chain_id_mismatch"),
        ({"issued_at": iso(NOW - 300_001)}, "siwe_issued_at_out_of_window"),
        ({"issued_at": iso(NOW + 300_001)}, "siwe_issued_at_out_of_window"),
        ({"expiration": iso(NOW)}, "siwe_expired"),
        ({"not_before": iso(NOW + 1)}, "siwe_not_yet_valid"),
    ],
)
def test_each_field_check_has_its_code(kw, code):
    with pytest.raises(SiweCheckError) as err:
        check(msg(**kw))
    assert err.value.code == code
    assert err.value.status == 401


def test_issued_at_window_is_inclusive():
    check(msg(issued_at=iso(NOW - 300_000)))
    check(msg(issued_at=iso(NOW + 300_000)))


def test_http_uri_only_in_dev_mode():
    text = msg(uri="http://tap.example:8443/app", scheme="http")
    check(text, allow_http=True)
    with pytest.raises(SiweCheckError):
        check(text, allow_http=False)


# ---- properties ---------------------------------------------------------------------------------

LINE_PIECES = st.sampled_from(
    [
        "tap.example:8443 wants you to sign in with your Ethereum account:",
        ADDR,
        "",
        "Sign in.",
        "URI: https://tap.example:8443",
        "Version: 1",
        "Chain ID: 1",
        "Nonce: abcdEFGH12345678",
        f"Issued At: {iso(NOW)}",
        "Expiration Time: 9999-12-31T23:59:59-23:59",
        "Not Before: 0001-01-01T00:00:00+23:59",
        "Request ID: %zz",
        "Resources:",
        "- urn:tap-trading:session-key:0x00",
        f"- urn:tap-trading:session-key:{KEY}",
        "- https://x",
        "Issued At: 2025-02-30T25:61:61Z",
    ]
)


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=600))
def test_parser_raises_only_its_own_error_on_any_text(text):
    with contextlib.suppress(SiweError):
        parse_message(text)


@hsettings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(LINE_PIECES, st.text(max_size=40)), max_size=20))
def test_parser_raises_only_its_own_error_on_line_soup(lines):
    with contextlib.suppress(SiweError):
        parse_message("\n".join(lines))


@hsettings(max_examples=300, deadline=None)
@given(st.data())
def test_parser_raises_only_its_own_error_on_mutated_valid_messages(data):
    text = msg(expiration=iso(NOW + 1000), session_key=KEY, request_id="r1")
    pos = data.draw(st.integers(0, len(text)))
    cut = data.draw(st.integers(0, 5))
    insert = data.draw(st.text(max_size=8))
    with contextlib.suppress(SiweError):
        parse_message(text[:pos] + insert + text[pos + cut :])


_ALNUM = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=8, max_size=64
)


@hsettings(max_examples=200, deadline=None)
@given(
    nonce=_ALNUM,
    statement=st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9 .,!?'()-]{1,80}", fullmatch=True)),
    offset=st.integers(-299_000, 299_000),
    chain=st.integers(1, 2**53),
)
def test_roundtrip_of_generated_messages(nonce, statement, offset, chain):
    text = siwe_text(S, ADDR, nonce, now_ms=NOW + offset, statement=statement, chain_id=chain)
    m = parse_message(text)
    assert m.to_text() == text
    assert m.nonce == nonce
    assert m.chain_id == chain
    assert m.statement == statement
