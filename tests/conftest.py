"""Shared fixtures: a private influxd for the whole run, a fresh database per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from ha_ingestor.harness.influxd import Influxd

_db_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    """The real InfluxDB 1.6 server from Debian's package, on free ports, in a temporary directory."""
    server = Influxd(tmp_path_factory.mktemp("influxd")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def influx_db(influxd: Influxd) -> Iterator[str]:
    """A database of its own for one test (created on first write by the writer, dropped after)."""
    name = f"test_{next(_db_numbers)}"
    try:
        yield name
    finally:
        if influxd.ping():
            influxd.drop_database(name)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
