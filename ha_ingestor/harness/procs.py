"""The services as real processes (`python -m ha_ingestor ...`), for tests, benchmarks and the migration demo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .ports import free_port


def http_get(url: str, timeout: float = 5.0, token: str = "") -> tuple[int, Any]:
    """(status, JSON or text); status 0 when nothing answers."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    except (OSError, urllib.error.URLError):
        return 0, None
    try:
        return status, orjson.loads(body)
    except orjson.JSONDecodeError:
        return status, body.decode("utf-8", "replace")


def http_post(url: str, payload: Any = None, timeout: float = 10.0, token: str = "",
              body: bytes | None = None, headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
    data = body if body is not None else orjson.dumps(payload if payload is not None else {})
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=hdrs, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    except (OSError, urllib.error.URLError):
        return 0, None
    try:
        return status, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return status, raw.decode("utf-8", "replace")


def wait_for(predicate: Any, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll ``predicate()`` until it returns something truthy; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


@dataclass
class Service:
    """One `ha-ingestor <command>` process with its own environment and log file."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    health_url: str = ""
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HA_", "INFLUXDB_"))}
        env.update(self.env)
        env.setdefault("LOG_FORMAT", "json")
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen([sys.executable, "-m", "ha_ingestor", *self.args], env=env, stdout=log,
                                         stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_healthy(self, timeout: float = 30.0) -> Any:
        def ready() -> Any:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            status, body = http_get(self.health_url, timeout=2)
            return body if status == 200 else None

        return wait_for(ready, timeout, what=f"{self.name} healthy at {self.health_url}")

    def terminate(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class Stack:
    """A simulator and the three services (split), sharing one DATA_DIR; ports chosen free."""

    directory: Path
    influx_url: str = ""
    database: str = "ha_events"
    token: str = "sim-admin-token"
    sim_args: list[str] = field(default_factory=list)
    events_log: bool = True  # the simulator logs every fired event (costly flat out: the benchmark turns it off)
    extra_env: dict[str, str] = field(default_factory=dict)
    sim_port: int = field(default_factory=free_port)
    ingestion_port: int = field(default_factory=free_port)
    enrichment_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    services: dict[str, Service] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    def env(self) -> dict[str, str]:
        env = {
            "HA_URL": f"http://127.0.0.1:{self.sim_port}", "HA_TOKEN": self.token,
            "DATA_DIR": str(self.data_dir), "INGESTION_PORT": str(self.ingestion_port),
            "ENRICHMENT_PORT": str(self.enrichment_port), "ADMIN_PORT": str(self.admin_port),
            "ENRICHMENT_URL": f"http://127.0.0.1:{self.enrichment_port}",
            "INGESTION_URL": f"http://127.0.0.1:{self.ingestion_port}",
            "ADMIN_URL": f"http://127.0.0.1:{self.admin_port}",
            "BACKFILL_DELAY_S": "1", "LOG_LEVEL": "info",
        }
        if self.influx_url:
            env.update({"INFLUXDB_URL": self.influx_url, "INFLUXDB_DATABASE": self.database})
        env.update(self.extra_env)
        return env

    def url(self, service: str) -> str:
        port = {"ingestion": self.ingestion_port, "enrichment": self.enrichment_port, "admin": self.admin_port,
                "simulator": self.sim_port, "up": self.ingestion_port}[service]
        return f"http://127.0.0.1:{port}"

    def service(self, name: str) -> Service:
        if name == "simulator":
            args = ["simulate", "--port", str(self.sim_port), "--token", self.token,
                    "--state-dir", str(self.directory / "sim-state"),
                    *(["--events-log", str(self.directory / "fired.tsv")] if self.events_log else []),
                    *self.sim_args]
            health = f"http://127.0.0.1:{self.sim_port}/sim/report"
            svc = Service(name, args, {"LOG_FORMAT": "json"}, self.directory / "logs" / f"{name}.log", "")
            svc.health_url = health
            return svc
        health = self.url(name) + "/health"
        return Service(name, [name], self.env(), self.directory / "logs" / f"{name}.log", health)

    def start(self, *names: str, wait: bool = True) -> None:
        for name in names:
            svc = self.service(name).start()
            self.services[name] = svc
            if wait and name == "simulator":
                url = svc.health_url
                wait_for(lambda u=url: http_get(u, token=self.token)[0] == 200, 30, what="simulator")
            elif wait and name in ("enrichment", "admin"):
                wait_for(lambda s=svc: self._listening(s), 30, what=f"{name} listening")
            elif wait and name in ("ingestion", "up"):
                svc.wait_healthy(30)

    def _listening(self, svc: Service) -> bool:
        if not svc.running:
            raise RuntimeError(f"{svc.name} exited:\n{svc.log()[-3000:]}")
        return http_get(svc.health_url, timeout=2)[0] != 0

    def sim(self, path: str, payload: Any = None) -> Any:
        url = self.url("simulator") + path
        if payload is None and path == "/sim/report":
            return http_get(url, token=self.token)[1]
        return http_post(url, payload or {}, token=self.token)[1]

    def fired(self) -> list[tuple[int, str, str, int]]:
        """(seq, event_type, entity_id, time µs) of every event the simulator fired."""
        path = self.directory / "fired.tsv"
        out = []
        for line in path.read_text().splitlines() if path.exists() else []:
            seq, kind, entity, us = line.split("\t")
            out.append((int(seq), kind, entity, int(us)))
        return out

    def stop(self) -> None:
        for name in reversed(list(self.services)):
            self.services[name].terminate()
        self.services.clear()
