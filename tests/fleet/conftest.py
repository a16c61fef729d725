"""The fleet tests print one table of what each home fired and stored at the end of the run."""

from __future__ import annotations

from typing import Any

import pytest

RESULTS: list[dict[str, Any]] = []

COLUMNS = ("scenario", "home", "fired", "stored", "missing", "duplicates", "rate_per_s", "drain_after_pause_s")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    terminalreporter.section("nats fleet scenarios")
    widths = {c: max(len(c), *(len(str(r.get(c))) for r in RESULTS)) for c in COLUMNS}
    terminalreporter.write_line(" | ".join(c.ljust(widths[c]) for c in COLUMNS))
    terminalreporter.write_line("-+-".join("-" * widths[c] for c in COLUMNS))
    for row in RESULTS:
        terminalreporter.write_line(" | ".join(str(row.get(c)).ljust(widths[c]) for c in COLUMNS))


@pytest.fixture
def record_outcome() -> Any:
    return RESULTS.append
