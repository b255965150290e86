"""Per-second samples for the operator console, kept in this process's memory.

The console worker (`workers/console.py`) calls `sample_writer` and `set_sources` once a second; the
admin routes only read. `set_sources` also keeps the last 15 minutes of each source's age (one sample
a second), so the console's feed-age plot covers the window however long the page has been open.
Nothing here is on a tap's path. Imports nothing from the rest of `app` but `app.metrics`, so
`app.services` can hold a `ConsoleSamples`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Histogram

from app.metrics import Metrics

WINDOW_S = 900  # 15 minutes


def _histogram_state(h: Histogram) -> tuple[list[tuple[float, float]], float, float]:
    """([(upper bound, cumulative count)], count, sum) of an unlabelled histogram."""
    buckets: list[tuple[float, float]] = []
    count = total = 0.0
    for metric in h.collect():
        for s in metric.samples:
            if s.name.endswith("_bucket"):
                buckets.append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                count = s.value
            elif s.name.endswith("_sum"):
                total = s.value
    return buckets, count, total


def _quantile(deltas: list[tuple[float, float]], q: float) -> float | None:
    """The upper bound of the bucket holding the q-quantile of a second's observations (None if none)."""
    n = deltas[-1][1] if deltas else 0
    if n <= 0:
        return None
    want = q * n
    finite = [upper for upper, _ in deltas if upper != float("inf")]
    for upper, cum in deltas:
        if cum >= want:
            return upper if upper != float("inf") else max(finite, default=0.0)  # "at least the top bound"
    return max(finite, default=0.0)


@dataclass
class WriterSecond:
    at: int  # Unix seconds
    commits: int
    items: int  # writes committed in them
    p50_ms: float | None  # bucket upper bounds: an upper estimate
    p99_ms: float | None
    queue_depth: int


def _ms_precision(age: float | None) -> float | None:
    return None if age is None else round(age, 3)


@dataclass
class AgeSecond:
    at: int  # Unix seconds
    ages: dict[str, float | None]  # seconds (ms precision) since each source's last price; None: none yet


@dataclass
class ConsoleSamples:
    """What the console worker measured, newest last."""

    writer: deque[WriterSecond] = field(default_factory=lambda: deque(maxlen=WINDOW_S))
    sources: list[dict[str, Any]] = field(default_factory=list)  # feed health per source
    sources_at: int | None = None  # Unix ms of that snapshot
    ages: deque[AgeSecond] = field(default_factory=lambda: deque(maxlen=WINDOW_S))
    _last_commit: tuple[list[tuple[float, float]], float, float] | None = None
    _last_batch: tuple[float, float] | None = None

    def sample_writer(self, metrics: Metrics, now_s: int, queue_depth: int) -> WriterSecond | None:
        """One second of the writer: commits, mean batch size and commit latency since the last call.

        The first call is only the baseline (None, nothing kept): it cannot say how many commits its
        second had, and a 0 there read as a quiet second at the start of each new worker's series."""
        commit = _histogram_state(metrics.write_commit_seconds)
        _, batches, items = _histogram_state(metrics.write_batch_size)
        prev, prev_batch = self._last_commit, self._last_batch
        self._last_commit, self._last_batch = commit, (batches, items)
        if prev is None or prev_batch is None:
            return None
        deltas = [(b, c - pc) for (b, c), (_, pc) in zip(commit[0], prev[0], strict=True)]
        p50, p99 = _quantile(deltas, 0.5), _quantile(deltas, 0.99)
        sample = WriterSecond(
            now_s,
            int(batches - prev_batch[0]),
            int(items - prev_batch[1]),
            None if p50 is None else p50 * 1000,
            None if p99 is None else p99 * 1000,
            queue_depth,
        )
        self.writer.append(sample)
        return sample

    def set_sources(self, sources: list[dict[str, Any]], at_ms: int) -> None:
        """The sources' health now, and their ages as this second's sample (a second sampled twice
        keeps the later one; if the wall clock stepped back, the samples "after" now are dropped so
        the series stays in order)."""
        self.sources, self.sources_at = sources, at_ms
        sample = AgeSecond(at_ms // 1000, {s["source"]: _ms_precision(s.get("age_s")) for s in sources})
        while self.ages and self.ages[-1].at >= sample.at:
            self.ages.pop()
        self.ages.append(sample)

    def age_series(self, window_s: int) -> dict[str, Any]:
        """The sampled seconds of the last `window_s` seconds (up to the newest sample):
        ``{"at": [Unix s], "sources": {name: [age_s or None per second]}}``."""
        samples: list[AgeSecond] = []
        for a in reversed(self.ages):  # newest first: a short window reads only its own seconds
            if samples and a.at <= samples[0].at - window_s:
                break
            samples.append(a)
        samples.reverse()
        names = sorted({n for a in samples for n in a.ages})
        return {
            "at": [a.at for a in samples],
            "sources": {n: [a.ages.get(n) for a in samples] for n in names},
        }
