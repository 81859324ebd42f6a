"""The adapter for each camera: its video source and, where configured, its own events. A camera config names exactly
one way to reach its video (the config checks it): `source` (an RTSP URL or a file) or `onvif` (the device is asked
for its stream first); `decoder` picks what reads it: PyAV (the default) or OpenCV (the fallback)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from adapters.cameras.base import DecodingSource
from adapters.cameras.opencv import OpenCVSource
from adapters.cameras.pyav import PyAVSource
from plugin.config.cameras import CameraConfig, Decoder, OnvifConfig
from plugin.protocols import CameraEventSource, CameraSource
from plugin.types import CameraSignal

DECODERS: dict[Decoder, type[DecodingSource[Any]]] = {"pyav": PyAVSource, "opencv": OpenCVSource}


def camera_source(cam: CameraConfig) -> CameraSource:
    """The camera's video source."""
    if cam.onvif is not None:
        # imported here: the ONVIF stack (onvif-zeep-async, zeep, httpx) is 15 MB a bridge without ONVIF cameras
        # need not hold
        from adapters.cameras.onvif.source import OnvifSource

        # asks the camera for its analysis stream URI each time the pipeline starts, then reads it with the decoder
        return OnvifSource(cam.id, cam.onvif, cam.fps, DECODERS[cam.decoder])
    assert cam.source is not None  # the config requires exactly one of source and onvif
    return DECODERS[cam.decoder](
        cam.id, cam.source, cam.fps, realtime=cam.realtime, start_time=cam.start_time,
        stall_timeout_s=cam.stall_timeout_s,
    )  # fmt: skip


def events_source(
    camera_id: str, config: OnvifConfig, on_signal: Callable[[CameraSignal], Awaitable[None]]
) -> CameraEventSource:
    """The camera's own analytics: ONVIF PullPoint events."""
    from adapters.cameras.onvif.events import OnvifEventsClient  # only for cameras with onvif.events

    return OnvifEventsClient(camera_id, config, on_signal)
