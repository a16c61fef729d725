"""Private NATS servers with JetStream (Debian's ``nats-server``) on free ports, each with its own store directory.

One alone (:class:`NatsServer`), or a JetStream cluster of them on localhost (:class:`NatsCluster`).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nats
import orjson

from . import servers
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

CLUSTER = """cluster {{
  name: {cluster}
  listen: 127.0.0.1:{cluster_port}
  routes: [{routes}]
}}
"""


def nats_server_binary() -> str | None:
    return shutil.which("nats-server") or ("/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists()
                                            else None)


class NatsServer:
    """Start with :meth:`start`; ``url`` is its client URL. Kill and restart it (same ports, same store).

    With ``cluster`` set it is a node of that cluster, routing to ``routes`` (the other nodes' ``route``).
    """

    def __init__(self, directory: Path, name: str = "n1", cluster: str = "") -> None:
        self.dir = directory
        self.name = name
        self.cluster = cluster
        self.port = free_port()
        self.http_port = free_port()
        self.cluster_port = free_port() if cluster else 0
        self.routes: list[str] = []
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def route(self) -> str:
        return f"nats-route://127.0.0.1:{self.cluster_port}"

    def launch(self) -> None:
        """Start the process without waiting for it (a cluster node is ready only once a quorum runs)."""
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server not found: install Debian's 'nats-server' package")
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "nats.conf"
        text = CONFIG.format(port=self.port, http_port=self.http_port, name=self.name, store=self.dir / "jetstream")
        if self.cluster:
            text += CLUSTER.format(cluster=self.cluster, cluster_port=self.cluster_port, routes=", ".join(self.routes))
        config.write_text(text)
        self.proc = servers.launch([binary, "-c", str(config)], self.dir / "nats.log")

    def start(self, timeout: float = 30.0) -> NatsServer:
        self.launch()
        try:
            _wait_until(self.healthy, [self], timeout, f"nats-server on {self.url}")
        except BaseException:
            self.kill()
            raise
        return self

    def healthy(self) -> bool:
        """JetStream ready: enabled when alone; in a cluster, in contact with the meta leader and caught up.

        2.9's plain ``/healthz`` answers 503 until a node has a meta leader and every stream and consumer it
        holds is current; ``js-enabled-only`` skips those checks, which a single server does not need.
        """
        query = "" if self.cluster else "?js-enabled-only=true"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz{query}", timeout=1) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def jsz(self, query: str = "") -> dict[str, Any] | None:
        """The monitoring endpoint ``/jsz`` (this node's view of JetStream); None when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/jsz{query}", timeout=2) as resp:
                data = orjson.loads(resp.read())
        except (OSError, urllib.error.URLError, orjson.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

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
        servers.terminate(self.proc)
        self.proc = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class NatsCluster:
    """``size`` nodes (n1, n2, …) of one JetStream cluster on localhost, each with its own ports and store.

    ``url`` lists every node's client URL, so a client fails over to another node when its own dies.
    """

    def __init__(self, directory: Path, size: int = 3, name: str = "fleet") -> None:
        self.nodes = [NatsServer(directory / f"n{i}", f"n{i}", cluster=name) for i in range(1, size + 1)]
        for node in self.nodes:
            node.routes = [other.route for other in self.nodes if other is not node]
        self.url = ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = 60.0) -> NatsCluster:
        try:
            for node in self.nodes:
                node.launch()
            _wait_until(self.ready, self.nodes, timeout, f"nats cluster of {len(self.nodes)}")
        except BaseException:
            self.stop()
            raise
        return self

    def ready(self) -> bool:
        """Every node healthy, and the meta leader sees every other node as a current peer."""
        if not all(node.healthy() for node in self.nodes):
            return False
        for node in self.nodes:
            meta = (node.jsz() or {}).get("meta_cluster", {})
            if meta.get("leader") == node.name:  # only the leader lists its peers' state
                peers = meta.get("replicas") or []
                return len(peers) == len(self.nodes) - 1 and all(peer.get("current") for peer in peers)
        return False

    def node(self, name: str) -> NatsServer:
        return next(node for node in self.nodes if node.name == name)

    def report(self, stream: str, consumer: str = "") -> dict[str, Any] | None:
        """A stream, or one of its consumers, as its leader reports it: config, cluster (leader, replicas), state.

        Only the leader's view counts: a follower's ``/jsz`` may name a stale leader or list itself as a replica.
        """
        query = "?streams=true&config=true" + ("&consumers=true" if consumer else "")
        for node in self.nodes:
            for account in (node.jsz(query) or {}).get("account_details") or []:
                for detail in account.get("stream_detail") or []:
                    if detail.get("name") != stream:
                        continue
                    if consumer:
                        detail = next((c for c in detail.get("consumer_detail") or [] if c.get("name") == consumer),
                                      {})
                    if (detail.get("cluster") or {}).get("leader") == node.name:
                        return dict(detail)
        return None

    def step_down(self, stream: str, consumer: str = "") -> None:
        """Ask the leader of a stream (or of its consumer) to hand over to another replica; the server picks which."""
        subject = f"$JS.API.CONSUMER.LEADER.STEPDOWN.{stream}.{consumer}" if consumer else \
            f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}"

        async def request() -> None:
            nc = await nats.connect(self.url.split(","), connect_timeout=5, allow_reconnect=False)
            try:
                await nc.request(subject, b"", timeout=5)
            finally:
                await nc.close()

        asyncio.run(request())

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_until(ready: Callable[[], bool], nodes: Sequence[NatsServer], timeout: float, what: str) -> None:
    servers.wait_ready(ready, [(f"nats-server {node.name}", node.proc, node.dir / "nats.log") for node in nodes],
                       timeout, what)
