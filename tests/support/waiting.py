"""Waiting in tests without betting on the machine's speed.

A test that sleeps a fixed time and then asserts passes or fails by luck: on a busy machine the thing
it waits for may not have happened yet. `wait_until` polls a condition instead, with a generous
deadline, and fails with a message that says what did not happen. It only ever makes a test wait
longer when the machine is slow, never shorter, so what a test asserts stays the same.

Time is `time.monotonic()` and sleeping is `time.sleep`, which the test process has patched to
gevent's (see conftest.py), so the other greenlets run while a test waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.01,
    what: str = "condition",
    ignore: tuple[type[BaseException], ...] = (),
) -> Any:
    """Poll `predicate()` until it returns something truthy, and return that value.

    Fails (AssertionError) after `timeout` seconds. Exceptions of the types in `ignore` count as
    "not yet" (e.g. connection refused while a server starts); the last one is named in the failure.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
        except ignore as exc:
            last_error, value = exc, None
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    detail = f" (last error: {last_error!r})" if last_error is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")


def record_results(monkeypatch, obj: object, name: str) -> list[Any]:
    """Spy on the public method `obj.name()` (no arguments): returns the list of its results so far.

    For waiting on what a worker has done ("b has asked for the lease twice") instead of sleeping."""
    results: list[Any] = []
    real = getattr(obj, name)

    def spy() -> Any:
        results.append(real())
        return results[-1]

    monkeypatch.setattr(obj, name, spy)
    return results
