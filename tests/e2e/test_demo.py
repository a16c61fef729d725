"""The README's first command, `ha-ingestor up --demo`: a simulated home into all three stages in one
process and the embedded SQLite store. Run on ports other than the defaults and with no INGESTION_URL or
ENRICHMENT_URL set, as a user moving the ports would: admin-api must watch this process's own ports (not
8001/8002, where another ingestor may be running), and the demo keeps its data apart from a real home's."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ha_ingestor.harness.ports import free_port
from ha_ingestor.harness.procs import Service, http_get, wait_for


def test_up_demo_stores_the_simulated_home_and_its_admin_watches_its_own_ports(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("INGESTION_PORT", "ENRICHMENT_PORT", "ADMIN_PORT")}
    env = {"DATA_DIR": str(tmp_path / "data"), **{k: str(v) for k, v in ports.items()}}
    admin = f"http://127.0.0.1:{ports['ADMIN_PORT']}"
    up = Service("up", ["up", "--demo", "--demo-rate", "50"], env, tmp_path / "up.log", admin + "/health")
    up.start()
    try:
        health = up.wait_healthy(60)
        assert health["status"] == "ok"
        urls = [i["url"] for part in health["parts"].values() for i in part["instances"]]
        assert set(urls) == {f"http://127.0.0.1:{ports['INGESTION_PORT']}",
                             f"http://127.0.0.1:{ports['ENRICHMENT_PORT']}"}, urls
        recent = wait_for(lambda: len((body := http_get(admin + "/events/recent?limit=5")[1])["points"]) == 5
                          and body["points"], 30, 0.2, "simulated events stored")
        assert {point["measurement"] for point in recent} <= {"states", "events"}
    finally:
        assert up.terminate() == 0, up.log()[-3000:]
    store = tmp_path / "data" / "demo" / "store.sqlite"
    assert not (tmp_path / "data" / "store.sqlite").exists()  # the real home's place stays empty
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT COUNT(*) FROM points").fetchone()[0] > 0
