"""XProtect's cameras for `storesight discover`: by GUID, with no stream URL (XProtect's REST API names none)."""

from __future__ import annotations

import re

from adapters.sinks.common import NoRefs
from adapters.sinks.milestone.config import MilestoneSinkConfig
from adapters.sinks.milestone.sink import MilestoneSink
from plugin.protocols import VmsCamera

MILESTONE_TODO = (
    "XProtect's REST API names no stream: set source to the camera's own RTSP URL, or replace it with an onvif "
    "section for the camera (or for XProtect's Open Network Bridge, ONVIF on port 580; INTEGRATIONS.md 3.7)"
)
_XPROTECT_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


async def list_cameras(config: MilestoneSinkConfig) -> list[VmsCamera]:
    """XProtect's cameras, by GUID; none has a stream URL (a TODO each), disabled ones are listed but skipped."""
    ms = MilestoneSink(config, NoRefs())
    try:
        found = await ms.cameras()
    finally:
        await ms.close()
    out = []
    for c in sorted(found, key=lambda c: (c.name, c.id)):
        if not _XPROTECT_GUID.match(c.id):
            out.append(VmsCamera(c.id, c.name, None, "its id is not a GUID, which the sink's cameras need"))
        elif not c.enabled:
            out.append(VmsCamera(c.id, c.name, None, "disabled in XProtect"))
        else:
            out.append(VmsCamera(c.id, c.name, None, "XProtect camera, no stream URL", MILESTONE_TODO))
    return out
