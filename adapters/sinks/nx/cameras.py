"""The Nx server's cameras for `storesight discover`: its devices, each with Nx's RTSP URL of its secondary stream."""

from __future__ import annotations

from urllib.parse import urlsplit

from adapters.sinks.common import NoRefs, rtsp_host
from adapters.sinks.nx.config import NxSinkConfig
from adapters.sinks.nx.sink import NxSink
from plugin.protocols import VmsCamera


async def list_cameras(config: NxSinkConfig) -> list[VmsCamera]:
    """Nx devices by name, each with its RTSP URL."""
    nx = NxSink(config, NoRefs())
    try:
        devices = await nx.devices()
    finally:
        await nx.close()
    port = urlsplit(config.url).port or (443 if config.url.startswith("https") else 80)
    out = []
    for device, name in sorted(devices.items(), key=lambda kv: (kv[1], kv[0])):
        # Nx serves every camera's RTSP on its own port; stream=1 is the secondary (sub) stream, the one
        # to analyse. Its RTSP needs a user with digest auth enabled (INTEGRATIONS.md 2.4): not a session.
        url = f"rtsp://{rtsp_host(config.url)}:{port}/{device}?stream=1"
        out.append(VmsCamera(device, name, url, "Nx RTSP, secondary stream"))
    return out
