"""The in-process hop of ``ha-ingestor up``: the same batch body, handed to enrichment directly.

Same contract as the HTTP hop: ``send`` returns once enrichment made the batch durable (stored or
spooled), so ingestion's outbox removes events on exactly the same condition in both shapes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from ..enrichment.pipeline import Pipeline
from ..enrichment.spool import SpoolFull
from ..errors import EnrichmentFailed, EventInvalid, HopRejected, HopUnavailable, StoreUnavailable
from ..metrics import Registry
from .base import batch_body

log = logging.getLogger(__name__)


class LocalHop:
    name = "local"

    def __init__(self, pipeline: Pipeline, metrics: Registry | None = None) -> None:
        self.pipeline = pipeline
        metrics = metrics or Registry()
        self._latency = metrics.histogram("hop_request_seconds", "Time of one hop request, send to 2xx")

    async def send(self, home_id: str, events: Sequence[bytes]) -> None:
        started = time.perf_counter()
        try:
            await self.pipeline.accept_body(batch_body(home_id, events))
        except EventInvalid as exc:
            raise HopRejected(422, str(exc)) from None
        except ValueError as exc:
            raise HopRejected(400, str(exc)) from None
        except SpoolFull as exc:
            raise HopUnavailable(f"store unavailable and spool full: {exc}", 5.0) from None
        except EnrichmentFailed as exc:  # enrichment's own trouble: the outbox keeps the batch and retries
            log.exception("cannot make an accepted batch durable; the outbox keeps it and retries")
            raise HopUnavailable(f"enrichment could not make the batch durable: {exc}") from None
        self._latency.observe(time.perf_counter() - started)

    async def put_registry(self, home_id: str, payload: dict[str, Any]) -> None:
        try:
            self.pipeline.registries.put(home_id, payload)
        except ValueError as exc:
            raise HopRejected(422, str(exc)) from None

    async def check(self) -> None:
        try:
            await self.pipeline.store.check()
        except StoreUnavailable as exc:
            raise HopUnavailable(f"store: {exc}") from None

    async def close(self) -> None:
        return None
