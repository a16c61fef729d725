"""Differential test: the ``homeassistant`` schema against HA's own ``event_to_json``, on arbitrary states.

HA 2025.4.4's influxdb integration runs in the real-ha venv on the very states (as JSON holds them) that
the schema converts here, under random configurations: every point must be the same. This pins the rules
that samples rarely show: field-name collisions, the digit-tail quirk, float() on strings, skipped
states, ignore_attributes, tags_attributes, override/default measurement, component_config merging.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ha_ingestor.enrichment.enrich import Context
from ha_ingestor.enrichment.homeassistant import PYTHON_TYPES, Customization, HAConfig, HomeAssistantSchema
from ha_ingestor.harness.real_ha import ha_event_to_json
from ha_ingestor.model import decode_event, validate

pytestmark = [
    pytest.mark.real_ha,
    # A failing example holds 150 states: its (large) repr is wanted, not a warning about it.
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning"),
    # Installed by the fixture when missing: a skip decided at collection never ran on a fresh machine.
    pytest.mark.usefixtures("real_ha_venv"),
]

DOMAINS = ["sensor", "light", "binary_sensor", "climate", "automation", "person", "sun"]
KEYS = ["state", "value", "value_", "state_", "a", "a_str", "unit_of_measurement", "device_class", "friendly_name",
        "rgb", "temp", "b"]
TRICKY_STRINGS = ["x12y", "1.5", "1_000", " 7 ", "nan", "inf", "-inf", "1.2.3", "(255, 0, 3)", "v1.2", "٣٤",
                  "12a.5", "on", "", "None", "1e400", "0x10", "°C", "a b,c=d"]

# repr() escapes what its Unicode table calls unprintable: HA's Python 3.13 knows characters Python 3.11's
# table does not (Unicode 15), so text stays in long-assigned ranges (control characters included).
text = st.text(alphabet=st.characters(max_codepoint=0x7FF), max_size=12)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(TRICKY_STRINGS), text)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(text, inner, max_size=3)),
                      max_leaves=6)
states = st.fixed_dictionaries({
    "domain": st.sampled_from(DOMAINS),
    "object_id": st.sampled_from(["a", "kitchen_temp", "x_1", "hall"]),
    "state": st.one_of(st.sampled_from(["on", "off", "open", "closed", "home", "not_home", "locked", "unlocked",
                                        "above_horizon", "below_horizon", "unknown", "unavailable", "", "12",
                                        "-3.5", "1e3", "nan", "inf", " 4 ", "heat"]), text),
    "attributes": st.dictionaries(st.one_of(st.sampled_from(KEYS), text.filter(bool)), values,
                                  max_size=8),
    "us": st.integers(0, 10**6 - 1),
})
customize = st.fixed_dictionaries({}, optional={
    "override_measurement": st.sampled_from(["", "over", "m2"]),
    "ignore_attributes": st.lists(st.sampled_from(KEYS), max_size=3),
})
confs = st.fixed_dictionaries({}, optional={
    "default_measurement": st.sampled_from(["", "dflt"]),
    "override_measurement": st.sampled_from(["", "everything"]),
    "measurement_attr": st.sampled_from(["unit_of_measurement", "domain__device_class", "entity_id"]),
    "tags": st.dictionaries(st.sampled_from(["source", "domain", "home"]), st.sampled_from(["x", "ha"]), max_size=2),
    "tags_attributes": st.lists(st.sampled_from(KEYS), max_size=2, unique=True),
    "ignore_attributes": st.lists(st.sampled_from(KEYS), max_size=3),
    "component_config": st.dictionaries(st.sampled_from(["sensor.a", "light.hall", "climate.x_1"]), customize,
                                        max_size=2),
    "component_config_domain": st.dictionaries(st.sampled_from(DOMAINS), customize, max_size=2),
    "component_config_glob": st.dictionaries(st.sampled_from(["*.a", "sensor.*", "*temp*"]), customize, max_size=2),
})


def schema_for(conf: dict[str, Any]) -> HomeAssistantSchema:
    def custom(entries: dict[str, Any]) -> dict[str, Customization]:
        return {key: Customization(entry.get("override_measurement"),
                                   frozenset(entry["ignore_attributes"]) if "ignore_attributes" in entry else None)
                for key, entry in entries.items()}

    return HomeAssistantSchema(HAConfig(
        default_measurement=conf.get("default_measurement", ""),
        override_measurement=conf.get("override_measurement", ""),
        measurement_attr=conf.get("measurement_attr", "unit_of_measurement"),
        tags=tuple(conf.get("tags", {}).items()), tags_attributes=tuple(conf.get("tags_attributes", [])),
        ignore_attributes=frozenset(conf.get("ignore_attributes", [])),
        component_config=custom(conf.get("component_config", {})),
        component_config_domain=custom(conf.get("component_config_domain", {})),
        component_config_glob=custom(conf.get("component_config_glob", {}))))


def ours(schema: HomeAssistantSchema, state: dict[str, Any]) -> Any:
    event = {"event_type": "state_changed", "time_fired": state["last_updated"],
             "data": {"entity_id": state["entity_id"], "new_state": state}}
    points = schema(validate(decode_event(orjson.dumps(event))), Context())
    if not points:
        return None
    (point,) = points
    return {"measurement": point.measurement, "tags": dict(point.tags), "time_ns": point.time_ns,
            "fields": {k: [type(v).__name__, v] for k, v in point.fields.items()}}


def theirs_as_written(point: Any) -> Any:
    """HA's point minus what InfluxDB could never store: a NaN/inf ``value`` from a "nan"/"inf" state."""
    if point is None or "error" in point:
        return point
    value = point["fields"].get("value")
    if value is not None and not math.isfinite(value[1]):
        del point["fields"]["value"]
    return point


# No shrinking: each example runs HA's code in a subprocess; the assertion names the state that differs.
@settings(max_examples=10, deadline=None, phases=(Phase.explicit, Phase.reuse, Phase.generate),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(conf=confs, drawn=st.lists(states, min_size=150, max_size=150))
def test_every_state_gives_the_point_home_assistants_own_code_gives(conf: dict[str, Any],
                                                                     drawn: list[dict[str, Any]]) -> None:
    batch = []
    for item in drawn:
        domain = item["domain"]
        # Attributes whose Python type JSON hides (tuples, datetimes, enum lists) are emulated from their
        # JSON form on purpose; HA's function fed the JSON form renders them differently, so leave them out.
        attributes = {k: v for k, v in item["attributes"].items() if (domain, k) not in PYTHON_TYPES}
        batch.append({"entity_id": f"{domain}.{item['object_id']}", "state": item["state"], "attributes": attributes,
                      "last_updated": f"2026-11-28T11:31:52.{item['us']:06d}+00:00"})
    expected = [theirs_as_written(point) for point in ha_event_to_json({"host": "127.0.0.1", **conf}, batch)]
    schema = schema_for(conf)
    differing = []
    for state, want in zip(batch, expected, strict=True):
        if want is not None and "error" in want:
            continue  # HA's own code raised (its writer thread would die); nothing to match
        got = ours(schema, state)
        if got != want:
            differing.append(f"{orjson.dumps(state).decode()}\n  HA:   {want}\n  ours: {got}")
    assert not differing, f"conf {conf}: {len(differing)} of {len(batch)} differ, first:\n" + "\n".join(differing[:3])
