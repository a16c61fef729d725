"""`ha-ingestor`: every service and tool of the project behind one command.

Exit codes: 0 done, 1 failed, 2 a setting or argument is wrong (one line names it), 3 Home Assistant
rejected the token (fatal by design: retrying counts toward HA's IP ban).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import math
import os
import re
import secrets
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

from . import __version__, logs, wiring
from .errors import AuthInvalid, SettingsError, StoreUnavailable
from .http import port_is_free
from .settings import Settings, describe
from .simulator.run import SimOptions
from .simulator.run import running as simulator_running
from .simulator.run import serve as simulator_serve

log = logging.getLogger("ha_ingestor")

EXIT_FAILED, EXIT_USAGE, EXIT_AUTH = 1, 2, 3

# A 5,000-event batch allocates hundreds of thousands of containers (decoded events, points, field dicts),
# nearly all freed by reference counting as soon as the batch is written. With CPython's default threshold
# (700) the cycle collector ran hundreds of times per batch, rescanning whatever was alive: at 15,000
# events/s enrichment spent ~8 of its ~39 µs of CPU per event there, and batches took twice as long.
# Objects alive after start-up (modules, settings) are frozen out of every scan.
GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    """Collect what start-up left, freeze the survivors out of later scans, and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _run(main: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Run ``main(stop)`` with SIGTERM/SIGINT setting ``stop``; map errors to exit codes."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    tune_gc()
    try:
        try:
            uvloop.run(runner())
        except BaseExceptionGroup as group:
            # A setting found wrong inside a task (e.g. the NATS stream exists with another retention) must
            # still end in one line and exit 2, not in a TaskGroup traceback.
            raise _first(group, (SettingsError, AuthInvalid)) or group from None
    except SettingsError as exc:
        print(f"ha-ingestor: setting {exc.name}: {exc.problem}", file=sys.stderr)
        return EXIT_USAGE
    except AuthInvalid as exc:
        print(f"ha-ingestor: {exc}. Not retrying: every failed login counts toward Home Assistant's IP ban. "
              "Check HA_TOKEN.", file=sys.stderr)
        return EXIT_AUTH
    except KeyboardInterrupt:
        return 0
    return 0


def _first(group: BaseExceptionGroup[BaseException], kinds: tuple[type[Exception], ...]) -> Exception | None:
    """The first exception of one of ``kinds`` in ``group``, looking into nested groups."""
    for exc in group.exceptions:
        if isinstance(exc, kinds):
            return exc
        if isinstance(exc, BaseExceptionGroup) and (found := _first(exc, kinds)) is not None:
            return found
    return None


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.load(env_file=args.env_file)
    logs.setup(settings.LOG_LEVEL, settings.LOG_FORMAT, settings.secrets())
    return settings


def _data_dir_usable(settings: Settings) -> None:
    """DATA_DIR holds the outbox and the spool: one that cannot be made or written is a setting to fix."""
    path = settings.data_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SettingsError("DATA_DIR", f"{str(path)!r} cannot be created or written: {exc.strerror or exc}") from None


def cmd_service(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.command != "admin":
        _data_dir_usable(settings)
    runs = {"ingestion": wiring.run_ingestion, "enrichment": wiring.run_enrichment, "admin": wiring.run_admin}
    return _run(lambda stop: runs[args.command](settings, stop))


def cmd_up(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _data_dir_usable(settings)
    if not args.demo:
        return _run(lambda stop: wiring.run_all(settings, stop))
    port = args.demo_port or _free_port()
    if not port_is_free("127.0.0.1", port):
        print(f"ha-ingestor: --demo-port {port} is already in use", file=sys.stderr)
        return EXIT_USAGE
    token = secrets.token_urlsafe(32)
    # Its own DATA_DIR: the simulated home's points, outbox watermark and entity ids must never mix with a
    # real home's, nor make a later real `up` backfill a "gap" since the demo stopped.
    settings = settings.replace(HA_URL=f"http://127.0.0.1:{port}", HA_TOKEN=token,
                                DATA_DIR=str(settings.data_dir / "demo"))
    logs.setup(settings.LOG_LEVEL, settings.LOG_FORMAT, settings.secrets())
    options = SimOptions(port=port, token=token, rate=args.demo_rate, entities=args.demo_entities,
                         state_dir=settings.data_dir / "simulator")

    async def main(stop: asyncio.Event) -> None:
        async with simulator_running(options):
            log.info("demo: simulated home running; dashboard at http://%s:%d/", settings.BIND_HOST,
                     settings.ADMIN_PORT)
            await wiring.run_all(settings, stop)

    return _run(main)


def cmd_simulate(args: argparse.Namespace) -> int:
    logs.setup(args.log_level, "auto", [args.token, args.user_token])
    if not args.token:
        print("ha-ingestor simulate: --token is required", file=sys.stderr)
        return EXIT_USAGE
    options = SimOptions(host=args.host, port=args.port, token=args.token, user_token=args.user_token,
                         rate=args.rate, entities=args.entities, count=args.count, seed=args.seed, mix=args.mix,
                         events_log=args.events_log, state_dir=args.state_dir, report=True,
                         paused=args.paused)
    return _run(lambda stop: simulator_serve(options, stop))


def cmd_health(args: argparse.Namespace) -> int:
    """Container health check: GET /health of one local service; exit 0 on 200 (no curl in the image).
    ``auto`` checks the service this container serves: admin-api when it serves one (``up`` does: its
    health is every part's), else the one of ingestion and enrichment that listens."""
    import urllib.error
    import urllib.request

    settings = Settings.load(env_file=args.env_file)
    ports = {"admin": settings.ADMIN_PORT, "ingestion": settings.INGESTION_PORT,
             "enrichment": settings.ENRICHMENT_PORT}
    if args.service == "up":
        args.service = "admin"
    problems = []
    for name in ports if args.service == "auto" else [args.service]:
        port = ports[name]
        try:
            with urllib.request.urlopen(settings.local_url(port) + "/health", timeout=args.timeout) as resp:
                print(resp.read().decode("utf-8", "replace")[:500])
                return 0
        except urllib.error.HTTPError as exc:
            print(f"{name}: HTTP {exc.code}: {exc.read().decode('utf-8', 'replace')[:500]}", file=sys.stderr)
            return EXIT_FAILED
        except (OSError, TimeoutError) as exc:
            refused = isinstance(getattr(exc, "reason", exc), ConnectionRefusedError)
            problems.append(f"{name}: not answering on port {port}: {exc}")
            if not refused:  # something listens there but does not answer: that is the verdict
                break
    print("; ".join(problems), file=sys.stderr)
    return EXIT_FAILED


def cmd_verify(args: argparse.Namespace) -> int:
    settings = Settings.load(env_file=args.env_file)
    logs.setup("warning", "text", settings.secrets())
    from .verify import Verifier, parse_since, render_json

    try:
        since_us = None if args.since is None else parse_since(args.since)
    except ValueError as exc:
        print(f"ha-ingestor verify: --since: {exc}", file=sys.stderr)
        return EXIT_USAGE
    verifier = Verifier(settings, window_s=settings.VERIFY_WINDOW_S if args.window is None else args.window,
                        baseline_per_min=settings.VERIFY_BASELINE_PER_MIN if args.baseline is None else args.baseline,
                        tolerance=settings.VERIFY_RATE_TOLERANCE, since_us=since_us)
    progress = None if args.json else (lambda text: print(text, file=sys.stderr, flush=True))
    report = uvloop.run(verifier.run(progress))
    print(render_json(report) if args.json else report.table())
    return 0 if report.passed else EXIT_FAILED


def cmd_influx_init(args: argparse.Namespace) -> int:
    settings = Settings.load(env_file=args.env_file)
    logs.setup("warning", "text", settings.secrets())
    from .metrics import Registry
    from .sinks.influx import InfluxStore
    from .sinks.influx_init import InitPlan, init, parse_duration

    if not settings.INFLUXDB_URL:
        raise SettingsError("INFLUXDB_URL", "is not set: influx init needs the InfluxDB to prepare")
    try:
        plan = InitPlan(retention_s=parse_duration(args.retention),
                        retention_policy=settings.INFLUXDB_RETENTION_POLICY or "ha_ingestor",
                        downsample=args.downsample, downsample_retention_s=parse_duration(args.downsample_retention))
    except ValueError as exc:
        print(f"ha-ingestor influx init: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if plan.downsample and not re.fullmatch(r"\d+[mhdw]", plan.downsample):
        print(f"ha-ingestor influx init: --downsample {plan.downsample!r} is not an interval like 1h",
              file=sys.stderr)
        return EXIT_USAGE
    store = wiring.store_from(settings, Registry())
    assert isinstance(store, InfluxStore)
    try:
        for line in uvloop.run(init(store, plan)):
            print(line)
    except StoreUnavailable as exc:
        print(f"ha-ingestor influx init: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench
    from .harness.influxd import influxd_binary

    if influxd_binary() is None:
        print("ha-ingestor bench: needs influxd (Debian package influxdb; ./scripts/test.sh installs it)",
              file=sys.stderr)
        return EXIT_USAGE
    logs.setup("warning", "text", [])
    # SIGTERM (e.g. from `timeout`) must still stop the processes the benchmark started: they run in
    # sessions of their own and would otherwise keep burning CPU.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if args.hops:
        from . import bench_hops
        from .harness.nats_server import nats_server_binary

        if nats_server_binary() is None:
            print("ha-ingestor bench --hops: needs nats-server (Debian package nats-server)", file=sys.stderr)
            return EXIT_USAGE
        options = bench_hops.options(args.quick)
    else:
        options = bench.Options.quick() if args.quick else bench.Options()
    for name in ("rate", "seconds", "live_rate", "live_seconds", "outage_seconds", "flat_seconds", "entities"):
        value = getattr(args, name)
        if value is not None:
            setattr(options, name, value)
    result = bench_hops.main(options, args.json) if args.hops else bench.main(options, args.json)
    return 0 if result["zero_loss"] else EXIT_FAILED


def cmd_settings(args: argparse.Namespace) -> int:
    if args.effective:
        settings = Settings.load(env_file=args.env_file)
        for name, value in settings.masked().items():
            print(f"{name}={','.join(value) if isinstance(value, list) else value}")
        return 0
    for name, default, doc in describe():
        print(f"{name:34} {default!s:24} {doc}")
    return 0


def _number(low: float, high: float, kind: type = float) -> Callable[[str], Any]:
    """An argparse type: a finite number in [low, high], else a message naming the range."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g} (got {text})")
        return value
    return parse


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="ha-ingestor", description="Capture everything Home Assistant does into "
                                  "InfluxDB (or an embedded SQLite store) without losing an event.")
    top.add_argument("--version", action="version", version=f"ha-ingestor {__version__}")
    top.add_argument("--env-file", type=Path, default=None, help="read settings from this file (default: ./.env)")
    sub = top.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="all stages in one process (the embedded default)")
    up.add_argument("--demo", action="store_true", help="also run a simulated home and ingest from it")
    up.add_argument("--demo-port", type=_number(1, 65535, int), default=0,
                    help="port of the simulated home (default: a free one)")
    up.add_argument("--demo-rate", type=_number(0.1, 100_000), default=10.0,
                    help="events per second of the simulated home")
    up.add_argument("--demo-entities", type=_number(1, 100_000, int), default=60)
    up.set_defaults(func=cmd_up)

    for name, text in (("ingestion", "websocket-ingestion: HA → outbox → enrichment (:8001)"),
                       ("enrichment", "enrichment-pipeline: events → points → store (:8002)"),
                       ("admin", "admin-api: health, stats, metrics, dashboard (:8003)")):
        sub.add_parser(name, help=text).set_defaults(func=cmd_service)

    sim = sub.add_parser("simulate", help="a simulated Home Assistant (WebSocket + REST)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=_number(1, 65535, int), default=8123)
    sim.add_argument("--token", default="", help="admin access token clients must present")
    sim.add_argument("--user-token", default="", help="an additional non-admin token")
    sim.add_argument("--rate", type=float, default=10.0, help="events per second (0 = as fast as possible)")
    sim.add_argument("--entities", type=int, default=60)
    sim.add_argument("--count", type=int, default=None, help="fire exactly this many events, report, keep serving")
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--mix", type=float, default=0.1, help="share of events that are not state changes")
    sim.add_argument("--events-log", type=Path, default=None, help="append one line per fired event")
    sim.add_argument("--state-dir", type=Path, default=None, help="keep states here across restarts")
    sim.add_argument("--paused", action="store_true", help="fire nothing until POST /sim/resume")
    sim.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sim.set_defaults(func=cmd_simulate)

    b = sub.add_parser("bench", help="measure throughput, latency, CPU, memory and drain on this machine")
    b.add_argument("--quick", action="store_true", help="a few seconds per phase (the CI smoke run)")
    b.add_argument("--hops", action="store_true", help="instead: the HTTP hop beside the NATS hop with 1, 2 and 3 "
                   "enrichment workers (live and throughput phases each, ~2 min when quiet)")
    b.add_argument("--rate", type=float, default=None, help="throughput phase events/s (20000; --hops: 0 = flat out)")
    b.add_argument("--seconds", type=float, default=None, help="throughput phase length (60; --hops 10)")
    b.add_argument("--live-rate", type=float, default=None, help="live phase events/s (1000)")
    b.add_argument("--live-seconds", type=float, default=None, help="live phase length (20; --hops 15)")
    b.add_argument("--outage-seconds", type=float, default=None, help="enrichment outage length (60)")
    b.add_argument("--flat-seconds", type=float, default=None, help="flat-out phase: seconds of firing (30)")
    b.add_argument("--entities", type=int, default=None, help="entities of the simulated home (200)")
    b.add_argument("--json", type=Path, default=None, help="also write the results as JSON to this file")
    b.set_defaults(func=cmd_bench)

    health = sub.add_parser("health", help="exit 0 when the local service answers /health with 200")
    health.add_argument("service", nargs="?", default="auto",
                        choices=["auto", "ingestion", "enrichment", "admin", "up"],
                        help="auto (default): admin-api when this process serves it, else the service that listens")
    health.add_argument("--timeout", type=float, default=5.0)
    health.set_defaults(func=cmd_health)

    ver = sub.add_parser("verify", help="check a running deployment against the migration plan's success criteria")
    ver.add_argument("--window", type=_number(5, 3600), default=None,
                     help="seconds of traffic to judge (VERIFY_WINDOW_S)")
    ver.add_argument("--baseline", type=_number(0, 1e9), default=None,
                     help="expected events per minute (VERIFY_BASELINE_PER_MIN, default 17)")
    ver.add_argument("--since", default=None, metavar="TIME",
                     help="compare HA's recorder with the store from TIME on (ISO 8601, e.g. the moment before "
                          "the old ingestor stopped: 2026-12-01T10:00:00Z; or Unix seconds; at most 7 days ago), "
                          "not only over the window: a switch then lies inside what is checked")
    ver.add_argument("--json", action="store_true", help="print the report as JSON")
    ver.set_defaults(func=cmd_verify)

    influx = sub.add_parser("influx", help="prepare InfluxDB").add_subparsers(dest="influx_command", required=True)
    ini = influx.add_parser("init", help="create the database/bucket with a retention period (idempotent)")
    ini.add_argument("--retention", default="INF", help="how long to keep points: 90d, 52w, 48h or INF (default)")
    ini.add_argument("--downsample", default="", help="v1: also keep mean/min/max of value per this interval (1h)")
    ini.add_argument("--downsample-retention", default="INF", help="how long to keep the downsampled points")
    ini.set_defaults(func=cmd_influx_init)

    st = sub.add_parser("settings", help="list every setting (or the effective values, secrets masked)")
    st.add_argument("--effective", action="store_true")
    st.set_defaults(func=cmd_settings)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except SettingsError as exc:
        print(f"ha-ingestor: setting {exc.name}: {exc.problem}", file=sys.stderr)
        return EXIT_USAGE
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    return code
