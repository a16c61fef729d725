"""Registry enrichment: area (the entity's own, else its device's), floor, device, labels — from HA's real
registry replies — kept per home, replaced on every update, and applied to events POSTed to /events.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from ha_ingestor.enrichment import enrich
from ha_ingestor.enrichment.registry import RegistryCache, Snapshot
from ha_ingestor.harness.procs import Stack, http_get, http_post
from ha_ingestor.harness.shared import samples_dir
from ha_ingestor.model import decode_event, validate

WHEN = "2026-11-28T11:35:31.189788+00:00"


def _result(name: str) -> Any:
    folder = samples_dir()
    if folder is None:
        pytest.skip("../shared/real-ha/samples not found")
    return orjson.loads((folder / name).read_bytes())["result"]


def real_payload() -> dict[str, Any]:
    return {kind: _result(f"ws_{kind[:-1] if kind != 'entities' else 'entity'}_registry_list.json")
            for kind in ("entities", "devices", "areas", "floors", "labels")} | {"time_zone": "Europe/Berlin"}


def state_event(entity_id: str, state: str = "1") -> Any:
    new = {"entity_id": entity_id, "state": state, "attributes": {}, "last_changed": WHEN, "last_updated": WHEN}
    return {"event_type": "state_changed", "time_fired": WHEN, "data": {"entity_id": entity_id, "new_state": new}}


def tags_of(event: dict[str, Any], snapshot: Snapshot) -> dict[str, str]:
    (point,) = enrich.to_points(validate(decode_event(orjson.dumps(event))), enrich.Context(snapshot=snapshot))
    return dict(point.tags)


def test_real_registries_give_each_entity_its_devices_area_and_name() -> None:
    payload = real_payload()
    snapshot = Snapshot.from_lists(payload)
    devices = {d["id"]: d for d in payload["devices"]}
    areas = {a["area_id"]: a["name"] for a in payload["areas"]}
    for entry in payload["entities"]:
        device = devices.get(entry["device_id"]) or {}
        area_id = entry["area_id"] or device.get("area_id")
        info = snapshot.get(entry["entity_id"])
        assert info is not None
        assert info.area == areas.get(area_id, "")
        assert info.device == (device.get("name_by_user") or device.get("name") or "")
        assert info.manufacturer == (device.get("manufacturer") or "")
        assert info.platform == entry["platform"]
    assert len(snapshot.entities) == len(payload["entities"]) > 80


def test_an_entitys_own_area_wins_over_its_devices_and_brings_the_floor_and_labels() -> None:
    payload = {
        "floors": [{"floor_id": "ground", "name": "Ground floor"}],
        "labels": [{"label_id": "b", "name": "Heating"}, {"label_id": "a", "name": "Critical"}],
        "areas": [{"area_id": "kitchen", "name": "Kitchen", "floor_id": "ground"},
                  {"area_id": "cellar", "name": "Cellar"}],
        "devices": [{"id": "d1", "name": "Boiler", "name_by_user": "My boiler", "manufacturer": "Acme",
                     "model": "B-1", "area_id": "cellar"}],
        "entities": [{"entity_id": "sensor.boiler_temp", "device_id": "d1", "area_id": "kitchen",
                      "platform": "acme", "labels": ["b", "a"]},
                     {"entity_id": "sensor.boiler_power", "device_id": "d1", "area_id": None, "platform": "acme"}],
        "time_zone": "Europe/Berlin",
    }
    snapshot = Snapshot.from_lists(payload)
    assert tags_of(state_event("sensor.boiler_temp"), snapshot) == {
        "area": "Kitchen", "floor": "Ground floor", "device": "My boiler", "integration": "acme",
        "device_manufacturer": "Acme", "device_model": "B-1", "domain": "sensor", "entity_id": "sensor.boiler_temp"}
    assert tags_of(state_event("sensor.boiler_power"), snapshot)["area"] == "Cellar"
    (point,) = enrich.to_points(validate(decode_event(orjson.dumps(state_event("sensor.boiler_temp")))),
                                enrich.Context(snapshot=snapshot))
    assert point.fields["labels"] == "Critical,Heating"
    assert not {"device_manufacturer", "device_model", "friendly_name"} & set(point.fields)  # tags, not fields
    assert (point.fields["hour"], point.fields["weekday"]) == (12, 5)  # 11:35 UTC is 12:35 in Berlin, a Saturday


def test_a_registry_update_replaces_the_snapshot_and_survives_a_restart(tmp_path: Path) -> None:
    cache = RegistryCache(tmp_path)
    base = {"areas": [{"area_id": "a", "name": "Hall"}, {"area_id": "b", "name": "Office"}],
            "entities": [{"entity_id": "light.x", "area_id": "a"}]}
    cache.put("home1", base)
    assert tags_of(state_event("light.x", "on"), cache.get("home1"))["area"] == "Hall"
    cache.put("home1", {**base, "entities": [{"entity_id": "light.x", "area_id": "b"}]})  # entity_registry_updated
    assert tags_of(state_event("light.x", "on"), cache.get("home1"))["area"] == "Office"
    assert cache.get("other").get("light.x") is None  # homes are kept apart
    assert RegistryCache(tmp_path).get("home1").get("light.x").area == "Office"  # type: ignore[union-attr]


def test_tags_follow_each_events_own_unit_device_class_and_home_within_one_snapshot() -> None:
    snapshot = Snapshot.from_lists({"areas": [{"area_id": "a", "name": "Hall"}],
                                    "entities": [{"entity_id": "sensor.x", "area_id": "a"}]})

    def tags(attributes: dict[str, Any], home: str = "") -> dict[str, str]:
        event = state_event("sensor.x")
        event["data"]["new_state"]["attributes"] = attributes
        (point,) = enrich.to_points(validate(decode_event(orjson.dumps(event))),
                                    enrich.Context(home, snapshot=snapshot))
        return dict(point.tags)

    assert tags({"unit_of_measurement": "W"})["unit"] == "W"
    assert tags({"unit_of_measurement": "kW", "device_class": "power"}) == {
        "area": "Hall", "domain": "sensor", "entity_id": "sensor.x", "unit": "kW", "device_class": "power"}
    assert "unit" not in tags({})  # the unit went away: so does the tag, though the entity was seen with one
    assert tags({"unit_of_measurement": "W"}, home="home-b")["home"] == "home-b"
    assert "home" not in tags({"unit_of_measurement": "W"})
    # The name is the event's own: a rename shows in the next point, and redelivering an old event gives its
    # old name back (the same point, not a second one).
    assert tags({"friendly_name": "Boiler"})["friendly_name"] == "Boiler"
    assert tags({"friendly_name": "Heater"})["friendly_name"] == "Heater"
    assert "friendly_name" not in tags({"friendly_name": ""}) and "friendly_name" not in tags({"friendly_name": 5})
    assert tags({"friendly_name": "x" * 1000})["friendly_name"] == "x" * 255  # part of the 64 KiB series key


def test_events_posted_straight_to_enrichment_are_enriched_too(tmp_path: Path) -> None:
    stack = Stack(tmp_path)  # no INFLUXDB_URL: the embedded store, readable through /events/recent
    try:
        stack.start("enrichment")
        url = stack.url("enrichment")
        payload = {"areas": [{"area_id": "k", "name": "Kitchen"}], "devices": [{"id": "d", "name": "Plug"}],
                   "entities": [{"entity_id": "switch.kettle", "area_id": "k", "device_id": "d"}]}
        request = urllib.request.Request(url + "/registry", data=orjson.dumps(payload), method="PUT",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request) as resp:
            assert resp.status == 200
        status, _ = http_post(url + "/events", state_event("switch.kettle", "on"))
        assert status == 200
        status, body = http_get(url + "/events/recent?limit=5")
        assert status == 200
        (point,) = body["points"]
        assert point["tags"]["area"] == "Kitchen" and point["tags"]["device"] == "Plug"
    finally:
        stack.stop()
