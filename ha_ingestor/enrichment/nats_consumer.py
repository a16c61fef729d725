"""The NATS end of enrichment (``HOP=nats``): pull batches from JetStream, make them durable, only then ack.

Every enrichment process is one worker of the same durable pull consumer, so the stream's messages are
spread over all of them and a worker that dies leaves its unacked messages to the others after
``ack_wait``. For each message:

* store it through :meth:`Pipeline.accept` and ack; events that are not Home Assistant events (the HTTP
  hop's 400/422) become dead letters one by one, the rest of the batch is stored, and the message is acked:
  a malformed message is never redelivered;
* the store down: keep the message, tell the server it is still in progress and retry in place, fetching
  nothing more meanwhile; this does not count as a delivery. The stream, not the worker's spool, holds the
  backlog of an outage, so a worker that dies meanwhile leaves nothing behind: its message goes to another
  worker after ``ack_wait``, and every worker drains the stream once the store is back;
* anything else (a bug, a crash): nak with backoff; a message delivered more than ``max_deliver`` times is
  kept as a dead letter and terminated before it is processed again (so a message that crashes workers
  is isolated too). The consumer's own ``max_deliver`` is one more than ours, so the server never gives up
  on a message before a worker has dead-lettered it.

Points are idempotent (same series and time), so a redelivered message overwrites its own points.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import msgspec
import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.kv import KeyValue

from ..errors import EventInvalid, StoreUnavailable
from ..hop.base import batch_body
from ..hop.jetstream import JetStreamConfig, connect, decode_registry, ensure_stream, registry_bucket
from ..metrics import Registry
from ..model import Batch, Event, decode_batch, decode_event, encode, validate
from ..settings import HOME_ID_PATTERN
from .pipeline import Pipeline

log = logging.getLogger(__name__)

T = TypeVar("T")


NOT_YET = "nats: not consuming yet"


class NatsConsumer:
    def __init__(self, pipeline: Pipeline, config: JetStreamConfig, metrics: Registry) -> None:
        self.pipeline = pipeline
        self.config = config
        self.problem = NOT_YET  # /health is 503 until the worker really consumes
        self._acked = metrics.counter("nats_messages_acked", "Messages made durable (or dead-lettered), then acked")
        self._naked = metrics.counter("nats_messages_naked", "Messages handed back after an unexpected error")
        self._dead = metrics.counter("nats_messages_dead_lettered", "Messages kept as dead letters")

    async def run(self) -> None:
        """Connect (retrying forever), verify the stream, then consume until cancelled."""
        delay = 0.5
        while True:
            try:
                nc = await connect(self.config, "ha-ingestor enrichment")
                break
            except (OSError, TimeoutError, nats.errors.Error) as exc:
                self._note(f"nats unreachable: {exc.__class__.__name__}: {exc}")
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
        try:
            js = nc.jetstream(timeout=10)
            await self._retrying(lambda: ensure_stream(js, self.config), "stream")
            kv = await self._retrying(lambda: registry_bucket(js, self.config), "registry bucket")
            async with _registry_watch(kv, self.pipeline):
                await self._consume(nc, js)
        finally:
            with contextlib.suppress(Exception):
                await nc.close()

    async def _retrying(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        delay = 0.5
        while True:
            try:
                return await call()
            except (TimeoutError, nats.errors.Error) as exc:
                self._note(f"nats {what} not ready: {exc}")
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)

    async def _consume(self, nc: Client, js: JetStreamContext) -> None:
        config = ConsumerConfig(
            durable_name=self.config.consumer, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.config.ack_wait, max_deliver=self.config.max_deliver + 1,
            max_ack_pending=-1, filter_subject=f"{self.config.prefix}.*.batch",
        )
        sub = await js.pull_subscribe(f"{self.config.prefix}.*.batch", durable=self.config.consumer,
                                      stream=self.config.stream, config=config)
        log.info("nats: consuming", extra={"stream": self.config.stream, "consumer": self.config.consumer})
        self._resolved()
        while True:
            try:
                messages = await sub.fetch(self.config.fetch_batch, timeout=2.0)
            except TimeoutError:
                # Nothing waiting, or reconnecting (the client resubscribes): /health must tell them apart.
                if nc.is_connected:
                    self._resolved()
                else:
                    self._note("nats: disconnected, reconnecting")
                continue
            except nats.errors.Error as exc:
                self._note(f"nats fetch failed: {exc}")
                await asyncio.sleep(0.5)
                continue
            self._resolved()
            # The messages after the one in hand wait too (behind a slow store, or one waiting out an outage):
            # keep each in progress until its turn, or ack_wait would hand it to another worker and count a
            # delivery against max_deliver.
            waiting = {id(msg): asyncio.create_task(_in_progress(msg, self.config.ack_wait)) for msg in messages}
            try:
                for msg in messages:
                    await _stop(waiting.pop(id(msg)))
                    await self.handle(msg)
            finally:
                for task in waiting.values():
                    await _stop(task)

    async def handle(self, msg: Msg) -> None:
        """Make one message durable (or a dead letter), then ack it."""
        delivered = msg.metadata.num_delivered or 1
        home_id = _home_of(msg.subject)
        if delivered > self.config.max_deliver:
            await self._dead_letter(home_id, msg.data, f"delivered {delivered - 1} times without being processed")
            await msg.term()
            return
        keepalive = asyncio.create_task(_in_progress(msg, self.config.ack_wait), name="nats-in-progress")
        try:
            await self._accept(home_id, msg.data)
        except Exception as exc:
            log.exception("nats: message not processed; handing it back", extra={"delivered": delivered})
            self._naked.inc()
            if delivered >= self.config.max_deliver:
                await self._dead_letter(home_id, msg.data, f"failed {delivered} times: {exc}")
                await msg.term()
            else:
                await msg.nak(delay=min(30.0, 0.5 * 2**delivered))
            return
        finally:
            await _stop(keepalive)
        await msg.ack()
        self._acked.inc()

    async def _accept(self, home_id: str, body: bytes) -> None:
        try:
            batch = decode_batch(body)
            raws = [encode(raw) for raw in batch.events]
        except ValueError as exc:
            await self._dead_letter(home_id, body, f"malformed batch: {exc}")
            return
        except EventInvalid:
            # One bad event spoils the typed decode of the whole batch: take it apart (each event's bytes as
            # sent, not decoded and encoded again) and judge each event.
            try:
                loose = _loose_batch.decode(body)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                await self._dead_letter(home_id, body, f"malformed batch: {exc}")
                return
            batch, raws = Batch([], loose.home_id), [bytes(item) for item in loose.events]
        if batch.home_id != home_id:
            await self._dead_letter(home_id, body, f"batch of home {batch.home_id!r} on the subject of {home_id!r}")
            return
        events: list[Event] = []
        kept: list[bytes] = []
        for i, raw_json in enumerate(raws):
            try:
                events.append(validate(decode_event(raw_json), i))
                kept.append(raw_json)
            except (EventInvalid, ValueError) as exc:
                await self._dead_letter(home_id, raw_json, str(exc))
        if not events:
            return
        if len(kept) != len(batch.events):
            body = batch_body(home_id, kept)
            batch = decode_batch(body)
        attempt = self.pipeline.accept
        delay, waited = 0.5, False
        while True:
            try:
                await attempt(body, batch, events, spool=False)
                break
            except StoreUnavailable as exc:
                # The HTTP hop would spool (202): here the message stays in the stream, in progress.
                self._note(f"store unavailable; batches wait in the stream: {exc}")
                wait = exc.retry_after if exc.retry_after is not None else delay
                await asyncio.sleep(wait * random.uniform(0.8, 1.2))
                delay = min(5.0, delay * 2)
                attempt, waited = self.pipeline.make_durable, True  # counted as received once
        if waited:
            self._resolved()

    async def _dead_letter(self, home_id: str, body: bytes, reason: str) -> None:
        log.error("nats: message kept as a dead letter", extra={"home": home_id, "reason": reason[:300]})
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError:
            body = orjson.dumps(body.decode("utf-8", "replace"))  # dead letters keep JSON: the text as a string
        await self.pipeline.keep_unprocessed(home_id, "unprocessable_batch", [(body, reason)])
        self._dead.inc()

    def _resolved(self) -> None:
        if self.problem == NOT_YET:
            log.info("nats: consuming", extra={"stream": self.config.stream})
        elif self.problem:
            log.info("nats: consuming again", extra={"after": self.problem})
        self.problem = ""

    def _note(self, problem: str) -> None:
        if problem != self.problem:
            log.warning("nats: consuming delayed", extra={"reason": problem})
        self.problem = problem


class _LooseBatch(msgspec.Struct):
    home_id: str = ""
    events: list[msgspec.Raw] = msgspec.field(default_factory=list)


_loose_batch = msgspec.json.Decoder(_LooseBatch)


def _home_of(subject: str) -> str:
    parts = subject.split(".")
    home = parts[-2] if len(parts) >= 3 else ""
    return "" if home == "_" or not HOME_ID_PATTERN.match(home) else home


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # we are being cancelled ourselves (shutdown), not only the task we stopped


async def _in_progress(msg: Msg, ack_wait: float) -> None:
    """While a message is being processed (a slow store), keep the server from redelivering it."""
    while True:
        await asyncio.sleep(max(0.5, ack_wait / 3))
        with contextlib.suppress(nats.errors.Error):
            await msg.in_progress()


@contextlib.asynccontextmanager
async def _registry_watch(kv: KeyValue, pipeline: Pipeline) -> AsyncIterator[None]:
    """Every worker follows the registry bucket: each home's latest snapshot, as ingestion put it."""

    async def follow() -> None:
        while True:  # a broken watch (NATS reconnecting, a timeout) is started again, never left dead
            try:
                watcher = await kv.watchall()
                async for entry in watcher:
                    if entry is None or entry.value is None or entry.operation is not None:
                        continue  # the end of the initial values, or a delete
                    try:
                        pipeline.registries.put("" if entry.key == "_" else entry.key, decode_registry(entry.value))
                    except Exception as exc:  # zlib.error, a malformed snapshot: this one only
                        log.warning("nats: registry snapshot ignored", extra={"home": entry.key, "error": str(exc)})
            except Exception as exc:
                log.warning("nats: registry watch interrupted; watching again", extra={
                    "error": f"{exc.__class__.__name__}: {exc}"})
            await asyncio.sleep(2.0)

    task = asyncio.create_task(follow(), name="nats-registry-watch")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
