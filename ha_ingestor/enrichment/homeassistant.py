"""The ``homeassistant`` schema: point for point what Home Assistant's own InfluxDB integration writes.

The rules of HA 2025.4's ``influxdb`` integration, so dashboards built on it keep working unchanged:

* only ``state_changed`` events with a new state are written; states ``unavailable``, ``unknown`` and
  ``""`` are skipped (HA's filter include/exclude lives in ingestion: INCLUDE_*/EXCLUDE_* settings);
* measurement: component_config's ``override_measurement``, else the global ``override_measurement``,
  else the attribute ``measurement_attr`` names (``unit_of_measurement``; or ``domain__device_class``;
  or ``entity_id``), else ``default_measurement``, else the entity id;
* tags: ``domain``, ``entity_id`` (the object id, without the domain), the ``tags_attributes`` and the
  configured ``tags``;
* fields: ``value`` (float: the numeric state, or HA's ``state_as_number``: on/open/home/locked/
  above_horizon → 1, off/closed/not_home/unlocked/below_horizon → 0) and ``state`` (string, when the
  state is not a number); every attribute but the ignored ones: ``float(value)`` when Python can
  (numbers, booleans, numeric strings), else ``<name>_str`` holding Python's ``str(value)``; a
  ``_str`` value with one run of digits (``RE_DIGIT_TAIL``) is *also* written as ``<name>``, the digits
  as a float (HA's quirk: ``rgb_color_str`` "(255, 210, 174)" gives ``rgb_color`` 255210174.0);
  an attribute whose name is already a field gets a trailing ``_``; NaN and ±inf are left out;
* time: ``new_state.last_updated`` (HA writes ``time_fired``, which it sets to the same instant).

Events arrive as JSON, so HA's Python values have to be recovered before ``str()``: tuples and enums
became lists and strings, datetimes became ISO strings. :data:`PYTHON_TYPES` lists the attributes whose
Python type differs from what their JSON shows (learned from HA's source and checked against what HA
wrote, see tests/enrichment and tests/real_ha); anything else is rendered from its JSON value.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from functools import lru_cache
from typing import Any

from ..model import Event, StateChangedData, to_us
from ..sinks.point import FieldValue, Point
from .enrich import Context

# homeassistant/components/influxdb/const.py: a string with one run of digits (at most one '.')
# is also written as a float of its digits.
RE_DIGIT_TAIL = re.compile(r"^[^\.]*\d+\.?\d+[^\.]*$")
RE_DECIMAL = re.compile(r"[^\d.]+")
SKIPPED_STATES = frozenset(("unknown", "unavailable", ""))
# homeassistant.helpers.state.state_as_number; "unknown" is 0 there too, but such states are skipped.
ON_STATES = frozenset(("on", "locked", "above_horizon", "open", "home"))
OFF_STATES = frozenset(("off", "unlocked", "below_horizon", "closed", "not_home"))
MEASUREMENT_ATTRS = ("unit_of_measurement", "domain__device_class", "entity_id")


class PyType(Enum):
    """How HA held an attribute in Python, where its JSON hides it."""

    TUPLE = "tuple"  # a list in JSON, str() gives "(1, 2)"
    DATETIME = "datetime"  # an ISO string in JSON, str() gives "2025-01-01 12:00:00+00:00"
    ENUM_LIST = "enum_list"  # a list of StrEnum members: str() gives "[<ColorMode.HS: 'hs'>]"


# (domain, attribute) → (how HA held it, enum class name for ENUM_LIST). Domain "*" = any domain.
PYTHON_TYPES: Mapping[tuple[str, str], tuple[PyType, str]] = {
    ("light", "hs_color"): (PyType.TUPLE, ""),
    ("light", "xy_color"): (PyType.TUPLE, ""),
    ("light", "rgb_color"): (PyType.TUPLE, ""),
    ("light", "rgbw_color"): (PyType.TUPLE, ""),
    ("light", "rgbww_color"): (PyType.TUPLE, ""),
    ("light", "supported_color_modes"): (PyType.ENUM_LIST, "ColorMode"),
    ("climate", "hvac_modes"): (PyType.ENUM_LIST, "HVACMode"),
    ("automation", "last_triggered"): (PyType.DATETIME, ""),
    ("script", "last_triggered"): (PyType.DATETIME, ""),
    ("media_player", "media_position_updated_at"): (PyType.DATETIME, ""),
}


@dataclass(frozen=True, slots=True)
class Customization:
    """One component_config entry: ``override_measurement`` and ``ignore_attributes`` for some entities."""

    # None: not set. Set to "" or an empty set, a key still replaces what an earlier entry set (dict.update).
    override_measurement: str | None = None
    ignore_attributes: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class HAConfig:
    """The options of HA's ``influxdb:`` YAML that shape points (connection options live elsewhere)."""

    default_measurement: str = ""
    override_measurement: str = ""
    measurement_attr: str = "unit_of_measurement"
    tags: tuple[tuple[str, str], ...] = ()
    tags_attributes: tuple[str, ...] = ()
    ignore_attributes: frozenset[str] = frozenset()
    component_config: Mapping[str, Customization] = field(default_factory=dict)
    component_config_domain: Mapping[str, Customization] = field(default_factory=dict)
    component_config_glob: Mapping[str, Customization] = field(default_factory=dict)


def python_str(value: Any, kind: tuple[PyType, str] | None = None) -> str:
    """``str(value)`` as HA computed it on the Python value behind this JSON value."""
    if kind is not None:
        how, enum_name = kind
        if how is PyType.TUPLE and isinstance(value, list):
            return str(tuple(value))
        if how is PyType.DATETIME and isinstance(value, str):
            try:
                return str(datetime.fromisoformat(value))
            except ValueError:
                return value
        if how is PyType.ENUM_LIST and isinstance(value, list):
            members = (f"<{enum_name}.{v.upper()}: {v!r}>" if isinstance(v, str) else repr(v) for v in value)
            return "[" + ", ".join(members) + "]"
    return str(value)


def _as_float(value: Any) -> float | None:
    """Python's ``float(value)``, or None where HA's ``float()`` raised ValueError/TypeError."""
    if isinstance(value, list | dict) or value is None:
        return None
    try:
        return float(value)
    except (ValueError, TypeError, OverflowError):
        # OverflowError (an integer beyond float) would stop HA's writer thread; here it is left out.
        return None


class Customizations:
    """HA's EntityValues: domain entries, then every matching glob, then the entity's own, later wins."""

    def __init__(self, config: HAConfig) -> None:
        self.config = config
        self._globs = [(re.compile(fnmatch.translate(pattern)), custom)
                       for pattern, custom in config.component_config_glob.items()]
        self.get = lru_cache(maxsize=16384)(self._get)

    def _get(self, entity_id: str) -> tuple[str, frozenset[str]]:
        """(override_measurement, ignore_attributes) for one entity, merged key by key."""
        override: str | None = None
        ignore: frozenset[str] | None = None
        found: list[Customization] = []
        domain_entry = self.config.component_config_domain.get(entity_id.partition(".")[0])
        if domain_entry is not None:
            found.append(domain_entry)
        found.extend(custom for pattern, custom in self._globs if pattern.match(entity_id))
        exact = self.config.component_config.get(entity_id)
        if exact is not None:
            found.append(exact)
        for custom in found:
            # A key an entry sets replaces what an earlier entry set (dict.update in HA).
            if custom.override_measurement is not None:
                override = custom.override_measurement
            if custom.ignore_attributes is not None:
                ignore = custom.ignore_attributes
        return override or "", ignore or frozenset()


class HomeAssistantSchema:
    """Converter for the pipeline: ``schema(event, ctx)`` → the points HA's integration would write."""

    def __init__(self, config: HAConfig | None = None) -> None:
        self.config = config or HAConfig()
        if self.config.measurement_attr not in MEASUREMENT_ATTRS:
            raise ValueError(f"measurement_attr must be one of {', '.join(MEASUREMENT_ATTRS)}")
        self.customizations = Customizations(self.config)

    def __call__(self, event: Event, ctx: Context) -> list[Point]:
        data = event.data
        if not isinstance(data, StateChangedData) or data.new_state is None:
            return []
        point = self.state_point(data, event)
        return [] if point is None else [point]

    def _measurement(self, entity_id: str, domain: str, attributes: Mapping[str, Any],
                     override: str) -> tuple[str, bool, bool]:
        """(measurement, write unit_of_measurement as a field, write device_class as a field)."""
        if override:
            return override, True, True
        config = self.config
        if config.override_measurement:
            return config.override_measurement, True, True
        include_uom = include_dc = True
        measurement: Any
        if config.measurement_attr == "entity_id":
            measurement = entity_id
        elif config.measurement_attr == "domain__device_class":
            device_class = attributes.get("device_class")
            if device_class is None:
                measurement = domain
            else:
                measurement = f"{domain}__{python_str(device_class)}"
                include_dc = False
        else:
            measurement = attributes.get(config.measurement_attr)
        if measurement is None or measurement == "":
            measurement = config.default_measurement or entity_id
        else:
            include_uom = config.measurement_attr != "unit_of_measurement"
        return python_str(measurement), include_uom, include_dc

    def state_point(self, data: StateChangedData, event: Event) -> Point | None:
        state = data.new_state
        assert state is not None
        text = state.state
        if text in SKIPPED_STATES:
            return None
        entity_id = state.entity_id
        domain, _, object_id = entity_id.partition(".")
        fields: dict[str, FieldValue] = {}
        value = _as_float(text)
        if value is None:
            fields["state"] = text
            if text in ON_STATES:
                value = 1.0
            elif text in OFF_STATES:
                value = 0.0
        if value is not None:
            fields["value"] = value  # even NaN for now: it still pushes an attribute named "value" to "value_"
        override, entity_ignore = self.customizations.get(entity_id)
        attributes = state.attributes
        measurement, include_uom, include_dc = self._measurement(entity_id, domain, attributes, override)
        tags: dict[str, str] = {"domain": domain, "entity_id": object_id}
        ignore = self.config.ignore_attributes | entity_ignore
        tags_attributes = self.config.tags_attributes
        for key, raw in attributes.items():
            kind = PYTHON_TYPES.get((domain, key))
            if key in tags_attributes:
                tags[key] = "" if raw is None else python_str(raw, kind)
                continue
            if (key == "unit_of_measurement" and not include_uom) or (key == "device_class" and not include_dc) \
                    or key in ignore:
                continue
            _attribute_fields(fields, key, raw, kind)
        tags.update(self.config.tags)
        if not math.isfinite(fields.get("value", 0.0)):  # type: ignore[arg-type]
            # A "nan"/"inf" state: HA sends it and InfluxDB refuses the line (and HA loses its whole batch).
            del fields["value"]
        return Point(measurement, tuple(sorted((k, v) for k, v in tags.items() if v)), fields,
                     to_us(state.last_updated) * 1000, event.raw)


def _attribute_fields(fields: dict[str, FieldValue], key: str, raw: Any, kind: tuple[PyType, str] | None) -> None:
    """One attribute's fields, in HA's order of operations (which decides the rare collisions)."""
    if key in fields:
        key = key + "_"
    number = _as_float(raw)  # lists, ISO datetimes and enum lists raise in float() as their Python values do
    if number is not None:
        fields[key] = number
    else:
        text = python_str(raw, kind)
        fields[key + "_str"] = text
        if RE_DIGIT_TAIL.match(text):
            fields[key] = float(RE_DECIMAL.sub("", text))
    current = fields.get(key)
    if isinstance(current, float) and not math.isfinite(current):
        del fields[key]
