"""schemathesis against enrichment's and admin-api's OpenAPI documents, on the running services.

Every check schemathesis has (no 5xx, status codes, content types, headers and bodies as the spec says,
schema-valid input accepted, invalid input refused, 405s with Allow, ...) over a bounded number of cases per
operation, with a fixed seed so a failure can be replayed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from ha_ingestor.harness.http_client import request
from ha_ingestor.harness.procs import Stack

CASES_PER_OPERATION = 40
SCHEMATHESIS = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")

pytestmark = pytest.mark.skipif(SCHEMATHESIS is None, reason="schemathesis is in the 'test' extra")


@pytest.mark.parametrize("service", ["enrichment", "admin"])
def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_spec(secured: Stack, service: str,
                                                                            tmp_path: Path) -> None:
    base, token = secured.url(service), secured.extra_env["API_TOKEN"]
    status, spec, _ = request(base, "GET", "/openapi.json", token=token)
    assert status == 200
    schema = tmp_path / f"{service}.openapi.json"
    schema.write_bytes(orjson.dumps(spec))
    assert SCHEMATHESIS is not None
    run = subprocess.run(
        [SCHEMATHESIS, "run", str(schema), "--url", base, "-H", f"Authorization: Bearer {token}",
         "--checks", "all", "--max-examples", str(CASES_PER_OPERATION), "--seed", "20261129", "--workers", "1",
         "--generation-database", "none", "--no-color", "--output-truncate", "true", "--report", "junit",
         "--report-dir", str(tmp_path / "report")],
        cwd=tmp_path, capture_output=True, text=True, check=False)
    (tmp_path / "schemathesis.txt").write_text(run.stdout + run.stderr)
    failures = run.stdout.partition("FAILURES")[2].partition("SUMMARY")[0]
    assert run.returncode == 0, (failures or run.stdout)[:20_000] + run.stderr[-5_000:]
    assert " passed" in run.stdout and "failures" not in run.stdout.rsplit("SUMMARY", 1)[-1]
    # The services lived through it.
    for name in ("ingestion", "enrichment", "admin"):
        assert request(secured.url(name), "GET", "/health")[0] == 200
    log = secured.services["enrichment"].log() + secured.services["admin"].log()
    assert "unexpected error serving" not in log
