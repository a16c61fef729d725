"""Golden tests: the ``homeassistant`` schema writes what Home Assistant 2025.4.4's own integration wrote.

Two sources, both captured from the real HA demo home of ../shared/real-ha:

* ``data/ha_2025_4_4_pairs.json``: state_changed events as HA's WebSocket delivered them, each with the
  point HA's influxdb integration wrote for it (read back from ``ha_native``): lights (tuples, enum
  lists, the digit-tail quirk), climate, media players (datetimes), automations, sun, image processing…
* ``../shared/real-ha/samples``: the event samples and what HA wrote for the same entities around them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from ha_ingestor.enrichment.enrich import Context
from ha_ingestor.enrichment.homeassistant import HAConfig, HomeAssistantSchema
from ha_ingestor.harness.shared import samples_dir
from ha_ingestor.model import decode_event, validate
from ha_ingestor.sinks.point import Point

PAIRS = orjson.loads((Path(__file__).parent / "data" / "ha_2025_4_4_pairs.json").read_bytes())["pairs"]
# The real-ha configuration adds one tag: influxdb: tags: {source: ha-peer}.
SCHEMA = HomeAssistantSchema(HAConfig(tags=(("source", "ha-peer"),)))


def points_of(event: dict[str, Any]) -> list[Point]:
    return SCHEMA(validate(decode_event(orjson.dumps(event))), Context())


def as_read_back(point: Point) -> dict[str, Any]:
    """The point as InfluxDB's JSON shows it: numbers without their float-ness."""
    return {"measurement": point.measurement, "tags": dict(point.tags), "time_ns": point.time_ns,
            "fields": {k: float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                       for k, v in point.fields.items()}}


def _normal(written: dict[str, Any]) -> dict[str, Any]:
    fields = {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
              for k, v in written["fields"].items()}
    return {**written, "fields": fields}


def test_the_pairs_cover_the_hard_cases() -> None:
    fields = {key for pair in PAIRS for key in pair["written"]["fields"]}
    assert {"hs_color_str", "rgb_color", "supported_color_modes_str", "hvac_modes_str",
            "media_position_updated_at_str", "last_triggered", "faces_str", "next_rising_str"} <= fields
    assert len(PAIRS) > 100


@pytest.mark.parametrize("pair", PAIRS, ids=[
    f"{p['event']['data']['entity_id']}@{p['written']['time_ns']}" for p in PAIRS])
def test_each_state_change_gives_the_point_home_assistant_wrote(pair: dict[str, Any]) -> None:
    (point,) = points_of(pair["event"])
    assert as_read_back(point) == _normal(pair["written"])


# ------------------------------------------------------------------------ the shared samples

def _sample(name: str) -> Any:
    folder = samples_dir()
    if folder is None:
        pytest.skip("../shared/real-ha/samples not found")
    return orjson.loads((folder / name).read_bytes())


def _written_rows(name: str) -> list[dict[str, Any]]:
    """Rows of an influx_select_* sample: (entity tags, fields without nulls, time)."""
    series = _sample(name)["response"]["results"][0]["series"][0]
    rows = []
    for values in series["values"]:
        row = {k: v for k, v in zip(series["columns"], values, strict=True) if v is not None}
        tags = {key: row.pop(key) for key in ("domain", "entity_id", "source")}
        row.pop("time")
        rows.append({"measurement": series["name"], "tags": tags, "fields": row})
    return rows


@pytest.mark.parametrize(("event_file", "select_file"), [
    ("event_state_changed_03_sensor_peer_sine_temperature.json", "influx_select_degC_last5.json"),
    ("event_state_changed_09_sensor_peer_sine_temperature.json", "influx_select_degC_last5.json"),
    ("event_state_changed_01_input_number_peer_counter.json", "influx_select_input_number_peer_counter_last5.json"),
    ("event_state_changed_07_input_number_peer_counter.json", "influx_select_input_number_peer_counter_last5.json"),
])
def test_sample_events_give_the_series_fields_and_types_home_assistant_wrote(event_file: str, select_file: str) -> None:
    event = _sample(event_file)["event"]
    (point,) = points_of(event)
    rows = [row for row in _written_rows(select_file) if row["tags"] == dict(point.tags)]
    assert rows, f"no row of {select_file} has the tags {dict(point.tags)}"
    for row in rows:  # a later state of the same entity: same series, same fields, same types
        assert point.measurement == row["measurement"]
        assert set(point.fields) == set(row["fields"])
        for key, value in row["fields"].items():
            assert isinstance(point.fields[key], str) == isinstance(value, str), key
    state = event["data"]["new_state"]
    assert point.time_ns == int(validate(decode_event(orjson.dumps(event))).time_fired.timestamp() * 1e6) * 1000
    assert point.fields["value"] == float(state["state"])


def test_an_unchanged_light_attribute_set_renders_as_home_assistant_wrote_it() -> None:
    """light.bed_light's last rows: Python tuples, an enum list, None, and rgb_color's digit-tail float."""
    off, on = _written_rows("influx_select_light_bed_light_last5.json")[:2]
    attributes = {"min_color_temp_kelvin": 2000, "max_color_temp_kelvin": 6535, "min_mireds": 153,
                  "max_mireds": 500, "effect_list": ["rainbow", "none"],
                  "supported_color_modes": ["color_temp", "hs"], "effect": "rainbow", "color_mode": "color_temp",
                  "brightness": 180, "color_temp_kelvin": 4166, "color_temp": 240, "hs_color": [26.752, 31.945],
                  "rgb_color": [255, 210, 174], "xy_color": [0.41, 0.362], "friendly_name": "Bed Light",
                  "supported_features": 4}
    state = {"entity_id": "light.bed_light", "state": "on", "attributes": attributes,
             "last_changed": "2026-11-28T11:31:52.484780+00:00",
             "last_updated": "2026-11-28T11:31:52.484780+00:00"}
    event = {"event_type": "state_changed", "time_fired": state["last_updated"],
             "data": {"entity_id": "light.bed_light", "new_state": state}}
    (point,) = points_of(event)
    got = as_read_back(point)
    assert got["fields"] == {k: float(v) if isinstance(v, int) else v for k, v in on["fields"].items()}
    off_state = {**state, "state": "off", "attributes": {
        **{k: attributes[k] for k in ("min_color_temp_kelvin", "max_color_temp_kelvin", "min_mireds", "max_mireds",
                                      "effect_list", "supported_color_modes")},
        **dict.fromkeys(("effect", "color_mode", "brightness", "color_temp_kelvin", "color_temp", "hs_color",
                         "rgb_color", "xy_color")),
        "friendly_name": "Bed Light", "supported_features": 4}}
    (point,) = points_of({**event, "data": {"entity_id": "light.bed_light", "new_state": off_state}})
    assert as_read_back(point)["fields"] == {k: float(v) if isinstance(v, int) else v for k, v in off["fields"].items()}
