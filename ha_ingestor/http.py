"""HTTP plumbing shared by the three services: the request guard, JSON responses, the server runner.

The guard is plain ASGI and runs before any route: it enforces the body limit (413, whether or not the
client sent Content-Length), bounds JSON nesting (400 past ``MAX_JSON_DEPTH`` levels) and, when
``API_TOKEN`` is set, the bearer token on every path but ``/health`` (401, compared in constant time).
Routes therefore never see an oversized, absurdly nested or unauthenticated request.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hmac
import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, MutableMapping
from datetime import UTC
from typing import Annotated, Any

import orjson
import uvicorn
from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from .errors import SettingsError
from .schemas import ErrorBody

# Ids of kept rows to replay (dead letters, refused events): SQLite row ids; 2**53 keeps them exact in every
# JSON client (and no table gets near it).
RowIds = Annotated[list[Annotated[int, Field(ge=1, le=2**53)]] | None,
                   Body(max_length=1000, description="ids to replay (at most 1000); all when absent")]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/health"})

# Home Assistant's deepest events (attributes holding lists of dicts) are about a dozen levels inside a batch;
# 64 leaves room for any real payload and keeps recursive code downstream far from Python's stack limit.
MAX_JSON_DEPTH = 64

_KEEP_STRUCTURE = bytes(sorted(set(range(256)) - set(b'"[]{}')))
# Depth does not depend on the kind of bracket: arrays become objects, so one level of innermost pairs is
# one bytes.replace of "{}" (a regex alternation over both kinds cost 5× more).
_BRACKETS_AS_BRACES = bytes.maketrans(b"[]", b"{}")


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when ``body`` (JSON) nests arrays/objects more than ``limit`` levels deep.

    Linear and in C (about 1.5 µs per event of a batch): escapes and string contents are dropped, so only
    the brackets remain, and each pass removes exactly one level of innermost pairs. What never closes
    (malformed JSON) counts by its run of unclosed openers, so ``[[[[...`` is refused here too; otherwise
    the JSON parser says what is wrong.
    """
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = body.translate(_BRACKETS_AS_BRACES, _KEEP_STRUCTURE)
    # Strings without brackets are adjacent quote pairs now; removing pairs left to right stays in step
    # with the strings until the first string holding a bracket, whose opening quote is left over. Only
    # then are strings cut out one by one (5× slower; HA's attributes rarely hold brackets in strings).
    skeleton = structure.replace(b'""', b"")
    if b'"' in skeleton:
        skeleton = b"".join(structure.split(b'"')[::2])
    for level in range(limit):
        if not skeleton:
            return False
        inner = skeleton.replace(b"{}", b"")
        if len(inner) == len(skeleton):
            return b"{" * (limit - level + 1) in skeleton
        skeleton = inner
    return bool(skeleton)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "malformed request (JSON, Content-Length, nesting over 64 levels)"},
    401: {"model": ErrorBody, "description": "API_TOKEN is set and the bearer token is missing or wrong"},
    413: {"model": ErrorBody, "description": "body over MAX_BODY_BYTES"},
    422: {"model": ErrorBody, "description": "invalid input; `field` names what is wrong"},
}


# A Retry-After is honoured up to this (a wrong header must not stop writes or forwarding for hours).
MAX_RETRY_AFTER_S = 300.0


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds an answer's ``Retry-After`` asks for (a number or an HTTP date), at most MAX_RETRY_AFTER_S;
    None when there is none, or it is neither (a proxy's "soon" is no hint, not an error)."""
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp() - time.time()
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds)) if math.isfinite(seconds) else None


def json_response(content: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json", headers=headers)


def error(status: int, message: str, **extra: Any) -> Response:
    return json_response({"error": message, **extra}, status)


async def _send_error(send: Send, status: int, message: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = orjson.dumps({"error": message})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Body size limit and bearer-token authentication in front of an ASGI app."""

    def __init__(self, app: ASGIApp, *, max_body: int, token: str = "", open_paths: frozenset[str] = OPEN_PATHS,
                 max_depth: int = MAX_JSON_DEPTH):
        self.app = app
        self.max_body = max_body
        self.max_depth = max_depth
        self.token = token.encode()
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.token and scope["path"] not in self.open_paths and not self._authorized(scope):
            await _send_error(send, 401, "missing or wrong bearer token (Authorization: Bearer <API_TOKEN>)",
                              [(b"www-authenticate", b'Bearer realm="ha-ingestor"')])
            return
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await _send_error(send, 400, "malformed Content-Length header")
                    return
        if length is not None and length > self.max_body:
            await _send_error(send, 413, f"body of {length} bytes is over the limit of {self.max_body} bytes")
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        # Read the whole body here, so a chunked body over the limit is refused before the app runs.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _send_error(send, 413, f"body is over the limit of {self.max_body} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if json_too_deep(body, self.max_depth):
            await _send_error(send, 400, f"JSON nested deeper than {self.max_depth} levels")
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.token)
        return False


def make_app(title: str, description: str) -> FastAPI:
    """A FastAPI app whose errors are JSON ``{"error": ...}`` and never leak a traceback."""
    app = FastAPI(title=title, description=description, version=_version(), docs_url="/docs", redoc_url=None,
                  responses=ERROR_RESPONSES)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error(422, f"{where}: {first.get('msg', 'invalid')}", field=where)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        # Keep the exception's headers: a 405 must say which methods are allowed (Allow).
        return json_response({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error serving %s %s", request.method, request.url.path)
        return error(500, "internal error (logged)")

    return app


def _version() -> str:
    from . import __version__

    return __version__


class Server(uvicorn.Server):
    """A uvicorn server that leaves signals to the caller, so several can share one process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def server(app: ASGIApp, host: str, port: int) -> Server:
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="off",
        http="httptools", ws="none", timeout_graceful_shutdown=30, server_header=False,
    )
    return Server(config)


async def serve_until(servers: list[Server], stop: asyncio.Event) -> None:
    """Run the servers until ``stop`` is set, then shut them down gracefully (in-flight requests finish)."""
    tasks = [asyncio.create_task(s.serve(), name=f"http:{s.config.port}") for s in servers]
    try:
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
            if task is not stopper:
                raise OSError(f"HTTP server on port {task.get_name()} stopped by itself")
    finally:
        for s in servers:
            s.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        stopper.cancel()


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens there (connections lingering in TIME_WAIT do not count, as for uvicorn).
    ``host`` may be an IPv4 or IPv6 address or a name; one that does not resolve raises SettingsError."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise SettingsError("BIND_HOST", f"{host!r} is not an address of this machine ({exc.strerror})") from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError:
            return False
    return True
