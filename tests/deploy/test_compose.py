"""The deployment files, checked without a Docker engine (none runs here).

`docker-compose config` (Debian's docker-compose) validates docker-compose.yml with .env.example filled
in; then every command the compose file and the Dockerfile run must be one the installed `ha-ingestor`
accepts, every setting .env.example names must be a real one, and the shape the migration plan expects
(four services, ports 8001–8003, health checks, restart policy, named volumes, health-gated start order)
must be there.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ha_ingestor.cli import parser
from ha_ingestor.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
OURS = ("websocket-ingestion", "enrichment-pipeline", "admin-api")
COMPOSE_ONLY = {"INFLUX_INIT_USER", "INFLUX_INIT_PASSWORD", "INFLUX_INIT_RETENTION", "INGESTION_PUBLISH",
                "ENRICHMENT_PUBLISH", "ADMIN_PUBLISH", "INFLUX_PUBLISH"}


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: scripts/test.sh installs Debian's docker-compose"
    work = tmp_path_factory.mktemp("compose")
    shutil.copy(ROOT / "docker-compose.yml", work / "docker-compose.yml")
    values = env_example() | {"HA_TOKEN": "ha-secret", "INFLUXDB_TOKEN": "influx-secret",
                              "INFLUX_INIT_PASSWORD": "admin-password"}
    (work / ".env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    done = subprocess.run([binary, "config"], cwd=work, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def test_compose_file_has_the_plans_shape(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"influxdb", *OURS}
    assert services["influxdb"]["image"] == "influxdb:2.7"
    init = services["influxdb"]["environment"]
    assert init["DOCKER_INFLUXDB_INIT_MODE"] == "setup" and init["DOCKER_INFLUXDB_INIT_BUCKET"] == "ha_events"
    assert init["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"] == "influx-secret"
    ports = {name: [str(p) for p in services[name]["ports"]] for name in OURS}
    assert ports == {"websocket-ingestion": ["127.0.0.1:8001:8001/tcp"],
                     "enrichment-pipeline": ["127.0.0.1:8002:8002/tcp"], "admin-api": ["127.0.0.1:8003:8003/tcp"]}
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"][0] == "CMD", name
    assert services["websocket-ingestion"]["depends_on"] == {"enrichment-pipeline": {"condition": "service_healthy"}}
    assert services["enrichment-pipeline"]["depends_on"] == {"influxdb": {"condition": "service_healthy"}}
    assert set(compose["volumes"]) >= {"influxdb-data", "ingestion-data", "enrichment-data"}
    assert any(v.startswith("ingestion-data:/data") for v in services["websocket-ingestion"]["volumes"])
    assert any(v.startswith("enrichment-data:/data") for v in services["enrichment-pipeline"]["volumes"])
    for name in OURS:
        env = services[name]["environment"]
        assert env["INFLUXDB_API"] == "v2" and env["INFLUXDB_URL"] == "http://influxdb:8086"
        assert env["BIND_HOST"] == "0.0.0.0"  # inside the container; the host side is published on loopback


def test_every_service_starts_with_exactly_the_environment_compose_gives_it(compose: dict[str, Any]) -> None:
    for name in OURS:
        env = {k: "" if v is None else str(v) for k, v in compose["services"][name]["environment"].items()}
        # What the service itself does at start: any unknown name with one of our prefixes, or a bad value,
        # stops it with one line. The InfluxDB container's init secrets must not be there at all.
        settings = Settings.load(environ=env, env_file=None)
        assert "INFLUX_INIT_PASSWORD" not in env and "admin-password" not in env.values()
        assert settings.HA_TOKEN == "ha-secret" and settings.INFLUXDB_TOKEN == "influx-secret"


# What compose fixes for its containers instead of taking it from .env (docker-compose.yml says why).
FIXED_BY_COMPOSE = {"BIND_HOST", "INGESTION_PORT", "ENRICHMENT_PORT", "ADMIN_PORT", "DATA_DIR", "LOG_FORMAT",
                    "INGESTION_URL", "ENRICHMENT_URL", "ADMIN_URL", "INGESTION_URLS", "ENRICHMENT_URLS", "HOP"}


def test_every_setting_up_runs_with_reaches_the_services(compose: dict[str, Any]) -> None:
    # A setting left out would be dropped without a word at the switch: the same .env, a different ingestor.
    settings = {f.name for f in Settings.__dataclass_fields__.values()}
    expected = {name for name in settings - FIXED_BY_COMPOSE if not name.startswith("NATS_")}
    for name in OURS:
        env = compose["services"][name]["environment"]
        assert expected - set(env) == set(), name


def test_env_example_is_a_valid_env_file_for_the_services_too(tmp_path: Path) -> None:
    # `ha-ingestor up` started in the same directory reads the same .env: the compose-only names must not trip it.
    env_file = tmp_path / ".env"
    env_file.write_text((ROOT / ".env.example").read_text().replace("HA_TOKEN=\n", "HA_TOKEN=t\n"))
    Settings.load(environ={}, env_file=env_file)


def test_every_command_run_exists_in_the_package(compose: dict[str, Any]) -> None:
    cli = parser()
    commands = []
    for name in OURS:
        service = compose["services"][name]
        commands.append(service["command"])
        test = service["healthcheck"]["test"]
        assert test[1] == "ha-ingestor"
        commands.append(test[2:])
    dockerfile = (ROOT / "Dockerfile").read_text()
    entrypoint = re.search(r'^ENTRYPOINT \["([^"]+)"\]', dockerfile, re.M)
    assert entrypoint and entrypoint.group(1) == "ha-ingestor"
    for instruction in ("CMD", "HEALTHCHECK .* CMD"):
        match = re.search(rf"^{instruction} (\[.*\])$", dockerfile, re.M)
        assert match, instruction
        args = yaml.safe_load(match.group(1))
        commands.append(args[1:] if args[0] == "ha-ingestor" else args)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'ha-ingestor = "ha_ingestor.cli:main"' in pyproject
    for args in commands:
        cli.parse_args(args)  # argparse exits (SystemExit) on a command the package does not have


def test_env_example_names_only_real_settings() -> None:
    known = {f.name for f in Settings.__dataclass_fields__.values()}
    unknown = set(env_example()) - known - COMPOSE_ONLY
    assert not unknown, unknown
