"""websocket-ingestion's HTTP API (:8001): health, status, metrics, gaps and refused events."""

from __future__ import annotations

import time

from fastapi import FastAPI, Query
from pydantic import BaseModel, Field
from starlette.responses import PlainTextResponse, Response

from .. import schemas
from ..http import RowIds, error, json_response, make_app
from ..metrics import Registry
from ..model import past_time_us
from .service import Ingestion


class GapRequest(BaseModel):
    since: str = Field(max_length=64, description="from (ISO 8601, UTC unless it names an offset; or Unix seconds)")
    until: str | None = Field(None, max_length=64, description="to; default now")


def build(ingestion: Ingestion, metrics: Registry, *, service: str = "websocket-ingestion") -> FastAPI:
    app = make_app("HA Ingestor websocket-ingestion",
                   "Captures Home Assistant's events into a durable outbox and forwards them to enrichment.")
    started = time.time()
    # Prometheus' "info" idiom: admin-api (and any scraper) learns which home this instance captures.
    metrics.gauge("home_info", "Always 1; the label names the home (HOME_ID) this ingestion captures",
                  (("home", ingestion.config.home_id),)).set(1)

    @app.get("/health")
    async def health() -> Response:
        """200 only while authenticated to Home Assistant and subscribed; else 503 with the reason."""
        body = {"service": service, "status": "ok" if ingestion.healthy else "unavailable",
                "reason": "" if ingestion.healthy else f"outbox: {ingestion.outbox_problem}" if ingestion.outbox_problem
                else f"home assistant: {ingestion.reason or ingestion.state}",
                "ha_state": ingestion.state, "subscribed_to": ingestion.subscribed_to or ["all"],
                "token": ingestion.token_scope or None,
                "outbox_events": ingestion.outbox.count, "forwarding": ingestion.forwarder.problem or "ok",
                "home_id": ingestion.config.home_id}
        return json_response(body, 200 if ingestion.healthy else 503)

    @app.get("/status")
    async def status() -> Response:
        """Figures of this service: HA connection, outbox, forwarder, backfill."""
        return json_response({"service": service, "uptime_s": round(time.time() - started, 3), **ingestion.status()})

    @app.get("/metrics", response_class=PlainTextResponse)
    async def get_metrics() -> Response:
        """Prometheus text format."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/gaps")
    async def gaps(limit: int = Query(100, ge=1, le=1000)) -> Response:
        """Windows in which the live stream was interrupted, newest first, and what backfill recovered.
        Only states are recovered: other events (call_service, automation_triggered, custom) of a
        window are lost."""
        return json_response({"gaps": [g.as_dict() for g in await ingestion.outbox.gaps(None, limit)]})

    @app.post("/gaps", status_code=202)
    async def request_gap(body: GapRequest) -> Response:
        """Fill a window from HA's recorder: its states are fetched and stored again (what is stored already
        is only overwritten, points being idempotent). For states found missing — ``ha-ingestor verify
        --since`` says which — e.g. after an ingestion started on an empty DATA_DIR, which knows of no gap."""
        reach = ingestion.config.backfill_max_hours * 3600  # BACKFILL_MAX_HOURS: as far back as backfill goes
        moments: dict[str, int] = {}
        for name, text in (("since", body.since), ("until", body.until)):
            try:
                moments[name] = int(time.time() * 1_000_000) if text is None else past_time_us(text, reach)
            except ValueError as exc:
                return error(422, f"{name}: {exc}", field=name)
        start_us, end_us = moments["since"], moments["until"]
        if end_us <= start_us:
            return error(422, "until: must be after since", field="until")
        gap = await ingestion.request_backfill(start_us, end_us)
        return json_response(gap.as_dict(), 202)

    @app.get("/rejected", responses={200: {"model": schemas.RefusedEvents}})
    async def rejected(limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)) -> Response:
        """Events enrichment refused for good (HTTP 4xx), kept instead of dropped: ``count`` of them, and
        ``limit`` from the ``offset``-th on, oldest first."""
        return json_response({"count": ingestion.outbox.rejected_count, "home_id": ingestion.config.home_id,
                              "rejected": await ingestion.outbox.rejected(limit, offset)})

    @app.post("/rejected/replay", responses={200: {"model": schemas.RefusedReplay}})
    async def replay_rejected(ids: RowIds = None) -> Response:
        """Send refused events to enrichment again (``ids``, else all of them), once enrichment was fixed or
        its limits raised: they go back into the outbox, and those refused again return here."""
        moved = await ingestion.outbox.replay_rejected(ids)
        ingestion.forwarder.notify()
        return json_response({"replayed": moved})

    return app
