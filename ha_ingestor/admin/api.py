"""admin-api (:8003): the health of every part, asked live; nothing here is made up."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from fastapi import FastAPI, Query
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from .. import schemas
from ..http import RowIds, error, json_response, make_app
from ..metrics import Registry
from ..settings import Settings
from . import homes, stats
from .sampler import Sampler
from .stats import ENRICHMENT, INGESTION

# A replay of every dead letter runs in chunks of 1,000, one store write each: give it minutes, not seconds.
REPLAY_TIMEOUT_S = 600.0


class Peers:
    """HTTP access to the watched instances of the other two services (with the API token when one is set)."""

    def __init__(self, settings: Settings, timeout: float = 5.0) -> None:
        self.fleet: dict[str, tuple[str, ...]] = {INGESTION: settings.ingestion_urls,
                                                  ENRICHMENT: settings.enrichment_urls}
        # One instance answers for its service where one answer is the whole story: the store's newest
        # points (every worker writes the same store). Dead letters are each worker's own: see dead_letters.
        self.urls = {service: urls[0] for service, urls in self.fleet.items()}
        self.all_urls = list(dict.fromkeys(url for urls in self.fleet.values() for url in urls))
        self.headers = {"Authorization": f"Bearer {settings.API_TOKEN}"} if settings.API_TOKEN else {}
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def get(self, service: str, path: str, **params: Any) -> tuple[int, Any]:
        """(status, JSON body) of the service's first instance; status 0 and an error text when it cannot be
        reached."""
        return await self.get_url(self.urls[service], path, **params)

    async def get_url(self, base: str, path: str, **params: Any) -> tuple[int, Any]:
        """(status, JSON body) of the instance at ``base``; status 0 and an error text when it cannot be reached."""
        try:
            async with self.session.get(base + path, headers=self.headers, params=params or None) as resp:
                body = await resp.read()
                try:
                    return resp.status, orjson.loads(body)
                except orjson.JSONDecodeError:
                    return resp.status, body.decode("utf-8", "replace")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return 0, f"unreachable at {base}: {exc.__class__.__name__}: {exc}".rstrip(": ")

    async def post_url(self, base: str, path: str, body: Any, timeout: float | None = None) -> tuple[int, Any]:
        url = base + path
        limit = aiohttp.ClientTimeout(total=self.timeout if timeout is None else timeout)
        try:
            async with self.session.post(url, headers=self.headers, json=body, timeout=limit) as resp:
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


def _ha(body: Any) -> dict[str, Any]:
    if isinstance(body, dict) and "ha_state" in body:
        ok = body.get("ha_state") == "subscribed"
        return {"status": "ok" if ok else "unavailable", "reason": "" if ok else str(body.get("reason", "")),
                "subscribed_to": body.get("subscribed_to")}
    return {"status": "unknown", "reason": "websocket-ingestion did not answer"}


def _forwarding(body: Any) -> dict[str, Any]:
    """Events leaving the outbox: ingestion can be healthy (capturing, durable) while its hop is stuck."""
    if isinstance(body, dict) and "forwarding" in body:
        ok = body.get("forwarding") == "ok"
        return {"status": "ok" if ok else "unavailable", "reason": "" if ok else str(body.get("forwarding")),
                "outbox_events": body.get("outbox_events")}
    return {"status": "unknown", "reason": "websocket-ingestion did not answer"}


def _store(status: int, body: Any) -> dict[str, Any]:
    if isinstance(body, dict) and "status" in body:
        ok = status == 200
        return {"status": "ok" if ok else "unavailable", "reason": "" if ok else str(body.get("reason", ""))}
    return {"status": "unknown", "reason": "enrichment-pipeline did not answer"}


def _combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One part from each instance's: ok only when all are. With one instance it is that instance's part (as
    before fleets); either way ``instances`` lists each with its URL (and home, for ingestion)."""
    statuses = {p["status"] for p in parts}
    status = "ok" if statuses == {"ok"} else "unavailable" if "unavailable" in statuses else "unknown"
    if len(parts) == 1:
        combined = {k: v for k, v in parts[0].items() if k not in ("url", "home")}
    else:
        combined = {"status": status, "reason": "; ".join(_where(p) for p in parts if p["status"] != "ok")}
    combined["instances"] = [{k: v for k, v in p.items() if k != "detail"} for p in parts]
    return combined


def _where(part: dict[str, Any]) -> str:
    """An instance's reason, saying which instance (and home) it is."""
    url, reason = part["url"], part["reason"]
    text = reason if url in reason else f"{url}: {reason}"
    return f"home {part['home']!r}: {text}" if part.get("home") is not None else text


async def aggregate_health(peers: Peers, known: Mapping[str, str | None] | None = None) -> tuple[bool, dict[str, Any]]:
    """Ask every instance; derive Home Assistant's and the store's health from their answers. ``known`` names
    the home of an ingestion instance that does not answer (from earlier scrapes)."""
    ing_urls, enr_urls = peers.fleet[INGESTION], peers.fleet[ENRICHMENT]
    answers = await asyncio.gather(*(peers.get_url(url, "/health") for url in (*ing_urls, *enr_urls)))
    ing = list(zip(ing_urls, answers[:len(ing_urls)], strict=True))
    enr = list(zip(enr_urls, answers[len(ing_urls):], strict=True))

    def home(url: str, body: Any) -> dict[str, Any]:
        named = body.get("home_id") if isinstance(body, dict) and "home_id" in body else (known or {}).get(url)
        return {} if named is None else {"home": named}

    parts: dict[str, dict[str, Any]] = {
        INGESTION: _combine([{"url": url, **home(url, body), **_part(code, body)} for url, (code, body) in ing]),
        ENRICHMENT: _combine([{"url": url, **_part(code, body)} for url, (code, body) in enr]),
        "home-assistant": _combine([{"url": url, **home(url, body), **_ha(body)} for url, (_, body) in ing]),
        "store": _combine([{"url": url, **_store(code, body)} for url, (code, body) in enr]),
        "forwarding": _combine([{"url": url, **home(url, body), **_forwarding(body)} for url, (_, body) in ing]),
    }
    healthy = all(p["status"] == "ok" for p in parts.values())
    return healthy, parts


async def _gaps(peers: Peers, status: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Every ingestion's gaps, newest first, each with its home; None when no ingestion answered."""
    urls = peers.fleet[INGESTION]
    answers = await asyncio.gather(*(peers.get_url(url, "/gaps") for url in urls))
    merged: list[dict[str, Any]] = []
    answered = False
    for url, (code, body) in zip(urls, answers, strict=True):
        if code == 200 and isinstance(body, dict) and isinstance(body.get("gaps"), list):
            answered = True
            merged.extend({**gap, "home": status.get(url, {}).get("home_id")} for gap in body["gaps"])
    merged.sort(key=lambda gap: gap.get("start_us") or 0, reverse=True)
    return merged if answered else None


_DASHBOARD = Path(__file__).with_name("static") / "dashboard.html"
_UNREACHABLE: dict[int | str, dict[str, Any]] = {
    502: {"model": schemas.ErrorBody, "description": "enrichment-pipeline did not answer"}}
_STORE_DOWN: dict[int | str, dict[str, Any]] = {
    503: {"model": schemas.ErrorBody, "description": "the store is unavailable"}}


def _up(sampler: Sampler, urls: tuple[str, ...]) -> float:
    return 1.0 if all(sampler.up[url] for url in urls) else 0.0


@dataclass(frozen=True)
class Kept:
    """What a service keeps instead of losing it, listed and replayed through admin-api: enrichment's dead
    letters (points the store refused) and ingestion's refused events (events enrichment refused)."""
    service: str  # the service that keeps them
    setting: str  # the setting that lists its instances
    path: str  # its list; replayed at path + "/replay"
    key: str  # the list's key in the answer
    holder: str  # an entry's field (and the query parameter) naming the instance that holds it
    totals: tuple[str, ...]  # what a replay answers, summed over the instances


DEAD_LETTERS = Kept(ENRICHMENT, "ENRICHMENT_URLS", "/deadletters", "dead_letters", "worker",
                    ("replayed", "written", "still_refused"))
REFUSED = Kept(INGESTION, "INGESTION_URLS", "/rejected", "rejected", "ingestion", ("replayed",))


def _problem(status: int, body: Any, accepted: tuple[int, ...] = (200,), service: str = ENRICHMENT) -> str:
    """'' when ``service`` answered one of ``accepted`` with JSON; else what went wrong."""
    if status == 0:
        return str(body)
    if not isinstance(body, dict):
        return f"{service} answered HTTP {status} without JSON"
    if status not in accepted:
        return f"{service} answered HTTP {status}: {str(body.get('error', ''))[:300]}"
    return ""


def _none_answered(kind: Kept, what: str, unreachable: dict[str, str]) -> Response:
    return error(502, f"no {kind.service} {what}: " + "; ".join(f"{u}: {p}" for u, p in unreachable.items()))


async def _proxy(answer: Any, service: str = ENRICHMENT) -> Response:
    """Pass the service's 200 or 503 on as it is; anything else is a fault between the two services: 502."""
    status, body = await answer
    if problem := _problem(status, body, (200, 503), service):
        return error(502, problem)
    return json_response(body, status)


async def kept(peers: Peers, kind: Kept, limit: int, offset: int) -> Response:
    """Every instance's kept entries, instance by instance in the order of ``kind.setting`` (each oldest
    first), each with the instance that holds it (``kind.holder``): an entry's id is its instance's own."""
    urls = peers.fleet[kind.service]
    if len(urls) == 1:
        return await _proxy(peers.get_url(urls[0], kind.path, limit=limit, offset=offset), kind.service)
    counted = await asyncio.gather(*(peers.get_url(url, kind.path, limit=1) for url in urls))
    unreachable: dict[str, str] = {}
    counts: dict[str, int] = {}
    for url, (status, body) in zip(urls, counted, strict=True):
        if problem := _problem(status, body, service=kind.service):
            unreachable[url] = problem
        else:
            counts[url] = int(body["count"])
    if not counts:
        return _none_answered(kind, "answered", unreachable)
    # The page is a slice of the instances' lists laid end to end: skip whole lists, then read what is left.
    skip, wanted, slices = offset, limit, []
    for url, count in counts.items():
        if wanted <= 0:
            break
        if skip >= count:
            skip -= count
            continue
        take = min(wanted, count - skip)
        slices.append((url, skip, take))
        skip, wanted = 0, wanted - take
    pages = await asyncio.gather(*(peers.get_url(url, kind.path, limit=take, offset=start)
                                   for url, start, take in slices))
    entries: list[dict[str, Any]] = []
    for (url, _, _), (status, body) in zip(slices, pages, strict=True):
        if problem := _problem(status, body, service=kind.service):
            unreachable[url] = problem  # it answered a moment ago: its entries are missing from this page
            continue
        home = {"home_id": body["home_id"]} if "home_id" in body else {}
        entries.extend({**home, **entry, kind.holder: url} for entry in body[kind.key])
    return json_response({"count": sum(counts.values()), kind.key: entries, "unreachable": unreachable})


async def replay(peers: Peers, kind: Kept, ids: list[int] | None, holder: str) -> Response:
    """Replay on one instance (the only one, or ``holder``) or, without ids, on every instance."""
    urls = peers.fleet[kind.service]
    if holder and holder not in urls:
        return error(422, f"{kind.holder}: not one of {kind.setting} ({', '.join(urls)})", field=kind.holder)
    if ids is not None and not holder and len(urls) > 1:
        return error(422, f"{kind.holder}: ids are each {kind.holder}'s own; name the {kind.holder} that holds "
                          f"them (one of {', '.join(urls)}), or leave out the ids to replay every one's",
                     field=kind.holder)
    targets = [holder] if holder else list(urls)
    if len(targets) == 1:
        return await _proxy(peers.post_url(targets[0], kind.path + "/replay", ids, REPLAY_TIMEOUT_S), kind.service)
    answers = await asyncio.gather(*(peers.post_url(url, kind.path + "/replay", None, REPLAY_TIMEOUT_S)
                                     for url in targets))
    total = dict.fromkeys(kind.totals, 0)
    unreachable: dict[str, str] = {}
    for url, (status, body) in zip(targets, answers, strict=True):
        if problem := _problem(status, body, service=kind.service):
            unreachable[url] = problem
            continue
        for key in total:
            total[key] += int(body.get(key, 0))
    if len(unreachable) == len(targets):
        return _none_answered(kind, "replayed", unreachable)
    return json_response({**total, "unreachable": unreachable})


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
        metrics.gauge("admin_peer_up", "1 when the last scrape of every instance's /metrics succeeded",
                      (("service", name),), read=functools.partial(_up, sampler, peers.fleet[name]))
        for url in peers.fleet[name]:
            metrics.gauge("admin_instance_up", "1 when the last scrape of the instance's /metrics succeeded",
                          (("service", name), ("url", url)), read=functools.partial(_up, sampler, (url,)))

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
        """200 only when ingestion, enrichment, Home Assistant and the store are all healthy (every instance
        of each, in a fleet); each part lists its instances."""
        healthy, parts = await aggregate_health(peers, homes.known(list(sampler.history), peers.fleet))
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
        Totals count since each service started, summed over the watched instances; ``covered_s`` says how
        much of a window was observed. ``homes`` has each home's figures, ``instances`` what is watched."""
        now, live, status = await sampler.scrape()
        gaps = await _gaps(peers, status)
        history = list(sampler.history)
        body = stats.report(history, now, live, status, gaps, sampler.interval, peers.fleet)
        body["homes"] = homes.report(history, now, live, status, peers.fleet)
        named = homes.ingestion_homes(history, now, peers.fleet)
        body["instances"] = [
            *({"service": INGESTION, "url": url, "up": live.get(url) is not None, "home": named[url]}
              for url in peers.fleet[INGESTION]),
            *({"service": ENRICHMENT, "url": url, "up": live.get(url) is not None,
               "homes": sorted(homes.worker_homes(live.get(url)))} for url in peers.fleet[ENRICHMENT])]
        return json_response(body)

    @app.get("/stats/series", responses={200: {"model": schemas.RateSeries}})
    async def get_series(window: float = Query(3600.0, ge=60, le=3600, description="seconds"),
                         step: float = Query(10.0, ge=5, le=600, description="seconds per point"),
                         home: str | None = Query(None, max_length=64, description="one home's figures "
                                                  f"(kept {stats.HOME_KEEP_S:g} s)")) -> Response:
        """Events received and stored per second, in ``step``-second buckets over the last ``window``
        seconds (the dashboard's chart), of the fleet or of one ``home``. Buckets in which no scrape ended
        are left out."""
        history = list(sampler.history)
        if home is None:
            lines = stats.chart_lines(peers.fleet)
        else:
            named = homes.known(history, peers.fleet)
            lines = [("received", [url for url, h in named.items() if h == home], "events_received_total"),
                     ("stored", peers.fleet[ENRICHMENT], f'events_stored_by_home_total{{home="{home}"}}')]
        points = stats.series(history, window, step, time.time(), lines)
        return json_response({"window_s": window, "step_s": step, "points": points})

    @app.get("/events/recent", responses={200: {"model": schemas.RecentPoints}, **_UNREACHABLE, **_STORE_DOWN})
    async def recent(limit: int = Query(50, ge=1, le=1000)) -> Response:
        """The newest points in the store (asked of enrichment-pipeline, which reads the store)."""
        return await _proxy(peers.get("enrichment-pipeline", "/events/recent", limit=limit))

    workers = list(peers.fleet[ENRICHMENT])

    @app.get("/deadletters", responses={200: {"model": schemas.DeadLetters}, **_UNREACHABLE})
    async def get_dead_letters(limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)) -> Response:
        """Points the store refused for good, with the reason and the original event: every worker's, worker by
        worker in ``ENRICHMENT_URLS`` order, each with the ``worker`` that holds it; ``unreachable`` names
        the workers that did not answer."""
        return await kept(peers, DEAD_LETTERS, limit, offset)

    @app.post("/deadletters/replay", responses={200: {"model": schemas.ReplayResult}, **_UNREACHABLE, **_STORE_DOWN,
                                                422: {"model": schemas.ErrorBody,
                                                      "description": "ids without the worker that holds them"}})
    async def post_replay(ids: RowIds = None,
                          worker: str = Query("", max_length=2048, json_schema_extra={"enum": ["", *workers]},
                                              description="the worker (one of ENRICHMENT_URLS) whose dead letters "
                                                          "the ids are; needed with ids when there are several")
                          ) -> Response:
        """Run dead letters (all of every worker's, or the given ids of one worker) through enrichment again;
        those the store takes leave the list."""
        return await replay(peers, DEAD_LETTERS, ids, worker)

    ingestions = list(peers.fleet[INGESTION])
    _ingestion_unreachable: dict[int | str, dict[str, Any]] = {
        502: {"model": schemas.ErrorBody, "description": "websocket-ingestion did not answer"}}

    @app.get("/rejected", responses={200: {"model": schemas.RefusedEvents}, **_ingestion_unreachable})
    async def get_rejected(limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)) -> Response:
        """Events enrichment refused for good (HTTP 400/413/422), which ingestion keeps instead of dropping:
        every ingestion's, in ``INGESTION_URLS`` order (each oldest first), each with the ``ingestion`` that
        holds it and its home; ``unreachable`` names the ingestions that did not answer."""
        return await kept(peers, REFUSED, limit, offset)

    @app.post("/rejected/replay", responses={200: {"model": schemas.RefusedReplay}, **_ingestion_unreachable,
                                             422: {"model": schemas.ErrorBody,
                                                   "description": "ids without the ingestion that holds them"}})
    async def post_rejected_replay(
            ids: RowIds = None,
            ingestion: str = Query("", max_length=2048, json_schema_extra={"enum": ["", *ingestions]},
                                   description="the ingestion (one of INGESTION_URLS) whose refused events the "
                                               "ids are; needed with ids when there are several")) -> Response:
        """Send refused events to enrichment again (all of every ingestion's, or the given ids of one), once
        enrichment was fixed or its limits raised; those refused again are kept again."""
        return await replay(peers, REFUSED, ids, ingestion)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def get_metrics() -> Response:
        """Prometheus text format."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    return app
