"""Read the other services' Prometheus text, and the arithmetic on it: counter deltas and histogram quantiles.

Pure functions over ``{series: value}`` maps, where a series is written as Prometheus renders it
(``events_stored_total`` or ``hop_request_seconds_bucket{le="0.005"}``), so what /stats reports can be
checked line by line against what /metrics shows.
"""

from __future__ import annotations

import math
import re

Series = dict[str, float]

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)")
_LE = re.compile(r'le="([^"]+)"')


def parse(text: str) -> Series:
    """``{series: value}`` of a Prometheus text exposition (comments skipped, timestamps ignored)."""
    out: Series = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            continue
        try:
            out[match.group(1)] = float(match.group(2))
        except ValueError:
            continue
    return out


def counter_delta(before: float | None, after: float | None) -> float | None:
    """How much a counter grew; a counter that went down was reset (its service restarted) and grew by ``after``."""
    if before is None or after is None:
        return None
    return after - before if after >= before else after


def buckets(series: Series, name: str, labels: str = "") -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) of histogram ``name``, ascending, +Inf last; ``labels`` are those
    before ``le`` (``'home="north",'``), as the registry renders them."""
    prefix = name + "_bucket{" + labels
    out = []
    for key, value in series.items():
        if key.startswith(prefix) and (match := _LE.search(key)) is not None:
            out.append((math.inf if match.group(1) == "+Inf" else float(match.group(1)), value))
    return sorted(out)


def bucket_delta(before: Series | None, after: Series, name: str, labels: str = "") -> list[tuple[float, float]]:
    """The histogram's observations between two scrapes (all of ``after`` when there is no ``before`` or a reset)."""
    now = buckets(after, name, labels)
    if before is None:
        return now
    then = dict(buckets(before, name, labels))
    if not then or any(then.get(bound, 0.0) > count for bound, count in now):  # a count went down: a restart
        return now
    return [(bound, count - then.get(bound, 0.0)) for bound, count in now]


def quantile(cumulative: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus' ``histogram_quantile``: linear inside the bucket the rank falls in; None without observations.

    A rank in the +Inf bucket answers the highest finite bound (the true value is known only to exceed it).
    """
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    rank = q * cumulative[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank and count > below:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = (bound if not math.isinf(bound) else lower), count
    return lower
