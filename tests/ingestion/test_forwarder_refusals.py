"""What the forwarder does with answers other than 2xx, against a real HTTP server on localhost that plays
enrichment and a real outbox file.

The server is scripted: it answers 422 for batches holding a poison event and, in the first test, 503 once
at a chosen moment — an enrichment that is briefly unavailable in the middle of a split, a timing a real one
cannot be made to hit on demand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiohttp import web

from ha_ingestor.harness.ports import serving
from ha_ingestor.hop.http import HttpHop
from ha_ingestor.ingestion.forwarder import Forwarder
from ha_ingestor.ingestion.outbox import Outbox
from ha_ingestor.metrics import Registry

POISON = 3


@dataclass
class Enrichment:
    answer: Callable[[list[int]], int]  # the events of a batch -> HTTP status
    taken: list[int] = field(default_factory=list)
    batches: list[tuple[list[int], int]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        events = [event["n"] for event in orjson.loads(await request.read())["events"]]
        status = self.answer(events)
        self.batches.append((events, status))
        if status == 200:
            self.taken.extend(events)
            return web.json_response({"accepted": len(events)})
        return web.json_response({"error": f"scripted {status}"}, status=status)


async def _forward(tmp_path: Path, enrichment: Enrichment, count: int, until: Callable[[Outbox], bool]
                   ) -> tuple[Outbox, set[str]]:
    """Append ``count`` events in one commit, forward them until ``until(outbox)``; return the closed outbox and
    the problems the forwarder reported meanwhile."""
    app = web.Application()
    app.router.add_post("/events/batch", enrichment.handle)
    async with serving(app) as url:
        outbox = Outbox(tmp_path / "outbox.sqlite", max_events=1000, synchronous="normal", metrics=Registry())
        hop = HttpHop(url)
        forwarder = Forwarder(outbox, hop, Registry(), max_events=100, max_delay=0.005, max_backoff=0.05)
        await outbox.append([orjson.dumps({"n": n}) for n in range(count)])
        task = asyncio.ensure_future(forwarder.run())
        problems = set()
        try:
            for _ in range(1000):
                if until(outbox):
                    break
                problems.add(forwarder.problem)
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await hop.close()
        outbox.close()
        return outbox, problems - {""}


def test_a_transient_failure_in_the_middle_of_a_split_retries_only_the_part_that_failed(tmp_path: Path) -> None:
    unavailable_once = [True]

    def answer(events: list[int]) -> int:
        if POISON in events:
            return 422
        if events[0] > POISON and unavailable_once[0]:  # the second half, after the poison was dealt with
            unavailable_once[0] = False
            return 503
        return 200

    enrichment = Enrichment(answer)
    outbox, _ = asyncio.run(_forward(tmp_path, enrichment, 8, lambda o: o.count == 0 and not unavailable_once[0]))
    assert sorted(enrichment.taken) == [0, 1, 2, 4, 5, 6, 7]  # each once: nothing taken was sent again
    assert outbox.count == 0 and outbox.bytes == 0
    reopened = Outbox(tmp_path / "outbox.sqlite", max_events=1000, synchronous="normal", metrics=Registry())
    try:
        rejected = asyncio.run(reopened.rejected())
        assert [row["event"] for row in rejected] == [{"n": POISON}]
        assert reopened.count == 0
    finally:
        reopened.close()


def test_a_404_keeps_the_events_waiting_instead_of_rejecting_them(tmp_path: Path) -> None:
    # A wrong ENRICHMENT_URL path (or a proxy answering 404) for the first 20 requests, then the right one.
    def answer(events: list[int]) -> int:
        return 404 if len(enrichment.batches) < 20 else 200

    enrichment = Enrichment(answer)
    _, problems = asyncio.run(_forward(tmp_path, enrichment, 50, lambda o: o.count == 0))
    assert sorted(enrichment.taken) == list(range(50))
    assert any("HTTP 404" in p and "ENRICHMENT_URL" in p for p in problems), problems
    assert all(len(events) == 50 for events, status in enrichment.batches if status == 404)  # never split
    reopened = Outbox(tmp_path / "outbox.sqlite", max_events=1000, synchronous="normal", metrics=Registry())
    try:
        assert asyncio.run(reopened.rejected()) == [] and reopened.count == 0
    finally:
        reopened.close()
