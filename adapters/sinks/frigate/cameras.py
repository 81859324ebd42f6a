"""Frigate's cameras for `storesight discover`, each with its go2rtc restream URL."""

from __future__ import annotations

from adapters.sinks.common import NoRefs, rtsp_host
from adapters.sinks.frigate.config import FrigateSinkConfig
from adapters.sinks.frigate.sink import FrigateSink
from plugin.protocols import VmsCamera


async def list_cameras(config: FrigateSinkConfig) -> list[VmsCamera]:
    """Frigate's camera names, each with the go2rtc restream of the camera (its default RTSP port)."""
    frigate = FrigateSink(config, NoRefs())
    try:
        names = await frigate.cameras()
    finally:
        await frigate.close()
    return [
        VmsCamera(name, name, f"rtsp://{rtsp_host(config.url)}:8554/{name}", "Frigate's go2rtc restream")
        for name in names
    ]
