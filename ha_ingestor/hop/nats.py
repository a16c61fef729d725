"""The NATS hop (``HOP=nats``): each batch is published to JetStream; ``send`` returns on the broker's ack.

One message per batch, on subject ``<prefix>.<home_id>.batch``, with the ``{"home_id", "events"}`` body
the HTTP hop posts and a ``Nats-Msg-Id`` hashed from the home and the events (see jetstream.msg_id). A
batch over the server's max payload (1 MB by default) leaves as several messages, cut the same way every
time so a resend de-duplicates; ``send`` returns once every part is acked, so the outbox removes rows only
then. No server, no ack in time, a full stream (``discard: new``) → HopUnavailable: the outbox keeps the
batch and the forwarder retries. One event alone over the max payload → HopRejected(413), which the
forwarder moves to the outbox's rejected table.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import APIError
from nats.js.kv import KeyValue

from ..errors import HopRejected, HopUnavailable
from ..metrics import Registry
from .base import batch_body
from .jetstream import JetStreamConfig, connect, encode_registry, ensure_stream, msg_id, registry_bucket

# Room for the home id, the JSON framing and the headers next to the events, inside the max payload.
_FRAMING = 4096


class NatsHop:
    name = "nats"

    def __init__(self, config: JetStreamConfig, metrics: Registry | None = None) -> None:
        self.config = config
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._kv: KeyValue | None = None
        self._lock = asyncio.Lock()
        metrics = metrics or Registry()
        self._latency = metrics.histogram("hop_request_seconds", "Time of one hop request, send to 2xx")
        self._messages = metrics.counter("nats_messages_published", "Messages JetStream acked")
        self._duplicates = metrics.counter("nats_duplicates", "Publishes JetStream acked as duplicates")

    async def _ready(self) -> tuple[Client, JetStreamContext]:
        """Connected client and JetStream, the stream verified; connects lazily so ingestion starts without NATS."""
        if self._nc is not None and self._js is not None and not self._nc.is_closed:
            return self._nc, self._js
        async with self._lock:
            if self._nc is None or self._js is None or self._nc.is_closed:
                try:
                    nc = await connect(self.config, "ha-ingestor ingestion")
                except (OSError, TimeoutError, nats.errors.Error) as exc:
                    raise HopUnavailable(f"nats: no server answers at {','.join(self.config.servers)}: "
                                         f"{exc.__class__.__name__}: {exc}") from None
                js = nc.jetstream(timeout=self.config.publish_timeout)
                try:
                    await ensure_stream(js, self.config)
                except (TimeoutError, nats.errors.Error) as exc:
                    await nc.close()
                    raise HopUnavailable(f"nats: stream {self.config.stream} not ready: {exc}") from None
                self._nc, self._js = nc, js
        assert self._nc is not None and self._js is not None
        return self._nc, self._js

    def _parts(self, nc: Client, events: Sequence[bytes]) -> list[Sequence[bytes]]:
        limit = max(1024, nc.max_payload - _FRAMING)
        parts: list[Sequence[bytes]] = []
        start, size = 0, 0
        for i, event in enumerate(events):
            if len(event) + 1 > limit:
                raise HopRejected(413, f"one event of {len(event)} bytes is over the NATS max payload "
                                       f"({nc.max_payload} bytes)")
            if size + len(event) + 1 > limit:
                parts.append(events[start:i])
                start, size = i, 0
            size += len(event) + 1
        parts.append(events[start:])
        return parts

    async def send(self, home_id: str, events: Sequence[bytes]) -> None:
        started = time.perf_counter()
        nc, js = await self._ready()
        subject = self.config.subject(home_id)
        try:
            acks = await asyncio.gather(*(
                js.publish(subject, batch_body(home_id, part), timeout=self.config.publish_timeout,
                           stream=self.config.stream, headers={"Nats-Msg-Id": msg_id(home_id, part)})
                for part in self._parts(nc, events)))
        except APIError as exc:
            # A full stream (discard: new), no quorum, a stream being moved: all pass; the outbox keeps the batch.
            raise HopUnavailable(f"nats: JetStream refused the publish: {exc.description or exc}", 2.0) from None
        except (TimeoutError, nats.errors.Error) as exc:
            raise HopUnavailable(f"nats: no publish ack: {exc.__class__.__name__}: {exc}") from None
        self._messages.inc(len(acks))
        self._duplicates.inc(sum(1 for ack in acks if ack.duplicate))
        self._latency.observe(time.perf_counter() - started)

    async def put_registry(self, home_id: str, payload: dict[str, Any]) -> None:
        _, js = await self._ready()
        try:
            if self._kv is None:
                self._kv = await registry_bucket(js, self.config)
            await self._kv.put(home_id or "_", encode_registry(payload))
        except nats.errors.MaxPayloadError as exc:
            raise HopRejected(413, f"registry snapshot over the NATS max payload: {exc}") from None
        except (TimeoutError, nats.errors.Error) as exc:
            raise HopUnavailable(f"nats: registry not stored: {exc.__class__.__name__}: {exc}") from None

    async def check(self) -> None:
        nc, js = await self._ready()
        if not nc.is_connected:
            raise HopUnavailable("nats: reconnecting")
        try:
            await js.stream_info(self.config.stream)
        except (TimeoutError, nats.errors.Error) as exc:
            raise HopUnavailable(f"nats: stream {self.config.stream} unavailable: {exc}") from None

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            try:
                await self._nc.drain()
            except (TimeoutError, nats.errors.Error):
                await self._nc.close()
