"""A fleet for the ``HOP=nats`` tests: simulated homes → ingestion → NATS → enrichment workers → influxd.

Each home is a simulator and an ingestion process with its own HOME_ID; each worker an enrichment process
with its own DATA_DIR, all pulling from one durable consumer. :func:`execute` runs a scenario: the
simulators fire a numbered stream, a fault may strike meanwhile, and at the end every fired event of every
home must be exactly one point tagged with that home.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .audit import Audit, fired_keys, stored_keys, stored_now
from .influxd import Influxd
from .nats_server import NatsCluster, NatsServer
from .procs import Stack, http_get

RATE = 400
DB = "fleet"


@dataclass
class Fleet:
    tmp: Path
    nats: NatsServer | NatsCluster
    influxd: Influxd
    replicas: int = 1
    homes: dict[str, Stack] = field(default_factory=dict)
    workers: list[Stack] = field(default_factory=list)
    rates: dict[str, int] = field(default_factory=dict)
    started: float = 0.0

    def env(self, **extra: str) -> dict[str, str]:
        return {"HOP": "nats", "NATS_URL": self.nats.url, "NATS_REPLICAS": str(self.replicas),
                "NATS_ACK_WAIT_S": "5", "HOP_TIMEOUT": "5", "NATS_MAX_BYTES": str(256 * 2**20),
                "BACKFILL_DELAY_S": "2", "LOG_LEVEL": "info", **extra}

    def add_home(self, home_id: str, rate: int = RATE) -> Stack:
        stack = Stack(self.tmp / f"home-{home_id}", sim_args=["--rate", str(rate), "--mix", "0.1", "--entities",
                                                               "40", "--paused"],
                      extra_env=self.env(HOME_ID=home_id))
        self.homes[home_id] = stack  # before start: stopped at the end even when it fails to start
        self.rates[home_id] = rate
        stack.start("simulator", "ingestion")
        return stack

    def add_worker(self) -> Stack:
        stack = Stack(self.tmp / f"worker-{len(self.workers) + 1}", influx_url=self.influxd.url, database=DB,
                      extra_env=self.env())
        self.workers.append(stack)
        stack.start("enrichment")
        return stack

    def at(self, seconds: float) -> None:
        """Sleep until ``seconds`` after the simulators resumed."""
        time.sleep(max(0.0, self.started + seconds - time.monotonic()))

    def stop(self) -> None:
        for stack in [*self.homes.values(), *self.workers]:
            stack.stop()


@contextlib.contextmanager
def running_fleet(tmp: Path, nats: NatsServer | NatsCluster, replicas: int = 1) -> Iterator[Fleet]:
    """influxd and NATS started, no homes or workers yet; every process stopped at the end, whatever happened."""
    influxd = Influxd(tmp / "influxd").start()
    try:
        influxd.create_database(DB)
        nats.start()
        fleet = Fleet(tmp, nats, influxd, replicas)
        try:
            yield fleet
        finally:
            fleet.stop()
    finally:
        nats.stop()
        influxd.stop()


def execute(fleet: Fleet, scenario: str, duration: float, record: Callable[[dict[str, Any]], None],
            fault: Callable[[Fleet], None] | None = None) -> dict[str, Audit]:
    """Fire for ``duration`` s (``fault`` runs meanwhile), drain, record one row per home and check it."""
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
        counts = {home: stored_now(fleet.influxd, DB, home) for home in fired}
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


def metric(stack: Stack, name: str) -> float:
    """A counter or gauge from the worker's ``/metrics``."""
    status, text = http_get(stack.url("enrichment") + "/metrics")
    assert status == 200
    for line in str(text).splitlines():
        if line.split(" ")[0] in (name, f"{name}_total"):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")
