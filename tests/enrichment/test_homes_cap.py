"""Per-home series stay bounded: past MAX_HOMES, new homes are counted together as ``_other`` — dead letters
included, which a real influxd produces here by refusing a field type conflict."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from ha_ingestor.enrichment import homes
from ha_ingestor.enrichment.deadletters import DeadLetters
from ha_ingestor.enrichment.pipeline import Pipeline
from ha_ingestor.enrichment.registry import RegistryCache
from ha_ingestor.enrichment.spool import Spool
from ha_ingestor.harness.influxd import Influxd
from ha_ingestor.metrics import Counter, Registry
from ha_ingestor.sinks.influx import InfluxConfig, InfluxStore
from ha_ingestor.sqlite import SqliteWorker


def _batch(home_id: str, level: float) -> bytes:
    state = {"entity_id": "sensor.phone_battery", "state": "ok", "attributes": {"level": level},
             "last_changed": "2026-12-01T06:00:00.000001+00:00", "last_updated": "2026-12-01T06:00:00.000001+00:00",
             "context": {"id": "01JB0000000000000000000000", "parent_id": None, "user_id": None}}
    event = {"event_type": "state_changed", "time_fired": "2026-12-01T06:00:00.000001+00:00", "origin": "LOCAL",
             "data": {"entity_id": "sensor.phone_battery", "old_state": None, "new_state": state},
             "context": state["context"]}
    return orjson.dumps({"home_id": home_id, "events": [event]})


def _count(metrics: Registry, name: str, home: str) -> float:
    found = metrics.find(name, (("home", home),))
    assert found is None or isinstance(found, Counter)
    return 0.0 if found is None else found.value


def test_dead_letters_of_homes_past_the_cap_are_counted_as_other(
        influxd: Influxd, influx_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(homes, "MAX_HOMES", 2)
    # In the same shard, the field the pipeline writes as a float already holds text: influxd refuses the point
    # for good (field types are per measurement and shard).
    influxd.create_database(influx_db)
    influxd.write(influx_db, 'states,entity_id=sensor.other attr_level="low" 1796104800000000000')
    metrics = Registry()

    async def run() -> None:
        db = SqliteWorker(tmp_path / "enrichment.sqlite")
        store = InfluxStore(InfluxConfig(url=influxd.url, database=influx_db), metrics)
        pipeline = Pipeline(store, Spool(db, 1 << 20, metrics), DeadLetters(db, metrics), RegistryCache(None), metrics)
        await store.start()
        try:
            for home_id in ("north", "south", "east", "west"):
                outcome = await pipeline.accept_body(_batch(home_id, 42.0))
                assert outcome.dead_lettered == 1, home_id
        finally:
            await store.close()
            db.close()

    asyncio.run(run())
    assert _count(metrics, "events_dead_lettered_by_home", "north") == 1
    assert _count(metrics, "events_dead_lettered_by_home", "south") == 1
    assert _count(metrics, "events_dead_lettered_by_home", "_other") == 2
    for home_id in ("east", "west"):
        assert metrics.find("events_dead_lettered_by_home", (("home", home_id),)) is None
        assert metrics.find("events_received_by_home", (("home", home_id),)) is None
    assert _count(metrics, "events_received_by_home", "_other") == 2
