"""The ``homeassistant`` schema's rules, one by one, and the settings that configure them.

Each expectation is what HA 2025.4.4's influxdb integration does (tests/real_ha/test_ha_function_parity.py
checks the same rules against HA's own code on thousands of random states).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ha_ingestor.enrichment import enrich
from ha_ingestor.enrichment.enrich import Context
from ha_ingestor.enrichment.homeassistant import Customization, HAConfig, HomeAssistantSchema
from ha_ingestor.errors import SettingsError
from ha_ingestor.model import decode_event, validate
from ha_ingestor.settings import Settings
from ha_ingestor.sinks.point import Point
from ha_ingestor.wiring import converter

WHEN = "2026-11-28T11:35:31.189788+00:00"
WHEN_NS = 1795865731189788000


def event(entity_id: str, state: str, attributes: dict[str, Any] | None = None,
          event_type: str = "state_changed") -> Any:
    new = {"entity_id": entity_id, "state": state, "attributes": attributes or {}, "last_changed": WHEN,
           "last_updated": WHEN}
    data: dict[str, Any] = {"entity_id": entity_id, "new_state": new} if event_type == "state_changed" else {}
    return validate(decode_event(orjson.dumps({"event_type": event_type, "time_fired": WHEN, "data": data})))


def point(entity_id: str, state: str, attributes: dict[str, Any] | None = None,
          config: HAConfig | None = None) -> Point | None:
    points = HomeAssistantSchema(config)(event(entity_id, state, attributes), Context())
    return points[0] if points else None


def test_a_sensor_with_a_unit_is_measured_in_its_unit_with_the_object_id_as_tag() -> None:
    p = point("sensor.power", "180.6", {"unit_of_measurement": "W", "device_class": "power"})
    assert p is not None
    assert (p.measurement, p.tags, p.time_ns) == ("W", (("domain", "sensor"), ("entity_id", "power")), WHEN_NS)
    assert p.fields == {"value": 180.6, "device_class_str": "power"}


def test_without_a_unit_the_measurement_is_the_default_else_the_entity_id() -> None:
    assert point("switch.fan", "on").measurement == "switch.fan"  # type: ignore[union-attr]
    assert point("switch.fan", "on", config=HAConfig(default_measurement="state")).measurement == "state"  # type: ignore[union-attr]
    assert point("switch.fan", "on", {"unit_of_measurement": ""}).measurement == "switch.fan"  # type: ignore[union-attr]


@pytest.mark.parametrize(("state", "fields"), [
    ("on", {"state": "on", "value": 1.0}), ("off", {"state": "off", "value": 0.0}),
    ("open", {"state": "open", "value": 1.0}), ("closed", {"state": "closed", "value": 0.0}),
    ("home", {"state": "home", "value": 1.0}), ("not_home", {"state": "not_home", "value": 0.0}),
    ("locked", {"state": "locked", "value": 1.0}), ("unlocked", {"state": "unlocked", "value": 0.0}),
    ("above_horizon", {"state": "above_horizon", "value": 1.0}), ("heat", {"state": "heat"}),
    ("21.5", {"value": 21.5}), (" 7 ", {"value": 7.0}), ("1_000", {"value": 1000.0}), ("nan", {"a": 1.0}),
])
def test_states_become_value_and_state_as_state_as_number_says(state: str, fields: dict[str, Any]) -> None:
    p = point("sensor.x", state, {"a": 1})
    assert p is not None
    assert p.fields == {**fields, "a": 1.0}


@pytest.mark.parametrize("state", ["unknown", "unavailable", ""])
def test_unknown_unavailable_and_empty_states_are_not_written(state: str) -> None:
    assert point("sensor.x", state, {"unit_of_measurement": "W"}) is None


def test_only_state_changed_events_with_a_new_state_are_written() -> None:
    schema = HomeAssistantSchema()
    assert schema(event("sensor.x", "1", event_type="call_service"), Context()) == []
    removed = validate(decode_event(orjson.dumps({"event_type": "state_changed", "time_fired": WHEN,
                                                  "data": {"entity_id": "sensor.x", "new_state": None}})))
    assert schema(removed, Context()) == []


def test_attributes_are_floats_when_python_can_else_str_with_the_digit_tail_quirk() -> None:
    p = point("light.bed", "on", {
        "brightness": 180, "on": True, "level": "12.5", "name": "Lamp 2", "model": "v1.2.3", "none": None,
        "effects": ["a", "b"], "nested": {"k": [1, None]}, "hs_color": [26.752, 31.945], "rgb_color": [255, 0, 3],
        "supported_color_modes": ["color_temp", "hs"], "big": 1e308, "huge": "1e400"})
    assert p is not None
    assert p.fields == {
        "state": "on", "value": 1.0, "brightness": 180.0, "on": 1.0, "level": 12.5,
        "name_str": "Lamp 2", "model_str": "v1.2.3", "none_str": "None",
        "effects_str": "['a', 'b']", "nested_str": "{'k': [1, None]}",
        "hs_color_str": "(26.752, 31.945)", "rgb_color_str": "(255, 0, 3)", "rgb_color": 25503.0,
        "supported_color_modes_str": "[<ColorMode.COLOR_TEMP: 'color_temp'>, <ColorMode.HS: 'hs'>]",
        "big": 1e308}
    # "Lamp 2" has one digit, "v1.2.3" two dots: neither matches HA's RE_DIGIT_TAIL; "1e400" is inf: dropped.


def test_datetimes_render_as_python_does() -> None:
    p = point("automation.tick", "on", {"last_triggered": "2026-11-28T11:35:31.165714+00:00"})
    assert p is not None
    assert p.fields["last_triggered_str"] == "2026-11-28 11:35:31.165714+00:00"
    assert p.fields["last_triggered"] == 20261128113531.165714


def test_an_attribute_named_like_a_field_gets_a_trailing_underscore() -> None:
    p = point("sensor.x", "5", {"value": 7, "state": "s"})
    assert p is not None
    assert p.fields == {"value": 5.0, "value_": 7.0, "state_str": "s"}


def test_tags_tags_attributes_and_ignore_attributes() -> None:
    config = HAConfig(tags=(("source", "ha"),), tags_attributes=("room", "flag", "missing"),
                      ignore_attributes=frozenset({"secret"}))
    p = point("sensor.x", "5", {"room": "kitchen", "flag": True, "missing": None, "secret": 1, "keep": 2}, config)
    assert p is not None
    assert dict(p.tags) == {"domain": "sensor", "entity_id": "x", "room": "kitchen", "flag": "True", "source": "ha"}
    assert p.fields == {"value": 5.0, "keep": 2.0}


def test_measurement_attr_domain_device_class_and_override() -> None:
    attrs = {"device_class": "power", "unit_of_measurement": "W"}
    by_class = point("sensor.x", "5", attrs, HAConfig(measurement_attr="domain__device_class"))
    assert by_class is not None
    assert by_class.measurement == "sensor__power"
    assert by_class.fields == {"value": 5.0, "unit_of_measurement_str": "W"}
    overridden = point("sensor.x", "5", attrs, HAConfig(override_measurement="all"))
    assert overridden is not None
    assert overridden.measurement == "all"
    assert overridden.fields == {"value": 5.0, "device_class_str": "power", "unit_of_measurement_str": "W"}


def test_component_config_domain_then_glob_then_entity_later_wins() -> None:
    config = HAConfig(
        override_measurement="global",
        component_config_domain={"sensor": Customization("by_domain", frozenset({"a"}))},
        component_config_glob={"sensor.*_temp": Customization("by_glob")},
        component_config={"sensor.kitchen_temp": Customization(None, frozenset({"b"}))})
    attrs = {"a": 1, "b": 2}
    assert (point("sensor.power", "1", attrs, config).measurement,  # type: ignore[union-attr]
            point("sensor.power", "1", attrs, config).fields) == ("by_domain", {"value": 1.0, "b": 2.0})  # type: ignore[union-attr]
    kitchen = point("sensor.kitchen_temp", "1", attrs, config)
    assert kitchen is not None
    assert (kitchen.measurement, kitchen.fields) == ("by_glob", {"value": 1.0, "a": 1.0})
    assert point("light.x", "on", attrs, config).measurement == "global"  # type: ignore[union-attr]


# ------------------------------------------------------------------------------ settings and wiring

def test_settings_choose_and_configure_the_schema() -> None:
    settings = Settings.from_values({
        "SCHEMA": "homeassistant", "HA_COMPAT_TAGS": "source=ha-peer,site=home", "HA_COMPAT_TAGS_ATTRIBUTES": "room",
        "IGNORE_ATTRIBUTES": "secret", "HA_COMPAT_DEFAULT_MEASUREMENT": "state",
        "HA_COMPAT_COMPONENT_CONFIG": '{"sensor.x": {"override_measurement": "mine", "ignore_attributes": "b"}}',
        "HA_COMPAT_COMPONENT_CONFIG_GLOB": '{"sensor.*": {"ignore_attributes": ["c"]}}'})
    convert = converter(settings)
    (p,) = convert(event("sensor.x", "5", {"room": "hall", "secret": 1, "b": 2, "c": 3, "d": 4}), Context())
    assert p.measurement == "mine"
    assert dict(p.tags) == {"domain": "sensor", "entity_id": "x", "room": "hall", "source": "ha-peer", "site": "home"}
    assert p.fields == {"value": 5.0, "c": 3.0, "d": 4.0}  # the entity's own ignore list replaced the glob's
    assert converter(Settings.from_values({})) is enrich.to_points


@pytest.mark.parametrize(("name", "value", "problem"), [
    ("HA_COMPAT_TAGS", "source", "key=value pairs"),
    ("HA_COMPAT_COMPONENT_CONFIG", "{nope", "must be a JSON object"),
    ("HA_COMPAT_COMPONENT_CONFIG", '{"not an id": {"override_measurement": "x"}}', "is not an entity id"),
    ("HA_COMPAT_COMPONENT_CONFIG_DOMAIN", '{"sensor": {"measurement": "x"}}', "override_measurement and/or"),
    ("HA_COMPAT_COMPONENT_CONFIG_GLOB", '{"sensor.*": {"ignore_attributes": [1]}}', "a list of strings"),
    ("HA_COMPAT_MEASUREMENT_ATTR", "unit", "must be one of"),
    ("WEATHER_ENTITY", "home weather", "entity id"),
])
def test_bad_schema_settings_fail_with_one_line_naming_the_setting(name: str, value: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_values({name: value})
    message = str(caught.value)
    assert message.startswith(f"{name}: ") and problem in message and "\n" not in message


def test_a_misspelt_ha_compat_setting_is_an_error() -> None:
    with pytest.raises(SettingsError, match="HA_COMPAT_TAG: unknown setting"):
        Settings.load({"HA_COMPAT_TAG": "a=b"}, env_file=None)


def test_an_explicit_empty_ignore_list_replaces_an_earlier_one() -> None:
    # HA merges component_config entries with dict.update: a key set to [] replaces, a key left out does not.
    config = HAConfig(
        component_config_domain={"sensor": Customization("by_domain", frozenset({"a"}))},
        component_config_glob={"*temp*": Customization("", frozenset()), "sensor.x*": Customization("by_glob")})
    cleared = point("sensor.kitchen_temp", "1", {"a": 1}, config)
    kept = point("sensor.x1", "1", {"a": 1}, config)
    assert cleared is not None
    assert (cleared.measurement, cleared.fields) == ("sensor.kitchen_temp", {"value": 1.0, "a": 1.0})
    assert kept is not None and (kept.measurement, kept.fields) == ("by_glob", {"value": 1.0})
