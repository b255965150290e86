"""Concurrent script calls batched into one pipeline (app/storage/redis_batch.py): each caller gets its
own reply or its own error, exactly once, whatever the others do."""

from __future__ import annotations

import gevent
import gevent.event
import gevent.server
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


def test_a_leader_killed_while_it_waits_still_sends_the_others_calls(r):
    batch = ScriptBatcher(r, window_s=10)  # the leader waits 10 s for company
    incr = batched(r.register_script(_INCR), batch)
    leader = gevent.spawn(incr, keys=["w"], args=[100])
    gevent.sleep(0)  # the leader opens the batch and waits
    others = [gevent.spawn(incr, keys=["w"], args=[1]) for _ in range(3)]
    gevent.sleep(0)  # they join it
    leader.kill()
    gevent.joinall(others, timeout=5, raise_error=True)
    assert sorted(g.value for g in others) == [1, 2, 3]
    assert int(r.get("w")) == 3  # the killed leader's own call was never sent


def test_a_sender_killed_mid_round_trip_hands_the_others_an_unknown_outcome_not_its_kill(r):
    """Killed while it waits for Redis (a socket's reader past its linger, a shutdown), the sender
    re-raises its kill; the calls that joined its batch get a ConnectionError (ran or not: unknown),
    not the GreenletExit that would end their greenlets as if they had been killed themselves."""
    heard = gevent.event.Event()

    def silent(sock, _addr):  # a Redis that takes the bytes and never answers
        if sock.recv(65536):
            heard.set()
        gevent.event.Event().wait()

    server = gevent.server.StreamServer(("127.0.0.1", 0), silent)
    server.start()
    try:
        silent_redis = make_redis(f"redis://127.0.0.1:{server.server_port}/0", pool_size=4, timeout_s=30)
        batch = ScriptBatcher(silent_redis)
        script = r.register_script(_INCR)
        leader = gevent.spawn(batch.call, script, ["k"], [1])  # started in this order, they batch together
        others = [gevent.spawn(batch.call, script, ["k"], [1]) for _ in range(2)]
        assert heard.wait(timeout=5)
        leader.kill()
        gevent.joinall(others, timeout=5)
        assert all(isinstance(g.exception, redis.ConnectionError) for g in others)
        silent_redis.close()
    finally:
        server.stop(timeout=0)


class _Stuck:
    """A script Redis does not know (its EVALSHA answers NOSCRIPT), whose run alone never returns: a
    Redis that stopped answering, as far as the sender can tell."""

    sha = "0" * 40

    def __init__(self) -> None:
        self.running = gevent.event.Event()

    def __call__(self, keys=(), args=(), client=None):
        self.running.set()
        gevent.event.Event().wait()  # until killed


def test_a_sender_killed_while_a_forgotten_script_runs_alone_leaves_no_caller_waiting(r):
    """Redis forgot its scripts, so the leader runs each call of its batch alone; killed during one
    (a socket's reader past its linger), that call's caller learns its outcome is unknown and the
    calls after it still run, each once."""
    batch = ScriptBatcher(r)
    script = r.register_script(_INCR)
    incr = batched(script, batch)
    assert incr(keys=["f"], args=[0]) == 0
    r.script_flush()
    stuck = _Stuck()
    # Started in this order, they run in it: the leader opens a batch and yields, the others join it.
    leader = gevent.spawn(batch.call, script, ["f"], [1])
    waiting = gevent.spawn(batch.call, stuck, [], [])
    later = [gevent.spawn(batch.call, script, ["f"], [1]) for _ in range(2)]
    assert stuck.running.wait(timeout=5)  # the leader ran its own call alone, then is stuck in this one
    leader.kill()
    gevent.joinall([waiting, *later], timeout=5)
    assert isinstance(
        waiting.exception, redis.ConnectionError
    )  # ran or not: unknown, as when a reply is lost
    assert sorted(g.get(block=False) for g in later) == [2, 3]
    assert int(r.get("f")) == 3
