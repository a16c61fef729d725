"""The SQLite worker: WAL checkpoints by a thread of its own, beside the writer, and cheap deletes."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ha_ingestor.sqlite import SqliteWorker

SCHEMA = "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body BLOB NOT NULL);"


def _write(worker: SqliteWorker, rows: int) -> None:
    def insert() -> None:
        conn: sqlite3.Connection = worker.conn
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO t (body) VALUES (?)", [(b"x" * 1000,) for _ in range(rows)])
        conn.execute("COMMIT")

    worker.run_sync(insert)


def _file_exceeds(path: Path, size: int, seconds: float) -> bool:
    """Wait for the database file to pass ``size`` bytes (a checkpoint extends it as it copies)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.stat().st_size > size:
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
        assert _file_exceeds(worker.path, 2_000_000, 10.0)
        assert control.path.stat().st_size == sizes[control]  # without the thread the pages stay in the WAL
        assert any(t.name == "sqlite-checkpoint-db" for t in threading.enumerate())
    finally:
        control.close()
        worker.close()
    assert not any(t.name == "sqlite-checkpoint-db" for t in threading.enumerate())


def test_a_checkpoint_thread_that_cannot_connect_says_so_and_the_writer_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A mock, for a fault this machine cannot produce on demand: opening the thread's own connection fails
    # (e.g. no file descriptors left) while the writer's connection is already open.
    real_connect = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        if threading.current_thread().name.startswith("sqlite-checkpoint-"):
            raise sqlite3.OperationalError("unable to open database file")
        return real_connect(*args, **kwargs)

    monkeypatch.setattr("ha_ingestor.sqlite.sqlite3.connect", connect)
    worker = SqliteWorker(tmp_path / "db.sqlite", schema=SCHEMA, wal_autocheckpoint=100, checkpoint_interval=0.05)
    try:
        deadline = time.monotonic() + 5
        while not worker.checkpoint_problem and time.monotonic() < deadline:
            time.sleep(0.01)
        assert worker.checkpoint_problem == "cannot open a connection for checkpoints: unable to open database file"
        _write(worker, 2_000)  # the writer's own checkpoint (every 100 pages here) still moves pages to the file
        assert _file_exceeds(worker.path, 2_000_000, 10.0)
    finally:
        worker.close()


def test_deletes_do_not_zero_pages_that_are_not_written_anyway(tmp_path: Path) -> None:
    # Debian's SQLite zeroes every freed page (secure_delete=1): for a queue that deletes each row moments
    # after writing it, that is a fifth of its WAL. FAST (2) zeroes deleted rows only on pages written anyway.
    worker = SqliteWorker(tmp_path / "db.sqlite", schema=SCHEMA)
    try:
        assert worker.run_sync(lambda: worker.conn.execute("PRAGMA secure_delete").fetchone()[0]) == 2
    finally:
        worker.close()
