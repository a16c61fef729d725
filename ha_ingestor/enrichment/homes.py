"""Enrichment's figures per home (the ``home`` label), so admin-api can show each home of a fleet.

They carry their own names (``events_stored_by_home_total{home="north"}``) rather than a label on the
existing totals: ``sum(events_stored_total)`` in Prometheus would otherwise count every event twice, and
the home without a HOME_ID (label value "") would collide with the unlabeled total. Everything here is
counted once per batch, never per event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..metrics import Counter, Gauge, Histogram, Registry

# Home ids come from the batches: past this many, new ones are counted together as "_other" (not a valid
# HOME_ID), so a misbehaving client cannot grow /metrics without bound.
MAX_HOMES = 1000
OTHER = "_other"

# Six buckets a decade from 1 ms to ~2 h: coarser than the total's, because admin-api keeps every home's
# buckets of every worker for five minutes.
HOME_LAG_BUCKETS = tuple(round(10 ** (k / 6) / 1000, 6) for k in range(0, 6 * 6 + 5))


@dataclass(frozen=True, slots=True)
class HomeFigures:
    received: Counter
    stored: Counter
    spooled: Counter
    dead_lettered: Counter
    lag: Histogram
    newest: Gauge  # time fired (Unix s) of the newest event stored


class Homes:
    """The per-home series of one enrichment process, created on a home's first batch."""

    def __init__(self, metrics: Registry) -> None:
        self.metrics = metrics
        self._homes: dict[str, HomeFigures] = {}

    def __getitem__(self, home_id: str) -> HomeFigures:
        figures = self._homes.get(home_id)
        if figures is None:
            if len(self._homes) >= MAX_HOMES:
                home_id = OTHER
                if OTHER in self._homes:
                    return self._homes[OTHER]
            labels = (("home", home_id),)
            m = self.metrics
            figures = HomeFigures(
                m.counter("events_received_by_home", "Events accepted by enrichment, per home", labels),
                m.counter("events_stored_by_home", "Events whose points the store acknowledged, per home", labels),
                m.counter("events_spooled_by_home", "Events appended to the spool, per home", labels),
                # Counted by Pipeline.keep_dead_letters; created with the others, so a home without dead letters
                # shows 0 rather than nothing.
                m.counter("events_dead_lettered_by_home", "Points the store refused for good, per home", labels),
                m.histogram("end_to_end_lag_by_home_seconds", "Event time to store acknowledgement, per home",
                            labels, buckets=HOME_LAG_BUCKETS),
                m.gauge("last_event_time_by_home_seconds", "Time fired (Unix s) of the newest event stored, per home",
                        labels),
            )
            self._homes[home_id] = figures
        return figures

    def stored(self, home_id: str, lags: Sequence[float], newest: float) -> None:
        """One stored batch: its events, their lags (s) and the newest time fired (Unix s)."""
        figures = self[home_id]
        figures.stored.inc(len(lags))
        figures.lag.observe_many(lags)
        if newest > figures.newest.value:
            figures.newest.set(newest)
