"""A Redis lease for singleton workers (the price feed, later the resolver).

During a SIGHUP reload gunicorn runs the old and the new worker side by side; only the holder of a
lease may act. The lease expires by itself if its holder dies, and is released on a clean stop so
the successor takes over within a second.
"""

from __future__ import annotations

import secrets

import redis

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RedisLease:
    def __init__(self, r: redis.Redis, key: str, ttl_ms: int) -> None:
        self.r = r
        self.key = key
        self.ttl_ms = ttl_ms
        self.token = secrets.token_hex(16)
        self.held = False
        self._renew = r.register_script(_RENEW)
        self._release = r.register_script(_RELEASE)

    def acquire(self) -> bool:
        self.held = bool(self.r.set(self.key, self.token, nx=True, px=self.ttl_ms))
        return self.held

    def renew(self) -> bool:
        """Extend the lease; False (and no longer held) if it expired and someone else took it."""
        self.held = bool(self._renew(keys=[self.key], args=[self.token, self.ttl_ms]))
        return self.held

    def release(self) -> None:
        if self.held:
            self.held = False
            self._release(keys=[self.key], args=[self.token])
