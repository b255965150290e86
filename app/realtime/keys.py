"""Redis pub/sub channel names of the real-time path (publishers and the listener share these)."""

from __future__ import annotations

import orjson

CHANNEL_PUBLIC = "tap:public"  # pre-serialised JSON for every websocket (grid, status from other workers)
CHANNEL_CONTROL = "tap:control"  # JSON for the workers themselves, never relayed: e.g. a session ended
USER_PREFIX = "tap:user:"
USER_PATTERN = USER_PREFIX + "*"


def user_channel(address: str) -> str:
    """The channel that reaches `address`'s websockets (publishers send the exact JSON text)."""
    return USER_PREFIX + address.lower()


def session_ended_message(session_key: str) -> bytes:
    """Published on CHANNEL_CONTROL at logout: every worker closes that session's sockets."""
    return orjson.dumps({"type": "session_ended", "session": session_key})


def ended_session(data: bytes) -> str | None:
    """The session key of a `session_ended` control message, or None for anything else."""
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if isinstance(msg, dict) and msg.get("type") == "session_ended" and isinstance(msg.get("session"), str):
        return msg["session"]
    return None
