"""Camera sources on real media: media time for files, latest-frame-wins when the consumer is slow, reconnects."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from components.rtsp import rtsp_available, start_rtsp_server
from conftest import require

from adapters.cameras.opencv import OpenCVSource
from plugin.errors import SourceError
from plugin.inference.server import free_port
from plugin.types import Frame

START = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


async def test_file_frames_carry_media_time(clip: Path) -> None:
    source = OpenCVSource("cam1", str(clip), fps=5, start_time=START)
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


async def test_file_url_form_is_accepted(clip: Path) -> None:
    source = OpenCVSource("cam1", "file://" + str(clip), fps=1, start_time=START)
    count = 0
    async for _ in source.frames():
        count += 1
    assert count == 140  # 139.4 s at one analysed frame per second


async def test_realtime_source_drops_stale_frames_for_a_slow_consumer(clip: Path) -> None:
    source = OpenCVSource("cam1", str(clip), fps=10, realtime=True, start_time=START)
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


@pytest.mark.rtsp
async def test_live_source_reconnects_when_the_server_comes_back(clip: Path) -> None:
    require(rtsp_available())
    port = free_port()
    source = OpenCVSource("door", f"rtsp://127.0.0.1:{port}/store", fps=5)
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


async def test_unopenable_stream_keeps_retrying_with_reason() -> None:
    source = OpenCVSource("cam9", f"rtsp://admin:pw123@127.0.0.1:{free_port()}/x", fps=5)
    frames = source.frames()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(frames), 2.5)
    assert source.status.connected is False
    assert source.status.last_error is not None and "pw123" not in source.status.last_error
    await source.close()


async def test_missing_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="video file not found"):
        async for _ in OpenCVSource("cam1", str(tmp_path / "none.mp4"), fps=5).frames():
            pass
