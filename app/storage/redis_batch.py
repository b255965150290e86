"""Concurrent greenlets' Redis script calls, sent in one pipeline: one round trip for many taps.

Under load many taps are in flight at once, each needing its own Redis script call (the rate counter,
the claim). Sent one by one, each call costs a pool checkout, a send, a hub wake-up for its reply and
a parse: most of a tap's Redis cost is per round trip, not per command. `ScriptBatcher.call` instead
joins an open batch; the greenlet that opened it (the leader) yields for `window_s` (0: until the hub
has run every greenlet that is ready now), then sends the whole batch in one pipeline (EVALSHA, no
MULTI: each script stays atomic on its own, as before) and hands each caller its own reply or error.

The semantics per call do not change: each caller gets its script's result or the exception that
call raised (a per-command error, or the pipeline's connection error for everyone in it), and a
caller's script runs exactly once. A leader killed while it waits still sends the others' calls.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import gevent
import redis
from gevent.event import AsyncResult
from redis.commands.core import Script

log = logging.getLogger(__name__)


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
        pipe = self.r.pipeline(transaction=False)
        for c in batch:
            pipe.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
        try:
            replies = pipe.execute(raise_on_error=False)
        except BaseException as exc:  # the connection failed: every call in it gets the error
            for c in batch:
                c.result.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for c, reply in zip(batch, replies, strict=True):
            if isinstance(reply, redis.exceptions.NoScriptError):
                # Redis restarted or flushed its scripts: run this one alone (redis-py loads it)
                try:
                    c.result.set(c.script(keys=list(c.keys), args=list(c.args)))
                except Exception as exc:  # noqa: BLE001 - handed to its caller
                    c.result.set_exception(exc)
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
