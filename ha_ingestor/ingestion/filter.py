"""Which events to keep, with Home Assistant's include/exclude semantics, applied before the outbox.

Entity rules follow HA's ``entityfilter`` (the ``recorder``/``influxdb`` ``include``/``exclude`` keys):

1. no rules: keep everything;
2. only includes: keep an entity listed, or of an included domain, or matching an included glob;
3. only excludes: keep an entity unless listed, of an excluded domain, or matching an excluded glob;
4. domain or glob includes (with excludes): listed include → keep; listed exclude → drop; included glob
   → keep; excluded glob → drop; included domain → keep; otherwise drop;
5. domain or glob excludes and only entity includes: listed include → keep; excluded domain or glob →
   drop; listed exclude → drop; otherwise keep;
6. only entity lists: keep the listed includes.

Entity rules apply to every event whose ``data.entity_id`` is one entity (``state_changed``,
``automation_triggered``, …); ``EXCLUDE_EVENT_TYPES`` drops whole event types. Filtered events cost
nothing downstream: they never reach the outbox.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any


def _pattern(globs: Iterable[str]) -> re.Pattern[str] | None:
    parts = [fnmatch.translate(g) for g in sorted(set(globs)) if g]
    return re.compile("(?:" + "|".join(parts) + ")") if parts else None


@dataclass(frozen=True, slots=True)
class FilterRules:
    include_domains: tuple[str, ...] = ()
    include_entities: tuple[str, ...] = ()
    include_entity_globs: tuple[str, ...] = ()
    exclude_domains: tuple[str, ...] = ()
    exclude_entities: tuple[str, ...] = ()
    exclude_entity_globs: tuple[str, ...] = ()
    exclude_event_types: tuple[str, ...] = ()


def entity_filter(rules: FilterRules) -> Callable[[str], bool]:
    """A predicate on entity ids, with HA's six cases (see the module docstring)."""
    inc_e, exc_e = frozenset(rules.include_entities), frozenset(rules.exclude_entities)
    inc_d, exc_d = frozenset(rules.include_domains), frozenset(rules.exclude_domains)
    inc_g, exc_g = _pattern(rules.include_entity_globs), _pattern(rules.exclude_entity_globs)
    has_include = bool(inc_e or inc_d or inc_g)
    has_exclude = bool(exc_e or exc_d or exc_g)

    def domain(entity_id: str) -> str:
        return entity_id.partition(".")[0]

    def matches(pattern: re.Pattern[str] | None, entity_id: str) -> bool:
        return bool(pattern and pattern.match(entity_id))

    if not has_include and not has_exclude:
        return lambda entity_id: True
    if has_include and not has_exclude:
        def keep(entity_id: str) -> bool:
            return entity_id in inc_e or domain(entity_id) in inc_d or matches(inc_g, entity_id)
    elif has_exclude and not has_include:
        def keep(entity_id: str) -> bool:
            return not (entity_id in exc_e or domain(entity_id) in exc_d or matches(exc_g, entity_id))
    elif inc_d or inc_g:
        def keep(entity_id: str) -> bool:
            if entity_id in inc_e:
                return True
            if entity_id in exc_e:
                return False
            if matches(inc_g, entity_id):
                return True
            return domain(entity_id) in inc_d and not matches(exc_g, entity_id)
    elif exc_d or exc_g:
        def keep(entity_id: str) -> bool:
            if domain(entity_id) in exc_d or matches(exc_g, entity_id):
                return entity_id in inc_e
            return entity_id not in exc_e
    else:
        def keep(entity_id: str) -> bool:
            return entity_id in inc_e
    return lru_cache(maxsize=16384)(keep)


class EventFilter:
    """``accepts(event)`` on raw HA event dicts, as they come off the WebSocket."""

    def __init__(self, rules: FilterRules) -> None:
        self.rules = rules
        self._entity = entity_filter(rules)
        self._drop_types = frozenset(rules.exclude_event_types)
        self.active = rules != FilterRules()

    def accepts_parts(self, event_type: str, entity_id: Any) -> bool:
        """``accepts`` for an event known only by its type and ``data.entity_id`` (the reader's fast path)."""
        if not self.active:
            return True
        if event_type in self._drop_types:
            return False
        return self._entity(entity_id) if isinstance(entity_id, str) else True

    def accepts(self, event: dict[str, Any]) -> bool:
        if not self.active:
            return True
        if event.get("event_type") in self._drop_types:
            return False
        data = event.get("data")
        if isinstance(data, dict):
            entity_id = data.get("entity_id")
            if isinstance(entity_id, str):
                return self._entity(entity_id)
        return True
