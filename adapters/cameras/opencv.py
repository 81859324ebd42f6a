"""RTSP streams and video files through OpenCV (FFmpeg), decoded in a worker thread.

Live sources: latest frame wins (stale video is worthless), drops are counted, the stream reconnects with
backoff. Files: every sampled frame is handed over (no drops) and stamped with media time, so analysing
footage faster than real time gives the same incidents as watching it live.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast
from urllib.parse import unquote, urlparse

import cv2

from plugin.errors import SourceError
from plugin.protocols import SourceStatus
from plugin.redact import redact_url
from plugin.types import Frame, ImageArray

log = logging.getLogger(__name__)

# Cameras and VMS proxies are far more reliable over RTSP-over-TCP than UDP behind NAT and firewalls,
# and some (ipycam) only speak TCP.
os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")

OPEN_TIMEOUT_MS = 8000
READ_TIMEOUT_MS = 8000
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0


def file_path_of(source: str) -> Path | None:
    """The local path when `source` is a file path or file:// URL, else None."""
    if source.startswith("file://"):
        return Path(unquote(urlparse(source).path))
    if "://" in source:
        return None
    return Path(source)


class _End:
    """Sentinel: the source has no more frames."""


class _Handoff:
    """One-slot hand-over from the decode thread to the event loop.

    drop_stale=True: a new frame replaces an unconsumed one (counted as dropped). False: the thread waits until
    the consumer took the previous frame, so nothing is lost (files).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, drop_stale: bool, status: SourceStatus) -> None:
        self._loop = loop
        self._drop_stale = drop_stale
        self._status = status
        self._cond = threading.Condition()
        self._item: Frame | _End | BaseException | None = None
        self._event = asyncio.Event()
        self.closed = False

    def put(self, item: Frame | _End | BaseException) -> bool:
        """From the thread: hand over an item; False when closed."""
        with self._cond:
            while not self._drop_stale and self._item is not None and not self.closed:
                self._cond.wait(timeout=0.5)
            if self.closed:
                return False
            if isinstance(self._item, Frame):
                self._status.frames_dropped += 1
            self._item = item
        self._loop.call_soon_threadsafe(self._event.set)
        return True

    async def get(self) -> Frame | _End | BaseException:
        """From the loop: the next item."""
        while True:
            self._event.clear()
            with self._cond:
                if self._item is not None:
                    item, self._item = self._item, None
                    self._cond.notify_all()
                    return item
            await self._event.wait()

    def close(self) -> None:
        """Wake and stop the thread."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class OpenCVSource:
    """A CameraSource for rtsp://, http(s):// streams and video files."""

    def __init__(
        self,
        camera_id: str,
        source: str,
        fps: float,
        realtime: bool = False,
        start_time: datetime | None = None,
        stall_timeout_s: float = READ_TIMEOUT_MS / 1000,
    ) -> None:
        self.camera_id = camera_id
        self.source = source
        self.fps = fps
        self.realtime = realtime
        self.path = file_path_of(source)
        self.is_file = self.path is not None
        self.start_time = start_time
        self.stall_timeout_s = stall_timeout_s
        self.status = SourceStatus()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handoff: _Handoff | None = None
        self.name = f"{camera_id} ({redact_url(source)})"

    def _check_file(self) -> Path:
        assert self.path is not None
        if not self.path.is_file():
            raise SourceError(f"{self.camera_id}: video file not found: {self.path}")
        if not os.access(self.path, os.R_OK):
            raise SourceError(f"{self.camera_id}: video file is not readable: {self.path}")
        return self.path

    def _open(self) -> cv2.VideoCapture:
        target = str(self._check_file()) if self.is_file else self.source
        # the read timeout is the stall detector: no frame for that long ends the read and we reconnect
        read_ms = round(self.stall_timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, read_ms]
        cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            what = "video file cannot be decoded" if self.is_file else "stream cannot be opened"
            raise SourceError(f"{self.camera_id}: {what}: {redact_url(target)}")
        return cap

    async def frames(self) -> AsyncIterator[Frame]:
        """Start the decode thread and yield frames as they come."""
        if self.is_file:
            self._check_file()
        loop = asyncio.get_running_loop()
        self._handoff = _Handoff(loop, drop_stale=not self.is_file or self.realtime, status=self.status)
        target = self._run_file if self.is_file else self._run_live
        self._thread = threading.Thread(target=target, name=f"decode-{self.camera_id}", daemon=True)
        self._thread.start()
        try:
            while True:
                item = await self._handoff.get()
                if isinstance(item, _End):
                    return
                if isinstance(item, BaseException):
                    raise item
                self.status.frames_delivered += 1
                yield item
        finally:
            self._handoff.close()

    # --- worker threads -------------------------------------------------------------------------------------

    def _put(self, item: Frame | _End | BaseException) -> bool:
        assert self._handoff is not None
        return self._handoff.put(item)

    def _run_file(self) -> None:
        try:
            cap = self._open()
        except SourceError as exc:
            self.status.last_error = str(exc)
            self._put(exc)
            return
        try:
            self._read_file(cap)
        except Exception as exc:  # surfaced to the pipeline, which reports it; never lost in a thread
            self._put(SourceError(f"{self.camera_id}: decode failed: {exc}"))
        finally:
            cap.release()

    def _read_file(self, cap: cv2.VideoCapture) -> None:
        assert self.path is not None
        native_fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0
        if native_fps > 0 and count > 0:
            self.status.duration_s = count / native_fps
        start = self.start_time or datetime.fromtimestamp(self.path.stat().st_mtime, UTC)
        self.status.connected = True
        interval = 1.0 / self.fps
        # Timestamps jitter by a few ms in some containers: a quarter of a source frame is slack enough to keep
        # the sampling grid (a 10 fps file analysed at 5 fps keeps exactly every second frame).
        slack = 0.25 / native_fps if native_fps > 0 else 0.005
        next_due = 0.0
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
            if pts + slack < next_due:
                continue
            next_due += interval
            if next_due <= pts:  # a gap in the file: restart the sampling grid at this frame
                next_due = pts + interval
            ok, image = cap.retrieve()
            if not ok or image is None:
                continue
            decoded_any = True
            if self.realtime:
                delay = pts - (time.monotonic() - wall0)
                if delay > 0 and self._stop.wait(delay):
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
        if not decoded_any and not self._stop.is_set():
            self._put(SourceError(f"{self.camera_id}: no frame could be decoded from {self.path}"))
            return
        self.status.finished = True
        self._put(_End())

    def _run_live(self) -> None:
        backoff = BACKOFF_START_S
        seq = 0
        while not self._stop.is_set():
            try:
                cap = self._open()
            except SourceError as exc:
                # jitter: cameras behind one switch that rebooted together do not all retry in step
                delay = backoff * random.uniform(0.75, 1.25)
                self._note_down(str(exc), delay)
                if self._stop.wait(delay):
                    return
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            log.info("%s: connected", self.name)
            self.status.connected = True
            self.status.last_error = None
            backoff = BACKOFF_START_S
            interval = 1.0 / self.fps
            next_due = 0.0
            try:
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
                        return
            finally:
                cap.release()
            if self._stop.is_set():
                return
            self.status.reconnects += 1
            self._note_down("stream ended or stalled", backoff)
            if self._stop.wait(backoff):
                return

    def _note_down(self, reason: str, backoff: float) -> None:
        was_up = self.status.connected
        self.status.connected = False
        self.status.last_error = reason
        if was_up or self.status.reconnects == 0:
            log.warning("%s: %s; retrying in %.0f s", self.name, redact_url(reason), backoff)
        else:
            log.debug("%s: %s; retrying in %.0f s", self.name, redact_url(reason), backoff)

    async def close(self) -> None:
        """Stop the thread and wait for it to release the capture."""
        self._stop.set()
        if self._handoff is not None:
            self._handoff.close()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
            self._thread = None
