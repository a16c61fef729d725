"""The simulated HA's frames have the shapes of real Home Assistant 2025.4 captures (../shared/real-ha/samples)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from ha_ingestor.harness.ports import free_port
from ha_ingestor.harness.shared import samples_dir
from ha_ingestor.simulator.run import SimOptions, running
from ha_ingestor.simulator.server import Simulator

SAMPLES = samples_dir()
pytestmark = pytest.mark.skipif(SAMPLES is None, reason="real HA captures (shared/real-ha/samples) not found; "
                                "set HA_INGESTOR_SHARED")


def sample(name: str) -> Any:
    assert SAMPLES is not None
    return json.loads((SAMPLES / f"{name}.json").read_text())


# Objects whose keys depend on the entity or integration, not on the protocol: only their type is compared.
FREE_FORM = {"attributes", "a", "options", "service_data", "config_entries_subentries"}


def shape_mismatches(real: Any, ours: Any, path: str = "$") -> list[str]:
    """Where ours differs from real in keys or JSON types (null in either is accepted)."""
    if real is None or ours is None:
        return []
    if path.rsplit(".", 1)[-1] in FREE_FORM:
        return [] if type(real) is type(ours) else [f"{path}: {type(real).__name__} vs {type(ours).__name__}"]
    if isinstance(real, dict):
        if not isinstance(ours, dict):
            return [f"{path}: object expected, got {type(ours).__name__}"]
        problems = []
        if set(real) != set(ours):
            missing, extra = sorted(set(real) - set(ours)), sorted(set(ours) - set(real))
            problems.append(f"{path}: keys differ: missing {missing}, extra {extra}")
        for key in set(real) & set(ours):
            problems += shape_mismatches(real[key], ours[key], f"{path}.{key}")
        return problems
    if isinstance(real, list):
        if not isinstance(ours, list):
            return [f"{path}: array expected"]
        if real and ours:
            return shape_mismatches(real[0], ours[0], f"{path}[0]")
        return []
    number = (int, float)
    if isinstance(real, bool) or isinstance(ours, bool):
        return [] if type(real) is type(ours) else [f"{path}: {type(real).__name__} vs {type(ours).__name__}"]
    if isinstance(real, number) and isinstance(ours, number):
        return []
    return [] if type(real) is type(ours) else [f"{path}: {type(real).__name__} vs {type(ours).__name__}"]


class Client:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 1

    async def frame(self) -> Any:
        msg = await self.ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        return orjson.loads(msg.data)

    async def command(self, payload: dict[str, Any]) -> Any:
        payload = {"id": self.next_id, **payload}
        self.next_id += 1
        await self.ws.send_str(orjson.dumps(payload).decode())
        while True:
            frame = await self.frame()
            for message in frame if isinstance(frame, list) else [frame]:
                if message.get("id") == payload["id"] and message["type"] in ("result", "pong"):
                    return message


@pytest.fixture
async def sim() -> AsyncIterator[tuple[Simulator, str]]:
    port = free_port()
    async with running(SimOptions(port=port, token="t0ken", rate=200, entities=40)) as simulator:
        yield simulator, f"ws://127.0.0.1:{port}/api/websocket"


async def test_handshake_and_commands_have_the_real_shapes(sim: tuple[Simulator, str]) -> None:
    _, url = sim
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        client = Client(ws)
        assert shape_mismatches(sample("ws_auth_required"), await client.frame()) == []
        await ws.send_str(json.dumps({"type": "auth", "access_token": "t0ken"}))
        assert shape_mismatches(sample("ws_auth_ok"), await client.frame()) == []
        result = await client.command({"type": "supported_features", "features": {"coalesce_messages": 1}})
        assert shape_mismatches(sample("ws_supported_features_result"), result) == []
        for kind, name in [("get_states", "ws_get_states"), ("config/entity_registry/list", "ws_entity_registry_list"),
                           ("config/device_registry/list", "ws_device_registry_list"),
                           ("config/area_registry/list", "ws_area_registry_list")]:
            reply = await client.command({"type": kind})
            assert shape_mismatches(sample(name), reply) == [], kind
            assert reply["result"], kind
        config = (await client.command({"type": "get_config"}))["result"]
        real_config = sample("ws_get_config")["result"]
        assert set(config) <= set(real_config) and config["time_zone"]


async def test_events_come_coalesced_and_shaped_like_real_ones(sim: tuple[Simulator, str]) -> None:
    _, url = sim
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        client = Client(ws)
        await client.frame()
        await ws.send_str(json.dumps({"type": "auth", "access_token": "t0ken"}))
        await client.frame()
        await client.command({"type": "supported_features", "features": {"coalesce_messages": 1}})
        assert (await client.command({"type": "subscribe_events"}))["success"]
        seen: dict[str, dict[str, Any]] = {}
        arrays = 0
        while len(seen) < 3 or arrays == 0:
            frame = await client.frame()
            arrays += isinstance(frame, list)
            for message in frame if isinstance(frame, list) else [frame]:
                seen.setdefault(message["event"]["event_type"], message)
    real_state = sample("event_state_changed_03_sensor_peer_sine_temperature")
    assert shape_mismatches(real_state, seen["state_changed"]) == []
    assert shape_mismatches(sample("event_call_service"), seen["call_service"]) == []
    assert shape_mismatches(sample("event_automation_triggered"), seen["automation_triggered"]) == []
    new_state = seen["state_changed"]["event"]["data"]["new_state"]
    assert seen["state_changed"]["event"]["time_fired"] == new_state["last_updated"]


async def test_history_replies_like_the_recorder(sim: tuple[Simulator, str]) -> None:
    simulator, url = sim
    entity = next(iter(simulator.home.entities))
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        client = Client(ws)
        await client.frame()
        await ws.send_str(json.dumps({"type": "auth", "access_token": "t0ken"}))
        await client.frame()
        for _ in range(3):
            simulator.fire_state_change(simulator.home.entities[entity])
        reply = await client.command({"type": "history/history_during_period", "start_time": "2000-01-01T00:00:00Z",
                                      "entity_ids": [entity], "significant_changes_only": False})
        real = sample("ws_history_during_period")["result"]["sensor.peer_sine_temperature"]
        rows = reply["result"][entity]
        assert len(rows) >= 4
        assert shape_mismatches(real[0], rows[0]) == []
        changed = [r for r in rows if "lc" in r]  # attribute-only changes carry last_changed apart
        assert all(set(r) <= {"s", "a", "lu", "lc"} for r in rows) and all(r["lc"] < r["lu"] for r in changed)


async def test_a_wrong_token_gets_auth_invalid(sim: tuple[Simulator, str]) -> None:
    _, url = sim
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.receive()
        await ws.send_str(json.dumps({"type": "auth", "access_token": "nope"}))
        answer = orjson.loads((await ws.receive()).data)
        assert answer["type"] == "auth_invalid" and answer["message"]
