"""admin-api's /stats and friends: the arithmetic on scraped counters, then the real stack reporting real figures."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ha_ingestor.admin import scrape, stats
from ha_ingestor.errors import SettingsError
from ha_ingestor.harness.procs import Stack, http_get, http_post, wait_for
from ha_ingestor.metrics import Registry
from ha_ingestor.settings import Settings

ING, ENR = stats.INGESTION, stats.ENRICHMENT
FLEET = {ING: (ING,), ENR: (ENR,)}  # one instance of each, keyed by its service's name
RATE = 20  # events per second fired by the simulator


def sample(t: float, received: float | None, stored: float | None) -> stats.Sample:
    return stats.Sample(t, {ING: None if received is None else {"events_received_total": received},
                            ENR: None if stored is None else {"events_stored_total": stored}})


# ------------------------------------------------------------------ arithmetic


def test_prometheus_text_round_trips_through_the_parser() -> None:
    registry = Registry()
    registry.counter("events_stored", "doc").inc(42)
    registry.gauge("outbox_events", "doc").set(7)
    hist = registry.histogram("store_write_seconds", "doc")
    hist.observe(0.003, weight=3)
    parsed = scrape.parse(registry.render())
    assert parsed["events_stored_total"] == 42
    assert parsed["outbox_events"] == 7
    assert parsed['store_write_seconds_bucket{le="0.005"}'] == 3
    assert parsed['store_write_seconds_bucket{le="+Inf"}'] == 3
    assert scrape.buckets(parsed, "store_write_seconds")[-1] == (math.inf, 3)


def test_a_counter_that_went_down_was_reset_and_grew_by_its_new_value() -> None:
    assert scrape.counter_delta(100, 130) == 30
    assert scrape.counter_delta(100, 12) == 12
    assert scrape.counter_delta(None, 12) is None


def test_rate_is_growth_over_the_seconds_actually_observed() -> None:
    history = [sample(0, 0, 0), sample(5, 50, 40), sample(10, 100, 90)]
    now = sample(15, 150, 140)
    rates = stats.rates(stats.in_window(history, now, 60), FLEET)
    assert rates["received_per_s"] == 10.0
    assert rates["stored_per_s"] == pytest.approx(140 / 15, abs=1e-4)  # rounded to 4 places
    assert rates["covered_s"] == {ING: 15.0, ENR: 15.0}


def test_a_restart_and_an_unanswered_scrape_do_not_invent_events() -> None:
    # enrichment restarted between t=5 and t=10 (counter back to 20) and did not answer at t=15.
    history = [sample(0, 0, 0), sample(5, 50, 50), sample(10, 100, 20), sample(15, 150, None)]
    now = sample(20, 200, 60)
    rates = stats.rates(stats.in_window(history, now, 60), FLEET)
    assert rates["received_per_s"] == 10.0
    assert rates["covered_s"][ENR] == 10.0  # 0→5 and 5→10; the pairs touching t=15 are unknown
    assert rates["stored_per_s"] == (50 + 20) / 10


def test_a_counter_that_appears_late_is_a_rate_over_the_seconds_it_was_there() -> None:
    # A home's counters exist from its first batch on: the scrapes before it measured nothing about it,
    # so they must not dilute its rate (a home at 10/s read as 5.6/s in CI before).
    history = [sample(0, 0, None), sample(5, 50, None), sample(10, 100, 0)]
    history[0].series[ENR] = history[1].series[ENR] = {}
    now = sample(15, 150, 50)
    rates = stats.rates(stats.in_window(history, now, 60), FLEET)
    assert rates["stored_per_s"] == 10.0
    assert rates["covered_s"][ENR] == 15.0  # enrichment itself answered every scrape


def test_rates_are_none_until_two_scrapes_exist() -> None:
    rates = stats.rates([sample(0, 10, 10)], FLEET)
    assert rates["received_per_s"] is None and rates["hop_error_rate"] is None


def test_percentiles_come_from_bucket_growth_within_the_window() -> None:
    def hist(counts: dict[str, float]) -> stats.Sample:
        series = {f'hop_request_seconds_bucket{{le="{le}"}}': v for le, v in counts.items()}
        return stats.Sample(0, {ING: series, ENR: {}})

    before = hist({"0.001": 1000, "0.01": 1000, "0.1": 1000, "+Inf": 1000})  # old, fast observations
    after = hist({"0.001": 1000, "0.01": 1090, "0.1": 1100, "+Inf": 1100})  # 90 in (1, 10] ms, 10 in (10, 100]
    result = stats.percentiles([before, after], [ING], "hop_request_seconds")
    assert result["count"] == 100
    assert result["p50"] == pytest.approx(0.001 + 0.009 * 50 / 90)
    assert 0.01 < result["p95"] <= 0.1  # type: ignore[operator]
    assert stats.percentiles([after], [ING], "hop_request_seconds")["p50"] is None

    # Restarted after `after`, then more observations than before the restart: seen scrape by scrape.
    restarted = hist({"0.001": 0, "0.01": 5, "0.1": 10, "+Inf": 10})
    later = hist({"0.001": 0, "0.01": 5, "0.1": 1300, "+Inf": 1300})
    result = stats.percentiles([before, after, restarted, later], [ING], "hop_request_seconds")
    assert result["count"] == 100 + 1300  # first against last would say 300 and put p50 in the fast bucket
    assert 0.01 < result["p50"] <= 0.1  # type: ignore[operator]


def test_the_chart_series_leaves_a_gap_where_no_scrape_ended() -> None:
    history = [sample(0, 0, 0), sample(5, 50, 50), sample(30, 300, 300), sample(35, 350, 350)]
    points = stats.series(history, window=40, step=10, now=40, lines=stats.chart_lines(FLEET))
    assert [p["t"] for p in points] == [10.0, 40.0]  # nothing ended in (10, 30]: no point, no guess
    assert points[0]["received_per_s"] == 10.0


# ------------------------------------------------------------------ the real stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Paused until ingestion has subscribed, so that every event the home fires is one ingestion receives.
    stack = Stack(tmp_path_factory.mktemp("stats"), sim_args=["--rate", str(RATE), "--entities", "30", "--paused"])
    try:
        stack.start("simulator", "enrichment", "ingestion", "admin")
        stack.sim("/sim/resume")
        yield stack
    finally:
        stack.stop()


def test_stats_reports_the_rate_the_simulator_fires(stack: Stack) -> None:
    def measured() -> dict[str, object] | None:
        body = http_get(stack.url("admin") + "/stats")[1]
        covered = body["rates"]["1m"]["covered_s"][ENR]
        return body if covered >= 10 else None

    body = wait_for(measured, 60, 1, "ten seconds of scrapes")
    minute = body["rates"]["1m"]
    assert RATE * 0.6 < minute["received_per_s"] < RATE * 1.4
    assert RATE * 0.6 < minute["stored_per_s"] < RATE * 1.4
    assert minute["hop_error_rate"] == 0 and minute["event_error_rate"] == 0
    # Within one service's scrape: nothing stored that was not received, nothing forwarded that was not.
    totals = body["totals"]
    assert 0 < totals["stored"] <= totals["enrichment_received"]
    assert totals["forwarded"] <= totals["received"] == totals["outbox_in"]
    assert totals["outbox_out_bytes"] <= totals["outbox_in_bytes"]
    lag = body["latency"]["end_to_end_lag_seconds"]
    assert lag["count"] > 0 and 0 < lag["p50"] <= lag["p95"] <= lag["p99"] < 5
    assert body["latency"]["hop_seconds"]["count"] > 0
    assert body["latency"]["store_write_seconds"]["p99"] is not None
    assert body["depth"]["spool_events"] == 0 and body["depth"]["outbox_limit_events"] > 0
    assert body["dead_letters"] == 0 and body["unreachable"] == {}
    assert body["ha"]["state"] == "subscribed" and body["store"] == {"available": True, "reason": ""}
    assert body["last_event_time"][ING] >= body["last_event_time"][ENR] > 0
    assert 0 <= body["newest_stored_event_age_s"] < 10
    assert body["gaps"] == {"by_status": {}, "recent": []}
    # Between the services, totals only agree once nothing is in flight: enrichment counts a batch when it
    # arrives, ingestion counts it forwarded when the answer is back, and the two are scraped a moment
    # apart (enrichment 214 against forwarded 213 once). So the home pauses, and then every event it fired
    # must have been received, forwarded, taken and stored exactly once.
    stack.sim("/sim/pause")
    try:
        time.sleep(0.5)  # an event fired as the pause arrived is in the log by now
        fired = len(stack.fired())

        def settled() -> dict[str, Any] | None:
            totals = http_get(stack.url("admin") + "/stats")[1]["totals"]
            return totals if totals["stored"] >= fired else None

        totals = wait_for(settled, 30, 0.5, f"the {fired} fired events stored")
        assert [totals[name] for name in ("received", "outbox_in", "forwarded", "enrichment_received", "stored")] \
            == [fired] * 5
        assert totals["outbox_out_bytes"] == totals["outbox_in_bytes"]
    finally:
        stack.sim("/sim/resume")


def test_series_events_config_and_dead_letters_answer_from_the_services(stack: Stack) -> None:
    admin = stack.url("admin")
    points = wait_for(lambda: http_get(admin + "/stats/series?window=600&step=5")[1]["points"], 30, 1, "series")
    assert all(p["stored_per_s"] >= 0 for p in points if "stored_per_s" in p)
    status, recent = http_get(admin + "/events/recent?limit=5")
    assert status == 200 and len(recent["points"]) == 5
    assert all(p["measurement"] in ("states", "events") for p in recent["points"])
    assert http_get(admin + "/events/recent?limit=0")[0] == 422
    status, letters = http_get(admin + "/deadletters")
    assert status == 200 and letters == {"count": 0, "dead_letters": []}
    assert http_post(admin + "/deadletters/replay", None, body=b"") == (
        200, {"replayed": 0, "written": 0, "still_refused": 0})
    status, config = http_get(admin + "/config")
    assert status == 200 and config["settings"]["HA_TOKEN"] == "***"
    own = scrape.parse(http_get(admin + "/metrics")[1])
    assert [own[f'admin_peer_up{{service="{name}"}}'] for name in (ING, ENR)] == [1, 1]
    assert own[f'admin_instance_up{{service="{ING}",url="{stack.url("ingestion")}"}}'] == 1
    assert own["admin_scrapes_kept"] >= 1


METRICS = {
    "ingestion": ["events_received_total", "events_forwarded_total", "events_backfilled_total",
                  "outbox_in_events_total", "outbox_out_events_total", "outbox_in_bytes_total",
                  "outbox_out_bytes_total", "outbox_events", "outbox_bytes", 'hop_request_seconds_bucket{le="+Inf"}',
                  "ha_connected", "ha_reconnects_total", "hop_retries_total",
                  'event_loop_lag_seconds_bucket{le="+Inf"}', "event_loop_lag_max_seconds"],
    "enrichment": ["events_received_total", "events_stored_total", "events_dead_lettered_total",
                   "spool_in_events_total", "spool_out_events_total", "spool_in_bytes_total", "spool_out_bytes_total",
                   "spool_events", 'store_write_seconds_bucket{le="+Inf"}', 'end_to_end_lag_seconds_bucket{le="+Inf"}',
                   "store_write_failures_total", "last_event_time_seconds",
                   'event_loop_lag_seconds_bucket{le="+Inf"}', "event_loop_lag_max_seconds"],
}


@pytest.mark.parametrize("service", sorted(METRICS))
def test_each_service_exposes_the_metrics_issue_5_names(stack: Stack, service: str) -> None:
    status, text = http_get(stack.url(service) + "/metrics")
    assert status == 200
    series = scrape.parse(text)
    missing = [name for name in METRICS[service] if name not in series]
    assert not missing
    assert series['event_loop_lag_seconds_bucket{le="+Inf"}'] > 0  # the loop's timer is being watched
    if service == "ingestion":
        assert series["ha_connected"] == 1


def test_admin_stats_page_keeps_working_when_a_service_is_gone(tmp_path: Path) -> None:
    # No ingestion or enrichment at all: /stats says so instead of inventing figures.
    stack = Stack(tmp_path)
    try:
        stack.start("admin")
        status, body = http_get(stack.url("admin") + "/stats")
        assert status == 200
        assert set(body["unreachable"]) == {ING, ENR}
        assert body["totals"]["received"] is None and body["rates"]["1m"]["received_per_s"] is None
        assert http_get(stack.url("admin") + "/events/recent")[0] == 502
        status, health = http_get(stack.url("admin") + "/health")
        assert status == 503 and "unreachable" in health["parts"][ENR]["reason"]
    finally:
        stack.stop()


def test_the_fleet_url_lists_default_to_the_single_urls_and_name_a_bad_entry() -> None:
    single = Settings.from_values({"INGESTION_URL": "http://home:8001"})
    assert single.ingestion_urls == ("http://home:8001",) and single.enrichment_urls == ("http://127.0.0.1:8002",)
    fleet = Settings.from_values({"ENRICHMENT_URLS": "http://w1:8002/, http://w2:8002"})
    assert fleet.enrichment_urls == ("http://w1:8002", "http://w2:8002")
    with pytest.raises(SettingsError, match=r"ENRICHMENT_URLS.*'w2:8002'"):
        Settings.from_values({"ENRICHMENT_URLS": "http://w1:8002,w2:8002"})
    with pytest.raises(SettingsError, match=r"INGESTION_URLS.*twice"):
        Settings.from_values({"INGESTION_URLS": "http://a:1,http://a:1/"})
