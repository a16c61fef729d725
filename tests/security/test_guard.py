"""API_TOKEN on every endpoint of the three services, the body limit and the nesting bound, on the real processes."""

from __future__ import annotations

import inspect
import socket
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ha_ingestor.harness.http_client import request
from ha_ingestor.harness.procs import Stack
from ha_ingestor.http import MAX_JSON_DEPTH, Guard, json_too_deep
from ha_ingestor.settings import Settings

SERVICES = ("ingestion", "enrichment", "admin")


def token(stack: Stack) -> str:
    return stack.extra_env["API_TOKEN"]


def bad_auth(right: str) -> tuple[str | None, ...]:
    """Missing, wrong, wrong by one character (same length), the wrong scheme, an empty bearer."""
    return None, "Bearer wrong", f"Bearer {right[:-1]}x", f"Basic {right}", "Bearer ", f"Token {right}"


def operations(stack: Stack, service: str) -> list[tuple[str, str]]:
    status, spec, _ = request(stack.url(service), "GET", "/openapi.json", token=token(stack))
    assert status == 200
    ops = [(method.upper(), path) for path, item in spec["paths"].items() for method in item]
    return [*ops, ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/no-such-path")]


def open_path(service: str, path: str) -> bool:
    return path == "/health" or (service == "admin" and path == "/")


@pytest.mark.parametrize("service", SERVICES)
def test_every_endpoint_but_health_answers_401_without_the_right_token(secured: Stack, service: str) -> None:
    base = secured.url(service)
    ops = operations(secured, service)
    assert len(ops) >= 7
    for method, path in ops:
        body = b"{}" if method in ("POST", "PUT") else None
        for auth in bad_auth(token(secured)):
            status, answer, headers = request(base, method, path, auth=auth, body=body)
            if open_path(service, path):
                assert status != 401, (method, path, auth)
            else:
                assert status == 401, (method, path, auth)
                assert answer == {"error": "missing or wrong bearer token (Authorization: Bearer <API_TOKEN>)"}
                assert headers["www-authenticate"].startswith("Bearer")
        if method == "GET":  # the right token opens it (writes are left alone: they would change the stack)
            assert request(base, method, path, token=token(secured))[0] != 401, (method, path)


def test_the_token_is_compared_in_constant_time() -> None:
    # Timing cannot be measured reliably on a shared machine; the guard must use hmac.compare_digest.
    source = inspect.getsource(Guard._authorized)
    assert source.count("self.token") == source.count("hmac.compare_digest(") == 1


def test_services_listen_on_loopback_only_by_default(secured: Stack) -> None:
    assert Settings.from_values({}).BIND_HOST == "127.0.0.1"
    ports = {secured.ingestion_port, secured.enrichment_port, secured.admin_port}
    listening = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port = local.split(":")
        if state == "0A" and int(port, 16) in ports:  # 0A: LISTEN
            listening[int(port, 16)] = socket.inet_ntoa(bytes.fromhex(address)[::-1])
    assert listening == dict.fromkeys(ports, "127.0.0.1")


@pytest.mark.parametrize("service,path", [("enrichment", "/events/batch"), ("admin", "/deadletters/replay"),
                                          ("ingestion", "/status")])
def test_a_body_over_the_limit_gets_413_with_or_without_content_length(secured: Stack, service: str,
                                                                       path: str) -> None:
    base = secured.url(service)
    big = b'{"events":[' + b" " * int(secured.extra_env["MAX_BODY_BYTES"]) + b"]}"
    status, answer, _ = request(base, "POST", path, token=token(secured), body=big)
    assert status == 413 and "limit" in answer["error"]
    chunks = (big[i:i + 8192] for i in range(0, len(big), 8192))  # chunked: the size is not announced
    status, answer, _ = request(base, "POST", path, token=token(secured), body=chunks)
    assert status == 413 and "limit" in answer["error"]
    assert request(base, "GET", "/health")[0] == 200


def nested(depth: int) -> dict[str, object]:
    value: object = "deep"
    for _ in range(depth):
        value = {"level": value}
    return {"event_type": "custom_nested", "time_fired": "2026-01-01T00:00:00+00:00", "data": value,
            "context": {"id": "01NESTED"}}


def test_deep_json_gets_400_and_never_crashes_a_service(secured: Stack) -> None:
    enrichment, admin = secured.url("enrichment"), secured.url("admin")
    # A batch adds two levels (the batch object, its list) around each event.
    too_deep = orjson.dumps({"events": [nested(MAX_JSON_DEPTH)]})
    status, answer, _ = request(enrichment, "POST", "/events/batch", token=token(secured), body=too_deep)
    assert status == 400 and answer["error"] == f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    for hostile in (b"[" * 60_000, b'{"a":' * 10_000 + b"1" + b"}" * 10_000):  # both under the 64 KiB limit
        for base, path in ((enrichment, "/events/batch"), (enrichment, "/events"), (admin, "/deadletters/replay"),
                           (enrichment, "/registry")):
            method = "PUT" if path == "/registry" else "POST"
            status, answer, _ = request(base, method, path, token=token(secured), body=hostile)
            assert status == 400, (path, status, answer)
    # Realistic depth is taken; brackets inside strings do not count.
    fine = orjson.dumps({"events": [nested(12) | {"origin": "[[[[[[[[[[" * 20}]})
    status, answer, _ = request(enrichment, "POST", "/events/batch", token=token(secured), body=fine)
    assert status == 200 and answer["stored"] == 1
    for service in SERVICES:
        assert request(secured.url(service), "GET", "/health")[0] == 200


def test_json_depth_measure_is_exact() -> None:
    assert not json_too_deep(b"[" * 64 + b"]" * 64, 64)
    assert json_too_deep(b"[" * 65 + b"]" * 65, 64)
    assert not json_too_deep(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "b": "\\"[[[["}', 2)
    assert json_too_deep(b'{"a": [{"b": [{"c": 1}]}]}', 4) and not json_too_deep(b'{"a": [{"b": [{"c": 1}]}]}', 5)
    assert not json_too_deep(b'{"a": "\\\\"}', 1)
    assert not json_too_deep(b"[}", 1)  # malformed: left to the parser, which says so


_TEXT = st.text(alphabet='ab"\\[]{}é', max_size=6)
_JSON = st.recursive(st.none() | st.integers(-1000, 1000) | _TEXT,
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
                     max_leaves=30)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@given(_JSON, st.integers(1, 8))
@settings(max_examples=400, deadline=None)
def test_json_depth_measure_agrees_with_the_parsed_value(value: object, limit: int) -> None:
    # Strings full of quotes, backslashes and brackets take the slow path, plain ones the fast one.
    assert json_too_deep(orjson.dumps(value), limit) == (_depth(value) > limit)
