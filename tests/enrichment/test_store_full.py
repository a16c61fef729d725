"""The embedded store's file cannot grow (a full disk): enrichment spools what it accepts, /health says the
store's writes fail — the store still opens, so a probe alone would say all is well — and once there is
room the spool drains and /health is 200 again.

Enrichment runs in this process, its API served on a free port, so the test can make its SQLite store full
for real: ``PRAGMA max_page_count`` caps the file at its size and SQLite answers SQLITE_FULL, as on a full disk.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson

from ha_ingestor.enrichment import api as enrichment_api
from ha_ingestor.harness.ports import free_port
from ha_ingestor.harness.procs import http_get, http_post
from ha_ingestor.http import server
from ha_ingestor.metrics import Registry
from ha_ingestor.settings import Settings
from ha_ingestor.sinks.sqlite_store import SqliteStore
from ha_ingestor.wiring import build_enrichment


def _event(n: int) -> dict[str, object]:
    when = f"2026-12-01T06:00:{n:02d}.000001+00:00"
    context = {"id": f"01JF{n:022d}", "parent_id": None, "user_id": None}
    state = {"entity_id": f"sensor.s{n}", "state": str(n), "attributes": {"note": "x" * 2000},
             "last_changed": when, "last_updated": when, "context": context}
    return {"event_type": "state_changed", "time_fired": when, "origin": "LOCAL", "context": context,
            "data": {"entity_id": f"sensor.s{n}", "old_state": None, "new_state": state}}


async def _until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):  # type: ignore[arg-type]
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


def test_a_full_embedded_store_is_unhealthy_and_spools_until_there_is_room(tmp_path: Path) -> None:
    port = free_port()
    settings = Settings.from_values({"DATA_DIR": str(tmp_path), "ENRICHMENT_PORT": str(port)})
    url = f"http://127.0.0.1:{port}"

    async def run() -> None:
        metrics = Registry()
        enrichment = build_enrichment(settings, metrics)
        pipeline = enrichment.pipeline
        store = pipeline.store
        assert isinstance(store, SqliteStore)
        await store.start()
        srv = server(enrichment_api.build(pipeline, metrics), "127.0.0.1", port)
        serving = asyncio.create_task(srv.serve())
        drain = asyncio.create_task(pipeline.drain_forever(max_backoff=0.2))
        try:
            await _until(lambda: http_get(url + "/health")[0] == 200, 20, "enrichment serving and healthy")
            status, outcome = await asyncio.to_thread(http_post, url + "/events", _event(1))
            assert status == 200 and outcome["stored"] == 1
            pages = store.db.run_sync(lambda: store.db.conn.execute("PRAGMA page_count").fetchone()[0])
            store.db.run_sync(lambda: store.db.conn.execute(f"PRAGMA max_page_count = {pages}"))
            body = orjson.dumps({"events": [_event(n) for n in range(2, 40)]})
            status, outcome = await asyncio.to_thread(http_post, url + "/events/batch", None, 10.0, "", body)
            assert status == 202 and outcome["spooled"] == 38, outcome  # accepted, kept in the spool
            status, health = await asyncio.to_thread(http_get, url + "/health")
            assert status == 503 and "store: the last write failed" in health["reason"], health
            assert "full" in health["reason"] and health["spool"]["events"] == 38
            store.db.run_sync(lambda: store.db.conn.execute("PRAGMA max_page_count = 1073741823"))  # room again
            await _until(lambda: http_get(url + "/health")[0] == 200, 30, "the spool drained and health back")
            assert len(pipeline.spool) == 0
            rows = store.db.run_sync(lambda: store.db.conn.execute("SELECT COUNT(*) FROM points").fetchone()[0])
            assert rows == 39
        finally:
            drain.cancel()
            srv.should_exit = True
            await asyncio.gather(drain, serving, return_exceptions=True)
            await store.close()
            enrichment.db.close()

    asyncio.run(run())


def test_the_embedded_store_and_the_spool_are_as_durable_as_the_outbox(tmp_path: Path) -> None:
    # The outbox deletes an event once it is stored: with OUTBOX_SYNC=full a power cut must not take the point
    # (or the spooled batch) that the deleted row became.
    for sync, level in (("normal", 1), ("full", 2)):
        settings = Settings.from_values({"DATA_DIR": str(tmp_path / sync), "OUTBOX_SYNC": sync})
        enrichment = build_enrichment(settings, Registry())
        store = enrichment.store
        assert isinstance(store, SqliteStore)
        try:
            for db in (enrichment.db, store.db):
                assert db.run_sync(lambda db=db: db.conn.execute("PRAGMA synchronous").fetchone()[0]) == level
        finally:
            store.db.close()
            enrichment.db.close()
