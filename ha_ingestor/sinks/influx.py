"""InfluxDB writer for API v1 (InfluxDB 1.x) and API v2 (InfluxDB 2.x, 1.8+, 3.x).

Status codes, as DESIGN.md lists them, and what the writer does with each:

* 204 (200): written.
* 400 / 422: the batch held lines the store refuses for good (field type conflict, parse error,
  invalid field name). With ``partial write`` the valid lines *were* written; without it (a conflict
  inside one batch) none were. Either way the batch is bisected and rewritten — rewriting a point is
  harmless, its identity is fixed — until each refused line stands alone; those are returned as
  rejected (they become dead letters) and never retried as outages are.
* 413: the request was too large; the batch is split in halves.
* 404: the database (v1) or bucket (v2) does not exist: created once when allowed, else unavailable.
* 401 / 403: credentials refused: unavailable (the data waits; a person must fix the token).
* 429 / 5xx, refused connections, timeouts: unavailable, with the server's Retry-After when it sent one.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from ..errors import StoreUnavailable
from ..http import retry_after
from ..metrics import Registry
from .line_protocol import encode_lines
from .point import Point, Rejected

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InfluxConfig:
    url: str
    api: str = "v1"  # "v1" | "v2"
    database: str = "ha_events"  # v1 database, v2 bucket
    retention_policy: str = ""
    org: str = ""
    token: str = ""
    username: str = ""
    password: str = ""
    create_database: bool = True
    timeout: float = 10.0
    batch_size: int = 5000
    gzip: bool = True


def _error_text(body: bytes) -> str:
    try:
        data = orjson.loads(body)
        if isinstance(data, dict):
            return str(data.get("error") or data.get("message") or data)
    except orjson.JSONDecodeError:
        pass
    return body.decode("utf-8", "replace")[:500]


class InfluxStore:
    """Writes points to one InfluxDB database/bucket. Safe to share between tasks."""

    def __init__(self, config: InfluxConfig, metrics: Registry | None = None) -> None:
        self.config = config
        self.name = f"influxdb-{config.api}"
        self._session: aiohttp.ClientSession | None = None
        self._created = False
        metrics = metrics or Registry()
        self._latency = metrics.histogram("store_write_seconds", "Time of one write request to the store")
        self._requests = metrics.counter("store_write_requests", "Write requests sent to the store")
        if config.api == "v2":
            self._write_url = f"{config.url}/api/v2/write"
            self._write_params = {"org": config.org, "bucket": config.database, "precision": "ns"}
        else:
            self._write_url = f"{config.url}/write"
            self._write_params = {"db": config.database, "precision": "ns"}
            if config.retention_policy:
                self._write_params["rp"] = config.retention_policy
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if config.token:
            self._headers["Authorization"] = f"Token {config.token}"
        self._auth = (
            aiohttp.BasicAuth(config.username, config.password)
            if config.username and not config.token
            else None
        )

    def describe(self) -> Mapping[str, Any]:
        return {
            "kind": "influxdb",
            "api": self.config.api,
            "url": self.config.url,
            "database" if self.config.api == "v1" else "bucket": self.config.database,
            "retention_policy": self.config.retention_policy,
            "org": self.config.org,
        }

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                auth=self._auth,
                connector=aiohttp.TCPConnector(limit=8),
            )
        return self._session

    async def start(self) -> None:
        try:
            await self.check()
        except StoreUnavailable as exc:
            # Not fatal: the service starts, reports 503 and spools until the store is back.
            log.warning("store not ready at start", extra={"reason": str(exc)})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self, method: str, url: str, *, params: Mapping[str, str], data: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes, Mapping[str, str]]:
        try:
            async with self.session.request(
                method, url, params=params, data=data, headers=headers or self._headers
            ) as response:
                return response.status, await response.read(), response.headers
        except TimeoutError:
            raise StoreUnavailable(f"no answer from {self.config.url} within {self.config.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise StoreUnavailable(f"cannot reach {self.config.url}: {exc.__class__.__name__}: {exc}") from None

    async def _post_lines(self, lines: Sequence[str]) -> tuple[int, bytes, Mapping[str, str]]:
        body = "\n".join(lines).encode("utf-8")
        headers = self._headers
        if self.config.gzip and len(body) > 1024:
            body = gzip.compress(body, compresslevel=1)
            headers = {**headers, "Content-Encoding": "gzip"}
        started = time.perf_counter()
        result = await self._request("POST", self._write_url, params=self._write_params, data=body, headers=headers)
        self._latency.observe(time.perf_counter() - started)
        self._requests.inc()
        return result

    async def write(self, points: Sequence[Point]) -> list[Rejected]:
        lines, kept, unwritable = encode_lines(points)
        rejected = [Rejected(p, "nothing writable: no finite field, or an empty name") for p in unwritable]
        size = self.config.batch_size
        for start in range(0, len(lines), size):
            rejected.extend(await self._write_chunk(lines[start : start + size], kept[start : start + size]))
        return rejected

    async def _write_chunk(self, lines: Sequence[str], points: Sequence[Point]) -> list[Rejected]:
        if not lines:
            return []
        status, body, headers = await self._post_lines(lines)
        if status in (200, 204):
            return []
        reason = _error_text(body)
        if status in (400, 422):
            if len(lines) == 1:
                return [Rejected(points[0], f"HTTP {status}: {reason}")]
            return await self._bisect(lines, points)
        if status == 413:
            if len(lines) == 1:
                return [Rejected(points[0], f"HTTP 413: the line alone is too large: {reason}")]
            return await self._bisect(lines, points)
        if status == 404 and await self._create_database(reason):
            return await self._write_chunk(lines, points)
        if status in (401, 403):
            raise StoreUnavailable(f"InfluxDB refused the credentials (HTTP {status}): {reason}")
        if status == 404:
            raise StoreUnavailable(f"InfluxDB: {reason} (HTTP 404)")
        raise StoreUnavailable(f"InfluxDB answered HTTP {status}: {reason}", retry_after(headers))

    async def _bisect(self, lines: Sequence[str], points: Sequence[Point]) -> list[Rejected]:
        middle = len(lines) // 2
        left = await self._write_chunk(lines[:middle], points[:middle])
        right = await self._write_chunk(lines[middle:], points[middle:])
        return left + right

    async def _create_database(self, reason: str) -> bool:
        """Create the v1 database once, when it is missing and that is allowed."""
        if self.config.api != "v1" or not self.config.create_database or self._created:
            return False
        if "database not found" not in reason:
            return False
        await self.query(f'CREATE DATABASE "{self.config.database}"', method="POST", database="")
        self._created = True
        log.info("created InfluxDB database", extra={"database": self.config.database})
        return True

    async def check(self) -> None:
        """An empty write: answers 204 (v2: 400 'no data') only when the database exists and we may write."""
        status, body, _ = await self._request(
            "POST", self._write_url, params=self._write_params, data=b"", headers=self._headers
        )
        if status in (200, 204) or (self.config.api == "v2" and status == 400):
            return
        reason = _error_text(body)
        if status == 404 and await self._create_database(reason):
            return await self.check()
        raise StoreUnavailable(f"InfluxDB write check failed: HTTP {status}: {reason}")

    async def query(
        self, q: str, *, method: str = "GET", database: str | None = None, epoch: str | None = None,
    ) -> dict[str, Any]:
        """Run an InfluxQL statement (v1 API, also on 1.8+/2.x with a DBRP mapping); ``epoch``: "ns" etc."""
        params = {"q": q}
        if epoch:
            params["epoch"] = epoch
        db = self.config.database if database is None else database
        if db:
            params["db"] = db
        if self.config.retention_policy and database is None:
            params["rp"] = self.config.retention_policy
        headers = {"Authorization": self._headers["Authorization"]} if self.config.token else {}
        status, body, _ = await self._request(method, f"{self.config.url}/query", params=params, headers=headers)
        if status != 200:
            raise StoreUnavailable(f"InfluxDB query failed: HTTP {status}: {_error_text(body)}")
        result: dict[str, Any] = orjson.loads(body)
        return result

    async def recent(self, limit: int) -> list[dict[str, Any]]:
        """The newest points of the ingestor's measurements (v1 InfluxQL)."""
        result = await self.query(f"SELECT * FROM /.*/ WHERE time > now() - 1d ORDER BY time DESC LIMIT {int(limit)}")
        rows: list[dict[str, Any]] = []
        for statement in result.get("results", []):
            for series in statement.get("series", []) or []:
                columns = series["columns"]
                for values in series["values"]:
                    row = {k: v for k, v in zip(columns, values, strict=True) if v is not None}
                    row["measurement"] = series["name"]
                    rows.append(row)
        rows.sort(key=lambda r: str(r.get("time", "")), reverse=True)
        return rows[:limit]


async def wait_ready(store: InfluxStore, timeout: float) -> None:
    """Poll ``check`` until it passes or ``timeout`` runs out (then raise its last error)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await store.check()
            return
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
