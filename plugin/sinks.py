"""The IncidentSink boundary and the three outcomes every adapter maps its failures to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from plugin.config import SYSTEM_CAMERA


def is_system_incident(incident: Mapping[str, Any]) -> bool:
    """StoreSight's own health (camera "system", types `system_*`): it concerns no camera of any VMS, so a sink
    takes its system path (a server-level event, or a skip it says once) instead of looking up its camera map."""
    return incident.get("camera") == SYSTEM_CAMERA


def system_caption(incident: Mapping[str, Any]) -> str:
    """The short title of a system incident ("StoreSight analytics down"), for event captions and alarm names."""
    details = incident.get("details")
    caption = details.get("caption") if isinstance(details, Mapping) else None
    return str(caption) if caption else f"StoreSight {incident.get('type') or 'system event'}"


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


class SinkRefs(Protocol):
    """Durable references to what a sink created for an incident (a bookmark id, an event id), so the end of an
    incident updates the VMS object its start created, and a retry after a lost reply finds it instead of
    creating a second one."""

    async def get_ref(self, sink_id: str, incident_id: str) -> str | None:
        """The stored reference, if any."""
        ...

    async def put_ref(self, sink_id: str, incident_id: str, ref: str) -> None:
        """Store (or replace) the reference."""
        ...


@runtime_checkable
class SelfTestingSink(Protocol):
    """A sink that can prove its connection: `storesight vms test` calls this."""

    async def self_test(self) -> str:
        """Log in and write a clearly labelled test bookmark or event; return what was written (raise on failure)."""
        ...


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
