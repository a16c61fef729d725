"""The unit every store writes: one InfluxDB-style point, plus the store interface."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

FieldValue = float | int | bool | str


@dataclass(frozen=True, slots=True)
class Point:
    """A point: its identity is (measurement, tags, time_ns); writing it again overwrites it.

    ``tags`` are sorted by key (InfluxDB's canonical order, which also makes equal points compare
    equal). ``source`` is the event the point came from, kept for dead letters; it is not part of
    the point's value.
    """

    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: Mapping[str, FieldValue]
    time_ns: int
    source: Any = field(default=None, compare=False, repr=False)

    @property
    def series_key(self) -> str:
        return self.measurement + "".join(f",{k}={v}" for k, v in self.tags)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A point the store refused for good, and why."""

    point: Point
    reason: str


class Store(Protocol):
    """Where points are written. Implementations: InfluxStore, SqliteStore."""

    name: str

    async def start(self) -> None:
        """Open connections, create the database when allowed. May raise StoreUnavailable."""

    async def close(self) -> None: ...

    async def write(self, points: Sequence[Point]) -> list[Rejected]:
        """Write every point it can; return those refused for good.

        Raises StoreUnavailable when the store cannot take writes now: then nothing may be
        assumed written (a retry rewrites the same points, which is harmless).
        """
        ...

    async def check(self) -> None:
        """Raise StoreUnavailable (with the reason) unless the store is reachable and writable."""

    async def recent(self, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` points written, newest first, as plain dicts."""
        ...

    def describe(self) -> Mapping[str, Any]:
        """What this store is, for /config and /health (no secrets)."""
        ...
