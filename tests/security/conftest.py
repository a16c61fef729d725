"""One split stack with API_TOKEN and a small body limit, shared by the security tests.

Tests read the token and the limit from ``secured.extra_env`` (API_TOKEN, MAX_BODY_BYTES).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ha_ingestor.harness.procs import Stack

TOKEN = "sec-api-token-4b7e19c2d05f"
MAX_BODY = 64 * 1024


@pytest.fixture(scope="session")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("secured"), sim_args=["--rate", "10", "--entities", "20"],
                  extra_env={"API_TOKEN": TOKEN, "MAX_BODY_BYTES": str(MAX_BODY)})
    try:
        stack.start("simulator", "enrichment", "ingestion", "admin")
        yield stack
    finally:
        stack.stop()
