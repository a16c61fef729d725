"""One split stack with API_TOKEN and a small body limit, shared by the security tests, and a raw HTTP helper."""

from __future__ import annotations

import http.client
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson
import pytest

from ha_ingestor.harness.procs import Stack

TOKEN = "sec-api-token-4b7e19c2d05f"
MAX_BODY = 64 * 1024


@pytest.fixture(scope="session")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("secured"), sim_args=["--rate", "10", "--entities", "20"],
                  extra_env={"API_TOKEN": TOKEN, "MAX_BODY_BYTES": str(MAX_BODY)})
    try:
        stack.start("simulator", "enrichment", "ingestion", "admin")
        yield stack
    finally:
        stack.stop()


def request(base: str, method: str, path: str, *, token: str | None = None, auth: str | None = None,
            body: bytes | Iterable[bytes] | None = None, headers: Mapping[str, str] | None = None
            ) -> tuple[int, Any, dict[str, str]]:
    """(status, JSON or text, headers) of one request; ``body`` as an iterable is sent chunked."""
    host, _, port = base.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    if auth is not None:
        hdrs["Authorization"] = auth
    if body is not None:
        hdrs.setdefault("Content-Type", "application/json")
    try:
        if body is None or isinstance(body, bytes):
            conn.request(method, path, body=body, headers=hdrs)
        else:
            conn.request(method, path, body=body, headers=hdrs, encode_chunked=True)
        resp = conn.getresponse()
        raw = resp.read()
        answer = (resp.status, raw, {k.lower(): v for k, v in resp.getheaders()})
    finally:
        conn.close()
    try:
        return answer[0], orjson.loads(answer[1]), answer[2]
    except orjson.JSONDecodeError:
        return answer[0], answer[1].decode("utf-8", "replace"), answer[2]
