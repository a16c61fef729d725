"""Gap backfill: what happened while the live stream was down, fetched from HA's recorder.

A gap runs from the watermark (the newest live event made durable) to the moment the new subscription
was live. Backfill asks ``history/history_during_period`` for it — all known entities, every change
(``significant_changes_only: false``), no start-time state — in windows that keep HA's replies small,
and turns consecutive states of an entity into ``state_changed`` events (``old_state`` = the previous
row). They enter the outbox like live events and yield the very points the live events would have:
a point's identity is its entity and ``last_updated``, so the overlap at both ends of a gap overwrites
instead of duplicating.

Limits (also in docs/OPERATIONS.md): only states can be recovered — ``call_service``,
``automation_triggered`` and custom events of the window are gone, and the gap is reported in /status;
entities the recorder excludes, and anything older than its ``purge_keep_days``, cannot be backfilled;
HA's recorder strips some attributes it does not record (e.g. a light's ``effect_list``), so a
backfilled point may hold fewer attribute fields than a live one; its context fields are empty.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..errors import CommandFailed
from ..metrics import Registry
from ..model import encode, iso_from_us, us_from_timestamp
from .filter import EventFilter
from .outbox import Gap, Outbox

log = logging.getLogger(__name__)

Call = Callable[[dict[str, Any], float], Awaitable[Any]]

OVERLAP_US = 1000  # HA's history bounds are strict on both ends: windows overlap by 1 ms
MIN_WINDOW_US, FIRST_WINDOW_US, MAX_WINDOW_US = 50_000, 250_000, 3_600_000_000
# Aim for replies of about this many states (~1 MB): turning a reply into events runs on the event loop that
# also reads the live stream, and HA drops a reader that falls 4,096 messages behind (0.2 s at 20,000/s).
TARGET_ROWS = 2_000
# A gap whose history command HA refused (e.g. while its history integration is not loaded yet) is tried
# again on the next connections; after this many refusals it is marked failed, with HA's error.
MAX_ATTEMPTS = 5


def _state(entity_id: str, row: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """A compressed history row → (last_updated µs, a full state object like a live event's)."""
    # Exactly the µs of the live event's last_updated, so that the backfilled point overwrites the live one.
    updated_us = us_from_timestamp(float(row["lu"]))
    changed_us = us_from_timestamp(float(row["lc"])) if row.get("lc") else updated_us
    updated = iso_from_us(updated_us)
    return updated_us, {
        "entity_id": entity_id,
        "state": str(row.get("s", "")),
        "attributes": row.get("a") or {},
        "last_changed": iso_from_us(changed_us),
        "last_reported": updated,
        "last_updated": updated,
        "context": None,
    }


def history_events(
    result: dict[str, list[dict[str, Any]]], previous: dict[str, tuple[int, dict[str, Any]]],
) -> list[dict[str, Any]]:
    """Turn one history reply into state_changed events; ``previous`` carries each entity's last state
    across windows (rows at or before it are the overlap and skipped)."""
    events: list[dict[str, Any]] = []
    for entity_id, rows in result.items():
        for row in rows:
            if not isinstance(row, dict) or "lu" not in row:
                continue
            updated_us, state = _state(entity_id, row)
            before = previous.get(entity_id)
            if before is not None and updated_us <= before[0]:
                continue
            events.append({
                "event_type": "state_changed",
                "data": {"entity_id": entity_id, "old_state": before[1] if before else None, "new_state": state},
                "origin": "BACKFILL",
                "time_fired": state["last_updated"],
                "context": None,
            })
            previous[entity_id] = (updated_us, state)
    events.sort(key=lambda e: e["time_fired"])
    return events


class Backfiller:
    def __init__(
        self, outbox: Outbox, event_filter: EventFilter, metrics: Registry, *, margin_s: float = 10.0,
        max_hours: float = 240.0, entity_chunk: int = 200, wait_room: Callable[[], Awaitable[None]] | None = None,
        on_appended: Callable[[], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.filter = event_filter
        self.margin_us = int(margin_s * 1_000_000)
        self.max_us = int(max_hours * 3600 * 1_000_000)
        self.entity_chunk = entity_chunk
        self.wait_room = wait_room
        self.on_appended = on_appended or (lambda: None)
        self.running: Gap | None = None
        self._one_at_a_time = asyncio.Lock()  # the connection's own backfill and one a user requested
        self._events = metrics.counter("events_backfilled", "state_changed events recovered from HA's recorder")
        self._gaps = metrics.counter("gaps_backfilled", "Gaps in the live stream that backfill filled")

    async def fill_pending(self, call: Call, entity_ids: Sequence[str]) -> None:
        """Fill every pending gap over this connection (``call`` sends a command), oldest first. One HA refuses
        stays pending for the next connection, up to MAX_ATTEMPTS times."""
        async with self._one_at_a_time:
            await self._fill_pending(call, entity_ids)

    async def _fill_pending(self, call: Call, entity_ids: Sequence[str]) -> None:
        after = 0
        while gaps := await self.outbox.gaps("pending", 100, after_id=after):
            for gap in gaps:
                after = gap.id
                self.running = gap
                try:
                    states = await self.fill(gap, call, entity_ids)
                except CommandFailed as exc:
                    given_up = await self.outbox.gap_failed(gap.id, str(exc), MAX_ATTEMPTS)
                    log.error("backfill failed" + ("; giving up on this gap" if given_up else
                                                   "; trying again on the next connection"),
                              extra={"gap": gap.id, "attempt": gap.attempts + 1, "error": str(exc)})
                    continue
                finally:
                    self.running = None
                await self.outbox.finish_gap(gap.id, "done", states)
                self._gaps.inc()
                log.info("gap backfilled", extra={
                    "gap": gap.id, "states": states, "seconds": round(((gap.end_us or 0) - gap.start_us) / 1e6, 1)})

    async def fill(self, gap: Gap, call: Call, entity_ids: Sequence[str]) -> int:
        end = (gap.end_us or int(time.time() * 1_000_000)) + self.margin_us
        # A gap cut short resumes a margin before its progress mark: the margin's rows give the first new
        # rows their old_state, and appending them again only overwrites identical points.
        begin = gap.start_us if gap.filled_us is None else gap.filled_us
        start = max(begin - self.margin_us, end - self.max_us)
        ids = sorted(set(entity_ids))
        previous: dict[str, tuple[int, dict[str, Any]]] = {}
        window = FIRST_WINDOW_US  # small: the home's rate is unknown; the next windows are sized from the replies
        total = gap.states
        cursor = start
        while cursor < end:
            upper = min(end, cursor + window)
            rows = 0
            for offset in range(0, len(ids), self.entity_chunk):
                result = await call({
                    "type": "history/history_during_period",
                    "start_time": iso_from_us(cursor - OVERLAP_US),
                    "end_time": iso_from_us(upper + OVERLAP_US),
                    "entity_ids": ids[offset : offset + self.entity_chunk],
                    "include_start_time_state": False,
                    "significant_changes_only": False,
                    "minimal_response": False,
                    "no_attributes": False,
                }, 120.0)
                if not isinstance(result, dict):
                    continue
                rows += sum(len(v) for v in result.values() if isinstance(v, list))
                # Off the event loop: a reply's thousands of states would hold up the reader of the live
                # stream; in a thread the reader still gets the interpreter every few milliseconds.
                bodies = await asyncio.to_thread(self._convert, result, previous)
                total += await self._append(bodies)
            cursor = upper
            await self.outbox.advance_gap(gap.id, upper, total)
            # Keep replies near TARGET_ROWS: a busy home gets short windows, a quiet one long ones (growing
            # at most 8× a step, so one burst in a quiet stretch does not make a huge reply).
            window = min(MAX_WINDOW_US, max(MIN_WINDOW_US, window * TARGET_ROWS // max(rows, TARGET_ROWS // 8)))
        return total

    def _convert(self, result: dict[str, Any], previous: dict[str, tuple[int, dict[str, Any]]]) -> list[bytes]:
        return [encode(e) for e in history_events(result, previous) if self.filter.accepts(e)]

    async def _append(self, bodies: list[bytes]) -> int:
        # Small chunks into at most half the outbox: the other half stays free for the live stream, so a
        # big gap never fills the outbox and forces the disconnect that would open the next gap.
        size = max(1, min(2000, self.outbox.max_events // 4))
        for offset in range(0, len(bodies), size):
            chunk = bodies[offset : offset + size]
            if self.wait_room is not None:
                await self.wait_room()
            await self.outbox.append(chunk)
            self._events.inc(len(chunk))
            self.on_appended()
            await asyncio.sleep(0)
        return len(bodies)
