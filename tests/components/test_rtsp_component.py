"""The real RTSP server (gst-rtsp-server) serves the shared clip to OpenCV's FFmpeg reader at its native size."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
from conftest import require

# pytest puts tests/ on sys.path (there is no tests/__init__.py), under both `pytest` and `python -m pytest`.
from components.rtsp import rtsp_available, start_rtsp_server

FRAMES = 20
# FFmpeg's stream analysis holds the first frame back ~3 s at this clip's 10 fps; the margins cover a busy CI machine.
OPEN_TIMEOUT_MS = 20_000
READ_TIMEOUT_MS = 10_000


@pytest.mark.rtsp
def test_opencv_reads_clip_frames_over_rtsp(clip: Path) -> None:
    """OpenCV (CAP_FFMPEG) reads 20 frames of 768x432 from the served clip, and the server stops cleanly."""
    require(rtsp_available())
    with start_rtsp_server({"/store": clip}) as server:
        cap = cv2.VideoCapture(
            server.url("/store"),
            cv2.CAP_FFMPEG,
            [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS],
        )
        try:
            assert cap.isOpened(), f"cannot open {server.url('/store')}; server log:\n{server.stderr()}"
            shapes = []
            for i in range(FRAMES):
                ok, frame = cap.read()
                assert ok, f"frame {i} not read; server log:\n{server.stderr()}"
                shapes.append(frame.shape)
        finally:
            cap.release()
        assert server.stop() == 0, server.stderr()
    assert shapes == [(432, 768, 3)] * FRAMES
