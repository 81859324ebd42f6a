"""The adapter for each camera: its video source and, where configured, its own events. A camera config names exactly
one way to reach its video (the config checks it): `source` (an RTSP URL or a file, read with OpenCV) or `onvif`
(the device is asked for its stream first)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from adapters.cameras.onvif.events import OnvifEventsClient
from adapters.cameras.onvif.source import OnvifSource
from adapters.cameras.opencv import OpenCVSource
from plugin.config.cameras import CameraConfig, OnvifConfig
from plugin.protocols import CameraEventSource, CameraSource
from plugin.types import CameraSignal


def camera_source(cam: CameraConfig) -> CameraSource:
    """The camera's video source."""
    if cam.onvif is not None:
        # asks the camera for its analysis stream URI each time the pipeline starts, then reads it with OpenCV
        return OnvifSource(cam.id, cam.onvif, cam.fps)
    assert cam.source is not None  # the config requires exactly one of source and onvif
    return OpenCVSource(
        cam.id, cam.source, cam.fps, realtime=cam.realtime, start_time=cam.start_time,
        stall_timeout_s=cam.stall_timeout_s,
    )  # fmt: skip


def events_source(
    camera_id: str, config: OnvifConfig, on_signal: Callable[[CameraSignal], Awaitable[None]]
) -> CameraEventSource:
    """The camera's own analytics: ONVIF PullPoint events."""
    return OnvifEventsClient(camera_id, config, on_signal)
