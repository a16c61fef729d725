"""Zero loss under fault injection: a numbered stream of events, one fault, then every event is one point.

The simulator fires RATE events/s for DURATION seconds into the three services (real processes) and a
private real influxd; during the run one scenario happens. At the end the stored points must be exactly the
fired events — none missing, none duplicated — except dead letters, which must be exactly the poison events.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ha_ingestor.harness.audit import Key, fired_keys, stored_keys, stored_now
from ha_ingestor.harness.influxd import Influxd
from ha_ingestor.harness.procs import Stack, http_get, http_post
from ha_ingestor.model import to_us

pytestmark = pytest.mark.faults

RATE = 500
DURATION = 60.0
DB = "faults"


@dataclass
class Run:
    stack: Stack
    influxd: Influxd
    started: float = 0.0
    fault_ended: float | None = None
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, fired, stored)
    poison: list[Key] = field(default_factory=list)

    def at(self, seconds: float) -> None:
        """Sleep until ``seconds`` after the stream started, sampling progress meanwhile."""
        while (now := time.monotonic()) < self.started + seconds:
            self.sample()
            time.sleep(min(0.5, max(0.0, self.started + seconds - now)))

    def sample(self) -> None:
        report = self.stack.sim("/sim/report") if self.stack.services["simulator"].running else None
        stored = stored_now(self.influxd, DB)
        if report is not None and stored is not None:
            self.samples.append((time.monotonic(), int(report["fired"]), stored))

    def fault_over(self) -> None:
        self.fault_ended = time.monotonic()


def dead_letter_keys(stack: Stack) -> list[Key]:
    status, body = http_get(stack.url("enrichment") + "/deadletters?limit=1000")
    assert status == 200, body
    out: list[Key] = []
    for letter in body["dead_letters"]:
        event = letter["event"]
        new = event["data"]["new_state"]
        out.append(("state", new["entity_id"], to_us(datetime.fromisoformat(new["last_updated"]))))
    return out


@pytest.fixture
def run(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Run]:
    params: dict[str, Any] = getattr(request, "param", {})
    influxd = Influxd(tmp_path / "influxd").start()
    influxd.create_database(DB)
    stack = Stack(tmp_path, influx_url=influxd.url, database=DB,
                  sim_args=["--rate", str(RATE), "--mix", str(params.get("mix", 0.0)), "--entities", "60", "--paused"],
                  extra_env={"BACKFILL_DELAY_S": "2", **params.get("env", {})})
    try:
        yield Run(stack, influxd)
    finally:
        stack.stop()
        influxd.stop()


def execute(run: Run, scenario: str, fault: Callable[[Run], None], record: Callable[[dict[str, Any]], None],
            prepare: Callable[[Run], None] | None = None) -> None:
    stack = run.stack
    stack.start("simulator", "enrichment", "ingestion")
    if prepare is not None:
        prepare(run)
    stack.sim("/sim/resume")
    run.started = time.monotonic()
    fault(run)
    run.at(DURATION)
    stack.sim("/sim/pause")
    fired = fired_keys(stack)
    expected_dead = set(run.poison)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        count = stored_now(run.influxd, DB)
        if count is not None and count >= len(fired) - len(expected_dead):
            break
        run.sample()
        time.sleep(0.5)
    time.sleep(1.0)  # anything arriving after the expected count would be a duplicate: give it a chance
    finished = time.monotonic()
    stored = stored_keys(run.influxd, DB)
    dead = dead_letter_keys(stack)
    counts = Counter(stored)
    fired_set = set(fired)
    missing = fired_set - set(stored) - set(dead)
    duplicates = sum(n - 1 for n in counts.values()) + len(set(stored) - fired_set)
    drain = None
    if run.fault_ended is not None:
        caught_up = [t for t, f, s in run.samples if t >= run.fault_ended and s >= f - RATE - len(expected_dead)]
        drain = round((caught_up[0] if caught_up else finished) - run.fault_ended, 1)
    record({"scenario": scenario, "fired": len(fired), "stored": len(stored), "missing": len(missing),
            "duplicates": duplicates, "dead_letters": len(dead), "drain_s": drain})
    assert len(fired) >= RATE * DURATION * 0.8, "the stream did not run"
    assert not missing, f"{len(missing)} events missing, e.g. {sorted(missing)[:5]}"
    assert duplicates == 0
    assert Counter(dead) == Counter(expected_dead)


def test_a_enrichment_killed_and_restarted_after_10s(run: Run, record_outcome: Any) -> None:
    def fault(run: Run) -> None:
        run.at(15)
        run.stack.services["enrichment"].kill()
        run.at(25)
        run.stack.start("enrichment")
        run.fault_over()

    execute(run, "a. enrichment SIGKILL, back after 10 s", fault, record_outcome)


def test_b_ingestion_killed_and_restarted_after_30s(run: Run, record_outcome: Any) -> None:
    def fault(run: Run) -> None:
        run.at(10)
        run.stack.services["ingestion"].kill()
        run.at(40)
        run.stack.start("ingestion")
        run.fault_over()

    execute(run, "b. ingestion SIGKILL, back after 30 s", fault, record_outcome)


def test_c1_influxd_stopped_for_45s(run: Run, record_outcome: Any) -> None:
    def fault(run: Run) -> None:
        run.at(8)
        run.influxd.stop()
        run.at(53)
        run.influxd.start()
        run.fault_over()

    execute(run, "c. influxd stopped 45 s", fault, record_outcome)


def test_c2_influxd_frozen_for_45s(run: Run, record_outcome: Any) -> None:
    def fault(run: Run) -> None:
        run.at(8)
        run.influxd.freeze()
        run.at(53)
        run.influxd.thaw()
        run.fault_over()

    execute(run, "c. influxd SIGSTOP 45 s", fault, record_outcome)


def test_d1_connection_dropped_without_a_close_frame(run: Run, record_outcome: Any) -> None:
    def fault(run: Run) -> None:
        for second in (15, 30, 45):
            run.at(second)
            assert run.stack.sim("/sim/drop")["dropped"] >= 1
        run.fault_over()

    execute(run, "d. HA drops the connection (x3)", fault, record_outcome)


def test_d2_home_assistant_restarts(run: Run, record_outcome: Any) -> None:
    def fault(run: Run) -> None:
        run.at(20)
        run.stack.services["simulator"].terminate()
        run.at(28)
        run.stack.start("simulator")  # keeps its states and history in --state-dir
        run.stack.sim("/sim/resume")  # it starts paused, like the first time
        run.fault_over()

    execute(run, "d. HA restarts (8 s down)", fault, record_outcome)


def test_g_every_service_stopped_cleanly_and_restarted(run: Run, record_outcome: Any) -> None:
    def fault(run: Run) -> None:
        # SIGTERM, as docker stop and systemd do: in-flight batches are flushed, nothing accepted is lost.
        run.at(10)
        assert run.stack.services["enrichment"].terminate() == 0
        run.stack.start("enrichment")
        run.at(25)
        assert run.stack.services["ingestion"].terminate() == 0
        run.stack.start("ingestion")
        run.fault_over()

    execute(run, "g. SIGTERM enrichment, then ingestion", fault, record_outcome)


@pytest.mark.parametrize("run", [{"mix": 0.1}], indirect=True)
def test_e_poison_events_become_dead_letters_and_nothing_else_does(run: Run, record_outcome: Any) -> None:
    def prepare(run: Run) -> None:
        # The store already holds attr_level as text: our number would be a field type conflict.
        now_ns = time.time_ns()
        status, _ = http_post(f"{run.influxd.url}/write?db={DB}",
                              body=f'states,entity_id=sensor.seed attr_level="high" {now_ns}'.encode())
        assert status == 204

    def fault(run: Run) -> None:
        for n in range(20):
            run.at(5 + n * 2)
            status, state = http_post(run.stack.url("simulator") + f"/api/states/sensor.poison_{n}",
                                      {"state": str(n), "attributes": {"level": n}}, token=run.stack.token)
            assert status in (200, 201), state
            run.poison.append(("state", state["entity_id"], to_us(datetime.fromisoformat(state["last_updated"]))))
        run.fault_over()

    execute(run, "e. 20 poison events in the stream", fault, record_outcome, prepare)


@pytest.mark.parametrize("run", [{"env": {"OUTBOX_MAX_EVENTS": "2000"}}], indirect=True)
def test_f_outbox_limit_reached_during_a_long_enrichment_outage(run: Run, record_outcome: Any) -> None:
    def fault(run: Run) -> None:
        run.at(10)
        run.stack.services["enrichment"].kill()
        run.at(20)
        status, body = http_get(run.stack.url("ingestion") + "/health")
        assert status == 503 and "outbox full" in body["reason"], body  # paused, not dropping
        run.at(40)
        run.stack.start("enrichment")
        run.fault_over()

    execute(run, "f. outbox full during a 30 s outage", fault, record_outcome)
