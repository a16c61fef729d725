"""Run the simulated Home Assistant: as `ha-ingestor simulate`, or inside `ha-ingestor up --demo`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import WSCloseCode, web

from .home import Home
from .server import Simulator

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SimOptions:
    host: str = "127.0.0.1"
    port: int = 8123
    token: str = ""
    user_token: str = ""
    rate: float = 10.0
    entities: int = 60
    count: int | None = None
    seed: int = 1
    mix: float = 0.1
    events_log: Path | None = None
    state_dir: Path | None = None
    report: bool = False
    paused: bool = False


@contextlib.asynccontextmanager
async def running(options: SimOptions) -> AsyncIterator[Simulator]:
    """Serve the simulator and fire events until the context ends."""
    sim = Simulator(
        Home(options.entities, options.seed), options.token, user_token=options.user_token, rate=options.rate,
        count=options.count, mix=options.mix, events_log=options.events_log, state_dir=options.state_dir,
        report_to_stdout=options.report,
    )
    sim.paused = options.paused
    runner = web.AppRunner(sim.app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, options.host, options.port)
    await site.start()
    log.info("simulated Home Assistant serving", extra={
        "url": f"http://{options.host}:{options.port}", "rate": options.rate, "entities": len(sim.home.entities),
        "count": options.count})
    tasks = [asyncio.create_task(sim.fire_loop(), name="sim-fire"),
             asyncio.create_task(sim.recorder(), name="sim-recorder")]
    try:
        yield sim
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Like HA on stop: close every websocket (code 1001 "going away") instead of waiting for clients to hang up.
        await asyncio.gather(*(conn.ws.close(code=WSCloseCode.GOING_AWAY) for conn in list(sim.connections)),
                             return_exceptions=True)
        await runner.cleanup()
        sim.close()


async def serve(options: SimOptions, stop: asyncio.Event) -> None:
    async with running(options):
        await stop.wait()
