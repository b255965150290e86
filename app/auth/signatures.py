"""Signed requests (SPEC §6, ADR-007): EIP-191 recovery, signer, freshness and nonce checks.

The bet endpoint calls these in the SPEC's order, after its schema and `login_required`:

    text = bet_signing_text(settings, address=session.address, cell=cell, stake=stake,
                            min_multiplier=min_multiplier, nonce=nonce, ts=ts)
    verify_signer(session, text, signature)                 # 401 signature_* / wrong_signer
    check_timestamp(ts, now_ms)                             # 401 ts_out_of_window
    fingerprint = request_fingerprint(text)
    claimed, existing = claim_nonce(redis, session.address, nonce, fingerprint, ref=bet_id)
    if not claimed: same_request_or_conflict(existing, fingerprint)  # 409 nonce_conflict, or the retry

or all three at once with `verify_signed_request`.

Replay protection rests on the nonce, never on signature bytes: one signature has several byte forms
(v as 0/1 or 27/28, s or n − s), so the fingerprint stored with a nonce is a hash of the *signed
text* and high-s forms are refused outright (EIP-2). Domain and chain id are part of the signed text,
so a signature made for another deployment or chain recovers some other address and is refused.

Fast path: keccak-256 (safe-pysha3, a C extension) of the EIP-191 message, then libsecp256k1's public-key
recovery through coincurve, then keccak of the public key: about 67 µs here (with pycryptodome's keccak,
whose ctypes call cost ~12 µs a hash against ~2.4 µs for safe-pysha3: ``loadtest/tap_micro.py keccak``)
against about 180 µs for ``eth_account.Account.recover_message`` (``loadtest/bench_sigverify.py``;
figures in BENCHMARKS.md).
A property test proves both give the same address on random keys and messages.
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import NamedTuple, Protocol

import redis
from coincurve import PublicKey
from sha3 import keccak_256

from app.auth import errors as E
from app.auth.errors import AuthError, InvalidRequest, SignatureError
from app.config import Settings
from app.keys import nonce_key

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N = SECP256K1_N // 2

TS_WINDOW_MS = 30_000  # |server_now − ts| ≤ 30 s, boundary inclusive (ADR-007)
NONCE_TTL_S = 90  # 30 s window + 60 s margin (ADR-007 v1.2)

_SIGNATURE_RE = re.compile(r"0x[0-9a-fA-F]{130}")
_EIP191_PREFIX = b"\x19Ethereum Signed Message:\n"


class SessionLike(Protocol):
    @property
    def address(self) -> str: ...  # lowercase 0x hex

    @property
    def session_key(self) -> str | None: ...  # lowercase 0x hex


class NonceRecord(NamedTuple):
    """What `claim_nonce` stored for a nonce: the request's fingerprint and the caller's reference."""

    fingerprint: str
    ref: str


class SignedCheck(NamedTuple):
    signer: str  # lowercase address that signed: the session key or the wallet
    fingerprint: str  # request_fingerprint(text)
    retry_of: str | None  # None: nonce freshly claimed; else the `ref` stored by the first request


# ---- hashing and recovery -----------------------------------------------------------------------


def keccak256(data: bytes) -> bytes:
    """Ethereum's keccak-256 (not NIST SHA3-256): safe-pysha3, ~5× cheaper a call than pycryptodome's."""
    return keccak_256(data).digest()


@functools.lru_cache(maxsize=4096)
def to_checksum_address(address: str) -> str:
    """The EIP-55 form of a 0x-prefixed 20-byte hex address given in any case: each letter upper-case
    where the keccak of the lower-case hex has a nibble ≥ 8 there.

    eth_utils' own goes through pycryptodome's keccak (~15 µs a call here, against ~4 µs), and
    GET /api/v1/me, `auth:ok` and SIWE checks ask for the same few addresses again and again: cached.
    The caller has checked the format (SIWE's and the session's regexes)."""
    body = address[2:].lower()
    digest = keccak_256(body.encode()).hexdigest()
    return "0x" + "".join(c.upper() if d in "89abcdef" else c for c, d in zip(body, digest[:40], strict=True))


def personal_sign_hash(text: str) -> bytes:
    """keccak256("\\x19Ethereum Signed Message:\\n" + len(bytes) + bytes), bytes = UTF-8 of `text`."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest("the signed text is not valid Unicode") from None
    return keccak256(_EIP191_PREFIX + str(len(data)).encode() + data)


def parse_signature(signature: object) -> bytes:
    """Check a 65-byte ``0x`` hex signature and return it as r ‖ s ‖ recid (recid 0 or 1).

    Accepts v in {0, 1, 27, 28}. Refuses anything else, r or s out of range, and high s
    (s > n/2, EIP-2): one valid signature must have exactly one accepted (r, s) form.
    """
    if not isinstance(signature, str) or len(signature) != 132 or not _SIGNATURE_RE.fullmatch(signature):
        raise SignatureError(
            "signature must be 0x followed by 130 hex digits (65 bytes: r, s, v)", code=E.SIGNATURE_MALFORMED
        )
    raw = bytes.fromhex(signature[2:])
    v = raw[64]
    if v in (27, 28):
        recid = v - 27
    elif v in (0, 1):
        recid = v
    else:
        raise SignatureError("signature v must be 27, 28, 0 or 1", code=E.SIGNATURE_MALFORMED)
    r = int.from_bytes(raw[:32], "big")
    s = int.from_bytes(raw[32:64], "big")
    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        raise SignatureError("signature r or s is out of range", code=E.SIGNATURE_INVALID)
    if s > SECP256K1_HALF_N:
        raise SignatureError(
            "signature has a high s value; use the canonical low-s form (EIP-2)", code=E.SIGNATURE_HIGH_S
        )
    return raw[:64] + bytes((recid,))


def recover_personal_sign(text: str, signature: str) -> str:
    """The lowercase 0x address that signed `text` with EIP-191 personal_sign (fast path).

    Raises `SignatureError` (401) with code signature_malformed, signature_high_s or
    signature_invalid. Never checks *who* signed: see `verify_signer`.
    """
    sig = parse_signature(signature)
    digest = personal_sign_hash(text)
    try:
        pub = PublicKey.from_signature_and_message(sig, digest, hasher=None)
    except (ValueError, TypeError):
        raise SignatureError(
            "the signature does not recover a public key", code=E.SIGNATURE_INVALID
        ) from None
    return "0x" + keccak256(pub.format(compressed=False)[1:])[12:].hex()


def recover_personal_sign_reference(text: str, signature: str) -> str:
    """Same contract as `recover_personal_sign`, through ``eth_account.Account.recover_message``.

    Used for SIWE login (rare; the reference implementation is worth its ~200 µs there) and by the
    equivalence tests. The same strict `parse_signature` runs first, so high s is refused here too.
    """
    from eth_account import Account
    from eth_account.messages import encode_defunct

    sig = parse_signature(signature)
    try:
        message = encode_defunct(text=text)
    except UnicodeEncodeError:
        raise InvalidRequest("the signed text is not valid Unicode") from None
    try:
        address = Account.recover_message(message, signature=sig[:64] + bytes((sig[64] + 27,)))
    except Exception:  # noqa: BLE001 - eth-keys raises several types for a bad signature
        raise SignatureError(
            "the signature does not recover a public key", code=E.SIGNATURE_INVALID
        ) from None
    return address.lower()


# ---- the signed text ----------------------------------------------------------------------------


def bet_signing_text(
    settings: Settings,
    *,
    address: str,
    cell: str,
    stake: str,
    min_multiplier: str,
    nonce: str,
    ts: int | str,
) -> str:
    """The exact text a bet signature covers (SPEC §6): lines joined by LF, no trailing newline.

    Values go in exactly as the client sent them (`stake` "10" and "10.0" sign different texts);
    `address` is the session's wallet, lowercase; `ts` the integer milliseconds in decimal.
    """
    return (
        "tap-trading:bet\n"
        f"domain:{settings.siwe_domain}\n"
        f"chain-id:{settings.chain_id}\n"
        f"address:{address.lower()}\n"
        f"cell:{cell}\n"
        f"stake:{stake}\n"
        f"min-multiplier:{min_multiplier}\n"
        f"nonce:{nonce}\n"
        f"ts:{ts}"
    )


def request_fingerprint(text: str) -> str:
    """What identifies "the same request" for a nonce: a hash of the signed text, not the signature."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


# ---- the checks ---------------------------------------------------------------------------------


def verify_signer(session: SessionLike, text: str, signature: str) -> str:
    """Recover the signer of `text` and require it to be the session's key or its wallet.

    Returns the signer (lowercase). Raises `SignatureError` (signature_malformed, signature_high_s,
    signature_invalid) or `AuthError` wrong_signer, all 401.
    """
    signer = recover_personal_sign(text, signature)
    if signer == session.address or (session.session_key is not None and signer == session.session_key):
        return signer
    raise AuthError(
        "the request is not signed by this session's key or wallet "
        "(check the signed text: domain, chain-id, lowercase address, values exactly as sent)",
        code=E.WRONG_SIGNER,
    )


def check_timestamp(ts_ms: int, now_ms: int, window_ms: int = TS_WINDOW_MS) -> None:
    """Require |now − ts| ≤ 30 s (inclusive), in either direction; 401 ts_out_of_window."""
    if abs(now_ms - ts_ms) > window_ms:
        raise AuthError(
            f"ts must be within {window_ms // 1000} s of the server's time (server time {now_ms} ms)",
            code=E.TS_OUT_OF_WINDOW,
        )


def claim_nonce(
    r: redis.Redis, address: str, nonce: str, fingerprint: str, ref: str = ""
) -> tuple[bool, NonceRecord | None]:
    """Claim `nonce` for `address` with one ``SET key value NX GET EX 90`` (Redis ≥ 7.0).

    Returns ``(True, None)`` when this call claimed it, or ``(False, record)`` with what the first
    claimant stored: compare ``record.fingerprint`` to tell a retry of the same request (answer with
    the bet in ``record.ref``) from a different request reusing the nonce (409). `fingerprint` must
    not contain ``|``. Redis errors propagate (503, fail closed).
    """
    old = r.set(nonce_key(address, nonce), f"{fingerprint}|{ref}", nx=True, ex=NONCE_TTL_S, get=True)
    if old is None:
        return True, None
    text = old.decode() if isinstance(old, bytes) else str(old)
    fp, _, stored_ref = text.partition("|")
    return False, NonceRecord(fp, stored_ref)


def same_request_or_conflict(existing: NonceRecord, fingerprint: str) -> str:
    """For a nonce already claimed: the stored ref if it is the same request, else 409 nonce_conflict."""
    if existing.fingerprint != fingerprint:
        raise E.nonce_conflict()
    return existing.ref


def verify_signed_request(
    r: redis.Redis,
    session: SessionLike,
    *,
    text: str,
    signature: str,
    ts_ms: int,
    nonce: str,
    now_ms: int,
    ref: str = "",
) -> SignedCheck:
    """signature → ts → nonce, in the SPEC §6 order. See the module docstring for the codes.

    `ref` is stored with the nonce (e.g. the bet id you are about to create) and comes back as
    `retry_of` when the same signed request arrives again.
    """
    signer = verify_signer(session, text, signature)
    check_timestamp(ts_ms, now_ms)
    fingerprint = request_fingerprint(text)
    claimed, existing = claim_nonce(r, session.address, nonce, fingerprint, ref)
    if claimed:
        return SignedCheck(signer, fingerprint, None)
    assert existing is not None
    return SignedCheck(signer, fingerprint, same_request_or_conflict(existing, fingerprint))
