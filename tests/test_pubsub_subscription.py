"""The listener's own subscriber (workers.pubsub_listener.Subscription) against a real Redis.

It replaces redis-py's PubSub on the hot path (one `bet:confirmed` message per bet), so what PubSub
did for us is checked here: channels and patterns, several messages per read in order, a message
larger than one read, AUTH with a username and the client name, and a connection Redis drops.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import redis

from app.storage.redis_client import make_redis
from tests.support.waiting import wait_until
from workers.pubsub_listener import READ_BYTES, Subscription


def _collect(sub: Subscription, want: int) -> list[tuple[bytes, bytes]]:
    got: list[tuple[bytes, bytes]] = []
    wait_until(lambda: got.extend(sub.read(timeout_s=0.05)) or len(got) >= want, what=f"{want} messages")
    return got


def test_channels_and_patterns_arrive_in_order_and_a_large_message_whole(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    sub = Subscription(make_redis(redis_url, pool_size=2, timeout_s=2), ["tap:price"], ["tap:user:*"])
    try:
        assert sub.read(timeout_s=0.05) == []  # nothing yet: the timeout, not an error
        big = b"x" * (3 * READ_BYTES + 17)
        pipe = r.pipeline(transaction=False)
        pipe.publish("tap:price", b"p1")
        pipe.publish("tap:user:0xab", b"u1")
        pipe.publish("tap:other", b"never")  # not subscribed
        pipe.publish("tap:user:0xcd", big)
        pipe.publish("tap:price", b"p2")
        pipe.execute()
        assert _collect(sub, 4) == [
            (b"tap:price", b"p1"),
            (b"tap:user:0xab", b"u1"),
            (b"tap:user:0xcd", big),
            (b"tap:price", b"p2"),
        ]
    finally:
        sub.close()


def test_auth_with_a_username_and_the_client_name(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser(
        "listener", enabled=True, passwords=["+s3cret"], keys=["*"], channels=["*"], commands=["+@all"]
    )
    u = urlsplit(redis_url)
    url = f"redis://listener:s3cret@{u.hostname}:{u.port}/0"
    sub = Subscription(
        make_redis(url, pool_size=2, timeout_s=2, client_name="tap-listener"), ["tap:price"], []
    )
    try:
        names = [c["name"] for c in admin.client_list() if c.get("user") == "listener"]
        assert names == ["tap-listener"]
        admin.publish("tap:price", b"p")
        assert _collect(sub, 1) == [(b"tap:price", b"p")]
    finally:
        sub.close()
        admin.acl_deluser("listener")


def test_a_refused_password_and_a_dropped_connection_are_connection_errors(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)
    u = urlsplit(redis_url)
    with pytest.raises(redis.ConnectionError):
        Subscription(
            make_redis(f"redis://nobody:wrong@{u.hostname}:{u.port}/0", pool_size=2, timeout_s=2), ["c"], []
        )
    sub = Subscription(make_redis(redis_url, pool_size=2, timeout_s=2), ["tap:price"], [])
    try:
        admin.client_kill_filter(_type="pubsub")
        with pytest.raises(redis.ConnectionError):
            wait_until(lambda: sub.read(timeout_s=0.05) and False, what="the dropped connection")
    finally:
        sub.close()
