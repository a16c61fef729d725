"""verify neither passes on figures it misreads nor crashes where it should fail: counters reset by a restart
in the window, a token HA rejects, metrics that stop answering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ha_ingestor.harness.procs import Stack
from ha_ingestor.settings import Settings
from ha_ingestor.verify import Verifier, histogram_quantile


def _verifier() -> Verifier:
    return Verifier(Settings.from_values({}), window_s=60, baseline_per_min=17, tolerance=0.5)


def test_a_restart_in_the_window_neither_hides_refusals_nor_fails_the_rate() -> None:
    verifier = _verifier()
    # enrichment restarted in the window: 40 dead letters before the restart, 2 of 50 events after it.
    before = {"events_dead_lettered_total": 40.0, "events_received_total": 900.0}
    after = {"events_dead_lettered_total": 2.0, "events_received_total": 50.0}
    ingestion = {"batches_forwarded_total": 10.0, "hop_retries_total": 0.0}
    errors = verifier.error_rate(ingestion, ingestion, before, after)
    assert errors.passed is False and errors.data["event_error_rate"] == 2 / 50  # was -3800 %: a pass
    # ingestion restarted: its received counter starts again from 0 (was a negative rate: a fail).
    rate = verifier.rate({"events_received_total": 5000.0}, {"events_received_total": 30.0},
                         {"events_stored_total": 10.0}, {"events_stored_total": 40.0})
    assert rate.passed is True and rate.data["received_per_min"] == 30.0
    # a histogram restarted in the window: quantiles from the new one alone, never negative counts
    name = 'hop_request_seconds_bucket{le="'
    old = {name + '0.05"}': 900.0, name + '+Inf"}': 1000.0}
    new = {name + '0.05"}': 10.0, name + '+Inf"}': 20.0}
    assert histogram_quantile(old, new, "hop_request_seconds", 0.95) == (float("inf"), 20)


def test_received_but_not_stored_is_no_rate_and_unread_metrics_are_a_fail() -> None:
    verifier = _verifier()
    rate = verifier.rate({"events_received_total": 0.0}, {"events_received_total": 600.0},
                         {"events_stored_total": 0.0}, {"events_stored_total": 0.0})
    assert rate.passed is False and "0.0/min stored" in rate.figure
    unread = verifier.error_rate({"hop_retries_total": 1.0}, {}, {"x": 1.0}, {"x": 1.0})
    assert unread.passed is False and "websocket-ingestion did not answer" in unread.figure


def test_a_token_ha_rejects_is_a_failed_criterion_not_a_traceback(tmp_path: Path) -> None:
    stack = Stack(tmp_path, sim_args=["--rate", "20", "--mix", "0"])
    try:
        stack.start("simulator", "enrichment", "ingestion", "admin")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HA_", "INFLUXDB_"))}
        env.update({**stack.env(), "HA_TOKEN": "not-a-token-ha-knows"})
        done = subprocess.run([sys.executable, "-m", "ha_ingestor", "verify", "--window", "5", "--json"],
                              env=env, capture_output=True, timeout=120, check=False)
        assert done.returncode == 1, done.stderr.decode()
        assert b"Traceback" not in done.stderr
        report = json.loads(done.stdout)
        zero_loss = next(c for c in report["criteria"] if c["name"].startswith("zero loss"))
        assert zero_loss["result"] == "FAIL" and "rejected the access token" in zero_loss["figure"]
        assert "not-a-token-ha-knows" not in done.stdout.decode() + done.stderr.decode()
    finally:
        stack.stop()
