"""The simulated home: entities, registries, state changes and the recorder's memory of them.

Deterministic for a seed (which entity changes, to what); times are the real clock, strictly increasing
by at least one microsecond per event, so (entity, last_updated) is unique like in HA. States are kept
as pre-encoded JSON so firing an event costs little more than joining bytes: the simulator has to
outrun the pipeline it feeds.
"""

from __future__ import annotations

import bisect
import gc
import hashlib
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

AREAS = [("living_room", "Living Room", "ground"), ("kitchen", "Kitchen", "ground"), ("office", "Office", "ground"),
         ("bedroom", "Bedroom", "first"), ("bathroom", "Bathroom", "first"), ("garage", None, None),
         ("garden", "Garden", None)]
FLOORS = [("ground", "Ground Floor", 0), ("first", "First Floor", 1)]
LABELS = [("critical", "Critical"), ("energy", "Energy")]
MANUFACTURERS = [("Aqara", "WSDCGQ11LM"), ("Philips", "LCT015"), ("Shelly", "Plus 1PM"), ("IKEA", "TRADFRI"),
                 ("Sonoff", "SNZB-03"), ("Tado", "Smart Thermostat")]
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # 10 bits -> two characters


_iso_second = [-1, ""]  # the last whole second formatted: flat out, a second's prefix serves thousands of events


def iso(us: int) -> str:
    """``datetime.isoformat()`` of a UTC time in µs, as HA writes it (no fraction when it is zero)."""
    second, micro = divmod(us, 1_000_000)
    if second != _iso_second[0]:
        _iso_second[0] = second
        _iso_second[1] = datetime.fromtimestamp(second, UTC).isoformat()[:-6]
    prefix = _iso_second[1]
    return f"{prefix}.{micro:06d}+00:00" if micro else f"{prefix}+00:00"


class History:
    """An entity's recorded states, oldest first, in columns (last_updated µs, last_changed µs, state,
    attributes) rather than a tuple per state.

    A busy home records millions of states; as tuples holding dicts, every one of them stayed in the
    garbage collector's lists, and at 20,000 events/s a collection rescanned them all (190 ms a minute,
    longer later), stalling the simulated home and sending the pipeline a burst. Columns are four objects
    to the collector however long they grow; attributes holding lists (lights, thermostats) are kept as
    the state's JSON (encoded anyway), so no column holds a container the collector has to follow.
    """

    __slots__ = ("_last", "attributes", "changed", "states", "updated")

    def __init__(self) -> None:
        self.updated: list[int] = []
        self.changed: list[int] = []
        self.states: list[str] = []
        self.attributes: list[dict[str, Any] | bytes] = []
        self._last: tuple[dict[str, Any], dict[str, Any] | bytes] | None = None  # (attributes, as stored)

    def __len__(self) -> int:
        return len(self.updated)

    def append(self, updated_us: int, changed_us: int, state: str, attributes: dict[str, Any],
               state_json: bytes) -> None:
        self.updated.append(updated_us)
        self.changed.append(changed_us)
        self.states.append(state)
        if self._last is None or self._last[0] is not attributes:
            # Unchanged attributes (most changes) share what the previous state stored.
            # orjson's bytes keep the capacity it grew to (~6 kB): a copy of its length is what is kept.
            self._last = (attributes, bytes(memoryview(state_json)) if gc.is_tracked(attributes) else attributes)
        self.attributes.append(self._last[1])

    def attributes_at(self, index: int) -> dict[str, Any]:
        attributes = self.attributes[index]
        return orjson.loads(attributes)["attributes"] if isinstance(attributes, bytes) else attributes

    def row(self, index: int) -> tuple[int, int, str, dict[str, Any]]:
        return self.updated[index], self.changed[index], self.states[index], self.attributes_at(index)

    def drop_before(self, index: int) -> None:
        for column in (self.updated, self.changed, self.states, self.attributes):
            del column[:index]

    def clear(self) -> None:
        self.drop_before(len(self))


@dataclass
class Entity:
    entity_id: str
    kind: str
    name: str
    area_id: str | None
    device_id: str | None
    platform: str
    state: str
    attributes: dict[str, Any]
    last_changed_us: int = 0
    last_updated_us: int = 0
    context_id: str = ""
    value: float = 0.0
    labels: list[str] = field(default_factory=list)
    state_json: bytes = b"null"  # the current state, encoded once per change
    history: History = field(default_factory=History)

    @property
    def domain(self) -> str:
        return self.entity_id.partition(".")[0]

    def state_dict(self) -> dict[str, Any]:
        updated = iso(self.last_updated_us)
        return {
            "entity_id": self.entity_id, "state": self.state, "attributes": self.attributes,
            "last_changed": updated if self.last_changed_us == self.last_updated_us else iso(self.last_changed_us),
            "last_reported": updated, "last_updated": updated,
            "context": {"id": self.context_id, "parent_id": None, "user_id": None},
        }


# kind: (domain, object id stem, attributes, initial value)
_KINDS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("temperature", "sensor", "temperature", {"state_class": "measurement", "unit_of_measurement": "°C",
                                              "device_class": "temperature"}),
    ("humidity", "sensor", "humidity", {"state_class": "measurement", "unit_of_measurement": "%",
                                        "device_class": "humidity"}),
    ("power", "sensor", "power", {"state_class": "measurement", "unit_of_measurement": "W", "device_class": "power"}),
    ("motion", "binary_sensor", "motion", {"device_class": "motion"}),
    ("light", "light", "light", {"min_color_temp_kelvin": 2000, "max_color_temp_kelvin": 6535, "min_mireds": 153,
                                 "max_mireds": 500, "effect_list": ["rainbow", "none"],
                                 "supported_color_modes": ["color_temp", "hs"], "supported_features": 4}),
    ("energy", "sensor", "energy", {"state_class": "total_increasing", "unit_of_measurement": "kWh",
                                    "device_class": "energy"}),
    ("door", "binary_sensor", "door", {"device_class": "door"}),
    ("switch", "switch", "plug", {}),
    ("illuminance", "sensor", "illuminance", {"state_class": "measurement", "unit_of_measurement": "lx",
                                              "device_class": "illuminance"}),
    ("climate", "climate", "thermostat", {"hvac_modes": ["off", "heat", "auto"], "min_temp": 7, "max_temp": 35,
                                          "target_temp_step": 0.5, "supported_features": 385}),
    ("counter", "input_number", "counter", {"initial": None, "editable": False, "min": 0.0, "max": 1000000.0,
                                            "step": 1.0, "mode": "box"}),
    ("mode", "sensor", "mode", {"device_class": "enum", "options": ["eco", "comfort", "boost", "off"]}),
]


class Home:
    """A home of ``size`` entities (at least one of each kind plus a weather entity)."""

    def __init__(self, size: int = 60, seed: int = 1, clock: Callable[[], float] = time.time) -> None:
        self.rng = random.Random(seed)
        self.clock = clock
        self.created = clock()
        self.last_us = 0
        self.entities: dict[str, Entity] = {}
        self.devices: list[dict[str, Any]] = []
        self._order: list[Entity] = []  # the entities that change by themselves
        self._ulid_ms = -1
        self._ulid_prefix = ""
        self._created: list[Entity] = []  # entities created through the REST API: change only when told
        self._build(max(size, len(_KINDS) + 1))
        self._cursor = 0

    # ------------------------------------------------------------------ building

    def _id(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def ulid(self, us: int) -> str:
        """A ULID as HA makes context ids: 48 bits of ms and 80 random bits in 26 Crockford base32 characters."""
        ms = us // 1000
        if ms != self._ulid_ms:  # flat out, one millisecond's prefix serves dozens of events
            self._ulid_ms = ms
            self._ulid_prefix = "".join(_CROCKFORD[(ms >> shift) & 31] for shift in range(45, -5, -5))
        r = self.rng.getrandbits(80)
        pairs = _CROCKFORD_PAIRS
        return (self._ulid_prefix + pairs[r >> 70] + pairs[(r >> 60) & 1023] + pairs[(r >> 50) & 1023]
                + pairs[(r >> 40) & 1023] + pairs[(r >> 30) & 1023] + pairs[(r >> 20) & 1023]
                + pairs[(r >> 10) & 1023] + pairs[r & 1023])

    def _build(self, size: int) -> None:
        # The home has been running for an hour: initial states are that old, as when connecting to a real
        # HA, so they lie outside any gap a test opens (they were never fired at a subscriber).
        now = int((self.clock() - 3600) * 1_000_000)
        areas = [a for a, _, _ in AREAS if a != "garage"]
        counts: dict[str, int] = {}
        for index in range(size - 1):
            kind, domain, stem, attrs = _KINDS[index % len(_KINDS)]
            counts[kind] = counts.get(kind, 0) + 1
            area = areas[(index // len(_KINDS) + index) % len(areas)]
            object_id = f"{area}_{stem}" + (f"_{counts[kind]}" if counts[kind] > len(areas) else "")
            entity_id = f"{domain}.{object_id}"
            while entity_id in self.entities:
                entity_id += "_x"
            name = object_id.replace("_", " ").title()
            device_id = None
            if index % 5 != 4:  # most entities belong to a device; every fifth has only its own area
                manufacturer, model = MANUFACTURERS[index % len(MANUFACTURERS)]
                device_id = self._id()
                self.devices.append({"id": device_id, "name": f"{name} device", "manufacturer": manufacturer,
                                     "model": model, "area_id": area, "created_at": self.created})
            entity = Entity(entity_id, kind, name, None if device_id else area, device_id, "demo", "", dict(attrs),
                            labels=["energy"] if kind in ("power", "energy") else [])
            entity.attributes["friendly_name"] = name
            self._initial(entity)
            self._commit(entity, now, now, entity.state, entity.attributes)
            self.entities[entity_id] = entity
            self._order.append(entity)
        weather = Entity("weather.home", "weather", "Home", "garden", None, "demo", "sunny", {
            "temperature": 12.5, "dew_point": 6.1, "temperature_unit": "°C", "humidity": 65, "pressure": 1012.0,
            "pressure_unit": "hPa", "wind_bearing": 220.0, "wind_speed": 11.2, "wind_speed_unit": "km/h",
            "visibility_unit": "km", "precipitation_unit": "mm", "attribution": "Simulated",
            "friendly_name": "Home", "supported_features": 3})
        self._commit(weather, now, now, "sunny", weather.attributes)
        self.entities[weather.entity_id] = weather
        self._order.append(weather)

    def _initial(self, entity: Entity) -> None:
        kind = entity.kind
        rng = self.rng
        if kind == "temperature":
            entity.value = round(rng.uniform(18, 23), 1)
        elif kind == "humidity":
            entity.value = round(rng.uniform(35, 60), 1)
        elif kind == "power":
            entity.value = round(rng.uniform(20, 900), 1)
        elif kind == "energy":
            entity.value = round(rng.uniform(100, 5000), 3)
        elif kind == "illuminance":
            entity.value = float(rng.randint(0, 800))
        elif kind == "counter":
            entity.value = 0.0
        if kind in ("temperature", "humidity", "power", "energy", "illuminance", "counter"):
            entity.state = str(entity.value)
        elif kind in ("motion", "door", "switch"):
            entity.state = "off"
        elif kind == "light":
            entity.state = "off"
            entity.attributes.update({"color_mode": None, "brightness": None, "color_temp_kelvin": None,
                                      "hs_color": None, "rgb_color": None, "xy_color": None, "effect": None})
        elif kind == "climate":
            entity.state = "heat"
            entity.attributes.update({"current_temperature": 20.0, "temperature": 21.0})
        elif kind == "mode":
            entity.state = "eco"

    # ------------------------------------------------------------------ changes

    def now_us(self) -> int:
        """The clock in µs, strictly increasing: every event gets a time of its own."""
        us = int(self.clock() * 1_000_000)
        if us <= self.last_us:
            us = self.last_us + 1
        self.last_us = us
        return us

    def _commit(self, entity: Entity, updated_us: int, changed_us: int, state: str, attributes: dict[str, Any]) -> None:
        entity.state = state
        entity.attributes = attributes
        entity.last_updated_us = updated_us
        entity.last_changed_us = changed_us
        entity.context_id = self.ulid(updated_us)
        entity.state_json = orjson.dumps(entity.state_dict())
        entity.history.append(updated_us, changed_us, state, attributes, entity.state_json)

    def next_entity(self) -> Entity:
        """Round-robin with a random stride, so chatty and quiet entities interleave like a real home."""
        self._cursor = (self._cursor + 1 + self.rng.randrange(3)) % len(self._order)
        return self._order[self._cursor]

    def change(self, entity: Entity | None = None, *, state: str | None = None,
               attributes: dict[str, Any] | None = None) -> tuple[Entity, bytes, int]:
        """Change one entity; returns (the entity, its old state JSON, the new last_updated µs)."""
        entity = entity or self.next_entity()
        old_json = entity.state_json
        if state is None:
            state, attributes = self._next_value(entity)
        attrs = entity.attributes if attributes is None else attributes
        updated = self.now_us()
        changed = updated if state != entity.state or not entity.history else entity.last_changed_us
        self._commit(entity, updated, changed, state, attrs)
        return entity, old_json, updated

    def _next_value(self, entity: Entity) -> tuple[str, dict[str, Any] | None]:
        rng = self.rng
        kind = entity.kind
        if entity.state == "unavailable":
            return (str(entity.value) if kind in ("temperature", "humidity", "power", "illuminance") else "off"), None
        if kind in ("temperature", "humidity", "power", "illuminance") and rng.random() < 0.002:
            return "unavailable", None
        if kind == "temperature":
            entity.value = round(min(30.0, max(10.0, entity.value + rng.uniform(-0.3, 0.3))), 1)
        elif kind == "humidity":
            entity.value = round(min(95.0, max(20.0, entity.value + rng.uniform(-1, 1))), 1)
        elif kind == "power":
            entity.value = round(max(0.0, 500 + 400 * math.cos(self.last_us / 17e6) + rng.uniform(-50, 50)), 1)
        elif kind == "energy":
            entity.value = round(entity.value + rng.uniform(0.001, 0.02), 3)
        elif kind == "illuminance":
            entity.value = float(max(0, int(entity.value + rng.randint(-40, 40))))
        elif kind == "counter":
            entity.value += 1.0
        elif kind in ("motion", "door", "switch"):
            return ("on" if entity.state == "off" else "off"), None
        elif kind == "light":
            return self._light(entity)
        elif kind == "climate":
            attrs = dict(entity.attributes)
            attrs["current_temperature"] = round(min(26.0, max(16.0, attrs["current_temperature"]
                                                              + rng.uniform(-0.2, 0.2))), 1)
            return ("heat" if rng.random() < 0.9 else "off"), attrs
        elif kind == "mode":
            return rng.choice(["eco", "comfort", "boost", "off"]), None
        elif kind == "weather":
            attrs = dict(entity.attributes)
            attrs["temperature"] = round(attrs["temperature"] + rng.uniform(-0.3, 0.3), 1)
            attrs["humidity"] = min(100, max(10, attrs["humidity"] + rng.randint(-2, 2)))
            condition = entity.state if rng.random() < 0.9 else rng.choice(
                ["sunny", "cloudy", "partlycloudy", "rainy", "fog"])
            return condition, attrs
        return str(entity.value), None

    def _light(self, entity: Entity) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        attrs = dict(entity.attributes)
        if entity.state == "off" or rng.random() < 0.6:
            brightness = rng.randint(1, 255)
            kelvin = rng.randint(2000, 6500)
            hue, sat = round(rng.uniform(0, 360), 3), round(rng.uniform(0, 100), 3)
            attrs.update({"color_mode": "color_temp", "brightness": brightness, "color_temp_kelvin": kelvin,
                          "hs_color": [hue, sat], "rgb_color": [255, rng.randint(150, 255), rng.randint(100, 255)],
                          "xy_color": [round(rng.uniform(0.3, 0.5), 3), round(rng.uniform(0.3, 0.4), 3)],
                          "effect": rng.choice(["none", "rainbow"])})
            return "on", attrs
        attrs.update({"color_mode": None, "brightness": None, "color_temp_kelvin": None, "hs_color": None,
                      "rgb_color": None, "xy_color": None, "effect": None})
        return "off", attrs

    # ------------------------------------------------------------------ the recorder

    def history(self, entity_ids: list[str], start_us: int, end_us: int | None, *, include_start: bool,
                significant_only: bool, minimal: bool, no_attributes: bool) -> dict[str, list[dict[str, Any]]]:
        """``history/history_during_period`` from memory, in HA's compressed format (bounds exclusive)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for entity_id in entity_ids:
            entity = self.entities.get(entity_id)
            if entity is None:
                continue
            rows: list[dict[str, Any]] = []
            hist = entity.history
            # The recorder answers from an index on last_updated; a scan from the first row would make a
            # busy simulated home stall (and fire in bursts) while it answers a backfill.
            first = bisect.bisect_right(hist.updated, start_us)
            last_before = hist.row(first - 1) if first else None
            previous_state = last_before[2] if last_before else None
            for index in range(first, len(hist)):
                lu = hist.updated[index]
                if end_us is not None and lu >= end_us:
                    break
                state = hist.states[index]
                if significant_only and state == previous_state and entity.domain not in ("climate", "weather"):
                    continue
                previous_state = state
                rows.append(self._row(lu, hist.changed[index], state, hist.attributes_at(index),
                                      first=not rows and last_before is None,
                                      minimal=minimal, no_attributes=no_attributes))
            if include_start and last_before is not None:
                _, lc, state, attrs = last_before
                rows.insert(0, self._row(start_us, min(lc, start_us), state, attrs, first=True, minimal=minimal,
                                         no_attributes=no_attributes))
            if rows:
                out[entity_id] = rows
        return out

    @staticmethod
    def _row(lu: int, lc: int, state: str, attrs: dict[str, Any], *, first: bool, minimal: bool,
             no_attributes: bool) -> dict[str, Any]:
        row: dict[str, Any] = {"s": state}
        if not no_attributes and (first or not minimal):
            row["a"] = attrs
        row["lu"] = lu / 1e6
        if lc != lu and not minimal:
            row["lc"] = lc / 1e6
        return row

    def trim_history(self, keep_s: float) -> None:
        """Forget states older than ``keep_s`` seconds (like the recorder's purge), keeping the latest."""
        cutoff = self.now_us() - int(keep_s * 1_000_000)
        for entity in self._order:
            hist = entity.history
            if len(hist) > 1 and hist.updated[0] < cutoff:
                hist.drop_before(min(bisect.bisect_left(hist.updated, cutoff), len(hist) - 1))

    def iter_entities(self) -> Iterator[Entity]:
        yield from self._order
        yield from self._created

    def create(self, entity_id: str) -> Entity:
        """A new entity, as ``POST /api/states/<entity_id>`` makes one in HA; it has no state yet."""
        name = entity_id.partition(".")[2].replace("_", " ").title()
        entity = Entity(entity_id, "custom", name, None, None, "api", "", {})
        self.entities[entity_id] = entity
        self._created.append(entity)
        return entity

    # ------------------------------------------------------------------ registries, in HA's shapes

    def entity_registry(self) -> list[dict[str, Any]]:
        return [{
            "area_id": e.area_id, "categories": {}, "config_entry_id": "01SIMCONFIGENTRY0000000000",
            "config_subentry_id": None, "created_at": self.created, "device_id": e.device_id, "disabled_by": None,
            "entity_category": None, "entity_id": e.entity_id, "has_entity_name": False, "hidden_by": None,
            "icon": None, "id": hashlib.md5(e.entity_id.encode()).hexdigest(), "labels": e.labels,
            "modified_at": self.created, "name": None, "options": {"conversation": {"should_expose": False}},
            "original_name": e.name, "platform": e.platform, "translation_key": None, "unique_id": e.entity_id,
        } for e in self._order]

    def device_registry(self) -> list[dict[str, Any]]:
        return [{
            "area_id": d["area_id"], "configuration_url": None, "config_entries": ["01SIMCONFIGENTRY0000000000"],
            "config_entries_subentries": {"01SIMCONFIGENTRY0000000000": [None]}, "connections": [],
            "created_at": d["created_at"], "disabled_by": None, "entry_type": None, "hw_version": None,
            "id": d["id"], "identifiers": [["demo", d["id"]]], "labels": [], "manufacturer": d["manufacturer"],
            "model": d["model"], "model_id": None, "modified_at": d["created_at"], "name_by_user": None,
            "name": d["name"], "primary_config_entry": "01SIMCONFIGENTRY0000000000", "serial_number": None,
            "sw_version": None, "via_device_id": None,
        } for d in self.devices]

    def area_registry(self) -> list[dict[str, Any]]:
        return [{
            "aliases": [], "area_id": area_id, "floor_id": floor, "humidity_entity_id": None, "icon": None,
            "labels": [], "name": name or area_id.title(), "picture": None, "temperature_entity_id": None,
            "created_at": self.created, "modified_at": self.created,
        } for area_id, name, floor in AREAS]

    def floor_registry(self) -> list[dict[str, Any]]:
        return [{"aliases": [], "created_at": self.created, "floor_id": fid, "icon": None, "level": level,
                 "modified_at": self.created, "name": name} for fid, name, level in FLOORS]

    def label_registry(self) -> list[dict[str, Any]]:
        return [{"color": None, "created_at": self.created, "description": None, "icon": None, "label_id": lid,
                 "modified_at": self.created, "name": name} for lid, name in LABELS]
