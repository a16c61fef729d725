"""Counters, gauges and histograms, exposed in Prometheus' text format; every figure is measured.

A deliberately small registry: the services record a handful of series and must not pay per event
for it (``inc(n)`` once per batch). Histograms keep cumulative buckets only: admin-api works out p50/p95/p99
over a window from how the buckets grew between its scrapes.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections.abc import Callable, Iterable, Sequence

Labels = tuple[tuple[str, str], ...]

# Seconds; spans a sub-millisecond hop to a 30 s store timeout.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt_labels(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    pairs = [*labels, extra] if extra else list(labels)
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in pairs) + "}"


def _fmt_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


class Counter:
    """A monotonically increasing count."""

    kind = "counter"

    def __init__(self, name: str, doc: str, labels: Labels = ()) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def samples(self) -> Iterable[tuple[str, Labels, float]]:
        yield self.name + "_total", self.labels, self.value


class Gauge:
    """A value that goes up and down; either set directly or read from a callback at scrape time."""

    kind = "gauge"

    def __init__(
        self, name: str, doc: str, labels: Labels = (), read: Callable[[], float] | None = None
    ) -> None:
        self.name, self.doc, self.labels, self.read = name, doc, labels, read
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = value

    def get(self) -> float:
        return float(self.read()) if self.read is not None else self.value

    def samples(self) -> Iterable[tuple[str, Labels, float]]:
        yield self.name, self.labels, self.get()


class Histogram:
    """Cumulative buckets for Prometheus."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        doc: str,
        labels: Labels = (),
        buckets: tuple[float, ...] = LATENCY_BUCKETS,
    ) -> None:
        self.name, self.doc, self.labels, self.buckets = name, doc, labels, buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, weight: int = 1) -> None:
        """Record ``value`` (seconds); ``weight`` counts it for that many events (one batch)."""
        self.counts[bisect.bisect_left(self.buckets, value)] += weight
        self.sum += value * weight
        self.count += weight

    def observe_many(self, values: Sequence[float]) -> None:
        """Record each of ``values`` (one batch) with the attribute look-ups paid once."""
        counts, buckets, find = self.counts, self.buckets, bisect.bisect_left
        for value in values:
            counts[find(buckets, value)] += 1
        self.sum += sum(values)
        self.count += len(values)

    def samples(self) -> Iterable[tuple[str, Labels, float]]:
        running = 0
        for bound, count in zip((*self.buckets, math.inf), self.counts, strict=True):
            running += count
            yield self.name + "_bucket", (*self.labels, ("le", _fmt_value(bound))), running
        yield self.name + "_sum", self.labels, self.sum
        yield self.name + "_count", self.labels, self.count


Metric = Counter | Gauge | Histogram


class Registry:
    """The metrics of one service (or, in one process, of all of them)."""

    def __init__(self) -> None:
        self._metrics: dict[tuple[str, Labels], Metric] = {}

    def _get(self, cls: type, name: str, doc: str, labels: Labels, **kw: object) -> Metric:
        key = (name, labels)
        metric = self._metrics.get(key)
        if metric is None:
            metric = cls(name, doc, labels, **kw)
            self._metrics[key] = metric
        return metric

    def counter(self, name: str, doc: str, labels: Labels = ()) -> Counter:
        metric = self._get(Counter, name, doc, labels)
        assert isinstance(metric, Counter)
        return metric

    def gauge(self, name: str, doc: str, labels: Labels = (), read: Callable[[], float] | None = None) -> Gauge:
        metric = self._get(Gauge, name, doc, labels)
        assert isinstance(metric, Gauge)
        if read is not None:
            metric.read = read
        return metric

    def histogram(self, name: str, doc: str, labels: Labels = (),
                  buckets: tuple[float, ...] = LATENCY_BUCKETS) -> Histogram:
        metric = self._get(Histogram, name, doc, labels, buckets=buckets)
        assert isinstance(metric, Histogram)
        return metric

    def find(self, name: str, labels: Labels = ()) -> Metric | None:
        return self._metrics.get((name, labels))

    def all(self) -> list[Metric]:
        return list(self._metrics.values())

    def render(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        lines: list[str] = []
        seen: set[str] = set()
        for metric in sorted(self._metrics.values(), key=lambda m: (m.name, m.labels)):
            if metric.name not in seen:
                seen.add(metric.name)
                lines.append(f"# HELP {metric.name} {metric.doc}")
                lines.append(f"# TYPE {metric.name} {metric.kind}")
            for name, labels, value in metric.samples():
                lines.append(f"{name}{_fmt_labels(labels)} {_fmt_value(value)}")
        return "\n".join(lines) + "\n"


LOOP_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5)


async def watch_loop_lag(metrics: Registry, interval: float = 0.05) -> None:
    """Observe how late the event loop wakes a ``interval``-second sleep, until cancelled.

    Ingestion must read HA's socket continuously (HA drops a client 4,096 messages behind: 0.2 s at
    20,000 events/s), so a stall of the loop is worth seeing before it costs a reconnect.
    """
    lag = metrics.histogram("event_loop_lag_seconds", "How late the event loop ran a timer (stalls)",
                            buckets=LOOP_LAG_BUCKETS)
    worst = metrics.gauge("event_loop_lag_max_seconds", "Longest event loop stall since start")
    while True:
        before = time.perf_counter()
        await asyncio.sleep(interval)
        late = max(0.0, time.perf_counter() - before - interval)
        lag.observe(late)
        if late > worst.value:
            worst.set(late)
