"""One SQLite database served by one thread, so the event loop never waits on disk.

Outbox, spool, dead letters and the embedded store each own one :class:`SqliteWorker`. All statements
of a database run on its single thread, in order; the event loop awaits them. WAL mode lets readers of
other processes (``ha-ingestor verify``, tests) look at the file while the service writes.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class SqliteWorker:
    def __init__(self, path: Path, *, synchronous: str = "NORMAL", schema: str = "",
                 wal_autocheckpoint: int | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{path.stem}")
        self._synchronous = synchronous
        self._schema = schema
        self._wal_autocheckpoint = wal_autocheckpoint
        self._conn: sqlite3.Connection | None = None
        self._executor.submit(self._open).result()

    def _open(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a crash of the process (SIGKILL), the last commits
        # may be lost on power loss; FULL also fsyncs the WAL on every commit.
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=10000")
        if self._wal_autocheckpoint is not None:
            conn.execute(f"PRAGMA wal_autocheckpoint={int(self._wal_autocheckpoint)}")
        if self._schema:
            conn.executescript(self._schema)
        self._conn = conn

    @property
    def conn(self) -> sqlite3.Connection:
        """Only for use inside a function passed to :meth:`run`."""
        assert self._conn is not None
        return self._conn

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the database thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the database thread and wait (for start-up and shutdown code)."""
        return self._executor.submit(fn, *args).result()

    def close(self) -> None:
        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._executor.submit(_close).result()
        self._executor.shutdown(wait=True)


def transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` inside BEGIN IMMEDIATE … COMMIT (rolled back on error)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result
