"""The fault-injection suite prints one table of its scenarios at the end of the run."""

from __future__ import annotations

from typing import Any

import pytest

from ha_ingestor.harness.results import write_table

RESULTS: list[dict[str, Any]] = []

COLUMNS = ("scenario", "fired", "stored", "missing", "duplicates", "dead_letters", "drain_s")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    write_table(terminalreporter, "zero-loss fault scenarios", COLUMNS, RESULTS)


@pytest.fixture
def record_outcome() -> Any:
    return RESULTS.append
