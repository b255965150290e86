"""The listener's own subscriber (workers.pubsub_listener.Subscription) against a real Redis.

It replaces redis-py's PubSub on the hot path (one `bet:confirmed` message per bet), so what PubSub
did for us is checked here: channels and patterns, several messages per read in order, a message
larger than one read, AUTH with a username and the client name, a connection Redis drops, and one
that goes silent (its health check).
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import gevent
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


def test_a_silent_connection_is_pinged_and_given_up_when_no_answer_comes() -> None:
    """A half-open connection (here: a server that confirms the subscription, then never answers)."""
    server = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        conn.recv(4096)  # SUBSCRIBE c
        conn.sendall(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n")
        while data := conn.recv(4096):
            received.append(data)

    g = gevent.spawn(serve)
    r = redis.Redis("127.0.0.1", server.getsockname()[1], health_check_interval=0.2, socket_timeout=0.3)
    sub = Subscription(r, ["c"], [])
    deadline = time.monotonic() + 10
    try:
        with pytest.raises(redis.ConnectionError, match="no answer to a PING"):
            while time.monotonic() < deadline:
                assert sub.read(timeout_s=0.05) == []
        assert b"PING" in b"".join(received)
    finally:
        sub.close()
        g.kill()
        server.close()
