"""The outbox cannot be written (disk full): ingestion keeps the events, says so in /health, and commits them
once it can — it neither drops them nor exits.

The simulator and enrichment run as processes; ingestion runs in this process, so the test can make its
SQLite file full for real: ``PRAGMA max_page_count`` caps the database at its current size, and SQLite then
answers every insert with SQLITE_FULL ("database or disk is full"), exactly as on a full disk.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from ha_ingestor.harness.procs import Stack, http_get, wait_for
from ha_ingestor.hop.http import HttpHop
from ha_ingestor.metrics import Registry
from ha_ingestor.settings import Settings
from ha_ingestor.wiring import build_ingestion


async def _until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def test_a_full_outbox_file_holds_events_in_memory_and_commits_them_when_it_can(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "stack", sim_args=["--paused", "--mix", "0.3"])
    try:
        stack.start("simulator", "enrichment")
        env = {**stack.env(), "DATA_DIR": str(tmp_path / "ingestion")}
        asyncio.run(_run(stack, Settings.from_values(env)))
    finally:
        stack.stop()


async def _run(stack: Stack, settings: Settings) -> None:
    metrics = Registry()
    hop = HttpHop(settings.ENRICHMENT_URL, metrics=metrics)
    ingestion = build_ingestion(settings, metrics, hop)
    runner = asyncio.create_task(ingestion.run())
    outbox = ingestion.outbox
    try:
        await _until(lambda: ingestion.healthy, 30, "ingestion subscribed")
        stack.sim("/sim/resume", {"rate": 200})  # every event fired from now on reaches ingestion live
        await _until(lambda: outbox.bytes_in > 0, 30, "events in the outbox")
        pages = outbox.db.run_sync(lambda: outbox.db.conn.execute("PRAGMA page_count").fetchone()[0])
        outbox.db.run_sync(lambda: outbox.db.conn.execute(f"PRAGMA max_page_count = {pages}"))
        await _until(lambda: bool(ingestion.outbox_problem), 30, "the outbox to fill")
        assert "full" in ingestion.outbox_problem and not ingestion.healthy
        assert ingestion.status()["outbox"]["problem"] == ingestion.outbox_problem
        # Still running and reading HA. (Commits succeed now and then: the forwarder's deletes free pages for
        # a few more rows, as on a real full disk.)
        await asyncio.sleep(1.0)
        assert not runner.done() and ingestion.state == "subscribed"
        outbox.db.run_sync(lambda: outbox.db.conn.execute("PRAGMA max_page_count = 1073741823"))  # space again
        await _until(lambda: not ingestion.outbox_problem and ingestion.healthy, 30, "the outbox to recover")
        stack.sim("/sim/pause")
        fired = stack.sim("/sim/report")["fired"]
        await _until(lambda: ingestion._received.value >= fired, 30, "every fired event received")
        await ingestion.stop()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await hop.close()
        outbox.close()
    await asyncio.to_thread(wait_for, lambda: _stored(stack) >= fired, 30, 0.2, f"{fired} events stored")
    assert _stored(stack) == fired  # every one, and none twice


def _stored(stack: Stack) -> int:
    _, body = http_get(stack.url("enrichment") + "/metrics")
    for line in str(body).splitlines():
        if line.startswith("events_stored_total "):
            return int(float(line.split()[1]))
    return 0
