"""The migration, on this machine without Docker: one process → the split → verify → rollback → verify.

A simulated home fires a steady stream the whole time. `ha-ingestor up` runs first (the monolith's
place), is verified, then stopped; the three services start on the same DATA_DIR and are verified; then
the rollback: they stop and `up` starts again, and is verified. At the end every event fired during the
whole run is exactly one point in InfluxDB: the switches lose nothing and duplicate nothing.

The stream is state changes only: while no ingestion runs (the second or two of a switch) HA keeps
nothing but states for backfill to recover — docs/MIGRATION.md says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ha_ingestor.harness.audit import Audit, fired_keys, stored_keys
from ha_ingestor.harness.influxd import Influxd
from ha_ingestor.harness.procs import Stack, http_get, http_post, wait_for
from ha_ingestor.verify import VERIFY_ENTITY

RATE = 20  # events/s: well above the plan's 17/min baseline, small enough to read back quickly
WINDOW = "12"


@pytest.fixture
def stack(tmp_path: Path, influxd: Influxd, influx_db: str) -> Iterator[Stack]:
    stack = Stack(tmp_path, influx_url=influxd.url, database=influx_db,
                  sim_args=["--rate", str(RATE), "--mix", "0", "--entities", "40", "--paused"])
    try:
        yield stack
    finally:
        stack.stop()


def verify(stack: Stack, since: float | None = None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HA_", "INFLUXDB_"))}
    env.update(stack.env())
    args = ["verify", "--window", WINDOW, "--json", *(["--since", f"{since:.6f}"] if since is not None else [])]
    done = subprocess.run([sys.executable, "-m", "ha_ingestor", *args],
                          env=env, capture_output=True, timeout=300, check=False)
    report: dict[str, Any] = json.loads(done.stdout)
    table = "\n".join(f"{c['result']:4}  {c['name']}: {c['figure']}" for c in report["criteria"])
    print(f"\nverify (exit {done.returncode}):\n{table}")
    assert done.returncode == (0 if report["passed"] else 1), done.stderr.decode()
    return report


def test_single_to_split_and_back_verified_and_lossless(stack: Stack, influxd: Influxd, influx_db: str) -> None:
    stack.start("simulator", "up")
    stack.sim("/sim/resume")  # the home starts once the first ingestor listens: before that, nothing is ours
    stages = {"single process": verify(stack)}

    switch = time.time()  # the moment before the old one stops: verify --since puts the switch in its check
    stack.services.pop("up").terminate()
    stack.start("enrichment", "ingestion", "admin")
    stages["split"] = verify(stack, since=switch)
    gaps = next(c for c in stages["split"]["criteria"] if c["name"] == "gaps backfilled")
    assert gaps["gaps"] >= 1, gaps  # the switch itself: an interruption, backfilled

    for name in ("ingestion", "enrichment", "admin"):  # the plan's rollback
        stack.services.pop(name).terminate()
    stack.start("up")
    stages["rolled back"] = verify(stack)

    for stage, report in stages.items():
        failed = [c for c in report["criteria"] if c["result"] != "PASS"]
        assert not failed, f"{stage}: {failed}"
        zero_loss = next(c for c in report["criteria"] if c["name"].startswith("zero loss"))
        assert zero_loss["recorded"] > 0 and zero_loss["missing"] == 0

    stack.sim("/sim/pause")
    time.sleep(1.0)
    fired = fired_keys(stack)

    def caught_up() -> bool:
        stored = [k for k in stored_keys(influxd, influx_db) if k[1] != VERIFY_ENTITY]
        return len(set(stored)) >= len(set(fired))

    try:
        wait_for(caught_up, 60, what="every fired event stored")
    except TimeoutError:
        pass  # the audit below says what is missing
    time.sleep(1.0)
    audit = Audit.of(fired, [k for k in stored_keys(influxd, influx_db) if k[1] != VERIFY_ENTITY])
    print(f"\nwhole run: fired {audit.fired}, stored {audit.stored}, missing {len(audit.missing)}, "
          f"duplicates {audit.duplicates}")
    assert audit.fired > RATE * 3 * int(WINDOW)
    assert not audit.missing, sorted(audit.missing)[:5]
    assert audit.duplicates == 0


def test_a_switch_onto_an_empty_data_dir_is_caught_by_verify_and_filled_on_request(
        stack: Stack, influxd: Influxd, influx_db: str) -> None:
    """The compose route done out of order: the new ingestion starts on an empty volume, so it knows nothing
    of the old one and no gap is opened for the switch. verify --since must fail on what HA recorded
    meanwhile, and POST :8001/gaps must recover it from HA's recorder."""
    stack.start("simulator", "up")
    stack.sim("/sim/resume")
    wait_for(lambda: len(stored_keys(influxd, influx_db)) > RATE, 30, 0.2, "the single process storing")
    switch = time.time()
    stack.services.pop("up").terminate()
    ingestion_dir = stack.data_dir / "ingestion"
    ingestion_dir.rename(stack.data_dir / "ingestion-left-behind")  # the empty volume
    time.sleep(4.0)  # HA's recorder keeps what no ingestor sees meanwhile
    stack.start("enrichment", "ingestion", "admin")
    report = verify(stack, since=switch)
    criteria = {c["name"]: c for c in report["criteria"]}
    zero_loss = next(c for name, c in criteria.items() if name.startswith("zero loss"))
    assert not report["passed"] and zero_loss["result"] == "FAIL" and zero_loss["missing"] >= RATE * 2, zero_loss
    assert criteria["gaps backfilled"]["gaps"] == 0  # it knows of no interruption: that is the trap

    ingestion = stack.url("ingestion")
    status, gap = http_post(ingestion + "/gaps", {"since": f"{switch - 5:.6f}"})
    assert status == 202 and gap["status"] == "pending" and gap["reason"] == "requested", gap
    wait_for(lambda: next(g for g in http_get(ingestion + "/gaps")[1]["gaps"] if g["id"] == gap["id"])["status"]
             == "done", 60, 0.5, "the requested gap backfilled")
    again = verify(stack, since=switch)
    failed = [c for c in again["criteria"] if c["result"] != "PASS"]
    assert not failed, failed
    status, body = http_post(ingestion + "/gaps", {"since": "yesterday-ish"})
    assert status == 422 and body["field"] == "since", body
