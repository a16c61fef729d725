"""admin-api (:8003): the health of every part, asked live; nothing here is made up."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
from fastapi import FastAPI
from starlette.responses import PlainTextResponse, Response

from ..http import json_response, make_app
from ..metrics import Registry
from ..settings import Settings


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


def build(settings: Settings, peers: Peers, metrics: Registry, *, service: str = "admin-api") -> FastAPI:
    app = make_app("HA Ingestor admin-api", "Health of every part, stats, metrics and the dashboard.")
    started = time.time()

    @app.get("/health")
    async def health() -> Response:
        """200 only when ingestion, enrichment, Home Assistant and the store are all healthy."""
        healthy, parts = await aggregate_health(peers)
        reasons = [f"{name}: {p['reason']}" for name, p in parts.items() if p["status"] != "ok"]
        return json_response({"service": service, "status": "ok" if healthy else "unavailable",
                              "reason": "; ".join(reasons), "parts": parts}, 200 if healthy else 503)

    @app.get("/config")
    async def config() -> Response:
        """Effective settings of this service; secrets masked."""
        return json_response({"service": service, "uptime_s": round(time.time() - started, 3),
                              "settings": settings.masked()})

    @app.get("/metrics", response_class=PlainTextResponse)
    async def get_metrics() -> Response:
        """Prometheus text format."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    return app
