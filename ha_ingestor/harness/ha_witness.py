"""What the end-to-end tests ask the real Home Assistant, beside our services: its recorder, its registries,
its log, a non-admin user, and state changes driven through its REST API.

A state change is keyed as our ``states`` measurement keys its point: (entity_id, ``last_updated`` in µs).
:func:`tally` counts one scenario: what HA fired (an independent subscriber saw), what its recorder holds,
and what our store holds.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson

from ..model import us_from_timestamp
from .influxd import Influxd

StateKey = tuple[str, int]  # (entity_id, new_state.last_updated in µs)
FAILED_LOGIN = "Login attempt or request with invalid authentication"
K = TypeVar("K")


def now_us() -> int:
    return time.time_ns() // 1000


def settle(read: Callable[[], list[K]], want: set[K], quiet: float) -> list[K]:
    """Poll ``read()`` until it covers ``want``, or its answer stopped changing for ``quiet`` seconds."""
    last: list[K] | None = None
    since = time.monotonic()
    while True:
        keys = read()
        if want <= set(keys):
            return keys
        if keys != last:
            last, since = keys, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return keys
        time.sleep(0.5)


def iso_us(value: str) -> int:
    moment = datetime.fromisoformat(value)
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def fired_keys(events: Iterable[dict[str, Any]], start_us: int, end_us: int) -> list[StateKey]:
    """Keys of the ``state_changed`` events (with a new state) an independent subscriber saw, in the window."""
    out = []
    for event in events:
        new = (event.get("data") or {}).get("new_state") if event.get("event_type") == "state_changed" else None
        if new:
            us = iso_us(new["last_updated"])
            if start_us <= us <= end_us:
                out.append((new["entity_id"], us))
    return out


def stored_keys(influxd: Influxd, db: str, start_us: int, end_us: int) -> list[StateKey]:
    """Keys of every point of our ``states`` measurement in the window (a duplicate shows twice)."""
    q = (f'SELECT "available" FROM "states" WHERE time >= {start_us * 1000} AND time <= {end_us * 1000} '
         'GROUP BY "entity_id"')
    return [(r["entity_id"], r["time"] // 1000) for r in influxd.rows(q, db)]


@dataclass(frozen=True)
class Tally:
    """One scenario's counts; ``missing`` = fired or recorded, not stored; ``duplicates`` = stored twice or
    stored without HA having fired it."""

    name: str
    fired: int
    recorded: int
    stored: int
    missing: frozenset[StateKey]
    duplicates: int
    per_entity: dict[str, tuple[int, int, int]]

    def table(self) -> str:
        head = f"{self.name}: fired (subscriber) / recorded (recorder) / stored / missing / duplicates"
        rows = [f"  {'TOTAL':<44} {self.fired:>6} {self.recorded:>6} {self.stored:>6} {len(self.missing):>5} "
                f"{self.duplicates:>5}"]
        for entity, (f, r, s) in sorted(self.per_entity.items(), key=lambda kv: -max(kv[1]))[:12]:
            rows.append(f"  {entity:<44} {f:>6} {r:>6} {s:>6}")
        if len(self.per_entity) > 12:
            rows.append(f"  ... {len(self.per_entity) - 12} more entities")
        rows += [f"  missing {key}" for key in sorted(self.missing)[:10]]
        return "\n".join([head, *rows])


def tally(name: str, fired: Sequence[StateKey] | None, recorded: Sequence[StateKey],
          stored: Sequence[StateKey]) -> Tally:
    """``fired`` None: no subscriber saw the whole window (HA restarted), the recorder is the reference."""
    want = set(recorded) | set(fired or ())
    counts = Counter(stored)
    witnessed = set(fired) if fired is not None else set(recorded)
    duplicates = sum(n - 1 for n in counts.values()) + len(set(counts) - witnessed - set(recorded))
    per_entity: dict[str, list[int]] = {}
    for column, keys in enumerate((fired or (), recorded, stored)):
        for entity, _ in keys:
            per_entity.setdefault(entity, [0, 0, 0])[column] += 1
    return Tally(name, len(set(fired)) if fired is not None else -1, len(set(recorded)), len(stored),
                 frozenset(want - set(counts)), duplicates,
                 {e: (c[0], c[1], c[2]) for e, c in per_entity.items()})


# ------------------------------------------------------------------------------------ websocket API


class HaWebsocket:
    """One authenticated websocket connection for commands (not events)."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws
        self._ids = itertools.count(1)

    async def call(self, command: dict[str, Any], timeout: float = 60.0) -> Any:
        msg_id = next(self._ids)
        await self.ws.send_str(orjson.dumps({**command, "id": msg_id}).decode())
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.ws.receive_json()
                for item in frame if isinstance(frame, list) else [frame]:
                    if item.get("id") == msg_id and item.get("type") == "result":
                        if not item.get("success"):
                            raise RuntimeError(f"{command['type']} failed: {item.get('error')}")
                        return item.get("result")


class _Connect:
    def __init__(self, ha_url: str, token: str) -> None:
        self.url, self.token = ha_url, token
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HaWebsocket:
        self.session = aiohttp.ClientSession()
        ws = await self.session.ws_connect(self.url + "/api/websocket", max_msg_size=0)
        await ws.receive_json()
        await ws.send_str(orjson.dumps({"type": "auth", "access_token": self.token}).decode())
        answer = await ws.receive_json()
        if answer.get("type") != "auth_ok":
            await self.session.close()
            raise RuntimeError(f"websocket auth failed: {answer}")
        return HaWebsocket(self.session, ws)

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()


def connect(ha_url: str, token: str) -> _Connect:
    """``async with connect(url, token) as ha: await ha.call({...})``"""
    return _Connect(ha_url, token)


async def recorded_keys(ha_url: str, token: str, entity_ids: Iterable[str], start_us: int,
                        end_us: int) -> list[StateKey]:
    """Every state HA's recorder holds in the window, all changes (not only significant ones)."""
    async with connect(ha_url, token) as ha:
        result = await ha.call({
            "type": "history/history_during_period",
            "start_time": datetime.fromtimestamp(start_us / 1e6).astimezone().isoformat(),
            "end_time": datetime.fromtimestamp(end_us / 1e6 + 0.001).astimezone().isoformat(),
            "entity_ids": sorted(set(entity_ids)), "include_start_time_state": False,
            "significant_changes_only": False, "minimal_response": False, "no_attributes": True,
        }, timeout=120)
    out = []
    for entity, rows in (result or {}).items():
        for row in rows:
            us = us_from_timestamp(float(row["lu"]))
            if start_us <= us <= end_us:
                out.append((entity, us))
    return out


async def registries(ha_url: str, token: str) -> dict[str, list[dict[str, Any]]]:
    async with connect(ha_url, token) as ha:
        return {name: await ha.call({"type": f"config/{name}_registry/list"})
                for name in ("entity", "device", "area", "floor")}


async def create_user_token(ha_url: str, admin_token: str, name: str, password: str) -> str:
    """A new non-admin user (group ``system-users``) with a password, logged in; its long-lived token."""
    async with connect(ha_url, admin_token) as ha:
        user = await ha.call({"type": "config/auth/create", "name": name, "group_ids": ["system-users"],
                              "local_only": False})
        await ha.call({"type": "config/auth_provider/homeassistant/create", "user_id": user["user"]["id"],
                       "username": name, "password": password})
    client_id = ha_url + "/"
    async with aiohttp.ClientSession() as http:
        async with http.post(ha_url + "/auth/login_flow", json={
                "client_id": client_id, "handler": ["homeassistant", None], "redirect_uri": client_id}) as resp:
            flow = await resp.json()
        async with http.post(f"{ha_url}/auth/login_flow/{flow['flow_id']}", json={
                "client_id": client_id, "username": name, "password": password}) as resp:
            done = await resp.json()
        if done.get("type") != "create_entry":
            raise RuntimeError(f"login as {name} failed: {done}")
        async with http.post(ha_url + "/auth/token", data={
                "grant_type": "authorization_code", "code": done["result"], "client_id": client_id}) as resp:
            access = (await resp.json())["access_token"]
    async with connect(ha_url, access) as ha:
        token: str = await ha.call({"type": "auth/long_lived_access_token", "client_name": f"{name} e2e",
                                    "lifespan": 1})
    return token


# ------------------------------------------------------------------------------------ driving changes


async def drive(ha_url: str, token: str, seconds: float, tag: str) -> int:
    """For ``seconds``, once a second: a REST-posted sensor, ``input_number.set_value`` and ``light.turn_on``
    with brightness and colour. Returns the number of steps; each changes three or more states."""
    headers = {"Authorization": f"Bearer {token}"}
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    step = 0
    async with aiohttp.ClientSession(headers=headers) as http:
        while loop.time() < end:
            step += 1
            posts = [
                (f"/api/states/sensor.e2e_{tag}", {"state": str(step), "attributes": {
                    "unit_of_measurement": "W", "friendly_name": f"E2E {tag}", "step": step}}),
                ("/api/services/input_number/set_value",
                 {"entity_id": "input_number.peer_setpoint", "value": 5 + (step % 50) / 2}),
                ("/api/services/light/turn_on", {"entity_id": "light.bed_light", "brightness": 1 + step % 254,
                                                 "hs_color": [step * 7 % 360, 50 + step % 50]}),
                ("/api/services/light/turn_on", {"entity_id": "light.office_rgbw_lights",
                                                 "rgbw_color": [step % 256, 255 - step % 256, 10, 20]}),
            ]
            for path, payload in posts:
                async with http.post(ha_url + path, json=payload) as resp:
                    if resp.status >= 400:
                        raise RuntimeError(f"POST {path} answered {resp.status}: {await resp.text()}")
            await asyncio.sleep(max(0.0, min(1.0, end - loop.time())))
    return step


async def touch(ha_url: str, token: str, entity_ids: Iterable[str], probe: int) -> list[str]:
    """Re-post each entity's current state with one more attribute: a ``state_changed`` for every one that
    has a state. Returns those."""
    touched = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for entity_id in entity_ids:
            async with http.get(f"{ha_url}/api/states/{entity_id}") as resp:
                if resp.status != 200:
                    continue
                state = await resp.json()
            attributes = {**state["attributes"], "e2e_probe": probe}
            async with http.post(f"{ha_url}/api/states/{entity_id}",
                                 json={"state": state["state"], "attributes": attributes}) as resp:
                resp.raise_for_status()
            touched.append(entity_id)
    return touched


# ------------------------------------------------------------------------------------------ HA's log


def failed_logins(directory: Path) -> int:
    """Failed logins HA logged (``hass.log``, its ``--log-file``) so far."""
    path = directory / "hass.log"
    return len(re.findall(re.escape(FAILED_LOGIN), path.read_text(errors="replace"))) if path.exists() else 0
