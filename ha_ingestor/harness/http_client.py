"""A raw HTTP request for tests: any method, any header, a body sent whole or chunked, the answer's headers."""

from __future__ import annotations

import http.client
from collections.abc import Iterable, Mapping
from typing import Any

import orjson


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
