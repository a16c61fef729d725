"""Home Assistant restarted under a running ingestor: it is subscribed again within 10 s of HA answering,
and every state change HA recorded across the restart is in the store (live or backfilled), none twice.

Runs last (``restarts_ha``): the other tests share this Home Assistant.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from ha_ingestor.harness import ha_witness as ha
from ha_ingestor.harness.influxd import Influxd
from ha_ingestor.harness.procs import Stack, http_get, wait_for
from ha_ingestor.harness.real_ha import RealHA

pytestmark = [pytest.mark.real_ha, pytest.mark.restarts_ha]

RECONNECT_WITHIN_S = 10.0  # the criterion


def ha_answers(real_ha: RealHA) -> bool:
    return http_get(real_ha.url + "/api/", timeout=1, token=real_ha.token)[0] == 200


async def _scenario(real_ha: RealHA, influxd: Influxd, db: str, directory: Path) -> tuple[ha.Tally, float]:
    stack = Stack(directory, influx_url=influxd.url, database=db, token=real_ha.token,
                  extra_env={"HA_URL": real_ha.url, "BACKFILL_DELAY_S": "3"})
    try:
        await asyncio.to_thread(stack.start, "enrichment", "ingestion")
        before_ids = {s["entity_id"] for s in real_ha.api("/api/states")}
        start_us = ha.now_us()
        await ha.drive(real_ha.url, real_ha.token, 5, "restart")
        await asyncio.to_thread(real_ha.stop)
        stopped = time.time()
        starting = asyncio.create_task(asyncio.to_thread(real_ha.start))
        try:
            # "Up" is the first answer of HA's API, which comes before start.sh sees HA running.
            await asyncio.to_thread(wait_for, lambda: ha_answers(real_ha), 120, 0.05, "HA answering")
            up = time.time()
        finally:
            await starting
        status_url = stack.url("ingestion") + "/status"

        def resubscribed() -> float:
            ha_status = (http_get(status_url)[1] or {}).get("ha") or {}
            since = ha_status.get("connected_since") or 0.0
            return float(since) if ha_status.get("state") == "subscribed" and since > stopped else 0.0

        reconnect_s = await asyncio.to_thread(wait_for, resubscribed, 60, 0.1, "ingestion subscribed again") - up
        await asyncio.to_thread(wait_for, lambda: all(g["status"] == "done" for g in
                                (http_get(stack.url("ingestion") + "/gaps")[1] or {}).get("gaps", [])),
                                60, 0.5, "gaps backfilled")
        await ha.drive(real_ha.url, real_ha.token, 5, "restart")
        end_us = ha.now_us()
        entity_ids = before_ids | {s["entity_id"] for s in real_ha.api("/api/states")}

        def recorded() -> list[ha.StateKey]:
            return asyncio.run(ha.recorded_keys(real_ha.url, real_ha.token, entity_ids, start_us, end_us))

        await asyncio.sleep(2)  # the recorder commits every second
        recorder = await asyncio.to_thread(recorded)
        stored = await asyncio.to_thread(ha.settle, lambda: ha.stored_keys(influxd, db, start_us, end_us),
                                         set(recorder), 20)
    finally:
        await asyncio.to_thread(stack.stop)
    return ha.tally("HA restart", None, recorder, stored), reconnect_s


def test_after_a_restart_of_ha_ingestion_is_back_within_10_s_and_misses_nothing(
        real_ha: RealHA, influxd: Influxd, influx_db: str, tmp_path: Path) -> None:
    t, reconnect_s = asyncio.run(_scenario(real_ha, influxd, influx_db, tmp_path))
    print("\n" + t.table())
    print(f"subscribed again {reconnect_s:.1f} s after HA answered")
    assert reconnect_s <= RECONNECT_WITHIN_S
    assert t.recorded > 10 * 5
    assert not t.missing, t.table()
    assert t.duplicates == 0, t.table()
