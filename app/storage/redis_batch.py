"""Concurrent greenlets' Redis script calls, sent in one pipeline: one round trip for many taps.

Under load many taps are in flight at once, each needing its own Redis script call (the rate counter,
the claim). Sent one by one, each call costs a pool checkout, a send, a hub wake-up for its reply and
a parse: most of a tap's Redis cost is per round trip, not per command. `ScriptBatcher.call` instead
joins an open batch; the greenlet that opened it (the leader) yields for `window_s` (0: until the hub
has run every greenlet that is ready now), then sends the whole batch in one pipeline (EVALSHA, no
MULTI: each script stays atomic on its own, as before) and hands each caller its own reply or error.

The semantics per call do not change: each caller gets its script's result or the exception that
call raised (a per-command error, or the pipeline's connection error for everyone in it), and a
caller's script runs exactly once. A leader killed while it waits still sends the others' calls;
killed while it hands the replies over, the rest are handed over by another greenlet.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import gevent
import hiredis
import redis
from gevent.event import AsyncResult
from redis.commands.core import Script

log = logging.getLogger(__name__)


def evalsha(script: Script, keys: Sequence[Any], args: Sequence[Any]) -> tuple[Any, ...]:
    """The command that runs a registered script by its SHA, for `send_commands`. A NOSCRIPT reply
    means Redis lost its scripts: `ScriptBatcher` then runs that call on its own (which loads it);
    the notifier, whose calls must keep their order, loads its scripts in front of each batch."""
    return ("EVALSHA", script.sha, len(keys), *keys, *args)


def send_commands(r: redis.Redis, commands: Sequence[Sequence[Any]]) -> list[Any]:
    """Every command in one write on one pooled connection, then each one's reply in order; an error
    reply (e.g. NOSCRIPT, a script's own error) is returned as its exception, not raised.

    What a pipeline without MULTI does, minus redis-py's Pipeline machinery: the commands are packed
    by hiredis in C (redis-py packs each argument in a Python generator), sent with one `sendall`, and
    the replies read without the retry wrapper or `SCRIPT EXISTS` before each execute. Measured: see
    BENCHMARKS.md ("Redis batches without redis-py's Pipeline"). A connection error (or a kill while
    reading) disconnects the connection, so no half-read reply is ever handed to the next user, and
    is raised: whether the commands ran is then unknown, as with a pipeline.
    """
    try:
        packed = b"".join([hiredis.pack_command(tuple(c)) for c in commands])
    except TypeError as exc:  # an argument that is not str, bytes, int or float: as redis-py says it
        raise redis.exceptions.DataError(str(exc)) from None
    pool = r.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command([packed])  # a list of chunks (bytes alone would be iterated)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except redis.exceptions.ResponseError as exc:
                replies.append(exc)
        return replies
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def _interrupted(when: str) -> redis.exceptions.ConnectionError:
    """What the other callers of a batch get when its sender is killed (a socket's reader past its
    linger, a shutdown) mid-round-trip: whether their scripts ran is unknown, as when a connection
    drops, and the kill is the sender's, not theirs (re-raised to them, a GreenletExit would end their
    greenlets as if they had been killed)."""
    return redis.exceptions.ConnectionError(f"the batch's sender was interrupted {when}")


class _Call:
    __slots__ = ("args", "keys", "result", "script")

    def __init__(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> None:
        self.script, self.keys, self.args = script, keys, args
        self.result: AsyncResult = AsyncResult()


class ScriptBatcher:
    """Batches `Script` calls of concurrent greenlets into one pipeline (see the module docstring)."""

    def __init__(
        self, r: redis.Redis, *, window_s: float = 0.0, max_batch: int = 64, observe: Any = None
    ) -> None:
        self.r = r
        self.window_s = window_s
        self.max_batch = max(1, max_batch)
        self._open: list[_Call] | None = None
        self._observe = observe  # e.g. a Histogram's observe: calls per round trip

    def call(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """`script(keys, args)`, sent with whatever other greenlets call meanwhile."""
        me = _Call(script, keys, args)
        batch = self._open
        if batch is not None:
            batch.append(me)
            if len(batch) >= self.max_batch:
                self._open = None  # full: the leader sends it when it wakes; new callers start another
            return me.result.get()
        if self.max_batch == 1:
            self._send([me])
            return me.result.get()
        batch = self._open = [me]
        try:
            gevent.sleep(self.window_s)
        except BaseException:
            if self._open is batch:
                self._open = None
            if len(batch) > 1:  # killed while the others wait: they are still sent, ours is not
                gevent.spawn(self._send, batch[1:])
            raise
        if self._open is batch:
            self._open = None
        self._send(batch)
        return me.result.get()

    def _send(self, batch: list[_Call]) -> None:
        if self._observe is not None:
            self._observe(len(batch))
        try:
            replies = send_commands(self.r, [evalsha(c.script, c.keys, c.args) for c in batch])
        except BaseException as exc:  # the connection failed: every call in it gets the error
            err = exc if isinstance(exc, Exception) else _interrupted("while the batch was sent")
            for c in batch:
                c.result.set_exception(err)
            if not isinstance(exc, Exception):
                raise
            return
        self._hand_over(list(zip(batch, replies, strict=True)))

    def _hand_over(self, pending: list[tuple[_Call, Any]]) -> None:
        """Each call its reply. A script Redis forgot is run alone, a round trip of its own: a sender
        killed during it leaves that call's outcome unknown (`_interrupted`), and a new greenlet
        hands over the rest: no caller waits forever on a reply that was read."""
        for i, (c, reply) in enumerate(pending):
            if isinstance(reply, redis.exceptions.NoScriptError):
                # Redis restarted or flushed its scripts: run this one alone (redis-py loads it)
                try:
                    c.result.set(c.script(keys=list(c.keys), args=list(c.args)))
                except Exception as exc:  # noqa: BLE001 - handed to its caller
                    c.result.set_exception(exc)
                except BaseException:
                    c.result.set_exception(_interrupted("while the script ran alone"))
                    if i + 1 < len(pending):
                        gevent.spawn(self._hand_over, pending[i + 1 :])
                    raise
            elif isinstance(reply, Exception):
                c.result.set_exception(reply)
            else:
                c.result.set(reply)


class _BatchedScript:
    """A `Script` look-alike (`script(keys=…, args=…)`) whose calls go through a batcher."""

    __slots__ = ("_batch", "_script", "sha")

    def __init__(self, script: Script, batch: ScriptBatcher) -> None:
        self._script, self._batch, self.sha = script, batch, script.sha

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None) -> Any:
        if client is not None:  # an explicit client (a pipeline): not batched
            return self._script(keys=keys, args=args, client=client)
        return self._batch.call(self._script, keys, args)


def batched(script: Script, batch: ScriptBatcher | None) -> Any:
    """`script` itself without a batcher; else the same call through `batch`."""
    return script if batch is None else _BatchedScript(script, batch)
