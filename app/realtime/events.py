"""A trader's events (`bet:*`, `balance`) with ids, so a reconnected socket can resume (docs/API.md).

Every publisher on ``tap:user:<address>`` goes through the Lua function `EMIT_LUA`: each event is
appended to the trader's Stream ``tap:ev:<address>`` (bounded: ~`STREAM_MAX` entries, `STREAM_TTL_MS`
after the last one) and published with the Stream entry's id spliced in as its first field,
``{"id":"1764230000000-0","type":…}``. Both happen in one script, so an event is in the Stream if and
only if it was published, and with the same id. Several events for one trader (a confirmation and the
new balance) travel as one pub/sub message, one JSON text per line: one message per bet for the
listener to relay.

A socket that comes back sends ``{"type":"resume","after":"<the last id it saw>"}``; the server replays
the Stream after that id and then the live events, skipping any id the socket already has — each
event once (app.realtime.taps, app.realtime.fanout).
"""

from __future__ import annotations

import orjson
import redis

from app.keys import events_key, user_channel
from app.units import format_money

STREAM_MAX = 1000  # events kept per trader (approximate trimming)
STREAM_TTL_MS = 24 * 3600 * 1000

# emit(stream key, channel, {json texts}, token, again): XADD each, then one PUBLISH of the texts with
# their ids. `token` (may be nil) is stored beside the first text as field `k`: a notifier retrying a
# round trip whose outcome it does not know passes `again` = N, and the events are emitted only if no
# entry among the stream's last N carries `token` (the first attempt did not run). Returns whether it
# emitted.
EMIT_LUA = f"""
local function emit(stream, channel, msgs, token, again)
  local n = tonumber(again)
  if n and n > 0 and token then
    for _, e in ipairs(redis.call('XREVRANGE', stream, '+', '-', 'COUNT', n)) do
      if e[2][3] == 'k' and e[2][4] == token then return false end
    end
  end
  local out = {{}}
  for i, m in ipairs(msgs) do
    local id
    if i == 1 and token and token ~= '' then
      id = redis.call('XADD', stream, 'MAXLEN', '~', {STREAM_MAX}, '*', 'm', m, 'k', token)
    else
      id = redis.call('XADD', stream, 'MAXLEN', '~', {STREAM_MAX}, '*', 'm', m)
    end
    out[#out + 1] = '{{"id":"' .. id .. '",' .. string.sub(m, 2)
  end
  if #out > 0 then
    redis.call('PEXPIRE', stream, {STREAM_TTL_MS})
    redis.call('PUBLISH', channel, table.concat(out, '\\n'))
  end
  return true
end
"""

# KEYS[1] the stream, ARGV[1] the channel, ARGV[2] the token, ARGV[3] again, ARGV[4..] the events.
_PUBLISH_LUA = (
    EMIT_LUA
    + """
local msgs = {}
for i = 4, #ARGV do msgs[#msgs + 1] = ARGV[i] end
emit(KEYS[1], ARGV[1], msgs, ARGV[2], ARGV[3])
return #msgs
"""
)


class Events:
    """The script that appends and publishes a trader's events (JSON objects as text) outside the bet
    scripts, which call `emit` themselves; app.bets.notify sends it, in commit order."""

    def __init__(self, r: redis.Redis) -> None:
        self.script = r.register_script(_PUBLISH_LUA)

    @staticmethod
    def keys_args(address: str) -> tuple[list[str], list[str]]:
        """The keys of `script` for `address`, and its args before the token, the retry window and the
        events (`EMIT_LUA`)."""
        return [events_key(address)], [user_channel(address)]


def balance_event(balance: int) -> bytes:
    """The `balance` event (SPEC §8) for a balance in micro-units."""
    return orjson.dumps({"type": "balance", "balance": format_money(balance)})


def rejected_event(bet_id: str, cell: str, reason: str) -> bytes:
    """The `bet:rejected` event (SPEC §8): a bet accepted (202) that will never commit, and why."""
    return orjson.dumps({"type": "bet:rejected", "bet_id": bet_id, "cell": cell, "reason": reason})


def with_id(entry_id: bytes | str, message: bytes) -> bytes:
    """`message` (a JSON object) with `"id"` as its first field, as `EMIT_LUA` publishes it."""
    eid = entry_id.encode() if isinstance(entry_id, str) else entry_id
    return b'{"id":"' + eid + b'",' + message[1:]


def parse_id(raw: str | bytes) -> tuple[int, int] | None:
    """A Stream id `<ms>-<seq>` as a comparable pair; None if it is not one."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, sep, seq = text.partition("-")
    if not sep or len(text) > 41 or not text.isascii() or not ms.isdigit() or not seq.isdigit():
        return None
    return int(ms), int(seq)


def message_id(frame_text: bytes) -> tuple[int, int] | None:
    """The id of a published event (`{"id":"<id>",…`), or None for a message without one."""
    if not frame_text.startswith(b'{"id":"'):
        return None
    end = frame_text.find(b'"', 7)
    return parse_id(frame_text[7:end]) if end > 0 else None
