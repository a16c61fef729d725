"""Property: arbitrary HA states and attributes, in both schemas, give line protocol the real influxd accepts.

Every example writes a batch of state changes of a few entities (so many events share a measurement)
to a fresh database of a real InfluxDB 1.6 and checks that every line was taken: no parse error, no
field type conflict — an attribute that is a number in one event and text in the next lands in two
fields, never one field of two types — and that each point reads back.
"""

from __future__ import annotations

import itertools
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ha_ingestor.enrichment import enrich
from ha_ingestor.enrichment.homeassistant import HAConfig, HomeAssistantSchema
from ha_ingestor.harness.influxd import Influxd
from ha_ingestor.model import decode_event, validate
from ha_ingestor.sinks.line_protocol import encode_lines
from ha_ingestor.sinks.point import Point

SCHEMAS = {"events": enrich.to_points,
           "homeassistant": HomeAssistantSchema(HAConfig(tags_attributes=("source",)))}
_databases = itertools.count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    """One real influxd for this module (the session one may be frozen or stopped by other tests)."""
    influxd = Influxd(Path(tmp_path_factory.mktemp("influxd-property"))).start()
    try:
        yield influxd
    finally:
        influxd.stop()


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["on", "12", "1.5", "x12y", "nan", "inf", "(1, 2)", 'a "quoted" \\ value\\', "a,b=c d", "\n",
                     "#comment", "", "°C"]),
    st.text(max_size=30))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                      max_leaves=5)
names = st.one_of(st.sampled_from(["temperature", "hs_color", "unit_of_measurement", "device_class", "friendly_name",
                                   "state", "value", "source", "t", "t_str", "a b", "x=y", "k,v", "back\\", "#c"]),
                  st.text(min_size=1, max_size=10))
state_texts = st.one_of(st.sampled_from(["on", "off", "12.5", "-3", "unknown", "unavailable", "", "nan", "1e400",
                                         "open", "home", "heat"]), st.text(max_size=40))
entities = st.sampled_from(["sensor.a", "sensor.b", "light.kitchen", "climate.hall"])
changes = st.tuples(entities, state_texts, st.dictionaries(names, values, max_size=6))
# HA's own integration conflicts with itself when an attribute is named "state" (a float field "state"
# beside the string one) or "<x>_str" next to an "<x>" (a float "<x>_str" beside the string one): it
# writes such points and InfluxDB refuses them. The homeassistant schema writes what HA writes, so there
# the pipeline dead-letters them (InfluxDB's 400 names the line); the property holds for every other name.
ha_names = names.filter(lambda name: name != "state" and not name.endswith("_str"))
ha_changes = st.tuples(entities, state_texts, st.dictionaries(ha_names, values, max_size=6))


def _events(drawn: list[tuple[str, str, dict[str, Any]]]) -> list[Any]:
    events = []
    for i, (entity_id, state, attributes) in enumerate(drawn):
        stamp = f"2026-11-28T11:{i // 60:02d}:{i % 60:02d}.{i:06d}+00:00"
        new = {"entity_id": entity_id, "state": state, "attributes": attributes, "last_changed": stamp,
               "last_updated": stamp, "context": {"id": f"ctx{i}"}}
        raw = {"event_type": "state_changed", "time_fired": stamp, "origin": "LOCAL", "context": {"id": f"ctx{i}"},
               "data": {"entity_id": entity_id, "old_state": None, "new_state": new}}
        events.append(validate(decode_event(orjson.dumps(raw))))
    return events


def _write(influxd: Influxd, db: str, lines: list[str]) -> tuple[int, str]:
    request = urllib.request.Request(f"{influxd.url}/write?db={db}", data="\n".join(lines).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _check(influxd: Influxd, schema: str, drawn: list[tuple[str, str, dict[str, Any]]]) -> None:
    convert = SCHEMAS[schema]
    points: list[Point] = [p for event in _events(drawn) for p in convert(event, enrich.Context())]
    lines, kept, unwritable = encode_lines(points)
    assert not unwritable or schema == "homeassistant", unwritable  # HA-mode: a NaN state with no attributes
    if not lines:
        return
    db = f"prop_{next(_databases)}"
    influxd.create_database(db)
    try:
        status, body = _write(influxd, db, lines)
        assert status == 204, f"{status} {body}"
        stored = influxd.rows('SELECT * FROM /.*/', db)
        # Same identity → overwritten: the store holds one row per distinct (series, time).
        assert len(stored) == len({(p.series_key, p.time_ns) for p in kept})
    finally:
        influxd.drop_database(db)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(drawn=st.lists(changes, min_size=1, max_size=40))
@example(drawn=[("sensor.a", "1", {"t_str": 5}), ("sensor.b", "x", {"t": "abc"})])
@example(drawn=[("sensor.a", "1", {"t": 5}), ("sensor.a", "2", {"t": "abc", "u": [1, "a"]}), ("sensor.a", "on", {})])
def test_events_schema_lines_are_all_accepted_without_type_conflicts(server: Influxd,
                                                                     drawn: list[tuple[str, str, dict[str, Any]]]
                                                                     ) -> None:
    _check(server, "events", drawn)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(drawn=st.lists(ha_changes, min_size=1, max_size=40))
@example(drawn=[("sensor.a", "1", {"t": 5}), ("sensor.a", "2", {"t": "a12b"}), ("sensor.a", "x", {"value": 3})])
def test_homeassistant_schema_lines_are_all_accepted_without_type_conflicts(server: Influxd,
                                                                            drawn: list[tuple[str, str, dict[str, Any]]]
                                                                            ) -> None:
    _check(server, "homeassistant", drawn)
