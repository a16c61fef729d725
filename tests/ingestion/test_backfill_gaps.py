"""Which gaps backfill takes on a connection, and what a refused history command does to a gap.

The outbox is a real SQLite file. HA's side is a function answering the history command: empty histories,
and — for the refusals — HA's error for chosen gaps, a fault real HA gives only in passing (while its history
integration is still loading, or its database is being migrated).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from ha_ingestor.errors import CommandFailed
from ha_ingestor.hop.http import HttpHop
from ha_ingestor.ingestion.backfill import MAX_ATTEMPTS, Backfiller
from ha_ingestor.ingestion.filter import EventFilter, FilterRules
from ha_ingestor.ingestion.outbox import Gap, Outbox
from ha_ingestor.ingestion.service import Ingestion, IngestionConfig
from ha_ingestor.metrics import Registry
from ha_ingestor.model import iso_from_us

BASE_US = 1_796_104_800_000_000  # 2026-12-01T06:00:00Z


def _outbox(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "outbox.sqlite", max_events=10_000, synchronous="normal", metrics=Registry())


async def _pending_gaps(outbox: Outbox, count: int) -> None:
    """``count`` gaps of one second each, one minute apart, awaiting backfill."""
    for n in range(count):
        await outbox.open_gap(BASE_US + n * 60_000_000, "connection closed")
        await outbox.close_open_gaps(BASE_US + n * 60_000_000 + 1_000_000)


async def _all_gaps(outbox: Outbox) -> list[Gap]:
    return sorted(await outbox.gaps(None, 1000), key=lambda gap: gap.id)


def test_every_pending_gap_is_filled_on_one_connection_not_only_the_first_hundred(tmp_path: Path) -> None:
    asked: list[str] = []

    async def history(command: dict[str, Any], timeout: float) -> Any:
        asked.append(command["start_time"])
        return {}

    async def run() -> list[Gap]:
        outbox = _outbox(tmp_path)
        try:
            await _pending_gaps(outbox, 150)
            backfiller = Backfiller(outbox, EventFilter(FilterRules()), Registry(), margin_s=0)
            await backfiller.fill_pending(history, ["sensor.a"])
            return await _all_gaps(outbox)
        finally:
            outbox.close()

    gaps = asyncio.run(run())
    assert [gap.status for gap in gaps] == ["done"] * 150
    assert len(asked) >= 150


def test_a_gap_ha_refuses_is_tried_again_on_later_connections_then_marked_failed(tmp_path: Path) -> None:
    second_gap = iso_from_us(BASE_US + 60_000_000 - 1000)  # its first window starts 1 ms early
    refusals = {"third": 0}

    async def history(command: dict[str, Any], timeout: float) -> Any:
        if command["start_time"] == second_gap:  # refused every time
            raise CommandFailed("history/history_during_period", "unknown_command", "Unknown command.")
        if command["start_time"] == iso_from_us(BASE_US + 120_000_000 - 1000) and refusals["third"] == 0:
            refusals["third"] += 1  # refused once, then answered
            raise CommandFailed("history/history_during_period", "home_assistant_error", "database locked")
        return {}

    async def run() -> list[list[Gap]]:
        outbox = _outbox(tmp_path)
        try:
            await _pending_gaps(outbox, 3)
            backfiller = Backfiller(outbox, EventFilter(FilterRules()), Registry(), margin_s=0)
            after_each = []
            for _ in range(MAX_ATTEMPTS):  # one pass per connection
                await backfiller.fill_pending(history, ["sensor.a"])
                after_each.append(await _all_gaps(outbox))
            return after_each
        finally:
            outbox.close()

    passes = asyncio.run(run())
    first, last = passes[0], passes[-1]
    assert [(gap.status, gap.attempts) for gap in first] == [("done", 0), ("pending", 1), ("pending", 1)]
    assert "unknown_command" in first[1].error
    assert [(gap.status, gap.attempts) for gap in passes[1]] == [("done", 0), ("pending", 2), ("done", 1)]
    assert passes[1][2].error == ""
    assert [(gap.status, gap.attempts) for gap in passes[-2]] == [("done", 0), ("pending", MAX_ATTEMPTS - 1),
                                                                  ("done", 1)]
    assert [(gap.status, gap.attempts) for gap in last] == [("done", 0), ("failed", MAX_ATTEMPTS), ("done", 1)]
    assert last[1].as_dict()["failed_attempts"] == MAX_ATTEMPTS and last[1].finished is not None


def test_an_outbox_from_before_attempts_were_counted_gets_the_column(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            CREATE TABLE gaps (id INTEGER PRIMARY KEY, start_us INTEGER NOT NULL, end_us INTEGER,
                reason TEXT NOT NULL, status TEXT NOT NULL, states INTEGER NOT NULL DEFAULT 0, filled_us INTEGER,
                created REAL NOT NULL, finished REAL, error TEXT NOT NULL DEFAULT '');
            INSERT INTO gaps (start_us, end_us, reason, status, created) VALUES (1, 2, 'old', 'pending', 0);
        """)
    conn.close()
    outbox = Outbox(path, max_events=10, synchronous="normal", metrics=Registry())
    try:
        (gap,) = asyncio.run(outbox.gaps("pending"))
        assert (gap.reason, gap.attempts) == ("old", 0)
    finally:
        outbox.close()


def test_entity_ids_seen_before_a_restart_are_still_asked_for(tmp_path: Path) -> None:
    # Backfill asks for every entity ever seen, so one removed during a gap still has its last changes
    # recovered; after a restart the set starts from what the outbox kept, not from the next get_states.
    outbox = _outbox(tmp_path)
    asyncio.run(outbox.set_meta("entity_ids", "sensor.removed_later,sensor.still_there"))
    outbox.close()
    outbox = _outbox(tmp_path)
    try:
        ingestion = Ingestion(IngestionConfig("http://127.0.0.1:9", "token"), outbox, HttpHop("http://127.0.0.1:9"),
                              Registry())
        assert ingestion.entity_ids == {"sensor.removed_later", "sensor.still_there"}
    finally:
        outbox.close()
