"""Backfill turns the recorder's float timestamps into the very microseconds of the live events' times."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from ha_ingestor.ingestion.backfill import history_events
from ha_ingestor.model import to_us


def test_a_backfilled_state_has_the_live_events_last_updated_to_the_microsecond() -> None:
    rng = random.Random(8)
    for _ in range(2000):
        fired = 1795927640 + rng.random()  # HA's time.time(), whence last_updated = fromtimestamp(fired)
        live_us = to_us(datetime.fromtimestamp(fired, UTC))
        [event] = history_events({"sensor.x": [{"s": "1", "a": {}, "lu": fired}]}, {})
        assert to_us(datetime.fromisoformat(event["data"]["new_state"]["last_updated"])) == live_us
