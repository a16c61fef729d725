"""What was fired against what was stored: the counting both the fault suite and the migration test use.

A key is ("state", entity_id, µs) for a state change (its point's time is ``last_updated``) or
("event", event_type, µs) for any other event (``time_fired``; the point's nanosecond offset is dropped).
"""

from __future__ import annotations

import urllib.error
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from .influxd import Influxd
from .procs import Stack

Key = tuple[str, str, int]


def _where(home: str | None) -> str:
    return "" if home is None else " WHERE \"home\" = '" + home.replace("'", "") + "'"


def stored_count(influxd: Influxd, db: str, home: str | None = None, timeout: float = 60.0) -> int:
    """How many points are stored (states and events); of one home's only when ``home`` is given."""
    where = _where(home)
    rows = influxd.rows(f'SELECT count("available") FROM "states"{where}', db, timeout=timeout) + \
        influxd.rows(f'SELECT count("origin") FROM "events"{where}', db, timeout=timeout)
    return sum(int(r["count"]) for r in rows)


def stored_now(influxd: Influxd, db: str, home: str | None = None) -> int | None:
    """:func:`stored_count` asked briefly; None while the store does not answer (a fault test may be breaking it)."""
    try:
        return stored_count(influxd, db, home, timeout=2)
    except (OSError, urllib.error.URLError, RuntimeError):
        return None


def stored_keys(influxd: Influxd, db: str, home: str | None = None) -> list[Key]:
    """Keys of the stored points; of one home's only (tag ``home``) when ``home`` is given."""
    where = _where(home)
    states = influxd.rows(f'SELECT "available" FROM "states"{where} GROUP BY "entity_id"', db)
    events = influxd.rows(f'SELECT "origin" FROM "events"{where} GROUP BY "event_type"', db)
    return [("state", r["entity_id"], r["time"] // 1000) for r in states] + \
        [("event", r["event_type"], r["time"] // 1000) for r in events]


def fired_keys(stack: Stack) -> list[Key]:
    return [("state", entity, us) if kind == "state_changed" else ("event", kind, us)
            for _, kind, entity, us in stack.fired()]


@dataclass(frozen=True)
class Audit:
    fired: int
    stored: int
    missing: frozenset[Key]
    duplicates: int

    @classmethod
    def of(cls, fired: Iterable[Key], stored: Iterable[Key], allowed_missing: Iterable[Key] = ()) -> Audit:
        fired_set, stored_list = set(fired), list(stored)
        counts = Counter(stored_list)
        duplicates = sum(n - 1 for n in counts.values()) + len(set(stored_list) - fired_set)
        missing = fired_set - set(stored_list) - set(allowed_missing)
        return cls(len(fired_set), len(stored_list), frozenset(missing), duplicates)
