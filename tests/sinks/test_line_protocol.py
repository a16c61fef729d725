"""Line protocol: exact escaping, proven against the real influxd by generated points."""

from __future__ import annotations

import itertools
import math
import urllib.request
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ha_ingestor.harness.influxd import Influxd
from ha_ingestor.sinks.line_protocol import MAX_STRING_BYTES, drop_unsafe_backslashes, encode_point
from ha_ingestor.sinks.point import Point


def test_escapes_each_token_as_influxdb_requires() -> None:
    point = Point("my meas,x", (("tag key", "a=b,c d"),), {"f=1,x": 'say "hi" \\o/', "n": 3, "ok": True,
                                                          "v": 0.1}, 1)
    assert encode_point(point) == (
        'my\\ meas\\,x,tag\\ key=a\\=b\\,c\\ d f\\=1\\,x="say \\"hi\\" \\\\o/",n=3i,ok=true,v=0.1 1')


def test_a_string_field_reads_the_same_when_its_text_is_remembered() -> None:
    # The second encoding of each (key, value) comes from the memo of string fields.
    fields: dict[str, Any] = {"f=1,x": 'say "hi" \\o/', "\\": "dropped: an unwritable key", "context_id": "01J",
                              "n": "1"}
    first = encode_point(Point("m", (), dict(fields), 1))
    assert first == 'm f\\=1\\,x="say \\"hi\\" \\\\o/",context_id="01J",n="1" 1'
    assert encode_point(Point("m", (), dict(fields), 1)) == first
    assert encode_point(Point("m", (), {"n": 1}, 1)) == "m n=1i 1"  # the same key with a number is no string


def test_leaves_out_what_cannot_be_written() -> None:
    point = Point("m", (("empty", ""), ("t", "x")), {"nan": math.nan, "inf": -math.inf, "v": 1.0}, 5)
    assert encode_point(point) == "m,t=x v=1.0 5"
    assert encode_point(Point("m", (), {"nan": math.nan}, 5)) is None
    assert encode_point(Point("", (), {"v": 1.0}, 5)) is None


def test_backslashes_before_special_characters_are_dropped() -> None:
    assert drop_unsafe_backslashes("a\\") == "a"
    assert drop_unsafe_backslashes("a\\\\") == "a"
    assert drop_unsafe_backslashes("a\\,b\\=c\\ d") == "a,b=c d"
    assert drop_unsafe_backslashes("a\\b") == "a\\b"
    assert encode_point(Point("m", (("k\\", "v\\ x"),), {"f": 1.0}, 1)) == "m,k=v\\ x f=1.0 1"


def test_a_comment_like_measurement_stays_a_point() -> None:
    assert encode_point(Point("#hash", (), {"v": 1.0}, 5)) == "_#hash v=1.0 5"


def test_integers_outside_int64_become_floats() -> None:
    assert encode_point(Point("m", (), {"big": 2**70}, 5)) == f"m big={float(2**70)!r} 5"


_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=12)
_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40),
)
_case = itertools.count(1)


def _clean(text: str) -> str:
    """What line protocol can carry of a key or tag value (see the module docstring of line_protocol)."""
    return drop_unsafe_backslashes(text).replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def _clean_measurement(text: str) -> str:
    return text.replace("\\", "/").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(measurement=_text, tags=st.dictionaries(_text, _text, max_size=4),
       fields=st.dictionaries(_text, _values, min_size=1, max_size=5))
def test_every_generated_point_reads_back_equal(
    influxd: Influxd, measurement: str, tags: dict[str, str], fields: dict[str, Any]
) -> None:
    case = next(_case)
    measurement = f"m{case}_{measurement}"
    expect_tags = {_clean(k): _clean(v) for k, v in tags.items() if _clean(k) and _clean(v)}
    expect_fields = {_clean(k): v for k, v in fields.items() if _clean(k)}
    keys = [_clean(k) for k in tags] + [_clean(k) for k in fields]
    assume(len(set(keys)) == len(keys) and "time" not in keys and expect_fields)
    assume(not set(expect_tags) & set(expect_fields))
    assume(all(len(v.encode()) <= MAX_STRING_BYTES for v in expect_fields.values() if isinstance(v, str)))
    time_ns = 1_700_000_000_000_000_000 + case
    point = Point(measurement, tuple(sorted(tags.items())), fields, time_ns)
    line = encode_point(point)
    assert line is not None
    # A database per example: SELECT * over several measurements merges same-named fields of different
    # types into one column, which would hide values that were written correctly.
    db = f"lp{case}"
    influxd.create_database(db)
    request = urllib.request.Request(f"{influxd.url}/write?db={db}&precision=ns", data=line.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 204
    result = influxd.query(f"SELECT * FROM /.*/ WHERE time = {time_ns} GROUP BY *", db)
    influxd.drop_database(db)
    series = result["results"][0]["series"]
    assert len(series) == 1, series
    got = series[0]
    assert got["name"] == _clean_measurement(measurement)
    assert {k: v for k, v in (got.get("tags") or {}).items() if v != ""} == expect_tags
    row = dict(zip(got["columns"], got["values"][0], strict=True))
    assert row.pop("time") == time_ns
    got_fields = {k: v for k, v in row.items() if v is not None}
    assert set(got_fields) == set(expect_fields)
    for key, expected in expect_fields.items():
        value = got_fields[key]
        if isinstance(expected, float):  # InfluxDB's JSON prints 3e16 as 30000000000000000
            assert isinstance(value, int | float) and not isinstance(value, bool) and float(value) == expected, key
        else:
            assert type(value) is type(expected) and value == expected, key
