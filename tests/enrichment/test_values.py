"""How the events schema reads a state as a number, and a time as microseconds."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from ha_ingestor.enrichment.enrich import number
from ha_ingestor.model import EARLIEST, EPOCH, LATEST, to_us

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


@given(st.datetimes(min_value=EARLIEST.replace(tzinfo=None), max_value=LATEST.replace(tzinfo=None),
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-9, minutes=-30)),
                                               timezone(timedelta(hours=14))])))
def test_a_time_becomes_exactly_its_microseconds_since_the_epoch(moment: datetime) -> None:
    # Points are identified by their time: one microsecond off and a redelivered event writes a second point.
    assert to_us(moment) == (moment - EPOCH) // timedelta(microseconds=1)
