"""A stream that exists with settings we must not change stops the service with one line, exit 2, for both ends."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import nats
import pytest
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from ha_ingestor.harness.nats_server import NatsServer, nats_server_binary
from ha_ingestor.harness.procs import Stack

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
