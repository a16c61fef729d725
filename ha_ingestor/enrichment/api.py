"""enrichment-pipeline's HTTP API (:8002): events in, health, status, metrics, dead letters."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Query, Request
from starlette.responses import PlainTextResponse, Response

from .. import schemas
from ..errors import EnrichmentFailed, EventInvalid, StoreUnavailable
from ..http import RowIds, error, json_response, make_app
from ..metrics import Registry
from ..model import Batch, decode_batch, decode_event, validate
from ..settings import HOME_ID_PATTERN
from .pipeline import Outcome, Pipeline
from .spool import SpoolFull

log = logging.getLogger(__name__)

# Years whose every instant fits InfluxDB's signed 64-bit nanoseconds, whatever the UTC offset: 1678-2261.
_STORABLE_YEAR = r"^(?:1(?:6(?:7[89]|[89][0-9])|[7-9][0-9][0-9])|2(?:[01][0-9][0-9]|2(?:[0-5][0-9]|6[01])))-"
_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event_type", "time_fired"],
    "properties": {
        "event_type": {"type": "string", "minLength": 1, "maxLength": 255},
        "time_fired": {"type": "string", "format": "date-time", "pattern": _STORABLE_YEAR,
                       "description": "with a UTC offset; years 1678 to 2261 (a store's 64-bit nanoseconds)"},
        "data": {"type": "object"},
        "origin": {"type": "string"},
        "context": {
            "type": ["object", "null"],
            "required": ["id"],
            "properties": {"id": {"type": "string"}, "parent_id": {"type": ["string", "null"]},
                           "user_id": {"type": ["string", "null"]}},
        },
    },
}
_BATCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["events"],
    "properties": {"events": {"type": "array", "items": _EVENT_SCHEMA},
                   "home_id": {"type": "string", "pattern": HOME_ID_PATTERN.pattern}},
}
_OUTCOME: dict[int | str, dict[str, Any]] = {
    200: {"model": schemas.Outcome, "description": "durable: written to the store"},
    202: {"model": schemas.Outcome, "description": "durable: the store is down, the events wait in the spool"},
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.ErrorBody, "description": "malformed JSON, or nested over 64 levels"},
    413: {"model": schemas.ErrorBody, "description": "body over MAX_BODY_BYTES"},
    422: {"model": schemas.ErrorBody, "description": "not a Home Assistant event; `field` names what is wrong"},
    503: {"model": schemas.ErrorBody, "description": "store unavailable and spool full; retry later"},
}
_STORE_DOWN: dict[int | str, dict[str, Any]] = {
    503: {"model": schemas.ErrorBody, "description": "the store is unavailable"}}


_HOME_ID = Query("", max_length=64, pattern=HOME_ID_PATTERN.pattern,
                 description="the home's name (tag 'home'); empty for a single home")


def _body_spec(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _check_home(home_id: str) -> Response | None:
    if not HOME_ID_PATTERN.match(home_id):
        return error(422, "home_id: letters, digits, '_', '.', '-', starting with a letter or digit",
                     field="home_id")
    return None


async def _answer(call: Any) -> Response:
    try:
        outcome: Outcome = await call
    except EventInvalid as exc:
        return error(422, str(exc), field=exc.field)
    except ValueError as exc:
        return error(400, str(exc))
    except SpoolFull as exc:
        return json_response({"error": f"store unavailable and spool full: {exc}"}, 503, headers={"Retry-After": "5"})
    except EnrichmentFailed as exc:  # not the request's fault: a 5xx, so the sender keeps the batch and retries
        log.exception("cannot make an accepted batch durable; the sender keeps it and retries")
        return error(500, f"enrichment could not make the batch durable: {exc}")
    return json_response(outcome.as_dict(), 202 if outcome.spooled else 200)


def build(pipeline: Pipeline, metrics: Registry, *, service: str = "enrichment-pipeline",
          intake_problem: Callable[[], str] | None = None) -> FastAPI:
    """``intake_problem``: why batches cannot arrive (HOP=nats: the consumer's trouble), "" when they can."""
    app = make_app("HA Ingestor enrichment-pipeline",
                   "Takes Home Assistant events, enriches them into points and stores them durably.")
    started = time.time()

    @app.post("/events", openapi_extra=_body_spec(_EVENT_SCHEMA), responses={**_OUTCOME, **_ERRORS})
    async def post_event(request: Request, home_id: str = _HOME_ID) -> Response:
        """Store one Home Assistant event (the migration plan's own check posts here)."""
        if (bad := _check_home(home_id)) is not None:
            return bad
        body = await request.body()

        async def run() -> Outcome:
            raw = decode_event(body)
            event = validate(raw)
            batch = Batch([raw], home_id)
            wrapped = b'{"home_id":"' + home_id.encode() + b'","events":[' + body + b"]}"
            return await pipeline.accept(wrapped, batch, [event])

        return await _answer(run())

    @app.post("/events/batch", openapi_extra=_body_spec(_BATCH_SCHEMA), responses={**_OUTCOME, **_ERRORS})
    async def post_batch(request: Request) -> Response:
        """Store a batch ``{"events": [...], "home_id": "..."}``; 2xx only once it is durable."""
        body = await request.body()

        async def run() -> Outcome:
            batch = decode_batch(body)
            if not HOME_ID_PATTERN.match(batch.home_id):
                raise EventInvalid("home_id", "letters, digits, '_', '.', '-', starting with a letter or digit")
            events = [validate(raw, i) for i, raw in enumerate(batch.events)]
            return await pipeline.accept(body, batch, events)

        return await _answer(run())

    @app.put("/registry", openapi_extra=_body_spec({"type": "object"}),
             responses={200: {"model": schemas.RegistryAnswer}})
    async def put_registry(request: Request, home_id: str = _HOME_ID) -> Response:
        """Replace a home's registry snapshot (entities, devices, areas, floors, labels, time_zone)."""
        if (bad := _check_home(home_id)) is not None:
            return bad
        try:
            payload = orjson.loads(await request.body())
            if not isinstance(payload, dict):
                return error(422, "body: must be a JSON object", field="body")
            snapshot = pipeline.registries.put(home_id, payload)
        except orjson.JSONDecodeError as exc:
            return error(400, f"malformed JSON: {exc}")
        except ValueError as exc:
            return error(422, str(exc))
        return json_response({"home_id": home_id, "entities": len(snapshot.entities), "devices": snapshot.devices,
                              "areas": snapshot.areas, "time_zone": snapshot.time_zone})

    @app.get("/health", responses={200: {"model": schemas.EnrichmentHealth},
                                   503: {"model": schemas.EnrichmentHealth, "description": "the store is unavailable"}})
    async def health() -> Response:
        """200 only when the store is reachable and writable and its last write succeeded (and, HOP=nats,
        the stream is being consumed)."""
        try:
            await pipeline.store.check()
        except StoreUnavailable as exc:
            return json_response({"service": service, "status": "unavailable", "reason": f"store: {exc}",
                                  "spool": pipeline.spool.depth()}, 503)
        if pipeline.store_down_reason:  # it answers, but the last write failed (a full disk passes check())
            return json_response({"service": service, "status": "unavailable",
                                  "reason": f"store: the last write failed: {pipeline.store_down_reason}",
                                  "spool": pipeline.spool.depth()}, 503)
        if pipeline.drain_problem:
            return json_response({"service": service, "status": "unavailable",
                                  "reason": f"spool: cannot drain: {pipeline.drain_problem}",
                                  "spool": pipeline.spool.depth()}, 503)
        if intake_problem is not None and (problem := intake_problem()):
            return json_response({"service": service, "status": "unavailable", "reason": problem,
                                  "spool": pipeline.spool.depth()}, 503)
        return json_response({"service": service, "status": "ok", "reason": "",
                              "spool": pipeline.spool.depth()})

    @app.get("/status", responses={200: {"model": schemas.EnrichmentStatus}})
    async def status() -> Response:
        """Figures of this service: store, spool, dead letters, uptime."""
        return json_response({"service": service, "uptime_s": round(time.time() - started, 3), **pipeline.status()})

    @app.get("/metrics", response_class=PlainTextResponse)
    async def get_metrics() -> Response:
        """Prometheus text format."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/events/recent", responses={200: {"model": schemas.RecentPoints}, **_STORE_DOWN})
    async def recent(limit: int = Query(50, ge=1, le=1000)) -> Response:
        """The newest points in the store."""
        try:
            return json_response({"points": await pipeline.store.recent(limit)})
        except StoreUnavailable as exc:
            return error(503, f"store: {exc}")

    @app.get("/deadletters", responses={200: {"model": schemas.DeadLetters}})
    async def dead_letters(limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)) -> Response:
        """Points the store refused for good, with the reason and the original event."""
        return json_response({"count": pipeline.dead_letters.count,
                              "dead_letters": await pipeline.dead_letters.page(limit, offset)})

    @app.post("/deadletters/replay", responses={200: {"model": schemas.ReplayResult}, **_STORE_DOWN})
    async def replay(ids: RowIds = None) -> Response:
        """Run dead letters (all, or the given ids) through enrichment again."""
        try:
            return json_response(await pipeline.replay_dead_letters(ids))
        except StoreUnavailable as exc:
            return error(503, f"store: {exc}")

    return app
