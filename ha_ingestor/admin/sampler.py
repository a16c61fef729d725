"""Scrapes the other services' /metrics every few seconds and keeps an hour of it, for /stats and the chart."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from . import scrape, stats

if TYPE_CHECKING:
    from .api import Peers

log = logging.getLogger(__name__)

# Five seconds: fine enough for a 1-minute rate, and an hour of compact scrapes stays well under a megabyte.
SAMPLE_INTERVAL_S = 5.0
KEEP_S = 3600.0 + 60.0


class Sampler:
    def __init__(self, peers: Peers, *, interval: float = SAMPLE_INTERVAL_S, keep: float = KEEP_S) -> None:
        self.peers = peers
        self.interval = interval
        self.keep = keep
        self.history: deque[stats.Sample] = deque(maxlen=int(keep / interval) + 2)
        self.up: dict[str, bool] = dict.fromkeys(stats.SERVICES, False)  # did the last scrape get /metrics

    async def scrape(self) -> tuple[stats.Sample, dict[str, scrape.Series | None], dict[str, Any]]:
        """A fresh scrape of both services: (compact sample, full series, /status bodies or errors)."""
        names = stats.SERVICES
        answers = await asyncio.gather(*(self.peers.get(n, "/metrics") for n in names),
                                       *(self.peers.get(n, "/status") for n in names))
        now = time.time()
        full: dict[str, scrape.Series | None] = {}
        status: dict[str, Any] = {}
        for name, (code, body), (s_code, s_body) in zip(names, answers[:2], answers[2:], strict=True):
            full[name] = scrape.parse(body) if code == 200 and isinstance(body, str) else None
            self.up[name] = full[name] is not None
            if s_code == 200 and isinstance(s_body, dict):
                status[name] = s_body
            else:
                status[name] = {"error": str(s_body) if s_code == 0 else f"/status answered HTTP {s_code}"}
        sample = stats.Sample(now, {n: None if v is None else stats.compact(v) for n, v in full.items()})
        return sample, full, status

    def add(self, sample: stats.Sample) -> None:
        self.history.append(sample)
        while self.history and self.history[0].time < sample.time - self.keep:
            self.history.popleft()

    async def run(self) -> None:
        """Scrape every ``interval`` seconds until cancelled."""
        while True:
            started = time.monotonic()
            try:
                sample, _, _ = await self.scrape()
                self.add(sample)
            except Exception:  # a bug here must not end admin-api; it shows as a gap in the chart
                log.exception("scraping the services failed")
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))
