"""What decoding leaves for the garbage collector."""

from __future__ import annotations

import gc

import orjson

from ha_ingestor.model import decode_batch, validate

EVENT = {
    "event_type": "state_changed", "time_fired": "2026-11-28T11:35:31.189788+00:00", "origin": "LOCAL",
    "context": {"id": "01JDZ4", "parent_id": None, "user_id": None},
    "data": {"entity_id": "light.kitchen",
             "old_state": {"entity_id": "light.kitchen", "state": "off", "attributes": {"rgb": [1, 2, 3]},
                           "last_changed": "2026-11-28T11:00:00+00:00", "last_updated": "2026-11-28T11:00:00+00:00"},
             "new_state": {"entity_id": "light.kitchen", "state": "on",
                           "attributes": {"rgb": [255, 0, 3], "friendly_name": "Kitchen"},
                           "last_changed": "2026-11-28T11:35:31.189788+00:00",
                           "last_updated": "2026-11-28T11:35:31.189788+00:00",
                           "context": {"id": "01JDZ4", "parent_id": None, "user_id": None}}},
}


def test_decoded_events_are_not_tracked_by_the_cycle_collector() -> None:
    batch = decode_batch(orjson.dumps({"events": [EVENT], "home_id": "north"}))
    event = validate(batch.events[0], 0)
    change = event.state_change
    assert change is not None and change.new_state is not None and change.old_state is not None
    structs = [batch, batch.events[0], event, change, change.new_state, change.old_state, event.context,
               change.new_state.context]
    assert [gc.is_tracked(s) for s in structs] == [False] * len(structs)
    # What they hold that can hold others is still tracked, so a cycle there is still collected.
    assert gc.is_tracked(change.new_state.attributes) and gc.is_tracked(batch.events)
