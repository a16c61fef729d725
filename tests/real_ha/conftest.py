"""The real Home Assistant, once per test session: installed when missing, on free ports, stopped after.

``real_ha`` yields a :class:`ha_ingestor.harness.real_ha.RealHA`: ``url``, ``ws_url``, ``token``,
``influx_url`` and ``native_db`` (where HA's own influxdb integration writes), ``restart()``, ``api()``.
Tests marked ``restarts_ha`` run last, so that no other test meets a Home Assistant that is still starting.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ha_ingestor.harness.real_ha import RealHA, install, real_ha_dir, start_real_ha


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "restarts_ha: restarts the shared Home Assistant (runs last)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("restarts_ha") is not None)  # stable: order kept


@pytest.fixture(scope="session")
def real_ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealHA]:
    log = tmp_path_factory.mktemp("real-ha") / "real-ha.log"
    ha = start_real_ha(log)
    try:
        yield ha
    finally:
        ha.stop()


@pytest.fixture(scope="session")
def real_ha_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HA's venv, installed when missing (for tests that run HA's code without a running HA)."""
    install(tmp_path_factory.mktemp("real-ha-install") / "install.log")
    return real_ha_dir() / "venv"
