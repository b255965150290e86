"""A notification sent again after a Redis failure reaches the trader once (app.bets.notify).

The notifier sends each writer batch's events in one round trip and, after a failure, sends them
again. What Redis had already run must not be published a second time: a trader resuming from its
Stream would get the same `bet:confirmed` and `balance` twice, under new ids. Two real failures on a
real Redis:

- an error reply in the middle of a round trip (a script refused): the events before it ran, the
  events after it ran too, and only the refused one is still owed;
- a reply that never came (the client's timeout while Redis was busy): Redis ran the whole round trip
  afterwards, and the notifier cannot know it.
"""

from __future__ import annotations

import logging
import socket
from urllib.parse import urlsplit

import hiredis
import orjson
import pytest
import redis

from app.bets.notify import BetNotifier
from app.keys import events_key, user_channel
from app.realtime.events import balance_event
from tests.support.waiting import wait_until
from tests.test_claim_faults import BUSY_LUA

A, B, C = ("0x" + c * 40 for c in "abc")


@pytest.fixture(autouse=True)
def _info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="app.bets.notify")  # the notifier's "sent … at attempt n"


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in rec.getMessage() for rec in caplog.records)


def _published(sub: redis.client.PubSub, want: int) -> list[tuple[str, bytes]]:
    """Every message on the traders' channels until `want` have come and then none for 0.5 s."""
    got: list[tuple[str, bytes]] = []

    def more() -> bool:
        msg = sub.get_message(timeout=0.05)
        if msg and msg["type"] == "pmessage":
            got.append((msg["channel"].decode(), msg["data"]))
        return len(got) >= want

    wait_until(more, interval=0, what=f"{want} messages")
    while (msg := sub.get_message(timeout=0.5)) is not None:
        if msg["type"] == "pmessage":
            got.append((msg["channel"].decode(), msg["data"]))
    return got


def _balances(data: bytes) -> str:
    """The balance a published message carries (one `balance` event each here)."""
    return orjson.loads(data)["balance"]


def _stream(r: redis.Redis, address: str) -> list[bytes]:
    return [fields[b"m"] for _, fields in r.xrange(events_key(address))]


@pytest.fixture
def sub(redis_url: str):
    s = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    s.psubscribe(user_channel("*"))
    yield s
    s.close()


def test_after_an_error_reply_only_what_failed_is_sent_again(
    redis_url: str, sub, caplog: pytest.LogCaptureFixture
) -> None:
    r = redis.Redis.from_url(redis_url)
    r.set(events_key(B), "not a stream")  # B's script fails (WRONGTYPE); A's before it and C's after it run
    notifier = BetNotifier(r)
    for address, balance in ((A, 1), (B, 2), (C, 3)):
        notifier.on_commit(address, [balance_event(balance * 1_000_000)])
    notifier.flush()
    wait_until(lambda: _logged(caplog, "could not send"), what="the first attempt's failure")
    r.delete(events_key(B))
    wait_until(lambda: _logged(caplog, "sent 2 bet notifications at attempt 2"), what="the retry of B and C")

    got = _published(sub, 3)
    assert [(ch, _balances(data)) for ch, data in got] == [
        (user_channel(A), "1"),
        (user_channel(C), "3"),
        (user_channel(B), "2"),
    ]
    assert [len(_stream(r, x)) for x in (A, B, C)] == [1, 1, 1]


def test_a_round_trip_whose_reply_was_lost_is_not_published_twice(
    redis_url: str, sub, caplog: pytest.LogCaptureFixture
) -> None:
    class RetryLater(BetNotifier):
        RETRY_DELAYS_S = (2.0,)  # after Redis has run the first attempt (below)

    u = urlsplit(redis_url)
    busy = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379))
    r = redis.Redis.from_url(redis_url)
    impatient = redis.Redis.from_url(redis_url, socket_timeout=0.2)
    notifier = RetryLater(impatient)
    impatient.ping()  # the pool's connection exists before Redis is busy
    busy.sendall(hiredis.pack_command(("EVAL", BUSY_LUA, "0", "600000")))  # Redis busy for 0.6 s
    for balance in (1, 2):  # two ops of one trader in one round trip
        notifier.on_commit(A, [balance_event(balance * 1_000_000)])
    notifier.flush()
    wait_until(lambda: _logged(caplog, "could not send 2 bet notifications"), what="the client's timeout")
    # Redis runs the first attempt once it is free, though the client has given up on it
    wait_until(lambda: len(_stream(r, A)) == 2, what="the first attempt run late")
    assert not _logged(caplog, "at attempt 2")
    wait_until(lambda: _logged(caplog, "sent 2 bet notifications at attempt 2"), what="the retry")

    assert [_balances(data) for _, data in _published(sub, 2)] == ["1", "2"]
    assert len(_stream(r, A)) == 2
    busy.close()
