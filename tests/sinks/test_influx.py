"""InfluxStore against the real influxd: writes, database creation, poison isolation, outages."""

from __future__ import annotations

from pathlib import Path

import pytest

from ha_ingestor.errors import StoreUnavailable
from ha_ingestor.harness.influxd import Influxd
from ha_ingestor.harness.ports import free_port
from ha_ingestor.sinks.influx import InfluxConfig, InfluxStore
from ha_ingestor.sinks.point import Point


def _points(n: int, start: int = 1_700_000_000_000_000_000) -> list[Point]:
    return [Point("states", (("entity_id", f"sensor.s{i % 7}"),), {"value": float(i), "state": f"s{i}"},
                  start + i * 1000) for i in range(n)]


async def test_writes_a_large_batch_in_chunks_and_creates_the_database(influxd: Influxd, influx_db: str) -> None:
    store = InfluxStore(InfluxConfig(influxd.url, database=influx_db, batch_size=700))
    try:
        assert await store.write(_points(2500)) == []
    finally:
        await store.close()
    rows = influxd.rows('SELECT count("value") FROM "states"', influx_db)
    assert rows[0]["count"] == 2500


async def test_rewriting_the_same_points_does_not_add_any(influxd: Influxd, influx_db: str) -> None:
    store = InfluxStore(InfluxConfig(influxd.url, database=influx_db))
    try:
        await store.write(_points(100))
        await store.write(_points(100))
    finally:
        await store.close()
    assert influxd.rows('SELECT count("value") FROM "states"', influx_db)[0]["count"] == 100


async def test_a_type_conflict_rejects_only_the_poison_point(influxd: Influxd, influx_db: str) -> None:
    store = InfluxStore(InfluxConfig(influxd.url, database=influx_db))
    good = _points(50)
    poison = Point("states", (("entity_id", "sensor.s1"),), {"value": "not a number"}, good[10].time_ns + 1)
    time_field = Point("states", (("entity_id", "sensor.x"),), {"time": 1.0}, good[0].time_ns + 3)
    try:
        rejected = await store.write([*good[:25], poison, *good[25:], time_field])
    finally:
        await store.close()
    assert [r.point for r in rejected] == [poison, time_field]
    assert "field type conflict" in rejected[0].reason
    assert influxd.rows('SELECT count("value") FROM "states"', influx_db)[0]["count"] == 50


async def test_a_conflict_inside_one_new_batch_keeps_every_good_point(influxd: Influxd, influx_db: str) -> None:
    # InfluxDB refuses such a batch whole (no "partial write"): bisection must still write the rest.
    store = InfluxStore(InfluxConfig(influxd.url, database=influx_db))
    mixed = [Point("fresh", (), {"v": 1.0}, 1), Point("fresh", (), {"v": "x"}, 2), Point("fresh", (), {"v": 3.0}, 3)]
    try:
        rejected = await store.write(mixed)
    finally:
        await store.close()
    assert [r.point.time_ns for r in rejected] == [2]
    assert influxd.rows('SELECT count("v") FROM "fresh"', influx_db)[0]["count"] == 2


async def test_a_missing_database_is_unavailable_when_creation_is_not_allowed(influxd: Influxd) -> None:
    store = InfluxStore(InfluxConfig(influxd.url, database="never_created", create_database=False))
    try:
        with pytest.raises(StoreUnavailable, match="database not found"):
            await store.write(_points(1))
        with pytest.raises(StoreUnavailable, match="database not found"):
            await store.check()
    finally:
        await store.close()


async def test_nothing_listening_is_unavailable_not_rejected() -> None:
    store = InfluxStore(InfluxConfig(f"http://127.0.0.1:{free_port()}", database="x", timeout=2))
    try:
        with pytest.raises(StoreUnavailable, match="cannot reach"):
            await store.write(_points(3))
    finally:
        await store.close()


async def test_a_frozen_server_times_out_as_unavailable(tmp_path: Path) -> None:
    server = Influxd(tmp_path / "frozen").start()
    store = InfluxStore(InfluxConfig(server.url, database="f", timeout=1))
    try:
        await store.write(_points(1))
        server.freeze()
        with pytest.raises(StoreUnavailable, match="no answer"):
            await store.write(_points(5))
        server.thaw()
        assert await store.write(_points(5)) == []
    finally:
        await store.close()
        server.stop()
