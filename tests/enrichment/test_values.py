"""How the events schema reads a state as a number."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from ha_ingestor.enrichment.enrich import number

SAMPLES = ["", "on", "heat", "inf", "-Infinity", "nan", "NaN", " 7 ", "٣٤", "1e3", "x12", "-1.5", "+2", "_1",
           "1_000", "1e400", "infinite", "n"]


def python_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@given(st.one_of(st.sampled_from(SAMPLES), st.text(max_size=8), st.floats().map(str)))
def test_a_state_is_a_number_exactly_when_float_reads_a_finite_one(text: str) -> None:
    assert number(text) == python_number(text)
