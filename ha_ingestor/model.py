"""Home Assistant's event and state shapes at the wire, decoded and validated in one pass by msgspec.

An event's ``data`` is decoded in a second step that depends on its ``event_type``: a ``state_changed``
event's data must hold states, any other event's data is free-form JSON. Decoding ``data`` lazily (it
arrives as ``msgspec.Raw``) keeps the common path fast and lets a validation error name the exact field,
such as ``events[3].data.new_state.last_updated``.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec

from .errors import EventInvalid

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STATE_CHANGED = "state_changed"
# HA's own rule (homeassistant.core.valid_entity_id), relaxed on case: data from other tools may be
# upper-case, and rejecting it would lose it.
_ENTITY_ID = re.compile(r"^(?!_)[\w]+(?<!_)\.(?!_)[\w]+(?<!_)$")


# gc=False: an event's structs hold only strings, times, JSON values and each other, so they can never be part
# of a reference cycle, and the cycle collector need not see them. Tracked, they were most of what it
# scanned: a batch of 1,000-5,000 events kept gen-0 collections busy (~3 µs an event in a replay of a
# simulated batch, and a fifth of enrichment's CPU while a backlog came in batches of 5,000).
class Context(msgspec.Struct, frozen=True, gc=False):
    id: str
    parent_id: str | None = None
    user_id: str | None = None


class State(msgspec.Struct, frozen=True, gc=False):
    entity_id: str
    state: str
    last_updated: AwareDatetime
    attributes: dict[str, Any] = {}
    last_changed: AwareDatetime | None = None
    last_reported: AwareDatetime | None = None
    context: Context | None = None


class PreviousState(msgspec.Struct, frozen=True, gc=False):
    """``old_state`` as enrichment reads it: which state it was and since when. Its attributes and context
    are skipped, not decoded (they are in the new state, or were in the previous event): ~1.1 µs an event,
    4 % of enrichment's CPU. The raw event keeps all of it for dead letters."""

    entity_id: str
    state: str
    last_updated: AwareDatetime
    last_changed: AwareDatetime | None = None


class StateChangedData(msgspec.Struct, frozen=True, gc=False):
    entity_id: str
    old_state: PreviousState | None = None
    new_state: State | None = None


class RawEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as it crossed the wire; ``data`` still undecoded."""

    event_type: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    time_fired: AwareDatetime
    data: msgspec.Raw = msgspec.Raw(b"{}")
    origin: str = "LOCAL"
    context: Context | None = None


class Batch(msgspec.Struct, frozen=True, gc=False):
    events: list[RawEvent]
    home_id: str = ""


class Event(msgspec.Struct, frozen=True, gc=False):
    """A validated event, ready for enrichment."""

    event_type: str
    time_fired: datetime
    data: StateChangedData | dict[str, Any]
    origin: str
    context: Context | None
    raw: RawEvent

    @property
    def state_change(self) -> StateChangedData | None:
        return self.data if isinstance(self.data, StateChangedData) else None


# InfluxDB stores nanoseconds in a signed 64-bit integer (as does the embedded store): 1677-09-21..2262-04-11.
# A day inside those bounds, so local-time fields computed in any time zone stay representable too.
EARLIEST = datetime(1677, 9, 22, tzinfo=UTC)
LATEST = datetime(2262, 4, 10, tzinfo=UTC)


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch, exactly (no float on the way)."""
    delta = moment - EPOCH
    # Field by field: a third cheaper than floor-dividing by a 1 µs timedelta, and it runs a few times an event.
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def us_from_timestamp(timestamp: float) -> int:
    """One of HA's float timestamps (the recorder's ``lu``/``lc``) → the µs of the datetime HA made of it.

    HA takes ``last_updated`` from a float ``time.time()`` with ``datetime.fromtimestamp``, which rounds the
    float's exact binary value to the microsecond; ``round(timestamp * 1e6)`` rounds the (inexact) product
    instead and is 1 µs off for about one timestamp in eight.
    """
    return to_us(datetime.fromtimestamp(timestamp, UTC))


def past_time_us(text: str, max_age_s: float, now: float | None = None) -> int:
    """A moment a user names (ISO 8601, UTC when it gives no offset; or Unix seconds) → µs; ValueError
    unless it lies in the past ``max_age_s`` seconds."""
    now = time.time() if now is None else now
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"not a time: {text!r} (e.g. 2026-12-01T10:00:00Z, or Unix seconds)") from None
        seconds = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    if not math.isfinite(seconds) or seconds > now:
        raise ValueError(f"{text!r} is not in the past")
    if seconds < now - max_age_s:
        raise ValueError(f"{text!r} is more than {max_age_s / 86400:g} days ago")
    return int(seconds * 1_000_000)


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def iso_from_us(us: int) -> str:
    """HA's own rendering of a UTC time: ``2026-11-28T11:35:31.189788+00:00``."""
    return from_us(us).isoformat(timespec="microseconds")


_batch_decoder = msgspec.json.Decoder(Batch)
_event_decoder = msgspec.json.Decoder(RawEvent)
_state_changed_decoder = msgspec.json.Decoder(StateChangedData)
_data_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()


def _field_of(error: msgspec.ValidationError, prefix: str) -> tuple[str, str]:
    """Split msgspec's 'Expected `str`, got `int` - at `$.a.b`' into ('prefix.a.b', 'Expected ...')."""
    text = str(error)
    where = prefix
    if " - at `$" in text:
        text, _, path = text.rpartition(" - at `$")
        suffix = path.rstrip("`")
        where = prefix + suffix if prefix else suffix.lstrip(".")
    return where or "body", text


def decode_batch(body: bytes) -> Batch:
    """Decode ``{"events": [...]}``; raises EventInvalid naming the field, ValueError for bad JSON."""
    try:
        return _batch_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise EventInvalid(*_field_of(exc, "")) from None
    except msgspec.DecodeError as exc:
        raise ValueError(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def decode_event(body: bytes) -> RawEvent:
    """Decode one event object; raises EventInvalid naming the field, ValueError for bad JSON."""
    try:
        return _event_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise EventInvalid(*_field_of(exc, "")) from None
    except msgspec.DecodeError as exc:
        raise ValueError(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def validate(raw: RawEvent, where: str | int = "") -> Event:
    """Decode an event's data by its type and check what enrichment relies on.

    ``where`` names the event in errors: a path prefix, or its index in a batch (``events[3]``); the
    names are only built for an error.
    """
    try:
        if raw.event_type == STATE_CHANGED:
            data: StateChangedData | dict[str, Any] = _state_changed_decoder.decode(raw.data)
        else:
            data = _data_decoder.decode(raw.data)
    except msgspec.ValidationError as exc:
        raise EventInvalid(*_field_of(exc, _path(where, "data"))) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise EventInvalid(_path(where, "data"), f"cannot be decoded: {exc}") from None
    if not _in_range(raw.time_fired):
        raise _out_of_range(raw.time_fired, _path(where, "time_fired"))
    if isinstance(data, StateChangedData):
        new = data.new_state
        if new is not None and not _in_range(new.last_updated):
            raise _out_of_range(new.last_updated, _path(where, "data.new_state.last_updated"))
        if not _ENTITY_ID.match(data.entity_id):
            raise EventInvalid(_path(where, "data.entity_id"),
                               f"must look like domain.object_id (got {data.entity_id!r})")
        for key, state in (("old_state", data.old_state), ("new_state", new)):
            if state is not None and state.entity_id != data.entity_id:
                raise EventInvalid(_path(where, f"data.{key}.entity_id"), "differs from data.entity_id")
    return Event(raw.event_type, raw.time_fired, data, raw.origin, raw.context, raw)


def _path(where: str | int, field: str) -> str:
    if isinstance(where, int):
        return f"events[{where}].{field}"
    return f"{where}.{field}" if where else field


def _in_range(moment: datetime) -> bool:
    """A point's time must fit the store's 64-bit nanoseconds; else the event could never be stored."""
    return EARLIEST <= moment <= LATEST


def _out_of_range(moment: datetime, field: str) -> EventInvalid:
    return EventInvalid(field, f"{moment.isoformat()} is outside what a store can hold "
                               f"({EARLIEST.date()} to {LATEST.date()})")


def encode(value: Any) -> bytes:
    return _encoder.encode(value)
