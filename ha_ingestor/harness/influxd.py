"""A private InfluxDB 1.x server (Debian's ``influxd``) on free ports with its own data directory."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from . import servers
from .ports import free_port

CONFIG = """reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{dir}/meta"
  retention-autocreate = true
  logging-enabled = false
[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  wal-fsync-delay = "0s"
  index-version = "inmem"
  query-log-enabled = false
  trace-logging-enabled = false
[coordinator]
  write-timeout = "10s"
[retention]
  enabled = false
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false
  max-body-size = 0
  unix-socket-enabled = false
[ifql]
  enabled = false
[logging]
  level = "warn"
  suppress-logo = true
[subscriber]
  enabled = false
[continuous_queries]
  enabled = true
  log-enabled = false
"""


def influxd_binary() -> str | None:
    return shutil.which("influxd") or (str(Path("/usr/bin/influxd")) if Path("/usr/bin/influxd").exists() else None)


class Influxd:
    """Start with :meth:`start`; ``url`` is its HTTP API. Stop, freeze and thaw it for fault tests."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.rpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = directory / "influxdb.conf"

    def start(self, timeout: float = 30.0) -> Influxd:
        binary = influxd_binary()
        if binary is None:
            raise RuntimeError("influxd not found: install Debian's 'influxdb' package")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(CONFIG.format(dir=self.dir, port=self.port, rpc_port=self.rpc_port))
        self.proc = servers.launch([binary, "-config", str(self.config)], self.dir / "influxd.log")
        servers.wait_ready(self.ping, [("influxd", self.proc, self.dir / "influxd.log")], timeout,
                           f"influxd on {self.url}")
        return self

    def ping(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/ping", timeout=1) as resp:
                return bool(resp.status == 204)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.thaw()
        servers.terminate(self.proc)
        self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: the server holds its connections but answers nothing (a hung database)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def query(self, q: str, db: str = "", method: str = "GET", timeout: float = 60.0) -> dict[str, Any]:
        params = urllib.parse.urlencode({"q": q, **({"db": db} if db else {}), "epoch": "ns"})
        if method == "POST":
            req = urllib.request.Request(self.url + "/query", data=params.encode(), method="POST")
        else:
            req = urllib.request.Request(self.url + "/query?" + params)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            result: dict[str, Any] = orjson.loads(resp.read())
        return result

    def rows(self, q: str, db: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Rows of every series of the first statement, as dicts (with 'measurement')."""
        out: list[dict[str, Any]] = []
        for statement in self.query(q, db, timeout=timeout).get("results", []):
            if "error" in statement:
                raise RuntimeError(statement["error"])
            for series in statement.get("series", []) or []:
                for values in series["values"]:
                    row = dict(zip(series["columns"], values, strict=True))
                    row["measurement"] = series["name"]
                    row.update(series.get("tags") or {})
                    out.append(row)
        return out

    def write(self, db: str, lines: str, rp: str = "", timeout: float = 60.0) -> None:
        params = urllib.parse.urlencode({"db": db, **({"rp": rp} if rp else {})})
        req = urllib.request.Request(f"{self.url}/write?{params}", data=lines.encode(), method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            if resp.status != 204:
                raise RuntimeError(f"write answered {resp.status}")

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"', method="POST")

    def drop_database(self, name: str) -> None:
        self.query(f'DROP DATABASE "{name}"', method="POST")

    def __enter__(self) -> Influxd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
