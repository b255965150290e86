"""The bet resolver: settles every column once it has closed (SPEC §3, ADR-006).

Every `interval_s` it asks SQLite (partial index of open bets) which closed windows still hold open
bets, reads each window's touch data from the Redis price history (`app.market.prices.window_stats`) and
settles it through the writer in chunks:

- resolved once the window is *complete* (a tick at or after its end exists, so no late tick can
  land inside) and `grace_s` has passed since its end, or once it ended more than
  `TAP_FEED_CRITICAL_S` ago (then the trailing gap is already too long and the window is void);
- void (refund) if the price path is unknown for longer than `TAP_FEED_CRITICAL_S` across it: no
  price in force at the start, or two consecutive known ticks (the one in force at the start, those
  inside, the first after the end) that far apart — with 5 s columns and a 10 s threshold such a gap
  necessarily reaches outside the window, and the touch cannot be known, so it is never guessed.

Only the holder of the resolver lease works (two workers overlap during a reload); even without it
every bet would settle once (status guard + unique ledger rows). Traders get `bet:resolved` and
`balance` after the commit.

Once a window is completely settled its open liability is released in one step, by column
(`app.bets.claims.release_column`: one DEL of the column's exposure hashes — idempotent, so a repeated
settlement or a late rejection never releases twice). A window that is never settled here (all its
bets rejected) loses its exposure keys by their TTL.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import gevent
import orjson
import redis

from app.bets.claims import release_column, trim_exposure_index
from app.bets.notify import BetNotifier
from app.bets.resolution import Outcome, Settled, oldest_open_window, open_windows, settle_chunk
from app.errors import ApiError
from app.keys import RESOLVER_LEASE_KEY
from app.market.prices import WindowStats, window_stats
from app.metrics import Metrics
from app.realtime.events import balance_event
from app.storage.db import ReadPool
from app.storage.writes import OutcomeUnknown, WriteQueue
from app.units import format_money
from workers.lease import RedisLease
from workers.loop import LoopWorker

log = logging.getLogger(__name__)

TRIM_EVERY_S = 60.0  # how often the console's index of exposed columns is trimmed


def decide(stats: WindowStats, now_ms: int, critical_s: float, grace_s: float) -> Outcome | None:
    """The outcome of a closed window, or None to wait for more price data."""
    critical_ms = int(critical_s * 1000)
    overdue = now_ms >= stats.t_end_ms + critical_ms
    ready = stats.complete and now_ms >= stats.t_end_ms + grace_s * 1000
    if not (ready or overdue):
        return None
    if stats.open_ts is None:
        return Outcome(void=True)
    # The path is unknown between two known ticks; a gap that long overlapping the window voids it.
    # Without a tick after the window yet, the trailing gap runs until now.
    trailing = (stats.next_ts or now_ms) - (stats.last_ts or stats.open_ts)
    if max(stats.known_gap_ms, trailing) > critical_ms:
        return Outcome(void=True)
    return Outcome(void=False, lo=stats.lo, hi=stats.hi)


class Resolver(LoopWorker):
    name = "resolver"
    interval_s = 0.5
    standby_s = 1.0  # pause while another worker holds the lease, or Redis is away
    # Settled in chunks of `chunk` bets with a pause between them: a column's settlement and its
    # bet:resolved + balance events to every trader, all at once, stalled the taps 46-65 ms (250 ms
    # with 2,700 sockets); paced, a 3,000/s steady run keeps tap -> bet:confirmed p99 at 129-135 ms
    # against 273-386 (BENCHMARKS.md, "steady state with settlement"). At most ~8,900 bets/s settled
    # (58,800 unpaced): three times what 3,000 taps/s feed it.
    chunk = 500
    chunk_pause_s = 0.05

    def __init__(
        self,
        r: redis.Redis,
        reads: ReadPool,
        writes: WriteQueue,
        *,
        column_s: int,
        critical_s: float,
        notifier: BetNotifier,
        grace_s: float = 1.0,
        metrics: Metrics | None = None,
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        super().__init__()
        # "Now" on the ticks' time scale: the windows are judged against tick times (exchange time,
        # checked against the feed's steady clock), so this is that steady clock in production
        # (workers.runtime). The machine's wall clock stepped forward by S would make every window
        # S seconds overdue: a window still being ticked through is then voided for a "gap" that is
        # only the step (every window once S reaches TAP_FEED_CRITICAL_S).
        self.now_ms = now_ms
        self.r = r
        self.notifier = notifier  # attached to `writes`: it sends what each commit changed, in order
        self.reads = reads
        self.writes = writes
        self.column_s = column_s
        self.critical_s = critical_s
        self.grace_s = grace_s
        self.metrics = metrics
        self.lease = RedisLease(r, RESOLVER_LEASE_KEY, 5000)
        self._last_renew = 0.0
        self._last_trim = 0.0

    def step(self) -> float | None:
        try:
            if not self.lease.held:
                if not self.lease.acquire():
                    return self.standby_s
                log.info("resolver holds the resolver lease")
            if time.monotonic() - self._last_renew >= 1.0:
                self._last_renew = time.monotonic()
                if not self.lease.renew():
                    log.warning("resolver lost its lease")
                    return 0.0
            self.resolve_due(self.now_ms())
        except redis.RedisError as exc:
            log.warning("resolver: redis unavailable (%s); retrying", exc)
            self.lease.held = False
            return self.standby_s
        return None

    def on_stop(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.lease.release()

    def resolve_due(self, now_ms: int) -> int:
        """Settle every closed window that can be settled now; returns the number of bets settled."""
        closed_before = (now_ms // 1000) - self.column_s  # windows that started before this have ended
        windows = self.reads.run(lambda c: open_windows(c, closed_before + 1))
        settled = 0
        for t_start in windows:
            if t_start + self.column_s > now_ms / 1000:
                continue
            stats = window_stats(self.r, t_start, self.column_s)
            if stats is None:  # no price at all: void once the window is surely unrecoverable
                overdue = now_ms >= (t_start + self.column_s + self.critical_s) * 1000
                outcome = Outcome(void=True) if overdue else None
            else:
                outcome = decide(stats, now_ms, self.critical_s, self.grace_s)
            if outcome is None:
                continue
            settled += self.settle_window(t_start, outcome, now_ms)
        self._record_lag(now_ms)
        if time.monotonic() - self._last_trim >= TRIM_EVERY_S:
            self._last_trim = time.monotonic()
            trim_exposure_index(self.r, now_ms // 1000)
        return settled

    def settle_window(self, t_start: int, outcome: Outcome, now_ms: int) -> int:
        """Settle the window in chunks through the writer's priority lane (never behind taps, never
        refused for a full queue). If the writer cannot take or finish a chunk now (shutting down,
        stopped mid-commit, slow), stop here without crashing: settlement is idempotent, and the
        next poll picks the window up again."""
        total = 0
        while True:
            try:
                rows: list[Settled] = self.writes.submit(
                    settle_chunk(t_start, outcome, now_ms, self.chunk), on_done=self._announce, priority=True
                ).get(timeout=60)
            except (ApiError, OutcomeUnknown, gevent.Timeout) as exc:
                log.warning(
                    "window %s: settlement paused after %d bets (%r); retried next poll", t_start, total, exc
                )
                break
            total += len(rows)
            if len(rows) < self.chunk:
                self._release(t_start)
                break
            if self.wait(self.chunk_pause_s):
                break  # stopping: the next start settles the rest
        if total:
            log.info(
                "window %s settled: %d bets (%s)",
                t_start,
                total,
                "void" if outcome.void else f"range {outcome.lo}-{outcome.hi}",
            )
            if self.metrics:
                self.metrics.bets_settled.inc(total)
        return total

    def _release(self, t_start: int) -> None:
        """The window is settled: its liability is no longer open (SPEC §8b)."""
        try:
            release_column(self.r, t_start)
        except redis.RedisError as exc:  # the keys expire by themselves; the console shows them till then
            log.warning("window %s: could not release its exposure now (%s)", t_start, exc)

    def _announce(self, ok: bool, value: object) -> None:
        """In the writer, right after a chunk's commit (a timed-out wait still announces it)."""
        if ok and isinstance(value, list) and value:
            self._notify(value)

    def _notify(self, rows: list[Settled]) -> None:
        """Each trader's `bet:resolved` events, then its last balance, queued with the other events of
        this commit (app.bets.notify: in commit order, with ids kept for `resume`)."""
        per_user: dict[str, list[bytes]] = {}
        last_balance: dict[str, int] = {}
        for s in rows:
            per_user.setdefault(s.address, []).append(
                orjson.dumps(
                    {
                        "type": "bet:resolved",
                        "bet_id": s.bet_id,
                        "status": s.status,
                        "payout": format_money(s.paid),
                    }
                )
            )
            if s.balance is not None:
                last_balance[s.address] = s.balance
        for address, balance in last_balance.items():
            per_user.setdefault(address, []).append(balance_event(balance))
        for address, messages in per_user.items():
            self.notifier.on_commit(address, messages)

    def _record_lag(self, now_ms: int) -> None:
        if self.metrics is None:
            return
        oldest = self.reads.run(oldest_open_window)
        lag = 0.0 if oldest is None else max(0.0, now_ms / 1000 - (oldest + self.column_s))
        self.metrics.resolver_lag.set(lag)
