"""Security Center's cameras for `storesight discover`: by GUID, each with the Media Gateway's RTSP URL."""

from __future__ import annotations

from adapters.sinks.common import NoRefs, rtsp_host
from adapters.sinks.genetec.config import GenetecSinkConfig
from adapters.sinks.genetec.sink import GenetecSink
from plugin.protocols import VmsCamera

GENETEC_RTSP_PORT = 654  # the Media Gateway's RTSP port by default (INTEGRATIONS.md 4.3 [S])
GENETEC_TODO = (
    "Genetec Media Gateway RTSP [S: INTEGRATIONS.md 4.3], assumed to run on the Web SDK's host: change the host if "
    "the Media Gateway role runs elsewhere; its login is a Security Center user's; /lowres instead of /live asks "
    "for the low-resolution stream (5.5+)"
)


async def list_cameras(config: GenetecSinkConfig) -> list[VmsCamera]:
    """Security Center's cameras, by GUID, each with the Media Gateway's RTSP URL for its live stream."""
    sc = GenetecSink(config, NoRefs())
    try:
        found = await sc.cameras()
    finally:
        await sc.close()
    host = rtsp_host(config.url)
    out = []
    for c in sorted(found, key=lambda c: (c.name, c.guid)):
        state = f", {c.running_state}" if c.running_state else ""
        url = f"rtsp://{host}:{GENETEC_RTSP_PORT}/{c.guid}/live"
        out.append(VmsCamera(c.guid, c.name, url, f"Media Gateway RTSP, live stream{state}", GENETEC_TODO))
    return out
