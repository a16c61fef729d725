"""A minute of the real demo home, plus state changes driven through HA's REST API and service calls: every
``state_changed`` HA fired is one point in our store, and its area/device context matches HA's registries.

The reference is twofold: an independent websocket subscriber (what HA fired) and HA's recorder (what HA
recorded). Our services run split, as processes, into a private database with the ``events`` schema.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ha_ingestor.harness import ha_witness as ha
from ha_ingestor.harness.influxd import Influxd
from ha_ingestor.harness.procs import Stack, wait_for
from ha_ingestor.harness.real_ha import RealHA
from ha_ingestor.harness.subscriber import witness

pytestmark = pytest.mark.real_ha

RUN_SECONDS = 60


@dataclass
class Capture:
    db: str
    start_us: int
    end_us: int
    tally: ha.Tally
    registries: dict[str, list[dict[str, Any]]]
    touched: list[str]


async def place_devices(real_ha: RealHA) -> None:
    """The demo assigns no areas: give two devices and one entity areas, an area a floor and a device a
    user's name, through HA's registry API."""
    async with ha.connect(real_ha.url, real_ha.token) as api:
        entities = {e["entity_id"]: e for e in await api.call({"type": "config/entity_registry/list"})}
        floor = await api.call({"type": "config/floor_registry/create", "name": "Ground floor", "level": 0})
        await api.call({"type": "config/area_registry/update", "area_id": "kitchen",
                        "floor_id": floor["floor_id"]})
        bed, ceiling = entities["light.bed_light"]["device_id"], entities["light.ceiling_lights"]["device_id"]
        await api.call({"type": "config/device_registry/update", "device_id": bed, "area_id": "bedroom",
                        "name_by_user": "Bedside lamp"})
        await api.call({"type": "config/device_registry/update", "device_id": ceiling, "area_id": "living_room"})
        # The entity's own area wins over its device's.
        await api.call({"type": "config/entity_registry/update", "entity_id": "light.ceiling_lights",
                        "area_id": "kitchen"})


async def _capture(real_ha: RealHA, influxd: Influxd, db: str, directory: Path) -> Capture:
    await place_devices(real_ha)
    registries = await ha.registries(real_ha.url, real_ha.token)
    with_context = sorted(e["entity_id"] for e in registries["entity"]
                          if (e.get("device_id") or e.get("area_id")) and not e.get("disabled_by"))
    touched: list[str] = []
    stack = Stack(directory, influx_url=influxd.url, database=db, token=real_ha.token,
                  extra_env={"HA_URL": real_ha.url})
    try:
        async with witness(real_ha.url, real_ha.token, "state_changed") as seen:
            await asyncio.to_thread(stack.start, "enrichment", "ingestion")
            # Registries reach enrichment just after the subscription: the window opens once they are there.
            await asyncio.to_thread(wait_for, lambda: "registries sent to enrichment" in
                                    stack.services["ingestion"].log(), 30, 0.2, "registries sent")
            start_us = ha.now_us()

            async def touch_later() -> None:
                await asyncio.sleep(5)
                touched.extend(await ha.touch(real_ha.url, real_ha.token, with_context, 1))

            await asyncio.gather(ha.drive(real_ha.url, real_ha.token, RUN_SECONDS, "capture"), touch_later())
            end_us = ha.now_us()
            await asyncio.sleep(2)  # the subscriber's last frames
            fired = ha.fired_keys(seen.events, start_us, end_us)
        entity_ids = {e for e, _ in fired} | {s["entity_id"] for s in real_ha.api("/api/states")}

        def recorded() -> list[ha.StateKey]:
            return asyncio.run(ha.recorded_keys(real_ha.url, real_ha.token, entity_ids, start_us, end_us))

        recorder = await asyncio.to_thread(ha.settle, recorded, set(fired), 5)
        stored = await asyncio.to_thread(ha.settle, lambda: ha.stored_keys(influxd, db, start_us, end_us),
                                         set(fired) | set(recorder), 20)
    finally:
        await asyncio.to_thread(stack.stop)
    return Capture(db, start_us, end_us, ha.tally("capture", fired, recorder, stored), registries, touched)


@pytest.fixture(scope="module")
def capture(real_ha: RealHA, influxd: Influxd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Capture]:
    db = "e2e_capture"
    try:
        yield asyncio.run(_capture(real_ha, influxd, db, tmp_path_factory.mktemp("capture")))
    finally:
        influxd.drop_database(db)


def test_every_state_change_ha_fired_is_one_point(capture: Capture) -> None:
    t = capture.tally
    print("\n" + t.table())
    assert t.fired > 60 * 5, "the demo home and the driven changes fire several state changes a second"
    assert {"sensor.e2e_capture", "input_number.peer_setpoint", "light.bed_light"} <= set(t.per_entity)
    assert not t.missing, t.table()
    assert t.duplicates == 0, t.table()


def expected_context(registries: dict[str, list[dict[str, Any]]]) -> dict[str, tuple[str, str, str, Any, Any]]:
    """entity_id → (area, floor, device, manufacturer, model) as HA's registries say: area from the entity,
    else from its device; device by ``name_by_user``, else ``name``."""
    devices = {d["id"]: d for d in registries["device"]}
    areas = {a["area_id"]: a for a in registries["area"]}
    floors = {f["floor_id"]: f for f in registries["floor"]}
    out = {}
    for entity in registries["entity"]:
        device = devices.get(entity.get("device_id") or "") or {}
        area = areas.get(entity.get("area_id") or device.get("area_id") or "") or {}
        floor = floors.get(area.get("floor_id") or "") or {}
        out[entity["entity_id"]] = (area.get("name") or "", floor.get("name") or "",
                                    device.get("name_by_user") or device.get("name") or "",
                                    device.get("manufacturer") or None, device.get("model") or None)
    return out


def test_area_and_device_context_matches_has_registries(capture: Capture, influxd: Influxd) -> None:
    expected = expected_context(capture.registries)
    rows = influxd.rows(
        'SELECT "device_manufacturer", "device_model", "available" FROM "states" '
        f'WHERE time >= {capture.start_us * 1000} AND time <= {capture.end_us * 1000} '
        'GROUP BY "entity_id", "area", "floor", "device"', capture.db)
    seen: dict[str, set[tuple[str, str, str, Any, Any]]] = {}
    for row in rows:  # a tag the point does not have reads as "", HA's registry says None
        seen.setdefault(row["entity_id"], set()).add(
            (row.get("area") or "", row.get("floor") or "", row.get("device") or "",
             row.get("device_manufacturer") or None, row.get("device_model") or None))
    checked = sorted(set(seen) & set(capture.touched))
    wrong = {e: (seen[e], expected[e]) for e in checked if seen[e] != {expected[e]}}
    with_area = sum(1 for e in checked if expected[e][0])
    print("\n".join(f"  {e}: area {a!r}, floor {f!r}, device {d!r}" for e in checked
                     for a, f, d, _, _ in [expected[e]] if a))
    print(f"\nregistries: {len(checked)} of {len(capture.touched)} demo entities with a device or area checked "
          f"({with_area} with an area, {len(capture.registries['device'])} devices, "
          f"{len(capture.registries['area'])} areas, {len(capture.registries['floor'])} floors); wrong: {len(wrong)}")
    assert len(checked) == len(capture.touched), sorted(set(capture.touched) - set(seen))
    assert with_area >= 2 and any(expected[e][1] for e in checked) and expected["light.ceiling_lights"][0] == "Kitchen"
    assert not wrong, wrong
