"""``ha-ingestor bench --hops``: the HTTP hop beside the NATS hop, and NATS with 1, 2 and 3 enrichment workers.

Four configurations run one after another against one private influxd (a database each), every service a
separate process with default settings and ``HOME_ID=bench`` (so both hops write the same points):

* ``http`` — simulator → ingestion → HTTP POST → one enrichment;
* ``nats-1``, ``nats-2``, ``nats-3`` — simulator → ingestion → a private nats-server (JetStream, file store,
  started afresh for each) → 1, 2 or 3 enrichment workers sharing one durable pull consumer.

Each configuration warms up for a moment (so connections, stream and consumer exist and the start-up
backfill is stored), then runs two of ``bench``'s phases:

1. **live** — ``--live-rate`` events/s (1,000) for ``--live-seconds`` (15): end-to-end latency p50/p95/p99
   from enrichment's ``end_to_end_lag_seconds`` summed over the workers, hop p99 from ingestion's
   ``hop_request_seconds`` (the HTTP request, or the JetStream publish to its ack);
2. **throughput** — ``--rate`` events/s offered (20,000; 0 = as fast as ingestion reads) for ``--seconds``
   (10, so ~200,000 events): sustained = points stored / time from the first event fired to the last point
   stored. Where the pipeline keeps up the figure is capped by the offered rate (``--rate 0`` fires as fast as
   ingestion reads); where it does not, a backlog builds in ingestion's outbox and drains at full speed, and
   the phase's latency is mostly that queueing. 10 s rather than 20 keeps the run at ~2 minutes on a quiet
   two-core machine (on a busy one the drains take several times longer).

Both end with fired vs stored (``missing`` must be 0) and CPU % per process, nats-server and influxd
included. Prints one table, JSON with ``--json``; ``--quick`` is the few-second smoke run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bench import Bench, Options, Phase, Proc, phase_dict, phase_header, phase_row, report
from .harness.influxd import Influxd
from .harness.nats_server import NatsServer
from .harness.procs import Stack

HOME_ID = "bench"
# The stream must fit in nats-server's file store (1 GB in harness.nats_server); work-queue retention
# deletes what the workers ack, so this only bounds the backlog of the throughput phase.
NATS_MAX_BYTES = 512 * 2**20


def options(quick: bool = False) -> Options:
    if quick:
        return Options(rate=3_000, seconds=2, live_rate=300, live_seconds=2, outage_seconds=0, entities=50)
    return Options(rate=20_000, seconds=10, live_rate=1_000, live_seconds=15, outage_seconds=0)


@dataclass(frozen=True)
class Config:
    hop: str  # "http" or "nats"
    workers: int = 1

    @property
    def name(self) -> str:
        return "http" if self.hop == "http" else f"nats-{self.workers}"

    @property
    def label(self) -> str:
        if self.hop == "http":
            return "HTTP, 1 enrichment"
        return f"NATS, {self.workers} worker{'s' if self.workers > 1 else ''}"


CONFIGS = (Config("http"), Config("nats", 1), Config("nats", 2), Config("nats", 3))


class HopRun(Bench):
    """One configuration on the shared influxd: the home (simulator, ingestion), its enrichment workers and,
    for NATS, a nats-server of its own."""

    def __init__(self, options: Options, directory: Path, influxd: Influxd, config: Config, say: Any = print) -> None:
        super().__init__(options, directory, say, influxd=influxd, database=f"bench_{config.name.replace('-', '_')}")
        self.config = config
        self.directory = directory
        self.nats = NatsServer(directory / "nats") if config.hop == "nats" else None
        self.workers: list[Stack] = []
        self.stack.extra_env["HOME_ID"] = HOME_ID
        self.poll_s = 0.5  # a backlog of ~100,000 points takes seconds to drain: count less often

    def enrichment_metrics(self) -> dict[str, float]:
        """Every worker's counters and histogram buckets, summed (as if one enrichment had done it all)."""
        total: dict[str, float] = {}
        for worker in self.workers:
            for key, value in self.metrics("enrichment", worker).items():
                total[key] = total.get(key, 0.0) + value
        return total

    def track(self) -> None:
        super().track()  # simulator, ingestion (and enrichment, HTTP), influxd
        if self.nats is not None:
            for i, worker in enumerate(self.workers, 1):
                proc = worker.services["enrichment"].proc
                if proc is not None:
                    self.procs[f"enrichment-{i}"] = Proc(f"enrichment-{i}", proc.pid)
            if self.nats.proc is not None:
                self.procs["nats-server"] = Proc("nats-server", self.nats.proc.pid)

    def start(self) -> None:
        self.influxd.create_database(self.database)
        self.stack.influx_url = self.influxd.url
        if self.nats is None:
            self.stack.start("simulator", "enrichment", "ingestion")
            self.workers = [self.stack]
            return
        self.nats.start()
        self.stack.extra_env.update({"HOP": "nats", "NATS_URL": self.nats.url, "NATS_MAX_BYTES": str(NATS_MAX_BYTES)})
        self.stack.start("simulator", "ingestion")
        for i in range(1, self.config.workers + 1):
            worker = Stack(self.directory / f"worker-{i}", influx_url=self.influxd.url, database=self.database,
                           extra_env=dict(self.stack.extra_env))
            self.workers.append(worker)  # before start: stopped at the end even when it fails to start
            worker.start("enrichment")

    def stop(self) -> None:
        for stack in [self.stack, *self.workers]:
            stack.stop()  # a stopped stack forgets its services, so the HTTP stack listed twice is harmless
        if self.nats is not None:
            self.nats.stop()

    def run_config(self) -> list[Phase]:
        o = self.o
        self.say(f"— {self.config.label}")
        try:
            self.start()
            self.track()
            self.run_phase("warm-up", o.live_rate, 1)
            live = self.run_phase(f"live {o.live_rate:g}/s", o.live_rate, o.live_seconds)
            peak = self.run_phase("flat out" if o.rate == 0 else f"throughput {o.rate:g}/s", o.rate, o.seconds,
                                  drain_timeout=max(300.0, o.seconds * 15))
        finally:
            self.stop()
        return [live, peak]


def run(o: Options, directory: Path, configs: tuple[Config, ...] = CONFIGS, say: Any = print) -> dict[str, Any]:
    load_before = os.getloadavg()
    influxd = Influxd(directory / "influxd").start()
    rows: list[dict[str, Any]] = []
    try:
        for config in configs:
            phases = HopRun(o, directory / config.name, influxd, config, say).run_config()
            rows.append({"configuration": config.name, "label": config.label, "hop": config.hop,
                         "workers": config.workers, "phases": [phase_dict(p) for p in phases]})
    finally:
        influxd.stop()
    unused = ("outage_seconds", "flat_seconds")  # phases of the plain bench only
    return {"options": {k: v for k, v in o.__dict__.items() if k not in unused}, "cpu_count": os.cpu_count(),
            "load_average": {"before": [round(x, 2) for x in load_before],
                             "after": [round(x, 2) for x in os.getloadavg()]},
            "configurations": rows,
            "zero_loss": all(p["missing"] == 0 for row in rows for p in row["phases"])}


_CPU_COLUMNS = ("simulator", "ingestion", "enrichment", "nats-server", "influxd", "total")
_CPU_WIDTHS = (11, 11, 20, 13, 9, 7)  # enrichment holds one figure per worker


def _cpu_cells(cpu: dict[str, float]) -> str:
    """simulator, ingestion, enrichment (one figure per worker, joined by +), nats-server, influxd, total."""
    workers = "+".join(f"{v:g}" for k, v in sorted(cpu.items()) if k.startswith("enrichment"))
    cells = [f"{cpu.get('simulator', 0):g}", f"{cpu.get('ingestion', 0):g}", workers,
             "-" if "nats-server" not in cpu else f"{cpu['nats-server']:g}", f"{cpu.get('influxd', 0):g}",
             f"{sum(cpu.values()):.0f}"]
    return "".join(f"{c:>{w}}" for c, w in zip(cells, _CPU_WIDTHS, strict=True))


def table(result: dict[str, Any]) -> str:
    width = 42
    lines = [phase_header("configuration, phase", width)]
    for row in result["configurations"]:
        for p in row["phases"]:
            lines.append(phase_row(f"{row['label']}, {p['phase']}", p, width))
    lines.append("")
    lines.append(f"{'CPU % (100 = one core)':<{width}}" + "".join(
        f"{c:>{w}}" for c, w in zip(_CPU_COLUMNS, _CPU_WIDTHS, strict=True)))
    for row in result["configurations"]:
        for p in row["phases"]:
            lines.append(f"{row['label'] + ', ' + p['phase']:<{width}}" + _cpu_cells(p["cpu_percent"]))
    nats = {row["workers"]: row["phases"][-1]["throughput"] for row in result["configurations"] if row["hop"] == "nats"}
    if 1 in nats and nats[1] > 0:
        lines.append("\nNATS throughput by workers: " + ", ".join(
            f"{n}: {v:,}/s (×{v / nats[1]:.2f})" for n, v in sorted(nats.items())))
    load = result["load_average"]
    lines.append(f"{result['cpu_count']} CPUs; load average before {load['before'][0]:g}, "
                 f"after {load['after'][0]:g} (1 min)")
    return "\n".join(lines)


def main(o: Options, json_path: Path | None, keep: Path | None = None) -> dict[str, Any]:
    return report(lambda directory, say: run(o, directory, say=say), table, json_path, keep)
