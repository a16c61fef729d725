"""Settings: read once from the environment (and an optional .env), typed, validated, secrets masked.

Every setting is a field of :class:`Settings` whose metadata names its parser and says whether it is a
secret. ``Settings.load()`` is the only place that reads the environment; code deeper down receives the
typed values. A bad value raises :class:`SettingsError` naming the setting, so the CLI can print one line
and exit before anything starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

from .errors import SettingsError

Parser = Callable[[str], Any]

# Names .env.example holds for docker-compose alone (the InfluxDB container's init, published ports).
_COMPOSE_ONLY = re.compile(r"^(INFLUX_INIT_[A-Z_]+|[A-Z_]+_PUBLISH)$")
# Prefixes that only this project uses: an unknown variable with one of them is almost surely a typo
# (INFLUXDB_BUKET), and silently ignoring it would run with a default the user did not want.
_OWN_PREFIXES = ("INFLUXDB_", "OUTBOX_", "SPOOL_", "BACKFILL_", "HA_INGESTOR_", "NATS_", "HA_COMPAT_")
# ... except the names the project's own tools read (the test harness, scripts/setup.sh), not settings.
_TOOL_NAMES = frozenset({"HA_INGESTOR_SHARED", "HA_INGESTOR_VENV", "HA_INGESTOR_PYTHON"})
# A name this close to a setting's is taken for a misspelling of it (HA_TOKN, INGESTION_PROT, HOP_TIMEOUTS).
_TYPO_CUTOFF = 0.85


def _typo(key: str, names: set[str]) -> str | None:
    """Why ``key``, not a setting, is taken for a misspelt one; None when it is someone else's variable."""
    if key in _TOOL_NAMES or key == "HA_INGESTOR_ENV_FILE" or key.startswith("INFLUX_"):
        return None  # INFLUX_*: the influx CLI's own (INFLUX_TOKEN, INFLUX_ORG) and docker-compose's
    close = difflib.get_close_matches(key, names, n=1, cutoff=_TYPO_CUTOFF)
    if close:
        return f"unknown setting (did you mean {close[0]}?)"
    if key.startswith(_OWN_PREFIXES):
        return "unknown setting (a typo?)"
    return None


def _url_secrets(value: str) -> list[str]:
    """Credentials written into URLs (``http://user:password@host``, NATS's ``nats://token@host``)."""
    found = []
    for part in value.split(","):
        parts = urlsplit(part.strip())
        if "@" not in parts.netloc:
            continue
        if parts.password:
            found.append(parts.password)
        elif parts.username:
            found.append(parts.username)  # a token alone
    return found


_URL_USERINFO = re.compile(r"(?<=://)[^/@,\s]+@")


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host (got {value!r})")
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise ValueError(f"has a malformed port (got {value!r})") from exc
    return value.rstrip("/")


def _opt_url(value: str) -> str:
    return _url(value) if value else ""


def _urls(value: str) -> tuple[str, ...]:
    """Comma-separated http(s) URLs, each checked, none twice; empty = the single-URL setting."""
    urls = tuple(_url(item) for item in _csv(value))
    repeated = sorted({url for url in urls if urls.count(url) > 1})
    if repeated:
        raise ValueError(f"lists {repeated[0]!r} twice")
    return urls


def _nats_url(value: str) -> str:
    if not value:
        return ""
    for part in value.split(","):
        parts = urlsplit(part.strip())
        if parts.scheme not in ("nats", "tls") or not parts.hostname:
            raise ValueError(f"must be nats://host:port URLs, comma-separated (got {part!r})")
        try:
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError as exc:
            raise ValueError(f"has a malformed port (got {part!r})") from exc
    return value


_NATS_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


def _nats_name(value: str) -> str:
    if not _NATS_NAME.match(value):
        raise ValueError(f"must be 1 to 64 letters, digits, '_' or '-' (got {value!r})")
    return value


def _int_range(low: int, high: int) -> Parser:
    def parse(value: str) -> int:
        try:
            number = int(value.replace("_", ""))
        except ValueError:
            raise ValueError(f"must be a whole number (got {value!r})") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high} (got {number})")
        return number

    return parse


def _float_range(low: float, high: float) -> Parser:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"must be a number (got {value!r})") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high} (got {number})")
        return number

    return parse


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be true or false (got {value!r})")


def _choice(*choices: str) -> Parser:
    def parse(value: str) -> str:
        lowered = value.strip().lower()
        if lowered not in choices:
            raise ValueError(f"must be one of {', '.join(choices)} (got {value!r})")
        return lowered

    return parse


def _csv(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


HOME_ID_PATTERN = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.\-]{0,63})?$")


def _name(value: str) -> str:
    if not HOME_ID_PATTERN.match(value):
        raise ValueError(
            f"must start with a letter or digit and hold only letters, digits, '_', '.', '-' (got {value!r})"
        )
    return value


def _str(value: str) -> str:
    return value


_ENTITY_ID = re.compile(r"^(?!_)\w+(?<!_)\.(?!_)\w+(?<!_)$")


def _opt_entity_id(value: str) -> str:
    if value and not _ENTITY_ID.match(value):
        raise ValueError(f"must be an entity id like weather.home (got {value!r})")
    return value


def _pairs(value: str) -> tuple[tuple[str, str], ...]:
    """``key=value,key2=value2`` → ((key, value), ...), in the order given."""
    pairs = []
    for item in _csv(value):
        key, sep, val = item.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise ValueError(f"must be key=value pairs, comma-separated (got {item!r})")
        pairs.append((key.strip(), val.strip()))
    return tuple(pairs)


_CUSTOMIZE_KEYS = frozenset(("override_measurement", "ignore_attributes"))
# (key, override_measurement, ignore_attributes) per entry, in the order given.
Customizations = tuple[tuple[str, str | None, tuple[str, ...] | None], ...]


def _component_config(example: str, *, entity_ids: bool = False) -> Parser:
    """A JSON object as HA's ``component_config{,_domain,_glob}``: key → override_measurement/ignore_attributes."""

    def parse(value: str) -> Customizations:
        if not value:
            return ()
        try:
            data = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"must be a JSON object ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f'must be a JSON object like {{"{example}": {{"override_measurement": "..."}}}}')
        out = []
        for key, entry in data.items():
            if entity_ids and not _ENTITY_ID.match(key):
                raise ValueError(f"{key!r} is not an entity id")
            if not isinstance(entry, dict) or not entry or set(entry) - _CUSTOMIZE_KEYS:
                raise ValueError(f"{key!r} must map to an object with override_measurement and/or ignore_attributes")
            measurement = entry.get("override_measurement")
            ignore = entry.get("ignore_attributes")  # absent ≠ []: an explicit [] replaces a domain's list
            if isinstance(ignore, str):
                ignore = [ignore]  # HA's cv.ensure_list
            if not (measurement is None or isinstance(measurement, str)) \
                    or not (ignore is None or isinstance(ignore, list)) \
                    or not all(isinstance(item, str) for item in ignore or ()):
                raise ValueError(f"{key!r}: override_measurement must be a string, ignore_attributes a list of strings")
            out.append((key, measurement, None if ignore is None else tuple(ignore)))
        return tuple(out)

    return parse


def _setting(default: Any, parse: Parser = _str, *, secret: bool = False, doc: str = "") -> Any:
    return dataclasses.field(default=default, metadata={"parse": parse, "secret": secret, "doc": doc})


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """All settings of all services; each service reads the ones it needs."""

    # --- Home Assistant
    HA_URL: str = _setting("http://127.0.0.1:8123", _url, doc="Home Assistant base URL")
    HA_TOKEN: str = _setting("", secret=True, doc="long-lived access token (admin for all event types)")
    HA_EVENT_TYPES: tuple[str, ...] = _setting((), _csv, doc="event types to subscribe to; empty = all")
    HOME_ID: str = _setting("", _name, doc="name of this home, written as tag 'home' when set")
    INCLUDE_DOMAINS: tuple[str, ...] = _setting((), _csv, doc="HA-style filter: keep these domains")
    INCLUDE_ENTITIES: tuple[str, ...] = _setting((), _csv)
    INCLUDE_ENTITY_GLOBS: tuple[str, ...] = _setting((), _csv)
    EXCLUDE_DOMAINS: tuple[str, ...] = _setting((), _csv)
    EXCLUDE_ENTITIES: tuple[str, ...] = _setting((), _csv)
    EXCLUDE_ENTITY_GLOBS: tuple[str, ...] = _setting((), _csv)
    EXCLUDE_EVENT_TYPES: tuple[str, ...] = _setting((), _csv, doc="event types never stored")
    # --- the hop and the services
    ENRICHMENT_URL: str = _setting("http://127.0.0.1:8002", _url, doc="where ingestion POSTs batches")
    INGESTION_URL: str = _setting("http://127.0.0.1:8001", _url, doc="where admin-api finds ingestion")
    INGESTION_URLS: tuple[str, ...] = _setting(
        (), _urls, doc="admin-api: every ingestion to watch (a fleet), comma-separated; empty = INGESTION_URL")
    ENRICHMENT_URLS: tuple[str, ...] = _setting(
        (), _urls, doc="admin-api: every enrichment worker to watch, comma-separated; empty = ENRICHMENT_URL")
    API_TOKEN: str = _setting("", secret=True, doc="bearer token required on every endpoint but /health")
    BIND_HOST: str = _setting("127.0.0.1", doc="address the HTTP servers listen on")
    INGESTION_PORT: int = _setting(8001, _int_range(0, 65535))
    ENRICHMENT_PORT: int = _setting(8002, _int_range(0, 65535))
    ADMIN_PORT: int = _setting(8003, _int_range(0, 65535))
    MAX_BODY_BYTES: int = _setting(64 * 2**20, _int_range(1024, 2**31), doc="largest request body")
    # --- store
    INFLUXDB_URL: str = _setting("", _opt_url, doc="InfluxDB base URL; unset = embedded SQLite store")
    INFLUXDB_API: str = _setting("v1", _choice("v1", "v2"))
    INFLUXDB_TOKEN: str = _setting("", secret=True)
    INFLUXDB_ORG: str = _setting("")
    INFLUXDB_BUCKET: str = _setting("ha_events")
    INFLUXDB_DATABASE: str = _setting("", doc="v1 database; default: INFLUXDB_BUCKET")
    INFLUXDB_RETENTION_POLICY: str = _setting("")
    INFLUXDB_USERNAME: str = _setting("")
    INFLUXDB_PASSWORD: str = _setting("", secret=True)
    INFLUXDB_CREATE_DATABASE: bool = _setting(True, _bool, doc="v1: create the database when missing")
    INFLUXDB_TIMEOUT: float = _setting(10.0, _float_range(0.1, 600), doc="seconds per write request")
    INFLUXDB_BATCH_SIZE: int = _setting(5000, _int_range(1, 100_000), doc="lines per write request")
    INFLUXDB_GZIP: str = _setting("auto", _choice("auto", "true", "false"),
                                  doc="compress writes; auto: not to a loopback address (costs more CPU than it saves)")
    # --- enrichment
    SCHEMA: str = _setting("events", _choice("events", "homeassistant"), doc="point layout (docs/SCHEMA.md)")
    IGNORE_ATTRIBUTES: tuple[str, ...] = _setting((), _csv, doc="attributes never written (both schemas)")
    WEATHER_ENTITY: str = _setting("", _opt_entity_id, doc="events schema: weather entity attached to each state")
    # --- SCHEMA=homeassistant: the options of HA's own influxdb integration, same names and meaning
    HA_COMPAT_DEFAULT_MEASUREMENT: str = _setting("", doc="measurement when there is no unit (HA: entity id)")
    HA_COMPAT_OVERRIDE_MEASUREMENT: str = _setting("", doc="one measurement for everything")
    HA_COMPAT_MEASUREMENT_ATTR: str = _setting(
        "unit_of_measurement", _choice("unit_of_measurement", "domain__device_class", "entity_id"),
        doc="what names the measurement")
    HA_COMPAT_TAGS: tuple[tuple[str, str], ...] = _setting((), _pairs, doc="extra tags: key=value,key2=value2")
    HA_COMPAT_TAGS_ATTRIBUTES: tuple[str, ...] = _setting((), _csv, doc="attributes written as tags")
    HA_COMPAT_COMPONENT_CONFIG: Customizations = _setting(
        (), _component_config("sensor.outside", entity_ids=True),
        doc="JSON: entity id → override_measurement/ignore_attributes")
    HA_COMPAT_COMPONENT_CONFIG_DOMAIN: Customizations = _setting(
        (), _component_config("sensor"), doc="JSON: domain → override_measurement/ignore_attributes")
    HA_COMPAT_COMPONENT_CONFIG_GLOB: Customizations = _setting(
        (), _component_config("sensor.*_temp"), doc="JSON: entity glob → override_measurement/ignore_attributes")
    # --- durability
    DATA_DIR: str = _setting("./data", doc="outbox, spool, dead letters, embedded store")
    STORE_RETENTION_DAYS: float = _setting(
        0.0, _float_range(0, 36500), doc="embedded store: drop points older than this, hourly; 0 = keep forever")
    OUTBOX_MAX_EVENTS: int = _setting(2_000_000, _int_range(1000, 10**9))
    OUTBOX_SYNC: str = _setting("normal", _choice("normal", "full"), doc="SQLite synchronous mode")
    SPOOL_MAX_BYTES: int = _setting(2 * 2**30, _int_range(2**20, 2**40))
    BATCH_MAX_EVENTS: int = _setting(5000, _int_range(1, 100_000), doc="largest hop request, in events")
    BATCH_MAX_DELAY_MS: int = _setting(5, _int_range(0, 60_000), doc="longest wait to fill a batch")
    HOP_MAX_IN_FLIGHT: int = _setting(3, _int_range(1, 64), doc="batches on their way to enrichment at once")
    HOP_TIMEOUT: float = _setting(30.0, _float_range(1, 600), doc="seconds per hop request")
    # --- HOP=nats: fleets over NATS JetStream (docs/SCALE-OUT.md)
    HOP: str = _setting("http", _choice("http", "nats"), doc="ingestion → enrichment: http, or nats (fleets)")
    NATS_URL: str = _setting("nats://127.0.0.1:4222", _nats_url, doc="NATS servers, comma-separated")
    NATS_TOKEN: str = _setting("", secret=True, doc="NATS auth token, if the servers require one")
    NATS_STREAM: str = _setting("HA_EVENTS", _nats_name, doc="JetStream stream (created/verified at start)")
    NATS_SUBJECT_PREFIX: str = _setting("ha", _nats_name, doc="subjects: <prefix>.<home_id>.batch")
    NATS_CONSUMER: str = _setting("enrichment", _nats_name, doc="durable pull consumer all workers share")
    NATS_REPLICAS: int = _setting(1, _int_range(1, 5), doc="stream replicas: 3 in a 3-node cluster")
    NATS_MAX_BYTES: int = _setting(8 * 2**30, _int_range(2**20, 2**50), doc="stream limit; full → publish refused")
    NATS_MAX_MSGS: int = _setting(10_000_000, _int_range(1000, 10**12), doc="stream limit in messages (batches)")
    NATS_DUPLICATE_WINDOW_S: float = _setting(86400.0, _float_range(1, 7 * 86400),
                                              doc="publish de-duplication window by Nats-Msg-Id")
    NATS_ACK_WAIT_S: float = _setting(30.0, _float_range(1, 3600), doc="redeliver a message unacked this long")
    NATS_MAX_DELIVER: int = _setting(10, _int_range(1, 1000), doc="deliveries before a message is dead-lettered")
    NATS_FETCH_BATCH: int = _setting(4, _int_range(1, 256), doc="messages a worker pulls at once")
    BACKFILL: bool = _setting(True, _bool, doc="fetch the gap from HA's recorder after a reconnect")
    BACKFILL_DELAY_S: float = _setting(6.0, _float_range(0, 600), doc="wait for HA's recorder commit")
    BACKFILL_MAX_HOURS: float = _setting(240.0, _float_range(0.01, 24 * 365))
    # --- ha-ingestor verify (the migration plan's success criteria)
    VERIFY_WINDOW_S: float = _setting(60.0, _float_range(5, 3600), doc="verify: seconds of traffic to judge")
    VERIFY_BASELINE_PER_MIN: float = _setting(17.0, _float_range(0, 10**7), doc="verify: expected events/min")
    VERIFY_RATE_TOLERANCE: float = _setting(0.5, _float_range(0, 1), doc="verify: rate may be this much below")
    ADMIN_URL: str = _setting("http://127.0.0.1:8003", _url, doc="where verify finds admin-api")
    # --- logs
    LOG_LEVEL: str = _setting("info", _choice("debug", "info", "warning", "error"))
    LOG_FORMAT: str = _setting("auto", _choice("auto", "text", "json"))

    @classmethod
    def load(
        cls, environ: Mapping[str, str] | None = None, env_file: str | Path | None = None
    ) -> Settings:
        """Read the settings from ``environ`` (default: the process environment) and a .env file.

        The process environment wins over the file, as with docker-compose. ``env_file`` defaults
        to ``$HA_INGESTOR_ENV_FILE`` or ``./.env`` when that exists.
        """
        env = dict(os.environ if environ is None else environ)
        names = {field.name for field in dataclasses.fields(cls)}
        named = env.pop("HA_INGESTOR_ENV_FILE", None)
        file_path = env_file or named
        if file_path is None and Path(".env").is_file():
            file_path = ".env"
        values: dict[str, str] = {}
        if file_path is not None:
            path = Path(file_path)
            if not path.is_file():
                raise SettingsError("HA_INGESTOR_ENV_FILE", f"no such file: {path}")
            for key, value in dotenv_values(path).items():
                if key in names:
                    values[key] = value or ""
                elif not _COMPOSE_ONLY.match(key) and (problem := _typo(key, names)):
                    raise SettingsError(key, f"{problem} in {path}")
                # else docker-compose's or the containers' own (TZ, COMPOSE_PROJECT_NAME): not ours to judge
        for key, value in env.items():
            if key in names:
                values[key] = value
            elif problem := _typo(key, names):
                raise SettingsError(key, problem)
        return cls.from_values(values)

    @classmethod
    def from_values(cls, values: Mapping[str, str]) -> Settings:
        """Parse raw strings into a Settings; missing names keep their defaults, and so do empty ones: an
        empty value is no value (docker-compose passes every setting, set in .env or not)."""
        parsed: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = values.get(field.name, "").strip()
            if not raw:
                continue
            try:
                parsed[field.name] = field.metadata["parse"](raw)
            except ValueError as exc:
                shown = "***" if field.metadata["secret"] else None
                problem = str(exc) if shown is None else "is malformed"
                raise SettingsError(field.name, problem) from None
        settings = cls(**parsed)
        settings._check_together()
        return settings

    def _check_together(self) -> None:
        if self.HOP == "nats" and "." in self.HOME_ID:
            raise SettingsError("HOME_ID", "must not contain '.' when HOP=nats (it is a token of the NATS subject)")
        if self.INFLUXDB_URL and self.INFLUXDB_API == "v2":
            if not self.INFLUXDB_TOKEN:
                raise SettingsError("INFLUXDB_TOKEN", "is required when INFLUXDB_API=v2")
            if not self.INFLUXDB_ORG:
                raise SettingsError("INFLUXDB_ORG", "is required when INFLUXDB_API=v2")

    def replace(self, **changes: Any) -> Settings:
        """A copy with some values changed (already typed), checked again."""
        settings = dataclasses.replace(self, **changes)
        settings._check_together()
        return settings

    @property
    def influx_database(self) -> str:
        return self.INFLUXDB_DATABASE or self.INFLUXDB_BUCKET

    @property
    def ingestion_urls(self) -> tuple[str, ...]:
        """The ingestion instances admin-api watches."""
        return self.INGESTION_URLS or (self.INGESTION_URL,)

    @property
    def enrichment_urls(self) -> tuple[str, ...]:
        """The enrichment workers admin-api watches."""
        return self.ENRICHMENT_URLS or (self.ENRICHMENT_URL,)

    @property
    def data_dir(self) -> Path:
        return Path(self.DATA_DIR)

    def local_url(self, port: int) -> str:
        """This machine's URL of a port this process serves on BIND_HOST (loopback when it binds them all)."""
        host = "127.0.0.1" if self.BIND_HOST in ("0.0.0.0", "::", "") else self.BIND_HOST
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def serving_itself(self) -> Settings:
        """``up``: admin-api watches the ingestion and enrichment this process serves, on its own ports,
        whatever INGESTION_URL(S)/ENRICHMENT_URL(S) say (they name other processes)."""
        return self.replace(INGESTION_URL=self.local_url(self.INGESTION_PORT), INGESTION_URLS=(),
                            ENRICHMENT_URL=self.local_url(self.ENRICHMENT_PORT), ENRICHMENT_URLS=())

    def secrets(self) -> list[str]:
        """The secret values that are set, and credentials written into URLs: logs and API output must
        never contain them."""
        found = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.metadata["secret"] and value:
                found.append(value)
            elif isinstance(value, str) and "://" in value:
                found.extend(_url_secrets(value))
            elif isinstance(value, tuple):
                found.extend(secret for item in value if isinstance(item, str) for secret in _url_secrets(item))
        return found

    def masked(self) -> dict[str, Any]:
        """Every setting with its effective value; secrets as '***' when set, '' when not."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.metadata["secret"]:
                value = "***" if value else ""
            elif isinstance(value, str):
                value = _URL_USERINFO.sub("***@", value)  # credentials in a URL
            elif isinstance(value, tuple):
                value = [_URL_USERINFO.sub("***@", item) if isinstance(item, str) else item for item in value]
            out[field.name] = value
        return out

    def __repr__(self) -> str:
        return f"Settings({self.masked()!r})"

    __str__ = __repr__


def describe() -> list[tuple[str, str, str]]:
    """(name, default, doc) for every setting, for `ha-ingestor settings` and the docs."""
    rows = []
    for field in dataclasses.fields(Settings):
        default = field.default
        shown = ",".join(default) if isinstance(default, tuple) else str(default)
        rows.append((field.name, shown, field.metadata["doc"]))
    return rows
