"""HOP=nats with real processes: simulated homes → ingestion → nats-server (JetStream) → enrichment workers → influxd.

Each home is a simulator and an ingestion process with its own HOME_ID; each worker an enrichment process
with its own DATA_DIR, all pulling from one durable consumer. The simulators fire a numbered stream; at
the end every fired event of every home must be exactly one point tagged with that home.
"""

from __future__ import annotations

import time
import urllib.error
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ha_ingestor.harness.audit import Audit, fired_keys, stored_keys
from ha_ingestor.harness.influxd import Influxd
from ha_ingestor.harness.nats_server import NatsServer, nats_server_binary
from ha_ingestor.harness.procs import Stack, http_get

pytestmark = pytest.mark.skipif(nats_server_binary() is None, reason="needs Debian's nats-server")

RATE = 400
DB = "fleet"


@dataclass
class Fleet:
    tmp: Path
    nats: NatsServer
    influxd: Influxd
    homes: dict[str, Stack] = field(default_factory=dict)
    workers: list[Stack] = field(default_factory=list)
    rates: dict[str, int] = field(default_factory=dict)
    started: float = 0.0

    def env(self, **extra: str) -> dict[str, str]:
        return {"HOP": "nats", "NATS_URL": self.nats.url, "NATS_ACK_WAIT_S": "5", "HOP_TIMEOUT": "5",
                "NATS_MAX_BYTES": str(256 * 2**20),
                "BACKFILL_DELAY_S": "2", "LOG_LEVEL": "info", **extra}

    def add_home(self, home_id: str, rate: int = RATE) -> Stack:
        stack = Stack(self.tmp / f"home-{home_id}", sim_args=["--rate", str(rate), "--mix", "0.1", "--entities",
                                                               "40", "--paused"],
                      extra_env=self.env(HOME_ID=home_id))
        stack.start("simulator", "ingestion")
        self.homes[home_id] = stack
        self.rates[home_id] = rate
        return stack

    def add_worker(self) -> Stack:
        stack = Stack(self.tmp / f"worker-{len(self.workers) + 1}", influx_url=self.influxd.url, database=DB,
                      extra_env=self.env())
        stack.start("enrichment")
        self.workers.append(stack)
        return stack

    def at(self, seconds: float) -> None:
        time.sleep(max(0.0, self.started + seconds - time.monotonic()))

    def stop(self) -> None:
        for stack in [*self.homes.values(), *self.workers]:
            stack.stop()


def stored_count(influxd: Influxd, home: str) -> int | None:
    where = f" WHERE \"home\" = '{home}'"
    try:
        rows = influxd.rows(f'SELECT count("available") FROM "states"{where}', DB, timeout=2) + \
            influxd.rows(f'SELECT count("origin") FROM "events"{where}', DB, timeout=2)
    except (OSError, urllib.error.URLError, RuntimeError):
        return None
    return sum(int(r["count"]) for r in rows)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    influxd = Influxd(tmp_path / "influxd").start()
    influxd.create_database(DB)
    nats = NatsServer(tmp_path / "nats").start()
    fleet = Fleet(tmp_path, nats, influxd)
    try:
        yield fleet
    finally:
        fleet.stop()
        nats.stop()
        influxd.stop()


def execute(fleet: Fleet, scenario: str, duration: float, record: Callable[[dict[str, Any]], None],
            fault: Callable[[Fleet], None] | None = None) -> dict[str, Audit]:
    for stack in fleet.homes.values():
        stack.sim("/sim/resume")
    fleet.started = time.monotonic()
    if fault is not None:
        fault(fleet)
    fleet.at(duration)
    for stack in fleet.homes.values():
        stack.sim("/sim/pause")
    paused = time.monotonic()
    fired = {home: fired_keys(stack) for home, stack in fleet.homes.items()}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        counts = {home: stored_count(fleet.influxd, home) for home in fired}
        if all(c is not None and c >= len(fired[home]) for home, c in counts.items()):
            break
        time.sleep(0.5)
    drained = time.monotonic() - paused
    time.sleep(1.0)  # anything arriving after the expected count would be a duplicate: give it a chance
    audits = {home: Audit.of(keys, stored_keys(fleet.influxd, DB, home)) for home, keys in fired.items()}
    for home, audit in audits.items():
        record({"scenario": scenario, "home": home, "fired": audit.fired, "stored": audit.stored,
                "missing": len(audit.missing), "duplicates": audit.duplicates,
                "rate_per_s": round(audit.fired / duration), "drain_after_pause_s": round(drained, 1)})
    for home, audit in audits.items():
        assert audit.fired >= fleet.rates[home] * duration * 0.7, f"{home}: the stream did not run"
        assert not audit.missing, f"{home}: {len(audit.missing)} missing, e.g. {sorted(audit.missing)[:5]}"
        assert audit.duplicates == 0, home
    untagged = stored_keys(fleet.influxd, DB)
    assert len(untagged) == sum(a.stored for a in audits.values()), "points without a home tag"
    return audits


def test_every_event_crosses_nats_once_through_two_workers(fleet: Fleet, record_outcome: Any) -> None:
    fleet.add_worker()
    fleet.add_worker()
    home = fleet.add_home("home1")
    execute(fleet, "nats: 1 home, 2 workers", 20.0, record_outcome)
    status, body = http_get(home.url("ingestion") + "/status")
    assert status == 200 and body["outbox"]["events"] == 0, body
    acked = [_metric(worker, "nats_messages_acked") for worker in fleet.workers]
    assert all(n > 0 for n in acked), f"the work was not shared: {acked}"


def test_two_homes_share_the_workers_without_collisions(fleet: Fleet, record_outcome: Any) -> None:
    fleet.add_worker()
    fleet.add_worker()
    fleet.add_home("north", RATE // 2)
    fleet.add_home("south", RATE // 2)
    # Both simulators name the same entities: only the home tag keeps their points apart.
    audits = execute(fleet, "nats: 2 homes, 2 workers", 20.0, record_outcome)
    assert set(audits) == {"north", "south"}


@pytest.mark.faults
def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(fleet: Fleet, record_outcome: Any) -> None:
    fleet.add_worker()
    fleet.add_worker()
    fleet.add_home("home1")

    def fault(fleet: Fleet) -> None:
        fleet.at(8)
        fleet.workers[0].services["enrichment"].kill()  # its unacked messages go to the other after ack_wait

    execute(fleet, "nats: worker SIGKILL", 25.0, record_outcome, fault)


@pytest.mark.faults
def test_nats_server_killed_and_restarted_mid_run_loses_and_duplicates_nothing(
        fleet: Fleet, record_outcome: Any) -> None:
    fleet.add_worker()
    fleet.add_worker()
    fleet.add_home("home1")

    def fault(fleet: Fleet) -> None:
        fleet.at(8)
        fleet.nats.kill()
        fleet.at(14)
        fleet.nats.start()  # same ports, same store directory

    execute(fleet, "nats: nats-server SIGKILL, back after 6 s", 25.0, record_outcome, fault)


def _metric(stack: Stack, name: str) -> float:
    status, text = http_get(stack.url("enrichment") + "/metrics")
    assert status == 200
    for line in str(text).splitlines():
        if line.split(" ")[0] in (name, f"{name}_total"):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")
