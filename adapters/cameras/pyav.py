"""RTSP streams and video files through PyAV (FFmpeg's own bindings), decoded in a worker thread: the default
decoder for `source:` cameras.

Why PyAV: it releases the GIL while it opens, reads and decodes, so every camera opens at once (OpenCV's FFmpeg
backend opens one stream at a time per process, 2.8 s each), and it lets the source choose per packet what to decode:
  - a short probe (`analyzeduration` 0.5 s, `probesize` 100 kB): an RTSP camera announces its codec in the SDP and
    sends its parameter sets in-band, so half a second finds them; the default 5 s probe only delays the first
    frame (and buffers 5 s of stale video). Should a stream still lack its size after the short probe, it is
    opened again with FFmpeg's default probe.
  - frames the analysis rate does not keep are never converted to BGR, and a non-reference frame (a B-frame no
    other frame is predicted from) that would be dropped is not decoded at all (FFmpeg's skip_frame=NONREF set per
    packet): a 10 fps file analysed at 5 fps decodes 849 of its 1394 frames.
  - one decoding thread per camera: the cameras are the parallelism, and FFmpeg's frame threads cost more CPU than
    they save on sub-streams.

Live sources: latest frame wins, drops are counted, the stream reconnects with backoff; a stream that sends no
packet for `stall_timeout_s` is closed and reconnected (adapters/cameras/base.py). Files: every sampled frame is
handed over and stamped with media time (PTS).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import av
import av.container

from adapters.cameras.base import OPEN_TIMEOUT_S, DecodingSource, SamplingGrid
from plugin.errors import SourceError
from plugin.redact import redact_url
from plugin.types import Frame, ImageArray

log = logging.getLogger(__name__)

# Half a second of probing finds an RTSP camera's codec and size (SDP plus in-band SPS/PPS/VPS, checked on H.264 and
# H.265 streams); FFmpeg's defaults (5 s, 5 MB) only delay the first frame.
PROBE_OPTIONS = {"analyzeduration": "500000", "probesize": "100000"}
# one decoding thread per camera: see the module docstring
DECODE_THREADS = 1


@dataclass(frozen=True)
class StreamInfo:
    """What the probe found: codec, size and pixel format (None where it did not find them)."""

    codec: str
    width: int
    height: int
    pix_fmt: str | None
    fps: float | None

    def __str__(self) -> str:
        rate = f" {self.fps:g} fps" if self.fps else ""
        return f"{self.codec} {self.width}x{self.height} {self.pix_fmt or '?'}{rate}"


def _reason(exc: BaseException) -> str:
    """FFmpeg's reason without the URL PyAV appends (it may hold credentials)."""
    if isinstance(exc, av.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    return redact_url(str(exc)) or type(exc).__name__


def _bgr(frame: av.VideoFrame) -> ImageArray:
    """The frame as a BGR uint8 image (FFmpeg's swscale converts any pixel format)."""
    return cast(ImageArray, frame.to_ndarray(format="bgr24"))


class PyAVSource(DecodingSource[av.container.InputContainer]):
    """A CameraSource for rtsp://, http(s):// streams and video files, decoded by PyAV."""

    stream_info: StreamInfo | None = None
    frames_decoded = 0  # frames FFmpeg decoded (files: fewer than frames_read when B-frames were skipped)

    def _options(self, short_probe: bool) -> dict[str, str]:
        options = dict(PROBE_OPTIONS) if short_probe else {}
        if self.source.startswith(("rtsp://", "rtsps://")):
            # cameras and VMS proxies are far more reliable over RTSP-over-TCP than UDP behind NAT and firewalls,
            # and some (ipycam) only speak TCP
            options["rtsp_transport"] = "tcp"
        return options

    def _open(self) -> av.container.InputContainer:
        target = self._target()
        container = self._open_with(target, short_probe=not self.is_file)
        stream = container.streams.video[0] if container.streams.video else None
        if not self.is_file and (stream is None or not stream.codec_context.width):
            # a camera whose parameters the short probe did not reach: FFmpeg's full probe, once per connection
            container.close()
            log.info("%s: short probe found no video size; probing again with FFmpeg's defaults", self.name)
            container = self._open_with(target, short_probe=False)
            stream = container.streams.video[0] if container.streams.video else None
        if stream is None:
            container.close()
            what = "video file has no video stream" if self.is_file else "stream has no video"
            raise SourceError(f"{self.camera_id}: {what}: {redact_url(target)}")
        cc = stream.codec_context
        cc.thread_count = DECODE_THREADS
        rate = stream.average_rate or stream.guessed_rate
        self.stream_info = StreamInfo(cc.name, cc.width, cc.height, cc.pix_fmt, float(rate) if rate else None)
        return container

    def _open_with(self, target: str, short_probe: bool) -> av.container.InputContainer:
        try:
            # (open, read) timeouts: a read that waits longer than stall_timeout_s for a packet is interrupted,
            # which ends the read loop and reconnects (the stall detector)
            return av.open(
                target, "r", options=self._options(short_probe), timeout=(OPEN_TIMEOUT_S, self.stall_timeout_s)
            )
        except (av.FFmpegError, OSError) as exc:
            what = "video file cannot be decoded" if self.is_file else "stream cannot be opened"
            raise SourceError(f"{self.camera_id}: {what}: {redact_url(target)} ({_reason(exc)})") from None

    def _release(self, handle: av.container.InputContainer) -> None:
        handle.close()

    def _read_file(self, handle: av.container.InputContainer) -> None:
        assert self.path is not None
        stream = handle.streams.video[0]
        cc = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate
        native_fps = float(rate) if rate else 0.0
        if stream.duration is not None and stream.time_base is not None:
            self.status.duration_s = float(stream.duration * stream.time_base)
        elif handle.duration is not None:
            self.status.duration_s = handle.duration / av.time_base
        start = self.start_time or datetime.fromtimestamp(self.path.stat().st_mtime, UTC)
        origin = float(stream.start_time * stream.time_base) if stream.start_time and stream.time_base else 0.0
        self.status.connected = True
        grid = SamplingGrid(self.fps, native_fps)
        index = -1
        wall0 = time.monotonic()
        decoded_any = False
        for packet in handle.demux(stream):
            if self._stop.is_set():
                return
            # a frame that will not be sampled need not be decoded when nothing refers to it; the grid only moves
            # on, so a frame skipped here would have been dropped below as well (no timestamp: decode it)
            at, base = packet.pts, packet.time_base
            due = at is None or base is None or grid.due(float(at * base) - origin)
            cc.skip_frame = "DEFAULT" if due else "NONREF"
            if packet.size:
                self.status.frames_read += 1  # the file's frames, decoded or not: one packet each for video
            for frame in cc.decode(packet):
                index += 1
                self.frames_decoded += 1
                pts = frame.time - origin if frame.time is not None else index / (native_fps or self.fps)
                self.status.position_s = pts
                if not grid.take(pts):
                    continue
                image = _bgr(frame)
                decoded_any = True
                if not self._pace(pts, wall0):
                    return
                seq = round(pts * native_fps) if native_fps > 0 else index
                item = Frame(self.camera_id, seq, start + timedelta(seconds=pts), time.monotonic(), image, pts)
                if not self._put(item):
                    return
        self._file_ended(decoded_any)

    def _read_live(self, handle: av.container.InputContainer, seq: int) -> int:
        stream = handle.streams.video[0]
        cc = stream.codec_context
        log.info("%s: %s", self.name, self.stream_info)
        interval = 1.0 / self.fps
        next_due = 0.0
        try:
            for packet in handle.demux(stream):
                if self._stop.is_set():
                    break
                if packet.size:
                    self.status.frames_read += 1  # the stream's rate: one packet per frame for H.264/H.265
                now = time.monotonic()
                self.status.last_frame_monotonic = now
                cc.skip_frame = "NONREF" if now < next_due else "DEFAULT"
                try:
                    decoded: list[Any] = cc.decode(packet)
                except av.error.InvalidDataError as exc:  # a damaged packet: the next keyframe repairs the picture
                    log.debug("%s: %s", self.name, _reason(exc))
                    continue
                for frame in decoded:
                    self.frames_decoded += 1
                    now = time.monotonic()
                    if now < next_due:
                        continue  # dropped before colour conversion: only kept frames become BGR
                    next_due = max(next_due + interval, now - interval)
                    seq += 1
                    image = _bgr(frame)
                    if not self._put(Frame(self.camera_id, seq, datetime.now(UTC), now, image)):
                        return seq
        except (av.FFmpegError, OSError) as exc:  # a stall (the read timed out), a reset connection
            log.debug("%s: read ended: %s", self.name, _reason(exc))
        return seq
