"""One SQLite database served by one thread, so the event loop never waits on disk.

Outbox, spool, dead letters and the embedded store each own one :class:`SqliteWorker`. All statements
of a database run on its single thread, in order; the event loop awaits them. WAL mode lets readers of
other processes (``ha-ingestor verify``, tests) look at the file while the service writes.

With ``checkpoint_interval`` a second thread, on its own connection, copies the WAL into the file (a
PASSIVE checkpoint, which never blocks the writer) that often; SQLite's own checkpoints would otherwise
run inside the commit that crosses ``wal_autocheckpoint``, and that commit would wait for the fsync.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


class SqliteWorker:
    def __init__(self, path: Path, *, synchronous: str = "NORMAL", schema: str = "",
                 wal_autocheckpoint: int | None = None, checkpoint_interval: float | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{path.stem}")
        self._synchronous = synchronous
        self._schema = schema
        self._wal_autocheckpoint = wal_autocheckpoint
        self._conn: sqlite3.Connection | None = None
        self._executor.submit(self._open).result()
        self._stop_checkpoints = threading.Event()
        self._checkpointer: threading.Thread | None = None
        # Why the checkpoint thread is not checkpointing ("" while it is): the writer's own checkpoint at
        # wal_autocheckpoint still bounds the WAL, at the price of commits that wait for it.
        self.checkpoint_problem = ""
        if checkpoint_interval:
            self._checkpointer = threading.Thread(target=self._checkpoint_loop, args=(checkpoint_interval,),
                                                  name=f"sqlite-checkpoint-{path.stem}", daemon=True)
            self._checkpointer.start()

    def _checkpoint_loop(self, interval: float) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")  # the checkpoint's fsyncs follow it
        except sqlite3.Error as exc:
            self.checkpoint_problem = f"cannot open a connection for checkpoints: {exc}"
            log.error("WAL checkpoints left to the writer's commits", extra={"db": str(self.path), "error": str(exc)})
            return
        try:
            while not self._stop_checkpoints.wait(interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # the writer checkpoints by itself at wal_autocheckpoint meanwhile
                    if not self.checkpoint_problem:
                        log.warning("WAL checkpoint failed; trying again", extra={"db": str(self.path),
                                                                              "error": str(exc)})
                    self.checkpoint_problem = f"checkpoint failed: {exc}"
                else:
                    self.checkpoint_problem = ""
        finally:
            conn.close()

    def _open(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a crash of the process (SIGKILL), the last commits
        # may be lost on power loss; FULL also fsyncs the WAL on every commit.
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=10000")
        # Debian builds SQLite to zero every deleted row and every freed page (secure_delete=1). The outbox
        # and the spool delete each row moments after writing it, so that was a fifth of their WAL bytes and
        # a quarter of the outbox's disk writes at 20,000 events/s. FAST zeroes a row only on a page that is
        # written anyway; the same events are in the store for good.
        conn.execute("PRAGMA secure_delete=FAST")
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
        if self._checkpointer is not None:
            self._stop_checkpoints.set()
            self._checkpointer.join()
            self._checkpointer = None

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
        conn.execute("COMMIT")  # may fail too (disk full): then roll back, or the next BEGIN would fail
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result
