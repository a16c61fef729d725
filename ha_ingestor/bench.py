"""``ha-ingestor bench``: the pipeline's speed, measured end to end on this machine.

The simulator, the three services (separate processes, durable outbox on, default settings) and a
private real influxd run here; three phases follow:

1. **live** — ``--live-rate`` events/s (1,000) for ``--live-seconds``: end-to-end latency (event time →
   point acknowledged by the store, enrichment's ``end_to_end_lag_seconds``), hop latency, CPU and peak RSS
   of every process (RSS read right after this phase, so it is the figure *at* this rate);
2. **outage** — at the live rate, enrichment is killed for ``--outage-seconds`` (60) and restarted: the
   drain time and rate of the backlog;
3. **at the target rate** — ``--rate`` events/s (20,000) for ``--seconds`` (60): end-to-end latency and CPU
   at that rate, and whether the pipeline keeps up with it;
4. **flat out** — the simulator fires as fast as ingestion reads (durably, into its outbox) for
   ``--flat-seconds`` (30): sustained throughput = points stored / time from the first event fired to the
   last point stored. (At a fixed offered rate this figure cannot exceed that rate, so the throughput
   target is measured here.)

Every phase ends by comparing events fired with points stored: ``missing`` must be 0. Prints a table, and
JSON with ``--json``. ``--quick`` is the few-second smoke run CI does so the benchmark never rots.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .admin import scrape
from .harness.audit import stored_count
from .harness.influxd import Influxd
from .harness.procs import Stack, http_get
from .verify import histogram_quantile

DB = "bench"
TICK_S = os.sysconf("SC_CLK_TCK")


@dataclass
class Options:
    rate: float = 20_000
    seconds: float = 60
    live_rate: float = 1_000
    live_seconds: float = 20
    outage_seconds: float = 60
    flat_seconds: float = 30
    entities: int = 200
    mix: float = 0.1

    @classmethod
    def quick(cls) -> Options:
        return cls(rate=5_000, seconds=3, live_rate=500, live_seconds=3, outage_seconds=3, flat_seconds=2,
                   entities=50)


@dataclass
class Proc:
    name: str
    pid: int
    cpu_ticks: int = 0

    def ticks(self) -> int:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0
        return int(fields[11]) + int(fields[12])  # utime + stime

    def peak_rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return math.nan


@dataclass
class Phase:
    name: str
    rate: float
    fired: int = 0
    stored: int = 0
    seconds: float = 0.0
    throughput: float = 0.0
    e2e_ms: dict[str, float | None] = field(default_factory=dict)
    hop_p99_ms: float | None = None
    cpu_percent: dict[str, float] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def missing(self) -> int:
        return max(0, self.fired - self.stored)


class Bench:
    def __init__(self, options: Options, directory: Path, say: Any = print, *,
                 influxd: Influxd | None = None, database: str = DB) -> None:
        self.o = options
        self.say = say
        self.influxd = influxd or Influxd(directory / "influxd")
        self.database = database
        self.stack = Stack(directory, influx_url="", database=database, events_log=False,
                           sim_args=["--rate", str(options.live_rate), "--mix", str(options.mix),
                                     "--entities", str(options.entities), "--paused"],
                           extra_env={"LOG_LEVEL": "warning"})
        self.procs: dict[str, Proc] = {}
        self.poll_s = 0.2  # how often wait_stored counts the points (each count is a query over all of them)

    # ---------------------------------------------------------------- plumbing

    def stored(self) -> int:
        return stored_count(self.influxd, self.database, timeout=120)

    def fired(self) -> int:
        return int(self.stack.sim("/sim/report")["fired"])

    def metrics(self, service: str, stack: Stack | None = None) -> dict[str, float]:
        status, body = http_get((stack or self.stack).url(service) + "/metrics", timeout=30)
        return scrape.parse(body) if status == 200 and isinstance(body, str) else {}

    def enrichment_metrics(self) -> dict[str, float]:
        """Enrichment's metrics (the hop comparison sums them over its workers)."""
        return self.metrics("enrichment")

    def track(self) -> None:
        self.procs = {name: Proc(name, svc.proc.pid) for name, svc in self.stack.services.items()
                      if svc.proc is not None}
        if self.influxd.proc is not None:
            self.procs["influxd"] = Proc("influxd", self.influxd.proc.pid)

    def wait_stored(self, expected: int, timeout: float) -> tuple[int, float]:
        """Poll until ``expected`` points are stored; (stored, monotonic time it was first seen)."""
        deadline = time.monotonic() + timeout
        count = 0
        while time.monotonic() < deadline:
            count = self.stored()
            if count >= expected:
                return count, time.monotonic()
            time.sleep(self.poll_s)
        return count, time.monotonic()

    # ---------------------------------------------------------------- phases

    def run_phase(self, name: str, rate: float, seconds: float, *, measure_rss: bool = False,
                  drain_timeout: float | None = None) -> Phase:
        phase = Phase(name, rate)
        self.say(f"{name}: {f'{rate:g} events/s' if rate else 'as fast as ingestion reads'} for {seconds:g} s …")
        fired0, stored0 = self.fired(), self.stored()
        ingestion0, enrichment0 = self.metrics("ingestion"), self.enrichment_metrics()
        for proc in self.procs.values():
            proc.cpu_ticks = proc.ticks()
        started = time.monotonic()
        self.stack.sim("/sim/resume", {"rate": rate})
        time.sleep(seconds)
        self.stack.sim("/sim/pause")
        fired_for = time.monotonic() - started
        phase.fired = self.fired() - fired0
        stored, done = self.wait_stored(stored0 + phase.fired, timeout=drain_timeout or max(60.0, seconds * 3))
        phase.stored = stored - stored0
        phase.seconds = done - started
        phase.throughput = phase.stored / phase.seconds if phase.seconds > 0 else 0.0
        phase.extra["firing_rate"] = round(phase.fired / fired_for)
        ingestion1, enrichment1 = self.metrics("ingestion"), self.enrichment_metrics()
        for q in (0.5, 0.95, 0.99):
            value, n = histogram_quantile(enrichment0, enrichment1, "end_to_end_lag_seconds", q)
            phase.e2e_ms[f"p{round(q * 100)}"] = None if n == 0 or math.isinf(value) else round(value * 1000, 1)
        hop, n = histogram_quantile(ingestion0, ingestion1, "hop_request_seconds", 0.99)
        phase.hop_p99_ms = None if n == 0 or math.isinf(hop) else round(hop * 1000, 1)
        elapsed = time.monotonic() - started
        for proc in self.procs.values():
            phase.cpu_percent[proc.name] = round(100 * (proc.ticks() - proc.cpu_ticks) / TICK_S / elapsed, 1)
            if measure_rss:
                phase.rss_mb[proc.name] = round(proc.peak_rss_mb(), 1)
        return phase

    def outage(self) -> Phase:
        o = self.o
        phase = Phase(f"{o.outage_seconds:g} s enrichment outage, then drain", o.live_rate)
        self.say(f"outage: enrichment killed for {o.outage_seconds:g} s at {o.live_rate:g} events/s …")
        fired0, stored0 = self.fired(), self.stored()
        self.stack.sim("/sim/resume", {"rate": o.live_rate})
        time.sleep(2)
        self.stack.services["enrichment"].kill()
        time.sleep(o.outage_seconds)
        backlog = self.fired() - fired0 - (self.stored() - stored0)
        restarted = time.monotonic()
        self.stack.start("enrichment")
        self.track()
        # Caught up: the store holds everything fired up to the restart plus what came since, live.
        caught = restarted
        while time.monotonic() - restarted < 600:
            fired, stored = self.fired() - fired0, self.stored() - stored0
            if stored >= fired - o.live_rate * 0.2:  # within 200 ms of live
                caught = time.monotonic()
                break
            time.sleep(0.2)
        self.stack.sim("/sim/pause")
        phase.fired = self.fired() - fired0
        stored, _ = self.wait_stored(stored0 + phase.fired, timeout=120)
        phase.stored = stored - stored0
        drain = caught - restarted
        phase.seconds = drain
        phase.throughput = (backlog + o.live_rate * drain) / drain if drain > 0 else 0.0
        phase.extra.update({"backlog": backlog, "drain_s": round(drain, 1), "drain_rate": round(phase.throughput),
                            "drain_vs_live": round(phase.throughput / o.live_rate, 1)})
        return phase

    def run(self) -> dict[str, Any]:
        o = self.o
        self.influxd.start()
        self.influxd.create_database(DB)
        self.stack.influx_url = self.influxd.url
        try:
            self.stack.start("simulator", "enrichment", "ingestion")
            self.track()
            live = self.run_phase(f"live {o.live_rate:g}/s", o.live_rate, o.live_seconds, measure_rss=True)
            outage = self.outage()
            peak = self.run_phase(f"at {o.rate:g}/s", o.rate, o.seconds)
            flat = self.run_phase("flat out", 0, o.flat_seconds, drain_timeout=max(120.0, o.flat_seconds * 10))
        finally:
            self.stack.stop()
            self.influxd.stop()
        return self.report(live, outage, peak, flat)

    def report(self, live: Phase, outage: Phase, peak: Phase, flat: Phase) -> dict[str, Any]:
        o = self.o
        targets = [
            ("sustained throughput ≥ 20,000 events/s, zero loss", flat.throughput >= 20_000 and flat.missing == 0,
             f"{flat.throughput:,.0f}/s flat out over {flat.seconds:.0f} s ({flat.fired:,} events, "
             f"fired at {flat.extra.get('firing_rate', 0):,}/s), missing {flat.missing}"),
            ("end-to-end p99 ≤ 100 ms at 1,000 events/s", _le(live.e2e_ms.get("p99"), 100),
             f"{live.e2e_ms.get('p99')} ms at {o.live_rate:g}/s"),
            ("end-to-end p99 ≤ 250 ms at 20,000 events/s", _le(peak.e2e_ms.get("p99"), 250),
             f"{peak.e2e_ms.get('p99')} ms at {o.rate:g}/s"),
            ("peak RSS ≤ 80 MB per service at 1,000 events/s",
             all(v <= 80 for k, v in live.rss_mb.items() if k in ("ingestion", "enrichment")),
             ", ".join(f"{k} {v:g} MB" for k, v in live.rss_mb.items() if k in ("ingestion", "enrichment"))),
            ("drain ≥ 10× the live rate after an outage", outage.throughput >= 10 * o.live_rate,
             f"{outage.throughput:,.0f}/s = {outage.throughput / o.live_rate:.1f}× live"),
        ]
        return {
            "options": o.__dict__, "cpu_count": os.cpu_count(),
            "phases": [phase_dict(p) for p in (live, outage, peak, flat)],
            "targets": [{"target": t, "pass": bool(ok), "figure": f} for t, ok, f in targets],
            "zero_loss": all(p.missing == 0 for p in (live, outage, peak, flat)),
        }


def _le(value: float | None, limit: float) -> bool:
    return value is not None and value <= limit


def phase_dict(p: Phase) -> dict[str, Any]:
    return {"phase": p.name, "rate": p.rate, "fired": p.fired, "stored": p.stored, "missing": p.missing,
            "seconds": round(p.seconds, 2), "throughput": round(p.throughput), "e2e_ms": p.e2e_ms,
            "hop_p99_ms": p.hop_p99_ms, "cpu_percent": p.cpu_percent, "peak_rss_mb": p.rss_mb, **p.extra}


def phase_header(label: str, width: int = 38) -> str:
    return (f"{label:<{width}}{'fired':>9}{'stored':>9}{'missing':>8}{'events/s':>10}"
            f"{'e2e p50/p95/p99 ms':>26}{'hop p99':>9}")


def phase_row(label: str, p: dict[str, Any], width: int = 38) -> str:
    """One phase (as :func:`phase_dict` gives it) under :func:`phase_header`."""
    e2e = "/".join("-" if p["e2e_ms"].get(k) is None else f"{p['e2e_ms'][k]:g}" for k in ("p50", "p95", "p99"))
    return (f"{label:<{width}}{p['fired']:>9}{p['stored']:>9}{p['missing']:>8}{p['throughput']:>10}"
            f"{e2e:>26}{'-' if p['hop_p99_ms'] is None else p['hop_p99_ms']:>9}")


def table(result: dict[str, Any]) -> str:
    lines = [phase_header("phase")]
    for p in result["phases"]:
        lines.append(phase_row(p["phase"], p))
    lines.append("")
    names = sorted({n for p in result["phases"] for n in p["cpu_percent"]})
    lines.append(f"{'CPU % (100 = one core)':<38}" + "".join(f"{n:>12}" for n in names))
    for p in result["phases"]:
        lines.append(f"{p['phase']:<38}" + "".join(f"{p['cpu_percent'].get(n, '-'):>12}" for n in names))
    live = result["phases"][0]
    lines.append(f"{'peak RSS MB after ' + live['phase']:<38}" +
                 "".join(f"{live['peak_rss_mb'].get(n, 0):>12}" for n in names))
    outage = result["phases"][1]
    lines.append(f"\noutage: backlog {outage['backlog']} events drained in {outage['drain_s']} s "
                 f"({outage['drain_rate']}/s, {outage['drain_vs_live']}× live)\n")
    for t in result["targets"]:
        lines.append(f"{'PASS' if t['pass'] else 'FAIL'}  {t['target']}: {t['figure']}")
    return "\n".join(lines)


def main(options: Options, json_path: Path | None, keep: Path | None = None) -> dict[str, Any]:
    return report(lambda directory, say: Bench(options, directory, say).run(), table, json_path, keep)


def report(run: Callable[[Path, Callable[[str], None]], dict[str, Any]], render: Callable[[dict[str, Any]], str],
           json_path: Path | None, keep: Path | None = None) -> dict[str, Any]:
    """Run a benchmark in a temporary directory (``keep`` to keep it), print its table, write its JSON."""
    with tempfile.TemporaryDirectory(prefix="ha-ingestor-bench-") as tmp:
        result = run(keep or Path(tmp), lambda text: print(text, flush=True))
    print(render(result))
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2))
    return result
