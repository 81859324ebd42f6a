"""Camera sources on real media: media time for files, latest-frame-wins when the consumer is slow, reconnects and
stall detection against the real RTSP server; each behaviour checked for both decoders (PyAV, the default, and
OpenCV, the fallback), and PyAV's short probe on H.264 and H.265 streams."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from components.rtsp import rtsp_available, start_rtsp_server
from conftest import require

from adapters.cameras.base import DecodingSource
from adapters.cameras.opencv import OpenCVSource
from adapters.cameras.pyav import PyAVSource
from plugin.errors import SourceError
from plugin.inference.server import free_port
from plugin.types import Frame

START = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
Source = type[DecodingSource[Any]]
SOURCES = pytest.mark.parametrize("kind", [PyAVSource, OpenCVSource], ids=["pyav", "opencv"])


@SOURCES
async def test_file_frames_carry_media_time(kind: Source, clip: Path) -> None:
    source = kind("cam1", str(clip), fps=5, start_time=START)
    frames = [f async for f in source.frames()]
    await source.close()
    # 1394 frames at 10 fps sampled at 5 fps: every second frame, none dropped
    assert len(frames) == 697
    assert source.status.frames_dropped == 0 and source.status.finished
    assert frames[0].captured_at == START
    steps = {round((b.captured_at - a.captured_at).total_seconds(), 2) for a, b in itertools.pairwise(frames)}
    assert steps == {0.2}
    assert frames[-1].captured_at - START == timedelta(seconds=frames[-1].pts_s or 0)
    assert frames[0].image.shape == (432, 768, 3)


@SOURCES
async def test_file_url_form_is_accepted(kind: Source, clip: Path) -> None:
    source = kind("cam1", "file://" + str(clip), fps=1, start_time=START)
    count = 0
    async for _ in source.frames():
        count += 1
    assert count == 140  # 139.4 s at one analysed frame per second


@SOURCES
async def test_realtime_source_drops_stale_frames_for_a_slow_consumer(kind: Source, clip: Path) -> None:
    source = kind("cam1", str(clip), fps=10, realtime=True, start_time=START)
    got: list[Frame] = []
    async for frame in source.frames():
        got.append(frame)
        if len(got) == 6:
            break
        # a detector slower than the camera: it comes back only after two newer frames replaced an unread one
        dropped = source.status.frames_dropped
        for _ in range(1500):  # a bound, not a timing: at 10 fps two drops take 0.3 s
            if source.status.frames_dropped >= dropped + 2:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"the source dropped no stale frames for 30 s: {source.status}")
    await source.close()
    assert source.status.frames_dropped >= 2 * 5
    gaps = [round((b.pts_s or 0) - (a.pts_s or 0), 3) for a, b in itertools.pairwise(got)]
    # each delivered frame is the newest one (at least the third after the last one taken, 0.3 s of a 10 fps clip),
    # not the next in a backlog (0.1 s)
    assert min(gaps) >= 0.3, gaps


@SOURCES
@pytest.mark.rtsp
async def test_live_source_reconnects_when_the_server_comes_back(kind: Source, clip: Path) -> None:
    require(rtsp_available())
    port = free_port()
    source = kind("door", f"rtsp://127.0.0.1:{port}/store", fps=5)
    frames = source.frames()
    try:
        with start_rtsp_server({"/store": clip}, port=port) as server:
            first = await asyncio.wait_for(anext(frames), 30)
            assert first.camera_id == "door" and server.port == port
        # server gone: the source notices, reports disconnected, and keeps retrying
        for _ in range(100):
            if not source.status.connected:
                break
            await asyncio.sleep(0.2)
        assert not source.status.connected
        with start_rtsp_server({"/store": clip}, port=port):
            again = await asyncio.wait_for(anext(frames), 60)
        assert again.seq > first.seq
        assert source.status.reconnects >= 1
    finally:
        await source.close()


@SOURCES
async def test_unopenable_stream_keeps_retrying_with_reason(kind: Source) -> None:
    source = kind("cam9", f"rtsp://admin:pw123@127.0.0.1:{free_port()}/x", fps=5)
    frames = source.frames()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(frames), 2.5)
    assert source.status.connected is False
    assert source.status.last_error is not None and "pw123" not in source.status.last_error
    await source.close()


@SOURCES
async def test_missing_file_is_a_source_error(kind: Source, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="video file not found"):
        async for _ in kind("cam1", str(tmp_path / "none.mp4"), fps=5).frames():
            pass


@SOURCES
async def test_a_file_that_is_not_video_is_a_source_error(kind: Source, tmp_path: Path) -> None:
    junk = tmp_path / "notes.mp4"
    junk.write_text("not a video")
    with pytest.raises(SourceError, match="cam1: "):
        async for _ in kind("cam1", str(junk), fps=5).frames():
            pass


async def test_pyav_decodes_only_what_the_rate_keeps(clip: Path) -> None:
    # the clip's B-frames that no other frame refers to and that the 5 fps grid drops are never decoded
    source = PyAVSource("cam1", str(clip), fps=5, start_time=START)
    frames = [f async for f in source.frames()]
    assert len(frames) == 697 and source.status.frames_dropped == 0
    assert source.status.frames_read == 1394 and source.frames_decoded < 1394  # every frame read, not all decoded
    assert source.status.duration_s == pytest.approx(139.4)
    opencv = OpenCVSource("cam1", str(clip), fps=5, start_time=START)
    reference = [f async for f in opencv.frames()]
    # the same frames, pixel for pixel, at the same media times
    for ours, theirs in zip(frames[::50], reference[::50], strict=True):
        assert ours.pts_s == pytest.approx(theirs.pts_s) and ours.seq == theirs.seq
        assert (ours.image == theirs.image).all()


@SOURCES
@pytest.mark.rtsp
async def test_live_source_reconnects_after_a_stall(kind: Source, clip: Path) -> None:
    """A server that keeps the connection open but sends nothing (frozen with SIGSTOP) is a stall: after
    stall_timeout_s the source reports it down and reconnects once the server sends again."""
    require(rtsp_available())
    with start_rtsp_server({"/store": clip}) as server:
        source = kind("door", server.url("/store"), fps=5, stall_timeout_s=1.0)
        frames = source.frames()
        try:
            first = await asyncio.wait_for(anext(frames), 30)
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                for _ in range(300):  # a bound, not a timing: the source notices within a few stall timeouts
                    if not source.status.connected:
                        break
                    await asyncio.sleep(0.1)
                assert not source.status.connected and source.status.last_error == "stream ended or stalled"
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            while True:  # the slot may still hold a frame from before the stall: read past it
                again = await asyncio.wait_for(anext(frames), 60)
                if source.status.reconnects >= 1 and source.status.connected:
                    break
            assert again.seq > first.seq
        finally:
            await source.close()


def _h265_copy(clip: Path, dest: Path) -> Path:
    ffmpeg = shutil.which("ffmpeg")
    require(None if ffmpeg else "ffmpeg is not installed (apt-get install ffmpeg)")
    assert ffmpeg is not None
    encoders = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True, check=True)
    require(None if "libx265" in encoders.stdout else "this ffmpeg has no libx265 encoder")
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(clip), "-t", "20"]
    cmd += ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error", "-tag:v", "hvc1", str(dest)]
    subprocess.run(cmd, check=True, timeout=120)
    return dest


@pytest.mark.rtsp
async def test_short_probe_finds_h264_and_h265_stream_parameters(clip: Path, tmp_path: Path) -> None:
    """Half a second of probing finds codec, size and pixel format of the RTSP stand-in's H.264 and H.265 streams
    (parameter sets in the SDP and in-band, as cameras send them), without the fallback to a full probe."""
    require(rtsp_available())
    h265 = _h265_copy(clip, tmp_path / "clip-h265.mp4")
    with start_rtsp_server({"/h264": clip, "/h265": h265}) as server:
        for mount, codec in (("/h264", "h264"), ("/h265", "hevc")):
            source = PyAVSource("cam1", server.url(mount), fps=5)
            try:
                container = await asyncio.to_thread(source._open_with, source.source, True)
                try:
                    cc = container.streams.video[0].codec_context
                    assert (cc.name, cc.width, cc.height, cc.pix_fmt) == (codec, 768, 432, "yuv420p")
                finally:
                    container.close()
                frame = await asyncio.wait_for(anext(source.frames()), 30)
                assert frame.image.shape == (432, 768, 3)
                assert source.stream_info is not None and str(source.stream_info).startswith(f"{codec} 768x432")
            finally:
                await source.close()
