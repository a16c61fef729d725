"""What the outbox's fsync policy costs: append+remove throughput for OUTBOX_SYNC=normal and full.

    .venv/bin/python bench/outbox_fsync.py [--seconds 3] [--dir DIR]

For each policy and transaction size it appends real Home Assistant events (a state_changed sample from
../shared/real-ha/samples) in transactions of that size for a few seconds, removing them again as the
forwarder does, and prints events/s and commits/s. DIR should be on the disk the outbox will use.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from ha_ingestor.harness.shared import samples_dir
from ha_ingestor.ingestion.outbox import Outbox
from ha_ingestor.metrics import Registry


def sample_body() -> bytes:
    path = sorted(samples_dir().glob("event_state_changed_*.json"))[0]
    event = json.loads(path.read_text())
    return json.dumps(event.get("event", event)).encode()


async def measure(directory: Path, synchronous: str, batch: int, seconds: float, body: bytes) -> dict[str, float]:
    outbox = Outbox(directory / f"outbox-{synchronous}-{batch}.sqlite", max_events=10**9,
                    synchronous=synchronous, metrics=Registry())
    try:
        events = commits = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            await outbox.append([body] * batch)
            rows = await outbox.peek(0, batch)
            await outbox.remove([row_id for row_id, _ in rows])
            events += batch
            commits += 2
        elapsed = time.perf_counter() - start
    finally:
        outbox.close()
    return {"sync": synchronous, "batch": batch, "events_per_s": round(events / elapsed),
            "commits_per_s": round(commits / elapsed), "ms_per_append": round(1000 * elapsed / (commits / 2), 3)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    body = sample_body()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        results = [await measure(Path(tmp), sync, batch, args.seconds, body)
                   for sync in ("normal", "full") for batch in (1, 10, 100, 1000)]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"event size {len(body)} bytes")
    print(f"{'sync':<7}{'batch':>7}{'events/s':>11}{'commits/s':>11}{'ms/append':>11}")
    for r in results:
        print(f"{r['sync']:<7}{r['batch']:>7}{r['events_per_s']:>11}{r['commits_per_s']:>11}{r['ms_per_append']:>11}")


if __name__ == "__main__":
    asyncio.run(main())
