"""What the real HA's tokens do to websocket-ingestion: a wrong one ends it at once with one failed login in
HA's log; a non-admin user's one (a user made through HA's auth API) captures state changes only, and says so."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from ha_ingestor.harness import ha_witness as ha
from ha_ingestor.harness.influxd import Influxd
from ha_ingestor.harness.procs import Stack, http_get
from ha_ingestor.harness.real_ha import RealHA
from ha_ingestor.harness.subscriber import witness

pytestmark = pytest.mark.real_ha

EXIT_AUTH = 3


def test_a_wrong_token_ends_ingestion_with_one_failed_login_and_no_retry(real_ha: RealHA, tmp_path: Path) -> None:
    before = ha.failed_logins(real_ha.directory)
    stack = Stack(tmp_path, token="not-a-token-of-this-home", extra_env={"HA_URL": real_ha.url})
    try:
        stack.start("ingestion", wait=False)
        code = stack.services["ingestion"].wait(60)
        log = stack.services["ingestion"].log()
    finally:
        stack.stop()
    time.sleep(1)  # a second more for HA: had we retried, a second failed login would show now
    failed = ha.failed_logins(real_ha.directory) - before
    print(f"\nwrong token: exit code {code}, failed logins in HA's log: {failed}; "
          f"{[line for line in log.splitlines() if 'rejected' in line][-1][:200]}")
    assert code == EXIT_AUTH
    assert "rejected the access token" in log and "Check HA_TOKEN" in log
    assert failed == 1
    assert log.count("reconnecting") == 0


async def _non_admin(real_ha: RealHA, influxd: Influxd, db: str, directory: Path) -> tuple[ha.Tally, Any, Any]:
    token = await ha.create_user_token(real_ha.url, real_ha.token, "e2e-viewer", "viewer-password-123")
    stack = Stack(directory, influx_url=influxd.url, database=db, token=token, extra_env={"HA_URL": real_ha.url})
    try:
        async with witness(real_ha.url, real_ha.token, "state_changed") as seen:
            await asyncio.to_thread(stack.start, "enrichment", "ingestion")
            start_us = ha.now_us()
            await ha.drive(real_ha.url, real_ha.token, 10, "viewer")
            end_us = ha.now_us()
            await asyncio.sleep(2)
            fired = ha.fired_keys(seen.events, start_us, end_us)
        health = http_get(stack.url("ingestion") + "/health")[1]
        status = http_get(stack.url("ingestion") + "/status")[1]
        log = stack.services["ingestion"].log()
        recorder = await ha.recorded_keys(real_ha.url, real_ha.token, {e for e, _ in fired}, start_us, end_us)
        stored = await asyncio.to_thread(ha.settle, lambda: ha.stored_keys(influxd, db, start_us, end_us),
                                         set(fired) | set(recorder), 20)
        events = influxd.rows(f'SELECT count("origin") FROM "events" WHERE time >= {start_us * 1000}', db)
    finally:
        await asyncio.to_thread(stack.stop)
    assert "token is not an admin's: subscribing to state_changed only" in log
    assert not events, "a non-admin token cannot see call_service and friends"
    return ha.tally("non-admin token", fired, recorder, stored), health, status


def test_a_non_admin_token_captures_state_changes_only_and_says_so(real_ha: RealHA, influxd: Influxd,
                                                                   influx_db: str, tmp_path: Path) -> None:
    t, health, status = asyncio.run(_non_admin(real_ha, influxd, influx_db, tmp_path))
    print("\n" + t.table())
    print(f"/health: {health}")
    assert health["status"] == "ok"
    assert health["subscribed_to"] == ["state_changed"]
    assert health["token"] == status["ha"]["token"] == "non-admin: state_changed only"
    assert t.fired > 10 * 3
    assert not t.missing, t.table()
    assert t.duplicates == 0, t.table()
