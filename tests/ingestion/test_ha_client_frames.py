"""The reader's fast path: events are kept byte for byte as HA sent them, coalesced frames are split, and
frames the fast types do not fit still reach the handler through the plain decoder.

A real WebSocket server on localhost plays HA, sending exactly the frames under test.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from ha_ingestor.errors import ConnectionLost
from ha_ingestor.harness.ports import serving
from ha_ingestor.ingestion.ha_client import HaConnection, Incoming, websocket_url

STATE = ('{"event_type":"state_changed","data":{"entity_id":"sensor.a","old_state":null,"new_state":'
         '{"entity_id":"sensor.a","state":"1.5","attributes":{"unit_of_measurement":"\\u00b0C"},'
         '"last_changed":"2026-11-29T10:00:00.000001+00:00","last_reported":"2026-11-29T10:00:00.000001+00:00",'
         '"last_updated":"2026-11-29T10:00:00.000001+00:00","context":{"id":"01J","parent_id":null,"user_id":null}}},'
         '"origin":"LOCAL","time_fired":"2026-11-29T10:00:00.000001+00:00",'
         '"context":{"id":"01J","parent_id":null,"user_id":null}}')
CALL = ('{"event_type":"call_service","data":{"domain":"light","service":"turn_on","entity_id":["light.a","light.b"]},'
        '"origin":"LOCAL","time_fired":"2026-11-29T10:00:01+00:00","context":{"id":"01K"}}')
ODD = '{"event_type":"custom","data":[1,2],"time_fired":5}'  # data not an object, time not a string


def fake_ha(frames: list[str | bytes]) -> web.Application:
    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str('{"type":"auth_required","ha_version":"2025.4.4"}')
        await ws.receive()
        await ws.send_str('{"type":"auth_ok","ha_version":"2025.4.4"}')
        msg = await ws.receive()
        sub_id = json.loads(msg.data)["id"]
        for frame in frames:
            if isinstance(frame, bytes):  # sent as a text frame as it is, even when it is not UTF-8
                await ws.send_frame(frame.replace(b"SUB", str(sub_id).encode()), aiohttp.WSMsgType.TEXT)
            else:
                await ws.send_str(frame.replace("SUB", str(sub_id)))
        await ws.receive()  # until the client closes
        return ws

    app = web.Application()
    app.router.add_get("/api/websocket", ws_handler)
    return app


async def receive(frames: list[str | bytes], expected: int) -> list[Incoming]:
    got: list[Incoming] = []
    async with serving(fake_ha(frames)) as base_url:
        async with aiohttp.ClientSession() as session:
            conn = await HaConnection.open(session, websocket_url(base_url), "token")
            reader = asyncio.create_task(conn.read_forever())
            await conn.subscribe({"type": "subscribe_events"}, got.append)
            for _ in range(200):
                if len(got) >= expected:
                    break
                await asyncio.sleep(0.01)
            await conn.close()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    return got


async def test_coalesced_frame_keeps_each_event_byte_for_byte() -> None:
    frame = f'[{{"id":SUB,"type":"result","success":true,"result":null}},' \
            f'{{"id":SUB,"type":"event","event":{STATE}}},{{"id":SUB,"type":"event","event":{CALL}}}]'
    got = await receive([frame], 2)
    assert [e.raw.decode() for e in got] == [STATE, CALL]
    assert (got[0].event_type, got[0].entity_id, got[0].time_fired) == \
        ("state_changed", "sensor.a", "2026-11-29T10:00:00.000001+00:00")
    assert (got[1].event_type, got[1].entity_id) == ("call_service", ["light.a", "light.b"])
    assert got[1].as_dict() == json.loads(CALL)


async def test_frames_the_fast_types_do_not_fit_still_arrive() -> None:
    frames = ['{"id":SUB,"type":"result","success":true,"result":null}',
              f'{{"id":SUB,"type":"event","event":{ODD}}}',
              # an extra member of an unexpected type in the message: the plain decoder takes it
              f'{{"id":SUB,"type":"event","event":{STATE},"extra":{{"x":[1]}},"success":"yes"}}']
    got = await receive(frames, 2)
    assert len(got) == 2
    assert got[0].event_type == "custom" and got[0].time_fired == "" and got[0].entity_id is None
    assert json.loads(got[0].raw) == json.loads(ODD)
    assert json.loads(got[1].raw) == json.loads(STATE) and got[1].entity_id == "sensor.a"




async def test_a_frame_that_is_not_utf8_ends_the_connection_like_any_other_broken_one() -> None:
    """Frames are parsed as the bytes HA sent (not decoded to str first): one that is not UTF-8 cannot be
    trusted, so the connection ends, and ingestion backfills the gap as after any other disconnect."""
    got: list[Incoming] = []
    frames: list[str | bytes] = ['{"id":SUB,"type":"result","success":true,"result":null}',
                                 f'{{"id":SUB,"type":"event","event":{STATE}}}',
                                 f'[{{"id":SUB,"type":"event","event":{CALL}}},'.encode()
                                 + b'{"id":SUB,"type":"result","success":true,"result":"\xff"}]']
    async with serving(fake_ha(frames)) as base_url:
        async with aiohttp.ClientSession() as session:
            conn = await HaConnection.open(session, websocket_url(base_url), "token")
            reader = asyncio.create_task(conn.read_forever())
            await conn.subscribe({"type": "subscribe_events"}, got.append)
            with pytest.raises(ConnectionLost, match="UTF-8"):
                await asyncio.wait_for(reader, 10)
            await conn.close()
    assert [e.raw.decode() for e in got] == [STATE]
