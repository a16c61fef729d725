"""An independent witness: a bare WebSocket subscriber that records every event Home Assistant sends.

Tests compare the store with what this saw, not with what the ingestor says it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson


class Witness:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.subscribed = asyncio.Event()

    def state_changes(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event_type") == "state_changed"]


@contextlib.asynccontextmanager
async def witness(ha_url: str, token: str, event_type: str | None = None) -> AsyncIterator[Witness]:
    """Subscribe (to all events, or one type) for the duration of the context."""
    seen = Witness()
    url = ha_url.replace("http://", "ws://").replace("https://", "wss://") + "/api/websocket"

    async def run() -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(url, max_msg_size=0) as ws:
            await ws.receive_json()
            await ws.send_str(orjson.dumps({"type": "auth", "access_token": token}).decode())
            answer = await ws.receive_json()
            if answer.get("type") != "auth_ok":
                raise RuntimeError(f"witness could not authenticate: {answer}")
            await ws.send_str(orjson.dumps({"id": 1, "type": "supported_features",
                                            "features": {"coalesce_messages": 1}}).decode())
            command: dict[str, Any] = {"id": 2, "type": "subscribe_events"}
            if event_type:
                command["event_type"] = event_type
            await ws.send_str(orjson.dumps(command).decode())
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                frame = orjson.loads(msg.data)
                for item in frame if isinstance(frame, list) else [frame]:
                    if item.get("type") == "event" and item.get("id") == 2:
                        seen.events.append(item["event"])
                    elif item.get("type") == "result" and item.get("id") == 2:
                        seen.subscribed.set()

    task = asyncio.create_task(run())
    try:
        waiter = asyncio.create_task(seen.subscribed.wait())
        done, _ = await asyncio.wait([task, waiter], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        if not seen.subscribed.is_set():
            raise TimeoutError("witness did not get its subscription confirmed")
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
