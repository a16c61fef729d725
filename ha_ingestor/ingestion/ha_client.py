"""A Home Assistant WebSocket client that follows the protocol as HA implements it.

* ``auth_required`` → ``auth`` within 10 s → ``auth_ok`` | ``auth_invalid``; ``auth_invalid`` raises
  :class:`AuthInvalid`, which callers must treat as fatal (each retry counts toward HA's IP ban).
* The first command enables ``coalesce_messages``: from then on a frame is one JSON object or an array
  of them.
* Command ids strictly increase per connection, starting at 1.
* The reader never waits on a slow consumer for long: events go to a callback that only queues them.
  HA drops a client with 4096 pending messages, so falling behind is a disconnect, not back-pressure.
* A subscription's handler is registered *before* the command is sent, because HA may put the
  subscription's result and its first events in the same frame.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import msgspec
import orjson

from ..errors import AuthInvalid, CommandFailed, ConnectionLost

log = logging.getLogger(__name__)



@dataclass(slots=True)
class Incoming:
    """One event as HA sent it: its JSON untouched (``raw``, what the outbox stores) and the few fields
    routing needs, read without building the whole object."""

    event_type: str
    time_fired: str
    entity_id: Any  # data.entity_id: usually a str; absent (None) or a list for some events
    raw: bytes

    def as_dict(self) -> dict[str, Any]:
        value: dict[str, Any] = orjson.loads(self.raw)
        return value


class _DataHead(msgspec.Struct):
    entity_id: Any = None


class _EventHead(msgspec.Struct):
    event_type: str = ""
    time_fired: str = ""
    data: _DataHead | None = None


class _Message(msgspec.Struct):
    type: str = ""
    id: int | None = None
    event: msgspec.Raw = msgspec.Raw(b"")  # (a Raw cannot be part of a union)
    success: bool = False
    result: Any = None
    error: Any = None


# The hot path: a frame (one message or, coalesced, an array of them) is decoded once, each event kept as
# raw bytes. Anything these types do not fit falls back to a plain decode, so nothing is ever dropped.
_frame_decoder = msgspec.json.Decoder(list[_Message] | _Message)
_head_decoder = msgspec.json.Decoder(_EventHead)

EventHandler = Callable[[Incoming], Awaitable[None] | None]
AUTH_TIMEOUT = 10.0
# get_states of a large home is many MB; HA itself sends whatever the home holds.
MAX_MESSAGE_BYTES = 512 * 2**20


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def websocket_url(base_url: str) -> str:
    """``http://host:8123`` → ``ws://host:8123/api/websocket`` (https → wss)."""
    if base_url.startswith("https://"):
        return "wss://" + base_url[len("https://"):] + "/api/websocket"
    return "ws://" + base_url.removeprefix("http://") + "/api/websocket"


class HaConnection:
    """One authenticated WebSocket connection; create with :meth:`open`, then run :meth:`read_forever`."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse[Literal[False]], ha_version: str) -> None:
        self.ws = ws
        self.ha_version = ha_version
        self._next_id = 1
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._commands: dict[int, str] = {}
        self._handlers: dict[int, EventHandler] = {}
        self.closed_reason = ""

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, url: str, token: str, *, timeout: float = 10.0) -> HaConnection:
        """Connect and authenticate. Raises AuthInvalid, or ConnectionLost for anything transient."""
        try:
            # decode_text=False: a frame stays the UTF-8 bytes HA sent. Decoded to str, msgspec had to encode
            # it back to UTF-8 before parsing it: ~0.65 µs an event, a twentieth of ingestion's CPU.
            ws = await session.ws_connect(
                url, max_msg_size=MAX_MESSAGE_BYTES, autoping=True, heartbeat=None, compress=0,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0), autoclose=True, decode_text=False,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ConnectionLost(f"cannot connect to {url}: {exc.__class__.__name__}: {exc}") from None
        try:
            hello = await cls._receive_one(ws, timeout)
            if hello.get("type") != "auth_required":
                raise ConnectionLost(f"expected auth_required, got {hello.get('type')!r}")
            await ws.send_frame(orjson.dumps({"type": "auth", "access_token": token}), aiohttp.WSMsgType.TEXT)
            answer = await cls._receive_one(ws, AUTH_TIMEOUT)
        except BaseException:
            await ws.close()
            raise
        kind = answer.get("type")
        if kind == "auth_invalid":
            await ws.close()
            raise AuthInvalid(f"Home Assistant rejected the access token: {answer.get('message', 'auth_invalid')}")
        if kind != "auth_ok":
            await ws.close()
            raise ConnectionLost(f"expected auth_ok, got {kind!r}")
        return cls(ws, str(answer.get("ha_version", hello.get("ha_version", "?"))))

    @staticmethod
    async def _receive_one(ws: aiohttp.ClientWebSocketResponse[Literal[False]], timeout: float) -> dict[str, Any]:
        try:
            msg = await ws.receive(timeout=timeout)
        except TimeoutError:
            raise ConnectionLost(f"no message from Home Assistant within {timeout:g} s") from None
        if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            raise ConnectionLost(f"connection closed during authentication ({msg.type.name})")
        try:
            data = orjson.loads(msg.data)
        except orjson.JSONDecodeError as exc:
            raise ConnectionLost(f"malformed message during authentication: {exc}") from None
        if not isinstance(data, dict):
            raise ConnectionLost("unexpected message during authentication")
        return data

    # ------------------------------------------------------------------ commands

    async def call(self, payload: dict[str, Any], timeout: float = 30.0) -> Any:
        """Send a command, return its ``result``; raises CommandFailed or ConnectionLost."""
        msg_id = self._next_id
        self._next_id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        self._commands[msg_id] = str(payload.get("type"))
        try:
            await self._send({**payload, "id": msg_id})
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise ConnectionLost(f"no answer to {payload.get('type')} within {timeout:g} s") from None
        finally:
            self._pending.pop(msg_id, None)
            self._commands.pop(msg_id, None)

    async def subscribe(self, payload: dict[str, Any], handler: EventHandler, timeout: float = 30.0) -> int:
        """Subscribe (``subscribe_events`` etc.); the handler gets each event's ``event`` object."""
        msg_id = self._next_id
        # Registered before the command is sent: the result and first events may share a frame.
        self._handlers[msg_id] = handler
        try:
            await self.call(payload, timeout)
        except BaseException:
            self._handlers.pop(msg_id, None)
            raise
        return msg_id

    async def _send(self, payload: dict[str, Any]) -> None:
        if self.ws.closed:
            raise ConnectionLost(self.closed_reason or "connection closed")
        try:
            # HA only accepts text frames: a binary frame makes it close the connection.
            await self.ws.send_frame(orjson.dumps(payload), aiohttp.WSMsgType.TEXT)
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            raise ConnectionLost(f"send failed: {exc}") from None

    async def ping(self, timeout: float) -> None:
        """HA's own ping/pong (not the WebSocket one): proves the whole connection still works."""
        await self.call({"type": "ping"}, timeout)

    async def close(self) -> None:
        await self.ws.close()

    async def unsubscribe_all(self, timeout: float) -> None:
        """End every subscription and wait for HA's answers, before a deliberate close. HA sends in order, so
        every event it sent before an answer has been handled by then; closing at once instead would discard
        the frames still on the way (aiohttp reads up to HA's close reply and drops the rest), and events that
        are not states cannot be backfilled. Best effort: on no answer in ``timeout`` the caller closes anyway."""
        ids = list(self._handlers)
        calls = [self.call({"type": "unsubscribe_events", "subscription": sub_id}, timeout) for sub_id in ids]
        try:
            await asyncio.wait_for(asyncio.gather(*calls), timeout)
        except (ConnectionLost, CommandFailed, TimeoutError) as exc:
            # Handlers stay: a frame the reader already holds (waiting for intake room) is still delivered.
            log.info("could not end the subscriptions before closing", extra={"error": str(exc)})

    # ------------------------------------------------------------------ reading

    async def read_forever(self) -> None:
        """Dispatch every incoming message until the connection ends; then raise ConnectionLost."""
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    await self._frame(msg.data)
                    continue
                if msg.type == aiohttp.WSMsgType.ERROR:
                    reason = f"connection error: {self.ws.exception()}"
                elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                    code = self.ws.close_code
                    reason = f"closed by Home Assistant (code {code})" if code else "connection closed"
                else:
                    continue
                raise ConnectionLost(reason)
        except ConnectionLost as exc:
            self.closed_reason = str(exc)
            raise
        except (aiohttp.ClientError, ConnectionError) as exc:
            self.closed_reason = f"connection error: {exc}"
            raise ConnectionLost(self.closed_reason) from None
        finally:
            self._fail_pending(ConnectionLost(self.closed_reason or "connection closed"))

    async def _frame(self, data: bytes) -> None:
        try:
            frame = _frame_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            await self._frame_slow(data)
            return
        for message in frame if isinstance(frame, list) else (frame,):
            if message.type == "event":
                handler = self._handlers.get(message.id) if message.id is not None else None
                if handler is None or not message.event:
                    continue
                raw = bytes(message.event)
                try:
                    head = _head_decoder.decode(raw)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    event = orjson.loads(raw)
                    if isinstance(event, dict):
                        await self._dispatch({"type": "event", "id": message.id, "event": event})
                    continue
                pending = handler(Incoming(head.event_type, head.time_fired,
                                           head.data.entity_id if head.data is not None else None, raw))
                if pending is not None:
                    await pending
            else:
                await self._dispatch({"type": message.type, "id": message.id, "success": message.success,
                                      "result": message.result, "error": message.error})

    async def _frame_slow(self, data: bytes) -> None:
        """A frame the fast types do not fit (malformed, or an unexpected shape): decode it plainly."""
        try:
            decoded = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            if not _is_utf8(data):
                # What aiohttp does when it decodes text frames itself (close code 1007): this connection
                # cannot be trusted, so it ends, and what it carried is backfilled like any other gap.
                raise ConnectionLost("Home Assistant sent a text frame that is not UTF-8") from None
            log.warning("ignoring malformed message from Home Assistant", extra={"error": str(exc)})
            return
        for item in decoded if isinstance(decoded, list) else [decoded]:
            if isinstance(item, dict):
                await self._dispatch(item)

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        msg_id = msg.get("id")
        if kind == "event":
            handler = self._handlers.get(msg_id)  # type: ignore[arg-type]
            event = msg.get("event")
            if handler is not None and isinstance(event, dict):
                data = event.get("data")
                time_fired = event.get("time_fired")
                pending = handler(Incoming(str(event.get("event_type", "")),
                                           time_fired if isinstance(time_fired, str) else "",
                                           data.get("entity_id") if isinstance(data, dict) else None,
                                           orjson.dumps(event)))
                if pending is not None:
                    await pending
            return
        if kind in ("result", "pong"):
            future = self._pending.get(msg_id)  # type: ignore[arg-type]
            if future is None or future.done():
                return
            if kind == "pong" or msg.get("success"):
                future.set_result(msg.get("result"))
            else:
                err = msg.get("error") or {}
                future.set_exception(CommandFailed(self._commands.get(msg_id, f"command {msg_id}"),  # type: ignore[arg-type]
                                                   str(err.get("code", "unknown")), str(err.get("message", ""))))

    def _fail_pending(self, error: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
