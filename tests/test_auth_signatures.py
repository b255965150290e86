"""Signed requests (SPEC §6): recovery fast path == eth-account, and the replay/forgery matrix.

The bet endpoint does not exist yet, so the validator is tested through its public functions, with
a real Redis for the nonce claims.
"""

from __future__ import annotations

import pytest
import redis
from eth_account import Account
from eth_account.messages import encode_defunct
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from app.auth.errors import ApiError, AuthError, SignatureError
from app.auth.sessions import Session
from app.auth.signatures import (
    NONCE_TTL_S,
    SECP256K1_N,
    bet_signing_text,
    check_timestamp,
    claim_nonce,
    parse_signature,
    recover_personal_sign,
    recover_personal_sign_reference,
    request_fingerprint,
    same_request_or_conflict,
    to_checksum_address,
    verify_signed_request,
    verify_signer,
)
from app.config import Settings
from app.keys import nonce_key
from tests.support.auth import flip_to_high_s, sign, with_v

S = Settings.from_env({}, siwe_domain="tap.example:8443", chain_id=1)
NOW = 1_763_711_990_123
WALLET = Account.from_key(0x1111111111111111111111111111111111111111111111111111111111111111)
SESSION_KEY = Account.from_key(0x2222222222222222222222222222222222222222222222222222222222222222)
OTHER = Account.from_key(0x3333333333333333333333333333333333333333333333333333333333333333)


def session_for(wallet, key=None) -> Session:
    return Session(
        address=wallet.address.lower(),
        session_key=key.address.lower() if key else None,
        user_id=1,
        expires_at=NOW + 86_400_000,
        key="tap:sess:test",
    )


def bet_text(settings=S, address=None, **kw) -> str:
    fields = {
        "cell": "1763712005:6712",
        "stake": "10",
        "min_multiplier": "2.5",
        "nonce": "k2j3h4g5f6d7s8a9",
        "ts": NOW,
    }
    fields.update(kw)
    return bet_signing_text(settings, address=address or WALLET.address, **fields)


@pytest.fixture
def r(redis_url) -> redis.Redis:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


# ---- the signed text ----------------------------------------------------------------------------


def test_bet_signing_text_is_exactly_the_spec_layout():
    text = bet_text(address="0xAbC0000000000000000000000000000000000DeF")
    assert text == (
        "tap-trading:bet\n"
        "domain:tap.example:8443\n"
        "chain-id:1\n"
        "address:0xabc0000000000000000000000000000000000def\n"
        "cell:1763712005:6712\n"
        "stake:10\n"
        "min-multiplier:2.5\n"
        "nonce:k2j3h4g5f6d7s8a9\n"
        "ts:1763711990123"
    )
    assert not text.endswith("\n")


def test_values_go_in_exactly_as_sent():
    assert "stake:10.0\n" in bet_text(stake="10.0")
    assert request_fingerprint(bet_text(stake="10.0")) != request_fingerprint(bet_text(stake="10"))


# ---- fast path == eth-account -------------------------------------------------------------------


@hsettings(max_examples=150, deadline=None)
@given(key=st.integers(1, SECP256K1_N - 1), text=st.text(max_size=300))
def test_fast_recovery_equals_eth_account(key, text):
    acct = Account.from_key(key.to_bytes(32, "big"))
    sig = sign(acct, text)
    raw = bytes.fromhex(sig[2:])
    if int.from_bytes(raw[32:64], "big") > SECP256K1_N // 2:  # normalise, should a signer emit high s
        sig = flip_to_high_s(sig)
    expected = Account.recover_message(encode_defunct(text=text), signature=bytes.fromhex(sig[2:])).lower()
    assert expected == acct.address.lower()
    assert recover_personal_sign(text, sig) == expected
    assert recover_personal_sign_reference(text, sig) == expected
    # the same signature with v as 0/1 recovers the same address on both paths
    v01 = with_v(sig, int(sig[-2:], 16) - 27)
    assert recover_personal_sign(text, v01) == expected


@hsettings(max_examples=300, deadline=None)
@given(raw=st.binary(min_size=20, max_size=20), upper=st.booleans())
def test_eip55_checksum_equals_eth_utils(raw, upper):
    from eth_utils import to_checksum_address as reference

    address = "0x" + (raw.hex().upper() if upper else raw.hex())
    assert to_checksum_address(address) == reference(address)


@hsettings(max_examples=100, deadline=None)
@given(sig=st.binary(min_size=65, max_size=65), text=st.text(max_size=50))
def test_random_signature_bytes_never_crash_and_agree(sig, text):
    """Random bytes: both paths either refuse with SignatureError or agree on the address."""
    hexsig = "0x" + sig.hex()
    try:
        fast = recover_personal_sign(text, hexsig)
    except SignatureError:
        fast = None
    try:
        ref = recover_personal_sign_reference(text, hexsig)
    except SignatureError:
        ref = None
    assert fast == ref


# ---- signature forms ----------------------------------------------------------------------------


def test_high_s_variant_of_a_valid_signature_is_refused():
    text = bet_text()
    sig = sign(WALLET, text)
    high = flip_to_high_s(sig)
    # eth-account accepts both forms: this is why replay protection never keys on signature bytes
    ours = Account.recover_message(encode_defunct(text=text), signature=bytes.fromhex(high[2:]))
    assert ours == WALLET.address
    with pytest.raises(SignatureError) as err:
        recover_personal_sign(text, high)
    assert err.value.code == "signature_high_s"
    with pytest.raises(SignatureError) as err:
        verify_signer(session_for(WALLET), text, high)
    assert err.value.code == "signature_high_s"


@pytest.mark.parametrize("v_form", ["27/28", "0/1"])
def test_v_forms_are_equivalent(v_form):
    text = bet_text()
    sig = sign(WALLET, text)
    assert int(sig[-2:], 16) in (27, 28)
    if v_form == "0/1":
        sig = with_v(sig, int(sig[-2:], 16) - 27)
    assert verify_signer(session_for(WALLET), text, sig) == WALLET.address.lower()


@pytest.mark.parametrize("v", [2, 26, 29, 35, 36, 255])
def test_other_v_values_are_malformed(v):
    sig = with_v(sign(WALLET, bet_text()), v)
    with pytest.raises(SignatureError) as err:
        recover_personal_sign(bet_text(), sig)
    assert err.value.code == "signature_malformed"


@pytest.mark.parametrize(
    ("sig", "code"),
    [
        ("", "signature_malformed"),
        ("0x", "signature_malformed"),
        ("0x" + "ab" * 64, "signature_malformed"),  # 64 bytes
        ("0x" + "ab" * 66, "signature_malformed"),  # 66 bytes
        ("ab" * 65 + "ab", "signature_malformed"),  # no 0x
        ("0x" + "zz" * 65, "signature_malformed"),
        ("0x" + "00" * 32 + "11" * 32 + "1b", "signature_invalid"),  # r = 0
        ("0x" + "11" * 32 + "00" * 32 + "1b", "signature_invalid"),  # s = 0
        ("0x" + "ff" * 32 + "11" * 32 + "1b", "signature_invalid"),  # r >= n
        (None, "signature_malformed"),
        (12345, "signature_malformed"),
    ],
)
def test_malformed_signatures(sig, code):
    with pytest.raises(SignatureError) as err:
        recover_personal_sign("hello", sig)
    assert err.value.code == code
    assert err.value.status == 401


def test_parse_signature_normalises_v():
    sig = sign(WALLET, "x")
    assert parse_signature(sig)[64] in (0, 1)
    assert parse_signature(sig) == parse_signature(with_v(sig, int(sig[-2:], 16) - 27))


# ---- who signed ---------------------------------------------------------------------------------


def test_session_key_or_wallet_may_sign():
    session = session_for(WALLET, SESSION_KEY)
    text = bet_text()
    assert verify_signer(session, text, sign(SESSION_KEY, text)) == SESSION_KEY.address.lower()
    assert verify_signer(session, text, sign(WALLET, text)) == WALLET.address.lower()


def test_bet_signed_by_a_key_that_is_not_the_sessions_is_refused():
    session = session_for(WALLET, SESSION_KEY)
    text = bet_text()
    with pytest.raises(AuthError) as err:
        verify_signer(session, text, sign(OTHER, text))
    assert err.value.code == "wrong_signer"


def test_without_a_session_key_only_the_wallet_may_sign():
    text = bet_text()
    with pytest.raises(AuthError) as err:
        verify_signer(session_for(WALLET), text, sign(SESSION_KEY, text))
    assert err.value.code == "wrong_signer"


def test_user_a_token_with_user_b_signature_is_refused():
    a = session_for(WALLET, SESSION_KEY)
    # B signs a bet for B's own wallet with B's own key: the server builds A's text, so it fails
    b_text = bet_text(address=OTHER.address)
    b_sig = sign(OTHER, b_text)
    with pytest.raises(AuthError) as err:
        verify_signer(a, bet_text(address=a.address), b_sig)
    assert err.value.code == "wrong_signer"
    # …and B signing A's text does not help either
    with pytest.raises(AuthError):
        verify_signer(a, bet_text(address=a.address), sign(OTHER, bet_text(address=a.address)))


def test_wrong_chain_id_is_refused():
    other_chain = Settings.from_env({}, siwe_domain=S.siwe_domain, chain_id=5)
    signed = sign(SESSION_KEY, bet_text(settings=other_chain))
    with pytest.raises(AuthError) as err:
        verify_signer(session_for(WALLET, SESSION_KEY), bet_text(settings=S), signed)
    assert err.value.code == "wrong_signer"


def test_wrong_domain_is_refused():
    other_domain = Settings.from_env({}, siwe_domain="evil.example", chain_id=S.chain_id)
    signed = sign(SESSION_KEY, bet_text(settings=other_domain))
    with pytest.raises(AuthError) as err:
        verify_signer(session_for(WALLET, SESSION_KEY), bet_text(settings=S), signed)
    assert err.value.code == "wrong_signer"


@pytest.mark.parametrize("field", ["cell", "stake", "min_multiplier", "nonce", "ts"])
def test_any_field_changed_after_signing_is_refused(field):
    signed = sign(SESSION_KEY, bet_text())
    changed = {
        "cell": "1763712005:6713",
        "stake": "100",
        "min_multiplier": "1.5",
        "nonce": "zzzzzzzz",
        "ts": NOW + 1,
    }
    with pytest.raises(AuthError) as err:
        verify_signer(session_for(WALLET, SESSION_KEY), bet_text(**{field: changed[field]}), signed)
    assert err.value.code == "wrong_signer"


# ---- freshness ----------------------------------------------------------------------------------


@pytest.mark.parametrize("offset_ms", [-29_000, 29_000, -30_000, 30_000, 0])
def test_ts_within_30_s_is_accepted(offset_ms):
    check_timestamp(NOW + offset_ms, NOW)


@pytest.mark.parametrize("offset_ms", [-31_000, 31_000, -30_001, 30_001, -(10**12)])
def test_ts_beyond_30_s_is_refused(offset_ms):
    with pytest.raises(AuthError) as err:
        check_timestamp(NOW + offset_ms, NOW)
    assert err.value.code == "ts_out_of_window"
    assert err.value.status == 401


# ---- nonces -------------------------------------------------------------------------------------


def test_claim_nonce_first_wins_and_keeps_90_s(r):
    addr = WALLET.address.lower()
    assert claim_nonce(r, addr, "n0nce123", "fp1", ref="bet-1") == (True, None)
    ttl = r.ttl(nonce_key(addr, "n0nce123"))
    assert NONCE_TTL_S - 2 <= ttl <= NONCE_TTL_S
    claimed, existing = claim_nonce(r, addr, "n0nce123", "fp1", ref="bet-2")
    assert not claimed
    assert existing == ("fp1", "bet-1")
    assert same_request_or_conflict(existing, "fp1") == "bet-1"
    with pytest.raises(ApiError) as err:
        same_request_or_conflict(existing, "fp2")
    assert (err.value.status, err.value.code) == (409, "nonce_conflict")


def test_nonces_are_keyed_by_address(r):
    assert claim_nonce(r, WALLET.address.lower(), "samenonce", "fp")[0]
    assert claim_nonce(r, OTHER.address.lower(), "samenonce", "fp")[0]


def test_same_signed_request_twice_is_a_retry_not_a_second_request(r):
    session = session_for(WALLET, SESSION_KEY)
    text = bet_text()
    sig = sign(SESSION_KEY, text)
    first = verify_signed_request(
        r, session, text=text, signature=sig, ts_ms=NOW, nonce="k2j3h4g5f6d7s8a9", now_ms=NOW, ref="bet-A"
    )
    assert first.retry_of is None
    again = verify_signed_request(
        r, session, text=text, signature=sig, ts_ms=NOW, nonce="k2j3h4g5f6d7s8a9", now_ms=NOW + 5, ref="bet-B"
    )
    assert again.retry_of == "bet-A"
    # the same request re-signed in the other v form is still the same request (keyed on the nonce)
    v01 = with_v(sig, int(sig[-2:], 16) - 27)
    third = verify_signed_request(
        r, session, text=text, signature=v01, ts_ms=NOW, nonce="k2j3h4g5f6d7s8a9", now_ms=NOW + 9, ref="bet-C"
    )
    assert third.retry_of == "bet-A"


def test_same_nonce_different_body_is_409(r):
    session = session_for(WALLET, SESSION_KEY)
    t1 = bet_text(stake="10")
    t2 = bet_text(stake="25")
    verify_signed_request(
        r, session, text=t1, signature=sign(SESSION_KEY, t1), ts_ms=NOW, nonce="k2j3h4g5f6d7s8a9", now_ms=NOW
    )
    with pytest.raises(ApiError) as err:
        verify_signed_request(
            r,
            session,
            text=t2,
            signature=sign(SESSION_KEY, t2),
            ts_ms=NOW,
            nonce="k2j3h4g5f6d7s8a9",
            now_ms=NOW,
        )
    assert (err.value.status, err.value.code) == (409, "nonce_conflict")


def test_checks_run_in_spec_order_and_a_refused_request_burns_no_nonce(r):
    session = session_for(WALLET, SESSION_KEY)
    text = bet_text()
    good = sign(SESSION_KEY, text)
    # bad signature and stale ts: the signature is reported first
    with pytest.raises(AuthError) as err:
        verify_signed_request(
            r,
            session,
            text=text,
            signature=sign(OTHER, text),
            ts_ms=NOW,
            nonce="k2j3h4g5f6d7s8a9",
            now_ms=NOW + 60_000,
        )
    assert err.value.code == "wrong_signer"
    # good signature, stale ts: ts is refused and the nonce is not claimed
    with pytest.raises(AuthError) as err:
        verify_signed_request(
            r, session, text=text, signature=good, ts_ms=NOW, nonce="k2j3h4g5f6d7s8a9", now_ms=NOW + 31_000
        )
    assert err.value.code == "ts_out_of_window"
    assert r.exists(nonce_key(session.address, "k2j3h4g5f6d7s8a9")) == 0
