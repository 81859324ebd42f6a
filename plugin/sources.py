"""The CameraSource boundary: an async iterator of Frames with a status the console and readiness can show."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from plugin.types import Frame


@dataclass
class SourceStatus:
    """Live counters and state of one source (mutated by the source, read by readiness and metrics)."""

    connected: bool = False
    finished: bool = False
    frames_read: int = 0
    frames_delivered: int = 0
    frames_dropped: int = 0
    reconnects: int = 0
    last_error: str | None = None
    last_frame_monotonic: float | None = None  # when the decoder last got a frame (stall and offline detection)
    # files only: media position and length, for progress
    position_s: float = 0.0
    duration_s: float | None = None


class CameraSource(Protocol):
    """Frames from one camera; blocking decode happens off the event loop."""

    camera_id: str
    status: SourceStatus
    is_file: bool

    def frames(self) -> AsyncIterator[Frame]:
        """Frames until the source ends (files) or `close()` (live)."""
        ...

    async def close(self) -> None:
        """Stop reading and release the device or file."""
        ...
