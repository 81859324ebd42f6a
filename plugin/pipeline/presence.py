"""Recent presence per camera zone, and one small frame per second: what business-event fusion asks of video
("was anyone in the customer zone of lane 3 between 14:03:00 and 14:03:40?", "show me that moment")."""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

import cv2
import numpy as np
import numpy.typing as npt

from plugin.types import Frame

RETENTION_S = 900.0  # business events arrive late (POS batches, panel retries): keep 15 minutes of presence
FRAME_EVERY_S = 1.0
FRAME_WIDTH = 640  # evidence frames are kept small: 120 s x ~40 KB per camera
FRAME_RETENTION_S = 180.0
MAX_SAMPLE_GAP_S = 3.0  # a gap longer than this between analysed frames means the camera was not watching


@dataclass(frozen=True)
class PresenceAnswer:
    """What the camera saw in a zone over a time window."""

    watched: bool  # False: no analysed frames covered the window (camera down, or not yet analysed): unknown
    max_people: int
    track_ids: tuple[int, ...]
    samples: int
    watched_share: float  # share of the window covered by analysed frames
    peak_at: datetime | None = None  # the first analysed frame with max_people inside (when max_people > 0)


class KeptFrame(NamedTuple):
    """One kept small frame: its time, the JPEG, and where the people were in it (0..1 boxes; None: unknown)."""

    at: datetime
    jpeg: bytes
    people: tuple[tuple[float, float, float, float], ...] | None


@dataclass(frozen=True)
class Crossing:
    """One person over a line_crossing rule's line."""

    t: datetime
    direction: str  # "in" or "out"
    track_id: int


class PresenceLog:
    """Per (camera, zone): (time, track ids inside) for every analysed frame of the last RETENTION_S."""

    def __init__(self) -> None:
        self._zones: dict[tuple[str, str], deque[tuple[datetime, tuple[int, ...]]]] = {}
        self._frames: dict[str, deque[KeptFrame]] = {}
        self._last_frame_at: dict[str, datetime] = {}
        self._analysed: dict[str, datetime] = {}  # per camera: capture time of the latest analysed frame
        self._crossings: dict[tuple[str, str], deque[Crossing]] = {}  # (camera, line_crossing rule id)

    def record(
        self,
        frame: Frame,
        inside: Mapping[str, npt.NDArray[np.bool_]],
        track_ids: npt.NDArray[np.int32],
        people: npt.NDArray[np.float32] | None = None,
    ) -> None:
        """Called by the pipeline for every analysed frame; `people`: the tracked boxes (pixels), kept with the
        frame so the copy of its evidence for `privacy: blur` sinks blurs them."""
        t = frame.captured_at
        horizon = t - timedelta(seconds=RETENTION_S)
        self._analysed[frame.camera_id] = max(t, self._analysed.get(frame.camera_id, t))
        for zone, mask in inside.items():
            series = self._zones.setdefault((frame.camera_id, zone), deque())
            series.append((t, tuple(int(v) for v in track_ids[mask])))
            while series and series[0][0] < horizon:
                series.popleft()
        last = self._last_frame_at.get(frame.camera_id)
        if last is None or (t - last).total_seconds() >= FRAME_EVERY_S:
            self._last_frame_at[frame.camera_id] = t
            frames = self._frames.setdefault(frame.camera_id, deque())
            boxes = None
            if people is not None:
                w, h = float(frame.width), float(frame.height)
                boxes = tuple((float(b[0]) / w, float(b[1]) / h, float(b[2]) / w, float(b[3]) / h) for b in people)
            frames.append(KeptFrame(t, _small_jpeg(frame.image), boxes))
            while frames and (t - frames[0][0]).total_seconds() > FRAME_RETENTION_S:
                frames.popleft()

    def forget(self, camera: str) -> None:
        """Drop one camera's presence, frames and crossings (its wall clock jumped: the series would go back in
        time, and every window lookup assumes it never does)."""
        for series in (self._zones, self._crossings):
            for key in [k for k in series if k[0] == camera]:
                del series[key]
        self._frames.pop(camera, None)
        self._last_frame_at.pop(camera, None)
        self._analysed.pop(camera, None)

    def people_in(self, camera: str, zone: str, start: datetime, end: datetime) -> PresenceAnswer:
        """Who was in the zone during [start, end]; `watched` False when video did not cover the window."""
        series = self._zones.get((camera, zone))
        if not series:
            return PresenceAnswer(False, 0, (), 0, 0.0)
        times = [s[0] for s in series]
        lo = bisect.bisect_left(times, start)
        hi = bisect.bisect_right(times, end)
        # the sample just before the window tells what was there when it opened
        first = lo - 1 if lo > 0 and (start - times[lo - 1]).total_seconds() <= MAX_SAMPLE_GAP_S else lo
        window = list(series)[first:hi]
        if not window:
            return PresenceAnswer(False, 0, (), 0, 0.0)
        # coverage: time between consecutive samples (a frame stands for the gap up to the next one, if short)
        covered = 0.0
        stamps = [t for t, _ in window] + [end]
        for a, b in itertools.pairwise(stamps):
            if (b - a).total_seconds() <= MAX_SAMPLE_GAP_S:
                covered += max((min(b, end) - max(a, start)).total_seconds(), 0.0)
        share = min(covered / max((end - start).total_seconds(), 1e-6), 1.0)
        ids = sorted({i for _, inside in window for i in inside})
        people = max(len(v) for _, v in window)
        peak_at = next((t for t, v in window if len(v) == people), None) if people else None
        return PresenceAnswer(share > 0.5, people, tuple(ids), len(window), round(share, 3), peak_at)

    def record_crossing(self, camera: str, rule_id: str, t: datetime, direction: str, track_id: int) -> None:
        """Called by the pipeline for every line crossing (a line_crossing rule's Measurement with its track)."""
        series = self._crossings.setdefault((camera, rule_id), deque())
        bisect.insort(series, Crossing(t, direction, track_id), key=lambda c: c.t)
        horizon = t - timedelta(seconds=RETENTION_S)
        while series and series[0].t < horizon:
            series.popleft()

    def crossings(
        self, camera: str, rule_id: str, start: datetime, end: datetime, direction: str | None = None
    ) -> list[Crossing]:
        """The crossings of one line in [start, end], oldest first (of one direction, or both)."""
        series = self._crossings.get((camera, rule_id), ())
        return [c for c in series if start <= c.t <= end and (direction is None or c.direction == direction)]

    def analysed_until(self, camera: str) -> datetime | None:
        """Capture time of the camera's latest analysed frame (any zone or none): how far its video has been
        analysed, so fusion knows when every crossing of a window is in."""
        return self._analysed.get(camera)

    def last_sample(self, camera: str, zone: str) -> datetime | None:
        """Capture time of the zone's latest analysed frame: how far video has been analysed (fusion waits for it
        to pass a business event's window before judging)."""
        series = self._zones.get((camera, zone))
        return series[-1][0] if series else None

    def frame_near(self, camera: str, t: datetime) -> KeptFrame | None:
        """The kept JPEG closest to `t` (within FRAME_RETENTION_S), for evidence of a business event."""
        frames = self._frames.get(camera)
        if not frames:
            return None
        best = min(frames, key=lambda f: abs((f[0] - t).total_seconds()))
        return best if abs((best[0] - t).total_seconds()) <= 2 * FRAME_EVERY_S + 1 else None


def _small_jpeg(image: npt.NDArray[np.uint8]) -> bytes:
    h, w = image.shape[:2]
    if w > FRAME_WIDTH:
        image = cv2.resize(image, (FRAME_WIDTH, round(h * FRAME_WIDTH / w)), interpolation=cv2.INTER_AREA)  # type: ignore[assignment]
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return data.tobytes() if ok else b""
