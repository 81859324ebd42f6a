"""Camera tamper from the image itself: covered (contrast gone), defocused (sharpness gone) or moved (the
scene's fixed edges are no longer where they were), each judged against a reference learned at start."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from plugin.config.cameras import TamperConfig
from plugin.rules.base import RuleHit
from plugin.types import Frame

RULE_ID = "camera-tamper"
SIZE = (160, 90)  # analysed at this size: cheap (<1 ms) and blind to small moving things like people
SAMPLE_EVERY_S = 0.5
STATIC_EDGE_SHARE = 0.6  # an edge present in this share of reference frames belongs to the scene, not a passer-by
CLEAR_AFTER_S = 3.0  # the condition must be gone this long before the incident ends

Reason = Literal["covered", "defocused", "moved"]


def _features(image: npt.NDArray[np.uint8]) -> tuple[float, float, npt.NDArray[np.bool_]]:
    """Contrast (grey std), sharpness (Laplacian variance) and the edge map of a frame."""
    small = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), SIZE, interpolation=cv2.INTER_AREA)
    contrast = float(small.std())
    sharpness = float(cv2.Laplacian(small, cv2.CV_32F).var())
    edges: npt.NDArray[np.bool_] = cv2.Canny(small, 50, 150) > 0
    return contrast, sharpness, edges


class TamperDetector:
    """Learns for `learn_s` of media time, then compares; one incident per tamper episode."""

    def __init__(self, camera_id: str, config: TamperConfig) -> None:
        self.camera_id = camera_id
        self.config = config
        self._learn: list[tuple[float, float, npt.NDArray[np.bool_]]] = []
        self._learn_start: datetime | None = None
        self._ref: tuple[float, float, npt.NDArray[np.bool_]] | None = None
        self._next_sample: datetime | None = None
        self._since: tuple[datetime, Reason, float] | None = None
        self._clear_since: datetime | None = None
        self._open: RuleHit | None = None
        self.last: dict[str, float] = {}

    @property
    def learned(self) -> bool:
        """Whether the reference is ready."""
        return self._ref is not None

    def _judge(self, contrast: float, sharpness: float, edges: npt.NDArray[np.bool_]) -> tuple[Reason, float] | None:
        assert self._ref is not None
        ref_contrast, ref_sharpness, ref_edges = self._ref
        contrast_share = contrast / max(ref_contrast, 1e-6)
        sharp_share = sharpness / max(ref_sharpness, 1e-6)
        grown = cv2.dilate(edges.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # tolerate a pixel or two of shake
        kept = float((ref_edges & grown).sum()) / max(int(ref_edges.sum()), 1)
        self.last = {"contrast": contrast_share, "sharpness": sharp_share, "edges_kept": kept}
        if contrast_share < self.config.covered_contrast:
            return "covered", contrast_share
        if sharp_share < self.config.defocus_sharpness:
            return "defocused", sharp_share
        if kept < self.config.moved_similarity:
            return "moved", kept
        return None

    def update(self, frame: Frame) -> list[RuleHit]:
        """Feed an analysed frame; returns the incident opening or closing."""
        t = frame.captured_at
        if self._next_sample is not None and t < self._next_sample:
            return []
        self._next_sample = t + timedelta(seconds=SAMPLE_EVERY_S)
        contrast, sharpness, edges = _features(frame.image)
        if self._ref is None:
            self._learn_start = self._learn_start or t
            self._learn.append((contrast, sharpness, edges))
            if (t - self._learn_start).total_seconds() >= self.config.learn_s and len(self._learn) >= 5:
                stack = np.stack([e for _, _, e in self._learn])
                self._ref = (
                    float(np.median([c for c, _, _ in self._learn])),
                    float(np.median([s for _, s, _ in self._learn])),
                    stack.mean(axis=0) >= STATIC_EDGE_SHARE,
                )
                self._learn.clear()
            return []
        verdict = self._judge(contrast, sharpness, edges)
        if verdict is not None:
            self._clear_since = None
            if self._since is None:
                self._since = (t, verdict[0], verdict[1])
            start, reason, measure = self._since
            if self._open is None and (t - start).total_seconds() >= self.config.min_duration_s:
                self._open = self._hit("start", start, t, reason, measure)
                return [self._open]
            return []
        self._since = None
        if self._open is None:
            return []
        self._clear_since = self._clear_since or t
        if (t - self._clear_since).total_seconds() < CLEAR_AFTER_S:
            return []
        opened, self._open = self._open, None
        return [self._hit("end", opened.started_at, self._clear_since, str(opened.facts["reason"]),
                          float(opened.facts["measure"]))]  # fmt: skip

    def finish(self, t: datetime) -> list[RuleHit]:
        """Close an open incident at the end of the stream."""
        if self._open is None:
            return []
        opened, self._open = self._open, None
        return [self._hit("end", opened.started_at, t, str(opened.facts["reason"]), float(opened.facts["measure"]))]

    def _hit(
        self, state: Literal["start", "end"], start: datetime, at: datetime, reason: str, measure: float
    ) -> RuleHit:
        return RuleHit(
            rule_id=RULE_ID,
            type="camera_tamper",
            key="tamper",
            state=state,
            camera=self.camera_id,
            zone=None,
            track_ids=(),
            started_at=start,
            at=at,
            severity=self.config.severity,
            facts={"reason": reason, "measure": round(measure, 3), "duration_s": (at - start).total_seconds()},
        )
