"""A private NATS server with JetStream (Debian's ``nats-server``) on free ports with its own store directory."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from .ports import free_port

CONFIG = """listen: 127.0.0.1:{port}
http: 127.0.0.1:{http_port}
server_name: {name}
max_payload: 1MB
jetstream {{
  store_dir: "{store}"
  max_memory_store: 64MB
  max_file_store: 1GB
}}
"""


def nats_server_binary() -> str | None:
    return shutil.which("nats-server") or ("/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists()
                                            else None)


class NatsServer:
    """Start with :meth:`start`; ``url`` is its client URL. Kill and restart it (same ports, same store)."""

    def __init__(self, directory: Path, name: str = "n1") -> None:
        self.dir = directory
        self.name = name
        self.port = free_port()
        self.http_port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> NatsServer:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server not found: install Debian's 'nats-server' package")
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "nats.conf"
        config.write_text(CONFIG.format(port=self.port, http_port=self.http_port, name=self.name,
                                        store=self.dir / "jetstream"))
        with (self.dir / "nats.log").open("ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}; see {self.dir / 'nats.log'}")
            if self.healthy():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"nats-server did not answer on {self.url} within {timeout} s")

    def healthy(self) -> bool:
        """JetStream ready (``/healthz`` answers 200 only then)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz?js-enabled-only=true",
                                        timeout=1) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def listening(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything (the page cache keeps what was written)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
