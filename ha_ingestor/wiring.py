"""The only module that connects the stages: each service alone (split) or all in one process (`up`).

Both shapes use the same files under DATA_DIR — ``ingestion/outbox.sqlite``,
``enrichment/enrichment.sqlite`` (spool and dead letters), ``enrichment/registry/``, ``store.sqlite`` —
so switching from one to the other (and back, the rollback) picks up exactly where the other stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass

from .admin import api as admin_api
from .admin.sampler import Sampler
from .enrichment import api as enrichment_api
from .enrichment import enrich
from .enrichment.deadletters import DeadLetters
from .enrichment.homeassistant import Customization, HAConfig, HomeAssistantSchema
from .enrichment.pipeline import Converter, Pipeline
from .enrichment.registry import RegistryCache
from .enrichment.spool import Spool
from .errors import SettingsError
from .hop.base import Hop
from .hop.http import HttpHop
from .hop.local import LocalHop
from .http import OPEN_PATHS, Guard, Server, port_is_free, serve_until, server
from .ingestion import api as ingestion_api
from .ingestion.filter import FilterRules
from .ingestion.outbox import CHECKPOINT_INTERVAL_S, Outbox
from .ingestion.service import Ingestion, IngestionConfig
from .metrics import Registry, watch_loop_lag
from .settings import Customizations, Settings
from .sinks.influx import InfluxConfig, InfluxStore
from .sinks.point import Store
from .sinks.sqlite_store import SqliteStore
from .sqlite import SqliteWorker

log = logging.getLogger(__name__)


def _gzip(settings: Settings) -> bool:
    if settings.INFLUXDB_GZIP != "auto":
        return settings.INFLUXDB_GZIP == "true"
    host = urllib.parse.urlsplit(settings.INFLUXDB_URL).hostname or ""
    return host not in ("localhost", "::1") and not host.startswith("127.")


def store_from(settings: Settings, metrics: Registry) -> Store:
    if settings.INFLUXDB_URL:
        return InfluxStore(InfluxConfig(
            url=settings.INFLUXDB_URL, api=settings.INFLUXDB_API, database=settings.influx_database
            if settings.INFLUXDB_API == "v1" else settings.INFLUXDB_BUCKET,
            retention_policy=settings.INFLUXDB_RETENTION_POLICY, org=settings.INFLUXDB_ORG,
            token=settings.INFLUXDB_TOKEN, username=settings.INFLUXDB_USERNAME, password=settings.INFLUXDB_PASSWORD,
            create_database=settings.INFLUXDB_CREATE_DATABASE, timeout=settings.INFLUXDB_TIMEOUT,
            batch_size=settings.INFLUXDB_BATCH_SIZE, gzip=_gzip(settings),
        ), metrics)
    return SqliteStore(settings.data_dir / "store.sqlite", metrics, synchronous=settings.OUTBOX_SYNC.upper(),
                       checkpoint_interval=CHECKPOINT_INTERVAL_S, retention_s=settings.STORE_RETENTION_DAYS * 86400)


@dataclass
class Enrichment:
    pipeline: Pipeline
    store: Store
    db: SqliteWorker

    async def close(self) -> None:
        await self.store.close()
        self.db.close()


def ha_compat_config(settings: Settings) -> HAConfig:
    """The ``homeassistant`` schema's options, as HA's influxdb YAML would hold them."""

    def customizations(entries: Customizations) -> dict[str, Customization]:
        return {key: Customization(measurement, None if ignore is None else frozenset(ignore))
                for key, measurement, ignore in entries}

    return HAConfig(
        default_measurement=settings.HA_COMPAT_DEFAULT_MEASUREMENT,
        override_measurement=settings.HA_COMPAT_OVERRIDE_MEASUREMENT,
        measurement_attr=settings.HA_COMPAT_MEASUREMENT_ATTR,
        tags=settings.HA_COMPAT_TAGS,
        tags_attributes=settings.HA_COMPAT_TAGS_ATTRIBUTES,
        ignore_attributes=frozenset(settings.IGNORE_ATTRIBUTES),
        component_config=customizations(settings.HA_COMPAT_COMPONENT_CONFIG),
        component_config_domain=customizations(settings.HA_COMPAT_COMPONENT_CONFIG_DOMAIN),
        component_config_glob=customizations(settings.HA_COMPAT_COMPONENT_CONFIG_GLOB),
    )


def converter(settings: Settings) -> Converter:
    """The function from an event to its points, for the configured SCHEMA."""
    if settings.SCHEMA == "homeassistant":
        return HomeAssistantSchema(ha_compat_config(settings))
    return enrich.to_points


def build_enrichment(settings: Settings, metrics: Registry) -> Enrichment:
    base = settings.data_dir / "enrichment"
    db = SqliteWorker(base / "enrichment.sqlite", synchronous=settings.OUTBOX_SYNC.upper(),
                      checkpoint_interval=CHECKPOINT_INTERVAL_S)  # the spool, as durable as the outbox
    store = store_from(settings, metrics)
    pipeline = Pipeline(
        store, Spool(db, settings.SPOOL_MAX_BYTES, metrics), DeadLetters(db, metrics),
        RegistryCache(base / "registry"), metrics,
        convert=converter(settings), weather_entity=settings.WEATHER_ENTITY,
        ignore_attributes=frozenset(settings.IGNORE_ATTRIBUTES),
    )
    return Enrichment(pipeline, store, db)


def filter_rules(settings: Settings) -> FilterRules:
    return FilterRules(settings.INCLUDE_DOMAINS, settings.INCLUDE_ENTITIES, settings.INCLUDE_ENTITY_GLOBS,
                       settings.EXCLUDE_DOMAINS, settings.EXCLUDE_ENTITIES, settings.EXCLUDE_ENTITY_GLOBS,
                       settings.EXCLUDE_EVENT_TYPES)


def build_ingestion(settings: Settings, metrics: Registry, hop: Hop) -> Ingestion:
    if not settings.HA_TOKEN:
        raise SettingsError("HA_TOKEN", "is required: a long-lived access token from your HA profile page")
    outbox = Outbox(settings.data_dir / "ingestion" / "outbox.sqlite", max_events=settings.OUTBOX_MAX_EVENTS,
                    synchronous=settings.OUTBOX_SYNC, metrics=metrics)
    config = IngestionConfig(
        ha_url=settings.HA_URL, ha_token=settings.HA_TOKEN, event_types=settings.HA_EVENT_TYPES,
        home_id=settings.HOME_ID,
        filter=filter_rules(settings),
        batch_max_events=settings.BATCH_MAX_EVENTS, batch_max_delay=settings.BATCH_MAX_DELAY_MS / 1000,
        max_in_flight=settings.HOP_MAX_IN_FLIGHT,
        backfill=settings.BACKFILL, backfill_delay=settings.BACKFILL_DELAY_S,
        backfill_max_hours=settings.BACKFILL_MAX_HOURS,
    )
    return Ingestion(config, outbox, hop, metrics)


# The dashboard page holds no data and cannot send a bearer token when a browser opens it; its script then
# asks for the token and sends it with every API call.
ADMIN_OPEN_PATHS = OPEN_PATHS | {"/"}


def _server(settings: Settings, app: object, port_setting: str, open_paths: frozenset[str] = OPEN_PATHS) -> Server:
    port = getattr(settings, port_setting)
    if port and not port_is_free(settings.BIND_HOST, port):
        raise SettingsError(port_setting, f"port {port} on {settings.BIND_HOST} is already in use")
    guarded = Guard(app, max_body=settings.MAX_BODY_BYTES, token=settings.API_TOKEN,  # type: ignore[arg-type]
                    open_paths=open_paths)
    return server(guarded, settings.BIND_HOST, port)


@contextlib.asynccontextmanager
async def _sampling(sampler: Sampler) -> AsyncIterator[None]:
    """admin-api's scrapes of the other services, for as long as admin-api serves."""
    task = asyncio.create_task(sampler.run(), name="admin-sampler")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def _enrichment_running(settings: Settings, metrics: Registry) -> AsyncIterator[Enrichment]:
    enrichment = build_enrichment(settings, metrics)
    await enrichment.store.start()
    drain = asyncio.create_task(enrichment.pipeline.drain_forever(), name="spool-drain")
    lag = asyncio.create_task(watch_loop_lag(metrics), name="loop-lag")
    try:
        yield enrichment
    finally:
        for task in (drain, lag):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await enrichment.close()


async def _run_ingestion_until(ingestion: Ingestion, servers: list[Server], stop: asyncio.Event) -> None:
    """Serve until ``stop`` or a fatal ingestion error (AuthInvalid propagates)."""
    runner = asyncio.create_task(ingestion.run(), name="ingestion")
    serving = asyncio.create_task(serve_until(servers, stop), name="servers")
    try:
        done, _ = await asyncio.wait([runner, serving], return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            runner.result()  # raises AuthInvalid (or a bug) → the service ends
    finally:
        stop.set()
        await ingestion.stop()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await runner
        await serving
        ingestion.outbox.close()


def _require_nats() -> None:
    """HOP=nats needs nats-py, the optional extra 'nats': say so in one line, not an import traceback."""
    try:
        import nats  # noqa: F401
    except ImportError:
        raise SettingsError("HOP", "nats needs the 'nats' extra: pip install 'ha-ingestor[nats]'") from None


async def run_enrichment(settings: Settings, stop: asyncio.Event) -> None:
    if settings.HOP == "nats":
        _require_nats()
    metrics = Registry()
    async with _enrichment_running(settings, metrics) as enrichment:
        if settings.HOP != "nats":
            srv = _server(settings, enrichment_api.build(enrichment.pipeline, metrics), "ENRICHMENT_PORT")
            _log_serving(settings, enrichment)
            await serve_until([srv], stop)
            return
        from .enrichment.nats_consumer import NatsConsumer  # nats-py is the optional extra 'nats'
        from .hop.jetstream import JetStreamConfig

        consumer = NatsConsumer(enrichment.pipeline, JetStreamConfig.from_settings(settings), metrics)
        srv = _server(settings, enrichment_api.build(enrichment.pipeline, metrics,
                                                     intake_problem=lambda: consumer.problem), "ENRICHMENT_PORT")
        _log_serving(settings, enrichment)
        async with asyncio.TaskGroup() as group:
            consuming = group.create_task(consumer.run(), name="nats-consumer")
            await serve_until([srv], stop)
            consuming.cancel()  # SIGTERM: the message in hand is acked or handed back on redelivery


def _log_serving(settings: Settings, enrichment: Enrichment) -> None:
    log.info("enrichment-pipeline serving", extra={"port": settings.ENRICHMENT_PORT,
                                                   "store": enrichment.store.name, "hop": settings.HOP})


def hop_from(settings: Settings, metrics: Registry) -> Hop:
    """The hop ingestion sends through: HTTP to enrichment, or JetStream (HOP=nats)."""
    if settings.HOP == "nats":
        if not settings.HOME_ID:
            raise SettingsError("HOME_ID", "is required when HOP=nats: it names the home on the subject and tag")
        _require_nats()
        from .hop.jetstream import JetStreamConfig
        from .hop.nats import NatsHop  # nats-py is the optional extra 'nats'

        return NatsHop(JetStreamConfig.from_settings(settings), metrics)
    return HttpHop(settings.ENRICHMENT_URL, token=settings.API_TOKEN, timeout=settings.HOP_TIMEOUT, metrics=metrics)


async def run_ingestion(settings: Settings, stop: asyncio.Event) -> None:
    metrics = Registry()
    hop = hop_from(settings, metrics)
    ingestion = build_ingestion(settings, metrics, hop)
    srv = _server(settings, ingestion_api.build(ingestion, metrics), "INGESTION_PORT")
    log.info("websocket-ingestion starting", extra={"ha_url": settings.HA_URL, "enrichment": settings.ENRICHMENT_URL,
                                                     "port": settings.INGESTION_PORT})
    try:
        await _run_ingestion_until(ingestion, [srv], stop)
    finally:
        await hop.close()


async def run_admin(settings: Settings, stop: asyncio.Event) -> None:
    metrics = Registry()
    peers = admin_api.Peers(settings)
    sampler = Sampler(peers)
    srv = _server(settings, admin_api.build(settings, peers, metrics, sampler=sampler), "ADMIN_PORT",
                  ADMIN_OPEN_PATHS)
    log.info("admin-api serving", extra={"port": settings.ADMIN_PORT})
    try:
        async with _sampling(sampler):
            await serve_until([srv], stop)
    finally:
        await peers.close()


async def run_all(settings: Settings, stop: asyncio.Event) -> None:
    """All three stages in one process; the hop is a direct call, the endpoints are the same.

    Each stage keeps its own metrics registry, so each port's /metrics means what it means in the split
    (both stages count ``events_received``, for example).
    """
    ingestion_metrics, enrichment_metrics, admin_metrics = Registry(), Registry(), Registry()
    peers = admin_api.Peers(settings.serving_itself())
    sampler = Sampler(peers)
    async with _enrichment_running(settings, enrichment_metrics) as enrichment, _sampling(sampler):
        hop = LocalHop(enrichment.pipeline, ingestion_metrics)
        ingestion = build_ingestion(settings, ingestion_metrics, hop)
        servers = [
            _server(settings, ingestion_api.build(ingestion, ingestion_metrics), "INGESTION_PORT"),
            _server(settings, enrichment_api.build(enrichment.pipeline, enrichment_metrics), "ENRICHMENT_PORT"),
            _server(settings, admin_api.build(settings, peers, admin_metrics, sampler=sampler), "ADMIN_PORT",
                    ADMIN_OPEN_PATHS),
        ]
        log.info("ha-ingestor up (single process)", extra={
            "ha_url": settings.HA_URL, "store": enrichment.store.name, "ports": f"{settings.INGESTION_PORT},"
            f"{settings.ENRICHMENT_PORT},{settings.ADMIN_PORT}"})
        try:
            await _run_ingestion_until(ingestion, servers, stop)
        finally:
            await peers.close()
