"""The WAL is copied into the database file by a thread of its own, beside the writer."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from ha_ingestor.sqlite import SqliteWorker

SCHEMA = "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body BLOB NOT NULL);"


def _write(worker: SqliteWorker, rows: int) -> None:
    def insert() -> None:
        conn: sqlite3.Connection = worker.conn
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO t (body) VALUES (?)", [(b"x" * 1000,) for _ in range(rows)])
        conn.execute("COMMIT")

    worker.run_sync(insert)


def _file_grows(path: Path, before: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.stat().st_size > before:
            return True
        time.sleep(0.02)
    return False


def test_the_checkpoint_thread_copies_the_wal_while_the_writer_never_checkpoints(tmp_path: Path) -> None:
    # wal_autocheckpoint=0: the writer itself never checkpoints, so only the thread can move pages to the file.
    control = SqliteWorker(tmp_path / "control.sqlite", schema=SCHEMA, wal_autocheckpoint=0)
    worker = SqliteWorker(tmp_path / "db.sqlite", schema=SCHEMA, wal_autocheckpoint=0, checkpoint_interval=0.05)
    try:
        sizes = {w: w.path.stat().st_size for w in (control, worker)}
        for w in (control, worker):
            _write(w, 2_000)  # ~2 MB, ~500 pages, all in the WAL after the commit
        assert _file_grows(worker.path, sizes[worker], 5.0)
        assert worker.path.stat().st_size > 2_000_000
        assert control.path.stat().st_size == sizes[control]  # without the thread the pages stay in the WAL
        assert any(t.name == "sqlite-checkpoint-db" for t in threading.enumerate())
    finally:
        control.close()
        worker.close()
    assert not any(t.name == "sqlite-checkpoint-db" for t in threading.enumerate())
