"""What every sink module shares: its registry entry (SinkSpec), reading incident times and boxes, TLS settings."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from plugin.config.base import literal_key
from plugin.config.sinks import SinkConfigBase
from plugin.errors import SinkAuthError, SinkNotReady, SinkRejected
from plugin.protocols import IncidentSink, SinkRefs, VmsCamera

# What a sink's HTTP call may raise when the product did not answer (timeouts, connection errors, resets).
HTTP_EXCEPTIONS = (TimeoutError, aiohttp.ClientError, OSError)
# A gateway or reverse proxy in front of the product answers these after it may already have passed the write on.
GATEWAY_STATUSES = (502, 504)


class NoAnswer(SinkNotReady):
    """Not ready, and whether the product did the write is unknown (no reply, or a gateway's 502/504): a retry
    must look before it writes again where the product allows it."""


def incident_time(value: Any, what: str, key: str) -> datetime:
    """An ISO time from the incident JSON (UTC when it has no offset); a bad one rejects the delivery."""
    try:
        t = datetime.fromisoformat(str(value))
    except ValueError:
        raise SinkRejected(f"incident {key}: {what} {value!r} is not an ISO time") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def normalised_box(details: Mapping[str, Any]) -> tuple[float, float, float, float] | None:
    """`details.box` = [x1, y1, x2, y2] normalised 0..1; else None (pixels or nonsense: no box beats a wrong one)."""
    raw = details.get("box")
    if not isinstance(raw, list | tuple) or len(raw) != 4:
        return None
    try:
        x1, y1, x2, y2 = (float(v) for v in raw)
    except (TypeError, ValueError):
        return None
    if not (0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0):
        return None
    return x1, y1, x2, y2


async def tls_context(verify_tls: bool, ca_bundle: Path | None, where: str) -> ssl.SSLContext | bool:
    """aiohttp's `ssl` argument: off, system CAs, or a CA bundle (read off the event loop).

    A bundle that cannot be loaded is a configuration problem a retry will not fix: the sink holds (auth outcome).
    """
    if not verify_tls:
        return False
    if ca_bundle is None:
        return True
    try:
        return await asyncio.to_thread(ssl.create_default_context, cafile=str(ca_bundle))
    except (OSError, ssl.SSLError) as exc:
        raise SinkAuthError(f"{where}: cannot load ca_bundle {ca_bundle}: {exc}") from None


@dataclass(frozen=True)
class SinkSpec:
    """A sink module's registry entry: its config model (whose `kind` literal is the key, declared once), how to
    build the sink, and how to list the product's cameras where it can (`storesight discover`)."""

    config: type[SinkConfigBase]
    build: Callable[[Any, SinkRefs], IncidentSink]
    product: str  # the product, for messages that must say which system answered
    list_cameras: Callable[[Any], Awaitable[list[VmsCamera]]] | None = None

    @property
    def key(self) -> str:
        """The `kind` this sink is configured with."""
        return literal_key(self.config, "kind")


class NoRefs:
    """SinkRefs that keep nothing: for sinks built only to list cameras or test a connection."""

    async def get_ref(self, sink_id: str, incident_id: str) -> str | None:
        """Nothing is ever stored."""
        return None

    async def put_ref(self, sink_id: str, incident_id: str, ref: str) -> None:
        """Forgotten at once."""
        return None


def rtsp_host(url: str) -> str:
    """The host of a VMS URL as an RTSP URL needs it (IPv6 in brackets)."""
    host = urlsplit(url).hostname or "127.0.0.1"
    return f"[{host}]" if ":" in host else host
