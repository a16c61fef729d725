"""websocket-ingestion killed for a minute while the real home goes on changing: after its restart, every
state change of the gap is in the store — recovered from HA's recorder — and none is stored twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ha_ingestor.harness import ha_witness as ha
from ha_ingestor.harness.influxd import Influxd
from ha_ingestor.harness.procs import Stack, http_get, wait_for
from ha_ingestor.harness.real_ha import RealHA
from ha_ingestor.harness.subscriber import witness

pytestmark = pytest.mark.real_ha

GAP_SECONDS = 60


def gaps(stack: Stack) -> list[dict[str, object]]:
    body = http_get(stack.url("ingestion") + "/gaps")[1] or {}
    result: list[dict[str, object]] = body.get("gaps", [])
    return result


async def _scenario(real_ha: RealHA, influxd: Influxd, db: str,
                    directory: Path) -> tuple[ha.Tally, list[dict[str, object]]]:
    # The recorder commits every second: three seconds after the new subscription the gap's end is on disk.
    stack = Stack(directory, influx_url=influxd.url, database=db, token=real_ha.token,
                  extra_env={"HA_URL": real_ha.url, "BACKFILL_DELAY_S": "3"})
    try:
        async with witness(real_ha.url, real_ha.token, "state_changed") as seen:
            await asyncio.to_thread(stack.start, "enrichment", "ingestion")
            await asyncio.to_thread(wait_for, lambda: "registries sent to enrichment" in
                                    stack.services["ingestion"].log(), 30, 0.2, "registries sent")
            start_us = ha.now_us()
            await ha.drive(real_ha.url, real_ha.token, 5, "backfill")
            stack.services["ingestion"].kill()  # SIGKILL: whatever it had not made durable is gone too
            await ha.drive(real_ha.url, real_ha.token, GAP_SECONDS, "backfill")
            await asyncio.to_thread(stack.start, "ingestion")
            await asyncio.to_thread(wait_for, lambda: (g := gaps(stack)) and all(x["status"] == "done" for x in g),
                                    60, 0.5, "every gap backfilled")
            await ha.drive(real_ha.url, real_ha.token, 5, "backfill")
            end_us = ha.now_us()
            await asyncio.sleep(2)
            fired = ha.fired_keys(seen.events, start_us, end_us)
        entity_ids = {e for e, _ in fired} | {s["entity_id"] for s in real_ha.api("/api/states")}

        def recorded() -> list[ha.StateKey]:
            return asyncio.run(ha.recorded_keys(real_ha.url, real_ha.token, entity_ids, start_us, end_us))

        recorder = await asyncio.to_thread(ha.settle, recorded, set(fired), 5)
        stored = await asyncio.to_thread(ha.settle, lambda: ha.stored_keys(influxd, db, start_us, end_us),
                                         set(fired) | set(recorder), 20)
        done = gaps(stack)
    finally:
        await asyncio.to_thread(stack.stop)
    return ha.tally("backfill", fired, recorder, stored), done


def test_a_minute_without_ingestion_is_backfilled_from_the_recorder(real_ha: RealHA, influxd: Influxd,
                                                                    influx_db: str, tmp_path: Path) -> None:
    t, done = asyncio.run(_scenario(real_ha, influxd, influx_db, tmp_path))
    print("\n" + t.table())
    print("gaps: " + "; ".join(f"{g['seconds']} s, {g['states_backfilled']} states, {g['status']}" for g in done))
    assert done and all(g["status"] == "done" for g in done)
    assert sum(int(str(g["states_backfilled"])) for g in done) >= GAP_SECONDS * 5
    assert t.fired > GAP_SECONDS * 5
    assert not t.missing, t.table()
    assert t.duplicates == 0, t.table()
