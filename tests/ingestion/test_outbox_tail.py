"""The outbox hands out exactly what SQLite holds, whether it reads it from its in-memory tail or from the
file: after appends, removals, rejections, a tail that overflowed, and a restart on the same file.

Real SQLite files in a temporary directory; the reference is a query of the file itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from pathlib import Path

from ha_ingestor.ingestion.outbox import Outbox
from ha_ingestor.metrics import Registry


def _on_disk(path: Path) -> list[tuple[int, bytes]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [(i, bytes(b)) for i, b in conn.execute("SELECT id, body FROM outbox ORDER BY id")]


async def _peek_all(outbox: Outbox, after: int, limit: int) -> list[tuple[int, bytes]]:
    rows: list[tuple[int, bytes]] = []
    while batch := await outbox.peek(after, limit):
        rows.extend(batch)
        after = batch[-1][0]
    return rows


def _check(outbox: Outbox, path: Path, rows: list[tuple[int, bytes]]) -> None:
    disk = _on_disk(path)
    assert rows == disk
    assert outbox.count == len(disk)
    assert outbox.bytes == sum(len(b) for _, b in disk)


def test_what_the_forwarder_reads_is_what_the_file_holds(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    rng = random.Random(7)

    async def run(tail_max_bytes: int) -> None:
        outbox = Outbox(path, max_events=1_000_000, synchronous="normal", metrics=Registry(),
                        tail_max_bytes=tail_max_bytes)
        try:
            for round_ in range(40):
                bodies = [b'{"n":%d,"pad":"%s"}' % (round_ * 1000 + k, b"x" * rng.randrange(200))
                          for k in range(rng.randrange(1, 60))]
                await outbox.append(bodies, watermark_us=round_ if rng.random() < 0.5 else None)
                waiting = await _peek_all(outbox, 0, rng.choice((1, 7, 50, 5000)))
                _check(outbox, path, waiting)
                # The forwarder takes a batch from somewhere after the oldest rows (earlier batches still in
                # flight), then enrichment takes it, or refuses one event of it for good.
                if waiting and rng.random() < 0.7:
                    start = rng.randrange(len(waiting))
                    batch = waiting[start : start + rng.randrange(1, 40)]
                    if rng.random() < 0.15:
                        await outbox.reject(batch[:1], "HTTP 422: test")
                        batch = batch[1:]
                    await outbox.remove([row_id for row_id, _ in batch])
                    after = waiting[start - 1][0] if start else 0
                    assert await _peek_all(outbox, after, 5000) == [r for r in _on_disk(path) if r[0] > after]
                _check(outbox, path, await _peek_all(outbox, 0, 5000))
        finally:
            outbox.close()

    asyncio.run(run(tail_max_bytes=16 * 1024 * 1024))  # everything fits in the tail
    asyncio.run(run(tail_max_bytes=3000))  # a new start on the same file; the tail overflows again and again
    assert _on_disk(path)  # the test did leave rows behind for the restart to find


def test_rows_left_by_a_previous_run_come_first_then_the_new_ones(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"

    async def first() -> None:
        outbox = Outbox(path, max_events=100, synchronous="normal", metrics=Registry())
        await outbox.append([b"a", b"b", b"c"])
        await outbox.remove([1])
        outbox.close()

    async def second() -> list[tuple[int, bytes]]:
        outbox = Outbox(path, max_events=100, synchronous="normal", metrics=Registry())
        try:
            await outbox.append([b"d"])
            rows = await outbox.peek(0, 10)
            assert await outbox.peek(rows[-1][0], 10) == []
            assert outbox.count == 3 and outbox.bytes == 3
            return rows
        finally:
            outbox.close()

    asyncio.run(first())
    assert asyncio.run(second()) == [(2, b"b"), (3, b"c"), (4, b"d")]


def test_an_append_whose_caller_is_cancelled_still_reaches_the_forwarder(tmp_path: Path) -> None:
    """Backfill runs inside the HA session's task group: a disconnect can cancel it mid-commit. The commit on
    the database thread completes anyway, and the forwarder must see those rows (not only after a restart)."""
    path = tmp_path / "outbox.sqlite"

    async def run() -> tuple[list[tuple[int, bytes]], int, int]:
        outbox = Outbox(path, max_events=1_000_000, synchronous="normal", metrics=Registry())
        try:
            await outbox.append([b"first"])
            bodies = [b"x%d" % n for n in range(200_000)]  # long enough to still be committing when cancelled
            task = asyncio.ensure_future(outbox.append(bodies))
            await asyncio.sleep(0.01)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            for _ in range(500):  # the commit finishes on its thread
                if outbox.count == 200_001:
                    break
                await asyncio.sleep(0.01)
            after_first = await _peek_all(outbox, 1, 5000)  # the forwarder has taken "first" already
            assert len(after_first) == 200_000
            await outbox.append([b"last"])
            return await _peek_all(outbox, 0, 5000), outbox.count, outbox.bytes
        finally:
            outbox.close()

    rows, count, size = asyncio.run(run())
    assert rows == _on_disk(path)
    assert len(rows) == count == 200_002
    assert size == sum(len(b) for _, b in rows)
