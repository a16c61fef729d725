"""Enrichment's spool: accepted batches wait here, durably, while the store is unavailable.

A batch is appended exactly as it arrived (the request body), so the spool costs no re-encoding and
the drainer runs it through the same path as a live request. Bounded by bytes: when full, enrichment
answers 503 and the events stay in ingestion's outbox.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from ..metrics import Registry
from ..sqlite import SqliteWorker

SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id       INTEGER PRIMARY KEY,
    home_id  TEXT NOT NULL,
    events   INTEGER NOT NULL,
    body     BLOB NOT NULL,
    created  REAL NOT NULL
);
"""


class SpoolFull(Exception):
    """The spool has no room for this batch."""


@dataclass(frozen=True, slots=True)
class Spooled:
    id: int
    home_id: str
    events: int
    body: bytes
    created: float


class Spool:
    def __init__(self, db: SqliteWorker, max_bytes: int, metrics: Registry) -> None:
        self.db = db
        self.max_bytes = max_bytes
        db.run_sync(db.conn.executescript, SCHEMA)
        row = db.run_sync(lambda: db.conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(events), 0), COALESCE(SUM(length(body)), 0) FROM spool").fetchone())
        self.batches, self.events, self.bytes = int(row[0]), int(row[1]), int(row[2])
        self._in = metrics.counter("spool_in_events", "Events appended to the spool")
        self._out = metrics.counter("spool_out_events", "Events drained from the spool into the store")
        self._in_bytes = metrics.counter("spool_in_bytes", "Bytes appended to the spool")
        self._out_bytes = metrics.counter("spool_out_bytes", "Bytes drained from the spool")
        metrics.gauge("spool_events", "Events waiting in the spool", read=lambda: self.events)
        metrics.gauge("spool_bytes", "Bytes waiting in the spool", read=lambda: self.bytes)
        metrics.gauge("spool_limit_bytes", "Size limit of the spool", read=lambda: self.max_bytes)

    def __len__(self) -> int:
        return self.batches

    async def append(self, home_id: str, body: bytes, events: int) -> None:
        """Durably append one batch; raises SpoolFull at the limit."""
        if self.bytes + len(body) > self.max_bytes:
            raise SpoolFull(f"spool holds {self.bytes} of {self.max_bytes} bytes")
        # Counted before the await so concurrent appends cannot overshoot the bound together.
        self.bytes += len(body)
        self.batches += 1
        self.events += events

        def _insert() -> None:
            self.db.conn.execute(
                "INSERT INTO spool (home_id, events, body, created) VALUES (?, ?, ?, ?)",
                (home_id, events, body, time.time()),
            )

        try:
            await self.db.run(_insert)
        except sqlite3.Error:
            self.bytes -= len(body)
            self.batches -= 1
            self.events -= events
            raise
        self._in.inc(events)
        self._in_bytes.inc(len(body))

    async def oldest(self) -> Spooled | None:
        def _read() -> tuple[int, str, int, bytes, float] | None:
            return self.db.conn.execute(  # type: ignore[no-any-return]
                "SELECT id, home_id, events, body, created FROM spool ORDER BY id LIMIT 1").fetchone()

        row = await self.db.run(_read)
        return Spooled(*row) if row else None

    async def remove(self, item: Spooled) -> None:
        await self.db.run(lambda: self.db.conn.execute("DELETE FROM spool WHERE id = ?", (item.id,)))
        self.bytes -= len(item.body)
        self.batches -= 1
        self.events -= item.events
        self._out.inc(item.events)
        self._out_bytes.inc(len(item.body))

    def depth(self) -> dict[str, int]:
        return {"batches": self.batches, "events": self.events, "bytes": self.bytes, "limit_bytes": self.max_bytes}
