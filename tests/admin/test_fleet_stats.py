"""admin-api watching a fleet: two homes (a simulator and an ingestion each, HOME_ID north and south) publish
over a real nats-server to two enrichment workers; one admin-api watches all four through INGESTION_URLS and
ENRICHMENT_URLS. Each home's figures must be what that home's simulator fired, summed over both workers.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ha_ingestor.admin import stats
from ha_ingestor.harness.nats_server import NatsServer, nats_server_binary
from ha_ingestor.harness.procs import Stack, http_get, wait_for

pytestmark = pytest.mark.skipif(nats_server_binary() is None, reason="needs Debian's nats-server")

ING, ENR = stats.INGESTION, stats.ENRICHMENT
RATES = {"north": 30, "south": 10}  # events per second; different, so a mix-up between homes shows


@dataclass
class Fleet:
    homes: dict[str, Stack] = field(default_factory=dict)
    workers: list[Stack] = field(default_factory=list)
    admin: Stack | None = None

    @property
    def stacks(self) -> list[Stack]:
        return [*self.homes.values(), *self.workers, *([self.admin] if self.admin else [])]

    def stats(self) -> dict[str, Any]:
        assert self.admin is not None
        status, body = http_get(self.admin.url("admin") + "/stats", timeout=10)
        assert status == 200, body
        return dict(body)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet-admin")
    nats = NatsServer(tmp / "nats").start()
    fleet = Fleet()
    hop = {"HOP": "nats", "NATS_URL": nats.url, "NATS_ACK_WAIT_S": "5", "NATS_MAX_BYTES": str(64 * 2**20)}
    try:
        for n in (1, 2):
            worker = Stack(tmp / f"worker-{n}", extra_env=hop)
            worker.start("enrichment")
            fleet.workers.append(worker)
        for home, rate in RATES.items():
            stack = Stack(tmp / f"home-{home}", sim_args=["--rate", str(rate), "--entities", "20", "--paused"],
                          extra_env={**hop, "HOME_ID": home})
            stack.start("simulator", "ingestion")
            fleet.homes[home] = stack
        for stack in fleet.homes.values():
            stack.sim("/sim/resume")
        # The lists win over the single URLs, which point at ports where nothing listens.
        fleet.admin = Stack(tmp / "admin", extra_env={
            "INGESTION_URLS": ",".join(s.url("ingestion") for s in fleet.homes.values()),
            "ENRICHMENT_URLS": ",".join(w.url("enrichment") for w in fleet.workers)})
        fleet.admin.start("admin")
        yield fleet
    finally:
        for stack in reversed(fleet.stacks):
            stack.stop()
        nats.stop()


def test_stats_show_each_homes_rate_lag_and_instances(fleet: Fleet) -> None:
    def measured() -> dict[str, Any] | None:
        body = fleet.stats()
        covered = body["rates"]["1m"]["covered_s"]
        return body if min(covered[ING], covered[ENR]) >= 10 and set(body["homes"]) == set(RATES) else None

    body = wait_for(measured, 45, 1, "ten seconds of scrapes of every instance")
    assert body["unreachable"] == {}
    minute = body["rates"]["1m"]
    assert sum(RATES.values()) * 0.6 < minute["stored_per_s"] < sum(RATES.values()) * 1.4
    urls = {home: stack.url("ingestion") for home, stack in fleet.homes.items()}
    workers = [w.url("enrichment") for w in fleet.workers]
    for home, rate in RATES.items():
        figures = body["homes"][home]
        assert figures["ingestion"] == [urls[home]]
        assert figures["connected"] is True and figures["ha_state"] == "subscribed"
        for name in ("received_per_s", "forwarded_per_s", "stored_per_s"):
            assert rate * 0.6 < figures["rates_1m"][name] < rate * 1.4, (home, name, figures["rates_1m"])
        assert figures["rates_1m"]["dead_lettered_per_s"] == 0
        assert figures["outbox_events"] is not None and figures["outbox_events"] >= 0
        lag = figures["end_to_end_lag_seconds"]
        assert lag["count"] > 0 and 0 < lag["p50"] <= lag["p99"] < 5, lag
        assert 0 <= figures["newest_stored_event_age_s"] < 10
        assert set(figures["workers"]) <= set(workers) and figures["workers"]
    assert {i["url"]: i.get("home") for i in body["instances"] if i["service"] == ING} == {
        url: home for home, url in urls.items()}
    assert [i["url"] for i in body["instances"] if i["service"] == ENR] == workers
    assert all(i["up"] for i in body["instances"])
    # The workers share the work: both stored events (of some home).
    assert all(i["homes"] for i in body["instances"] if i["service"] == ENR)

    admin = fleet.admin.url("admin")  # type: ignore[union-attr]
    status, health = http_get(admin + "/health")
    assert status == 200, health
    assert [i["url"] for i in health["parts"][ING]["instances"]] == list(urls.values())
    assert {i["home"] for i in health["parts"]["home-assistant"]["instances"]} == set(RATES)
    assert len(health["parts"]["store"]["instances"]) == 2
    points = http_get(admin + "/stats/series?window=600&step=5&home=south")[1]["points"]
    assert points and all(p["stored_per_s"] < RATES["north"] for p in points if "stored_per_s" in p)


def test_the_dashboard_lists_each_home(fleet: Fleet, tmp_path: Path) -> None:
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("needs Debian's chromium and chromium-driver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=webdriver.ChromeService(driver_path), options=options)
    try:
        browser.get(fleet.admin.url("admin") + "/")  # type: ignore[union-attr]

        def rows(driver: Any) -> dict[str, tuple[str, float]] | None:
            found = {}
            for row in driver.find_elements(By.CSS_SELECTOR, "#homes-body tr.home-row"):
                stored = row.find_element(By.CSS_SELECTOR, "td.stored").text
                found[row.get_attribute("data-home")] = (row.get_attribute("data-connected"), float(stored))
            return found if set(found) == set(RATES) else None

        shown = WebDriverWait(browser, 30, poll_frequency=0.5, ignored_exceptions=(Exception,)).until(rows)
        assert browser.find_element(By.ID, "homes-card").is_displayed()
        for home, rate in RATES.items():
            connected, stored = shown[home]
            assert connected == "true" and rate * 0.6 < stored < rate * 1.4, (home, shown)
    finally:
        browser.quit()


def test_each_homes_totals_are_what_its_simulator_fired(fleet: Fleet) -> None:
    for stack in fleet.homes.values():
        stack.sim("/sim/pause")
    time.sleep(0.5)  # an event fired as the pause arrived is in the log by now
    fired = {home: len(stack.fired()) for home, stack in fleet.homes.items()}
    assert all(fired[home] >= RATES[home] * 10 for home in RATES), fired

    def settled() -> dict[str, Any] | None:
        body = fleet.stats()
        done = all(body["homes"][home]["totals"]["stored"] == fired[home] for home in fired)
        return body if done else None

    body = wait_for(settled, 30, 1, f"every fired event stored ({fired})")
    for home, count in fired.items():
        totals = body["homes"][home]["totals"]
        assert totals == {"received": count, "forwarded": count, "enrichment_received": count, "stored": count,
                          "spooled": 0, "dead_lettered": 0}, (home, totals)
        assert body["homes"][home]["outbox_events"] == 0
    # The fleet's totals are the sums over the instances.
    assert body["totals"]["received"] == body["totals"]["stored"] == sum(fired.values())


def test_a_home_whose_ingestion_stops_is_shown_down(fleet: Fleet) -> None:
    fleet.homes["south"].services["ingestion"].terminate()
    south = fleet.homes["south"].url("ingestion")
    body = fleet.stats()
    assert body["homes"]["south"]["connected"] is False and body["homes"]["south"]["ha_state"] == "unreachable"
    assert body["homes"]["north"]["connected"] is True
    assert south in body["unreachable"][ING]
    status, health = http_get(fleet.admin.url("admin") + "/health")  # type: ignore[union-attr]
    assert status == 503
    assert south in health["parts"][ING]["reason"] and "'south'" in health["parts"][ING]["reason"]
    assert health["parts"]["home-assistant"]["status"] != "ok"
    assert health["parts"][ENR]["status"] == "ok"
