"""No token or password in any log line or API answer, through failures; and logs are lifecycle lines only.

One end-to-end run with every secret set (HA token, InfluxDB password and token, API token) against a real
influxd, through: the store going down and coming back (spool, drain), calls with a wrong API token, an
ingestion with a wrong HA token, an ingestion whose API token enrichment refuses, and an enrichment whose
InfluxDB v2 token is sent to a server that has no v2 API. Then every log line of every process and every
answer of /config, /status, /health, /stats, /metrics and the OpenAPI documents is searched for the secrets.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from ha_ingestor.harness.influxd import Influxd, influxd_binary
from ha_ingestor.harness.ports import free_port
from ha_ingestor.harness.procs import Service, Stack, http_get, http_post, wait_for

HA_TOKEN = "ha-secret-token-7f3e91ab20c4"
API_TOKEN = "api-secret-token-c84d0e55b1"
INFLUX_PASSWORD = "influx-secret-pass-6b2f903d"
INFLUX_TOKEN = "influx-secret-token-19a7e2c5"
WRONG_HA_TOKEN = "ha-wrong-secret-0d9e44a1f7"
WRONG_API_TOKEN = "api-wrong-secret-5e1a7c3390"
SECRETS = (HA_TOKEN, API_TOKEN, INFLUX_PASSWORD, INFLUX_TOKEN, WRONG_HA_TOKEN, WRONG_API_TOKEN)
PATHS = {"ingestion": ["/health", "/status", "/metrics", "/gaps", "/rejected", "/openapi.json"],
         "enrichment": ["/health", "/status", "/metrics", "/deadletters", "/events/recent", "/openapi.json"],
         "admin": ["/health", "/config", "/stats", "/metrics", "/events/recent", "/deadletters", "/openapi.json"]}

pytestmark = pytest.mark.skipif(influxd_binary() is None, reason="needs Debian's influxdb package")


def leaks(text: str) -> list[str]:
    """The secrets in ``text``, whole or either half (a truncated message may cut one)."""
    found = []
    for secret in SECRETS:
        half = len(secret) // 2
        if secret in text or secret[:half] in text or secret[half:] in text:
            found.append(secret)
    return found


class Answers:
    """Every API answer of the run, kept to be searched at the end."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def get(self, url: str, token: str = API_TOKEN) -> tuple[int, Any]:
        status, body = http_get(url, token=token)
        self.texts.append((url, body if isinstance(body, str) else orjson.dumps(body).decode()))
        return status, body

    def sweep(self, bases: dict[str, str], token: str = API_TOKEN) -> None:
        for service, base in bases.items():
            for path in PATHS[service]:
                self.get(base + path, token)


def extra_service(stack: Stack, name: str, command: str, **env: str) -> Service:
    """Another instance of a service beside the stack: own port, own data, own log."""
    port_setting = {"ingestion": "INGESTION_PORT", "enrichment": "ENRICHMENT_PORT"}[command]
    port = free_port()
    values = stack.env() | {port_setting: str(port), "DATA_DIR": str(stack.directory / name)} | env
    return Service(name, [command], values, stack.directory / "logs" / f"{name}.log",
                   f"http://127.0.0.1:{port}/health").start()


def test_no_secret_in_any_log_or_answer_and_no_line_per_event(tmp_path: Path) -> None:
    influx = Influxd(tmp_path / "influxd").start()
    stack = Stack(tmp_path, influx_url=influx.url, token=HA_TOKEN, sim_args=["--rate", "100", "--entities", "40"],
                  extra_env={"API_TOKEN": API_TOKEN, "INFLUXDB_USERNAME": "ingestor",
                             "INFLUXDB_PASSWORD": INFLUX_PASSWORD, "INFLUXDB_TIMEOUT": "2"})
    answers = Answers()
    extras: list[Service] = []
    bases = {name: stack.url(name) for name in PATHS}
    admin = stack.url("admin")

    def stats() -> dict[str, Any]:
        return answers.get(admin + "/stats")[1]  # type: ignore[no-any-return]

    try:
        stack.start("simulator", "enrichment", "ingestion", "admin")
        wait_for(lambda: (stats()["totals"]["stored"] or 0) > 500, 60, 0.5, "events stored")
        answers.sweep(bases)

        # The store goes down: enrichment spools, health says why; then it comes back and the spool drains.
        influx.stop()
        wait_for(lambda: (stats()["depth"]["spool_events"] or 0) > 200, 60, 0.5, "events spooled")
        assert answers.get(stack.url("enrichment") + "/health")[0] == 503
        assert answers.get(admin + "/health")[0] == 503
        answers.sweep(bases)
        influx.start()
        wait_for(lambda: stats()["depth"]["spool_events"] == 0, 60, 0.5, "spool drained")
        wait_for(lambda: answers.get(admin + "/health")[0] == 200, 60, 0.5, "healthy again")

        # Wrong API token on every endpoint (/health is open).
        for service, base in bases.items():
            for path in PATHS[service]:
                assert answers.get(base + path, token=WRONG_API_TOKEN)[0] == (200 if path == "/health" else 401)

        # An ingestion with a wrong HA token stops at once and says why.
        bad_ha = extra_service(stack, "ingestion-wrong-ha-token", "ingestion", HA_TOKEN=WRONG_HA_TOKEN)
        extras.append(bad_ha)
        assert bad_ha.wait(60) != 0
        # An ingestion whose API token enrichment refuses keeps its events and says so.
        bad_api = extra_service(stack, "ingestion-wrong-api-token", "ingestion", API_TOKEN=WRONG_API_TOKEN)
        extras.append(bad_api)
        own = bad_api.health_url.removesuffix("/health")


        def refused() -> bool:
            status, body = http_get(own + "/status", token=WRONG_API_TOKEN)
            return status == 200 and "API_TOKEN" in body["forwarder"]["problem"]

        wait_for(refused, 60, 0.5, "forwarding refused")
        answers.sweep({"ingestion": own}, token=WRONG_API_TOKEN)
        # An enrichment sending its v2 token to a server without the v2 API.
        v2 = extra_service(stack, "enrichment-v2-token", "enrichment", INFLUXDB_API="v2", INFLUXDB_ORG="home",
                           INFLUXDB_TOKEN=INFLUX_TOKEN, INFLUXDB_USERNAME="", INFLUXDB_PASSWORD="")
        extras.append(v2)
        v2_base = v2.health_url.removesuffix("/health")
        wait_for(lambda: http_get(v2.health_url)[0] != 0 or not v2.running, 60, 0.2, "v2 enrichment answering")
        if v2.running:
            event = {"event_type": "secret_probe", "time_fired": "2026-01-01T00:00:00+00:00", "data": {},
                     "context": {"id": "01PROBE"}}
            status, body = http_post(v2_base + "/events", event, token=API_TOKEN)
            assert status < 500
            answers.texts.append(("POST /events v2", orjson.dumps(body).decode()))
            answers.sweep({"enrichment": v2_base})
        answers.sweep(bases)
    finally:
        for extra in extras:
            extra.terminate()
        stack.stop()
        influx.stop()

    for where, text in answers.texts:
        assert not leaks(text), (where, leaks(text))
    assert any("***" in text for where, text in answers.texts if where.endswith("/config"))

    logs = {path.stem: path.read_text(errors="replace") for path in (tmp_path / "logs").glob("*.log")}
    assert {"simulator", "ingestion", "enrichment", "admin", "ingestion-wrong-ha-token",
            "ingestion-wrong-api-token", "enrichment-v2-token"} <= set(logs)
    for name, text in logs.items():
        for number, line in enumerate(text.splitlines(), 1):
            assert not leaks(line), (name, number, line)

    # Logs are lifecycle lines: a few dozen for thousands of events, none repeated per event or per batch.
    received = stats_total(tmp_path)
    assert received > 1000
    entries = {name: [orjson.loads(line) for line in logs[name].splitlines() if line.startswith("{")]
               for name in ("ingestion", "enrichment", "admin")}
    for name, lines in entries.items():
        assert len(lines) < 60, (name, len(lines), [e["message"] for e in lines])
        repeated = Counter(e["message"] for e in lines).most_common(1)
        assert not repeated or repeated[0][1] <= 10, (name, repeated)
    messages = {name: " | ".join(e["message"] for e in lines) for name, lines in entries.items()}
    assert "subscribed to Home Assistant" in messages["ingestion"]
    assert "store unavailable; spooling accepted batches" in messages["enrichment"]
    assert "store available again" in messages["enrichment"]
    assert "rejected HA_TOKEN" in logs["ingestion-wrong-ha-token"]
    assert "check API_TOKEN" in logs["ingestion-wrong-api-token"]


def stats_total(directory: Path) -> int:
    """Events ingestion received, from the simulator's own record of what it fired."""
    fired = directory / "fired.tsv"
    return len(fired.read_text().splitlines()) if fired.exists() else 0
