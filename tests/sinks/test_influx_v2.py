"""The v2 write API: the request against a real server (VictoriaMetrics), and InfluxDB 2's status codes."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web

from ha_ingestor.errors import StoreUnavailable
from ha_ingestor.harness.ports import serving
from ha_ingestor.harness.victoria import VictoriaMetrics, victoria_binary
from ha_ingestor.sinks.influx import InfluxConfig, InfluxStore
from ha_ingestor.sinks.point import Point


@pytest.fixture(scope="module")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    if victoria_binary() is None:
        pytest.skip("victoria-metrics is not installed (scripts/test.sh installs it)")
    server = VictoriaMetrics(tmp_path_factory.mktemp("victoria")).start()
    try:
        yield server
    finally:
        server.stop()


async def test_v2_writes_gzip_batches_a_real_server_accepts(victoria: VictoriaMetrics) -> None:
    now_ns = time.time_ns() // 1_000_000 * 1_000_000  # the server keeps milliseconds
    points = [Point("states", (("entity_id", f"sensor.v{i % 5}"),), {"value": float(i), "state": "x"},
                    now_ns + i * 1_000_000) for i in range(3000)]
    store = InfluxStore(InfluxConfig(victoria.url, api="v2", database="ha_events", org="home", token="secret",
                                     batch_size=1000))
    try:
        await store.check()
        assert await store.write(points) == []
    finally:
        await store.close()
    expected = {(p.tags[0][1], p.time_ns): p.fields["value"] for p in points}
    got: dict[tuple[str, int], float] = {}
    deadline = time.monotonic() + 10
    while len(got) < len(expected) and time.monotonic() < deadline:  # the server ingests asynchronously
        await asyncio.sleep(0.2)
        exported = await asyncio.to_thread(victoria.export, '{__name__="states_value"}')
        got = {(s["metric"]["entity_id"], t * 1_000_000): v for s in exported
               for t, v in zip(s["timestamps"], s["values"], strict=True)}
    assert got == expected


class InfluxDB2Faults:
    """Answers like InfluxDB 2.x does for faults no server available here can be made to produce
    (413 for a large body, 422 for a bad line, 401, 429/503 with Retry-After). An emulation, on purpose."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[tuple[int, dict[str, str], str]] = []

    async def write(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        lines = body.decode().splitlines()
        self.requests.append({"params": dict(request.query), "auth": request.headers.get("Authorization"),
                              "lines": lines})
        if any('"poison"' in line for line in lines):
            return web.json_response({"code": "unprocessable entity", "message": "failure writing points: field "
                                      "type conflict"}, status=422)
        if len(lines) > 2:
            return web.json_response({"code": "request too large", "message": "payload too large"}, status=413)
        if self.script:
            status, headers, message = self.script.pop(0)
            return web.json_response({"code": "x", "message": message}, status=status, headers=headers)
        return web.Response(status=204)


@pytest.fixture
async def faults() -> AsyncIterator[tuple[InfluxDB2Faults, str]]:
    fake = InfluxDB2Faults()
    app = web.Application()
    app.router.add_post("/api/v2/write", fake.write)
    async with serving(app) as url:
        yield fake, url


def _store(url: str) -> InfluxStore:
    return InfluxStore(InfluxConfig(url, api="v2", database="b", org="o", token="tok", gzip=False))


async def test_v2_splits_on_413_and_isolates_422(faults: tuple[InfluxDB2Faults, str]) -> None:
    fake, url = faults
    store = _store(url)
    good = [Point("m", (), {"v": float(i)}, i) for i in range(6)]
    poison = Point("m", (), {"v": "poison"}, 99)
    try:
        rejected = await store.write([*good[:3], poison, *good[3:]])
    finally:
        await store.close()
    assert [r.point for r in rejected] == [poison] and "422" in rejected[0].reason
    written = [line for r in fake.requests if len(r["lines"]) <= 2 and '"poison"' not in "".join(r["lines"])
               for line in r["lines"]]
    assert sorted(written) == sorted(f"m v={float(i)!r} {i}" for i in range(6))
    assert {r["auth"] for r in fake.requests} == {"Token tok"}
    assert fake.requests[0]["params"] == {"org": "o", "bucket": "b", "precision": "ns"}


@pytest.mark.parametrize(("status", "headers", "retry_after"), [(429, {"Retry-After": "7"}, 7.0), (503, {}, None),
                                                                (401, {}, None)])
async def test_v2_outages_and_refused_tokens_are_unavailable(
        faults: tuple[InfluxDB2Faults, str], status: int, headers: dict[str, str], retry_after: float | None) -> None:
    fake, url = faults
    fake.script.append((status, headers, "nope"))
    store = _store(url)
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await store.write([Point("m", (), {"v": 1.0}, 1)])
    finally:
        await store.close()
    assert caught.value.retry_after == retry_after
    assert str(status) in str(caught.value)
