"""RTSP streams and video files through OpenCV (FFmpeg), decoded in a worker thread: the fallback decoder
(`decoder: opencv` on a camera). PyAV (adapters/cameras/pyav.py) is the default: OpenCV's FFmpeg backend opens one
stream at a time per process (2.8 s each against the RTSP stand-in), so 50 cameras took minutes to start.

Live sources: latest frame wins, drops are counted, the stream reconnects with backoff (adapters/cameras/base.py).
Files: every sampled frame is handed over and stamped with media time.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import cast

import cv2

from adapters.cameras.base import OPEN_TIMEOUT_S, DecodingSource, SamplingGrid
from plugin.errors import SourceError
from plugin.redact import redact_url
from plugin.types import Frame, ImageArray

# Cameras and VMS proxies are far more reliable over RTSP-over-TCP than UDP behind NAT and firewalls,
# and some (ipycam) only speak TCP.
os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")

OPEN_TIMEOUT_MS = round(OPEN_TIMEOUT_S * 1000)


class OpenCVSource(DecodingSource[cv2.VideoCapture]):
    """A CameraSource for rtsp://, http(s):// streams and video files, decoded by OpenCV's FFmpeg backend."""

    def _open(self) -> cv2.VideoCapture:
        target = self._target()
        # the read timeout is the stall detector: no frame for that long ends the read and we reconnect
        read_ms = round(self.stall_timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, read_ms]
        cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            what = "video file cannot be decoded" if self.is_file else "stream cannot be opened"
            raise SourceError(f"{self.camera_id}: {what}: {redact_url(target)}")
        return cap

    def _release(self, handle: cv2.VideoCapture) -> None:
        handle.release()

    def _read_file(self, handle: cv2.VideoCapture) -> None:
        cap = handle
        assert self.path is not None
        native_fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0
        if native_fps > 0 and count > 0:
            self.status.duration_s = count / native_fps
        start = self.start_time or datetime.fromtimestamp(self.path.stat().st_mtime, UTC)
        self.status.connected = True
        grid = SamplingGrid(self.fps, native_fps)
        index = -1
        wall0 = time.monotonic()
        decoded_any = False
        while not self._stop.is_set():
            if not cap.grab():
                break
            index += 1
            self.status.frames_read += 1
            pts_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
            # Some containers report no timestamps; fall back to the nominal rate.
            pts = pts_ms / 1000.0 if pts_ms > 0 or index == 0 else index / (native_fps or self.fps)
            self.status.position_s = pts
            if not grid.take(pts):
                continue
            ok, image = cap.retrieve()
            if not ok or image is None:
                continue
            decoded_any = True
            if not self._pace(pts, wall0):
                break
            frame = Frame(
                camera_id=self.camera_id,
                seq=index,
                captured_at=start + timedelta(seconds=pts),
                monotonic=time.monotonic(),
                image=cast(ImageArray, image),
                pts_s=pts,
            )
            if not self._put(frame):
                return
        self._file_ended(decoded_any)

    def _read_live(self, handle: cv2.VideoCapture, seq: int) -> int:
        cap = handle
        interval = 1.0 / self.fps
        next_due = 0.0
        while not self._stop.is_set():
            if not cap.grab():
                break
            self.status.frames_read += 1
            now = time.monotonic()
            self.status.last_frame_monotonic = now
            if now < next_due:
                continue
            next_due = max(next_due + interval, now - interval)
            ok, image = cap.retrieve()
            if not ok or image is None:
                continue
            seq += 1
            frame = Frame(self.camera_id, seq, datetime.now(UTC), now, cast(ImageArray, image))
            if not self._put(frame):
                break
        return seq
