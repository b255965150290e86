"""Redis through redis-py, made cooperative by gevent's monkey patching (ADR-004).

One `BlockingConnectionPool` per process: a greenlet that finds every connection busy waits up to the
timeout for one instead of opening connection after connection; every socket has connect and read
timeouts so a dead Redis turns into an error (and a 503) within seconds, never a hang.
"""

from __future__ import annotations

import redis


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
    )
    return redis.Redis(connection_pool=pool)
