"""The real RTSP server (gst-rtsp-server) serves the shared clip to OpenCV's FFmpeg reader at its native size."""

from __future__ import annotations

import os

import cv2
import pytest

# pytest puts tests/ on sys.path (there is no tests/__init__.py), under both `pytest` and `python -m pytest`.
from components.rtsp import REPO_ROOT, rtsp_available, start_rtsp_server

CLIP = REPO_ROOT.parent / "shared" / "media" / "one-by-one-person-detection.mp4"
FRAMES = 20
# FFmpeg's stream analysis holds the first frame back ~3 s at this clip's 10 fps; the margins cover a busy CI machine.
OPEN_TIMEOUT_MS = 20_000
READ_TIMEOUT_MS = 10_000


def require_rtsp() -> None:
    """Skip when the RTSP server cannot run here, but fail in CI, where a missing component is a broken setup."""
    reason = rtsp_available()
    if reason is None and not CLIP.is_file():
        reason = f"test clip {CLIP} not found"
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.mark.rtsp
def test_opencv_reads_clip_frames_over_rtsp() -> None:
    """OpenCV (CAP_FFMPEG) reads 20 frames of 768x432 from the served clip, and the server stops cleanly."""
    require_rtsp()
    with start_rtsp_server({"/store": CLIP}) as server:
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
