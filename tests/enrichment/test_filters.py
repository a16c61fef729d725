"""Include/exclude filters with Home Assistant's ``entityfilter`` semantics, case by case.

The expectations are those of HA's own tests (tests/helpers/test_entityfilter.py) for its six cases.
The filter runs in ingestion (before the outbox); it is tested here beside the enrichment it spares.
"""

from __future__ import annotations

import pytest

from ha_ingestor.ingestion.filter import EventFilter, FilterRules, entity_filter


def keeps(rules: FilterRules, *entity_ids: str) -> list[bool]:
    keep = entity_filter(rules)
    return [keep(entity_id) for entity_id in entity_ids]


def test_case_1_no_rules_keeps_everything() -> None:
    assert keeps(FilterRules(), "sensor.a", "light.b") == [True, True]


def test_case_2_only_includes_keep_what_is_listed_of_an_included_domain_or_glob() -> None:
    rules = FilterRules(include_domains=("switch",), include_entities=("binary_sensor.working",),
                        include_entity_globs=("sensor.*_temp",))
    assert keeps(rules, "switch.x", "binary_sensor.working", "sensor.kitchen_temp", "light.x",
                 "binary_sensor.other", "sensor.power") == [True, True, True, False, False, False]


def test_case_3_only_excludes_keep_what_is_not_excluded() -> None:
    rules = FilterRules(exclude_domains=("switch",), exclude_entities=("binary_sensor.working",),
                        exclude_entity_globs=("sensor.*_temp",))
    assert keeps(rules, "switch.x", "binary_sensor.working", "sensor.kitchen_temp", "light.x",
                 "binary_sensor.other", "sensor.power") == [False, False, False, True, True, True]


def test_case_4_domain_or_glob_includes_with_excludes() -> None:
    rules = FilterRules(include_domains=("light", "sensor"), include_entities=("switch.keep",),
                        include_entity_globs=("binary_sensor.*_door",),
                        exclude_entities=("light.excluded", "binary_sensor.front_door"),
                        exclude_entity_globs=("sensor.*_raw",), exclude_domains=("binary_sensor",))
    assert keeps(rules,
                 "switch.keep",               # listed include → keep
                 "light.excluded",            # listed exclude → drop
                 "binary_sensor.back_door",   # included glob → keep (before the excluded domain)
                 "binary_sensor.front_door",  # listed exclude beats the included glob
                 "sensor.power_raw",          # excluded glob → drop
                 "light.kitchen",             # included domain → keep
                 "switch.other",              # nothing matches → drop
                 ) == [True, False, True, False, False, True, False]


def test_case_5_domain_or_glob_excludes_with_only_entity_includes() -> None:
    rules = FilterRules(include_entities=("light.keep", "sensor.x_raw"), exclude_domains=("light",),
                        exclude_entity_globs=("sensor.*_raw",), exclude_entities=("switch.gone",))
    assert keeps(rules, "light.keep", "light.other", "sensor.x_raw", "sensor.y_raw", "switch.gone",
                 "switch.stay") == [True, False, True, False, False, True]


def test_case_6_only_entity_lists_keep_the_listed_includes() -> None:
    rules = FilterRules(include_entities=("light.a", "light.b"), exclude_entities=("light.b",))
    assert keeps(rules, "light.a", "light.b", "light.c") == [True, True, False]


@pytest.mark.parametrize(("event", "kept"), [
    ({"event_type": "state_changed", "data": {"entity_id": "light.kitchen"}}, True),
    ({"event_type": "state_changed", "data": {"entity_id": "sensor.noise"}}, False),
    ({"event_type": "automation_triggered", "data": {"entity_id": "sensor.noise"}}, False),
    ({"event_type": "call_service", "data": {"domain": "light", "service": "turn_on"}}, True),
    ({"event_type": "themes_updated", "data": {}}, False),
])
def test_events_are_filtered_by_their_entity_and_type(event: dict[str, object], kept: bool) -> None:
    event_filter = EventFilter(FilterRules(exclude_entities=("sensor.noise",), exclude_event_types=("themes_updated",)))
    assert event_filter.accepts(event) is kept  # type: ignore[arg-type]
