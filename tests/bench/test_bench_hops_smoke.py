"""The hop comparison's smoke run (a few seconds per configuration), so `ha-ingestor bench --hops` never rots.

No figure is judged here, only that every configuration (HTTP; NATS with 1, 2 and 3 workers) ran both phases,
lost nothing, and reported every figure the table promises.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ha_ingestor.harness.nats_server import nats_server_binary


@pytest.mark.skipif(nats_server_binary() is None, reason="needs Debian's nats-server")
def test_bench_hops_quick_runs_every_configuration_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "hops.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HA_", "INFLUXDB_", "NATS_", "HOP"))}
    done = subprocess.run([sys.executable, "-m", "ha_ingestor", "bench", "--hops", "--quick", "--json", str(out)],
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["zero_loss"] is True
    assert [(row["hop"], row["workers"]) for row in result["configurations"]] == \
        [("http", 1), ("nats", 1), ("nats", 2), ("nats", 3)]
    for row in result["configurations"]:
        live, peak = row["phases"]
        for phase in (live, peak):
            assert phase["fired"] > 0 and phase["missing"] == 0 and phase["stored"] == phase["fired"], row["label"]
            assert phase["throughput"] > 0
            assert all(phase["e2e_ms"][k] is not None for k in ("p50", "p95", "p99")), row["label"]
            assert phase["hop_p99_ms"] is not None, row["label"]
            per_hop = {"nats-server", *(f"enrichment-{i}" for i in range(1, row["workers"] + 1))} \
                if row["hop"] == "nats" else {"enrichment"}
            assert set(phase["cpu_percent"]) == {"simulator", "ingestion", "influxd", *per_hop}, row["label"]
        assert row["label"] in done.stdout
    assert "NATS throughput by workers" in done.stdout
