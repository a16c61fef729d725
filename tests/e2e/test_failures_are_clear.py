"""Bad input, a wrong token, a dropped connection, a stopped database: each gives a clear, honest answer."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from ha_ingestor.errors import SettingsError
from ha_ingestor.harness.influxd import Influxd
from ha_ingestor.harness.procs import Stack, http_get, http_post, wait_for
from ha_ingestor.settings import Settings


def test_bad_requests_get_4xx_that_say_what_is_wrong(tmp_path: Path) -> None:
    stack = Stack(tmp_path, extra_env={"MAX_BODY_BYTES": "4096"})
    try:
        stack.start("enrichment")
        url = stack.url("enrichment")
        status, body = http_post(url + "/events", body=b'{"event_type": "x", "time_fired": ')
        assert status == 400 and "malformed JSON" in body["error"]
        status, body = http_post(url + "/events", body=b'{"event_type": "x", "time_fired": "yesterday"}')
        assert status == 422 and body["field"] == "time_fired"
        status, body = http_post(url + "/events", body=b'{"event_type": "x", "time_fired": "2024-01-01T00:00:00"}')
        assert status == 422 and body["field"] == "time_fired"  # no UTC offset: ambiguous
        bad_state = (b'{"events": [{"event_type": "state_changed", "time_fired": "2024-01-01T00:00:00Z", "data": '
                     b'{"entity_id": "sensor.a", "new_state": {"entity_id": "sensor.a", "state": 5}}}]}')
        status, body = http_post(url + "/events/batch", body=bad_state)
        assert status == 422 and body["field"] == "events[0].data.new_state.state", body
        status, body = http_post(url + "/events/batch", body=b'{"events": [' + b'{"a": 1},' * 1000 + b'{}]}')
        assert status == 413
        status, body = http_post(url + "/events", body=b"[" * 2000 + b"]" * 2000)
        assert 400 <= status < 500
        status, _ = http_get(url + "/health")
        assert status == 200  # the embedded store: nothing sent could hurt the service
    finally:
        stack.stop()


def test_a_wrong_token_stops_ingestion_with_a_clear_message(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    try:
        stack.start("simulator")
        env = {**stack.env(), "HA_TOKEN": "wrong-token"}
        result = subprocess.run([sys.executable, "-m", "ha_ingestor", "ingestion"], env=env, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 3
        assert "rejected the access token" in result.stderr and "Not retrying" in result.stderr
        assert "wrong-token" not in result.stderr
        assert stack.sim("/sim/report")["auth_failures"] == 1  # exactly one login attempt
    finally:
        stack.stop()


def test_a_bad_setting_is_one_line_naming_it(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "INFLUXDB_API": "v3", "DATA_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "ha_ingestor", "enrichment"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["ha-ingestor: setting INFLUXDB_API: must be one of v1, v2 (got 'v3')"]


def test_a_data_dir_or_bind_host_that_cannot_work_is_a_setting_error_not_a_traceback(tmp_path: Path) -> None:
    a_file = tmp_path / "not-a-directory"
    a_file.write_text("")
    for env, expected in (({"DATA_DIR": str(a_file)}, "ha-ingestor: setting DATA_DIR: "),
                          ({"DATA_DIR": str(tmp_path / "d"), "BIND_HOST": "no-such-host.invalid"},
                           "ha-ingestor: setting BIND_HOST: 'no-such-host.invalid' is not an address")):
        result = subprocess.run([sys.executable, "-m", "ha_ingestor", "enrichment"],
                                env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith(expected), result.stderr


def test_a_typo_in_an_own_name_is_refused_but_the_tools_own_variables_are_not(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"  # not a ./.env a developer may have
    empty.write_text("")
    with pytest.raises(SettingsError, match="INFLUXDB_BUKET: unknown setting"):
        Settings.load({"INFLUXDB_BUKET": "home"}, env_file=empty)
    # The test harness and scripts/setup.sh read these; exporting them must not stop a service.
    tools = {"HA_INGESTOR_SHARED": str(tmp_path), "HA_INGESTOR_VENV": str(tmp_path / "venv"),
             "HA_INGESTOR_PYTHON": "python3.11", "DATA_DIR": str(tmp_path)}
    assert Settings.load(tools, env_file=empty).DATA_DIR == str(tmp_path)


def test_a_misspelt_setting_is_named_with_the_one_meant_and_others_variables_are_left_alone(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    for typo, meant in (("HA_TOKN", "HA_TOKEN"), ("INGESTION_PROT", "INGESTION_PORT"), ("HOP_TIMEOUTS", "HOP_TIMEOUT")):
        with pytest.raises(SettingsError, match=f"{typo}: unknown setting \\(did you mean {meant}\\?\\)"):
            Settings.load({typo: "1"}, env_file=empty)
    # The influx CLI's variables, and what a compose .env holds for docker-compose or the containers.
    assert Settings.load({"INFLUX_TOKEN": "t", "INFLUX_ORG": "o", "TZ": "UTC"}, env_file=empty).HA_TOKEN == ""
    compose_env = tmp_path / "compose.env"
    compose_env.write_text("TZ=Europe/Berlin\nCOMPOSE_PROJECT_NAME=ha\nHOME_ID=north\nOUTBOX_MAX_EVENTS=\n")
    loaded = Settings.load({"HA_INGESTOR_ENV_FILE": str(compose_env)}, env_file=compose_env)
    assert loaded.HOME_ID == "north" and loaded.OUTBOX_MAX_EVENTS == 2_000_000  # empty: the default
    compose_env.write_text("HA_TOKN=x\n")
    with pytest.raises(SettingsError, match="HA_TOKN: unknown setting \\(did you mean HA_TOKEN\\?\\) in"):
        Settings.load({}, env_file=compose_env)
    with pytest.raises(SettingsError, match="NATS_URL: has a malformed port"):
        Settings.load({"NATS_URL": "nats://h:abc"}, env_file=empty)


def test_credentials_written_into_urls_are_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    settings = Settings.load({"INFLUXDB_URL": "http://admin:s3cretPW@127.0.0.1:8086",
                              "NATS_URL": "nats://natsTok123@127.0.0.1:4222,nats://natsTok123@127.0.0.2:4222",
                              "INGESTION_URLS": "http://u:pw-in-list@127.0.0.1:8001"}, env_file=empty)
    assert {"s3cretPW", "natsTok123", "pw-in-list"} <= set(settings.secrets())
    shown = str(settings.masked())
    assert "s3cretPW" not in shown and "natsTok123" not in shown and "pw-in-list" not in shown
    assert settings.masked()["INFLUXDB_URL"] == "http://***@127.0.0.1:8086"


async def test_a_dropped_connection_is_reconnected_and_nothing_is_lost(
        tmp_path: Path, influxd: Influxd, influx_db: str) -> None:
    stack = Stack(tmp_path, influx_url=influxd.url, database=influx_db,
                  sim_args=["--rate", "300", "--mix", "0"])
    try:
        stack.start("simulator", "enrichment", "ingestion")
        await asyncio.sleep(1.5)
        assert stack.sim("/sim/drop")["dropped"] >= 1
        await asyncio.to_thread(wait_for, lambda: http_get(stack.url("ingestion") + "/health")[0] == 503, 10,
                                0.02, "ingestion to notice the drop")
        await asyncio.to_thread(stack.services["ingestion"].wait_healthy, 30)
        await asyncio.sleep(1.5)
        stack.sim("/sim/pause")
        fired = stack.sim("/sim/report")["fired"]

        def all_stored() -> bool:
            rows = influxd.rows('SELECT count("available") FROM "states"', influx_db)
            return bool(rows) and rows[0]["count"] == fired

        # Events fired while the connection was down come back through backfill.
        await asyncio.to_thread(wait_for, all_stored, 45, 0.5, f"{fired} points")
        status, gaps = http_get(stack.url("ingestion") + "/gaps")
        assert status == 200 and gaps["gaps"][0]["status"] == "done"
    finally:
        stack.stop()


async def test_events_fired_while_disconnected_before_the_first_one_arrived_are_backfilled(
        tmp_path: Path, influxd: Influxd, influx_db: str) -> None:
    # A fresh install: subscribed, but no event has arrived yet, so no event gave the outbox a watermark.
    stack = Stack(tmp_path, influx_url=influxd.url, database=influx_db, sim_args=["--paused", "--mix", "0"],
                  extra_env={"BACKFILL_DELAY_S": "0.5"})
    try:
        stack.start("simulator", "enrichment", "ingestion")
        assert stack.sim("/sim/drop")["dropped"] >= 1
        fired = stack.sim("/sim/fire", {"count": 50})["fired"]  # while ingestion reconnects (≥ 0.5 s)
        assert fired == 50

        def all_stored() -> bool:
            rows = influxd.rows('SELECT count("available") FROM "states"', influx_db)
            return bool(rows) and rows[0]["count"] == fired

        await asyncio.to_thread(wait_for, all_stored, 45, 0.5, f"{fired} points")
        status, gaps = http_get(stack.url("ingestion") + "/gaps")
        assert status == 200 and [gap["status"] for gap in gaps["gaps"]] == ["done"]
        assert gaps["gaps"][0]["states_backfilled"] == fired
    finally:
        stack.stop()


async def test_an_event_enrichment_refused_is_kept_and_replayed_once_the_cause_is_fixed(
        tmp_path: Path, influxd: Influxd, influx_db: str) -> None:
    # Enrichment's body limit is below one event with a big attribute: it answers 413 to that event alone.
    stack = Stack(tmp_path, influx_url=influxd.url, database=influx_db, sim_args=["--paused"],
                  extra_env={"MAX_BODY_BYTES": "20000"})
    try:
        stack.start("simulator", "enrichment", "ingestion", "admin")
        status, _ = http_post(stack.url("simulator") + "/api/states/sensor.big_blob",
                              {"state": "1", "attributes": {"blob": "x" * 30_000}}, token=stack.token)
        assert status in (200, 201)
        ingestion = stack.url("ingestion")

        def refused() -> list[dict[str, object]]:
            return list(http_get(ingestion + "/rejected")[1]["rejected"])

        kept = await asyncio.to_thread(wait_for, refused, 30, 0.2, "the refused event")
        assert len(kept) == 1 and "HTTP 413" in str(kept[0]["reason"])
        assert kept[0]["event"]["data"]["entity_id"] == "sensor.big_blob"  # type: ignore[index]
        assert http_post(ingestion + "/rejected/replay", [10**9])[1] == {"replayed": 0}  # no such id
        # admin-api shows it where the dead letters are: listed, and counted in /stats.
        admin = stack.url("admin")
        status, listed = http_get(admin + "/rejected")
        assert status == 200 and listed["count"] == 1 and listed["rejected"] == kept
        assert http_get(admin + "/stats")[1]["rejected_events"] == 1
        assert http_get(ingestion + "/metrics")[1].count("\noutbox_rejected_events 1") == 1

        stack.services["enrichment"].terminate()
        stack.extra_env["MAX_BODY_BYTES"] = str(2**20)  # the cause, fixed
        stack.start("enrichment")
        assert http_post(admin + "/rejected/replay", body=b"")[1] == {"replayed": 1}

        def stored() -> bool:
            rows = influxd.rows("SELECT \"attr_blob_str\" FROM \"states\" WHERE \"entity_id\" = 'sensor.big_blob'",
                                influx_db)
            return bool(rows) and rows[0]["attr_blob_str"] == "x" * 30_000

        await asyncio.to_thread(wait_for, stored, 30, 0.2, "the replayed event stored")
        assert refused() == []
        assert http_get(admin + "/stats")[1]["rejected_events"] == 0
    finally:
        stack.stop()


async def test_enrichment_health_says_503_while_influxd_is_down(tmp_path: Path) -> None:
    server = Influxd(tmp_path / "influx").start()
    stack = Stack(tmp_path, influx_url=server.url, database="down_test")
    try:
        stack.start("enrichment")
        url = stack.url("enrichment") + "/health"
        assert http_get(url)[0] == 200
        server.stop()
        status, body = http_get(url)
        assert status == 503 and "store" in body["reason"]
        server.start()
        await asyncio.to_thread(wait_for, lambda: http_get(url)[0] == 200, 30, 0.2, "health back to 200")
    finally:
        stack.stop()
        server.stop()
