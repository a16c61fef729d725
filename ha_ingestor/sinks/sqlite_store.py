"""The embedded store: points in one SQLite file, for a machine without InfluxDB.

Same identity rule as InfluxDB: a point is (measurement, tag set, time); writing it again merges its
fields into the stored ones (new values win), exactly as InfluxDB does. Fields keep their JSON types.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from ..errors import StoreUnavailable
from ..metrics import Registry
from ..sqlite import SqliteWorker, transaction
from .point import Point, Rejected

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    measurement TEXT NOT NULL,
    series      TEXT NOT NULL,   -- the tag set as canonical JSON
    time_ns     INTEGER NOT NULL,
    fields      TEXT NOT NULL,   -- JSON object
    PRIMARY KEY (measurement, series, time_ns)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS points_by_time ON points (time_ns);
"""

_UPSERT = """
INSERT INTO points (measurement, series, time_ns, fields) VALUES (?, ?, ?, ?)
ON CONFLICT (measurement, series, time_ns) DO UPDATE SET fields = json_patch(fields, excluded.fields)
"""


# Old points go a chunk per transaction, so a prune never holds up the writer for long.
PRUNE_CHUNK = 10_000
PRUNE_INTERVAL_S = 3600.0
_PRUNE = """
DELETE FROM points WHERE (measurement, series, time_ns) IN (
    SELECT measurement, series, time_ns FROM points WHERE time_ns < ? ORDER BY time_ns LIMIT ?)
"""


def _clean_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k and not (type(v) is float and not math.isfinite(v))}


class SqliteStore:
    """Points in ``DATA_DIR/store.sqlite``."""

    name = "sqlite"

    def __init__(self, path: Path, metrics: Registry | None = None, *, synchronous: str = "NORMAL",
                 checkpoint_interval: float | None = None, retention_s: float = 0.0) -> None:
        """``synchronous`` and ``checkpoint_interval`` as the outbox's: a point is on the disk no later than
        the outbox's delete of its event (FULL: at its commit), or a power cut could lose both copies.
        ``retention_s`` > 0: points older than that are dropped at start and every hour."""
        self.path = path
        self._synchronous = synchronous
        self._checkpoint_interval = checkpoint_interval
        self.retention_s = retention_s
        self._pruner: asyncio.Task[None] | None = None
        self._db: SqliteWorker | None = None
        metrics = metrics or Registry()
        self._latency = metrics.histogram("store_write_seconds", "Time of one write request to the store")
        self._requests = metrics.counter("store_write_requests", "Write requests sent to the store")
        self._pruned = metrics.counter("store_pruned_points", "Points the embedded store dropped as older than "
                                       "STORE_RETENTION_DAYS")

    def describe(self) -> Mapping[str, Any]:
        return {"kind": "sqlite", "path": str(self.path)}

    @property
    def db(self) -> SqliteWorker:
        if self._db is None:
            try:
                self._db = SqliteWorker(self.path, schema=SCHEMA, synchronous=self._synchronous,
                                        checkpoint_interval=self._checkpoint_interval)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open {self.path}: {exc}") from None
        return self._db

    async def start(self) -> None:
        _ = self.db
        if self.retention_s > 0 and self._pruner is None:
            self._pruner = asyncio.create_task(self._prune_hourly(), name="store-prune")

    async def close(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
            await asyncio.gather(self._pruner, return_exceptions=True)
            self._pruner = None
        if self._db is not None:
            self._db.close()
            self._db = None

    async def write(self, points: Sequence[Point]) -> list[Rejected]:
        rows = []
        rejected = []
        for point in points:
            fields = _clean_fields(point.fields)
            if not fields or not point.measurement:
                rejected.append(Rejected(point, "nothing writable: no finite field, or an empty name"))
                continue
            if not -(2**63) <= point.time_ns < 2**63:
                rejected.append(Rejected(point, f"time {point.time_ns} ns does not fit a 64-bit integer"))
                continue
            rows.append((point.measurement, orjson.dumps(dict(point.tags)).decode(), point.time_ns,
                         orjson.dumps(fields).decode()))

        def _write(conn: sqlite3.Connection) -> None:
            conn.executemany(_UPSERT, rows)

        started = time.perf_counter()
        try:
            await self.db.run(lambda: transaction(self.db.conn, _write))
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"embedded store {self.path}: {exc}") from None
        self._latency.observe(time.perf_counter() - started)
        self._requests.inc()
        return rejected

    async def check(self) -> None:
        def _probe() -> None:
            # A write inside a transaction that is rolled back: proves the file is writable.
            self.db.conn.execute("BEGIN IMMEDIATE")
            self.db.conn.execute("ROLLBACK")

        try:
            await self.db.run(_probe)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"embedded store {self.path} is not writable: {exc}") from None

    async def prune(self, now: float | None = None) -> int:
        """Drop the points older than the retention (by their own time), a chunk per transaction; how many."""
        cutoff_ns = int(((time.time() if now is None else now) - self.retention_s) * 1e9)
        dropped = 0
        while True:
            chunk = await self.db.run(lambda: transaction(
                self.db.conn, lambda conn: conn.execute(_PRUNE, (cutoff_ns, PRUNE_CHUNK)).rowcount))
            dropped += chunk
            self._pruned.inc(chunk)
            if chunk < PRUNE_CHUNK:
                return dropped

    async def _prune_hourly(self) -> None:
        while True:
            try:
                if dropped := await self.prune():
                    log.info("embedded store: dropped points past STORE_RETENTION_DAYS",
                             extra={"points": dropped, "days": self.retention_s / 86400})
            except (sqlite3.Error, StoreUnavailable) as exc:  # a full disk, say: the next hour tries again
                log.warning("embedded store: cannot drop old points", extra={"error": str(exc)})
            await asyncio.sleep(PRUNE_INTERVAL_S)

    async def recent(self, limit: int) -> list[dict[str, Any]]:
        def _read() -> list[tuple[str, str, int, str]]:
            return self.db.conn.execute(
                "SELECT measurement, series, time_ns, fields FROM points ORDER BY time_ns DESC LIMIT ?",
                (int(limit),),
            ).fetchall()

        return [_row(r) for r in await self.db.run(_read)]

    async def points(self, measurement: str | None = None) -> list[dict[str, Any]]:
        """Every stored point (of one measurement), oldest first: for tests, verify and export."""

        def _read() -> list[tuple[str, str, int, str]]:
            sql = "SELECT measurement, series, time_ns, fields FROM points"
            if measurement is None:
                return self.db.conn.execute(sql + " ORDER BY time_ns").fetchall()
            return self.db.conn.execute(sql + " WHERE measurement = ? ORDER BY time_ns", (measurement,)).fetchall()

        return [_row(r) for r in await self.db.run(_read)]


def _row(row: tuple[str, str, int, str]) -> dict[str, Any]:
    measurement, series, time_ns, fields = row
    return {"measurement": measurement, "time_ns": time_ns, "tags": orjson.loads(series),
            "fields": orjson.loads(fields)}
