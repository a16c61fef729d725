"""Enrichment's core: validate a batch, turn its events into points, and make it durable.

A batch is answered 2xx only once it is durable: written to the store, or appended to the spool. While
the spool holds anything, new batches queue behind it (first in, first out) and the drainer writes them
as soon as the store is back, honouring its Retry-After. Points the store refuses for good become dead
letters and the rest of their batch is written.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import EnrichmentFailed, EventInvalid, StoreUnavailable
from ..metrics import Histogram, Registry
from ..model import Batch, Event, RawEvent, decode_batch, decode_event, encode, validate
from ..sinks.point import Point, Rejected, Store
from . import enrich
from .deadletters import DeadLetters
from .homes import Homes
from .registry import RegistryCache
from .spool import Spool, Spooled, SpoolFull

# Dead letters replayed in one store write.
REPLAY_CHUNK = 1000

log = logging.getLogger(__name__)

Converter = Callable[[Event, enrich.Context], list[Point]]

# End-to-end lag is recorded per event, from milliseconds to an hour-long backlog: 12 buckets a decade, plus
# a bound at each latency target of docs/PERFORMANCE.md (100 ms is on that grid, 250 ms is not), so whether
# a p99 is within its target is read exactly rather than from the bucket above it (215-261 ms).
LAG_BUCKETS = tuple(sorted({round(10 ** (k / 12) / 1000, 6) for k in range(0, 12 * 6 + 8)} | {0.25}))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one accepted batch."""

    events: int
    stored: int = 0
    spooled: int = 0
    dead_lettered: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"accepted": self.events, "stored": self.stored, "spooled": self.spooled,
                "dead_lettered": self.dead_lettered}


def percentile_from_buckets(hist: Histogram, q: float) -> float | None:
    """Percentile from cumulative buckets, interpolated inside the bucket it falls in."""
    total = sum(hist.counts)
    if total == 0:
        return None
    rank = q * total
    running = 0
    lower = 0.0
    for bound, count in zip((*hist.buckets, hist.buckets[-1] * 2), hist.counts, strict=True):
        if running + count >= rank and count:
            return lower + (bound - lower) * (rank - running) / count
        running += count
        lower = bound
    return hist.buckets[-1]


class Pipeline:
    """Turns accepted batches into stored points (or spooled batches, or dead letters)."""

    def __init__(
        self,
        store: Store,
        spool: Spool,
        dead_letters: DeadLetters,
        registries: RegistryCache,
        metrics: Registry,
        *,
        convert: Converter = enrich.to_points,
        weather_entity: str = "",
        ignore_attributes: frozenset[str] = frozenset(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.spool = spool
        self.dead_letters = dead_letters
        self.registries = registries
        self.convert = convert
        self.weather_entity = weather_entity
        self.ignore_attributes = ignore_attributes
        self.clock = clock
        self._weather: dict[str, enrich.Weather] = {}
        self.store_down_reason = ""
        self.drain_problem = ""  # why the spool cannot be drained though the store may be up (e.g. disk full)
        self.last_store_write = 0.0
        self.last_event_time = 0.0
        self._wake = asyncio.Event()
        self._received = metrics.counter("events_received", "Events accepted by enrichment")
        self._stored = metrics.counter("events_stored", "Events whose points the store acknowledged")
        self._spooled = metrics.counter("events_spooled", "Events appended to the spool")
        self._batches = metrics.counter("batches_received", "Batches accepted by enrichment")
        self._rejected_batches = metrics.counter("batches_refused_spool_full", "Batches answered 503: spool full")
        self._outages = metrics.counter("store_outages", "Times the store became unavailable")
        self._write_failures = metrics.counter("store_write_failures",
                                               "Store writes that failed for a transient reason (retried or spooled)")
        self.lag = metrics.histogram("end_to_end_lag_seconds", "Event time to store acknowledgement, per event",
                                     buckets=LAG_BUCKETS)
        self.homes = Homes(metrics)
        metrics.gauge("store_available", "1 when the last store write succeeded",
                      read=lambda: 0.0 if self.store_down_reason else 1.0)
        metrics.gauge("last_event_time_seconds", "Time fired (Unix s) of the newest event stored; 0 before any",
                      read=lambda: self.last_event_time)
        metrics.gauge("last_store_write_time_seconds", "Unix time of the last successful store write; 0 before any",
                      read=lambda: self.last_store_write)

    # ---------------------------------------------------------------- intake

    async def accept_body(self, body: bytes) -> Outcome:
        """Decode, validate and make durable one ``{"events": [...]}`` body.

        Raises EventInvalid (naming the field) or ValueError (malformed JSON) before anything is kept,
        SpoolFull when the store is down and the spool has no room, EnrichmentFailed (see :meth:`accept`).
        """
        batch = decode_batch(body)
        events = [validate(raw, i) for i, raw in enumerate(batch.events)]
        return await self.accept(body, batch, events)

    async def accept(self, body: bytes, batch: Batch, events: Sequence[Event], *, spool: bool = True) -> Outcome:
        """Count a batch as received and make it durable (see :meth:`make_durable`). Raises SpoolFull,
        StoreUnavailable (``spool=False``), or EnrichmentFailed for any failure of enrichment's own."""
        self._received.inc(len(events))
        self.homes[batch.home_id].received.inc(len(events))
        self._batches.inc()
        self._track_weather(batch.home_id, events)
        try:
            return await self.make_durable(body, batch, events, spool=spool)
        except (SpoolFull, StoreUnavailable):
            raise
        except Exception as exc:
            raise EnrichmentFailed(f"{exc.__class__.__name__}: {exc}") from exc

    async def make_durable(self, body: bytes, batch: Batch, events: Sequence[Event], *, spool: bool = True
                           ) -> Outcome:
        """Store the batch, or spool it while the store is down.

        ``spool=False`` is for a hop that keeps the batch itself until it is stored (HOP=nats: the stream):
        a store outage then raises StoreUnavailable, and the caller retries here, without counting the
        batch as received again.
        """
        if spool and (self.spool.batches or self.store_down_reason):
            return await self._to_spool(batch.home_id, body, len(events))
        try:
            stored, dead = await self._write_checked(batch.home_id, events)
        except StoreUnavailable as exc:
            self._store_down(str(exc), "spooling accepted batches" if spool else "batches wait in the NATS stream")
            if not spool:
                raise
            return await self._to_spool(batch.home_id, body, len(events))
        return Outcome(len(events), stored=stored, dead_lettered=dead)

    async def _to_spool(self, home_id: str, body: bytes, count: int) -> Outcome:
        try:
            await self.spool.append(home_id, body, count)
        except SpoolFull:
            self._rejected_batches.inc()
            raise
        self._spooled.inc(count)
        self.homes[home_id].spooled.inc(count)
        self._wake.set()
        return Outcome(count, spooled=count)

    def _context(self, home_id: str) -> enrich.Context:
        return enrich.Context(home_id, self.registries.get(home_id), self._weather.get(home_id),
                              self.ignore_attributes)

    def _track_weather(self, home_id: str, events: Sequence[Event]) -> None:
        if not self.weather_entity:
            return
        for event in events:
            change = event.state_change
            if change is not None and change.entity_id == self.weather_entity and change.new_state is not None:
                temperature = change.new_state.attributes.get("temperature")
                self._weather[home_id] = enrich.Weather(
                    change.new_state.state,
                    float(temperature) if isinstance(temperature, int | float) and not isinstance(temperature, bool)
                    else None,
                )

    async def _write(self, home_id: str, events: Sequence[Event]) -> tuple[int, int]:
        """Write the points of ``events``; returns (events stored, points dead-lettered)."""
        ctx = self._context(home_id)
        convert = self.convert
        points = [point for event in events for point in convert(event, ctx)]
        rejected = await self.store.write(points) if points else []
        now = self.clock()
        self.last_store_write = now
        if self.store_down_reason:
            log.info("store available again", extra={"after": self.store_down_reason})
            self.store_down_reason = ""
        if rejected:
            await self.keep_dead_letters(home_id, rejected, [_event_json(r.point.source) for r in rejected])
            log.warning("store refused points for good; kept as dead letters",
                        extra={"count": len(rejected), "first_reason": rejected[0].reason[:300]})
        self._stored.inc(len(events))
        self._record_lag(home_id, now, events)
        return len(events), len(rejected)

    def _record_lag(self, home_id: str, now: float, events: Sequence[Event]) -> None:
        # Float seconds: a lag is read to the millisecond, and exact microseconds cost twice as much per event.
        fired = [event.time_fired.timestamp() for event in events]
        lags = [max(0.0, now - seconds) for seconds in fired]
        self.lag.observe_many(lags)
        newest = max(fired, default=0.0)
        self.homes.stored(home_id, lags, newest)
        if newest:
            self.last_event_time = newest

    def _store_down(self, reason: str, meanwhile: str = "spooling accepted batches") -> None:
        self._write_failures.inc()
        if not self.store_down_reason:
            self._outages.inc()
            log.warning(f"store unavailable; {meanwhile}", extra={"reason": reason})
        self.store_down_reason = reason

    # ---------------------------------------------------------------- drain

    async def drain_forever(self, max_backoff: float = 5.0) -> None:
        """Write spooled batches, oldest first, whenever there are any. Never ends on an error: a store outage
        or a failing SQLite (disk full) is retried with backoff, and ``drain_problem`` says why meanwhile."""
        delay = 0.5
        while True:
            try:
                self._wake.clear()  # before looking: a batch spooled from here on wakes the wait below
                item = await self.spool.oldest()
                if item is None:
                    if self.store_down_reason:
                        await self._probe_store()
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout=1.0 if self.store_down_reason else None)
                    except TimeoutError:
                        pass
                    continue
                await self._drain(item)
            except StoreUnavailable as exc:
                self._store_down(str(exc))
                wait = exc.retry_after if exc.retry_after is not None else delay
            except Exception as exc:  # e.g. sqlite3.Error: the batch stays spooled and is tried again
                if not self.drain_problem:
                    log.error("cannot drain the spool; retrying", extra={"error": f"{exc.__class__.__name__}: {exc}"})
                self.drain_problem = f"{exc.__class__.__name__}: {exc}"
                wait = delay
            else:
                if self.drain_problem:
                    log.info("draining the spool again", extra={"after": self.drain_problem})
                    self.drain_problem = ""
                delay = 0.5
                if not len(self.spool):
                    log.info("spool drained")
                continue
            delay = min(max_backoff, delay * 2)
            await asyncio.sleep(wait * random.uniform(0.8, 1.2))

    async def _drain(self, item: Spooled) -> None:
        """Write one spooled batch, then remove it. Events that no longer validate (a newer version checks
        more) become dead letters one by one, each replayable; the rest is written."""
        try:
            batch = decode_batch(item.body)
        except (EventInvalid, ValueError) as exc:  # not even a batch any more
            log.error("spooled batch cannot be decoded; keeping it as a dead letter", extra={"error": str(exc)})
            await self.keep_unprocessed(item.home_id, "unprocessable_batch", [(item.body, str(exc))])
            await self.spool.remove(item)
            return
        events: list[Event] = []
        invalid: list[tuple[RawEvent, str]] = []
        for index, raw in enumerate(batch.events):
            try:
                events.append(validate(raw, index))
            except (EventInvalid, ValueError) as exc:
                invalid.append((raw, str(exc)))
        await self._write_checked(batch.home_id, events)
        if invalid:
            log.error("spooled events no longer valid; keeping them as dead letters", extra={
                "count": len(invalid), "first_reason": invalid[0][1][:300]})
            await self.keep_unprocessed(batch.home_id, "invalid_event",
                                        [(encode(raw), reason) for raw, reason in invalid])
        await self.spool.remove(item)

    async def _write_checked(self, home_id: str, events: Sequence[Event]) -> tuple[int, int]:
        """:meth:`_write`, but an event the conversion raises on (a bug) does not hold up its batch, live or
        spooled: it alone is kept as a dead letter (replayable once fixed) and the rest is written. A failure
        that is not the conversion's (the store, SQLite, the disk) is raised, and the batch is tried again."""
        try:
            return await self._write(home_id, events)
        except (StoreUnavailable, sqlite3.Error, OSError):
            raise
        except Exception:
            failing = self._unconvertible(home_id, events)
            if not failing:
                raise
        log.error("events the conversion cannot take; keeping them as dead letters",
                  extra={"count": len(failing), "first_reason": next(iter(failing.values()))[:300]})
        await self.keep_unprocessed(home_id, "unconvertible_event",
                                    [(encode(e.raw), failing[id(e)]) for e in events if id(e) in failing])
        stored, dead = await self._write(home_id, [event for event in events if id(event) not in failing])
        return stored, dead + len(failing)

    def _unconvertible(self, home_id: str, events: Sequence[Event]) -> dict[int, str]:
        """id(event) → why, for the events the conversion raises on."""
        ctx = self._context(home_id)
        failing: dict[int, str] = {}
        for event in events:
            try:
                self.convert(event, ctx)
            except Exception as exc:
                failing[id(event)] = f"cannot convert: {exc.__class__.__name__}: {exc}"
        return failing

    async def _probe_store(self) -> None:
        try:
            await self.store.check()
        except StoreUnavailable as exc:
            self.store_down_reason = str(exc)
        else:
            log.info("store available again", extra={"after": self.store_down_reason})
            self.store_down_reason = ""

    async def keep_unprocessed(self, home_id: str, kind: str, items: Sequence[tuple[bytes, str]]) -> None:
        """Dead letters for events (or whole batches) that never became points: ``items`` are (JSON, why);
        ``kind`` names the stand-in point each letter shows (``invalid_event``, ``unprocessable_batch``…)."""
        now_ns = int(self.clock() * 1e9)
        await self.keep_dead_letters(home_id, [Rejected(Point(kind, (), {"error": why[:1000]}, now_ns), why)
                                               for _, why in items], [body for body, _ in items])

    async def keep_dead_letters(self, home_id: str, rejected: Sequence[Rejected], event_json: Sequence[bytes]) -> None:
        """Every path to a dead letter: kept, then counted for its home (through ``homes``, which caps how many
        homes get series of their own)."""
        await self.dead_letters.add(home_id, rejected, event_json)
        self.homes[home_id].dead_lettered.inc(len(rejected))

    # ---------------------------------------------------------------- dead letters

    async def replay_dead_letters(self, ids: Sequence[int] | None = None) -> dict[str, int]:
        """Run dead letters through enrichment again (``ids``, else every one kept when the replay began); those
        the store takes are removed, the others keep their place with the new reason."""
        totals = {"replayed": 0, "written": 0, "still_refused": 0}
        if ids is not None:
            self._add(totals, await self._replay(await self.dead_letters.take(ids)))
            return totals
        # In chunks, oldest first, each one store write; letters refused again stay behind the cursor, and
        # those added meanwhile (past ``last``) wait for the next replay, so this always ends.
        after, last = 0, await self.dead_letters.newest_id()
        while after < last:
            taken = [row for row in await self.dead_letters.take(None, after, REPLAY_CHUNK) if row[0] <= last]
            if not taken:
                break
            self._add(totals, await self._replay(taken))
            after = taken[-1][0]
        return totals

    @staticmethod
    def _add(totals: dict[str, int], chunk: dict[str, int]) -> None:
        for key, value in chunk.items():
            totals[key] += value

    async def _replay(self, taken: Sequence[tuple[int, str, bytes]]) -> dict[str, int]:
        owner: dict[int, int] = {}  # id(point) -> its dead letter
        points: list[Point] = []
        refused: dict[int, str] = {}
        for letter_id, home_id, event_json in taken:
            try:
                converted = [point for event in _letter_events(event_json)
                             for point in self.convert(event, self._context(home_id))]
            except Exception as exc:
                refused[letter_id] = f"replay failed: {exc}"
                continue
            for point in converted:
                owner[id(point)] = letter_id
            points.extend(converted)
        for rejected in await self.store.write(points) if points else []:
            refused.setdefault(owner[id(rejected.point)], rejected.reason)
        written = [letter_id for letter_id, _, _ in taken if letter_id not in refused]
        await self.dead_letters.resolve(written, list(refused.items()))
        return {"replayed": len(taken), "written": len(written), "still_refused": len(refused)}

    # ---------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        return {
            "store": dict(self.store.describe()),
            "store_available": not self.store_down_reason,
            "store_reason": self.store_down_reason,
            "spool": self.spool.depth(),
            "dead_letters": self.dead_letters.count,
            "last_store_write": self.last_store_write or None,
            "last_event_time": self.last_event_time or None,
            "homes": sorted(self.registries.homes()),
        }


def _letter_events(body: bytes) -> list[Event]:
    """The events a dead letter holds: one event, or (kept whole when it could not be processed) a batch."""
    try:
        return [validate(decode_event(body))]
    except (EventInvalid, ValueError) as exc:
        try:
            batch = decode_batch(body)
        except (EventInvalid, ValueError):
            raise exc from None
    return [validate(raw, index) for index, raw in enumerate(batch.events)]


def _event_json(source: Any) -> bytes:
    if isinstance(source, RawEvent):
        return encode(source)
    if isinstance(source, bytes):
        return source
    return encode(source)
