"""`ha-ingestor health`, the image's HEALTHCHECK: without an argument it checks the service the container
runs — admin-api where it serves one (`up`), else whichever of ingestion and enrichment listens."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ha_ingestor.harness.procs import Stack


def _health(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ha_ingestor", "health", *args], env=stack.env(),
                          capture_output=True, text=True, timeout=30, check=False)


def test_health_checks_the_service_this_container_runs(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    try:
        nothing = _health(stack)
        assert nothing.returncode != 0 and "not answering" in nothing.stderr
        stack.start("enrichment")  # a container running enrichment alone: no admin-api, no ingestion
        alone = _health(stack)
        assert alone.returncode == 0, alone.stderr
        assert '"service":"enrichment-pipeline"' in alone.stdout.replace(" ", "")
        assert _health(stack, "ingestion").returncode != 0  # asked for by name: only that one counts
    finally:
        stack.stop()
