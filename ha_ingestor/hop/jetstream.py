"""What both ends of the NATS hop share: the connection, the stream and registry bucket they create or verify.

The stream is chosen for safety, each choice with its cost (docs/SCALE-OUT.md):

* file storage, ``NATS_REPLICAS`` copies (3 in a cluster): an acked batch survives a node;
* work-queue retention: a message leaves the stream when a worker acks it, so the limits below measure
  the backlog, not history, and no ``max_age`` ever deletes an unprocessed batch;
* ``max_bytes`` / ``max_msgs`` with ``discard: new``: a full stream refuses the publish, ingestion keeps
  the batch in its outbox and retries (push back, never drop);
* a duplicate window (24 h by default) longer than the longest outage the outbox replays: the server keeps
  every ``Nats-Msg-Id`` of the window in memory (about 100 bytes each; batches, not events, so a home at
  500 events/s in 1000-event batches costs ~43,000 ids a day, ~4 MB).

Services create the stream and the bucket when missing and verify them otherwise (idempotent), so there is
no separate init step; a stream that exists with another storage or retention is an error, never changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, KeyValueConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from ..errors import SettingsError
from ..settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JetStreamConfig:
    servers: tuple[str, ...]
    token: str = ""
    stream: str = "HA_EVENTS"
    prefix: str = "ha"
    consumer: str = "enrichment"
    replicas: int = 1
    max_bytes: int = 8 * 2**30
    max_msgs: int = 10_000_000
    duplicate_window: float = 86400.0
    ack_wait: float = 30.0
    max_deliver: int = 10
    fetch_batch: int = 4
    publish_timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> JetStreamConfig:
        return cls(
            servers=tuple(part.strip() for part in settings.NATS_URL.split(",") if part.strip()),
            token=settings.NATS_TOKEN, stream=settings.NATS_STREAM, prefix=settings.NATS_SUBJECT_PREFIX,
            consumer=settings.NATS_CONSUMER, replicas=settings.NATS_REPLICAS, max_bytes=settings.NATS_MAX_BYTES,
            max_msgs=settings.NATS_MAX_MSGS, duplicate_window=settings.NATS_DUPLICATE_WINDOW_S,
            ack_wait=settings.NATS_ACK_WAIT_S, max_deliver=settings.NATS_MAX_DELIVER,
            fetch_batch=settings.NATS_FETCH_BATCH, publish_timeout=settings.HOP_TIMEOUT,
        )

    @property
    def registry_bucket(self) -> str:
        return f"{self.stream}_REGISTRY"

    def subject(self, home_id: str) -> str:
        return f"{self.prefix}.{home_id or '_'}.batch"

    def stream_config(self) -> StreamConfig:
        return StreamConfig(
            name=self.stream, subjects=[f"{self.prefix}.*.batch"], retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE, num_replicas=self.replicas, max_bytes=self.max_bytes, max_msgs=self.max_msgs,
            discard=DiscardPolicy.NEW, duplicate_window=self.duplicate_window, max_age=0,
        )


def msg_id(home_id: str, events: Sequence[bytes]) -> str:
    """``Nats-Msg-Id`` of a batch: a hash of the home and its events, so a resent batch is the same message.

    The events carry their point identity (entity, ``last_updated``/``time_fired``, context id); a batch
    cut differently after an ingestion restart gets another id, and its points simply overwrite themselves.
    """
    digest = hashlib.blake2b(home_id.encode(), digest_size=16)
    for event in events:
        digest.update(len(event).to_bytes(4, "big"))
        digest.update(event)
    return f"{home_id}:{digest.hexdigest()}"


async def connect(config: JetStreamConfig, name: str, timeout: float = 5.0) -> Client:
    """Connect, then keep reconnecting forever; TimeoutError (or a nats error) when no server answers now."""

    async def on_error(exc: Exception) -> None:
        log.debug("nats: %s", exc)

    async def on_disconnect() -> None:
        log.warning("nats: disconnected; reconnecting")

    async def on_reconnect() -> None:
        log.info("nats: reconnected")

    nc = Client()
    try:
        # With max_reconnect_attempts=-1 nats-py also retries the *first* connect forever; the caller
        # (forwarder, worker) has its own retry with backoff and wants to say why it waits, so bound it.
        await asyncio.wait_for(nc.connect(
            servers=list(config.servers), name=name, token=config.token or None, connect_timeout=int(timeout),
            allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=1,
            error_cb=on_error, disconnected_cb=on_disconnect, reconnected_cb=on_reconnect,
        ), timeout)
    except BaseException:
        await nc.close()
        raise
    return nc


async def ensure_stream(js: JetStreamContext, config: JetStreamConfig) -> None:
    """Create the stream when missing; otherwise check what must not differ and update the limits."""
    wanted = config.stream_config()
    try:
        info = await js.stream_info(config.stream)
    except NotFoundError:
        await js.add_stream(wanted)
        log.info("nats: stream created", extra={"stream": config.stream, "replicas": config.replicas})
        return
    have = info.config
    for field, want in (("retention", wanted.retention), ("storage", wanted.storage)):
        if getattr(have, field) != want:
            raise SettingsError("NATS_STREAM", f"stream {config.stream} exists with {field} "
                                f"{getattr(have, field)}, not {want}: not changing it; use another NATS_STREAM")
    if (have.max_bytes, have.max_msgs, have.duplicate_window, have.discard, have.subjects) != (
            wanted.max_bytes, wanted.max_msgs, wanted.duplicate_window, wanted.discard, wanted.subjects):
        await js.update_stream(wanted)
        log.info("nats: stream limits updated", extra={"stream": config.stream})


async def registry_bucket(js: JetStreamContext, config: JetStreamConfig) -> KeyValue:
    """The key-value bucket holding each home's latest registry snapshot (key: home id)."""
    try:
        return await js.key_value(config.registry_bucket)
    except BucketNotFoundError:
        return await js.create_key_value(KeyValueConfig(
            bucket=config.registry_bucket, history=1, storage=StorageType.FILE, replicas=config.replicas,
            description="latest Home Assistant registries of each home"))


def encode_registry(payload: dict[str, Any]) -> bytes:
    # Registries of a big home run to megabytes of JSON, over NATS's default 1 MB payload; they compress ~10×.
    return zlib.compress(orjson.dumps(payload), 6)


def decode_registry(value: bytes) -> dict[str, Any]:
    data = orjson.loads(zlib.decompress(value))
    if not isinstance(data, dict):
        raise ValueError("registry snapshot is not a JSON object")
    return data
