"""admin-api (:8003): the health of every part, asked live; nothing here is made up."""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from fastapi import FastAPI, Query
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from .. import schemas
from ..enrichment.api import DeadLetterIds
from ..http import error, json_response, make_app
from ..metrics import Registry
from ..settings import Settings
from . import stats
from .sampler import Sampler


class Peers:
    """HTTP access to the other two services (with the API token when one is set)."""

    def __init__(self, settings: Settings, timeout: float = 5.0) -> None:
        self.urls = {"websocket-ingestion": settings.INGESTION_URL, "enrichment-pipeline": settings.ENRICHMENT_URL}
        self.headers = {"Authorization": f"Bearer {settings.API_TOKEN}"} if settings.API_TOKEN else {}
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def get(self, service: str, path: str, **params: Any) -> tuple[int, Any]:
        """(status, JSON body); status 0 and an error text when the service cannot be reached."""
        url = self.urls[service] + path
        try:
            async with self.session.get(url, headers=self.headers, params=params or None) as resp:
                body = await resp.read()
                try:
                    return resp.status, orjson.loads(body)
                except orjson.JSONDecodeError:
                    return resp.status, body.decode("utf-8", "replace")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return 0, f"unreachable at {self.urls[service]}: {exc.__class__.__name__}: {exc}".rstrip(": ")

    async def post(self, service: str, path: str, body: Any) -> tuple[int, Any]:
        url = self.urls[service] + path
        try:
            async with self.session.post(url, headers=self.headers, json=body) as resp:
                return resp.status, orjson.loads(await resp.read())
        except (aiohttp.ClientError, OSError, TimeoutError, orjson.JSONDecodeError) as exc:
            return 0, f"{url}: {exc.__class__.__name__}: {exc}"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _part(status: int, body: Any) -> dict[str, Any]:
    if status == 0:
        return {"status": "unavailable", "reason": str(body)}
    if isinstance(body, dict):
        return {"status": "ok" if status == 200 else "unavailable",
                "reason": str(body.get("reason") or ("" if status == 200 else f"HTTP {status}")), "detail": body}
    return {"status": "unavailable", "reason": f"HTTP {status}: {str(body)[:200]}"}


async def aggregate_health(peers: Peers) -> tuple[bool, dict[str, Any]]:
    """Ask both services; derive Home Assistant's and the store's health from their answers."""
    (ing_status, ing), (enr_status, enr) = await asyncio.gather(
        peers.get("websocket-ingestion", "/health"), peers.get("enrichment-pipeline", "/health"))
    parts: dict[str, dict[str, Any]] = {
        "websocket-ingestion": _part(ing_status, ing),
        "enrichment-pipeline": _part(enr_status, enr),
    }
    if isinstance(ing, dict) and "ha_state" in ing:
        ok = ing.get("ha_state") == "subscribed"
        parts["home-assistant"] = {"status": "ok" if ok else "unavailable",
                                   "reason": "" if ok else str(ing.get("reason", "")),
                                   "subscribed_to": ing.get("subscribed_to")}
    else:
        parts["home-assistant"] = {"status": "unknown", "reason": "websocket-ingestion did not answer"}
    if isinstance(enr, dict) and "status" in enr:
        ok = enr_status == 200
        parts["store"] = {"status": "ok" if ok else "unavailable", "reason": "" if ok else str(enr.get("reason", ""))}
    else:
        parts["store"] = {"status": "unknown", "reason": "enrichment-pipeline did not answer"}
    healthy = all(p["status"] == "ok" for p in parts.values())
    return healthy, parts


_DASHBOARD = Path(__file__).with_name("static") / "dashboard.html"
_UNREACHABLE: dict[int | str, dict[str, Any]] = {
    502: {"model": schemas.ErrorBody, "description": "enrichment-pipeline did not answer"}}
_STORE_DOWN: dict[int | str, dict[str, Any]] = {
    503: {"model": schemas.ErrorBody, "description": "the store is unavailable"}}


def _up(sampler: Sampler, service: str) -> float:
    return 1.0 if sampler.up[service] else 0.0


async def _proxy(answer: Any) -> Response:
    """Pass enrichment's 200 or 503 on as it is; anything else is a fault between the two services: 502."""
    status, body = await answer
    if status == 0:
        return error(502, str(body))
    if not isinstance(body, dict):
        return error(502, f"enrichment-pipeline answered HTTP {status} without JSON")
    if status not in (200, 503):
        return error(502, f"enrichment-pipeline answered HTTP {status}: {str(body.get('error', ''))[:300]}")
    return json_response(body, status)


def build(settings: Settings, peers: Peers, metrics: Registry, *, service: str = "admin-api",
          sampler: Sampler | None = None) -> FastAPI:
    """The admin app; ``sampler`` should be running (wiring runs it) for /stats to have rates."""
    app = make_app("HA Ingestor admin-api", "Health of every part, stats, metrics and the dashboard.")
    started = time.time()
    sampler = sampler or Sampler(peers)
    dashboard = _DASHBOARD.read_bytes()
    metrics.gauge("admin_scrapes_kept", "Scrapes of the services kept for /stats (an hour's worth at most)",
                  read=lambda: len(sampler.history))
    for name in stats.SERVICES:
        metrics.gauge("admin_peer_up", "1 when the last scrape of the service's /metrics succeeded",
                      (("service", name),), read=functools.partial(_up, sampler, name))

    @app.get("/", response_class=HTMLResponse, responses={200: {"content": {"text/html": {}}}})
    async def index() -> Response:
        """The live dashboard. The page holds no data (it is served without the token); it asks for the
        API token once when the API wants one and keeps it in the tab's sessionStorage."""
        return Response(dashboard, media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                                 "Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; "
                                 "script-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"})

    @app.get("/health", responses={200: {"model": schemas.AdminHealth},
                                   503: {"model": schemas.AdminHealth, "description": "some part is not healthy"}})
    async def health() -> Response:
        """200 only when ingestion, enrichment, Home Assistant and the store are all healthy."""
        healthy, parts = await aggregate_health(peers)
        reasons = [f"{name}: {p['reason']}" for name, p in parts.items() if p["status"] != "ok"]
        return json_response({"service": service, "status": "ok" if healthy else "unavailable",
                              "reason": "; ".join(reasons), "parts": parts}, 200 if healthy else 503)

    @app.get("/config", responses={200: {"model": schemas.ServiceConfig}})
    async def config() -> Response:
        """Effective settings of this service; secrets masked."""
        return json_response({"service": service, "uptime_s": round(time.time() - started, 3),
                              "settings": settings.masked()})

    @app.get("/stats", responses={200: {"model": schemas.Stats}})
    async def get_stats() -> Response:
        """Rates over 1 min / 5 min / 1 h, totals, error rates, latency percentiles, outbox and spool depth,
        last event times, dead letters and gaps; computed from the services' counters, scraped over time.
        Totals count since each service started; ``covered_s`` says how much of a window was observed."""
        now, live, status = await sampler.scrape()
        gaps_status, gaps_body = await peers.get("websocket-ingestion", "/gaps")
        gaps = gaps_body.get("gaps") if gaps_status == 200 and isinstance(gaps_body, dict) else None
        return json_response(stats.report(list(sampler.history), now, live, status, gaps, sampler.interval))

    @app.get("/stats/series", responses={200: {"model": schemas.RateSeries}})
    async def get_series(window: float = Query(3600.0, ge=60, le=3600, description="seconds"),
                         step: float = Query(10.0, ge=5, le=600, description="seconds per point")) -> Response:
        """Events received and stored per second, in ``step``-second buckets over the last ``window``
        seconds (the dashboard's chart). Buckets in which no scrape ended are left out."""
        points = stats.series(list(sampler.history), window, step, time.time())
        return json_response({"window_s": window, "step_s": step, "points": points})

    @app.get("/events/recent", responses={200: {"model": schemas.RecentPoints}, **_UNREACHABLE, **_STORE_DOWN})
    async def recent(limit: int = Query(50, ge=1, le=1000)) -> Response:
        """The newest points in the store (asked of enrichment-pipeline, which reads the store)."""
        return await _proxy(peers.get("enrichment-pipeline", "/events/recent", limit=limit))

    @app.get("/deadletters", responses={200: {"model": schemas.DeadLetters}, **_UNREACHABLE})
    async def dead_letters(limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)) -> Response:
        """Points the store refused for good, with the reason and the original event."""
        return await _proxy(peers.get("enrichment-pipeline", "/deadletters", limit=limit, offset=offset))

    @app.post("/deadletters/replay", responses={200: {"model": schemas.ReplayResult}, **_UNREACHABLE, **_STORE_DOWN})
    async def replay(ids: DeadLetterIds = None) -> Response:
        """Run dead letters (all, or the given ids) through enrichment again; those the store takes leave the list."""
        return await _proxy(peers.post("enrichment-pipeline", "/deadletters/replay", ids))

    @app.get("/metrics", response_class=PlainTextResponse)
    async def get_metrics() -> Response:
        """Prometheus text format."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    return app
