"""The ``homes`` part of /stats: each home's figures, from its ingestion instances and every worker's per-home series.

An ingestion instance names its home in ``home_info{home="..."}`` (its HOME_ID; "" when unset); a worker
counts per home in ``events_*_by_home_total{home="..."}``, ``end_to_end_lag_by_home_seconds`` and
``last_event_time_by_home_seconds``. Any worker may store any home's batches (NATS), so a home's
enrichment figures are summed over all workers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from . import scrape
from .stats import (
    ENRICHMENT,
    INGESTION,
    PERCENTILE_WINDOW_S,
    Fleet,
    Sample,
    in_window,
    newest_event_time,
    percentiles,
    rounded,
    summed,
    total,
)

HOME_RATE_WINDOW_S = 60.0
_HOME = re.compile(r'^[a-z_]+\{home="([^"]*)"')

# (name in /stats, counter) of every per-home rate and total, on ingestion and on the workers.
INGESTION_COUNTERS = (("received", "events_received_total"), ("forwarded", "events_forwarded_total"))
WORKER_COUNTERS = (("enrichment_received", "events_received_by_home_total"),
                   ("stored", "events_stored_by_home_total"),
                   ("spooled", "events_spooled_by_home_total"),
                   ("dead_lettered", "events_dead_lettered_by_home_total"))


def _label(home: str) -> str:
    return f'{{home="{home}"}}'


def home_of(series: scrape.Series | None) -> str | None:
    """The home an ingestion instance's series names, or None without ``home_info``."""
    for key in series or ():
        if key.startswith("home_info{") and (match := _HOME.match(key)) is not None:
            return match.group(1)
    return None


def ingestion_homes(history: Sequence[Sample], now: Sample, fleet: Fleet) -> dict[str, str | None]:
    """Each ingestion URL's home, from the newest scrape it answered (so a home whose ingestion is down
    stays listed, as down)."""
    out: dict[str, str | None] = {}
    for url in fleet[INGESTION]:
        out[url] = next((home for sample in (now, *reversed(history))
                         if (home := home_of(sample.series.get(url))) is not None), None)
    return out


def known(history: Sequence[Sample], fleet: Fleet) -> dict[str, str | None]:
    """Each ingestion URL's home as the scrapes kept so far name it."""
    return ingestion_homes(history[:-1], history[-1], fleet) if history else {}


def worker_homes(series: scrape.Series | None) -> set[str]:
    """The homes a worker has counted."""
    return {match.group(1) for key in series or () if key.startswith("events_received_by_home_total{")
            and (match := _HOME.match(key)) is not None}


def report(history: Sequence[Sample], now: Sample, live: Mapping[str, scrape.Series | None],
           status: Mapping[str, Any], fleet: Fleet) -> dict[str, dict[str, Any]]:
    """Per home: rates over the last minute, totals, outbox, HA connection, end-to-end lag over five minutes,
    newest event times, and the instances behind it."""
    by_url = ingestion_homes(history, now, fleet)
    workers = {url: worker_homes(live.get(url)) for url in fleet[ENRICHMENT]}
    names = sorted({home for home in by_url.values() if home is not None}.union(*workers.values()))
    minute = in_window(history, now, HOME_RATE_WINDOW_S)
    lag_window = in_window(history, now, PERCENTILE_WINDOW_S)
    out: dict[str, dict[str, Any]] = {}
    for home in names:
        ingestion = [url for url, named in by_url.items() if named == home]
        mine = [url for url, homes in workers.items() if home in homes]
        counters = [counter for _, counter in INGESTION_COUNTERS]
        _, ing_rates, _ = summed(minute, ingestion, counters)
        worker_counters = [counter + _label(home) for _, counter in WORKER_COUNTERS]
        _, enr_rates, _ = summed(minute, fleet[ENRICHMENT], worker_counters)
        bodies = [status.get(url, {}) for url in ingestion]
        states = [str((body.get("ha") or {}).get("state", "unreachable")) if "error" not in body else "unreachable"
                  for body in bodies]
        stored = total(live, fleet[ENRICHMENT], "last_event_time_by_home_seconds" + _label(home), max)
        lag = percentiles(lag_window, fleet[ENRICHMENT], "end_to_end_lag_by_home_seconds", f'home="{home}",')
        out[home] = {
            "ingestion": ingestion,
            "workers": mine,
            "connected": bool(states) and all(state == "subscribed" for state in states),
            "ha_state": ", ".join(sorted(set(states))) or "unknown",
            "rates_1m": {
                **{f"{name}_per_s": rounded(ing_rates[counter]) for name, counter in INGESTION_COUNTERS},
                **{f"{name}_per_s": rounded(enr_rates[counter + _label(home)]) for name, counter in WORKER_COUNTERS},
            },
            "totals": {
                **{name: total(live, ingestion, counter) for name, counter in INGESTION_COUNTERS},
                **{name: total(live, fleet[ENRICHMENT], counter + _label(home)) for name, counter in WORKER_COUNTERS},
            },
            "outbox_events": total(live, ingestion, "outbox_events"),
            "end_to_end_lag_seconds": lag,
            "last_event_time": {INGESTION: newest_event_time(bodies), ENRICHMENT: stored or None},
            "newest_stored_event_age_s": round(now.time - stored, 3) if stored else None,
        }
    return out
