"""The IncidentSink boundary and the three outcomes every adapter maps its failures to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class SinkAuthError(Exception):
    """Credentials rejected: do not retry until configuration changes; surface in readiness."""


class SinkNotReady(Exception):
    """Temporarily unavailable (network, 5xx, timeout): retry with backoff."""


class SinkRejected(Exception):
    """The sink refused this delivery for good (schema, 4xx): keep it for inspection, never retry."""


@dataclass(frozen=True)
class Receipt:
    """What the sink answered (an id it assigned, or a status line)."""

    detail: str


@dataclass
class SinkHealth:
    """Last outcome, shown in /readyz."""

    ok: bool = True
    last_error: str | None = None
    auth_failed: bool = False


class IncidentSink(Protocol):
    """Delivers incident JSON documents; fed only from the outbox, keyed by the delivery key."""

    id: str
    health: SinkHealth

    async def publish(self, delivery_key: str, incident: Mapping[str, Any]) -> Receipt:
        """Deliver one incident state change; idempotent for the same delivery key."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
