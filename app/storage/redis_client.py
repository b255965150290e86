"""Redis through redis-py, made cooperative by gevent's monkey patching (ADR-004).

One `BlockingConnectionPool` per process: a greenlet that finds every connection busy waits up to the
timeout for one instead of opening connection after connection; every socket has connect and read
timeouts so a dead Redis turns into an error (and a 503) within seconds, never a hang.

The pool checks each connection it hands out for unread bytes (`can_read()`): a greenlet killed in
the middle of a command (a dropped websocket's reader) returns its connection with a reply still on
the wire, and the next user would read that reply as its own. redis-py makes that check with a
zero-timeout `poll` which, under gevent's patched `select`, goes through the hub (watchers, a Timeout,
a switch): ~95 µs of the ~110 µs a pooled command cost (BENCHMARKS.md, "Where the microseconds go").
`_Connection` keeps the check but makes it with the real `poll(2)` — one syscall, no switch.
"""

from __future__ import annotations

import select
from typing import Any

import redis
from gevent import monkey

# The unpatched poll: a zero-timeout readiness check never needs the hub.
_poll: Any = monkey.get_original("select", "poll") if hasattr(select, "poll") else None


class _Connection(redis.Connection):
    """A connection whose non-blocking `can_read()` costs one real `poll(2)` call."""

    def can_read(self, timeout: float = 0) -> bool:
        sock = self._sock
        reader = getattr(self._parser, "_reader", None)  # hiredis
        if timeout or sock is None or _poll is None or reader is None or getattr(sock, "pending", None):
            return bool(super().can_read(timeout))
        if reader.has_data():
            return True
        p = _poll()
        p.register(sock.fileno(), select.POLLIN)
        # Readable, hung up or in error: the pool reconnects it (data left over, or a closed peer).
        return bool(p.poll(0))


def make_redis(url: str, *, pool_size: int, timeout_s: float, client_name: str = "tap") -> redis.Redis:
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size,
        timeout=timeout_s,  # wait this long for a free pooled connection
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        socket_keepalive=True,
        health_check_interval=30,
        client_name=client_name,
        decode_responses=False,
        connection_class=_Connection,
    )
    return redis.Redis(connection_pool=pool)
