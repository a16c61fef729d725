"""admin-api in front of two homes' ingestions, which forward over HTTP to one enrichment-pipeline: the events
enrichment refuses are kept by the ingestion that captured them, and admin-api lists them with their home and
ingestion, counts them in /stats, and replays them where they are.

Enrichment refuses for real: its body limit (MAX_BODY_BYTES) is below one event with a 30 kB attribute, so it
answers 413 to that event alone; raising the limit is the fix a user would make.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ha_ingestor.harness.procs import Stack, http_get, http_post, wait_for

HOMES = ("north", "south")


@dataclass
class Fleet:
    homes: dict[str, Stack]
    enrichment: Stack
    admin: Stack

    def url(self, home: str) -> str:
        return self.homes[home].url("ingestion")

    def refused(self, query: str = "") -> dict[str, Any]:
        status, body = http_get(self.admin.url("admin") + "/rejected" + query)
        assert status == 200, body
        return dict(body)

    def replay(self, ids: list[int] | None = None, ingestion: str = "") -> tuple[int, Any]:
        url = self.admin.url("admin") + "/rejected/replay" + (f"?ingestion={ingestion}" if ingestion else "")
        return http_post(url, ids, body=None if ids is not None else b"")

    def stats(self) -> dict[str, Any]:
        status, body = http_get(self.admin.url("admin") + "/stats", timeout=10)
        assert status == 200, body
        return dict(body)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    enrichment = Stack(tmp_path / "enrichment", extra_env={"MAX_BODY_BYTES": "20000"})
    homes = {home: Stack(tmp_path / home, sim_args=["--paused"],
                         extra_env={"HOME_ID": home, "ENRICHMENT_URL": enrichment.url("enrichment")})
             for home in HOMES}
    admin = Stack(tmp_path / "admin", extra_env={
        "INGESTION_URLS": ",".join(stack.url("ingestion") for stack in homes.values()),
        "ENRICHMENT_URL": enrichment.url("enrichment")})
    stacks = [enrichment, *homes.values(), admin]
    try:
        enrichment.start("enrichment")
        for stack in homes.values():
            stack.start("simulator", "ingestion")
        admin.start("admin")
        yield Fleet(homes, enrichment, admin)
    finally:
        for stack in reversed(stacks):
            stack.stop()


def test_each_homes_refused_events_are_listed_counted_and_replayed_where_they_are(fleet: Fleet) -> None:
    for n, (home, stack) in enumerate(fleet.homes.items(), 1):
        status, _ = http_post(stack.url("simulator") + f"/api/states/sensor.blob_{home}",
                              {"state": str(n), "attributes": {"blob": "x" * 30_000}}, token=stack.token)
        assert status in (200, 201)
    listed = wait_for(lambda: (body := fleet.refused())["count"] == 2 and body, 30, 0.2, "both refused events")
    north, south = fleet.url("north"), fleet.url("south")
    assert listed["unreachable"] == {}
    assert [(r["home_id"], r["ingestion"], r["id"], r["event"]["data"]["entity_id"]) for r in listed["rejected"]] \
        == [("north", north, 1, "sensor.blob_north"), ("south", south, 1, "sensor.blob_south")]
    assert all("HTTP 413" in r["reason"] for r in listed["rejected"])
    page = fleet.refused("?offset=1&limit=1")
    assert page["count"] == 2 and [(r["ingestion"], r["id"]) for r in page["rejected"]] == [(south, 1)]
    assert fleet.stats()["rejected_events"] == 2

    # Ids are each ingestion's own: both have a refused event 1.
    status, body = fleet.replay([1])
    assert status == 422 and body["field"] == "ingestion" and north in body["error"], body
    status, body = fleet.replay([1], ingestion="http://127.0.0.1:1")
    assert status == 422 and body["field"] == "ingestion", body
    # Not fixed yet: south's event is refused again and kept again, north's stays where it is.
    first_refusal = listed["rejected"][1]["created"]
    assert fleet.replay([1], ingestion=south) == (200, {"replayed": 1})
    again = wait_for(lambda: (body := fleet.refused())["count"] == 2 and
                     body["rejected"][1]["created"] > first_refusal and body, 30, 0.2, "south's event refused again")
    assert [(r["home_id"], r["event"]["data"]["entity_id"]) for r in again["rejected"]] == \
        [("north", "sensor.blob_north"), ("south", "sensor.blob_south")]
    assert again["rejected"][0] == listed["rejected"][0]

    fleet.enrichment.services["enrichment"].terminate()
    fleet.enrichment.extra_env["MAX_BODY_BYTES"] = str(2**20)  # the cause, fixed
    fleet.enrichment.start("enrichment")
    assert fleet.replay() == (200, {"replayed": 2, "unreachable": {}})
    wait_for(lambda: all(http_get(fleet.url(home) + "/status")[1]["outbox"]["events"] == 0 for home in HOMES),
             30, 0.2, "both replayed events taken by enrichment")
    assert fleet.refused() == {"count": 0, "rejected": [], "unreachable": {}}
    assert fleet.stats()["rejected_events"] == 0

    # An ingestion that is gone is named, its count is not taken for 0, and the other still answers.
    fleet.homes["south"].stop()
    listed = fleet.refused()
    assert listed["count"] == 0 and list(listed["unreachable"]) == [south]
    body = fleet.stats()
    assert body["rejected_events"] == 0 and body["rejected_unknown_ingestions"] == 1
    status, body = fleet.replay()
    assert status == 200 and body["replayed"] == 0 and list(body["unreachable"]) == [south]
