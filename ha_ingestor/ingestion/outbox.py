"""The durable outbox: every event is here before it is forwarded, and leaves only once enrichment took it.

One SQLite file (WAL) in ``DATA_DIR/ingestion/outbox.sqlite`` with:

* ``outbox``   events in arrival order, as the JSON that is forwarded;
* ``meta``     the watermark (time of the newest live event made durable) and the entity ids seen;
* ``gaps``     windows in which the live stream was interrupted, and what backfill did about them;
* ``rejected`` events enrichment refused for good (HTTP 4xx), kept for inspection instead of lost.

Appends are group commits: the writer takes everything that queued up while the previous commit ran and
commits it in one transaction, so the cost of a commit (and of an fsync with ``OUTBOX_SYNC=full``) is
shared by all the events that arrived meanwhile.

The newest rows are also kept in memory (the *tail*, up to ``TAIL_MAX_BYTES``), so the forwarder reads
what it sends from there instead of reading back from SQLite what was written a moment ago; rows older
than the tail (after a restart, or after an outage outgrew it) are read from the file. Memory is only a
copy: a row is durable in SQLite before it enters the tail, and leaves both together.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from ..metrics import Registry
from ..sqlite import SqliteWorker, transaction

SCHEMA = """
-- AUTOINCREMENT: an id is never reused, even after the table emptied, so the forwarder can read "everything
-- after the last id it took" while earlier batches are still in flight.
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS gaps (
    id INTEGER PRIMARY KEY,
    start_us INTEGER NOT NULL,
    end_us INTEGER,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,          -- open | pending | done | failed
    states INTEGER NOT NULL DEFAULT 0,
    filled_us INTEGER,             -- backfill progress: everything before it is in the outbox
    created REAL NOT NULL,
    finished REAL,
    error TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0  -- backfills that failed (HA refused the history command)
);
CREATE TABLE IF NOT EXISTS rejected (id INTEGER PRIMARY KEY, created REAL NOT NULL, reason TEXT NOT NULL,
                                     body BLOB NOT NULL);
"""

T = TypeVar("T")

# Bodies only (each row costs ~100 bytes more in Python): ~16,000 events of ~1 kB, the batches in flight and
# waiting at 20,000 events/s. A backlog beyond that is read from the file.
TAIL_MAX_BYTES = 16 * 1024 * 1024
# Each event is written, then deleted moments later. With SQLite's default (a checkpoint inside the commit
# that fills 1,000 WAL pages) a commit waited for the checkpoint's fsync several times a second at 20,000
# events/s. A thread of its own checkpoints every CHECKPOINT_INTERVAL_S instead, beside the writer (a commit
# is as durable as before: in WAL mode it survives a crash of the process either way, and the WAL reaches the
# disk at every checkpoint, OUTBOX_SYNC=full at every commit). Under a steady stream that thread never quite
# catches up with the writer, and only a checkpoint that did lets the WAL start again from its beginning: the
# writer's own, at WAL_AUTOCHECKPOINT_PAGES (~40 MB, every ~2 s at 20,000/s), which finds nearly everything
# copied already.
CHECKPOINT_INTERVAL_S = 0.5
WAL_AUTOCHECKPOINT_PAGES = 10_000


@dataclass(frozen=True, slots=True)
class Gap:
    id: int
    start_us: int
    end_us: int | None
    reason: str
    status: str
    states: int
    filled_us: int | None
    created: float
    finished: float | None
    error: str
    attempts: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "start_us": self.start_us, "end_us": self.end_us, "reason": self.reason,
            "status": self.status, "states_backfilled": self.states, "filled_us": self.filled_us,
            "created": self.created,
            "finished": self.finished, "error": self.error, "failed_attempts": self.attempts,
            "seconds": None if self.end_us is None else round((self.end_us - self.start_us) / 1e6, 3),
        }


class Outbox:
    def __init__(self, path: Path, *, max_events: int, synchronous: str, metrics: Registry,
                 tail_max_bytes: int = TAIL_MAX_BYTES) -> None:
        self.db = SqliteWorker(path, synchronous=synchronous.upper(), schema=SCHEMA,
                               wal_autocheckpoint=WAL_AUTOCHECKPOINT_PAGES,
                               checkpoint_interval=CHECKPOINT_INTERVAL_S)
        self.db.run_sync(self._upgrade)
        self.max_events = max_events
        count, size = self.db.run_sync(lambda: self.db.conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(length(body)), 0) FROM outbox").fetchone())
        self.count = int(count)
        self.bytes = int(size)  # bytes waiting, kept like count so /metrics costs no query
        # Events enrichment refused, kept in ``rejected``: counted across restarts, unlike the counter below.
        self.rejected_count = int(self.db.run_sync(lambda: self.db.conn.execute(
            "SELECT COUNT(*) FROM rejected").fetchone()[0]))
        # The tail: every outbox row with id >= _tail_from is in _tail (id -> body); older ones only on disk.
        last_id = self.db.run_sync(lambda: self.db.conn.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'outbox'").fetchone()[0])
        self._last_id = int(last_id)
        self._tail: dict[int, bytes] = {}
        self._tail_from = self._last_id + 1
        self._tail_bytes = 0
        self._tail_max_bytes = tail_max_bytes
        self.bytes_in = 0
        self._in = metrics.counter("outbox_in_events", "Events appended to the outbox")
        self._out = metrics.counter("outbox_out_events", "Events removed from the outbox after enrichment took them")
        self._in_bytes = metrics.counter("outbox_in_bytes", "Bytes appended to the outbox")
        self._out_bytes = metrics.counter("outbox_out_bytes", "Bytes removed from the outbox once enrichment took them")
        self._commits = metrics.counter("outbox_commits", "Outbox transactions")
        self._commit_time = metrics.histogram("outbox_commit_seconds", "Time of one outbox commit")
        self._rejected = metrics.counter("events_rejected_by_enrichment", "Events enrichment refused for good")
        metrics.gauge("outbox_events", "Events waiting in the outbox", read=lambda: self.count)
        metrics.gauge("outbox_rejected_events", "Events enrichment refused for good, kept to be looked at and "
                      "replayed (GET/POST /rejected)", read=lambda: self.rejected_count)
        metrics.gauge("outbox_bytes", "Bytes waiting in the outbox", read=lambda: self.bytes)
        metrics.gauge("outbox_limit_events", "Outbox limit", read=lambda: self.max_events)
        metrics.gauge("outbox_tail_bytes", "Bytes of the newest events kept in memory for the forwarder",
                      read=lambda: self._tail_bytes)
        self._file_reads = metrics.counter("outbox_file_reads", "Forwarder reads served from the file, not the "
                                           "in-memory tail (after a restart, or an outage that outgrew the tail)")

    def _upgrade(self) -> None:
        """Outboxes made before ids were AUTOINCREMENT: copy into the new layout, keeping every row and id.
        Before gaps counted failed attempts: add the column."""
        conn = self.db.conn
        if "attempts" not in {row[1] for row in conn.execute("PRAGMA table_info(gaps)")}:
            conn.execute("ALTER TABLE gaps ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0")
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'outbox'").fetchone()[0]
        if "AUTOINCREMENT" in sql.upper():
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("ALTER TABLE outbox RENAME TO outbox_old")
            conn.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL)")
            conn.execute("INSERT INTO outbox (id, body) SELECT id, body FROM outbox_old ORDER BY id")
            conn.execute("DROP TABLE outbox_old")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @property
    def full(self) -> bool:
        return self.count >= self.max_events

    def close(self) -> None:
        self.db.close()

    # ----------------------------------------------------------- append / read / remove

    async def append(self, bodies: Sequence[bytes], watermark_us: int | None = None) -> None:
        """Durably append events in one transaction; move the watermark with them when given."""

        def _write(conn: sqlite3.Connection) -> int:
            conn.executemany("INSERT INTO outbox (body) VALUES (?)", [(b,) for b in bodies])
            if watermark_us is not None:
                conn.execute("INSERT INTO meta (key, value) VALUES ('watermark_us', ?) "
                             "ON CONFLICT (key) DO UPDATE SET value = excluded.value "
                             "WHERE CAST(excluded.value AS INTEGER) > CAST(meta.value AS INTEGER)",
                             (str(watermark_us),))
            # AUTOINCREMENT and one writer: the rows just inserted have the ids up to the sequence, in order.
            return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'outbox'")
                       .fetchone()[0])

        started = time.perf_counter()
        size = sum(len(b) for b in bodies)

        def _committed(last_id: int) -> None:
            self._commit_time.observe(time.perf_counter() - started)
            self._commits.inc()
            self._appended(last_id, bodies, size)

        await self._transaction(_write, _committed)

    def _appended(self, last_id: int, bodies: Sequence[bytes], size: int) -> None:
        """Rows ``last_id - len(bodies) + 1 .. last_id`` (``size`` bytes) were committed at the end of the
        outbox: the tail, the figures and the counters follow."""
        self._remember(last_id, bodies, size)
        self.count += len(bodies)
        self.bytes += size
        self.bytes_in += size
        self._in.inc(len(bodies))
        self._in_bytes.inc(size)

    def _remember(self, last_id: int, bodies: Sequence[bytes], size: int) -> None:
        """Rows ``last_id - len(bodies) + 1 .. last_id`` (``size`` bytes) were committed: keep them in the tail
        if there is room."""
        if not bodies:
            return
        first_id = last_id - len(bodies) + 1
        if first_id != self._last_id + 1 or self._tail_bytes + size > self._tail_max_bytes:
            # Not the continuation of the tail (commits complete in order on the one database thread, so this
            # is only a safeguard), or no room: from here on the older rows are read from the file, and the
            # tail starts again after these.
            self._tail.clear()
            self._tail_bytes = 0
            self._tail_from = max(last_id, self._last_id) + 1
        else:
            self._tail.update(zip(range(first_id, last_id + 1), bodies, strict=True))
            self._tail_bytes += size
        self._last_id = max(last_id, self._last_id)

    def _tail_size(self, ids: Sequence[int]) -> int | None:
        """Total size of these rows when the tail holds every one of them."""
        tail = self._tail
        size = 0
        for row_id in ids:
            body = tail.get(row_id)
            if body is None:
                return None
            size += len(body)
        return size

    def _forget(self, ids: Sequence[int]) -> None:
        """Removed rows leave the tail too."""
        pop = self._tail.pop
        for row_id in ids:
            body = pop(row_id, None)
            if body is not None:
                self._tail_bytes -= len(body)

    async def peek(self, after_id: int, limit: int) -> list[tuple[int, bytes]]:
        """The oldest events with id > after_id (from the tail when it holds all of them)."""
        if after_id + 1 >= self._tail_from:
            tail = self._tail
            rows = []
            for row_id in range(after_id + 1, self._last_id + 1):
                body = tail.get(row_id)
                if body is not None:
                    rows.append((row_id, body))
                    if len(rows) >= limit:
                        break
            return rows
        self._file_reads.inc()
        return await self.db.run(lambda: self.db.conn.execute(
            "SELECT id, body FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)).fetchall())

    async def remove(self, ids: Sequence[int]) -> None:
        """Remove forwarded events (contiguous runs are removed by range)."""
        if not ids:
            return
        first, last = ids[0], ids[-1]
        contiguous = last - first + 1 == len(ids)
        known_size = self._tail_size(ids) if contiguous else None

        def _delete(conn: sqlite3.Connection) -> tuple[int, int]:
            # The size of rows not in the tail is read in the same transaction (the rows are in the page cache
            # already), so the byte counters stay exact without the forwarder having to pass sizes along.
            if contiguous:
                size = known_size if known_size is not None else conn.execute(
                    "SELECT COALESCE(SUM(length(body)), 0) FROM outbox WHERE id BETWEEN ? AND ?",
                    (first, last)).fetchone()[0]
                return conn.execute("DELETE FROM outbox WHERE id BETWEEN ? AND ?", (first, last)).rowcount, size
            size = sum(conn.execute("SELECT COALESCE(SUM(length(body)), 0) FROM outbox WHERE id = ?", (i,))
                       .fetchone()[0] for i in ids)
            return conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids]).rowcount, size

        def _removed(result: tuple[int, int]) -> None:
            removed, size = result
            self._forget(ids)
            self.count -= removed
            self.bytes -= int(size)
            self._out.inc(removed)
            self._out_bytes.inc(int(size))

        await self._transaction(_delete, _removed)

    async def reject(self, rows: Sequence[tuple[int, bytes]], reason: str) -> None:
        """Move events enrichment refused for good out of the outbox, into ``rejected`` (rows no longer in the
        outbox are left alone, so the counters follow the file)."""
        now = time.time()

        def _move(conn: sqlite3.Connection) -> list[tuple[int, bytes]]:
            moved = [(row_id, body) for row_id, body in rows
                     if conn.execute("DELETE FROM outbox WHERE id = ?", (row_id,)).rowcount]
            conn.executemany("INSERT INTO rejected (created, reason, body) VALUES (?, ?, ?)",
                             [(now, reason, body) for _, body in moved])
            return moved

        def _moved(moved: list[tuple[int, bytes]]) -> None:
            self._forget([row_id for row_id, _ in moved])
            self.count -= len(moved)
            self.bytes -= sum(len(body) for _, body in moved)
            self.rejected_count += len(moved)
            self._rejected.inc(len(moved))

        await self._transaction(_move, _moved)

    async def replay_rejected(self, ids: Sequence[int] | None = None) -> int:
        """Move refused events (``ids``, else every one kept when the replay began) back into the outbox, in
        the order they were refused, to be forwarded again — once enrichment was fixed or its limits raised.
        One refused again returns to ``rejected``. Returns how many were moved."""
        last = int(await self.db.run(lambda: self.db.conn.execute(
            "SELECT COALESCE(MAX(id), 0) FROM rejected").fetchone()[0]))
        moved, after = 0, 0
        done: list[tuple[list[int], list[bytes], int]] = []
        while True:
            def _move(conn: sqlite3.Connection, after: int = after) -> tuple[list[int], list[bytes], int]:
                if ids is None:
                    rows = conn.execute("SELECT id, body FROM rejected WHERE id > ? AND id <= ? ORDER BY id "
                                        "LIMIT 1000", (after, last)).fetchall()
                else:
                    marks = ",".join("?" * len(ids))
                    rows = conn.execute(f"SELECT id, body FROM rejected WHERE id IN ({marks}) ORDER BY id",
                                        tuple(ids)).fetchall() if ids else []
                if not rows:
                    return [], [], 0
                conn.executemany("INSERT INTO outbox (body) VALUES (?)", [(body,) for _, body in rows])
                conn.executemany("DELETE FROM rejected WHERE id = ?", [(row_id,) for row_id, _ in rows])
                last_id = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'outbox'")
                              .fetchone()[0])
                return [row_id for row_id, _ in rows], [bytes(body) for _, body in rows], last_id

            def _committed(result: tuple[list[int], list[bytes], int]) -> None:
                _, bodies, last_id = result
                if bodies:
                    self._appended(last_id, bodies, sum(len(body) for body in bodies))
                    self.rejected_count -= len(bodies)
                done.append(result)

            await self._transaction(_move, _committed)
            taken, bodies, _ = done.pop()
            moved += len(bodies)
            if ids is not None or not taken:
                return moved
            after = taken[-1]

    async def _transaction(self, fn: Callable[[sqlite3.Connection], T], committed: Callable[[T], None]) -> None:
        """Run ``fn`` in a transaction, then ``committed(result)`` on the event loop — also when the caller is
        cancelled meanwhile: the commit on the database thread cannot be stopped, so what memory says about
        the file (tail, counters) is brought up to date whenever it completes."""
        future = asyncio.ensure_future(self.db.run(transaction, self.db.conn, fn))

        def _done(done: asyncio.Future[T]) -> None:
            if not done.cancelled() and done.exception() is None:
                committed(done.result())

        future.add_done_callback(_done)
        await asyncio.shield(future)

    async def rejected(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Refused events, oldest first (the order a replay takes them), from the ``offset``-th on."""
        rows = await self.db.run(lambda: self.db.conn.execute(
            "SELECT id, created, reason, body FROM rejected ORDER BY id LIMIT ? OFFSET ?", (limit, offset)).fetchall())
        return [{"id": i, "created": c, "reason": r, "event": orjson.loads(b)} for i, c, r, b in rows]

    # ----------------------------------------------------------- meta

    def get_meta(self, key: str) -> str | None:
        row = self.db.run_sync(lambda: self.db.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone())
        return None if row is None else str(row[0])

    async def set_meta(self, key: str, value: str) -> None:
        await self.db.run(lambda: self.db.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value)))

    async def start_watermark(self, us: int) -> None:
        """Give a new outbox its first watermark (the first subscription), so a disconnect before the first
        event opens a gap too; an existing watermark is left alone."""
        await self.db.run(lambda: self.db.conn.execute(
            "INSERT INTO meta (key, value) VALUES ('watermark_us', ?) ON CONFLICT (key) DO NOTHING", (str(us),)))

    @property
    def watermark_us(self) -> int | None:
        value = self.get_meta("watermark_us")
        return int(value) if value else None

    # ----------------------------------------------------------- gaps

    async def open_gap(self, start_us: int, reason: str) -> int:
        """Record that the live stream stopped at ``start_us`` (its end is not known yet)."""
        def _insert() -> int:
            cursor = self.db.conn.execute(
                "INSERT INTO gaps (start_us, reason, status, created) VALUES (?, ?, 'open', ?)",
                (start_us, reason, time.time()))
            return int(cursor.lastrowid or 0)

        return await self.db.run(_insert)

    async def request_gap(self, start_us: int, end_us: int, reason: str) -> Gap:
        """A gap a user asks to be backfilled (points found missing, say): pending from the start."""
        def _insert() -> tuple[Any, ...]:
            row: tuple[Any, ...] = self.db.conn.execute(
                "INSERT INTO gaps (start_us, end_us, reason, status, created) VALUES (?, ?, ?, 'pending', ?) "
                "RETURNING id, start_us, end_us, reason, status, states, filled_us, created, finished, error, "
                "attempts", (start_us, end_us, reason, time.time())).fetchone()
            return row

        return Gap(*await self.db.run(lambda: transaction(self.db.conn, lambda conn: _insert())))

    async def close_open_gaps(self, end_us: int) -> None:
        """The live stream is back: every open gap ends now and awaits backfill."""
        await self.db.run(lambda: self.db.conn.execute(
            "UPDATE gaps SET end_us = ?, status = 'pending' WHERE status = 'open'", (end_us,)))

    async def advance_gap(self, gap_id: int, filled_us: int, states: int) -> None:
        """Backfill progress, so a backfill cut short (disconnect, restart) resumes instead of starting over."""
        await self.db.run(lambda: self.db.conn.execute(
            "UPDATE gaps SET filled_us = ?, states = ? WHERE id = ?", (filled_us, states, gap_id)))

    async def finish_gap(self, gap_id: int, status: str, states: int, error: str = "") -> None:
        await self.db.run(lambda: self.db.conn.execute(
            "UPDATE gaps SET status = ?, states = ?, finished = ?, error = ? WHERE id = ?",
            (status, states, time.time(), error, gap_id)))

    async def gap_failed(self, gap_id: int, error: str, max_attempts: int) -> bool:
        """A backfill of the gap failed: it stays pending for the next connection until ``max_attempts``
        failures, then it is ``failed``. True when it failed for good."""
        def _update() -> bool:
            row = self.db.conn.execute(
                "UPDATE gaps SET attempts = attempts + 1, error = ?, "
                "status = CASE WHEN attempts + 1 >= ? THEN 'failed' ELSE 'pending' END, "
                "finished = CASE WHEN attempts + 1 >= ? THEN ? ELSE finished END WHERE id = ? RETURNING status",
                (error, max_attempts, max_attempts, time.time(), gap_id)).fetchone()
            return row is not None and row[0] == "failed"

        return await self.db.run(_update)

    async def gaps(self, status: str | None = None, limit: int = 100, after_id: int = 0) -> list[Gap]:
        """The newest gaps (``status`` None), or the oldest with that status and an id above ``after_id``."""
        def _read() -> list[tuple[Any, ...]]:
            cols = "id, start_us, end_us, reason, status, states, filled_us, created, finished, error, attempts"
            if status is None:
                return self.db.conn.execute(f"SELECT {cols} FROM gaps ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
            return self.db.conn.execute(f"SELECT {cols} FROM gaps WHERE status = ? AND id > ? ORDER BY id LIMIT ?",
                                        (status, after_id, limit)).fetchall()

        return [Gap(*row) for row in await self.db.run(_read)]
