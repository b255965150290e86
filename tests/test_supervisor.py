import gevent

from workers.supervisor import Supervisor


class Flaky:
    """Raises on its first `failures` runs, then runs until stopped."""

    def __init__(self, name="flaky", failures=1):
        self.name = name
        self.failures = failures
        self.runs = 0
        self.stopped = False

    def run(self):
        self.runs += 1
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
    gevent.sleep(0.2)
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
    gevent.sleep(0.1)
    assert w.runs == 2
    sup.stop(timeout=2)


def test_stop_does_not_restart_and_stops_in_reverse_order():
    order = []

    class Recorder(Flaky):
        def stop(self):
            order.append(self.name)
            super().stop()

    sup = Supervisor()
    for name in ("writer", "listener", "feed"):
        sup.start(Recorder(name=name, failures=0))
    gevent.sleep(0.05)
    sup.stop(timeout=2)
    assert order == ["feed", "listener", "writer"]
    gevent.sleep(0.05)
    assert all(sup.greenlet(n).dead for n in ("writer", "listener", "feed"))
    assert sup.restarts == {"writer": 0, "listener": 0, "feed": 0}


def test_worker_that_ignores_stop_is_killed():
    class Stubborn(Flaky):
        def stop(self):
            pass

    sup = Supervisor()
    sup.start(Stubborn(name="stubborn", failures=0))
    gevent.sleep(0.02)
    sup.stop(timeout=0.1)
    assert sup.greenlet("stubborn").dead


def test_backoff_grows_for_a_worker_that_keeps_crashing():
    sup = Supervisor(backoff_initial_s=0.05, backoff_max_s=0.2)
    w = Flaky(failures=100)
    sup.start(w)
    gevent.sleep(0.5)
    # without backoff it would have crashed thousands of times in 0.5 s
    assert 3 <= w.runs <= 8
    sup.stop(timeout=1)
