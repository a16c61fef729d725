"""The fault-injection suite prints one table of its scenarios at the end of the run."""

from __future__ import annotations

from typing import Any

import pytest

RESULTS: list[dict[str, Any]] = []

COLUMNS = ("scenario", "fired", "stored", "missing", "duplicates", "dead_letters", "drain_s")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    terminalreporter.section("zero-loss fault scenarios")
    widths = {c: max(len(c), *(len(str(r.get(c))) for r in RESULTS)) for c in COLUMNS}
    terminalreporter.write_line(" | ".join(c.ljust(widths[c]) for c in COLUMNS))
    terminalreporter.write_line("-+-".join("-" * widths[c] for c in COLUMNS))
    for row in RESULTS:
        terminalreporter.write_line(" | ".join(str(row.get(c)).ljust(widths[c]) for c in COLUMNS))


@pytest.fixture
def record_outcome() -> Any:
    return RESULTS.append
