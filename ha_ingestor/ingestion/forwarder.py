"""The forwarder: outbox → hop, oldest first, a few batches in flight, removed only after enrichment's 2xx.

Batches adapt to the load: when the hop is idle a batch leaves after ``BATCH_MAX_DELAY_MS`` (or at once when
``BATCH_MAX_EVENTS`` are waiting); while batches are in flight the next one leaves when one of them returns or
once it holds a fifth of ``BATCH_MAX_EVENTS`` (1,000 by default), so a quiet stream travels with a few
milliseconds of delay and a busy one in batches of a thousand or more, without waiting behind a single
batch's round trip. Up to ``max_in_flight`` batches travel at once (then the next waits until one returns
and takes everything waiting, up to ``BATCH_MAX_EVENTS``), so enrichment converts one while the store writes
another; points are idempotent and carry their own times, so the order in which batches land does not matter.
Transient failures (enrichment down, timeouts, 5xx, 429, spool full) are retried forever with capped,
jittered backoff: the events are safe in the outbox meanwhile. A refusal is never retried as is: 413 splits
the batch, 400/422 bisect it until the refused events stand alone (they move to the outbox's
``rejected`` table, visible in /status), and 401/403 wait for a person to fix the token. Any other 4xx
(404 from a wrong ENRICHMENT_URL, a proxy's 405 or 421) says nothing about the events: the hop reports it
as unavailable, and the batch waits.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence

from ..errors import HopRejected, HopUnavailable
from ..hop.base import Hop
from ..metrics import Registry
from .outbox import Outbox

log = logging.getLogger(__name__)

Row = tuple[int, bytes]


class Forwarder:
    def __init__(
        self, outbox: Outbox, hop: Hop, metrics: Registry, *, home_id: str = "", max_events: int = 5000,
        max_delay: float = 0.05, max_backoff: float = 5.0, max_in_flight: int = 3,
    ) -> None:
        self.outbox = outbox
        self.hop = hop
        self.home_id = home_id
        self.max_events = max_events
        self.max_delay = max_delay
        self.max_backoff = max_backoff
        self.max_in_flight = max(1, max_in_flight)
        # At 20,000 events/s, waiting for the batch in flight to return before sending the next one made a
        # round trip the limit (~19,000/s, p99 ~1 s); sending at 1,000 kept up, p99 ~0.5 s.
        self.busy_batch = max(1, max_events // 5)
        self.in_flight_rows = 0
        self.new_rows = asyncio.Event()
        self.problem = ""  # why forwarding is stuck, for /health and /status
        self.last_forward = 0.0
        self._sent = metrics.counter("events_forwarded", "Events enrichment took (2xx)")
        self._batches = metrics.counter("batches_forwarded", "Batches enrichment took (2xx)")
        self._retries = metrics.counter("hop_retries", "Hop requests retried after a transient failure")

    def notify(self) -> None:
        """Called after each outbox commit."""
        self.new_rows.set()

    async def run(self) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        after = 0  # every row up to this id is in flight or gone
        try:
            while True:
                if len(in_flight) >= self.max_in_flight:
                    await self._reap(in_flight, asyncio.FIRST_COMPLETED)
                    continue
                rows = await self.outbox.peek(after, self.max_events)
                if in_flight:
                    if len(rows) < self.busy_batch:
                        # Let this batch grow to busy_batch, unless a batch in flight comes back first.
                        if await self._wait_enough_or_returned(in_flight):
                            continue
                        rows = await self.outbox.peek(after, self.max_events)
                elif not rows:
                    self.new_rows.clear()
                    await self.new_rows.wait()
                    continue
                elif len(rows) < self.max_events and self.max_delay > 0:
                    await self._linger()
                    rows = await self.outbox.peek(after, self.max_events)
                if not rows:
                    # The count said events were waiting but none is readable: never spin on the event loop.
                    await asyncio.sleep(self.max_delay or 0.005)
                    continue
                after = rows[-1][0]
                self.in_flight_rows += len(rows)
                in_flight.add(asyncio.create_task(self._deliver_counted(rows), name="forward-batch"))
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    def _waiting_rows(self) -> int:
        return self.outbox.count - self.in_flight_rows

    async def _reap(self, in_flight: set[asyncio.Task[None]], when: str) -> set[asyncio.Task[None]]:
        done, _ = await asyncio.wait(in_flight, return_when=when)
        in_flight -= done
        for task in done:
            task.result()  # a bug in delivery must not pass silently
        return done

    async def _wait_enough_or_returned(self, in_flight: set[asyncio.Task[None]]) -> bool:
        """Wait until ``busy_batch`` events are waiting (False) or a batch in flight returned (True)."""
        while self._waiting_rows() < self.busy_batch:
            self.new_rows.clear()
            waiter = asyncio.ensure_future(self.new_rows.wait())
            done, _ = await asyncio.wait({waiter, *in_flight}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if done - {waiter}:
                await self._reap(in_flight, asyncio.FIRST_COMPLETED)
                return True
        return False

    async def _linger(self) -> None:
        """Idle hop, part of a batch waiting: give it ``max_delay`` to fill."""
        deadline = time.monotonic() + self.max_delay
        while self._waiting_rows() < self.max_events and (remaining := deadline - time.monotonic()) > 0:
            self.new_rows.clear()
            try:
                await asyncio.wait_for(self.new_rows.wait(), remaining)
            except TimeoutError:
                break

    async def _deliver_counted(self, rows: Sequence[Row]) -> None:
        try:
            await self.deliver(rows)
        finally:
            self.in_flight_rows -= len(rows)

    async def deliver(self, rows: Sequence[Row]) -> None:
        """Deliver rows until enrichment took them (or refused some for good); then remove them.

        A refused batch (400/422, 413) is split into parts delivered one after the other; a transient failure
        retries only the part that failed, never parts enrichment already took or refused.
        """
        parts = [rows]
        delay = 0.2
        while parts:
            part = parts[0]
            try:
                await self.hop.send(self.home_id, [body for _, body in part])
            except HopUnavailable as exc:
                self._note(f"enrichment unavailable: {exc}")
                wait = exc.retry_after if exc.retry_after is not None else delay
                delay = min(self.max_backoff, delay * 2)
            except HopRejected as exc:
                if exc.status not in (401, 403):
                    parts[:1] = await self._refused(part, exc)
                    continue
                self._note(f"enrichment refused our credentials (HTTP {exc.status}): check API_TOKEN")
                wait = 30.0  # a person has to fix the token; keep the events, ask again now and then
            else:
                parts.pop(0)
                await self.outbox.remove([row_id for row_id, _ in part])
                self._sent.inc(len(part))
                self._batches.inc()
                continue
            self._retries.inc()
            await asyncio.sleep(wait * random.uniform(0.5, 1.0))
        if self.problem:
            log.info("forwarding resumed", extra={"after": self.problem})
            self.problem = ""
        self.last_forward = time.time()

    async def _refused(self, part: Sequence[Row], exc: HopRejected) -> list[Sequence[Row]]:
        """What is left to send of a part enrichment refused (400/422, 413): its two halves, or, for one event
        alone, nothing (it moves to the outbox's ``rejected`` table)."""
        if len(part) > 1:
            middle = len(part) // 2
            return [part[:middle], part[middle:]]
        log.error("enrichment refused an event for good; kept in the outbox's rejected table",
                  extra={"status": exc.status, "reason": exc.reason[:300]})
        await self.outbox.reject(part, f"HTTP {exc.status}: {exc.reason}")
        return []

    def _note(self, problem: str) -> None:
        if problem != self.problem:
            log.warning("forwarding delayed", extra={"reason": problem})
        self.problem = problem
