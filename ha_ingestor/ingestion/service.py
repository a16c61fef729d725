"""websocket-ingestion: HA → (filter) → durable outbox → forwarder → hop; backfill for every gap.

Tasks, all owned by one TaskGroup:

* the connection loop: connect, authenticate, subscribe, then ``get_states`` (in that order, so no
  event falls between them), ``get_config`` and the registries; HA's ``ping`` every 20 s; reconnect
  with capped, jittered backoff. ``auth_invalid`` ends the service (fatal, see ha_client).
* the outbox writer: group-commits whatever the reader queued while the last commit ran, and moves the
  watermark with it.
* the forwarder (forwarder.py) and, after each reconnect, backfill of the pending gaps (backfill.py).

Bounded: the reader's queue holds at most ``intake_limit`` events (at the limit the reader waits, and HA
holds the rest until its own limit disconnects us — then backfill recovers the gap); the outbox holds
``OUTBOX_MAX_EVENTS``: at that limit ingestion closes the connection deliberately (recording a gap),
and reconnects when the outbox has drained below 90 %.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import aiohttp

from ..errors import AuthInvalid, CommandFailed, ConnectionLost, HopError
from ..hop.base import Hop
from ..metrics import Registry, watch_loop_lag
from ..model import iso_from_us, to_us
from .backfill import Backfiller
from .filter import EventFilter, FilterRules
from .forwarder import Forwarder
from .ha_client import HaConnection, Incoming, websocket_url
from .outbox import Gap, Outbox

log = logging.getLogger(__name__)

T = TypeVar("T")

# At a clean stop: how long HA gets to confirm the end of the subscriptions (see HaConnection.unsubscribe_all).
UNSUBSCRIBE_TIMEOUT_S = 2.0

REGISTRY_EVENTS = frozenset({
    "entity_registry_updated", "device_registry_updated", "area_registry_updated",
    "floor_registry_updated", "label_registry_updated", "core_config_updated",
})
REGISTRY_COMMANDS = {
    "entities": "config/entity_registry/list",
    "devices": "config/device_registry/list",
    "areas": "config/area_registry/list",
    "floors": "config/floor_registry/list",
    "labels": "config/label_registry/list",
}


@dataclass(frozen=True, slots=True)
class IngestionConfig:
    ha_url: str
    ha_token: str
    event_types: tuple[str, ...] = ()
    home_id: str = ""
    filter: FilterRules = FilterRules()
    batch_max_events: int = 5000
    batch_max_delay: float = 0.005
    max_in_flight: int = 3
    backfill: bool = True
    backfill_delay: float = 6.0
    backfill_max_hours: float = 240.0
    ping_interval: float = 20.0
    ping_timeout: float = 10.0
    backoff_base: float = 1.0
    # Subscribed again within 10 s of HA coming back: at most 8 s to the next attempt, which leaves 2 s for the
    # handshake, subscription and get_states. An attempt costs HA one cheap WebSocket handshake.
    backoff_cap: float = 8.0
    intake_limit: int = 100_000
    writer_batch: int = 5000
    registry_debounce: float = 2.0


def _time_us(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return to_us(moment) if moment.tzinfo is not None else None


class Ingestion:
    def __init__(self, config: IngestionConfig, outbox: Outbox, hop: Hop, metrics: Registry) -> None:
        self.config = config
        self.outbox = outbox
        self.hop = hop
        self.metrics = metrics
        self.filter = EventFilter(config.filter)
        self.forwarder = Forwarder(outbox, hop, metrics, home_id=config.home_id,
                                   max_events=config.batch_max_events, max_delay=config.batch_max_delay,
                                   max_in_flight=config.max_in_flight)
        self.backfiller = Backfiller(outbox, self.filter, metrics, max_hours=config.backfill_max_hours,
                                     wait_room=self._wait_backfill_room, on_appended=self.forwarder.notify)
        self.state = "starting"
        self.reason = "starting"
        self.connected_since = 0.0
        self.ha_version = ""
        self.subscribed_to: list[str] = []
        self.token_scope = ""  # "admin", or why only some events are captured
        # Every entity seen in get_states, kept across restarts: backfill asks for all of them, so an entity
        # removed during a gap still has its last changes recovered.
        self.entity_ids: set[str] = {e for e in (outbox.get_meta("entity_ids") or "").split(",") if e}
        self.last_event_time = 0.0
        self.last_event_received = 0.0
        self._intake: list[bytes] = []
        self._intake_times: list[Any] = []
        self._flush_lock = asyncio.Lock()
        self._intake_ready = asyncio.Event()
        self._intake_room = asyncio.Event()
        self._intake_room.set()
        self._outbox_room = asyncio.Event()
        self._outbox_room.set()
        self._registry_dirty = asyncio.Event()
        self._backfill_requested = asyncio.Event()
        self._conn: HaConnection | None = None
        self._stopping = False
        self.outbox_problem = ""  # why the outbox cannot be written (disk full, I/O error), for /health
        self._received = metrics.counter("events_received", "Events received from Home Assistant")
        self._filtered = metrics.counter("events_filtered", "Events dropped by the include/exclude rules")
        self._reconnects = metrics.counter("ha_reconnects", "Connections to HA after the first")
        self._connections = 0
        metrics.gauge("ha_connected", "1 while authenticated and subscribed",
                      read=lambda: 1.0 if self.state == "subscribed" else 0.0)
        metrics.gauge("intake_events", "Events received, not yet in the outbox", read=lambda: len(self._intake))

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Run until cancelled; raises AuthInvalid when HA rejects the token."""
        await self._startup_gap()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._writer(), name="outbox-writer")
                tasks.create_task(self.forwarder.run(), name="forwarder")
                tasks.create_task(self._connection_loop(), name="ha-connection")
                tasks.create_task(watch_loop_lag(self.metrics), name="loop-lag")
        except* AuthInvalid as group:
            raise group.exceptions[0] from None

    async def stop(self, deadline: float = 10.0) -> None:
        """Graceful stop: stop reading, commit what was received, try to forward the outbox in time."""
        self._stopping = True
        conn = self._conn  # the connection loop may let go of it meanwhile
        if conn is not None:
            await conn.unsubscribe_all(UNSUBSCRIBE_TIMEOUT_S)
            await conn.close()
        try:
            await self._flush_intake(force=True)
        except sqlite3.Error as exc:  # the outbox cannot be written (see _durably): nothing more to do here
            log.error("stopping with events not committed to the outbox (HA's recorder has their states)",
                      extra={"events": len(self._intake), "error": str(exc)})
        end = time.monotonic() + deadline
        while self.outbox.count and time.monotonic() < end and not self.forwarder.problem:
            await asyncio.sleep(0.05)

    async def _startup_gap(self) -> None:
        watermark = self.outbox.watermark_us
        if watermark is None:
            return
        if not await self.outbox.gaps("open"):
            await self._durably("record the restart's gap", lambda: self.outbox.open_gap(watermark,
                                                                                         "ingestion restarted"))

    async def _durably(self, what: str, write: Callable[[], Awaitable[T]]) -> T:
        """An outbox write that must happen: while SQLite fails (disk full, I/O error, read-only file) it is
        retried with backoff and /health says why; nothing it was to keep is dropped meanwhile."""
        delay = 0.5
        while True:
            try:
                result = await write()
            except sqlite3.Error as exc:
                if self._stopping:
                    raise  # a stop must not wait for a disk with room
                if not self.outbox_problem:
                    log.error("cannot write the outbox; retrying (events wait in memory, HA's recorder covers "
                              "what does not fit)", extra={"action": what, "error": str(exc)})
                self.outbox_problem = f"cannot write the outbox ({what}): {exc}"
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(5.0, delay * 2)
                continue
            if self.outbox_problem:
                log.info("outbox writable again", extra={"after": self.outbox_problem})
                self.outbox_problem = ""
            return result

    # ------------------------------------------------------------------ intake → outbox

    def _on_event(self, event: Incoming) -> Awaitable[None] | None:
        """Called by the reader for every event: must be quick, never loses the event."""
        self._received.inc()
        if not self.filter.accepts_parts(event.event_type, event.entity_id):
            self._filtered.inc()
            return None
        if event.event_type in REGISTRY_EVENTS:
            self._registry_dirty.set()
        self._intake.append(event.raw)  # stored as HA sent it: no decode-and-encode round trip
        self._intake_times.append(event.time_fired)
        self.last_event_received = time.time()
        self._intake_ready.set()
        if len(self._intake) >= self.config.intake_limit:
            self._intake_room.clear()
            return self._wait_intake_room()
        return None

    async def _wait_intake_room(self) -> None:
        await self._intake_room.wait()

    async def _writer(self) -> None:
        while True:
            await self._intake_ready.wait()
            await self._flush_intake()

    async def _flush_intake(self, force: bool = False) -> None:
        """Commit the intake to the outbox; ``force`` (at shutdown) may exceed the outbox bound."""
        async with self._flush_lock:  # one commit at a time keeps the outbox in arrival order
            while self._intake:
                if self.outbox.full and not force:
                    await self._wait_outbox_room()
                batch = self._intake[: self.config.writer_batch]
                watermark = _time_us(self._intake_times[len(batch) - 1])
                # Out of the intake only once committed: a failed commit is retried (see _durably).
                await self._durably("append events", functools.partial(self.outbox.append, batch, watermark))
                del self._intake[: len(batch)]
                del self._intake_times[: len(batch)]
                if watermark is not None:
                    self.last_event_time = max(self.last_event_time, watermark / 1e6)
                self.forwarder.notify()
                if len(self._intake) < self.config.intake_limit:
                    self._intake_room.set()
            self._intake_ready.clear()

    async def _wait_outbox_room(self) -> None:
        """When the outbox is full, wait until it drained below 90 % of its limit."""
        if not self.outbox.full:
            return
        low = int(self.outbox.max_events * 0.9)
        self._outbox_room.clear()
        while self.outbox.count > low and not self._stopping:
            await asyncio.sleep(0.1)
        self._outbox_room.set()

    async def _wait_backfill_room(self) -> None:
        """Backfill appends only while the outbox is at most half full (the rest is the live stream's)."""
        while self.outbox.count > self.outbox.max_events // 2 and not self._stopping:
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------------ connection

    async def _connection_loop(self) -> None:
        attempt = 0
        url = websocket_url(self.config.ha_url)
        async with aiohttp.ClientSession() as session:
            while not self._stopping:
                if self.outbox.full:
                    self._set_state("paused", f"outbox full ({self.outbox.count} events): waiting for enrichment")
                    await self._wait_outbox_room()
                    continue
                self._set_state("connecting", f"connecting to {self.config.ha_url}")
                try:
                    conn = await HaConnection.open(session, url, self.config.ha_token)
                except AuthInvalid as exc:
                    self._set_state("auth_invalid", str(exc))
                    log.error("Home Assistant rejected HA_TOKEN; not retrying (every failed login counts toward "
                              "HA's IP ban). Create a new long-lived access token and restart.",
                              extra={"ha_url": self.config.ha_url})
                    raise
                except ConnectionLost as exc:
                    attempt += 1
                    await self._backoff(attempt, str(exc))
                    continue
                if self._stopping:  # stop() came while connecting: do not subscribe
                    await conn.close()
                    break
                self._conn = conn
                self._connections += 1
                if self._connections > 1:
                    self._reconnects.inc()
                reason = "connection closed"
                lived = time.monotonic()
                try:
                    await self._session(conn)
                except* (ConnectionLost, CommandFailed) as group:
                    reason = str(group.exceptions[0])
                except* _OutboxFull:
                    reason = "outbox full"
                finally:
                    self._conn = None
                    await conn.close()
                await self._on_disconnect(reason)
                if time.monotonic() - lived > 30:
                    attempt = 0
                attempt += 1
                if not self._stopping and reason != "outbox full":
                    await self._backoff(attempt, reason)

    async def _backoff(self, attempt: int, reason: str) -> None:
        delay = min(self.config.backoff_cap, self.config.backoff_base * 2 ** (attempt - 1))
        delay *= random.uniform(0.5, 1.0)
        self._set_state("reconnecting", f"{reason}; reconnecting in {delay:.1f} s")
        log.warning("reconnecting to Home Assistant", extra={"reason": reason, "delay_s": round(delay, 2),
                                                              "attempt": attempt})
        await asyncio.sleep(delay)

    async def _on_disconnect(self, reason: str) -> None:
        # State and gap first: flushing the intake may wait for outbox room, and /health must say why meanwhile.
        if reason == "outbox full":
            self._set_state("paused", f"outbox full ({self.outbox.count} events): waiting for enrichment")
        else:
            self._set_state("disconnected", reason)
        if self._stopping:
            log.info("disconnected from Home Assistant: stopping")
        else:
            log.warning("disconnected from Home Assistant", extra={"reason": reason})
        watermark = self.outbox.watermark_us
        if watermark is not None and not await self.outbox.gaps("open"):
            await self._durably("record a gap", lambda: self.outbox.open_gap(watermark, reason))
        await self._flush_intake()

    async def _session(self, conn: HaConnection) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(conn.read_forever(), name="ha-reader")
            await conn.call({"type": "supported_features", "features": {"coalesce_messages": 1}})
            await self._subscribe(conn)
            subscribed_us = int(time.time() * 1_000_000)
            states = await conn.call({"type": "get_states"}, timeout=120.0)
            self.entity_ids |= {s["entity_id"] for s in states if isinstance(s, dict) and "entity_id" in s}
            await self.outbox.set_meta("entity_ids", ",".join(sorted(self.entity_ids)))
            await self.outbox.close_open_gaps(subscribed_us)
            await self.outbox.start_watermark(subscribed_us)
            self.ha_version = conn.ha_version
            self.connected_since = time.time()
            self._set_state("subscribed", "")
            log.info("subscribed to Home Assistant", extra={
                "ha_version": conn.ha_version, "event_types": ",".join(self.subscribed_to) or "all",
                "entities": len(states)})
            tasks.create_task(self._pinger(conn), name="ha-ping")
            tasks.create_task(self._registries(conn), name="ha-registries")
            tasks.create_task(self._outbox_guard(), name="outbox-guard")
            if self.config.backfill:
                tasks.create_task(self._backfill(conn), name="backfill")
            tasks.create_task(self._backfill_on_request(conn), name="backfill-requests")

    async def _subscribe(self, conn: HaConnection) -> None:
        types = list(self.config.event_types)
        self.subscribed_to = []
        if not types:
            try:
                await conn.subscribe({"type": "subscribe_events"}, self._on_event)
                self.token_scope = "admin"
                return
            except CommandFailed as exc:
                if exc.code != "unauthorized":
                    raise
                # A non-admin token may only subscribe to state_changed and a few registry events.
                log.warning("token is not an admin's: subscribing to state_changed only "
                            "(and registry updates); other events are not captured")
                types = ["state_changed"]
                self.token_scope = "non-admin: state_changed only"
        for event_type in dict.fromkeys([*types, *REGISTRY_EVENTS - {"core_config_updated"}]):
            handler = self._on_event if event_type in types else self._on_registry_event
            try:
                await conn.subscribe({"type": "subscribe_events", "event_type": event_type}, handler)
            except CommandFailed as exc:
                if event_type in types:
                    raise
                log.info("cannot follow registry updates", extra={"event_type": event_type, "error": exc.code})
                continue
            if event_type in types:
                self.subscribed_to.append(event_type)

    def _on_registry_event(self, event: Incoming) -> None:
        self._registry_dirty.set()

    async def _pinger(self, conn: HaConnection) -> None:
        while True:
            await asyncio.sleep(self.config.ping_interval)
            try:
                await conn.ping(self.config.ping_timeout)
            except ConnectionLost:
                log.warning("no pong from Home Assistant: connection is dead, closing it")
                await conn.close()
                raise

    async def _outbox_guard(self) -> None:
        while not self.outbox.full:
            await asyncio.sleep(0.2)
        log.warning("outbox full: disconnecting from Home Assistant until enrichment catches up "
                    "(backfill recovers the gap)", extra={"outbox_events": self.outbox.count})
        raise _OutboxFull()

    async def _backfill(self, conn: HaConnection) -> None:
        pending = await self.outbox.gaps("pending")
        if not pending:
            return
        # HA's recorder commits every few seconds (5 s by default): wait so the gap's end is in its database.
        await asyncio.sleep(self.config.backfill_delay)
        await self.backfiller.fill_pending(conn.call, sorted(self.entity_ids))

    async def request_backfill(self, start_us: int, end_us: int) -> Gap:
        """A window a user asks to be filled from HA's recorder (states found missing, an ingestion that
        started on an empty DATA_DIR): recorded as a pending gap, filled now when connected, else at the next
        connection. What is already stored is only written again (points are idempotent)."""
        gap = await self.outbox.request_gap(start_us, end_us, "requested")
        log.info("backfill requested", extra={"gap": gap.id, "from": iso_from_us(start_us), "to": iso_from_us(end_us)})
        self._backfill_requested.set()
        return gap

    async def _backfill_on_request(self, conn: HaConnection) -> None:
        while True:
            await self._backfill_requested.wait()
            self._backfill_requested.clear()
            await self.backfiller.fill_pending(conn.call, sorted(self.entity_ids))

    # ------------------------------------------------------------------ registries

    async def _registries(self, conn: HaConnection) -> None:
        """Send the registries now, and again (debounced) after every registry update event."""
        while True:
            self._registry_dirty.clear()
            await self._push_registry(await self._fetch_registries(conn))
            await self._registry_dirty.wait()
            await asyncio.sleep(self.config.registry_debounce)

    async def _fetch_registries(self, conn: HaConnection) -> dict[str, Any]:
        payload: dict[str, Any] = {}
        try:
            config = await conn.call({"type": "get_config"})
            payload["time_zone"] = config.get("time_zone", "") if isinstance(config, dict) else ""
        except CommandFailed as exc:
            log.info("get_config failed", extra={"error": str(exc)})
        for key, command in REGISTRY_COMMANDS.items():
            try:
                payload[key] = await conn.call({"type": command}, timeout=60.0)
            except CommandFailed as exc:
                log.info("registry not available", extra={"registry": key, "error": exc.code})
                payload[key] = []
        return payload

    async def _push_registry(self, payload: dict[str, Any]) -> None:
        delay = 0.5
        while True:
            try:
                await self.hop.put_registry(self.config.home_id, payload)
                log.info("registries sent to enrichment", extra={"entities": len(payload.get("entities") or [])})
                return
            except HopError as exc:
                log.warning("cannot send registries to enrichment yet", extra={"reason": str(exc)})
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(30.0, delay * 2)

    # ------------------------------------------------------------------ status

    def _set_state(self, state: str, reason: str) -> None:
        self.state = state
        self.reason = reason

    @property
    def healthy(self) -> bool:
        return self.state == "subscribed" and not self.outbox_problem

    def status(self) -> dict[str, Any]:
        return {
            "ha": {"state": self.state, "reason": self.reason, "url": self.config.ha_url,
                   "ha_version": self.ha_version, "connected_since": self.connected_since or None,
                   "subscribed_to": self.subscribed_to or ["all"], "token": self.token_scope or None,
                   "entities": len(self.entity_ids)},
            "outbox": {"events": self.outbox.count, "limit": self.outbox.max_events,
                       "rejected_events": self.outbox.rejected_count,
                       "watermark_us": self.outbox.watermark_us,
                       "problem": self.outbox_problem, "checkpoint_problem": self.outbox.db.checkpoint_problem},
            "intake": len(self._intake),
            "forwarder": {"problem": self.forwarder.problem, "last_forward": self.forwarder.last_forward or None},
            "backfill": {"running_gap": self.backfiller.running.id if self.backfiller.running else None},
            "last_event_time": self.last_event_time or None,
            "home_id": self.config.home_id,
        }


class _OutboxFull(Exception):
    """Raised inside a session to close the connection while the outbox is full."""
