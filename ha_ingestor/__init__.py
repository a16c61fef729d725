"""HA Ingestor: capture everything Home Assistant does into InfluxDB without losing an event.

The folder listing is the data flow:

    ingestion/   source: the Home Assistant WebSocket client, the durable outbox, gap backfill
    hop/         the hop from ingestion to enrichment (HTTP, or in-process in `ha-ingestor up`)
    enrichment/  transform: events to points, the spool, dead letters
    sinks/       InfluxDB (API v1/v2) and the embedded SQLite store
    admin/       health of all, stats, metrics, dashboard
    simulator/   a Home Assistant that speaks the real protocol, for the demo, tests and benchmarks
    wiring.py    the only module that connects the stages
"""

__version__ = "0.1.0"
