"""A NATS stream that is not what we need: clear errors, and health that does not pretend."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from ha_ingestor.harness.nats_server import NatsServer, nats_server_binary
from ha_ingestor.harness.procs import Stack, http_get, wait_for

pytestmark = pytest.mark.skipif(nats_server_binary() is None, reason="needs Debian's nats-server")


async def _limits_stream(url: str) -> None:
    nc = await nats.connect(url)
    await nc.jetstream().add_stream(StreamConfig(name="HA_EVENTS", subjects=["ha.*.batch"], max_bytes=2**24,
                                                 retention=RetentionPolicy.LIMITS, storage=StorageType.FILE))
    await nc.close()


@pytest.mark.parametrize("service", ["enrichment", "ingestion"])
def test_a_stream_with_another_retention_is_a_setting_error(tmp_path: Path, service: str) -> None:
    with NatsServer(tmp_path / "nats") as server:
        asyncio.run(_limits_stream(server.url))
        stack = Stack(tmp_path / "home", extra_env={"HOP": "nats", "NATS_URL": server.url, "HOME_ID": "home1",
                                                    "NATS_MAX_BYTES": str(2**24)})
        try:
            if service == "ingestion":
                stack.start("simulator")  # ingestion meets the stream when it forwards the first batch
            result = subprocess.run([sys.executable, "-m", "ha_ingestor", service], env=stack.env(),
                                    capture_output=True, text=True, timeout=60)
        finally:
            stack.stop()
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ha-ingestor: setting NATS_STREAM: stream HA_EVENTS exists with retention"), last
    assert "Traceback" not in result.stderr


def test_a_stream_that_cannot_be_created_is_unhealthy_everywhere_it_matters(tmp_path: Path) -> None:
    """NATS_MAX_BYTES over the server's file store limit: nothing flows, so nothing may say all is well."""
    with NatsServer(tmp_path / "nats") as server:  # max_file_store 1 GB; NATS_MAX_BYTES defaults to 8 GiB
        stack = Stack(tmp_path / "home", extra_env={"HOP": "nats", "NATS_URL": server.url, "HOME_ID": "home1"})
        try:
            stack.start("simulator", "enrichment", "ingestion", "admin")

            def unhealthy() -> dict[str, Any] | None:
                status, body = http_get(stack.url("admin") + "/health")
                parts = body.get("parts", {}) if isinstance(body, dict) else {}
                stuck = parts.get("forwarding", {}).get("status") == "unavailable"
                return body if status == 503 and stuck and parts["enrichment-pipeline"]["status"] != "ok" else None

            health = wait_for(unhealthy, 30, what="admin to report the stuck hop")
            assert "nats" in health["parts"]["forwarding"]["reason"], health["parts"]["forwarding"]
            assert "nats" in health["parts"]["enrichment-pipeline"]["reason"]
            assert health["parts"]["home-assistant"]["status"] == "ok"  # capturing goes on, into the outbox
            status, body = http_get(stack.url("ingestion") + "/status")
            assert status == 200 and body["outbox"]["events"] > 0
        finally:
            stack.stop()
