"""The simulated recorder: what it answers, and that a long history costs the garbage collector nothing."""

from __future__ import annotations

import copy
import gc

from ha_ingestor.simulator.home import Home


def test_a_long_history_adds_nothing_the_garbage_collector_scans() -> None:
    home = Home(60, seed=3)
    gc.collect()
    before = len(gc.get_objects())
    for _ in range(20_000):
        home.change()
    gc.collect()
    # As tuples holding dicts, 20,000 states left ~20,000 more objects for every collection to rescan.
    assert len(gc.get_objects()) - before < 500


def test_history_returns_each_states_own_attributes() -> None:
    home = Home(60, seed=4)
    light = next(e for e in home.iter_entities() if e.kind == "light")
    start = home.now_us()
    seen = []
    for _ in range(5):
        home.change(light)
        seen.append((light.last_updated_us, light.state, copy.deepcopy(light.attributes)))
    rows = home.history([light.entity_id], start, None, include_start=False, significant_only=False,
                        minimal=False, no_attributes=False)[light.entity_id]
    assert [(round(r["lu"] * 1e6), r["s"], r["a"]) for r in rows] == seen
