"""Dead letters: points the store refused for good, kept with the reason and the original event.

The rest of their batch is written; a dead letter never blocks the stream or trips outage retries.
Once the cause is fixed (a field type conflict resolved, a measurement dropped), ``replay`` runs the
kept events through enrichment again; those the store takes leave the list.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import orjson

from ..metrics import Registry
from ..sinks.line_protocol import encode_point
from ..sinks.point import Rejected
from ..sqlite import SqliteWorker, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS deadletters (
    id        INTEGER PRIMARY KEY,
    created   REAL NOT NULL,
    home_id   TEXT NOT NULL,
    reason    TEXT NOT NULL,
    point     TEXT NOT NULL,   -- the refused point, as a line of line protocol
    event     BLOB NOT NULL,   -- the original event, as JSON
    attempts  INTEGER NOT NULL DEFAULT 1
);
"""


class DeadLetters:
    def __init__(self, db: SqliteWorker, metrics: Registry) -> None:
        self.db = db
        db.run_sync(db.conn.executescript, SCHEMA)
        self.count = int(db.run_sync(lambda: db.conn.execute("SELECT COUNT(*) FROM deadletters").fetchone()[0]))
        self._added = metrics.counter("events_dead_lettered", "Points the store refused for good")
        self._replayed = metrics.counter("dead_letters_replayed", "Dead letters written on replay")
        metrics.gauge("dead_letters", "Dead letters kept", read=lambda: self.count)

    async def add(self, home_id: str, rejected: Sequence[Rejected], event_json: Sequence[bytes]) -> None:
        now = time.time()
        rows = [
            (now, home_id, r.reason, encode_point(r.point) or repr(r.point), ev)
            for r, ev in zip(rejected, event_json, strict=True)
        ]

        def _insert(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO deadletters (created, home_id, reason, point, event) VALUES (?, ?, ?, ?, ?)", rows)

        await self.db.run(lambda: transaction(self.db.conn, _insert))
        self.count += len(rows)
        self._added.inc(len(rows))

    async def page(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        def _read() -> list[tuple[Any, ...]]:
            return self.db.conn.execute(
                "SELECT id, created, home_id, reason, point, event, attempts FROM deadletters"
                " ORDER BY id LIMIT ? OFFSET ?", (limit, offset)).fetchall()

        return [
            {"id": i, "created": c, "home_id": h, "reason": r, "point": p, "event": orjson.loads(e), "attempts": a}
            for i, c, h, r, p, e, a in await self.db.run(_read)
        ]

    async def take(self, ids: Sequence[int] | None, after: int = 0, limit: int = 1000
                   ) -> list[tuple[int, str, bytes]]:
        """(id, home_id, event) of the dead letters to replay: ``ids``, or the ``limit`` oldest after ``after``."""

        def _read() -> list[tuple[int, str, bytes]]:
            if ids is None:
                return self.db.conn.execute(
                    "SELECT id, home_id, event FROM deadletters WHERE id > ? ORDER BY id LIMIT ?",
                    (after, limit)).fetchall()
            marks = ",".join("?" * len(ids))
            return self.db.conn.execute(
                f"SELECT id, home_id, event FROM deadletters WHERE id IN ({marks}) ORDER BY id", tuple(ids)).fetchall()

        return await self.db.run(_read)

    async def newest_id(self) -> int:
        return int(await self.db.run(lambda: self.db.conn.execute(
            "SELECT COALESCE(MAX(id), 0) FROM deadletters").fetchone()[0]))

    async def resolve(self, written: Sequence[int], still_refused: Sequence[tuple[int, str]]) -> None:
        """After a replay: drop those written, note the new reason of those refused again."""

        def _update(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM deadletters WHERE id = ?", [(i,) for i in written])
            conn.executemany("UPDATE deadletters SET reason = ?, attempts = attempts + 1 WHERE id = ?",
                             [(reason, i) for i, reason in still_refused])

        await self.db.run(lambda: transaction(self.db.conn, _update))
        self.count -= len(written)
        self._replayed.inc(len(written))
