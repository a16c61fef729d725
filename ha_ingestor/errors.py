"""Every error the ingestor raises on purpose, named for what happened.

    IngestorError
    ├── SettingsError            a setting is missing or malformed (the service does not start)
    ├── HomeAssistantError
    │   ├── AuthInvalid          HA said auth_invalid: fatal, retrying would count toward HA's IP ban
    │   ├── CommandFailed        HA answered a command with success=false (carries HA's error code)
    │   └── ConnectionLost       the WebSocket closed, timed out or never opened (transient)
    ├── HopError
    │   ├── HopUnavailable       the next stage did not take the batch; retry later (transient)
    │   └── HopRejected          the next stage refused the batch for good (4xx; never retried as is)
    ├── StoreError
    │   ├── StoreUnavailable     the store cannot take writes now (refused, timeout, 5xx, 429); retry later
    │   └── StoreRejected        the store refused a point for good (type conflict, parse error)
    ├── EventInvalid             an event does not have the shape of a Home Assistant event
    └── EnrichmentFailed         enrichment could not make an accepted batch durable for a reason of its own
                                 (a SQLite error, a bug): never the request's fault, so retried by the sender

Transient errors (``ConnectionLost``, ``HopUnavailable``, ``StoreUnavailable``, ``EnrichmentFailed``) are retried with
backoff and may open circuits; permanent ones (``HopRejected``, ``StoreRejected``, ``EventInvalid``)
never are: they are isolated (dead letters) so that one poison event cannot stall the stream.
"""

from __future__ import annotations


class IngestorError(Exception):
    """Base of every error raised on purpose by ha_ingestor."""


class SettingsError(IngestorError):
    """A setting is missing or malformed; ``name`` is the setting, the message says what is wrong."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


class HomeAssistantError(IngestorError):
    """Something went wrong talking to Home Assistant."""


class AuthInvalid(HomeAssistantError):
    """Home Assistant rejected the access token."""


class CommandFailed(HomeAssistantError):
    """Home Assistant answered a command with ``success: false``."""

    def __init__(self, command: str, code: str, message: str) -> None:
        super().__init__(f"{command} failed: {code}: {message}")
        self.command = command
        self.code = code
        self.message = message


class ConnectionLost(HomeAssistantError):
    """The WebSocket to Home Assistant is gone (closed, timed out, refused)."""


class HopError(IngestorError):
    """The hop between ingestion and enrichment failed."""


class HopUnavailable(HopError):
    """Enrichment did not take the batch now (connection error, timeout, 5xx, 503 spool full)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class HopRejected(HopError):
    """Enrichment refused the batch for good (4xx); ``status`` is the HTTP status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason


class StoreError(IngestorError):
    """The store failed."""


class StoreUnavailable(StoreError):
    """The store cannot take writes now; ``retry_after`` is its hint in seconds, if it gave one."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class StoreRejected(StoreError):
    """The store refused a write for good; ``reason`` is what it said."""


class EventInvalid(IngestorError):
    """An event is not a well-formed Home Assistant event; ``field`` names what was wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class EnrichmentFailed(IngestorError):
    """Making an accepted batch durable failed for a reason of enrichment's own (a SQLite error, a bug),
    whatever the original exception's type: a ValueError deep in a write is not a malformed request."""
