#!/usr/bin/env python3
"""Micro-benchmark: what verifying one signed request costs (SPEC §6, ADR-007).

    .venv/bin/python loadtest/bench_sigverify.py            # CPU only
    .venv/bin/python loadtest/bench_sigverify.py --redis-url redis://127.0.0.1:6390/0   # + nonce claim

Compares the fast path the server uses (`app.auth.signatures.recover_personal_sign`: keccak-256 via
pycryptodome + libsecp256k1 recovery via coincurve) with ``eth_account.Account.recover_message``,
breaks the fast path into its steps, and times the whole signature step of a bet (build the text,
recover, compare with the session's keys). Each figure is the median of `--repeat` runs of
`--number` calls, in microseconds per call; the minimum is shown too (least disturbed by other load).
Target from the issue: ≤ 120 µs per request for the verification.
"""

from __future__ import annotations

import argparse
import platform
import secrets
import statistics
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import coincurve
from eth_account import Account
from eth_account.messages import encode_defunct

from app.auth.sessions import Session
from app.auth.signatures import (
    bet_signing_text,
    keccak256,
    parse_signature,
    personal_sign_hash,
    recover_personal_sign,
    recover_personal_sign_reference,
    request_fingerprint,
    verify_signer,
)
from app.config import Settings

TARGET_US = 120.0


def bench(fn, number: int, repeat: int) -> tuple[float, float]:
    fn()  # warm up
    runs = timeit.repeat(fn, number=number, repeat=repeat)
    per_call = [t / number * 1e6 for t in runs]
    return statistics.median(per_call), min(per_call)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--number", type=int, default=2000, help="calls per run")
    p.add_argument("--repeat", type=int, default=7, help="runs per figure")
    p.add_argument("--redis-url", help="also time the nonce claim (SET NX GET EX) against this Redis")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = p.parse_args(argv)

    settings = Settings.from_env({})
    wallet, key = Account.create(), Account.create()
    session = Session(wallet.address.lower(), key.address.lower(), 1, 2**62, "tap:sess:bench")
    fields = {
        "cell": "1763712005:6712",
        "stake": "10",
        "min_multiplier": "2.5",
        "nonce": "k2j3h4g5f6d7s8a9",
        "ts": 1763711990123,
    }
    text = bet_signing_text(settings, address=session.address, **fields)
    signature = "0x" + bytes(key.sign_message(encode_defunct(text=text)).signature).hex()
    sig_bytes = bytes.fromhex(signature[2:])
    sig65 = parse_signature(signature)
    digest = personal_sign_hash(text)
    pub = coincurve.PublicKey.from_signature_and_message(sig65, digest, hasher=None).format(compressed=False)
    assert recover_personal_sign(text, signature) == key.address.lower()

    def signature_step() -> None:
        t = bet_signing_text(settings, address=session.address, **fields)
        verify_signer(session, t, signature)

    rows: list[tuple[str, float, float]] = []
    n, r = args.number, args.repeat
    rows.append(
        (
            "eth_account.Account.recover_message",
            *bench(
                lambda: Account.recover_message(encode_defunct(text=text), signature=sig_bytes),
                max(200, n // 5),
                r,
            ),
        )
    )
    rows.append(
        (
            "recover_personal_sign_reference (strict parse + eth-account)",
            *bench(lambda: recover_personal_sign_reference(text, signature), max(200, n // 5), r),
        )
    )
    rows.append(
        (
            "recover_personal_sign (fast path, total)",
            *bench(lambda: recover_personal_sign(text, signature), n, r),
        )
    )
    rows.append(
        ("  parse_signature (hex, v, r/s range, low s)", *bench(lambda: parse_signature(signature), n, r))
    )
    rows.append(("  keccak256 of the EIP-191 message", *bench(lambda: personal_sign_hash(text), n, r)))
    rows.append(
        (
            "  coincurve recover (libsecp256k1)",
            *bench(lambda: coincurve.PublicKey.from_signature_and_message(sig65, digest, hasher=None), n, r),
        )
    )
    rows.append(("  keccak256 of the public key", *bench(lambda: keccak256(pub[1:]), n, r)))
    rows.append(("bet signature step: text + verify_signer", *bench(signature_step, n, r)))
    rows.append(("request_fingerprint (sha256 of the text)", *bench(lambda: request_fingerprint(text), n, r)))

    if args.redis_url:
        import redis

        from app.auth.signatures import claim_nonce

        client = redis.Redis.from_url(args.redis_url)
        counter = iter(range(10**9))

        def claim() -> None:
            claim_nonce(client, session.address, f"bench{next(counter)}{secrets.token_hex(4)}", "fp", "ref")

        rows.append(("claim_nonce: one Redis round trip (loopback)", *bench(claim, max(200, n // 4), r)))

        import time

        from app.auth.ratelimit import Limits, SessionLookup
        from app.auth.sessions import create_session, lookup_session

        now_ms = int(time.time() * 1000)
        token, _ = create_session(
            client,
            address=session.address,
            session_key=session.session_key,
            user_id=1,
            now_ms=now_ms,
            expires_at=now_ms + 3_600_000,
        )
        lookup = SessionLookup(client, Limits(60, 10**9, 10**9))
        rows.append(
            (
                "session lookup, plain GET without rate counters (for comparison)",
                *bench(lambda: lookup_session(client, token, int(time.time() * 1000)), max(200, n // 4), r),
            )
        )
        rows.append(
            (
                "session lookup + IP/address rate counters (one Lua call)",
                *bench(lambda: lookup(token, "203.0.113.1", int(time.time() * 1000)), max(200, n // 4), r),
            )
        )

    fast = next(row for row in rows if row[0].startswith("recover_personal_sign (fast"))
    ref = rows[0]
    if args.markdown:
        print(
            f"Python {platform.python_version()}, coincurve {coincurve.__version__ if hasattr(coincurve, '__version__') else ''}, "
            f"{platform.machine()}; median (min) of {r} runs, µs per call\n"
        )
        print("| what | µs/call median | min |")
        print("|---|---:|---:|")
        for name, med, lo in rows:
            print(f"| {name.strip()} | {med:.1f} | {lo:.1f} |")
    else:
        width = max(len(name) for name, _, _ in rows)
        print(f"{'what':<{width}}  median µs   min µs")
        for name, med, lo in rows:
            print(f"{name:<{width}}  {med:9.1f}  {lo:7.1f}")
    speedup = ref[1] / fast[1]
    verdict = "meets" if fast[1] <= TARGET_US else "MISSES"
    print(
        f"\nfast path {fast[1]:.1f} µs vs eth-account {ref[1]:.1f} µs ({speedup:.1f}x); {verdict} the ≤ {TARGET_US:.0f} µs target"
    )
    return 0 if fast[1] <= TARGET_US else 1


if __name__ == "__main__":
    sys.exit(main())
