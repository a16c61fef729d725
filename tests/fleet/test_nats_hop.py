"""HOP=nats with real processes: simulated homes → ingestion → nats-server (JetStream) → enrichment workers → influxd.

The fleet and its audit (every fired event of every home exactly one point tagged with that home) are in
ha_ingestor.harness.fleet; here one nats-server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ha_ingestor.harness.fleet import RATE, Fleet, execute, metric, running_fleet
from ha_ingestor.harness.nats_server import NatsServer, nats_server_binary
from ha_ingestor.harness.procs import http_get

pytestmark = pytest.mark.skipif(nats_server_binary() is None, reason="needs Debian's nats-server")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(tmp_path, NatsServer(tmp_path / "nats")) as fleet:
        yield fleet


def test_every_event_crosses_nats_once_through_two_workers(fleet: Fleet, record_outcome: Any) -> None:
    fleet.add_worker()
    fleet.add_worker()
    home = fleet.add_home("home1")
    execute(fleet, "nats: 1 home, 2 workers", 20.0, record_outcome)
    status, body = http_get(home.url("ingestion") + "/status")
    assert status == 200 and body["outbox"]["events"] == 0, body
    acked = [metric(worker, "nats_messages_acked") for worker in fleet.workers]
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


@pytest.mark.faults
def test_a_worker_that_dies_while_the_store_is_down_leaves_nothing_behind(fleet: Fleet, record_outcome: Any) -> None:
    """The stream holds an outage's backlog, not the workers' spools: a worker lost meanwhile strands nothing.

    (When a worker spooled and acked, this lost the ~1,100 events the killed worker had spooled.)
    """
    fleet.add_worker()
    fleet.add_worker()
    fleet.add_home("home1")
    first, second = fleet.workers

    def fault(fleet: Fleet) -> None:
        fleet.at(5)
        fleet.influxd.stop()
        fleet.at(11)
        assert metric(first, "events_spooled") == 0  # it holds its message in progress, nothing spooled
        first.services["enrichment"].kill()  # for good: its message goes to the other worker after ack_wait
        fleet.at(15)
        fleet.influxd.start()  # same port, same data

    execute(fleet, "nats: store down 10 s, a worker killed meanwhile", 25.0, record_outcome, fault)
    assert metric(second, "events_spooled") == 0
    assert metric(second, "store_outages") >= 1, "the store outage did not reach the surviving worker"
