"""What Home Assistant's registries say about each entity: area, floor, device, integration, labels.

Where the cache lives: in enrichment, one snapshot per home. Ingestion fetches the registries (entity,
device, area, floor, label) and HA's configuration when it connects and again after every
``*_registry_updated`` event, and PUTs them to enrichment's ``/registry``. Enrichment keeps the latest
snapshot of each home in memory and in ``DATA_DIR/registry/<home>.json``, so it enriches from its first
request after a restart, and events POSTed straight to ``/events`` are enriched the same way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EntityInfo:
    area: str = ""
    floor: str = ""
    device: str = ""
    manufacturer: str = ""
    model: str = ""
    platform: str = ""
    labels: str = ""  # label names, sorted, comma-separated
    name: str = ""  # the registry's name for the entity (user-set, else original)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Registries of one home, reduced to what enrichment writes. Immutable: replaced whole."""

    entities: Mapping[str, EntityInfo] = field(default_factory=dict)
    time_zone: str = ""
    devices: int = 0
    areas: int = 0
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # Enrichment's memo of the sorted tags of each (entity, device class, unit, name, home) it wrote: they change
    # only with the registry, that is with the snapshot, so the memo lives and goes with it.
    tags_memo: dict[tuple[str, str, str, str, str], tuple[tuple[str, str], ...]] = field(
        default_factory=dict, compare=False, repr=False)

    @property
    def tz(self) -> ZoneInfo | None:
        return _zone(self.time_zone)

    @classmethod
    def from_lists(cls, payload: Mapping[str, Any]) -> Snapshot:
        """Build from HA's ``config/*_registry/list`` results (the ``result`` lists) and ``time_zone``."""
        floors = {f.get("floor_id"): _str(f.get("name")) for f in _dicts(payload.get("floors"))}
        labels = {lb.get("label_id"): _str(lb.get("name")) for lb in _dicts(payload.get("labels"))}
        areas: dict[Any, tuple[str, str]] = {}
        for area in _dicts(payload.get("areas")):
            areas[area.get("area_id")] = (_str(area.get("name")), floors.get(area.get("floor_id"), ""))
        devices: dict[Any, dict[str, str]] = {}
        for device in _dicts(payload.get("devices")):
            devices[device.get("id")] = {
                "name": _str(device.get("name_by_user")) or _str(device.get("name")),
                "manufacturer": _str(device.get("manufacturer")),
                "model": _str(device.get("model")),
                "area_id": _str(device.get("area_id")),
            }
        entities: dict[str, EntityInfo] = {}
        for entry in _dicts(payload.get("entities")):
            entity_id = entry.get("entity_id")
            if not isinstance(entity_id, str):
                continue
            device = devices.get(entry.get("device_id"), {})
            # HA's rule: an entity's own area, else its device's.
            area_name, floor_name = areas.get(entry.get("area_id") or device.get("area_id"), ("", ""))
            label_ids: list[Any] = entry["labels"] if isinstance(entry.get("labels"), list) else []
            entities[entity_id] = EntityInfo(
                area=area_name,
                floor=floor_name,
                device=device.get("name", ""),
                manufacturer=device.get("manufacturer", ""),
                model=device.get("model", ""),
                platform=_str(entry.get("platform")),
                labels=",".join(sorted(labels.get(i, str(i)) for i in label_ids)),
                name=_str(entry.get("name")) or _str(entry.get("original_name")),
            )
        time_zone = _str(payload.get("time_zone"))
        if time_zone and _zone(time_zone) is None:
            raise ValueError(f"time_zone: unknown time zone {time_zone!r}")
        return cls(entities, time_zone, len(devices), len(areas), payload)

    def get(self, entity_id: str) -> EntityInfo | None:
        return self.entities.get(entity_id)


def _dicts(value: Any) -> Iterable[Mapping[str, Any]]:
    if not isinstance(value, list):
        return ()
    return (item for item in value if isinstance(item, dict))


_zones: dict[str, ZoneInfo | None] = {}


def _zone(name: str) -> ZoneInfo | None:
    if not name:
        return None
    if name not in _zones:
        try:
            _zones[name] = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            _zones[name] = None
    return _zones[name]


EMPTY = Snapshot()


class RegistryCache:
    """The latest snapshot of each home, persisted under ``directory``."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._homes: dict[str, Snapshot] = {}
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            for path in sorted(directory.glob("*.json")):
                try:
                    self._homes[path.stem] = Snapshot.from_lists(orjson.loads(path.read_bytes()))
                except (OSError, ValueError) as exc:
                    log.warning("ignoring unreadable registry snapshot", extra={"path": str(path), "error": str(exc)})

    @staticmethod
    def _key(home_id: str) -> str:
        return home_id or "_default"

    def get(self, home_id: str) -> Snapshot:
        return self._homes.get(self._key(home_id), EMPTY)

    def put(self, home_id: str, payload: Mapping[str, Any]) -> Snapshot:
        """Replace a home's snapshot (raises ValueError when the payload is unusable)."""
        snapshot = Snapshot.from_lists(payload)
        key = self._key(home_id)
        if self.directory is not None:
            target = self.directory / f"{key}.json"
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps(dict(payload)))
            os.replace(tmp, target)
        self._homes[key] = snapshot
        return snapshot

    def homes(self) -> dict[str, Snapshot]:
        return dict(self._homes)
