"""The HTTP hop: ``POST {ENRICHMENT_URL}/events/batch``, the migration plan's target architecture."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson

from ..errors import HopRejected, HopUnavailable
from ..http import retry_after
from ..metrics import Registry
from .base import batch_body

# What enrichment answers about the events themselves (malformed 400, invalid 422, too large 413) or the
# credentials (401/403); the forwarder splits or waits on these, and retries everything else.
_REFUSALS = frozenset({400, 401, 403, 413, 422})


class HttpHop:
    name = "http"

    def __init__(self, base_url: str, *, token: str = "", timeout: float = 30.0, metrics: Registry | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._session: aiohttp.ClientSession | None = None
        metrics = metrics or Registry()
        self._latency = metrics.histogram("hop_request_seconds", "Time of one hop request, send to 2xx")

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def _request(self, method: str, path: str, body: bytes, params: dict[str, str] | None = None) -> bytes:
        url = self.base_url + path
        started = time.perf_counter()
        try:
            async with self.session.request(method, url, data=body, headers=self._headers, params=params) as resp:
                text = await resp.read()
                status = resp.status
                headers = resp.headers
        except TimeoutError:
            raise HopUnavailable(f"{url}: no answer within {self.timeout:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise HopUnavailable(f"{url}: {exc.__class__.__name__}: {exc}") from None
        if 200 <= status < 300:
            self._latency.observe(time.perf_counter() - started)
            return text
        reason = _reason(text)
        if status in _REFUSALS:
            raise HopRejected(status, reason)
        if status in (408, 429) or status >= 500:
            raise HopUnavailable(f"{url}: HTTP {status}: {reason}", retry_after(headers))
        # 404, 405, 421…: not enrichment judging the events (a wrong ENRICHMENT_URL, a proxy in between), so
        # they wait in the outbox instead of being split into the rejected table.
        raise HopUnavailable(f"{url}: HTTP {status}: {reason} (is ENRICHMENT_URL right?)", retry_after(headers))

    async def send(self, home_id: str, events: Sequence[bytes]) -> None:
        await self._request("POST", "/events/batch", batch_body(home_id, events))

    async def put_registry(self, home_id: str, payload: dict[str, Any]) -> None:
        await self._request("PUT", "/registry", orjson.dumps(payload), params={"home_id": home_id})

    async def check(self) -> None:
        url = self.base_url + "/health"
        try:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise HopUnavailable(f"enrichment unhealthy: HTTP {resp.status}: {_reason(body)}")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise HopUnavailable(f"enrichment unreachable at {url}: {exc.__class__.__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _reason(body: bytes) -> str:
    try:
        data = orjson.loads(body)
        if isinstance(data, dict):
            return str(data.get("error") or data.get("reason") or data)[:500]
    except orjson.JSONDecodeError:
        pass
    return body[:500].decode("utf-8", "replace")
