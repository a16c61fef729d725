"""One table of per-scenario figures, printed at the end of a pytest run (fault and fleet suites)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def write_table(terminalreporter: Any, title: str, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    terminalreporter.section(title)
    widths = {c: max(len(c), *(len(str(r.get(c))) for r in rows)) for c in columns}
    terminalreporter.write_line(" | ".join(c.ljust(widths[c]) for c in columns))
    terminalreporter.write_line("-+-".join("-" * widths[c] for c in columns))
    for row in rows:
        terminalreporter.write_line(" | ".join(str(row.get(c)).ljust(widths[c]) for c in columns))
