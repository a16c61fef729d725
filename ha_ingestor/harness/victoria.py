"""A private VictoriaMetrics (Debian's ``victoria-metrics``): a real server that accepts InfluxDB's
``/api/v2/write`` (gzip too). It ignores the token and keeps only numeric fields, at millisecond precision,
so it proves the v2 request, not InfluxDB 2's semantics."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from .ports import free_port


def victoria_binary() -> str | None:
    return shutil.which("victoria-metrics")


class VictoriaMetrics:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> VictoriaMetrics:
        binary = victoria_binary()
        if binary is None:
            raise RuntimeError("victoria-metrics not found: install Debian's 'victoria-metrics' package")
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / "victoria.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [binary, f"-storageDataPath={self.dir / 'data'}", f"-httpListenAddr=127.0.0.1:{self.port}",
                 "-loggerLevel=ERROR", "-search.latencyOffset=0s", "-retentionPeriod=100y"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"victoria-metrics exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        raise RuntimeError("victoria-metrics did not start")

    def export(self, match: str) -> list[dict[str, Any]]:
        """Every series matching ``match`` (e.g. ``{__name__=~"states_.*"}``), after a flush."""
        urllib.request.urlopen(self.url + "/internal/force_flush", timeout=10).read()
        data = urllib.parse.urlencode({"match[]": match, "start": "0"}).encode()
        with urllib.request.urlopen(self.url + "/api/v1/export", data=data, timeout=30) as resp:
            return [orjson.loads(line) for line in resp.read().splitlines() if line.strip()]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
