"""The walking pipeline, end to end with real processes: simulator → ingestion → enrichment → influxd."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ha_ingestor.harness.audit import stored_count
from ha_ingestor.harness.influxd import Influxd
from ha_ingestor.harness.procs import Stack, http_get, http_post
from ha_ingestor.harness.subscriber import witness
from ha_ingestor.model import to_us

EVENTS = 5000


@pytest.fixture
def stack(tmp_path: Path, influxd: Influxd, influx_db: str) -> Iterator[Stack]:
    stack = Stack(tmp_path, influx_url=influxd.url, database=influx_db,
                  sim_args=["--count", str(EVENTS), "--rate", "2500", "--paused", "--entities", "80"])
    try:
        yield stack
    finally:
        stack.stop()


async def wait_stored(influxd: Influxd, db: str, expected: int, timeout: float = 60) -> int:
    deadline = asyncio.get_running_loop().time() + timeout
    count = 0
    while asyncio.get_running_loop().time() < deadline:
        count = await asyncio.to_thread(stored_count, influxd, db)
        if count >= expected:
            await asyncio.sleep(0.5)  # anything beyond the expected count would be a duplicate: look again
            return await asyncio.to_thread(stored_count, influxd, db)
        await asyncio.sleep(0.2)
    return count


def expected_value(state: str) -> dict[str, Any]:
    if state in ("unavailable", "unknown", ""):
        return {"available": False, "state": state}
    try:
        number = float(state)
        if math.isfinite(number):
            return {"available": True, "value": number}
    except ValueError:
        pass
    out: dict[str, Any] = {"available": True, "state": state}
    if state in ("on", "off"):
        out["value"] = 1.0 if state == "on" else 0.0
    return out


def assert_points_match_events(influxd: Influxd, db: str, events: list[dict[str, Any]]) -> None:
    """Every event is exactly one point whose identity and values come from that event."""
    states = {(r["entity_id"], r["time"]): r for r in influxd.rows('SELECT * FROM "states" GROUP BY "entity_id"', db)}
    others = {(r["event_type"], r["time"] // 1000): r
              for r in influxd.rows('SELECT * FROM "events" GROUP BY "event_type"', db)}
    assert len(states) + len(others) == len(events)
    for event in events:
        if event["event_type"] == "state_changed":
            new = event["data"]["new_state"]
            point = states[(new["entity_id"], to_us(datetime.fromisoformat(new["last_updated"])) * 1000)]
            for field, value in expected_value(new["state"]).items():
                assert point[field] == value, (field, new)
            assert point["domain"] == new["entity_id"].split(".")[0]
        else:
            point = others[(event["event_type"], to_us(datetime.fromisoformat(event["time_fired"])))]
            assert point["context_id"] == event["context"]["id"]


async def run_and_check(stack: Stack, influxd: Influxd, db: str, services: tuple[str, ...]) -> None:
    stack.start("simulator")
    stack.start(*services)
    async with witness(stack.url("simulator"), stack.token) as seen:
        stack.sim("/sim/resume")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not stack.sim("/sim/report")["done"] and loop.time() < deadline:
            await asyncio.sleep(0.1)
        assert stack.sim("/sim/report")["fired"] == EVENTS
        count = await wait_stored(influxd, db, EVENTS)
        while len(seen.events) < EVENTS and loop.time() < deadline:
            await asyncio.sleep(0.1)
    assert count == EVENTS
    assert len(seen.events) == EVENTS
    await asyncio.to_thread(assert_points_match_events, influxd, db, seen.events)


async def test_five_thousand_events_become_five_thousand_points_across_three_processes(
        stack: Stack, influxd: Influxd, influx_db: str) -> None:
    await run_and_check(stack, influxd, influx_db, ("enrichment", "ingestion", "admin"))
    status, health = http_get(stack.url("admin") + "/health")
    assert status == 200, health
    assert {p["status"] for p in health["parts"].values()} == {"ok"}


async def test_five_thousand_events_become_five_thousand_points_in_one_process(
        stack: Stack, influxd: Influxd, influx_db: str) -> None:
    await run_and_check(stack, influxd, influx_db, ("up",))
    status, health = http_get(stack.url("admin") + "/health")
    assert status == 200, health


async def test_the_migration_plans_own_curl_check_stores_the_event(
        tmp_path: Path, influxd: Influxd, influx_db: str) -> None:
    stack = Stack(tmp_path, influx_url=influxd.url, database=influx_db)
    try:
        stack.start("enrichment")
        status, body = http_post(stack.url("enrichment") + "/events", body=(
            b'{"event_type":"test","data":{},"time_fired":"2024-01-01T00:00:00Z","origin":"test"}'))
        assert status == 200 and body["stored"] == 1, body
        rows = influxd.rows('SELECT * FROM "events"', influx_db)
        assert [(r["event_type"], r["time"] // 1000, r["origin"]) for r in rows] == [
            ("test", 1704067200 * 1_000_000, "test")]
    finally:
        stack.stop()
