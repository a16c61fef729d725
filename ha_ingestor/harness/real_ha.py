"""A real Home Assistant Core (and the influxd its own integration writes to), from ../shared/real-ha.

:func:`start_real_ha` installs the harness when it is missing (``install.sh``), starts HA and influxd on
free ports with a fresh configuration and a new long-lived token (``start.sh --fresh``) and returns a
:class:`RealHA`; :meth:`RealHA.stop` stops both (``stop.sh``). Everything generated lives in
``REAL_HA_DIR`` (default ``~/.cache/ha-ingestor/real-ha``, so the ~850 MB venv is built once).

:func:`read_points` and :func:`compare_points` compare what two databases hold, point by point: the
real-HA tests use them to hold HA Ingestor's ``homeassistant`` schema against HA's own integration.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .ports import free_port
from .shared import shared_dir

DEFAULT_DIR = Path.home() / ".cache" / "ha-ingestor" / "real-ha"

# (measurement, sorted tags, time in ns) → fields, numbers as float.
PointKey = tuple[str, tuple[tuple[str, str], ...], int]


def harness_dir() -> Path:
    """The real-ha scripts: ``$HA_INGESTOR_SHARED/real-ha`` or ``../shared/real-ha``."""
    shared = shared_dir()
    if shared is None:
        raise RuntimeError("../shared/real-ha not found: set HA_INGESTOR_SHARED to the folder holding real-ha/")
    return shared / "real-ha"


def real_ha_dir() -> Path:
    return Path(os.environ.get("REAL_HA_DIR") or DEFAULT_DIR)


@dataclass
class RealHA:
    """A running HA + influxd. ``url``/``ws_url``/``token`` for HA; ``influx_url``/``native_db`` for its writer."""

    directory: Path
    port: int
    influx_port: int
    token: str = ""
    native_db: str = "ha_native"
    log: Path = field(default_factory=lambda: Path(os.devnull))
    hass_pid: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/websocket"

    @property
    def influx_url(self) -> str:
        return f"http://127.0.0.1:{self.influx_port}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "REAL_HA_DIR": str(self.directory), "REAL_HA_PORT": str(self.port),
                "REAL_HA_INFLUX_PORT": str(self.influx_port), "REAL_HA_INFLUX_RPC_PORT": str(free_port()),
                "REAL_HA_INFLUX_DB": self.native_db}

    def _script(self, name: str, *args: str) -> str:
        with self.log.open("ab") as log:
            done = subprocess.run([str(harness_dir() / name), *args], env=self.env(), stdout=subprocess.PIPE,
                                  stderr=log, stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"real-ha {name} {' '.join(args)} failed with {done.returncode}; see {self.log}")
        return done.stdout.decode()

    def start(self, *, fresh: bool = False) -> RealHA:
        """Start HA and influxd (``fresh``: a new configuration, onboarding and token)."""
        out = self._script("start.sh", *(["--fresh"] if fresh else []))
        info = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        self.token = Path(info["HA_TOKEN_FILE"]).read_text().strip()
        self.hass_pid = int(info.get("HASS_PID") or 0)
        return self

    def stop(self) -> None:
        """Stop HA, then influxd (stop.sh signals only the processes of this directory)."""
        self._script("stop.sh")

    def restart(self) -> None:
        """Stop and start again, keeping configuration, recorder, token and the ha_native data."""
        self.stop()
        self.start()

    def api(self, path: str, payload: Any = None) -> Any:
        """GET (or POST ``payload``) HA's REST API with the token."""
        data = None if payload is None else orjson.dumps(payload)
        request = urllib.request.Request(self.url + path, data=data, method="GET" if data is None else "POST",
                                         headers={"Authorization": f"Bearer {self.token}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            return orjson.loads(resp.read())


def install(log: Path) -> None:
    """Run install.sh unless the venv already holds ``hass`` (it then needs no network)."""
    if (real_ha_dir() / "venv" / "bin" / "hass").exists():
        return
    with log.open("ab") as out:
        env = {**os.environ, "REAL_HA_DIR": str(real_ha_dir())}
        subprocess.run([str(harness_dir() / "install.sh")], env=env, stdout=out, stderr=out,
                       stdin=subprocess.DEVNULL, check=True)


def start_real_ha(log: Path) -> RealHA:
    """Install when needed, then a fresh HA and influxd on free ports."""
    real_ha_dir().mkdir(parents=True, exist_ok=True)
    install(log)
    return RealHA(real_ha_dir(), free_port(), free_port(), log=log).start(fresh=True)


# ---------------------------------------------------------------------------------------- comparing


def query(url: str, q: str, db: str) -> dict[str, Any]:
    params = urllib.parse.urlencode({"q": q, "db": db, "epoch": "ns"})
    with urllib.request.urlopen(f"{url}/query?{params}", timeout=120) as resp:
        result: dict[str, Any] = orjson.loads(resp.read())
    return result


def _normal(value: Any) -> Any:
    # InfluxDB's JSON shows a float without a fraction as an integer (1000000.0 → 1000000).
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def read_points(url: str, db: str, start_ns: int, end_ns: int) -> dict[PointKey, dict[str, Any]]:
    """Every point of ``db`` with start_ns <= time <= end_ns, as {(measurement, tags, time): fields}."""
    q = f"SELECT * FROM /.*/ WHERE time >= {start_ns} AND time <= {end_ns} GROUP BY *"
    out: dict[PointKey, dict[str, Any]] = {}
    for statement in query(url, q, db).get("results", []):
        if "error" in statement:
            raise RuntimeError(statement["error"])
        for series in statement.get("series") or []:
            tags = tuple(sorted((k, v) for k, v in (series.get("tags") or {}).items() if v != ""))
            columns = series["columns"]
            for values in series["values"]:
                row = dict(zip(columns, values, strict=True))
                time_ns = int(row.pop("time"))
                out[(series["name"], tags, time_ns)] = {k: _normal(v) for k, v in row.items() if v is not None}
    return out


def count_points(url: str, db: str, start_ns: int, end_ns: int) -> int:
    return len(read_points(url, db, start_ns, end_ns))


@dataclass
class Comparison:
    """Point-by-point comparison of an expected and an actual database."""

    compared: int = 0
    equal: int = 0
    only_expected: list[PointKey] = field(default_factory=list)
    only_actual: list[PointKey] = field(default_factory=list)
    differing: list[tuple[PointKey, dict[str, Any], dict[str, Any]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.only_expected or self.only_actual or self.differing)

    def summary(self) -> str:
        return (f"points compared: {self.compared}, equal: {self.equal}, differing: {len(self.differing)}, "
                f"only in expected: {len(self.only_expected)}, only in actual: {len(self.only_actual)}")

    def details(self, limit: int = 10) -> str:
        lines = [self.summary()]
        for key, want, got in self.differing[:limit]:
            diff = {k: (want.get(k), got.get(k)) for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k)}
            lines.append(f"  differs {key}: {diff}")
        lines += [f"  only expected {key}" for key in self.only_expected[:limit]]
        lines += [f"  only actual {key}" for key in self.only_actual[:limit]]
        return "\n".join(lines)


def compare_points(expected: Mapping[PointKey, Mapping[str, Any]],
                   actual: Mapping[PointKey, Mapping[str, Any]],
                   ignore_tags: Iterable[str] = ()) -> Comparison:
    """Compare two {(measurement, tags, time): fields} maps (``ignore_tags`` dropped from both keys first)."""
    dropped = frozenset(ignore_tags)

    def strip(points: Mapping[PointKey, Mapping[str, Any]]) -> dict[PointKey, Mapping[str, Any]]:
        return {(m, tuple(t for t in tags if t[0] not in dropped), ns): f for (m, tags, ns), f in points.items()}

    want, got = strip(expected), strip(actual)
    result = Comparison(compared=len(set(want) | set(got)))
    for key in sorted(set(want) | set(got)):
        if key not in got:
            result.only_expected.append(key)
        elif key not in want:
            result.only_actual.append(key)
        elif dict(want[key]) == dict(got[key]):
            result.equal += 1
        else:
            result.differing.append((key, dict(want[key]), dict(got[key])))
    return result


# ------------------------------------------------------------------------------ HA's own function

_EVENT_TO_JSON = r'''
import json, sys
from homeassistant.components.influxdb import INFLUX_SCHEMA, _generate_event_to_json
from homeassistant.core import Event, State
from homeassistant.util import dt as dt_util

request = json.load(sys.stdin)
convert = _generate_event_to_json(INFLUX_SCHEMA(request["conf"]))
out = []
for raw in request["states"]:
    when = dt_util.parse_datetime(raw["last_updated"])
    state = State(raw["entity_id"], raw["state"], raw["attributes"], last_changed=when, last_updated=when)
    event = Event("state_changed", {"entity_id": raw["entity_id"], "new_state": state},
                  time_fired_timestamp=state.last_updated_timestamp)
    try:
        point = convert(event)
    except Exception as exc:  # noqa: BLE001 - reported, the caller decides
        out.append({"error": repr(exc)})
        continue
    if point is None:
        out.append(None)
        continue
    # Tags as the influxdb client renders them (str(), empty ones dropped); fields with their type.
    tags = {str(k): str(v) for k, v in point["tags"].items() if v is not None and str(v) != ""}
    fields = {k: [type(v).__name__, v] for k, v in point["fields"].items()}
    out.append({"measurement": str(point["measurement"]), "tags": tags, "fields": fields,
                "time_ns": int(round(point["time"].timestamp() * 1e6)) * 1000})
json.dump(out, sys.stdout)
'''


def ha_event_to_json(conf: Mapping[str, Any], states: list[Mapping[str, Any]]) -> list[Any]:
    """Run HA's own influxdb ``event_to_json`` (in the real-ha venv) on ``states``; its points as JSON.

    ``conf`` is the ``influxdb:`` YAML as a dict. Each result is None (skipped), {"error": ...} or
    {"measurement", "tags", "fields": {key: [python type name, value]}, "time_ns"}.
    """
    python = real_ha_dir() / "venv" / "bin" / "python"
    if not python.exists():
        raise RuntimeError(f"{python} missing: run ../shared/real-ha/install.sh")
    done = subprocess.run([str(python), "-c", _EVENT_TO_JSON], input=orjson.dumps({"conf": conf, "states": states}),
                          capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"HA's event_to_json failed: {done.stderr.decode()[-2000:]}")
    result: list[Any] = json.loads(done.stdout)  # not orjson: HA's points may hold NaN
    return result
