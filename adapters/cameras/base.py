"""What the decoding camera sources (PyAV, OpenCV) share: the hand-over from the decode thread to the event loop,
the thread's life, and the live stream's reconnect loop with backoff and jitter.

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
from datetime import datetime
from pathlib import Path
from typing import Generic, TypeVar
from urllib.parse import unquote, urlparse

from plugin.errors import SourceError
from plugin.protocols import SourceStatus
from plugin.redact import redact_url
from plugin.types import Frame

log = logging.getLogger(__name__)

OPEN_TIMEOUT_S = 8.0
STALL_TIMEOUT_S = 8.0
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0

Handle = TypeVar("Handle")


def file_path_of(source: str) -> Path | None:
    """The local path when `source` is a file path or file:// URL, else None."""
    if source.startswith("file://"):
        return Path(unquote(urlparse(source).path))
    if "://" in source:
        return None
    return Path(source)


class End:
    """Sentinel: the source has no more frames."""


class Handoff:
    """One-slot hand-over from the decode thread to the event loop.

    drop_stale=True: a new frame replaces an unconsumed one (counted as dropped). False: the thread waits until
    the consumer took the previous frame, so nothing is lost (files).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, drop_stale: bool, status: SourceStatus) -> None:
        self._loop = loop
        self._drop_stale = drop_stale
        self._status = status
        self._cond = threading.Condition()
        self._item: Frame | End | BaseException | None = None
        self._event = asyncio.Event()
        self.closed = False

    def put(self, item: Frame | End | BaseException) -> bool:
        """From the thread: hand over an item; False when closed."""
        with self._cond:
            while not self._drop_stale and self._item is not None and not self.closed:
                self._cond.wait(timeout=0.5)
            if self.closed:
                return False
            replaced = self._item is not None
            if isinstance(self._item, Frame):
                self._status.frames_dropped += 1
            self._item = item
        if not replaced:  # the loop was already woken for the item this one replaced: one wake-up per hand-over
            self._loop.call_soon_threadsafe(self._event.set)
        return True

    async def get(self) -> Frame | End | BaseException:
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


class SamplingGrid:
    """Which frames of a file are analysed: one per 1/fps of media time on a fixed grid, so a 10 fps file analysed
    at 5 fps keeps exactly every second frame; after a gap in the file the grid restarts at the frame after it."""

    def __init__(self, fps: float, native_fps: float) -> None:
        self.interval = 1.0 / fps
        # Timestamps jitter by a few ms in some containers: a quarter of a source frame is slack enough to keep
        # the grid.
        self.slack = 0.25 / native_fps if native_fps > 0 else 0.005
        self.next_due = 0.0

    def due(self, pts: float) -> bool:
        """Whether the frame at media time `pts` (seconds) would be kept; the grid does not move."""
        return pts + self.slack >= self.next_due

    def take(self, pts: float) -> bool:
        """Whether to keep the frame at `pts`; keeping it moves the grid on."""
        if not self.due(pts):
            return False
        self.next_due += self.interval
        if self.next_due <= pts:  # a gap in the file
            self.next_due = pts + self.interval
        return True


class DecodingSource(Generic[Handle]):
    """A CameraSource whose frames are decoded in a worker thread: a subclass opens the stream or file and reads it.

    `_open` returns a handle (raising SourceError when it cannot), `_read_file` and `_read_live` hand frames over
    with `_put` until the end, a stall or `_stop`, and `_release` closes the handle."""

    def __init__(
        self,
        camera_id: str,
        source: str,
        fps: float,
        realtime: bool = False,
        start_time: datetime | None = None,
        stall_timeout_s: float = STALL_TIMEOUT_S,
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
        self._handoff: Handoff | None = None
        self.name = f"{camera_id} ({redact_url(source)})"

    # --- what a decoder provides ----------------------------------------------------------------------------

    def _open(self) -> Handle:
        raise NotImplementedError

    def _release(self, handle: Handle) -> None:
        raise NotImplementedError

    def _read_file(self, handle: Handle) -> None:
        raise NotImplementedError

    def _read_live(self, handle: Handle, seq: int) -> int:
        """Read until the stream ends or stalls (return the last seq handed over) or `_stop`."""
        raise NotImplementedError

    # --- shared ---------------------------------------------------------------------------------------------

    def _check_file(self) -> Path:
        assert self.path is not None
        if not self.path.is_file():
            raise SourceError(f"{self.camera_id}: video file not found: {self.path}")
        if not os.access(self.path, os.R_OK):
            raise SourceError(f"{self.camera_id}: video file is not readable: {self.path}")
        return self.path

    def _target(self) -> str:
        return str(self._check_file()) if self.is_file else self.source

    async def frames(self) -> AsyncIterator[Frame]:
        """Start the decode thread and yield frames as they come."""
        if self.is_file:
            self._check_file()
        loop = asyncio.get_running_loop()
        self._handoff = Handoff(loop, drop_stale=not self.is_file or self.realtime, status=self.status)
        target = self._run_file if self.is_file else self._run_live
        self._thread = threading.Thread(target=target, name=f"decode-{self.camera_id}", daemon=True)
        self._thread.start()
        try:
            while True:
                item = await self._handoff.get()
                if isinstance(item, End):
                    return
                if isinstance(item, BaseException):
                    raise item
                self.status.frames_delivered += 1
                yield item
        finally:
            self._handoff.close()

    def _put(self, item: Frame | End | BaseException) -> bool:
        assert self._handoff is not None
        return self._handoff.put(item)

    def _pace(self, pts: float, wall0: float) -> bool:
        """A realtime file: wait until media time `pts` is due (counted from `wall0`, monotonic); False when stopped
        meanwhile. Not realtime: at once."""
        if self.realtime:
            delay = pts - (time.monotonic() - wall0)
            if delay > 0 and self._stop.wait(delay):
                return False
        return True

    def _file_ended(self, decoded_any: bool) -> None:
        """The file was read to its end (or `_stop`): its End, or an error when no frame could be decoded."""
        if not decoded_any and not self._stop.is_set():
            self._put(SourceError(f"{self.camera_id}: no frame could be decoded from {self.path}"))
            return
        self.status.finished = True
        self._put(End())

    def _run_file(self) -> None:
        try:
            handle = self._open()
        except SourceError as exc:
            self.status.last_error = str(exc)
            self._put(exc)
            return
        try:
            self._read_file(handle)
        except Exception as exc:  # surfaced to the pipeline, which reports it; never lost in a thread
            self._put(SourceError(f"{self.camera_id}: decode failed: {exc}"))
        finally:
            self._release(handle)

    def _run_live(self) -> None:
        backoff = BACKOFF_START_S
        seq = 0
        while not self._stop.is_set():
            try:
                handle = self._open()
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
            try:
                seq = self._read_live(handle, seq)
            except Exception as exc:  # a decoder error mid-stream: reconnect like a stall, and say why
                log.debug("%s: read failed: %s", self.name, redact_url(str(exc)))
            finally:
                self._release(handle)
            if self._stop.is_set() or (self._handoff is not None and self._handoff.closed):
                return  # stopped, or nobody reads any more
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
        """Stop the thread and wait for it to release the stream or file."""
        self._stop.set()
        if self._handoff is not None:
            self._handoff.close()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
            self._thread = None
