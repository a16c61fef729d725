"""A private VictoriaMetrics (Debian's ``victoria-metrics``): a real server that accepts InfluxDB's
``/api/v2/write`` (gzip too). It ignores the token and keeps only numeric fields, at millisecond precision,
so it proves the v2 request, not InfluxDB 2's semantics."""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from . import servers
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
        log_path = self.dir / "victoria.log"
        self.proc = servers.launch(
            [binary, f"-storageDataPath={self.dir / 'data'}", f"-httpListenAddr=127.0.0.1:{self.port}",
             "-loggerLevel=ERROR", "-search.latencyOffset=0s", "-retentionPeriod=100y"], log_path)
        servers.wait_ready(self.healthy, [("victoria-metrics", self.proc, log_path)], timeout,
                           f"victoria-metrics on {self.url}")
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def export(self, match: str) -> list[dict[str, Any]]:
        """Every series matching ``match`` (e.g. ``{__name__=~"states_.*"}``), after a flush."""
        urllib.request.urlopen(self.url + "/internal/force_flush", timeout=10).read()
        data = urllib.parse.urlencode({"match[]": match, "start": "0"}).encode()
        with urllib.request.urlopen(self.url + "/api/v1/export", data=data, timeout=30) as resp:
            return [orjson.loads(line) for line in resp.read().splitlines() if line.strip()]

    def stop(self) -> None:
        servers.terminate(self.proc)
        self.proc = None
