"""What /stats reports, computed from scrapes of the services' own counters taken over time; nothing estimated.

A rate over a window is the growth of a counter between the scrapes inside that window divided by the
time those scrapes span where the counter existed (a home's counters appear with its first batch);
``covered_s`` is how long they span, shorter than the window while admin-api has not watched that long,
or while a service did not answer. A counter that went down was reset by a restart; its new value
is the growth. Percentiles come from the growth of histogram buckets over the window, interpolated inside
the bucket as Prometheus' ``histogram_quantile`` does, so they are as fine as the buckets.

admin-api may watch several instances of each service (a fleet: INGESTION_URLS, ENRICHMENT_URLS). A sample
holds each instance's series under its URL; a figure of a service is the sum over its instances (rates are
summed per instance, so an instance that did not answer for a while does not dilute the others), and
``covered_s`` of a service is the least any of its instances covered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
# Per-home series (admin/homes.py): kept for HOME_KEEP_S only, as a fleet has many homes.
BY_HOME = ("events_received_by_home_total", "events_stored_by_home_total", "events_spooled_by_home_total",
           "events_dead_lettered_by_home_total", "end_to_end_lag_by_home_seconds_bucket")
HOME_KEEP_S = PERCENTILE_WINDOW_S + 60.0
_KEPT = ({name for _, _, name in COUNTERS} | {name + "_bucket" for _, _, name in HISTOGRAMS}
         | set(BY_HOME) | {"home_info"})

# service → the URLs of its instances, which key each sample's series.
Fleet = Mapping[str, Sequence[str]]


def compact(series: scrape.Series) -> scrape.Series:
    """Only what rates and percentiles need, so an hour of scrapes stays small."""
    return {k: v for k, v in series.items() if k in _KEPT or k.partition("{")[0] in _KEPT}


def slim(series: scrape.Series) -> scrape.Series:
    """A compact series without its per-home part, once it is older than any per-home figure looks back."""
    return {k: v for k, v in series.items() if k.partition("{")[0] not in BY_HOME}


@dataclass(slots=True)
class Sample:
    """One scrape of every instance at ``time`` (Unix s), by URL; an instance that did not answer is None."""

    time: float
    series: dict[str, scrape.Series | None]
    slim: bool = False  # per-home series dropped


def _pairs(samples: Sequence[Sample], instance: str) -> list[tuple[scrape.Series, scrape.Series, float]]:
    out = []
    for a, b in pairwise(samples):
        sa, sb = a.series.get(instance), b.series.get(instance)
        if sa is not None and sb is not None and b.time > a.time:
            out.append((sa, sb, b.time - a.time))
    return out


def in_window(history: Sequence[Sample], now: Sample, window: float) -> list[Sample]:
    return [s for s in history if now.time - window <= s.time < now.time] + [now]


def _grown(pairs: list[tuple[scrape.Series, scrape.Series, float]], counter: str) -> tuple[float | None, float]:
    """(how much ``counter`` grew or None when no scrape pair had it, the seconds of the pairs that had it)."""
    total: float | None = None
    covered = 0.0
    for a, b, seconds in pairs:
        delta = scrape.counter_delta(a.get(counter), b.get(counter))
        if delta is not None:  # a counter that is not there yet (a home's first batch) measured nothing
            total = (total or 0.0) + delta
            covered += seconds
    return total, covered


def summed(samples: Sequence[Sample], instances: Sequence[str],
           counters: Sequence[str]) -> tuple[dict[str, float | None], dict[str, float | None], dict[str, float]]:
    """(growth, per-second rate, seconds covered by instance) of each counter, summed over ``instances``;
    None where no instance had the counter in two consecutive scrapes."""
    grown: dict[str, float | None] = dict.fromkeys(counters)
    per_s: dict[str, float | None] = dict.fromkeys(counters)
    covered: dict[str, float] = {}
    for instance in instances:
        pairs = _pairs(samples, instance)
        covered[instance] = sum(seconds for _, _, seconds in pairs)
        for counter in counters:
            value, seconds = _grown(pairs, counter)
            if value is not None:
                grown[counter] = (grown[counter] or 0.0) + value
                if seconds > 0:
                    per_s[counter] = (per_s[counter] or 0.0) + value / seconds
    return grown, per_s, covered


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 6) if whole > 0 else None


def rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def rates(samples: Sequence[Sample], fleet: Fleet) -> dict[str, Any]:
    """Per-second rates of every counter, the two error rates and the seconds each service covered."""
    grown: dict[str, float | None] = {}
    out: dict[str, Any] = {"covered_s": {}}
    for service in SERVICES:
        mine = [(name, counter) for name, svc, counter in COUNTERS if svc == service]
        total, per_s, covered = summed(samples, fleet[service], [counter for _, counter in mine])
        out["covered_s"][service] = round(min(covered.values(), default=0.0), 3)
        for name, counter in mine:
            grown[name] = total[counter]
            out[f"{name}_per_s"] = rounded(per_s[counter])
    g = {name: value or 0.0 for name, value in grown.items()}
    out["hop_error_rate"] = _ratio(g["hop_retries"], g["hop_retries"] + g["hop_batches"])
    out["event_error_rate"] = _ratio(g["rejected_by_enrichment"] + g["dead_lettered"], g["enrichment_received"])
    return out


def percentiles(samples: Sequence[Sample], instances: Sequence[str], histogram: str,
                labels: str = "") -> dict[str, float | None]:
    """p50/p95/p99 (seconds) and the number of observations over the samples' span, from the buckets of
    every instance added together; ``labels`` picks labelled buckets (``'home="north",'``)."""
    merged: dict[float, float] = {}
    for instance in instances:
        series = [found for s in samples if (found := s.series.get(instance)) is not None]
        if len(series) < 2:
            continue
        # A restart shows between two scrapes as the observation count going down (the first scrape against
        # the last cannot tell once the new count outgrew the old): then sum scrape to scrape. One key per
        # scrape is cheap; reading every bucket of every scrape is not, with many homes.
        total = histogram + "_bucket{" + labels + 'le="+Inf"}'
        reset = any(after.get(total, 0.0) < before.get(total, 0.0) for before, after in pairwise(series))
        for before, after in pairwise(series) if reset else [(series[0], series[-1])]:
            for bound, count in scrape.bucket_delta(before, after, histogram, labels):
                merged[bound] = merged.get(bound, 0.0) + count
    cumulative = sorted(merged.items())
    if not cumulative:
        return {"p50": None, "p95": None, "p99": None, "count": 0}
    out: dict[str, float | None] = {}
    for q in (0.5, 0.95, 0.99):
        value = scrape.quantile(cumulative, q)
        out[f"p{round(q * 100)}"] = None if value is None else round(value, 6)
    out["count"] = cumulative[-1][1] if cumulative else 0
    return out


Line = tuple[str, Sequence[str], str]  # (name in the chart, instances, counter)


def chart_lines(fleet: Fleet) -> list[Line]:
    """The dashboard chart's two lines over the whole fleet."""
    return [("received", fleet[INGESTION], "events_received_total"),
            ("stored", fleet[ENRICHMENT], "events_stored_total")]


def series(history: Sequence[Sample], window: float, step: float, now: float,
           lines: Sequence[Line]) -> list[dict[str, float]]:
    """Event rates in ``step``-second buckets over the last ``window`` seconds, for the dashboard's chart.

    A bucket holds the scrape intervals that ended in it; buckets without any are left out (a gap in the chart),
    never filled with a guess. Each instance's rate in a bucket is its growth over the seconds it was
    observed there; a line is the sum of its instances' rates.
    """
    start = now - window
    samples = [s for s in history if s.time >= start - step]
    buckets: dict[int, dict[str, float]] = {}
    for name, instances, counter in lines:
        for instance in instances:
            grown: dict[int, list[float]] = {}
            for a, b in pairwise(samples):
                sa, sb = a.series.get(instance), b.series.get(instance)
                if sa is None or sb is None or b.time < start or b.time <= a.time:
                    continue
                delta = scrape.counter_delta(sa.get(counter), sb.get(counter))
                if delta is None:
                    continue
                slot = grown.setdefault(int((b.time - start) // step), [0.0, 0.0])
                slot[0] += delta
                slot[1] += b.time - a.time
            for index, (delta, seconds) in grown.items():
                point = buckets.setdefault(index, {})
                point[name] = point.get(name, 0.0) + delta / seconds
    return [{"t": round(start + (index + 1) * step, 3),
             **{f"{name}_per_s": round(value, 4) for name, value in buckets[index].items()}}
            for index in sorted(buckets)]


def total(live: Mapping[str, scrape.Series | None], instances: Sequence[str], name: str,
          combine: Callable[[list[float]], float] = sum) -> float | None:
    """``name`` summed (or ``combine``d) over the instances that answered; None when none did or none has it."""
    values = [series[name] for url in instances if (series := live.get(url)) is not None and name in series]
    return combine(values) if values else None


def _statuses(status: Mapping[str, Any], instances: Sequence[str]) -> list[dict[str, Any]]:
    return [body for url in instances if "error" not in (body := status.get(url, {"error": ""}))]


def newest_event_time(bodies: Sequence[dict[str, Any]]) -> float | None:
    """The latest ``last_event_time`` among /status bodies; None when none has one."""
    times = [t for body in bodies if isinstance(t := body.get("last_event_time"), int | float)]
    return max(times) if times else None


def report(history: Sequence[Sample], now: Sample, live: dict[str, scrape.Series | None],
           status: dict[str, Any], gaps: list[dict[str, Any]] | None, interval: float,
           fleet: Fleet) -> dict[str, Any]:
    """The /stats document without its ``homes`` part. ``now`` is a fresh scrape (not yet in ``history``),
    ``live`` its full series and ``status`` the /status bodies, both by instance URL."""
    unreachable: dict[str, str] = {}
    for service in SERVICES:
        errors = [str(status.get(url, {}).get("error") or f"{url}: /metrics did not answer")
                  for url in fleet[service] if live.get(url) is None]
        if errors:
            unreachable[service] = "; ".join(errors)
    out: dict[str, Any] = {
        "generated_at": round(now.time, 3),
        "sample_interval_s": interval,
        "watched_s": round(now.time - history[0].time, 3) if history else 0.0,
        "unreachable": unreachable,
        "rates": {label: rates(in_window(history, now, seconds), fleet) for label, seconds in WINDOWS.items()},
        "totals": {name: total(live, fleet[service], counter) for name, service, counter in COUNTERS},
    }
    window = in_window(history, now, PERCENTILE_WINDOW_S)
    out["latency"] = {"window_s": PERCENTILE_WINDOW_S,
                      **{name: percentiles(window, fleet[service], hist) for name, service, hist in HISTOGRAMS}}
    out["depth"] = {name: total(live, fleet[service], gauge) for name, service, gauge in GAUGES}
    ing = _statuses(status, fleet[INGESTION])
    enr = _statuses(status, fleet[ENRICHMENT])
    newest = newest_event_time(enr)
    out["last_event_time"] = {INGESTION: newest_event_time(ing), ENRICHMENT: newest}
    out["newest_stored_event_age_s"] = round(now.time - newest, 3) if newest is not None else None
    letters = [body["dead_letters"] for body in enr if isinstance(body.get("dead_letters"), int)]
    out["dead_letters"] = sum(letters) if letters else None
    # Workers whose count is not known (no answer): a sum of 0 is then no all-clear.
    out["dead_letters_unknown_workers"] = len(fleet[ENRICHMENT]) - len(letters)
    refused = [body["outbox"]["rejected_events"] for body in ing
               if isinstance(body.get("outbox"), dict) and isinstance(body["outbox"].get("rejected_events"), int)]
    out["rejected_events"] = sum(refused) if refused else None
    out["rejected_unknown_ingestions"] = len(fleet[INGESTION]) - len(refused)
    if len(fleet[INGESTION]) == 1:
        out["ha"] = ing[0].get("ha") if ing else None
    else:
        states = [str((body.get("ha") or {}).get("state")) for body in ing]
        out["ha"] = {"state": states[0] if len(set(states)) == 1 and len(ing) == len(fleet[INGESTION]) else "mixed",
                     "subscribed": states.count("subscribed"), "instances": len(fleet[INGESTION])}
    available = [body.get("store_available") for body in enr]
    out["store"] = {"available": None if not enr else all(available),
                    "reason": "; ".join(str(body.get("store_reason")) for body in enr if body.get("store_reason"))}
    if gaps is None:
        out["gaps"] = None
    else:
        counts: dict[str, int] = {}
        for gap in gaps:
            counts[str(gap.get("status"))] = counts.get(str(gap.get("status")), 0) + 1
        out["gaps"] = {"by_status": counts, "recent": gaps[:5]}
    return out
