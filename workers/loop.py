"""The one way a long-running worker waits and stops: a `gevent.event.Event`.

Every worker sleeps through `wait()`, which returns as soon as `stop()` sets the event, so a stop
(shutdown, SIGHUP, a test's teardown) never waits out a poll interval: the supervisor joins each
worker in well under half a second instead of paying every worker's longest sleep.

- `Stoppable`: the stop event alone, for workers whose loop has its own shape (the price
  aggregator waits for quotes, an exchange client reads its socket, the simulator ticks).
- `LoopWorker`: the periodic shape most workers share: `step()` every `interval_s` until stopped.
"""

from __future__ import annotations

import gevent.event


class Stoppable:
    """A worker's stop switch: `stop()` sets it, `wait()` sleeps until it is set or the time is up."""

    def __init__(self) -> None:
        self._stop_event = gevent.event.Event()

    @property
    def stopping(self) -> bool:
        """True once `stop()` was called: the loop should finish what it holds and return."""
        return self._stop_event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, ending early on `stop()`; True if stopping."""
        return self._stop_event.wait(timeout=max(0.0, seconds))

    def stop(self) -> None:
        """Ask `run()` to return soon; never blocks."""
        self._stop_event.set()


class LoopWorker(Stoppable):
    """`step()` every `interval_s` seconds until `stop()`.

    `step()` may return a number of seconds to wait before the next step instead of `interval_s`
    (e.g. a longer pause while another process holds a lease). An exception from `step()` ends
    `run()`, so the supervisor logs it and restarts the worker with backoff; a worker handles the
    failures it expects (Redis away, the write queue full) inside `step()` and keeps looping.
    """

    interval_s: float = 1.0

    def run(self) -> None:
        try:
            while not self.stopping:
                delay = self.step()
                self.wait(self.interval_s if delay is None else delay)
        finally:
            self.on_stop()

    def step(self) -> float | None:
        """One round of the worker's job; returns the pause before the next one (None: interval_s)."""
        raise NotImplementedError

    def on_stop(self) -> None:
        """Called once when `run()` returns or raises (release a lease, close a connection)."""
