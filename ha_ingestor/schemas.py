"""Response shapes of the services' HTTP APIs, for their OpenAPI documents (and the clients that read them).

The routes build their JSON directly (orjson, no per-request validation); these models only describe it, and
the schemathesis run in tests/security checks every answer against them. Objects allow extra keys, so a
field added later is not a breaking change.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorBody(_Open):
    """Every error the services answer: what is wrong, and for invalid input the field."""

    error: str
    field: str | None = None


class SpoolDepth(_Open):
    batches: int
    events: int
    bytes: int
    limit_bytes: int


class EnrichmentHealth(_Open):
    service: str
    status: Literal["ok", "unavailable"]
    reason: str
    spool: SpoolDepth


class EnrichmentStatus(_Open):
    service: str
    uptime_s: float
    store: dict[str, Any]
    store_available: bool
    store_reason: str
    spool: SpoolDepth
    dead_letters: int
    last_store_write: float | None
    last_event_time: float | None
    homes: list[str]


class Outcome(_Open):
    """What became of the events: stored (200), or spooled durably while the store is down (202)."""

    accepted: int
    stored: int
    spooled: int
    dead_lettered: int


class RegistryAnswer(_Open):
    home_id: str
    entities: int
    devices: int
    areas: int
    time_zone: str


class RecentPoints(_Open):
    """The newest points in the store; their keys depend on the store (SQLite: measurement, time_ns, tags,
    fields; InfluxDB: measurement, time and the columns)."""

    points: list[dict[str, Any]]


class DeadLetter(_Open):
    id: int
    created: float
    home_id: str
    reason: str
    point: str
    event: Any
    attempts: int
    worker: str | None = Field(None, description="admin-api watching several workers: the one that holds it")


class DeadLetters(_Open):
    count: int
    dead_letters: list[DeadLetter]
    unreachable: dict[str, str] = Field(
        default_factory=dict, description="admin-api watching several workers: those that did not answer, and why")


class ReplayResult(_Open):
    replayed: int
    written: int
    still_refused: int
    unreachable: dict[str, str] = Field(
        default_factory=dict, description="admin-api replaying on several workers: those that did not answer, and why")


class RefusedEvent(_Open):
    id: int
    created: float
    reason: str
    event: Any
    home_id: str | None = Field(None, description="admin-api watching several homes: the home it came from")
    ingestion: str | None = Field(None, description="admin-api watching several homes: the ingestion that holds it")


class RefusedEvents(_Open):
    """Events enrichment refused for good (HTTP 400/413/422), kept by ingestion to be looked at and replayed."""

    count: int
    rejected: list[RefusedEvent]
    home_id: str | None = None
    unreachable: dict[str, str] = Field(
        default_factory=dict, description="admin-api watching several homes: the ingestions that did not answer")


class RefusedReplay(_Open):
    replayed: int = Field(description="events moved back into the outbox, to be forwarded again")
    unreachable: dict[str, str] = Field(
        default_factory=dict, description="admin-api watching several homes: the ingestions that did not answer")


# ---------------------------------------------------------------- admin-api


class HealthPart(_Open):
    status: Literal["ok", "unavailable", "unknown"]
    reason: str


class AdminHealth(_Open):
    service: str
    status: Literal["ok", "unavailable"]
    reason: str
    parts: dict[str, HealthPart]


class ServiceConfig(_Open):
    service: str
    uptime_s: float
    settings: dict[str, Any]


class WindowRates(_Open):
    """Per-second rates over one window; None where no two scrapes of the service fall in the window."""

    covered_s: dict[str, float]
    received_per_s: float | None
    forwarded_per_s: float | None
    stored_per_s: float | None
    backfilled_per_s: float | None
    dead_lettered_per_s: float | None
    spooled_per_s: float | None
    hop_error_rate: float | None
    event_error_rate: float | None


class Percentiles(_Open):
    p50: float | None
    p95: float | None
    p99: float | None
    count: float


class Latency(_Open):
    window_s: float
    hop_seconds: Percentiles
    store_write_seconds: Percentiles
    end_to_end_lag_seconds: Percentiles


class Gaps(_Open):
    by_status: dict[str, int]
    recent: list[dict[str, Any]]


class StoreState(_Open):
    available: bool | None
    reason: str | None


class Stats(_Open):
    generated_at: float
    sample_interval_s: float
    watched_s: float
    unreachable: dict[str, str]
    rates: dict[str, WindowRates]
    totals: dict[str, float | None]
    latency: Latency
    depth: dict[str, float | None]
    last_event_time: dict[str, float | None]
    newest_stored_event_age_s: float | None
    dead_letters: int | None
    rejected_events: int | None = None
    ha: dict[str, Any] | None
    store: StoreState
    gaps: Gaps | None
    homes: dict[str, dict[str, Any]] = {}  # per home (HOME_ID; "" when unset): rates, totals, outbox, HA, lag
    instances: list[dict[str, Any]] = []  # every watched URL: service, up, home(s)


class RatePoint(_Open):
    t: float
    received_per_s: float | None = None
    stored_per_s: float | None = None


class RateSeries(_Open):
    window_s: float
    step_s: float
    points: list[RatePoint]
