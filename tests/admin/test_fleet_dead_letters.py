"""admin-api in front of two enrichment workers that write to one real InfluxDB: it lists every worker's dead
letters, each with the worker that holds it, and replays them where they are.

The store refuses the points for real: the measurement already holds ``value`` as text, so a number there
is a field type conflict, and each worker keeps the event it could not store as a dead letter.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from ha_ingestor.harness.influxd import Influxd
from ha_ingestor.harness.procs import Stack, http_get, http_post


@dataclass
class Fleet:
    workers: list[Stack]
    admin: Stack
    influxd: Influxd
    db: str

    @property
    def urls(self) -> list[str]:
        return [w.url("enrichment") for w in self.workers]

    def letters(self, query: str = "") -> dict[str, Any]:
        status, body = http_get(self.admin.url("admin") + "/deadletters" + query)
        assert status == 200, body
        return dict(body)

    def replay(self, ids: list[int] | None = None, worker: str = "") -> tuple[int, Any]:
        url = self.admin.url("admin") + "/deadletters/replay" + (f"?worker={worker}" if worker else "")
        return http_post(url, ids, body=None if ids is not None else b"")


def state_changed(entity_id: str, state: str, when: datetime) -> dict[str, Any]:
    moment = when.isoformat()
    context = {"id": f"01JDEAD{entity_id[-1].upper()}00000000000000000", "parent_id": None, "user_id": None}
    return {"event_type": "state_changed", "time_fired": moment, "origin": "LOCAL", "context": context,
            "data": {"entity_id": entity_id, "old_state": None,
                     "new_state": {"entity_id": entity_id, "state": state, "attributes": {},
                                   "last_changed": moment, "last_updated": moment, "context": context}}}


@pytest.fixture
def fleet(influxd: Influxd, influx_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet-dead-letters")
    now = datetime.now(UTC)
    # `value` is text in this shard already: the workers' numbers for it are refused for good.
    influxd.create_database(influx_db)
    influxd.write(influx_db, f'states,entity_id=sensor.poison value="text" {int(now.timestamp() * 1e9)}')
    workers = [Stack(tmp / f"worker-{n}", influx_url=influxd.url, database=influx_db) for n in (1, 2)]
    admin = Stack(tmp / "admin", extra_env={"ENRICHMENT_URLS": ",".join(w.url("enrichment") for w in workers)})
    try:
        for worker in workers:
            worker.start("enrichment")
        admin.start("admin")
        yield Fleet(workers, admin, influxd, influx_db)
    finally:
        for stack in (admin, *workers):
            stack.stop()


def test_every_workers_dead_letters_are_listed_and_replayed_where_they_are(fleet: Fleet) -> None:
    first, second = fleet.urls
    for n, worker in enumerate(fleet.workers, 1):
        status, outcome = http_post(worker.url("enrichment") + "/events",
                                    state_changed(f"sensor.t{n}", f"2{n}.5", datetime.now(UTC)))
        assert status == 200 and outcome["dead_lettered"] == 1, outcome

    listed = fleet.letters()
    assert listed["count"] == 2 and listed["unreachable"] == {}
    assert [(d["worker"], d["id"], d["event"]["data"]["entity_id"]) for d in listed["dead_letters"]] == \
        [(first, 1, "sensor.t1"), (second, 1, "sensor.t2")]
    assert "field type conflict" in listed["dead_letters"][0]["reason"]
    # A page is a slice of the workers' lists laid end to end.
    page = fleet.letters("?offset=1&limit=1")
    assert page["count"] == 2 and [(d["worker"], d["id"]) for d in page["dead_letters"]] == [(second, 1)]

    # Ids are a worker's own: both workers have a dead letter 1.
    status, body = fleet.replay([1])
    assert status == 422 and body["field"] == "worker" and first in body["error"], body
    status, body = fleet.replay([1], worker="http://127.0.0.1:1")
    assert status == 422 and body["field"] == "worker", body
    # The conflict is still there: the letter stays, with one more attempt.
    assert fleet.replay([1], worker=second) == (200, {"replayed": 1, "written": 0, "still_refused": 1})
    assert [d["attempts"] for d in fleet.letters()["dead_letters"]] == [1, 2]

    fleet.influxd.query('DROP MEASUREMENT "states"', fleet.db, method="POST")  # the user fixes the conflict
    assert fleet.replay() == (200, {"replayed": 2, "written": 2, "still_refused": 0, "unreachable": {}})
    assert fleet.letters() == {"count": 0, "dead_letters": [], "unreachable": {}}
    stored = fleet.influxd.rows('SELECT "value", "entity_id" FROM "states"', fleet.db)
    assert sorted((row["entity_id"], row["value"]) for row in stored) == [("sensor.t1", 21.5), ("sensor.t2", 22.5)]

    # A worker that is gone is named, and the others still answer.
    fleet.workers[1].stop()
    deadline = time.monotonic() + 10
    while (listed := fleet.letters())["unreachable"] == {} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert listed["count"] == 0 and list(listed["unreachable"]) == [second]
    status, body = fleet.replay()
    assert status == 200 and body["replayed"] == 0 and list(body["unreachable"]) == [second]
