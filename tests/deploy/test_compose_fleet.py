"""The fleet compose file (deploy/docker-compose.fleet.yml), checked without a Docker engine.

`docker-compose config` validates it with .env.example filled in; the shape must be a 3-node NATS cluster
of the official nats:2.10 image with JetStream and sync_interval: always, interchangeable enrichment
workers and one ingestion per home with its own HOME_ID, every setting a real one. The cluster config is
also checked by Debian's nats-server (2.9, which does not know sync_interval: that line aside).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ha_ingestor.harness.nats_server import nats_server_binary
from ha_ingestor.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: scripts/test.sh installs Debian's docker-compose"
    work = tmp_path_factory.mktemp("fleet")
    shutil.copytree(ROOT / "deploy", work / "deploy")
    values = {"INFLUXDB_TOKEN": "influx-secret", "INFLUX_INIT_PASSWORD": "pw", "HOME_A_HA_TOKEN": "a",
              "HOME_B_HA_TOKEN": "b", "HOME_C_HA_TOKEN": "c"}
    (work / ".env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    done = subprocess.run([binary, "-f", "deploy/docker-compose.fleet.yml", "--env-file", ".env", "config"],
                          cwd=work, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def test_fleet_has_a_three_node_jetstream_cluster_workers_and_one_ingestion_per_home(fleet: dict[str, Any]) -> None:
    services = fleet["services"]
    nodes = sorted(name for name in services if name.startswith("nats-"))
    assert nodes == ["nats-1", "nats-2", "nats-3"]
    assert all(services[n]["image"] == "nats:2.10" for n in nodes)
    assert [services[n]["command"][-1] for n in nodes] == nodes
    homes = {name: svc for name, svc in services.items() if name.startswith("ingestion-")}
    assert len(homes) >= 2
    home_ids = [svc["environment"]["HOME_ID"] for svc in homes.values()]
    assert len(set(home_ids)) == len(home_ids)
    for svc in [*homes.values(), services["enrichment-worker"]]:
        env = svc["environment"]
        assert env["HOP"] == "nats" and env["NATS_REPLICAS"] == "3" and env["NATS_URL"].count("nats://") == 3
        settings = {k: str(v) for k, v in env.items() if k in Settings.__dataclass_fields__}
        Settings.from_values(settings)  # every value valid
        assert set(env) - set(Settings.__dataclass_fields__) == set(), "only real settings"


def test_cluster_config_has_jetstream_on_file_with_sync_always() -> None:
    text = (ROOT / "deploy" / "nats" / "cluster.conf").read_text()
    assert "sync_interval: always" in text and "store_dir: /data" in text
    binary = nats_server_binary()
    if binary is None:
        pytest.skip("needs Debian's nats-server")
    older = "\n".join(line for line in text.splitlines() if "sync_interval" not in line)
    done = subprocess.run([binary, "-t", "-c", "/dev/stdin"], input=older, capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr + done.stdout


def test_admin_api_watches_every_home_and_every_worker(fleet: dict[str, Any]) -> None:
    services = fleet["services"]
    env = services["admin-api"]["environment"]
    settings = Settings.from_values({k: str(v) for k, v in env.items()})
    assert set(env) - set(Settings.__dataclass_fields__) == set(), "only real settings"
    homes = sorted(name for name in services if name.startswith("ingestion-"))
    workers = sorted(name for name in services if name.startswith("enrichment-worker"))
    assert len(workers) >= 2
    assert sorted(url.split("//")[1].split(":")[0] for url in settings.ingestion_urls) == homes
    assert sorted(url.split("//")[1].split(":")[0] for url in settings.enrichment_urls) == workers
    assert str(services["admin-api"]["ports"][0]).startswith("127.0.0.1:"), "published on loopback only"


def test_the_image_the_fleet_builds_can_speak_nats() -> None:
    # The fleet runs HOP=nats in the one image: without the 'nats' extra every service of it would stop at start.
    dockerfile = (ROOT / "Dockerfile").read_text()
    wheel = next(line for line in dockerfile.splitlines() if "pip wheel" in line)
    assert '".[nats]"' in wheel, wheel
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^nats = \["nats-py', pyproject, re.M)
