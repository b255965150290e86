"""The stale-price circuit breaker (ADR-008) on an injected monotonic clock, with the real 3/10/30 s."""

import pytest

from app.market.feed import FeedMonitor, FeedState
from app.market.prices import Tick


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def feed(clock):
    return FeedMonitor(3.0, 10.0, 30.0, clock=clock)


def tick(feed, clock, n=1, every=0.25):
    for _ in range(n):
        feed.record(Tick(6_700_000, int(clock.t * 1000)))
        clock.advance(every)


def steady(feed, clock, seconds, every=0.25):
    tick(feed, clock, int(seconds / every), every)


def status(feed):
    return feed.state(), feed.betting_open()


def test_no_tick_yet_is_critical_without_latch(feed, clock):
    assert status(feed) == (FeedState.CRITICAL, False)
    assert feed.age() is None
    feed.record(Tick(1, 1))  # cold start: nothing to recover from, the first tick opens betting
    assert status(feed) == (FeedState.HEALTHY, True)
    assert feed.status_message() == {"type": "status", "feed": "healthy", "betting": True}


def test_stall_goes_degraded_at_3s_and_critical_at_10s(feed, clock):
    steady(feed, clock, 5)
    clock.advance(-0.25)  # exactly at the last tick
    assert status(feed) == (FeedState.HEALTHY, True)
    clock.advance(2.999)
    assert status(feed) == (FeedState.HEALTHY, True)
    clock.advance(0.001)  # 3 s without a tick
    assert status(feed) == (FeedState.DEGRADED, True)  # degraded still takes bets
    clock.advance(6.999)
    assert status(feed) == (FeedState.DEGRADED, True)
    clock.advance(0.001)  # 10 s
    assert status(feed) == (FeedState.CRITICAL, False)
    assert feed.status_message() == {"type": "status", "feed": "critical", "betting": False}
    assert feed.snapshot()["state"] == "critical" and feed.snapshot()["betting"] is False


def test_recovers_only_after_30s_of_steady_ticks(feed, clock):
    steady(feed, clock, 5)
    clock.advance(12)
    assert status(feed) == (FeedState.CRITICAL, False)
    tick(feed, clock)  # ticks resume: recovering, reported as degraded, betting still closed
    assert status(feed) == (FeedState.DEGRADED, False)
    assert feed.recovering()
    assert feed.status_message() == {"type": "status", "feed": "degraded", "betting": False}
    steady(feed, clock, 29.5)
    assert status(feed) == (FeedState.DEGRADED, False)
    assert 0 < feed.recovery_left() <= 0.5
    steady(feed, clock, 0.75)
    assert status(feed) == (FeedState.HEALTHY, True)
    assert not feed.recovering() and feed.recovery_left() is None


def test_a_feed_flapping_every_5s_never_reopens_betting(feed, clock):
    steady(feed, clock, 5)
    clock.advance(11)  # into CRITICAL
    assert not feed.betting_open()
    for _ in range(40):  # 400 s of 5 s on / 5 s off
        steady(feed, clock, 5)
        assert status(feed) == (FeedState.DEGRADED, False)
        clock.advance(5)
        assert not feed.betting_open()
    steady(feed, clock, 31)  # finally steady for longer than the recovery period
    assert status(feed) == (FeedState.HEALTHY, True)


def test_a_degraded_feed_keeps_betting_and_returns_to_healthy_after_recovery(feed, clock):
    steady(feed, clock, 5)
    clock.advance(4)
    assert status(feed) == (FeedState.DEGRADED, True)
    steady(feed, clock, 29)
    assert status(feed) == (FeedState.DEGRADED, True)  # hysteresis on the state too, betting open
    steady(feed, clock, 2)
    assert status(feed) == (FeedState.HEALTHY, True)


def test_gaps_are_judged_when_the_next_tick_arrives_even_if_nobody_polled(feed, clock):
    steady(feed, clock, 5)
    clock.advance(15)  # nobody asks for the state during the stall
    tick(feed, clock)
    assert status(feed) == (FeedState.DEGRADED, False)  # the 15 s gap latched the breaker


def test_short_gaps_below_degraded_count_as_stable(feed, clock):
    steady(feed, clock, 5)
    clock.advance(11)
    tick(feed, clock)
    for _ in range(16):  # ticks 2.9 s apart for 46 s
        clock.advance(2.65)
        tick(feed, clock)
    assert status(feed) == (FeedState.HEALTHY, True)


def test_wall_clock_is_never_read(feed, clock, monkeypatch):
    import time

    monkeypatch.setattr(time, "time", lambda: 0.0)  # a wall clock stuck at 1970 changes nothing
    steady(feed, clock, 5)
    assert status(feed) == (FeedState.HEALTHY, True)
    clock.advance(3)
    assert status(feed) == (FeedState.DEGRADED, True)


def test_bootstrap_from_steady_history_starts_healthy(feed, clock):
    now_ms = 1_763_711_990_000
    history = [Tick(6_700_000, now_ms - 40_000 + i * 250) for i in range(160)]
    assert feed.bootstrap(history, now_ms) == 160
    assert status(feed) == (FeedState.HEALTHY, True)
    assert feed.bootstrap(history, now_ms) == 0  # once only


def test_bootstrap_from_history_with_a_stall_stays_suspended(feed, clock):
    now_ms = 1_763_711_990_000
    before = [Tick(6_700_000, now_ms - 3_600_000)]  # an hour-old tick, then 10 s of ticks
    recent = [Tick(6_700_000, now_ms - 10_000 + i * 250) for i in range(40)]
    feed.bootstrap(before + recent, now_ms)
    assert status(feed) == (FeedState.DEGRADED, False)
    assert 19 < feed.recovery_left() <= 20.25


def test_bootstrap_when_the_feed_is_down_now(feed, clock):
    now_ms = 1_763_711_990_000
    feed.bootstrap([Tick(6_700_000, now_ms - 60_000)], now_ms)
    assert status(feed) == (FeedState.CRITICAL, False)
    tick(feed, clock)
    assert status(feed) == (FeedState.DEGRADED, False)  # must recover, not a cold start


def test_thresholds_are_checked():
    with pytest.raises(ValueError):
        FeedMonitor(10, 3)
