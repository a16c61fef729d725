"""The ``events`` schema: a pure function from one Home Assistant event to its points.

Two measurements (docs/SCHEMA.md has the full reference and example queries):

``states`` — one point per ``state_changed``, at ``new_state.last_updated``.
    tags:   entity_id, domain, device_class, unit, friendly_name, area, floor, device, device_manufacturer,
            device_model, integration, home
    fields: value (float: numeric state, or 1/0 for on/off-like states), state (string, for
            non-numeric states), available (bool), previous_state, previous_state_seconds,
            labels, context_id, context_user_id, context_parent_id,
            hour, weekday (integers, HA's time zone), weather_condition, weather_temperature,
            attr_<name> (float: numbers and booleans) and attr_<name>_str (string: everything else,
            lists and objects as JSON); a number whose attribute name itself ends in ``_str`` is
            written as attr_<name>_num, so a ``*_str`` field is always a string.

``events`` — one point per any other event, at ``time_fired``.
    tags:   event_type, domain, service, entity_id (when the event names one), home
    fields: data (JSON), origin, context_id, context_user_id, context_parent_id, hour, weekday

The name, device manufacturer and model are tags because they follow the entity (no series of their own
unless they change) and users group and label graphs by them, which InfluxQL does by tag only.

Every field has one type forever (an attribute that is sometimes a number and sometimes text lands in
two fields), so a measurement never hits a field type conflict. Identity: a point is a pure function of
its event (tags from the event and the registry), so redelivery overwrites instead of duplicating.
``events`` points add a nanosecond offset (0–999, a hash of the event's context and data) to the
microsecond ``time_fired``, so two different events fired in the same microsecond stay two points.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from ..model import Event, PreviousState, State, StateChangedData, encode, to_us
from ..sinks.line_protocol import clip_string
from ..sinks.point import FieldValue, Point
from .registry import EMPTY, EntityInfo, Snapshot

STATES = "states"
EVENTS = "events"
UNAVAILABLE_STATES = frozenset(("unavailable", "unknown", ""))
# homeassistant.helpers.state.state_as_number, which HA's own InfluxDB integration uses.
ON_LIKE = frozenset(("on", "locked", "above_horizon", "open", "home"))
OFF_LIKE = frozenset(("off", "unlocked", "below_horizon", "closed", "not_home"))
# Attributes already written as tags or fields of their own.
_PROMOTED = frozenset(("friendly_name", "unit_of_measurement", "device_class"))
# A tag is part of every point's series key, which InfluxDB caps at 64 KiB in all; HA caps a state at 255
# characters, and no real name comes near it.
MAX_NAME_TAG = 255


@dataclass(frozen=True, slots=True)
class Weather:
    condition: str
    temperature: float | None


@dataclass(frozen=True, slots=True)
class Context:
    """Everything besides the event that enrichment reads: fixed for a batch."""

    home_id: str = ""
    snapshot: Snapshot = EMPTY
    weather: Weather | None = None
    ignore_attributes: frozenset[str] = frozenset()


# ASCII letters no number starts with (float() takes "inf", "infinity" and "nan" in any case): most text
# states ("on", "heat", "eco") are told apart without raising a ValueError, which cost ~0.35 µs each.
_NOT_A_NUMBER_START = frozenset("abcdefghjklmopqrstuvwxyzABCDEFGHJKLMOPQRSTUVWXYZ")


def number(text: str) -> float | None:
    """The state as a finite float, or None."""
    if text[:1] in _NOT_A_NUMBER_START:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def state_value(text: str) -> float | None:
    """Numeric value of a state: the number itself, or 1/0 for on/off-like states."""
    value = number(text)
    if value is not None:
        return value
    if text in ON_LIKE:
        return 1.0
    if text in OFF_LIKE:
        return 0.0
    return None


def _json(value: Any) -> str:
    return clip_string(encode(value).decode())


def attribute_fields(attributes: Mapping[str, Any], ignore: frozenset[str], out: dict[str, FieldValue]) -> None:
    """attr_<name> for numbers and booleans (as float), attr_<name>_str for everything else.

    Fields ending in ``_str`` are strings, always: a numeric attribute named ``x_str`` goes to
    ``attr_x_str_num``, or it would collide with the text of an attribute ``x`` (a field type conflict).
    """
    for key, value in attributes.items():
        if key in _PROMOTED or key in ignore:
            continue
        kind = type(value)
        if kind is float or kind is int or kind is bool:
            as_float = float(value)
            if math.isfinite(as_float):
                out["attr_" + key + "_num" if key.endswith("_str") else "attr_" + key] = as_float
        elif kind is str:
            out["attr_" + key + "_str"] = clip_string(value)
        elif value is not None:
            out["attr_" + key + "_str"] = _json(value)


_QUARTER_US = 900_000_000
_TAGS_MEMO_MAX = 100_000  # (entity, device class, unit, home) combinations remembered per snapshot
_local_cache: dict[tuple[ZoneInfo, int], tuple[int, int]] = {}


def _local_time(us: int, tz: ZoneInfo | None, out: dict[str, FieldValue]) -> None:
    if tz is None:
        return
    # Every UTC offset and every DST switch falls on a quarter hour, so (hour, weekday) is one value per
    # quarter: computed once each, not per event.
    key = (tz, us // _QUARTER_US)
    cached = _local_cache.get(key)
    if cached is None:
        local = datetime.fromtimestamp(us / 1_000_000, tz)
        cached = (local.hour, local.weekday())
        if len(_local_cache) >= 10_000:
            _local_cache.clear()
        _local_cache[key] = cached
    out["hour"], out["weekday"] = cached


def _context_fields(context: Any, out: dict[str, FieldValue]) -> None:
    if context is None:
        return
    out["context_id"] = context.id
    if context.user_id:
        out["context_user_id"] = context.user_id
    if context.parent_id:
        out["context_parent_id"] = context.parent_id


def _state_tags(entity_id: str, info: EntityInfo | None, device_class: str, unit: str, friendly_name: str,
                ctx: Context) -> tuple[tuple[str, str], ...]:
    """The sorted tags of a ``states`` point, memoised on the snapshot (they repeat with every change)."""
    memo = ctx.snapshot.tags_memo
    key = (entity_id, device_class, unit, friendly_name, ctx.home_id)
    tags = memo.get(key)
    if tags is not None:
        return tags
    found: dict[str, str] = {"domain": entity_id.partition(".")[0], "entity_id": entity_id}
    if ctx.home_id:
        found["home"] = ctx.home_id
    if info is not None:
        for tag, value in (("area", info.area), ("floor", info.floor), ("device", info.device),
                           ("integration", info.platform),
                           ("device_manufacturer", info.manufacturer), ("device_model", info.model)):
            if value:
                found[tag] = value
    if device_class:
        found["device_class"] = device_class
    if unit:
        found["unit"] = unit
    if friendly_name:
        found["friendly_name"] = friendly_name
    tags = tuple(sorted(found.items()))
    if len(memo) >= _TAGS_MEMO_MAX:
        memo.clear()
    memo[key] = tags
    return tags


def state_point(event: Event, data: StateChangedData, ctx: Context) -> Point:
    entity_id = data.entity_id
    info = ctx.snapshot.get(entity_id)
    new: State | None = data.new_state
    old: PreviousState | None = data.old_state
    fields: dict[str, FieldValue] = {}
    device_class = unit = friendly_name = ""
    if info is not None:
        if info.labels:
            fields["labels"] = info.labels
    if new is None:
        # The entity was removed: there is no new state, so the point sits at time_fired.
        us = to_us(event.time_fired)
        fields["available"] = False
        fields["removed"] = True
    else:
        us = to_us(new.last_updated)
        attributes = new.attributes
        value = attributes.get("device_class")
        if isinstance(value, str):
            device_class = value
        value = attributes.get("unit_of_measurement")
        if isinstance(value, str):
            unit = value
        value = attributes.get("friendly_name")
        if isinstance(value, str):
            friendly_name = value[:MAX_NAME_TAG]
        state = new.state
        if state in UNAVAILABLE_STATES:
            fields["available"] = False
            fields["state"] = state
        else:
            fields["available"] = True
            numeric = number(state)
            if numeric is not None:
                fields["value"] = numeric
            else:
                fields["state"] = clip_string(state)
                if state in ON_LIKE:
                    fields["value"] = 1.0
                elif state in OFF_LIKE:
                    fields["value"] = 0.0
        attribute_fields(attributes, ctx.ignore_attributes, fields)
        _context_fields(new.context or event.context, fields)
    if old is not None:
        fields["previous_state"] = clip_string(old.state)
        if new is not None and new.state != old.state and new.last_changed and old.last_changed:
            fields["previous_state_seconds"] = (to_us(new.last_changed) - to_us(old.last_changed)) / 1e6
    _local_time(us, ctx.snapshot.tz, fields)
    if ctx.weather is not None:
        fields["weather_condition"] = ctx.weather.condition
        if ctx.weather.temperature is not None:
            fields["weather_temperature"] = ctx.weather.temperature
    tags = _state_tags(entity_id, info, device_class, unit, friendly_name, ctx)
    return Point(STATES, tags, fields, us * 1000, event.raw)


def event_offset_ns(event: Event) -> int:
    """0–999 ns from the event's content, so same-microsecond events do not collide."""
    context_id = event.context.id if event.context is not None else ""
    digest = zlib.crc32(event.raw.data, zlib.crc32(f"{event.event_type}|{context_id}".encode()))
    return digest % 1000


def event_point(event: Event, data: Mapping[str, Any], ctx: Context) -> Point:
    tags: dict[str, str] = {"event_type": event.event_type}
    if ctx.home_id:
        tags["home"] = ctx.home_id
    entity_id = data.get("entity_id")
    if isinstance(entity_id, str) and "." in entity_id:
        tags["entity_id"] = entity_id
        tags["domain"] = entity_id.partition(".")[0]
    if event.event_type == "call_service":
        if isinstance(data.get("domain"), str):
            tags["domain"] = data["domain"]
        if isinstance(data.get("service"), str):
            tags["service"] = data["service"]
    us = to_us(event.time_fired)
    fields: dict[str, FieldValue] = {"data": _json(data), "origin": event.origin}
    _context_fields(event.context, fields)
    _local_time(us, ctx.snapshot.tz, fields)
    return Point(EVENTS, tuple(sorted((k, v) for k, v in tags.items() if v)), fields,
                 us * 1000 + event_offset_ns(event), event.raw)


def to_points(event: Event, ctx: Context) -> list[Point]:
    """The points of one event in the ``events`` schema."""
    data = event.data
    if isinstance(data, StateChangedData):
        return [state_point(event, data, ctx)]
    return [event_point(event, data, ctx)]
