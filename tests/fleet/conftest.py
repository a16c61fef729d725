"""The fleet tests print one table of what each home fired and stored at the end of the run."""

from __future__ import annotations

from typing import Any

import pytest

from ha_ingestor.harness.results import write_table

RESULTS: list[dict[str, Any]] = []

COLUMNS = ("scenario", "home", "fired", "stored", "missing", "duplicates", "rate_per_s", "drain_after_pause_s")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    write_table(terminalreporter, "nats fleet scenarios", COLUMNS, RESULTS)


@pytest.fixture
def record_outcome() -> Any:
    return RESULTS.append
