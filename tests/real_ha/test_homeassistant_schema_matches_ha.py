"""For the same state changes of the real demo home, HA Ingestor's ``homeassistant`` schema writes the very
points HA's own influxdb integration writes: measurement, tags, fields and time, point by point.

HA Ingestor runs split (websocket-ingestion and enrichment-pipeline as processes) with SCHEMA=homeassistant
into a private influxd; HA's integration writes to ``ha_native`` on the influxd of the real-ha harness.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ha_ingestor.harness.influxd import Influxd
from ha_ingestor.harness.procs import Stack, http_get, wait_for
from ha_ingestor.harness.real_ha import RealHA, compare_points, count_points, read_points

pytestmark = pytest.mark.real_ha

RUN_SECONDS = 150  # the window is this minus 2 s and SETTLE_SECONDS: at least two minutes, as the issue asks
# HA's integration writes batches of up to 100 events and waits up to a second for each next one, so a
# point can sit in HA ~14 s (real-ha README, pitfall 4): the window closes this long before the end.
SETTLE_SECONDS = 20


def _stable_count(url: str, db: str, start_ns: int, end_ns: int, target: int = 0, quiet: float = 3.0) -> int:
    """Poll until the window holds ``target`` points, or its count stopped changing for ``quiet`` seconds."""
    last, since = -1, time.monotonic()
    while True:
        now = count_points(url, db, start_ns, end_ns)
        if target and now >= target:
            return now
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
        time.sleep(1)


def test_two_minutes_of_the_demo_home_give_identical_points(real_ha: RealHA, influxd: Influxd, influx_db: str,
                                                            tmp_path: Path) -> None:
    stack = Stack(tmp_path, influx_url=influxd.url, database=influx_db, token=real_ha.token, extra_env={
        "HA_URL": real_ha.url, "SCHEMA": "homeassistant", "HA_COMPAT_TAGS": "source=ha-peer"})
    try:
        stack.start("enrichment", "ingestion")
        wait_for(lambda: (http_get(stack.url("ingestion") + "/health")[1] or {}).get("status") == "ok", 60,
                 what="ingestion subscribed to the real HA")
        started = time.time()
        # Points from before our subscription exist only in ha_native: the window opens after it.
        start_ns = int((started + 2) * 1e9)
        time.sleep(RUN_SECONDS)
        end_ns = int((time.time() - SETTLE_SECONDS) * 1e9)
        native = _stable_count(real_ha.influx_url, real_ha.native_db, start_ns, end_ns)
        # Our outbox may still hold some of the window while HA keeps firing: wait for it to drain.
        ours = _stable_count(influxd.url, influx_db, start_ns, end_ns, target=native, quiet=30)
        duration = (end_ns - start_ns) / 1e9
    finally:
        stack.stop()
    expected = read_points(real_ha.influx_url, real_ha.native_db, start_ns, end_ns)
    actual = read_points(influxd.url, influx_db, start_ns, end_ns)
    result = compare_points(expected, actual)
    measurements = {key[0] for key in expected}
    print(f"\nreal HA comparison over {duration:.0f} s of the demo home: {result.summary()}; "
          f"{len(measurements)} measurements; ha_native {native} points, ours {ours}")
    assert duration >= 120
    assert result.compared > 500
    assert result.ok, result.details()
