"""Sinks: where points end up — InfluxDB (API v1 or v2) or the embedded SQLite store."""
