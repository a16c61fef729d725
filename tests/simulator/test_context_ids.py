"""The simulator's context ids are ULIDs as HA makes them: 26 Crockford base32 characters, the first ten the
millisecond (so ids sort by time), the rest 80 random bits."""

from __future__ import annotations

import random

from ha_ingestor.simulator.home import Home

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def reference_ulid(ms: int, random_bits: int) -> str:
    value = (ms << 80) | random_bits
    return "".join(CROCKFORD[(value >> shift) & 31] for shift in range(125, -5, -5))


def test_context_ids_are_ulids_of_the_millisecond_and_80_random_bits() -> None:
    home = Home(20, seed=5)
    rng = random.Random(11)
    previous = ""
    us = 1_795_927_640_000_000
    for n in range(20_000):
        us += rng.choice((0, 1, 999, 1000, 5_000_000)) if n % 100 else rng.randrange(2**48 * 1000) - us
        state = home.rng.getstate()
        bits = home.rng.getrandbits(80)
        home.rng.setstate(state)
        ulid = home.ulid(us)
        assert ulid == reference_ulid(us // 1000, bits)
        if n % 100 and ulid[:10] != previous[:10]:
            assert ulid[:10] > previous[:10]  # later milliseconds sort later
        previous = ulid
