"""ZoneMinder's monitors for `storesight discover`, each with its source URL when that is a network stream."""

from __future__ import annotations

from urllib.parse import urlsplit

from adapters.sinks.common import NoRefs
from adapters.sinks.zoneminder.config import ZoneMinderSinkConfig
from adapters.sinks.zoneminder.sink import ZoneMinderSink
from plugin.protocols import VmsCamera


async def list_cameras(config: ZoneMinderSinkConfig) -> list[VmsCamera]:
    """Monitors by Id; one whose source is not a network stream is listed without a URL."""
    zm = ZoneMinderSink(config, NoRefs())
    try:
        monitors = await zm.monitors()
    finally:
        await zm.close()
    out = []
    for m in sorted(monitors.values(), key=lambda m: int(m.id)):
        scheme = urlsplit(m.path).scheme.lower() if m.path else ""
        if scheme in ("rtsp", "rtsps", "http", "https"):
            out.append(VmsCamera(m.id, m.name, m.path, f"the monitor's source ({m.function})"))
        else:
            note = f"source {m.path!r} is not a network stream" if m.path else "no source URL"
            out.append(VmsCamera(m.id, m.name, None, note))
    return out
