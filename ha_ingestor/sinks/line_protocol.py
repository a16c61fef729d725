"""InfluxDB line protocol: a pure encoder, exact to InfluxDB 1.x's parser.

Rules, as InfluxDB 1.6 parses them (checked against the real server by the property test):

* measurement: ``,`` and space are escaped with a backslash;
* tag keys, tag values, field keys: ``,``, ``=`` and space are escaped; any other backslash is literal,
  so a backslash needs no escape unless it would end the token (which line protocol cannot express);
* string field values: ``"`` and ``\\`` are escaped; newlines are allowed;
* integers carry an ``i`` suffix; NaN and ±inf cannot be written and are left out;
* an empty tag value cannot be written: the tag is left out.

What line protocol cannot express at all is changed the same way every time, so a point stays a pure
function of its event:

* newlines, carriage returns and tabs in names and tags become ``\\n``, ``\\r``, ``\\t`` (the parser
  treats a tab as white space);
* backslashes right before ``,``, ``=``, a space, ``"`` or the end of a tag key, tag value or field key
  are dropped (see :func:`drop_unsafe_backslashes`);
* a backslash in a measurement name becomes ``/``; a measurement starting with ``#`` (a comment line)
  gets a leading ``_``;
* strings are cut at 64 KiB (the server's limit).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .point import FieldValue, Point

MAX_STRING_BYTES = 64 * 1024 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

# InfluxDB 1.x unescapes backslash sequences in measurement names inconsistently (``a\\=`` reads back
# as ``a=``), so a backslash in a measurement name is written as '/', which reads back as written.
_MEAS_TABLE = str.maketrans({",": "\\,", " ": "\\ ", "\\": "/", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
_KEY_TABLE = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
_UNSAFE_BACKSLASHES = re.compile(r"\\+(?=[,= \"]|$)")
_STR_TABLE = str.maketrans({'"': '\\"', "\\": "\\\\"})

# Names and tag values repeat endlessly (entity ids, attribute names): escaping each once is a
# measurable share of encoding time. The caches are bounded by clearing when they grow too large.
_CACHE_LIMIT = 100_000
_key_cache: dict[str, str] = {}
_meas_cache: dict[str, str] = {}
_series_cache: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
_prefix_cache: dict[str, str] = {}
# A string field repeats with its entity (friendly name, device, state, attributes) or its batch (weather):
# its whole ``key="value"`` text is kept per (key, value), a third of the cost of encoding it again. Kept
# small (it holds values, not only names) and never for HA's context ids, which are new with every change.
_TEXT_CACHE_LIMIT = 10_000
_text_cache: dict[tuple[str, str], str] = {}
NEVER_REPEATED = frozenset({"context_id", "context_parent_id"})


def _remember(cache: dict[Any, str], key: Any, escaped: str, limit: int = _CACHE_LIMIT) -> str:
    if len(cache) >= limit:
        cache.clear()
    cache[key] = escaped
    return escaped


def drop_unsafe_backslashes(text: str) -> str:
    """Drop backslashes right before ``,``, ``=``, a space, ``"`` or the end of a key or tag value.

    InfluxDB's scanner takes a special character right after a backslash as escaped (tags) or skips a
    backslash with the character after it (fields), so no run of backslashes can stand before one of
    our escapes or the token's end without breaking the line. Backslashes anywhere else stay.
    """
    return _UNSAFE_BACKSLASHES.sub("", text) if "\\" in text else text


def escape_key(text: str) -> str:
    """Escape a tag key, tag value or field key. Returns '' when nothing writable is left."""
    cached = _key_cache.get(text)
    if cached is not None:
        return cached
    return _remember(_key_cache, text, drop_unsafe_backslashes(text).translate(_KEY_TABLE))


def escape_measurement(text: str) -> str:
    cached = _meas_cache.get(text)
    if cached is not None:
        return cached
    name = text
    if name.startswith("#"):
        name = "_" + name
    return _remember(_meas_cache, text, name.translate(_MEAS_TABLE))


def clip_string(value: str) -> str:
    """Cut a string to InfluxDB's 64 KiB limit without splitting a character."""
    if len(value) * 4 <= MAX_STRING_BYTES:  # fast path: cannot be too long even in 4-byte UTF-8
        return value
    raw = value.encode("utf-8")
    if len(raw) <= MAX_STRING_BYTES:
        return value
    return raw[:MAX_STRING_BYTES].decode("utf-8", errors="ignore")


def encode_field(value: FieldValue) -> str | None:
    """The line-protocol text of one field value, or None when it cannot be written."""
    kind = type(value)
    if kind is float:
        if math.isfinite(value):  # type: ignore[arg-type]
            return repr(value)
        return None
    if kind is str:
        text = clip_string(value)  # type: ignore[arg-type]
        if '"' in text or "\\" in text:  # str.translate costs 20× these two scans; most strings need neither
            text = text.translate(_STR_TABLE)
        return '"' + text + '"'
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        if _INT64_MIN <= value <= _INT64_MAX:  # type: ignore[operator]
            return f"{value}i"
        return repr(float(value))
    return None


def _series(measurement: str, tags: tuple[tuple[str, str], ...]) -> str:
    """``measurement,tag=value,…`` of a point ('' when the name is not writable), cached: an entity's
    series repeats with every change of it."""
    key = (measurement, tags)
    cached = _series_cache.get(key)
    if cached is not None:
        return cached
    escaped = escape_measurement(measurement)
    if escaped:
        for tag, value in tags:
            etag, evalue = escape_key(tag), escape_key(value)
            if etag and evalue:
                escaped += f",{etag}={evalue}"
    return _remember(_series_cache, key, escaped)


def encode_point(point: Point) -> str | None:
    """One line (without newline), or None when the point has no writable field or name."""
    series = _series(point.measurement, point.tags)
    if not series:
        return None
    fields = _encode_fields(point.fields)
    if not fields:
        return None
    return f"{series} {fields} {point.time_ns}"


def _field_prefix(key: str) -> str:
    """``key=`` escaped ('' when the key is not writable), cached like the keys themselves."""
    ekey = escape_key(key)
    return _remember(_prefix_cache, key, ekey + "=" if ekey else "")


def _encode_fields(fields: Mapping[str, FieldValue]) -> str:
    out: list[str] = []
    append = out.append
    prefixes = _prefix_cache
    texts = _text_cache
    for key, value in fields.items():
        if type(value) is str and key not in NEVER_REPEATED:
            pair = (key, value)
            text = texts.get(pair)
            if text is None:
                prefix = prefixes.get(key)
                if prefix is None:
                    prefix = _field_prefix(key)
                encoded = encode_field(value)
                text = _remember(texts, pair, prefix + encoded if prefix and encoded is not None else "",
                                 _TEXT_CACHE_LIMIT)
            if text:
                append(text)
            continue
        text = encode_field(value)
        if text is None:
            continue
        prefix = prefixes.get(key)
        if prefix is None:
            prefix = _field_prefix(key)
        if prefix:
            append(prefix + text)
    return ",".join(out)


def encode_lines(points: Iterable[Point]) -> tuple[list[str], list[Point], list[Point]]:
    """Encode points: (lines, the points that became those lines in the same order, the unwritable).

    A point with no writable field or an empty name cannot become a line; it is returned apart so
    the caller can dead-letter it instead of letting the store reject the whole request.
    """
    lines: list[str] = []
    kept: list[Point] = []
    unwritable: list[Point] = []
    for point in points:
        line = encode_point(point)
        if line is None:
            unwritable.append(point)
        else:
            lines.append(line)
            kept.append(point)
    return lines, kept, unwritable
