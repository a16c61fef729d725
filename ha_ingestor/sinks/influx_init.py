"""``ha-ingestor influx init``: create the database or bucket with a retention period; idempotent.

v1 (InfluxDB 1.x): the database, a retention policy (``INFLUXDB_RETENTION_POLICY``, default ``ha_ingestor``)
made the database's default, and optionally a continuous query that downsamples the numeric ``value``
of every ``states`` series (mean/min/max per interval) into a long-lived retention policy.
v2 (InfluxDB 2.x): the bucket in ``INFLUXDB_ORG`` through the buckets API, with its retention rule.

Running it twice changes nothing: each step reads what exists first and only creates or alters what
differs. Every step says what it did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import StoreUnavailable
from .influx import InfluxStore

_DURATION = re.compile(r"^(INF|0|\d+[hdw])$")


def parse_duration(text: str) -> int:
    """'365d' / '12w' / '48h' / 'INF' / '0' → seconds (0 = forever). Raises ValueError."""
    value = text.strip()
    if not _DURATION.match(value):
        raise ValueError(f"{text!r} is not a duration like 90d, 52w, 48h or INF")
    if value in ("INF", "0"):
        return 0
    return int(value[:-1]) * {"h": 3600, "d": 86400, "w": 7 * 86400}[value[-1]]


def influxql_duration(seconds: int) -> str:
    if seconds == 0:
        return "INF"
    return f"{seconds // 3600}h"


@dataclass(frozen=True)
class InitPlan:
    retention_s: int
    retention_policy: str = "ha_ingestor"
    downsample: str = ""  # interval, e.g. "1h"; empty = none (v1 only)
    downsample_retention_s: int = 0
    downsample_policy: str = "ha_ingestor_downsampled"


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def _q(store: InfluxStore, q: str) -> list[dict[str, Any]]:
    result = await store.query(q, method="POST", database="")
    out: list[dict[str, Any]] = []
    for statement in result.get("results", []):
        if "error" in statement:
            raise StoreUnavailable(f"InfluxDB refused {q.split(' ')[0]} …: {statement['error']}")
        out.extend(statement.get("series", []) or [])
    return out


async def init_v1(store: InfluxStore, plan: InitPlan) -> list[str]:
    db = store.config.database
    done: list[str] = []
    databases = {row[0] for series in await _q(store, "SHOW DATABASES") for row in series.get("values", [])}
    if db in databases:
        done.append(f"database {db}: exists")
    else:
        await _q(store, f"CREATE DATABASE {_quote(db)}")
        done.append(f"database {db}: created")

    policies = {row[0]: row for series in await _q(store, f"SHOW RETENTION POLICIES ON {_quote(db)}")
                for row in series.get("values", [])}
    for name, seconds, default in ((plan.retention_policy, plan.retention_s, True),
                                   *(((plan.downsample_policy, plan.downsample_retention_s, False),)
                                     if plan.downsample else ())):
        duration = influxql_duration(seconds)
        wanted = "0s" if seconds == 0 else f"{seconds // 3600}h0m0s"
        row = policies.get(name)
        if row is None:
            await _q(store, f"CREATE RETENTION POLICY {_quote(name)} ON {_quote(db)} DURATION {duration} "
                            f"REPLICATION 1{' DEFAULT' if default else ''}")
            done.append(f"retention policy {name}: created ({duration}{', default' if default else ''})")
        elif row[1] != wanted or (default and not row[-1]):
            await _q(store, f"ALTER RETENTION POLICY {_quote(name)} ON {_quote(db)} DURATION {duration}"
                            f"{' DEFAULT' if default else ''}")
            done.append(f"retention policy {name}: altered to {duration}{', default' if default else ''}")
        else:
            done.append(f"retention policy {name}: exists ({duration})")

    if plan.downsample:
        cq = f"ha_ingestor_states_{plan.downsample}"
        existing = {row[0] for series in await _q(store, "SHOW CONTINUOUS QUERIES")
                    if series.get("name") == db for row in series.get("values", [])}
        if cq in existing:
            done.append(f"continuous query {cq}: exists")
        else:
            target = f"{_quote(db)}.{_quote(plan.downsample_policy)}.{_quote('states_' + plan.downsample)}"
            source = f"{_quote(db)}.{_quote(plan.retention_policy)}.{_quote('states')}"
            await _q(store, f"CREATE CONTINUOUS QUERY {_quote(cq)} ON {_quote(db)} BEGIN "
                            f'SELECT mean("value") AS "value", min("value") AS "min", max("value") AS "max" '
                            f"INTO {target} FROM {source} GROUP BY time({plan.downsample}), * END")
            done.append(f"continuous query {cq}: created (mean/min/max of value per {plan.downsample} "
                        f"into {plan.downsample_policy}.states_{plan.downsample})")
    return done


async def init_v2(store: InfluxStore, plan: InitPlan) -> list[str]:
    """Bucket through /api/v2/buckets (InfluxDB 2.x): find the org, then create or update the bucket."""
    config = store.config
    headers = {"Authorization": f"Token {config.token}", "Content-Type": "application/json"}
    status, body, _ = await store._request("GET", f"{config.url}/api/v2/orgs", params={"org": config.org},
                                           headers=headers)
    if status != 200:
        raise StoreUnavailable(f"cannot look up org {config.org!r}: HTTP {status}: {body[:200]!r}")
    orgs = orjson.loads(body).get("orgs") or []
    if not orgs:
        raise StoreUnavailable(f"org {config.org!r} does not exist (setting INFLUXDB_ORG)")
    org_id = orgs[0]["id"]
    rules = [{"type": "expire", "everySeconds": plan.retention_s}] if plan.retention_s else []
    status, body, _ = await store._request("GET", f"{config.url}/api/v2/buckets",
                                           params={"name": config.database, "orgID": org_id}, headers=headers)
    if status != 200:
        raise StoreUnavailable(f"cannot list buckets: HTTP {status}: {body[:200]!r}")
    buckets = orjson.loads(body).get("buckets") or []
    if not buckets:
        payload = orjson.dumps({"orgID": org_id, "name": config.database, "retentionRules": rules})
        status, body, _ = await store._request("POST", f"{config.url}/api/v2/buckets", params={}, data=payload,
                                               headers=headers)
        if status != 201:
            raise StoreUnavailable(f"cannot create bucket: HTTP {status}: {body[:200]!r}")
        return [f"bucket {config.database}: created (retention {plan.retention_s or 'forever'} s)"]
    bucket = buckets[0]
    current = [r.get("everySeconds") for r in bucket.get("retentionRules") or [] if r.get("type") == "expire"]
    if (current[0] if current else 0) == plan.retention_s:
        return [f"bucket {config.database}: exists (retention {plan.retention_s or 'forever'} s)"]
    payload = orjson.dumps({"retentionRules": rules})
    status, body, _ = await store._request("PATCH", f"{config.url}/api/v2/buckets/{bucket['id']}", params={},
                                           data=payload, headers=headers)
    if status != 200:
        raise StoreUnavailable(f"cannot update bucket retention: HTTP {status}: {body[:200]!r}")
    return [f"bucket {config.database}: retention changed to {plan.retention_s or 'forever'} s"]


async def init(store: InfluxStore, plan: InitPlan) -> list[str]:
    try:
        return await (init_v1(store, plan) if store.config.api == "v1" else init_v2(store, plan))
    finally:
        await store.close()
