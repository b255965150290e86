import time

import gevent

from tests.support.waiting import wait_until
from workers.supervisor import Supervisor


class Flaky:
    """Raises on its first `failures` runs, then runs until stopped."""

    def __init__(self, name="flaky", failures=1):
        self.name = name
        self.failures = failures
        self.runs = 0
        self.started_at: list[float] = []  # monotonic time of each run
        self.stopped = False

    def run(self):
        self.runs += 1
        self.started_at.append(time.monotonic())
        if self.runs <= self.failures:
            raise RuntimeError(f"boom #{self.runs}")
        while not self.stopped:
            gevent.sleep(0.01)

    def stop(self):
        self.stopped = True


def test_crashed_worker_is_logged_and_restarted(caplog):
    restarted = []
    sup = Supervisor(on_restart=restarted.append, backoff_initial_s=0.01)
    worker = Flaky(failures=2)
    sup.start(worker)
    wait_until(lambda: worker.runs == 3, what="two restarts")
    assert worker.runs == 3
    assert sup.restarts["flaky"] == 2
    assert restarted == ["flaky", "flaky"]
    assert "worker flaky crashed" in caplog.text and "boom #1" in caplog.text
    assert not sup.greenlet("flaky").dead
    sup.stop(timeout=2)
    assert sup.greenlet("flaky").dead


def test_worker_that_returns_unasked_is_restarted():
    class Quitter(Flaky):
        def run(self):
            self.runs += 1
            if self.runs == 1:
                return
            while not self.stopped:
                gevent.sleep(0.01)

    sup = Supervisor(backoff_initial_s=0.01)
    w = Quitter(name="quitter", failures=0)
    sup.start(w)
    wait_until(lambda: w.runs == 2, what="a restart")
    assert w.runs == 2
    sup.stop(timeout=2)


def test_stop_does_not_restart_and_stops_in_reverse_order():
    order = []

    class Recorder(Flaky):
        def stop(self):
            order.append(self.name)
            super().stop()

    sup = Supervisor()
    workers = [Recorder(name=name, failures=0) for name in ("writer", "listener", "feed")]
    for w in workers:
        sup.start(w)
    wait_until(lambda: all(w.runs == 1 for w in workers), what="all three running")
    ended = []
    for w in workers:  # linked after the supervisor's own link, so notified after it ran
        sup.greenlet(w.name).link(ended.append)
    sup.stop(timeout=2)
    assert order == ["feed", "listener", "writer"]
    wait_until(lambda: len(ended) == 3, what="the supervisor to see all three end")
    assert all(sup.greenlet(n).dead for n in ("writer", "listener", "feed"))
    assert sup.restarts == {"writer": 0, "listener": 0, "feed": 0}


def test_worker_that_ignores_stop_is_killed():
    class Stubborn(Flaky):
        def stop(self):
            pass

    sup = Supervisor()
    w = Stubborn(name="stubborn", failures=0)
    sup.start(w)
    wait_until(lambda: w.runs == 1, what="the worker running")
    sup.stop(timeout=0.1)
    assert sup.greenlet("stubborn").dead


def test_backoff_grows_for_a_worker_that_keeps_crashing():
    sup = Supervisor(backoff_initial_s=0.04, backoff_max_s=0.16)
    w = Flaky(failures=100)
    sup.start(w)
    wait_until(lambda: w.runs >= 9, what="eight restarts")
    sup.stop(timeout=1)
    # the pause before each restart: none for the first, then doubling from 0.04 s up to 0.16 s
    pauses = [b - a for a, b in zip(w.started_at, w.started_at[1:], strict=False)][:8]
    expected = [0.0, 0.04, 0.08, 0.16, 0.16, 0.16, 0.16, 0.16]
    # a busy machine only makes pauses longer; 20 ms allows for the event loop's cached clock, which
    # a timer counts from and which may lag behind the moment the crashed run started
    assert all(p >= e - 0.02 for p, e in zip(pauses, expected, strict=True)), pauses
    # capped: 5 × 0.16 s; without the cap these five would take 0.16 + 0.32 + … + 2.56 = 4.96 s
    assert sum(pauses[3:]) < 2.4, pauses
