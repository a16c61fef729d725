"""How the forwarder cuts batches: a quiet stream waits for the batch in flight; a busy one does not wait
behind it once a fifth of BATCH_MAX_EVENTS is waiting; with every slot taken the next batch takes everything
waiting, up to BATCH_MAX_EVENTS. Every event arrives exactly once either way.

A real HTTP server on localhost plays enrichment (answering each batch after a fixed delay) and records what
it got; the outbox is a real SQLite file.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiohttp import web

from ha_ingestor.harness.ports import serving
from ha_ingestor.hop.http import HttpHop
from ha_ingestor.ingestion.forwarder import Forwarder
from ha_ingestor.ingestion.outbox import Outbox
from ha_ingestor.metrics import Registry


@dataclass
class Enrichment:
    delay: float
    batches: list[tuple[float, int, int]] = field(default_factory=list)  # (arrived, events, others in flight)
    events: list[int] = field(default_factory=list)
    in_flight: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.batches.append((time.monotonic(), len(body["events"]), self.in_flight))
        self.in_flight += 1
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        self.events.extend(event["n"] for event in body["events"])
        return web.json_response({"accepted": len(body["events"])})


@asynccontextmanager
async def running(tmp_path: Path, delay: float, max_events: int = 100) -> AsyncIterator[tuple[Enrichment, Outbox]]:
    enrichment = Enrichment(delay)
    app = web.Application()
    app.router.add_post("/events/batch", enrichment.handle)
    async with serving(app) as url:
        async with _forwarding(tmp_path, url, max_events) as outbox:
            yield enrichment, outbox


@asynccontextmanager
async def _forwarding(tmp_path: Path, url: str, max_events: int) -> AsyncIterator[Outbox]:
    outbox = Outbox(tmp_path / "outbox.sqlite", max_events=1_000_000, synchronous="normal", metrics=Registry())
    hop = HttpHop(url)
    forwarder = Forwarder(outbox, hop, Registry(), max_events=max_events, max_delay=0.005, max_in_flight=3)
    original_append = outbox.append

    async def append(bodies: list[bytes], watermark_us: int | None = None) -> None:
        await original_append(bodies, watermark_us)
        forwarder.notify()

    outbox.append = append  # type: ignore[method-assign]  # the service notifies after each commit the same way
    task = asyncio.ensure_future(forwarder.run())
    try:
        yield outbox
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await hop.close()
        outbox.close()


def _events(start: int, count: int) -> list[bytes]:
    return [orjson.dumps({"n": n}) for n in range(start, start + count)]


async def _delivered(enrichment: Enrichment, outbox: Outbox, total: int) -> None:
    for _ in range(1000):
        if len(enrichment.events) >= total and outbox.count == 0:
            return
        await asyncio.sleep(0.01)


def test_a_quiet_stream_waits_for_the_batch_in_flight(tmp_path: Path) -> None:
    async def run() -> Enrichment:
        async with running(tmp_path, delay=0.3) as (enrichment, outbox):
            await outbox.append(_events(0, 5))
            await asyncio.sleep(0.1)  # the first batch is at enrichment now
            for start in range(5, 15, 2):  # 10 more events, far below a fifth of 100
                await outbox.append(_events(start, 2))
                await asyncio.sleep(0.01)
            await _delivered(enrichment, outbox, 15)
            return enrichment

    enrichment = asyncio.run(run())
    assert sorted(enrichment.events) == list(range(15))
    assert [events for _, events, _ in enrichment.batches] == [5, 10]
    assert all(others == 0 for _, _, others in enrichment.batches)  # never two at once


def test_a_busy_stream_sends_the_next_batch_without_waiting_and_fills_batches_when_every_slot_is_taken(
        tmp_path: Path) -> None:
    async def run() -> Enrichment:
        async with running(tmp_path, delay=0.5) as (enrichment, outbox):
            sent = 0
            for _ in range(60):  # 600 events in ~0.6 s, each round trip 0.5 s
                await outbox.append(_events(sent, 10))
                sent += 10
                await asyncio.sleep(0.01)
            await _delivered(enrichment, outbox, sent)
            return enrichment

    enrichment = asyncio.run(run())
    assert sorted(enrichment.events) == list(range(600))  # each exactly once
    sizes = [events for _, events, _ in enrichment.batches]
    assert max(others for _, _, others in enrichment.batches) == 2  # three in flight at once
    assert all(size <= 100 for size in sizes)
    # Before the first batch came back, the next ones left at 20 events (a fifth of 100), not at 100.
    first_back = enrichment.batches[0][0] + 0.5
    early = [events for arrived, events, _ in enrichment.batches[1:] if arrived < first_back]
    assert early and all(20 <= size < 100 for size in early)
    # Once three were out, the next took everything waiting: full batches.
    assert sizes.count(100) >= 2
