"""The simulated Home Assistant's server: HA's WebSocket API and a slice of its REST API.

Speaks the protocol as HA 2025.4 does (tests compare its frames with real captures): ``auth_required`` /
``auth`` / ``auth_ok`` | ``auth_invalid``; ``supported_features`` with coalesced array frames;
``subscribe_events`` (all types for an admin token, HA's allow-list for a user token) and
``unsubscribe_events``; ``get_states``, ``get_config``, the registry lists; ``ping``; ``fire_event``;
``call_service``; ``history/history_during_period`` from its own memory. Like HA it drops a client that
lets 4096 messages pile up.

Besides HA's API it has ``/sim/*`` (same token) for tests: fire now, pause, drop every connection without
a close frame, and a report of what was fired.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from .home import Entity, Home, iso

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HA_VERSION = "2025.4.4"
MAX_PENDING = 4096
SLICE = 500  # events fired between two chances for the writers to send
# homeassistant.auth.permissions.events.SUBSCRIBE_ALLOWLIST: what a non-admin may subscribe to.
USER_ALLOWED_EVENTS = frozenset({
    "area_registry_updated", "component_loaded", "core_config_updated", "device_registry_updated",
    "entity_registry_updated", "repairs_issue_registry_updated", "lovelace_updated", "panels_updated",
    "recorder_5min_statistics_generated", "recorder_hourly_statistics_generated", "service_registered",
    "service_removed", "shopping_list_updated", "state_changed", "themes_updated", "label_registry_updated",
    "category_registry_updated", "floor_registry_updated",
})
SERVICES = {("light", "turn_on"), ("light", "turn_off"), ("light", "toggle"), ("switch", "turn_on"),
            ("switch", "turn_off"), ("switch", "toggle"), ("input_number", "set_value"),
            ("homeassistant", "turn_on"), ("homeassistant", "turn_off")}


def _result(msg_id: int, result: Any = None) -> bytes:
    return orjson.dumps({"id": msg_id, "type": "result", "success": True, "result": result})


def _error(msg_id: int, code: str, message: str) -> bytes:
    return orjson.dumps({"id": msg_id, "type": "result", "success": False,
                         "error": {"code": code, "message": message}})


class Connection:
    """One client: its subscriptions and its outgoing queue (coalesced into array frames when allowed)."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, max_pending: int) -> None:
        self.ws = ws
        self.request = request
        self.admin = False
        self.coalesce = False
        self.subscriptions: dict[int, str | None] = {}
        self.queue: list[bytes] = []
        self.wake = asyncio.Event()
        self.max_pending = max_pending
        self.dropped = False

    def send(self, message: bytes) -> None:
        if self.dropped:
            return
        self.queue.append(message)
        self.wake.set()
        if len(self.queue) >= self.max_pending:
            # HA: "Client unable to keep up with pending messages. Reached 4096 pending messages."
            log.warning("client unable to keep up with pending messages; closing it")
            self.dropped = True
            self.queue.clear()
            asyncio.get_running_loop().create_task(self.ws.close())

    async def writer(self) -> None:
        while not self.ws.closed:
            await self.wake.wait()
            self.wake.clear()
            while self.queue and not self.ws.closed:
                batch, self.queue = self.queue, []
                try:
                    if self.coalesce and len(batch) > 1:
                        await self.ws.send_frame(b"[" + b",".join(batch) + b"]", WSMsgType.TEXT)
                    else:
                        for message in batch:
                            await self.ws.send_frame(message, WSMsgType.TEXT)
                except (ConnectionError, RuntimeError):
                    return

    def abort(self) -> None:
        """Cut the TCP connection without a close frame (a dead network, a crashed HA)."""
        self.dropped = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()


class Simulator:
    def __init__(
        self, home: Home, token: str, *, user_token: str = "", rate: float = 10.0, count: int | None = None,
        mix: float = 0.1, events_log: Path | None = None, state_dir: Path | None = None,
        max_pending: int = MAX_PENDING, history_keep_s: float = 3 * 86400, report_to_stdout: bool = False,
    ) -> None:
        self.home = home
        self.token = token
        self.user_token = user_token
        self.rate = rate
        self.count = count
        self.mix = mix
        self.max_pending = max_pending
        self.history_keep_s = history_keep_s
        self.report_to_stdout = report_to_stdout
        self.connections: set[Connection] = set()
        self.fired = 0
        self.by_type: Counter[str] = Counter()
        self.first_us = 0
        self.last_us = 0
        self.paused_until = 0.0
        self.paused = False
        self.auth_failures = 0
        self.started = time.time()
        self.done = asyncio.Event()
        self._log = events_log.open("a", buffering=1 << 20) if events_log else None
        self._db: sqlite3.Connection | None = None
        self._rows: list[tuple[Any, ...]] = []
        if state_dir is not None:
            self._open_state(state_dir)
        self.app = web.Application(client_max_size=64 * 2**20)
        self.app.add_routes([
            web.get("/api/websocket", self.websocket),
            web.get("/api/", self.rest_root),
            web.get("/api/config", self.rest_config),
            web.get("/api/states", self.rest_states),
            web.get("/api/states/{entity_id}", self.rest_state),
            web.post("/api/states/{entity_id}", self.rest_set_state),
            web.post("/api/events/{event_type}", self.rest_fire_event),
            web.post("/api/services/{domain}/{service}", self.rest_call_service),
            web.get("/api/history/period/{start}", self.rest_history),
            web.get("/sim/report", self.sim_report),
            web.post("/sim/fire", self.sim_fire),
            web.post("/sim/pause", self.sim_pause),
            web.post("/sim/resume", self.sim_resume),
            web.post("/sim/drop", self.sim_drop),
        ])

    # ------------------------------------------------------------------ persistence (a restartable "recorder")

    def _open_state(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(state_dir / "simulator.sqlite", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS states (entity_id TEXT, lu INTEGER, lc INTEGER, s TEXT, a TEXT)")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        rows = self._db.execute("SELECT entity_id, lu, lc, s, a FROM states ORDER BY rowid").fetchall()
        for entity_id, lu, lc, state, attrs in rows:
            entity = self.home.entities.get(entity_id) or self.home.create(entity_id)
            if entity.history and entity.history.updated[0] > lu:
                entity.history.clear()  # the state built at start-up is newer than what was recorded
            self.home._commit(entity, lu, lc, state, orjson.loads(attrs))
            self.home.last_us = max(self.home.last_us, lu)
        seq = self._db.execute("SELECT value FROM meta WHERE key = 'fired'").fetchone()
        self.fired = int(seq[0]) if seq else 0
        if not rows:
            self._rows = [(e.entity_id, e.last_updated_us, e.last_changed_us, e.state,
                           orjson.dumps(e.attributes).decode()) for e in self.home.iter_entities()]

    def _record(self, entity: Entity) -> None:
        if self._db is not None:
            self._rows.append((entity.entity_id, entity.last_updated_us, entity.last_changed_us, entity.state,
                               orjson.dumps(entity.attributes).decode()))

    def flush_state(self) -> None:
        if self._db is None:
            return
        rows, self._rows = self._rows, []
        self._db.execute("BEGIN")
        self._db.executemany("INSERT INTO states VALUES (?, ?, ?, ?, ?)", rows)
        self._db.execute("INSERT INTO meta VALUES ('fired', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                         (str(self.fired),))
        self._db.execute("COMMIT")

    async def recorder(self, interval: float = 0.5) -> None:
        """Commit recorded states every ``interval`` seconds, like HA's recorder commit_interval."""
        while True:
            await asyncio.sleep(interval)
            self.flush_state()
            if self._log is not None:
                self._log.flush()
            self.home.trim_history(self.history_keep_s)

    def close(self) -> None:
        self.flush_state()
        if self._db is not None:
            self._db.close()
        if self._log is not None:
            self._log.close()

    # ------------------------------------------------------------------ firing

    def _broadcast(self, event_type: str, event_json: bytes) -> None:
        for conn in self.connections:
            for sub_id, wanted in conn.subscriptions.items():
                if wanted is None or wanted == event_type:
                    conn.send(b'{"id":%d,"type":"event","event":%s}' % (sub_id, event_json))

    def _note(self, event_type: str, entity_id: str, time_us: int) -> None:
        self.fired += 1
        self.by_type[event_type] += 1
        if not self.first_us:
            self.first_us = time_us
        self.last_us = time_us
        if self._log is not None:
            self._log.write(f"{self.fired}\t{event_type}\t{entity_id}\t{time_us}\n")

    def fire_state_change(self, entity: Entity | None = None, *, state: str | None = None,
                          attributes: dict[str, Any] | None = None, context: dict[str, Any] | None = None) -> None:
        entity, old, updated = self.home.change(entity, state=state, attributes=attributes)
        self._record(entity)
        ctx = orjson.dumps(context or {"id": entity.context_id, "parent_id": None, "user_id": None})
        # Assembled from the states' cached JSON: encoding each state once is what lets one core fire
        # tens of thousands of events a second.
        event = (b'{"event_type":"state_changed","data":{"entity_id":"' + entity.entity_id.encode()
                 + b'","old_state":' + old + b',"new_state":' + entity.state_json + b'},"origin":"LOCAL",'
                 + b'"time_fired":"' + iso(updated).encode() + b'","context":' + ctx + b"}")
        self._broadcast("state_changed", event)
        self._note("state_changed", entity.entity_id, updated)

    def fire_event(self, event_type: str, data: dict[str, Any], context: dict[str, Any] | None = None) -> int:
        us = self.home.now_us()
        event = {"event_type": event_type, "data": data, "origin": "LOCAL", "time_fired": iso(us),
                 "context": context or {"id": self.home.ulid(us), "parent_id": None, "user_id": None}}
        self._broadcast(event_type, orjson.dumps(event))
        entity_id = data.get("entity_id")
        self._note(event_type, entity_id if isinstance(entity_id, str) else "", us)
        return us

    def fire_next(self) -> None:
        """One event of the configured mix; a non-state event comes as HA's automation pair."""
        if self.mix > 0 and self.home.rng.random() < self.mix:
            if self.home.rng.random() < 0.5:
                entity = self.home.next_entity()
                automation = "automation.watch_" + entity.entity_id.split(".")[1]
                self.fire_event("automation_triggered", {"name": f"Watch {entity.name}", "entity_id": automation,
                                                         "source": "state of " + entity.entity_id})
            else:
                entity = self.home.next_entity()
                self.fire_event("call_service", {"domain": entity.domain, "service": "turn_on",
                                                 "service_data": {"entity_id": [entity.entity_id]}})
            return
        self.fire_state_change()

    async def fire_loop(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        base = self.fired
        tick = 0.005
        rate = self.rate
        while self.count is None or self.fired - base < self.count:
            if self.rate != rate:  # changed by /sim/resume {"rate": …}: the schedule restarts from now
                rate = self.rate
                start = loop.time() - (self.fired - base) / rate if rate > 0 else start
            if self.paused or time.time() < self.paused_until:
                await asyncio.sleep(tick)
                start = loop.time() - (self.fired - base) / self.rate if self.rate > 0 else start
                continue
            if self.rate > 0:
                due = int((loop.time() - start) * self.rate) - (self.fired - base)
            elif any(len(c.queue) > self.max_pending // 2 for c in self.connections):
                due = 0  # flat out means as fast as the subscribers read, not faster than HA would allow
            else:
                due = SLICE  # flat out: a slice, then let the writers run
            if self.count is not None:
                due = min(due, self.count - (self.fired - base))
            # Behind schedule (a slow reply, the OS), catch up in slices and let the writers run between
            # them: one burst of thousands would fill a subscriber's queue at once and drop it, which HA
            # does not do to a reader that keeps up.
            burst = max(0, min(due, SLICE))
            for _ in range(burst):
                self.fire_next()
            await asyncio.sleep(0 if burst == SLICE or (self.rate <= 0 and due) else tick)
        self.done.set()
        if self._log is not None:
            self._log.flush()
        if self.report_to_stdout:
            print(orjson.dumps({"report": self.report()}).decode(), flush=True)

    def report(self) -> dict[str, Any]:
        return {"fired": self.fired, "by_type": dict(self.by_type), "first_us": self.first_us or None,
                "last_us": self.last_us or None, "rate": self.rate, "count": self.count,
                "connections": len(self.connections), "auth_failures": self.auth_failures,
                "done": self.done.is_set(), "entities": len(self.home.entities)}

    # ------------------------------------------------------------------ WebSocket API

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=55, max_msg_size=16 * 2**20)
        await ws.prepare(request)
        conn = Connection(ws, request, self.max_pending)
        await ws.send_frame(orjson.dumps({"type": "auth_required", "ha_version": HA_VERSION}), WSMsgType.TEXT)
        try:
            msg = await ws.receive(timeout=10)
        except TimeoutError:
            await ws.close()
            return ws
        auth = _loads(msg.data) if msg.type == WSMsgType.TEXT else None
        token = auth.get("access_token") if isinstance(auth, dict) and auth.get("type") == "auth" else None
        if token and token == self.token:
            conn.admin = True
        elif not (token and self.user_token and token == self.user_token):
            self.auth_failures += 1
            await ws.send_frame(orjson.dumps({"type": "auth_invalid", "message": "Invalid access token or password"}),
                                WSMsgType.TEXT)
            await ws.close()
            return ws
        await ws.send_frame(orjson.dumps({"type": "auth_ok", "ha_version": HA_VERSION}), WSMsgType.TEXT)
        self.connections.add(conn)
        writer = asyncio.create_task(conn.writer())
        last_id = 0
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                payload = _loads(msg.data)
                for command in payload if isinstance(payload, list) else [payload]:
                    if not isinstance(command, dict) or not isinstance(command.get("id"), int):
                        conn.send(orjson.dumps({"type": "result", "success": False, "id": None, "error": {
                            "code": "invalid_format", "message": "Message incorrectly formatted."}}))
                        continue
                    if command["id"] <= last_id:
                        conn.send(_error(command["id"], "id_reuse", "Identifier values have to increase."))
                        continue
                    last_id = command["id"]
                    await self.command(conn, command)
        finally:
            self.connections.discard(conn)
            conn.wake.set()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        return ws

    async def command(self, conn: Connection, msg: dict[str, Any]) -> None:
        msg_id, kind = msg["id"], msg.get("type")
        home = self.home
        if kind == "supported_features":
            conn.coalesce = bool((msg.get("features") or {}).get("coalesce_messages"))
            conn.send(_result(msg_id))
        elif kind == "ping":
            conn.send(orjson.dumps({"id": msg_id, "type": "pong"}))
        elif kind == "subscribe_events":
            wanted = msg.get("event_type")
            if not conn.admin and wanted not in USER_ALLOWED_EVENTS:
                conn.send(_error(msg_id, "unauthorized", "Unauthorized"))
                return
            # Result first, then events: the subscription is live as soon as it is registered.
            conn.send(_result(msg_id))
            conn.subscriptions[msg_id] = wanted
        elif kind == "unsubscribe_events":
            if conn.subscriptions.pop(msg.get("subscription"), "missing") == "missing":  # type: ignore[arg-type]
                conn.send(_error(msg_id, "not_found", "Subscription not found."))
            else:
                conn.send(_result(msg_id))
        elif kind == "get_states":
            conn.send(b'{"id":%d,"type":"result","success":true,"result":[%s]}'
                      % (msg_id, b",".join(e.state_json for e in home.iter_entities())))
        elif kind == "get_config":
            conn.send(_result(msg_id, self.config()))
        elif kind == "config/entity_registry/list":
            conn.send(_result(msg_id, home.entity_registry()))
        elif kind == "config/device_registry/list":
            conn.send(_result(msg_id, home.device_registry()))
        elif kind == "config/area_registry/list":
            conn.send(_result(msg_id, home.area_registry()))
        elif kind == "config/floor_registry/list":
            conn.send(_result(msg_id, home.floor_registry()))
        elif kind == "config/label_registry/list":
            conn.send(_result(msg_id, home.label_registry()))
        elif kind == "fire_event":
            if not conn.admin:
                conn.send(_error(msg_id, "unauthorized", "Unauthorized"))
                return
            data = msg.get("event_data") or {}
            us = self.fire_event(str(msg.get("event_type")), data if isinstance(data, dict) else {})
            conn.send(_result(msg_id, {"context": {"id": home.ulid(us), "parent_id": None, "user_id": None}}))
        elif kind == "call_service":
            error = self.call_service(str(msg.get("domain")), str(msg.get("service")), msg.get("service_data") or {},
                                      msg.get("target") or {})
            conn.send(_error(msg_id, "not_found", error) if error else _result(msg_id, {"context": None}))
        elif kind == "history/history_during_period":
            conn.send(self.history_reply(msg_id, msg))
        else:
            conn.send(_error(msg_id, "unknown_command", "Unknown command."))

    def config(self) -> dict[str, Any]:
        return {
            "allowlist_external_dirs": [], "allowlist_external_urls": [], "components": ["api", "websocket_api",
            "history", "recorder", "demo"], "config_dir": "/config", "config_source": "storage", "country": "DE",
            "currency": "EUR", "debug": False, "elevation": 34, "external_url": None, "internal_url": None,
            "language": "en", "latitude": 52.52, "location_name": "Simulated Home", "longitude": 13.405,
            "radius": 100, "recovery_mode": False, "safe_mode": False, "state": "RUNNING",
            "time_zone": "Europe/Berlin", "unit_system": {"length": "km", "accumulated_precipitation": "mm",
            "area": "m²", "mass": "g", "pressure": "Pa", "temperature": "°C", "volume": "L", "wind_speed": "m/s"},
            "version": HA_VERSION, "whitelist_external_dirs": [],
        }

    def call_service(self, domain: str, service: str, data: Any, target: Any) -> str:
        if (domain, service) not in SERVICES:
            return f"Service {domain}.{service} not found."
        data = dict(data) if isinstance(data, dict) else {}
        targets = data.pop("entity_id", None) or (target.get("entity_id") if isinstance(target, dict) else None)
        ids = [targets] if isinstance(targets, str) else list(targets or [])
        context = {"id": self.home.ulid(self.home.now_us()), "parent_id": None, "user_id": None}
        self.fire_event("call_service", {"domain": domain, "service": service,
                                         "service_data": {**data, "entity_id": ids}}, context)
        for entity_id in ids:
            entity = self.home.entities.get(entity_id)
            if entity is None:
                continue
            attrs = dict(entity.attributes)
            if service == "set_value":
                state = str(float(data.get("value", entity.value)))
            elif service == "toggle":
                state = "off" if entity.state == "on" else "on"
            else:
                state = "on" if service == "turn_on" else "off"
            for key in ("brightness", "color_temp_kelvin", "rgb_color", "hs_color"):
                if key in data:
                    attrs[key] = data[key]
            self.fire_state_change(entity, state=state, attributes=attrs, context=context)
        return ""

    def history_reply(self, msg_id: int, msg: dict[str, Any]) -> bytes:
        start = _us(msg.get("start_time"))
        end = _us(msg.get("end_time")) if msg.get("end_time") else None
        ids = msg.get("entity_ids")
        if start is None or (msg.get("end_time") and end is None):
            return _error(msg_id, "invalid_start_time" if start is None else "invalid_end_time", "Invalid time")
        if not isinstance(ids, list) or not ids:
            return _error(msg_id, "invalid_format", "required key not provided @ data['entity_ids']")
        result = self.home.history(
            [str(i) for i in ids], start, end, include_start=bool(msg.get("include_start_time_state", True)),
            significant_only=bool(msg.get("significant_changes_only", True)),
            minimal=bool(msg.get("minimal_response", False)), no_attributes=bool(msg.get("no_attributes", False)))
        return _result(msg_id, result)

    # ------------------------------------------------------------------ REST API

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        return header in (f"Bearer {self.token}", f"Bearer {self.user_token}") and bool(header[7:])

    async def _guard(self, request: web.Request) -> None:
        if not self._authorized(request):
            raise web.HTTPUnauthorized(text='{"message":"401: Unauthorized"}', content_type="application/json")

    async def rest_root(self, request: web.Request) -> web.Response:
        await self._guard(request)
        return web.json_response({"message": "API running."})

    async def rest_config(self, request: web.Request) -> web.Response:
        await self._guard(request)
        return web.json_response(self.config())

    async def rest_states(self, request: web.Request) -> web.Response:
        await self._guard(request)
        return web.Response(body=b"[" + b",".join(e.state_json for e in self.home.iter_entities()) + b"]",
                            content_type="application/json")

    async def rest_state(self, request: web.Request) -> web.Response:
        await self._guard(request)
        entity = self.home.entities.get(request.match_info["entity_id"])
        if entity is None:
            return web.json_response({"message": "Entity not found."}, status=404)
        return web.Response(body=entity.state_json, content_type="application/json")

    async def rest_set_state(self, request: web.Request) -> web.Response:
        await self._guard(request)
        body = _loads(await request.read())
        entity_id = request.match_info["entity_id"]
        if not isinstance(body, dict) or "state" not in body:
            return web.json_response({"message": "No state specified."}, status=400)
        if "." not in entity_id:
            return web.json_response({"message": "Invalid entity ID specified."}, status=400)
        entity = self.home.entities.get(entity_id)
        created = entity is None
        if entity is None:
            entity = self.home.create(entity_id)
        attrs = body.get("attributes") if isinstance(body.get("attributes"), dict) else entity.attributes
        if created or str(body["state"]) != entity.state or attrs != entity.attributes:
            self.fire_state_change(entity, state=str(body["state"]), attributes=attrs)
        return web.Response(body=entity.state_json, content_type="application/json", status=201 if created else 200)

    async def rest_fire_event(self, request: web.Request) -> web.Response:
        await self._guard(request)
        body = _loads(await request.read()) if request.can_read_body else {}
        self.fire_event(request.match_info["event_type"], body if isinstance(body, dict) else {})
        return web.json_response({"message": f"Event {request.match_info['event_type']} fired."})

    async def rest_call_service(self, request: web.Request) -> web.Response:
        await self._guard(request)
        body = _loads(await request.read()) if request.can_read_body else {}
        error = self.call_service(request.match_info["domain"], request.match_info["service"], body, {})
        return web.json_response({"message": error}, status=400) if error else web.json_response([])

    async def rest_history(self, request: web.Request) -> web.Response:
        await self._guard(request)
        start = _us(request.match_info["start"])
        end = _us(request.query.get("end_time")) if request.query.get("end_time") else None
        ids = [i for i in request.query.get("filter_entity_id", "").split(",") if i]
        if start is None or not ids:
            return web.json_response({"message": "Invalid datetime or no filter_entity_id"}, status=400)
        result = self.home.history(ids, start, end, include_start=True, significant_only=False, minimal=False,
                                   no_attributes=False)
        out = [[{"entity_id": eid, "state": row["s"], "attributes": row.get("a", {}),
                 "last_changed": iso(round(row.get("lc", row["lu"]) * 1e6)),
                 "last_updated": iso(round(row["lu"] * 1e6))} for row in rows] for eid, rows in result.items()]
        return web.json_response(out)

    # ------------------------------------------------------------------ test controls

    async def sim_report(self, request: web.Request) -> web.Response:
        await self._guard(request)
        return web.json_response(self.report())

    async def sim_fire(self, request: web.Request) -> web.Response:
        await self._guard(request)
        body = _loads(await request.read()) if request.can_read_body else {}
        count = int(body.get("count", 1)) if isinstance(body, dict) else 1
        for _ in range(max(0, min(count, 1_000_000))):
            self.fire_next()
        return web.json_response(self.report())

    async def sim_pause(self, request: web.Request) -> web.Response:
        await self._guard(request)
        self.paused = True
        if self._log is not None:
            self._log.flush()  # a reader of the events log sees every event fired before the pause
        return web.json_response(self.report())

    async def sim_resume(self, request: web.Request) -> web.Response:
        """Fire again; ``{"rate": N}`` also sets the rate (events/s, 0 = as fast as the subscribers read)."""
        await self._guard(request)
        body = _loads(await request.read()) if request.can_read_body else None
        if isinstance(body, dict) and isinstance(body.get("rate"), int | float) and body["rate"] >= 0:
            self.rate = float(body["rate"])
        self.paused = False
        return web.json_response(self.report())

    async def sim_drop(self, request: web.Request) -> web.Response:
        await self._guard(request)
        dropped = len(self.connections)
        for conn in list(self.connections):
            conn.abort()
        return web.json_response({"dropped": dropped})


def _loads(data: Any) -> Any:
    try:
        return orjson.loads(data)
    except (orjson.JSONDecodeError, TypeError):
        return None


def _us(value: Any) -> int | None:
    """An ISO time from a client → µs since the epoch (naive means UTC, as HA's parse_datetime)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace(" ", "+") if "T" in value else value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1)
