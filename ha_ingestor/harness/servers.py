"""Starting and stopping the real servers the tests and benchmark run beside the services (influxd,
VictoriaMetrics, nats-server): each in its own session, logging to a file in its directory."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def launch(args: Sequence[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``args`` in a new session (a signal to the test runner does not reach it), output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(list(args), stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)


def wait_ready(ready: Callable[[], bool], procs: Sequence[tuple[str, subprocess.Popen[bytes] | None, Path]],
               timeout: float, what: str) -> None:
    """Poll ``ready()`` until true; raise RuntimeError naming the log when a process (name, process, log)
    exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc, log_path in procs:
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise RuntimeError(f"{name} exited with {code}; see {log_path}")
        if ready():
            return
        time.sleep(0.1)
    logs = ", ".join(str(log_path) for _, _, log_path in procs)
    raise RuntimeError(f"{what} not ready within {timeout} s; see {logs}")


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; nothing when it is not running."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
