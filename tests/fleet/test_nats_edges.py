"""The NATS hop's edges against a real nats-server: no server, a full stream, messages that fail for good,
messages that wait behind a slow one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import orjson
import pytest
from aiohttp import ClientSession, web

from ha_ingestor.enrichment.deadletters import DeadLetters
from ha_ingestor.enrichment.nats_consumer import NatsConsumer
from ha_ingestor.enrichment.pipeline import Pipeline
from ha_ingestor.enrichment.registry import RegistryCache
from ha_ingestor.enrichment.spool import Spool
from ha_ingestor.errors import HopUnavailable
from ha_ingestor.harness.influxd import Influxd
from ha_ingestor.harness.nats_server import NatsServer, nats_server_binary
from ha_ingestor.harness.ports import free_port, serving
from ha_ingestor.harness.procs import Stack, http_get, wait_for
from ha_ingestor.hop.jetstream import JetStreamConfig
from ha_ingestor.hop.nats import NatsHop
from ha_ingestor.metrics import Registry
from ha_ingestor.sinks.influx import InfluxConfig, InfluxStore
from ha_ingestor.sqlite import SqliteWorker

pytestmark = pytest.mark.skipif(nats_server_binary() is None, reason="needs Debian's nats-server")

EVENT = orjson.dumps({"event_type": "call_service", "time_fired": "2026-01-01T00:00:00.000001+00:00",
                      "data": {"domain": "light", "service": "turn_on"}, "origin": "LOCAL",
                      "context": {"id": "01J0000000000000000000000A"}})


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path / "nats") as srv:
        yield srv


async def test_no_server_is_hop_unavailable_and_the_outbox_keeps_the_batch() -> None:
    hop = NatsHop(JetStreamConfig(servers=(f"nats://127.0.0.1:{free_port()}",), max_bytes=2**24))
    with pytest.raises(HopUnavailable, match="no server answers"):
        await hop.send("home1", [EVENT])
    await hop.close()


async def test_a_full_stream_pushes_back_instead_of_dropping(server: NatsServer) -> None:
    hop = NatsHop(JetStreamConfig(servers=(server.url,), stream="SMALL", max_bytes=2**24, max_msgs=3,
                                  publish_timeout=5))
    for n in range(3):
        await hop.send("home1", [EVENT.replace(b"000001+", f"00000{n + 2}+".encode())])
    await hop.send("home1", [EVENT.replace(b"000001+", b"000002+")])  # the same batch again: a duplicate, acked
    with pytest.raises(HopUnavailable, match="refused the publish"):
        await hop.send("home1", [EVENT.replace(b"000001+", b"000009+")])
    await hop.close()


def test_messages_that_fail_for_good_become_dead_letters_and_are_not_redelivered(
        server: NatsServer, tmp_path: Path) -> None:
    worker = Stack(tmp_path / "worker", extra_env={"HOP": "nats", "NATS_URL": server.url, "NATS_ACK_WAIT_S": "2",
                                                   "NATS_MAX_BYTES": str(2**24)})
    worker.start("enrichment")
    try:
        bad_event = EVENT.replace(b'"time_fired":"2026', b'"time_fired":"nope')
        # An integer past 64 bits, as HA may send in event data: the good events of a split batch keep their
        # bytes (once they went through orjson and came out as 1.2345678901234568e+29).
        big = EVENT.replace(b'"service":"turn_on"', b'"service":"turn_on","n":123456789012345678901234567890')
        big = big.replace(b"00.000001", b"00.000002")

        async def publish() -> None:
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            await js.publish("ha.home1.batch", b"{not json")
            await js.publish("ha.home1.batch",
                             b'{"home_id":"home1","events":[' + EVENT + b"," + bad_event + b"," + big + b"]}")
            await nc.close()

        wait_for(lambda: http_get(worker.url("enrichment") + "/health")[0] == 200, 20, what="worker")
        time.sleep(1.0)  # the worker creates the stream at start
        asyncio.run(publish())

        def letters() -> list[dict[str, object]] | None:
            status, body = http_get(worker.url("enrichment") + "/deadletters?limit=100")
            return body["dead_letters"] if status == 200 and len(body["dead_letters"]) >= 2 else None

        found = wait_for(letters, 20, what="two dead letters")
        reasons = sorted(str(letter["reason"]) for letter in found)
        assert reasons[0].startswith("malformed batch") and reasons[1].startswith("time_fired"), reasons
        time.sleep(5.0)  # past ack_wait twice: nothing comes back
        status, body = http_get(worker.url("enrichment") + "/deadletters?limit=100")
        assert status == 200 and len(body["dead_letters"]) == 2
        _, metrics = http_get(worker.url("enrichment") + "/metrics")
        assert "events_stored_total 2" in metrics, "the good events were stored"
        assert 'events_dead_lettered_by_home_total{home="home1"} 2' in metrics, "counted for their home"
        _, recent = http_get(worker.url("enrichment") + "/events/recent?limit=10")
        data = [str(point["fields"].get("data")) for point in recent["points"]]
        assert any('"n":123456789012345678901234567890' in text for text in data), data
    finally:
        worker.stop()


def _pipeline(store_url: str, database: str, directory: Path, metrics: Registry) -> tuple[Pipeline, InfluxStore]:
    directory.mkdir(parents=True, exist_ok=True)
    db = SqliteWorker(directory / "enrichment.sqlite")
    store = InfluxStore(InfluxConfig(url=store_url, database=database, gzip=False, timeout=30), metrics)
    return Pipeline(store, Spool(db, 1 << 20, metrics), DeadLetters(db, metrics), RegistryCache(None), metrics), store


async def test_messages_fetched_with_a_slow_one_are_kept_in_progress_not_handed_to_another_worker(
        server: NatsServer, influxd: Influxd, influx_db: str, tmp_path: Path) -> None:
    """Worker A fetches two messages; each write takes longer than ack_wait (a slow store: a real proxy on
    localhost that holds each write 3 s, then passes it to influxd). The second waits behind the first, so
    without being kept in progress it would time out and go to worker B, counting a delivery against
    max_deliver and being processed twice."""
    writes: list[str] = []

    async def slow_write(request: web.Request) -> web.Response:
        body = await request.read()
        writes.append(body.decode())
        await asyncio.sleep(3.0)
        async with ClientSession() as session, session.post(
                influxd.url + "/write", params=request.query, data=body) as answer:
            return web.Response(status=answer.status, body=await answer.read())

    async def ping(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/write", slow_write)
    app.router.add_get("/ping", ping)
    influxd.create_database(influx_db)
    config = JetStreamConfig(servers=(server.url,), stream="SLOW", max_bytes=2**24, ack_wait=2.0, fetch_batch=4)
    hop = NatsHop(config)
    for n in (1, 2):  # published before any worker runs: A's first fetch takes both
        await hop.send("home1", [EVENT.replace(b"000001+", f"00000{n}+".encode())])
    await hop.close()
    async with serving(app) as slow_url:
        slow, slow_store = _pipeline(slow_url, influx_db, tmp_path / "a", Registry())
        fast, fast_store = _pipeline(influxd.url, influx_db, tmp_path / "b", Registry())
        worker_a = asyncio.create_task(NatsConsumer(slow, config, Registry()).run())
        deadline = time.monotonic() + 20
        while not writes and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert writes, "worker A never wrote"
        worker_b = asyncio.create_task(NatsConsumer(fast, config, Registry()).run())
        try:
            while fast.last_store_write == 0 and len(writes) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await asyncio.sleep(4.0)  # the second write ends ~3 s after it began: past ack_wait once more
            nc = await nats.connect(server.url)
            info = await nc.jetstream().consumer_info("SLOW", config.consumer)
            await nc.close()
        finally:
            for task in (worker_a, worker_b):
                task.cancel()
            await asyncio.gather(worker_a, worker_b, return_exceptions=True)
            await slow_store.close()
            await fast_store.close()
    assert fast.last_store_write == 0, "worker B was handed a message worker A held"
    assert len(writes) == 2 and info.num_redelivered == 0 and info.num_ack_pending == 0, (writes, info)
    assert len(influxd.rows('SELECT * FROM "events"', influx_db)) == 2
