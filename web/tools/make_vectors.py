"""Write web/src/test/vectors.json: signed texts and signatures made by the server's own code.

    .venv/bin/python web/tools/make_vectors.py

The web app's unit tests compare their builders against these, so a drift between the Python side
(app/auth/signatures.py, app/auth/siwe.py) and the TypeScript side fails a test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from eth_account import Account  # noqa: E402
from eth_account.messages import encode_defunct  # noqa: E402

from app.auth.signatures import bet_signing_text  # noqa: E402
from app.auth.siwe import parse_message  # noqa: E402
from app.config import Settings  # noqa: E402

SESSION_KEY = "0x" + "11" * 32  # fixed test keys, never used for anything else
WALLET_KEY = "0x" + "22" * 32


def main() -> None:
    settings = Settings.from_env({"TAP_SIWE_DOMAIN": "localhost:8443", "TAP_CHAIN_ID": "1"})
    session, wallet = Account.from_key(SESSION_KEY), Account.from_key(WALLET_KEY)
    bet = {
        "cell": "1763712005:6712",
        "stake": "10",
        "min_multiplier": "2.5",
        "nonce": "k2j3h4g5f6d7s8a9",
        "ts": 1763711990123,
    }
    text = bet_signing_text(settings, address=wallet.address, **bet)
    signature = "0x" + bytes(session.sign_message(encode_defunct(text=text)).signature).hex()
    siwe = {
        "domain": "localhost:8443",
        "protocol": "https:",
        "address": wallet.address,
        "chainId": 1,
        "nonce": "8nT2qJ0cZb5YyR4LwX1mKd9e",
        "sessionKey": session.address,
        "issuedAt": "2025-11-21T09:00:00.000Z",
        "expirationTime": "2025-11-22T09:00:00.000Z",
    }
    siwe_text = "\n".join(
        [
            f"{siwe['domain']} wants you to sign in with your Ethereum account:",
            wallet.address,
            "",
            "Sign in to Tap Trading.",
            "",
            f"URI: https://{siwe['domain']}",
            "Version: 1",
            "Chain ID: 1",
            f"Nonce: {siwe['nonce']}",
            f"Issued At: {siwe['issuedAt']}",
            f"Expiration Time: {siwe['expirationTime']}",
            "Resources:",
            f"- urn:tap-trading:session-key:{session.address}",
        ]
    )
    parsed = parse_message(siwe_text)  # the server's strict parser accepts it
    assert parsed.session_key == session.address.lower()
    out = {
        "bet": {
            "sessionKey": SESSION_KEY,
            "domain": settings.siwe_domain,
            "chainId": settings.chain_id,
            "address": wallet.address,
            **bet,
            "text": text,
            "signature": signature,
        },
        "siwe": {**siwe, "text": siwe_text},
    }
    path = ROOT / "web" / "src" / "test" / "vectors.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(path)


if __name__ == "__main__":
    main()
