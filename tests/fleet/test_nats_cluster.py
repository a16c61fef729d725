"""The fleet over a real 3-node JetStream cluster on localhost (NATS_REPLICAS=3): three homes, three workers.

During the run a worker is SIGKILLed, then the node leading both the stream and the workers' consumer; it
comes back later with its ports and store. Every event of every home must still be stored exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats.errors
import pytest

from ha_ingestor.harness.fleet import Fleet, execute, running_fleet
from ha_ingestor.harness.nats_server import NatsCluster, NatsServer, nats_server_binary
from ha_ingestor.harness.procs import wait_for

pytestmark = pytest.mark.skipif(nats_server_binary() is None, reason="needs Debian's nats-server")

STREAM, CONSUMER = "HA_EVENTS", "enrichment"  # the defaults of NATS_STREAM and NATS_CONSUMER
HOMES = ("home-a", "home-b", "home-c")
RATE = 170  # per home: ~500 events/s in all, on two cores shared by 13 processes


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(tmp_path, NatsCluster(tmp_path / "nats"), replicas=3) as fleet:
        yield fleet


def replicated(cluster: NatsCluster) -> dict[str, Any] | None:
    """The stream once its leader sees two current replicas, else None."""
    stream = cluster.report(STREAM)
    replicas = (stream or {}).get("cluster", {}).get("replicas") or []
    return stream if len(replicas) == 2 and all(r.get("current") for r in replicas) else None


def leaders(cluster: NatsCluster) -> set[str] | None:
    """The nodes leading the stream and the consumer (one name when one node leads both); None while unknown."""
    stream, consumer = cluster.report(STREAM), cluster.report(STREAM, CONSUMER)
    return {stream["cluster"]["leader"], consumer["cluster"]["leader"]} if stream and consumer else None


def lead_together(cluster: NatsCluster) -> NatsServer:
    """Move the consumer's leadership until it sits with the stream's, so that one kill takes both."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = leaders(cluster)
        if now and len(now) == 1:
            return cluster.node(now.pop())
        if now:
            try:
                cluster.step_down(STREAM, CONSUMER)  # to a random other replica: 1 in 2 lands right
            except (TimeoutError, nats.errors.Error):
                pass  # an election still running: ask again
        time.sleep(0.5)
    raise AssertionError("the consumer's leadership never came to the stream leader's node")


@pytest.mark.faults
def test_three_homes_lose_and_duplicate_nothing_when_a_worker_and_the_leading_node_die(
        fleet: Fleet, record_outcome: Any) -> None:
    cluster = fleet.nats
    assert isinstance(cluster, NatsCluster)
    for _ in range(3):
        fleet.add_worker()
    for home in HOMES:
        fleet.add_home(home, RATE)
    stream = wait_for(lambda: replicated(cluster), 30, what="the stream on 3 current replicas")
    assert stream["config"]["num_replicas"] == 3, stream["config"]
    leader = lead_together(cluster)

    def fault(fleet: Fleet) -> None:
        fleet.at(8)
        fleet.workers[0].services["enrichment"].kill()  # its unacked messages go to the others after ack_wait
        fleet.at(15)
        assert wait_for(lambda: leaders(cluster), 10, what="the leaders") == {leader.name}
        # Publishes, fetches and acks in flight go unanswered until the other two elect new leaders.
        leader.kill()
        wait_for(lambda: leaders(cluster), 30, what="a new stream and consumer leader")
        fleet.at(22)
        leader.start()  # same ports, same store; healthy only once it has caught up

    execute(fleet, "nats cluster: worker SIGKILL, stream+consumer leader SIGKILL", 35.0, record_outcome, fault)
    wait_for(lambda: replicated(cluster), 30, what="the restarted node a current replica again")
