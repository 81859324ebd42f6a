"""Camera health (online / degraded / offline, the offline incident) and tamper detection on real frames."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from plugin.config.cameras import TamperConfig
from plugin.pipeline.health import CameraHealth
from plugin.pipeline.tamper import TamperDetector
from plugin.protocols import SourceStatus
from plugin.types import Frame

T0 = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)


def test_health_goes_offline_then_back_with_one_incident() -> None:
    health = CameraHealth("cam1", target_fps=5, stall_timeout_s=3, offline_after_s=10)
    status = SourceStatus(connected=True)
    hits = []
    analysed = 0
    for second in range(0, 60):
        now = float(second)
        if 20 <= second < 40:  # the stream is gone for 20 s
            status.connected, status.last_error = False, "connection refused"
        else:
            status.connected, status.last_error = True, None
            status.frames_read += 10
            status.last_frame_monotonic = now
            analysed += 5
        snap = health.evaluate(now, status, analysed)
        if second == 15:
            assert snap.state == "online" and snap.analysed_fps == pytest.approx(5, rel=0.05)
        if second == 25:
            assert snap.state == "offline" and snap.reason == "connection refused"
        hits += health.incident_hits(now, T0 + timedelta(seconds=second))
    assert [(h.state, h.type, h.track_ids) for h in hits] == [
        ("start", "camera_offline", ()),
        ("end", "camera_offline", ()),
    ]
    assert hits[0].started_at == T0 + timedelta(seconds=20)  # the incident covers the outage from its first second
    assert hits[0].at == T0 + timedelta(seconds=30)  # raised once the threshold passed
    assert hits[1].at == T0 + timedelta(seconds=40) and hits[1].facts["reason"] == "connection refused"


def test_a_stalled_stream_is_offline_and_a_slow_pipeline_degraded() -> None:
    health = CameraHealth("cam1", target_fps=5, stall_timeout_s=3, offline_after_s=None)
    status = SourceStatus(connected=True, frames_read=1, last_frame_monotonic=0.0)
    assert health.evaluate(2.0, status, 0).state != "offline"
    assert health.evaluate(4.0, status, 0).state == "offline"  # connected, but no frame for 4 s > 3 s
    assert health.incident_hits(4.0) == []  # offline_after_s None: no incident
    slow = CameraHealth("cam2", target_fps=5, stall_timeout_s=3, offline_after_s=None)
    s2 = SourceStatus(connected=True)
    for second in range(30):
        s2.frames_read, s2.last_frame_monotonic = second * 10, float(second)
        snap = slow.evaluate(float(second), s2, second * 1)  # 1 analysed frame/s of 5 wanted
    assert snap.state == "degraded" and "analysing 1.0 of 5" in (snap.reason or "")


@pytest.fixture(scope="module")
def frames(clip: Path) -> list[npt.NDArray[np.uint8]]:
    """Every second frame of the first 60 s of the clip (5 fps)."""
    cap = cv2.VideoCapture(str(clip))
    out = []
    for i in range(600):
        ok, img = cap.read()
        if not ok:
            break
        if i % 2 == 0:
            out.append(img)
    cap.release()
    return out


def _rotate(img: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    m = cv2.getRotationMatrix2D((img.shape[1] / 2, img.shape[0] / 2), 8, 1.0)
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]))  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (None, None),  # people walking through the scene are not tampering
        (lambda im: np.zeros_like(im), "covered"),  # lens capped: black
        (lambda im: cv2.addWeighted(im, 0.1, np.full_like(im, 128), 0.9, 0), "covered"),  # sprayed: flat grey
        (lambda im: cv2.GaussianBlur(im, (0, 0), 8), "defocused"),
        (lambda im: np.roll(im, 60, axis=0), "moved"),  # tilted down
        (_rotate, "moved"),
    ],
)
def test_tamper_on_real_frames(
    frames: list[npt.NDArray[np.uint8]], change: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]] | None,
    expected: str | None,
) -> None:  # fmt: skip
    detector = TamperDetector("cam1", TamperConfig(learn_s=20, min_duration_s=10))
    hits = []
    for i, img in enumerate(frames):
        t = T0 + timedelta(seconds=i * 0.2)
        tampered = change is not None and 30 <= i * 0.2 < 50
        image = np.ascontiguousarray(change(img) if tampered and change else img)
        hits += detector.update(Frame("cam1", i, t, 0.0, image))  # type: ignore[arg-type]
    hits += detector.finish(T0 + timedelta(seconds=60))
    if expected is None:
        assert hits == [] and detector.learned
        return
    assert [(h.state, h.facts["reason"]) for h in hits] == [("start", expected), ("end", expected)]
    start, end = hits
    assert start.started_at == T0 + timedelta(seconds=30)
    assert (start.at - start.started_at).total_seconds() == pytest.approx(10, abs=0.6)
    assert (end.at - T0).total_seconds() == pytest.approx(50, abs=0.6)  # the view came back at 50 s
