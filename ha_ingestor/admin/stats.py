"""What /stats reports, computed from scrapes of the services' own counters taken over time; nothing estimated.

A rate over a window is the growth of a counter between the scrapes inside that window divided by the
time those scrapes span (``covered_s``: shorter than the window while admin-api has not watched that
long, or while a service did not answer). A counter that went down was reset by a restart; its new value
is the growth. Percentiles come from the growth of histogram buckets over the window, interpolated inside
the bucket as Prometheus' ``histogram_quantile`` does, so they are as fine as the buckets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from . import scrape

INGESTION = "websocket-ingestion"
ENRICHMENT = "enrichment-pipeline"
SERVICES = (INGESTION, ENRICHMENT)

WINDOWS = {"1m": 60.0, "5m": 300.0, "1h": 3600.0}
PERCENTILE_WINDOW_S = 300.0

# (name in /stats, service, counter) for every rate and total.
COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("received", INGESTION, "events_received_total"),
    ("filtered", INGESTION, "events_filtered_total"),
    ("forwarded", INGESTION, "events_forwarded_total"),
    ("backfilled", INGESTION, "events_backfilled_total"),
    ("rejected_by_enrichment", INGESTION, "events_rejected_by_enrichment_total"),
    ("hop_batches", INGESTION, "batches_forwarded_total"),
    ("hop_retries", INGESTION, "hop_retries_total"),
    ("ha_reconnects", INGESTION, "ha_reconnects_total"),
    ("outbox_in", INGESTION, "outbox_in_events_total"),
    ("outbox_out", INGESTION, "outbox_out_events_total"),
    ("outbox_in_bytes", INGESTION, "outbox_in_bytes_total"),
    ("outbox_out_bytes", INGESTION, "outbox_out_bytes_total"),
    ("enrichment_received", ENRICHMENT, "events_received_total"),
    ("stored", ENRICHMENT, "events_stored_total"),
    ("spooled", ENRICHMENT, "events_spooled_total"),
    ("dead_lettered", ENRICHMENT, "events_dead_lettered_total"),
    ("store_write_failures", ENRICHMENT, "store_write_failures_total"),
    ("spool_in", ENRICHMENT, "spool_in_events_total"),
    ("spool_out", ENRICHMENT, "spool_out_events_total"),
    ("spool_in_bytes", ENRICHMENT, "spool_in_bytes_total"),
    ("spool_out_bytes", ENRICHMENT, "spool_out_bytes_total"),
)
HISTOGRAMS: tuple[tuple[str, str, str], ...] = (
    ("hop_seconds", INGESTION, "hop_request_seconds"),
    ("store_write_seconds", ENRICHMENT, "store_write_seconds"),
    ("end_to_end_lag_seconds", ENRICHMENT, "end_to_end_lag_seconds"),
)
GAUGES: tuple[tuple[str, str, str], ...] = (
    ("outbox_events", INGESTION, "outbox_events"),
    ("outbox_bytes", INGESTION, "outbox_bytes"),
    ("outbox_limit_events", INGESTION, "outbox_limit_events"),
    ("intake_events", INGESTION, "intake_events"),
    ("spool_events", ENRICHMENT, "spool_events"),
    ("spool_bytes", ENRICHMENT, "spool_bytes"),
    ("spool_limit_bytes", ENRICHMENT, "spool_limit_bytes"),
)
_KEPT = {name for _, _, name in COUNTERS} | {name + "_bucket" for _, _, name in HISTOGRAMS}


def compact(series: scrape.Series) -> scrape.Series:
    """Only what rates and percentiles need, so an hour of scrapes stays small."""
    return {k: v for k, v in series.items() if k in _KEPT or k.partition("{")[0] in _KEPT}


@dataclass(frozen=True, slots=True)
class Sample:
    """One scrape of both services at ``time`` (Unix s); a service that did not answer is None."""

    time: float
    series: dict[str, scrape.Series | None]


def _pairs(samples: Sequence[Sample], service: str) -> list[tuple[scrape.Series, scrape.Series, float]]:
    out = []
    for a, b in pairwise(samples):
        sa, sb = a.series.get(service), b.series.get(service)
        if sa is not None and sb is not None and b.time > a.time:
            out.append((sa, sb, b.time - a.time))
    return out


def in_window(history: Sequence[Sample], now: Sample, window: float) -> list[Sample]:
    return [s for s in history if now.time - window <= s.time < now.time] + [now]


def growth(samples: Sequence[Sample], service: str, counter: str) -> tuple[float | None, float]:
    """(how much ``counter`` grew or None when no scrape pair had it, seconds covered) over consecutive samples
    in which ``service`` answered."""
    total: float | None = None
    covered = 0.0
    for a, b, seconds in _pairs(samples, service):
        covered += seconds
        delta = scrape.counter_delta(a.get(counter), b.get(counter))
        if delta is not None:
            total = (total or 0.0) + delta
    return total, covered


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 6) if whole > 0 else None


def rates(samples: Sequence[Sample]) -> dict[str, Any]:
    """Per-second rates of every counter, the two error rates and the seconds each service covered."""
    grown: dict[str, float | None] = {}
    covered: dict[str, float] = {}
    for name, service, counter in COUNTERS:
        grown[name], covered[service] = growth(samples, service, counter)
    out: dict[str, Any] = {"covered_s": {s: round(covered.get(s, 0.0), 3) for s in SERVICES}}
    for name, service, _ in COUNTERS:
        seconds, value = covered.get(service, 0.0), grown[name]
        out[f"{name}_per_s"] = round(value / seconds, 4) if seconds > 0 and value is not None else None
    g = {name: value or 0.0 for name, value in grown.items()}
    out["hop_error_rate"] = _ratio(g["hop_retries"], g["hop_retries"] + g["hop_batches"])
    out["event_error_rate"] = _ratio(g["rejected_by_enrichment"] + g["dead_lettered"], g["enrichment_received"])
    return out


def percentiles(samples: Sequence[Sample], service: str, histogram: str) -> dict[str, float | None]:
    """p50/p95/p99 (seconds) and the number of observations over the samples' span."""
    first = next((s.series[service] for s in samples if s.series.get(service) is not None), None)
    last = samples[-1].series.get(service)
    if last is None or first is None or first is last:
        return {"p50": None, "p95": None, "p99": None, "count": 0}
    cumulative = scrape.bucket_delta(first, last, histogram)
    out: dict[str, float | None] = {}
    for q in (0.5, 0.95, 0.99):
        value = scrape.quantile(cumulative, q)
        out[f"p{round(q * 100)}"] = None if value is None else round(value, 6)
    out["count"] = cumulative[-1][1] if cumulative else 0
    return out


def series(history: Sequence[Sample], window: float, step: float, now: float) -> list[dict[str, float]]:
    """Event rates in ``step``-second buckets over the last ``window`` seconds, for the dashboard's chart.

    A bucket holds the scrape intervals that ended in it; buckets without any are left out (a gap in the chart),
    never filled with a guess.
    """
    start = now - window
    samples = [s for s in history if s.time >= start - step]
    buckets: dict[int, dict[str, float]] = {}
    for name, service, counter in (("received", INGESTION, "events_received_total"),
                                   ("stored", ENRICHMENT, "events_stored_total")):
        for a, b in pairwise(samples):
            sa, sb = a.series.get(service), b.series.get(service)
            if sa is None or sb is None or b.time < start or b.time <= a.time:
                continue
            delta = scrape.counter_delta(sa.get(counter), sb.get(counter))
            if delta is None:
                continue
            slot = buckets.setdefault(int((b.time - start) // step), {})
            slot[name] = slot.get(name, 0.0) + delta
            slot[name + "_s"] = slot.get(name + "_s", 0.0) + (b.time - a.time)
    points = []
    for index in sorted(buckets):
        slot = buckets[index]
        point = {"t": round(start + (index + 1) * step, 3)}
        for name in ("received", "stored"):
            if slot.get(name + "_s"):
                point[f"{name}_per_s"] = round(slot[name] / slot[name + "_s"], 4)
        points.append(point)
    return points


def report(history: Sequence[Sample], now: Sample, live: dict[str, scrape.Series | None],
           status: dict[str, Any], gaps: list[dict[str, Any]] | None, interval: float) -> dict[str, Any]:
    """The /stats document. ``now`` is a fresh scrape (not yet in ``history``); ``live`` its full series."""
    out: dict[str, Any] = {
        "generated_at": round(now.time, 3),
        "sample_interval_s": interval,
        "watched_s": round(now.time - history[0].time, 3) if history else 0.0,
        "unreachable": {s: str(status.get(s, {}).get("error", "")) for s in SERVICES if live.get(s) is None},
        "rates": {label: rates(in_window(history, now, seconds)) for label, seconds in WINDOWS.items()},
    }
    totals: dict[str, float | None] = {}
    for name, service, counter in COUNTERS:
        values = live.get(service)
        totals[name] = None if values is None else values.get(counter)
    out["totals"] = totals
    window = in_window(history, now, PERCENTILE_WINDOW_S)
    out["latency"] = {"window_s": PERCENTILE_WINDOW_S,
                      **{name: percentiles(window, service, hist) for name, service, hist in HISTOGRAMS}}
    depth: dict[str, float | None] = {}
    for name, service, gauge in GAUGES:
        values = live.get(service)
        depth[name] = None if values is None else values.get(gauge)
    out["depth"] = depth
    ing = status.get(INGESTION, {})
    enr = status.get(ENRICHMENT, {})
    out["last_event_time"] = {INGESTION: ing.get("last_event_time"), ENRICHMENT: enr.get("last_event_time")}
    newest = enr.get("last_event_time")
    out["newest_stored_event_age_s"] = round(now.time - newest, 3) if isinstance(newest, int | float) else None
    out["dead_letters"] = enr.get("dead_letters")
    out["ha"] = ing.get("ha")
    out["store"] = {"available": enr.get("store_available"), "reason": enr.get("store_reason")}
    if gaps is None:
        out["gaps"] = None
    else:
        counts: dict[str, int] = {}
        for gap in gaps:
            counts[str(gap.get("status"))] = counts.get(str(gap.get("status")), 0) + 1
        out["gaps"] = {"by_status": counts, "recent": gaps[:5]}
    return out
