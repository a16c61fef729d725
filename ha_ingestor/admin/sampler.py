"""Scrapes every watched instance's /metrics every few seconds and keeps an hour of it, for /stats and the chart."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from . import scrape, stats

if TYPE_CHECKING:
    from .api import Peers

log = logging.getLogger(__name__)

# Five seconds: fine enough for a 1-minute rate, and an hour of compact scrapes stays well under a megabyte
# per instance (per-home series are kept for HOME_KEEP_S only).
SAMPLE_INTERVAL_S = 5.0
KEEP_S = 3600.0 + 60.0


class Sampler:
    def __init__(self, peers: Peers, *, interval: float = SAMPLE_INTERVAL_S, keep: float = KEEP_S) -> None:
        self.peers = peers
        self.interval = interval
        self.keep = keep
        self.history: deque[stats.Sample] = deque(maxlen=int(keep / interval) + 2)
        self.up: dict[str, bool] = dict.fromkeys(peers.all_urls, False)  # did the last scrape get /metrics

    async def scrape(self) -> tuple[stats.Sample, dict[str, scrape.Series | None], dict[str, Any]]:
        """A fresh scrape of every instance: (compact sample, full series, /status bodies or errors), by URL."""
        urls = self.peers.all_urls
        answers = await asyncio.gather(*(self.peers.get_url(u, "/metrics") for u in urls),
                                       *(self.peers.get_url(u, "/status") for u in urls))
        now = time.time()
        full: dict[str, scrape.Series | None] = {}
        status: dict[str, Any] = {}
        for url, (code, body), (s_code, s_body) in zip(urls, answers[:len(urls)], answers[len(urls):], strict=True):
            full[url] = scrape.parse(body) if code == 200 and isinstance(body, str) else None
            self.up[url] = full[url] is not None
            if s_code == 200 and isinstance(s_body, dict):
                status[url] = s_body
            else:
                status[url] = {"error": str(s_body) if s_code == 0 else f"{url}/status answered HTTP {s_code}"}
        sample = stats.Sample(now, {u: None if v is None else _interned(stats.compact(v)) for u, v in full.items()})
        return sample, full, status

    def add(self, sample: stats.Sample) -> None:
        self.history.append(sample)
        while self.history and self.history[0].time < sample.time - self.keep:
            self.history.popleft()
        for old in self.history:  # oldest first: stop at the first one still young enough
            if old.time >= sample.time - stats.HOME_KEEP_S:
                break
            if not old.slim:
                old.series = {u: None if v is None else stats.slim(v) for u, v in old.series.items()}
                old.slim = True

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


def _interned(series: scrape.Series) -> scrape.Series:
    # Every scrape repeats the same series names: one copy of each name for the whole hour.
    return {sys.intern(k): v for k, v in series.items()}
