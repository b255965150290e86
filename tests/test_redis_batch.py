"""Concurrent script calls batched into one pipeline (app/storage/redis_batch.py): each caller gets its
own reply or its own error, exactly once, whatever the others do."""

from __future__ import annotations

import gevent
import pytest
import redis

from app.storage.redis_batch import ScriptBatcher, batched
from app.storage.redis_client import make_redis

_INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
_FAIL = "if ARGV[1] == 'bad' then return redis.error_reply('refused') end return ARGV[1]"


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    return make_redis(redis_url, pool_size=4, timeout_s=2)


def test_concurrent_calls_share_round_trips_and_each_gets_its_own_reply(r):
    sizes: list[int] = []
    batch = ScriptBatcher(r, max_batch=16, observe=sizes.append)
    incr = batched(r.register_script(_INCR), batch)
    replies = gevent.joinall([gevent.spawn(incr, keys=["n"], args=[1]) for _ in range(40)], raise_error=True)
    assert sorted(g.value for g in replies) == list(range(1, 41))  # each call ran once, in one order
    assert int(r.get("n")) == 40
    assert sum(sizes) == 40 and max(sizes) <= 16 and len(sizes) < 40  # batched, never past the bound


def test_an_error_reaches_only_its_caller(r):
    batch = ScriptBatcher(r)
    script = batched(r.register_script(_FAIL), batch)
    greenlets = [gevent.spawn(script, keys=["k"], args=[arg]) for arg in ("a", "bad", "c")]
    gevent.joinall(greenlets)
    assert greenlets[0].value == b"a" and greenlets[2].value == b"c"
    assert isinstance(greenlets[1].exception, redis.ResponseError)


def test_a_script_redis_forgot_is_loaded_and_run_once(r):
    batch = ScriptBatcher(r)
    incr = batched(r.register_script(_INCR), batch)
    assert incr(keys=["m"], args=[5]) == 5
    r.script_flush()
    assert gevent.joinall([gevent.spawn(incr, keys=["m"], args=[1]) for _ in range(3)], raise_error=True)
    assert int(r.get("m")) == 8


def test_a_dead_connection_fails_every_call_of_its_batch(r, redis_server):
    batch = ScriptBatcher(r)
    incr = batched(r.register_script(_INCR), batch)
    incr(keys=["z"], args=[1])
    redis_server.stop()
    try:
        greenlets = [gevent.spawn(incr, keys=["z"], args=[1]) for _ in range(3)]
        gevent.joinall(greenlets)
        assert all(isinstance(g.exception, redis.ConnectionError) for g in greenlets)
    finally:
        redis_server.start()
