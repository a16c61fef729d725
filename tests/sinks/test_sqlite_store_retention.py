"""The embedded store's retention (STORE_RETENTION_DAYS): points older than it go, by their own time, a
chunk per transaction; newer ones and the writes meanwhile stay. Real SQLite files in a temporary directory."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from ha_ingestor.metrics import Registry
from ha_ingestor.settings import Settings
from ha_ingestor.sinks import sqlite_store
from ha_ingestor.sinks.point import Point
from ha_ingestor.sinks.sqlite_store import SqliteStore
from ha_ingestor.wiring import store_from

DAY = 86400


def _points(ages_days: list[float], now: float) -> list[Point]:
    return [Point("states", (("entity_id", f"sensor.p{i}"),), {"value": float(i)}, int((now - age * DAY) * 1e9))
            for i, age in enumerate(ages_days)]


def test_points_past_the_retention_are_dropped_in_chunks_and_the_rest_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_store, "PRUNE_CHUNK", 7)  # several chunks from a handful of points
    now = time.time()

    async def run() -> tuple[int, list[float], float]:
        store = SqliteStore(tmp_path / "store.sqlite", Registry(), retention_s=30 * DAY)  # not started: no
        try:  # hourly pruner beside this test's own prune
            old = [31.0 + i for i in range(20)]
            assert await store.write(_points([*old, 29.9, 1.0, 0.0], now)) == []
            dropped = await store.prune(now)
            kept = sorted(p["fields"]["value"] for p in await store.points())
            return dropped, kept, store._pruned.value
        finally:
            await store.close()

    dropped, kept, counted = asyncio.run(run())
    assert dropped == 20 and counted == 20
    assert kept == [20.0, 21.0, 22.0]  # 29.9, 1 and 0 days old


def test_the_setting_reaches_the_store_and_start_prunes(tmp_path: Path) -> None:
    settings = Settings.from_values({"DATA_DIR": str(tmp_path), "STORE_RETENTION_DAYS": "7"})
    now = time.time()

    async def run() -> int:
        store = store_from(settings, Registry())
        assert isinstance(store, SqliteStore) and store.retention_s == 7 * DAY
        first = SqliteStore(tmp_path / "store.sqlite", Registry())  # an older run wrote without retention
        await first.start()
        await first.write(_points([10.0, 8.0, 2.0], now))
        await first.close()
        await store.start()  # prunes at once, then hourly
        try:
            deadline = time.monotonic() + 10
            while len(await store.points()) > 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return len(await store.points())
        finally:
            await store.close()

    assert asyncio.run(run()) == 1
