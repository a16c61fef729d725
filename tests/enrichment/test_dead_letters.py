"""Dead letters from a real refusal (influxd refusing a field type conflict): counted per home within the home
cap, and replayed all of them, chunk by chunk."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from ha_ingestor.enrichment import homes
from ha_ingestor.enrichment import pipeline as pipeline_module
from ha_ingestor.enrichment.deadletters import DeadLetters
from ha_ingestor.enrichment.pipeline import Pipeline
from ha_ingestor.enrichment.registry import RegistryCache
from ha_ingestor.enrichment.spool import Spool
from ha_ingestor.harness.influxd import Influxd
from ha_ingestor.metrics import Counter, Registry
from ha_ingestor.sinks.influx import InfluxConfig, InfluxStore
from ha_ingestor.sinks.point import Point, Rejected
from ha_ingestor.sqlite import SqliteWorker

# 2026-12-01T06:00:00Z: in the same shard as the events below (field types are per measurement and shard).
CONFLICT = 'states,entity_id=sensor.other attr_level="low" 1796104800000000000'


def _batch(home_id: str, level: float, second: int = 0) -> bytes:
    when = f"2026-12-01T06:00:{second:02d}.000001+00:00"
    state = {"entity_id": "sensor.phone_battery", "state": "ok", "attributes": {"level": level},
             "last_changed": when, "last_updated": when,
             "context": {"id": "01JB0000000000000000000000", "parent_id": None, "user_id": None}}
    event = {"event_type": "state_changed", "time_fired": when, "origin": "LOCAL",
             "data": {"entity_id": "sensor.phone_battery", "old_state": None, "new_state": state},
             "context": state["context"]}
    return orjson.dumps({"home_id": home_id, "events": [event]})


def _count(metrics: Registry, name: str, home: str) -> float:
    found = metrics.find(name, (("home", home),))
    assert found is None or isinstance(found, Counter)
    return 0.0 if found is None else found.value


@contextlib.asynccontextmanager
async def _pipeline(influxd: Influxd, database: str, tmp_path: Path, metrics: Registry) -> AsyncIterator[Pipeline]:
    """A pipeline writing to the real influxd, its spool and dead letters in a SQLite file of its own."""
    db = SqliteWorker(tmp_path / "enrichment.sqlite")
    store = InfluxStore(InfluxConfig(url=influxd.url, database=database), metrics)
    await store.start()
    try:
        yield Pipeline(store, Spool(db, 1 << 20, metrics), DeadLetters(db, metrics), RegistryCache(None), metrics)
    finally:
        await store.close()
        db.close()


def test_dead_letters_of_homes_past_the_cap_are_counted_as_other(
        influxd: Influxd, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(homes, "MAX_HOMES", 2)
    # The field the pipeline writes as a float already holds text: influxd refuses the point for good.
    influxd.create_database(influx_db)
    influxd.write(influx_db, CONFLICT)
    metrics = Registry()

    async def run() -> None:
        async with _pipeline(influxd, influx_db, tmp_path, metrics) as pipeline:
            for home_id in ("north", "south", "east", "west"):
                outcome = await pipeline.accept_body(_batch(home_id, 42.0))
                assert outcome.dead_lettered == 1, home_id

    asyncio.run(run())
    assert _count(metrics, "events_dead_lettered_by_home", "north") == 1
    assert _count(metrics, "events_dead_lettered_by_home", "south") == 1
    assert _count(metrics, "events_dead_lettered_by_home", "_other") == 2
    for home_id in ("east", "west"):
        assert metrics.find("events_dead_lettered_by_home", (("home", home_id),)) is None
        assert metrics.find("events_received_by_home", (("home", home_id),)) is None
    assert _count(metrics, "events_received_by_home", "_other") == 2


def test_replaying_all_dead_letters_goes_through_every_chunk_and_keeps_those_refused_again(
        influxd: Influxd, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline_module, "REPLAY_CHUNK", 3)
    influxd.create_database(influx_db)
    influxd.write(influx_db, CONFLICT)
    metrics = Registry()

    async def run() -> list[dict[str, int]]:
        async with _pipeline(influxd, influx_db, tmp_path, metrics) as pipeline:
            letters = pipeline.dead_letters
            for second in range(7):
                assert (await pipeline.accept_body(_batch("north", second, second))).dead_lettered == 1
            answers = [await pipeline.replay_dead_letters()]  # the conflict is still there
            assert letters.count == 7
            influxd.query("DROP MEASUREMENT states", db=influx_db, method="POST")  # the cause, fixed
            answers.append(await pipeline.replay_dead_letters())
            answers.append(await pipeline.replay_dead_letters())
            assert letters.count == 0
            return answers

    first, second, third = asyncio.run(run())
    assert first == {"replayed": 7, "written": 0, "still_refused": 7}
    assert second == {"replayed": 7, "written": 7, "still_refused": 0}
    assert third == {"replayed": 0, "written": 0, "still_refused": 0}
    rows = influxd.rows('SELECT "attr_level" FROM "states" WHERE "entity_id" = \'sensor.phone_battery\'', influx_db)
    assert sorted(row["attr_level"] for row in rows) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_replay_without_ids_takes_every_dead_letter_not_only_the_first_ten_thousand(
        influxd: Influxd, influx_db: str, tmp_path: Path) -> None:
    metrics = Registry()
    count = 10_001

    async def run() -> tuple[dict[str, int], int]:
        async with _pipeline(influxd, influx_db, tmp_path, metrics) as pipeline:
            letters = pipeline.dead_letters
            # Kept as if refused earlier (what refused them is fixed now); the events are distinct points.
            events = [orjson.dumps(orjson.loads(_batch("north", i, i % 60))["events"][0]) for i in range(count)]
            events = [e.replace(b"sensor.phone_battery", f"sensor.phone_{i}".encode()) for i, e in enumerate(events)]
            point = Point("states", (), {"attr_level": 0.0}, 0)
            await letters.add("north", [Rejected(point, "field type conflict")] * count, events)
            answer = await pipeline.replay_dead_letters()
            return answer, letters.count

    answer, left = asyncio.run(run())
    assert answer == {"replayed": count, "written": count, "still_refused": 0}
    assert left == 0
    assert influxd.rows('SELECT COUNT("attr_level") FROM "states"', influx_db)[0]["count"] == count
