"""What ingestion needs from the next stage, whatever carries it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


def batch_body(home_id: str, events: Sequence[bytes]) -> bytes:
    """``{"home_id": ..., "events": [...]}`` from already-encoded events, without re-encoding them."""
    return b'{"home_id":"' + home_id.encode() + b'","events":[' + b",".join(events) + b"]}"


class Hop(Protocol):
    name: str

    async def send(self, home_id: str, events: Sequence[bytes]) -> None:
        """Hand a batch to enrichment; returns only once it is durable there.

        Raises HopUnavailable (retry later) or HopRejected (the batch as it is will never be taken).
        """

    async def put_registry(self, home_id: str, payload: dict[str, Any]) -> None:
        """Give enrichment the home's registry snapshot. Raises like :meth:`send`."""

    async def check(self) -> None:
        """Raise HopUnavailable unless enrichment answers its health check."""

    async def close(self) -> None: ...
