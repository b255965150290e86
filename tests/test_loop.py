"""The LoopWorker base: a stop never waits out an interval, and every periodic worker uses it."""

import gevent
import pytest

from tests.support.waiting import wait_until
from workers import runtime
from workers.loop import LoopWorker, Stoppable
from workers.supervisor import Supervisor

HOUR = 3600.0


class Counter(LoopWorker):
    name = "counter"
    interval_s = HOUR  # a stop that waited for the interval would hang the test

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.steps = 0
        self.stops = 0
        self.fail_at = fail_at

    def step(self) -> None:
        self.steps += 1
        if self.steps == self.fail_at:
            raise RuntimeError("step failed")

    def on_stop(self) -> None:
        self.stops += 1


def test_stop_wakes_a_worker_sleeping_through_a_long_interval():
    w = Counter()
    g = gevent.spawn(w.run)
    wait_until(lambda: w.steps == 1, what="the first step")  # then the worker sleeps for an hour
    w.stop()
    g.join(timeout=5)
    assert g.dead and g.successful()
    assert w.stops == 1


def test_step_may_ask_for_its_own_pause():
    class Quick(Counter):
        def step(self) -> float:
            super().step()
            if self.steps >= 3:
                self.stop()
            return 0.0  # no pause: three steps without waiting an hour

    w = Quick()
    g = gevent.spawn(w.run)
    g.join(timeout=5)
    assert g.dead and w.steps == 3 and w.stops == 1


def test_a_failing_step_ends_run_after_on_stop_so_the_supervisor_restarts_it():
    w = Counter(fail_at=1)
    sup = Supervisor(backoff_initial_s=0.01)
    sup.start(w)
    wait_until(lambda: w.steps == 2, what="crashed once, restarted")  # now sleeping through its interval
    assert w.stops == 1 and sup.restarts["counter"] == 1
    sup.stop(timeout=5)
    assert sup.greenlet("counter").dead


def test_wait_reports_whether_the_worker_is_stopping():
    s = Stoppable()
    assert s.wait(0) is False and not s.stopping
    s.stop()
    assert s.wait(HOUR) is True and s.stopping


@pytest.mark.parametrize(
    "name", ["feed-watch", "grid-publisher", "resolver", "week-rollover", "bet-reconciler"]
)
def test_every_periodic_worker_is_a_loop_worker(app, name):
    workers = {w.name: w for w in runtime.build_workers(app)}
    assert isinstance(workers[name], LoopWorker)


def test_every_worker_of_the_process_stops_without_waiting_out_its_interval(app, monkeypatch):
    """All the real workers, their intervals stretched to an hour: stopping still returns at once."""
    workers = runtime.build_workers(app)
    stepped: set[str] = set()

    def counted(w):
        step = w.step

        def step_and_count():
            delay = step()
            stepped.add(w.name)
            return delay

        return step_and_count

    loop_workers = [w for w in workers if isinstance(w, LoopWorker)]
    for w in loop_workers:
        w.interval_s = HOUR
        monkeypatch.setattr(w, "step", counted(w))
    sup = Supervisor()
    for w in workers:
        sup.start(w)
    # nothing yields between the end of a step and the wait after it: now every one of them waits
    wait_until(lambda: stepped == {w.name for w in loop_workers}, what="every periodic worker's first step")
    with gevent.Timeout(5, AssertionError("the workers did not stop within 5 s")):
        sup.stop(timeout=60)
    assert all(sup.greenlet(w.name).dead for w in workers)
