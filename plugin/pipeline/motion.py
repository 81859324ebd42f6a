"""Motion gating: decide per frame whether the detector must run, so cameras watching a still scene cost little.

A skipped frame is one where nothing the rules care about can have changed since the last detection: no pixel
change in the analysed area (the camera's zones and line neighbourhoods, or the whole view), no tracked person
moving, lost or not yet confirmed, and a detection less than `max_skip_s` ago. The pipeline then keeps the tracks
where they were and still runs the rules, so dwell timers and schedules advance.

Pixel motion is measured on a small blurred grey copy of the frame (160 px wide) against the copy taken at the
last detection, not the previous frame: a person shifting slowly over several frames adds up until it counts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from plugin.config.cameras import CameraConfig, MotionGatingConfig
from plugin.pipeline.camera_signals import CameraSignals
from plugin.pipeline.tracking import TrackActivity
from plugin.rules.base import RuleBase
from plugin.rules.line_crossing import LineCrossingRuleConfig
from plugin.types import Frame

log = logging.getLogger(__name__)

WIDTH = 160  # analysed width: a person stays tens of pixels tall, and a comparison costs a fraction of a ms
BLUR = (5, 5)  # removes compression noise and single-pixel flicker before differencing
# the tracker confirms a track after 3 consecutive hits: detect on the first frames so people in view at start
# are confirmed before any frame is skipped
FIRST_FRAMES = 3

Reason = Literal["disabled", "first", "max_skip", "tracks", "camera", "pixels", "still"]
GrayImage = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class GateDecision:
    """Whether to run the detector on a frame, and why (the metrics' `reason` label)."""

    detect: bool
    reason: Reason
    changed_share: float | None = None  # pixel source: share of the frame changed inside the mask


def small_gray(image: npt.NDArray[np.uint8]) -> GrayImage:
    """The frame as a blurred grey image WIDTH pixels wide (aspect kept)."""
    h, w = image.shape[:2]
    height = max(1, round(WIDTH * h / w))
    # a linear resize to twice the size, then a 2x area average: over 10x cheaper than one INTER_AREA resize at a
    # non-integer ratio, and the area step plus the blur still average the sensor noise away
    half = cv2.resize(image, (2 * WIDTH, 2 * height), interpolation=cv2.INTER_LINEAR)
    small = cv2.resize(half, (WIDTH, height), interpolation=cv2.INTER_AREA)
    return np.asarray(cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), BLUR, 0), np.uint8)


def needs_whole_frame(rules: Sequence[RuleBase]) -> bool:
    """Whether a rule looks at the whole view (a fall anywhere, aggression without a zone)."""
    return any(not r.zone_refs() and not isinstance(r, LineCrossingRuleConfig) for r in rules)


def analysed_mask(
    camera: CameraConfig, rules: Sequence[RuleBase], size: tuple[int, int], margin: float
) -> GrayImage | None:
    """255 where motion counts at `size` (width, height): the camera's zones and its rules' lines, widened by
    `margin` of the width; None for the whole frame (no geometry, or a rule that watches everything)."""
    lines = [r.line for r in rules if isinstance(r, LineCrossingRuleConfig)]
    if (not camera.zones and not lines) or needs_whole_frame(rules):
        return None
    width, height = size
    scale = np.asarray([width - 1, height - 1], np.float64)
    mask = np.zeros((height, width), np.uint8)
    for zone in camera.zones:
        polygon = np.round(np.asarray(zone.polygon, np.float64) * scale).astype(np.int32)
        cv2.fillPoly(mask, [polygon], (255,))
    for a, b in lines:
        pa = tuple(int(v) for v in np.round(np.asarray(a) * scale))
        pb = tuple(int(v) for v in np.round(np.asarray(b) * scale))
        cv2.line(mask, pa, pb, (255,), 1)
    radius = round(margin * width)
    if radius > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = np.asarray(cv2.dilate(mask, kernel), np.uint8)
    return mask


class MotionGate:
    """One camera's gate: `decide` before detection, `detected` after a detection succeeded."""

    def __init__(
        self,
        camera: CameraConfig,
        rules: Sequence[RuleBase] = (),
        signals: Callable[[], CameraSignals | None] | None = None,
    ) -> None:
        self.camera = camera
        self.config: MotionGatingConfig = camera.motion_gating
        self.rules = list(rules)
        # camera-native motion: looked up per frame, because the events task may (re)create the camera's state
        self.signals = signals
        self._mask: GrayImage | None = None
        self._mask_size: tuple[int, int] | None = None
        # the last detected frame and its small image, made only when a frame is compared with it: when tracks or
        # the minimum rate decide, as in a busy view, the gate does no pixel work at all
        self._reference_frame: Frame | None = None
        self._reference: GrayImage | None = None
        self._current: tuple[Frame, GrayImage] | None = None  # the last compared frame's small image
        self._last_detect: datetime | None = None
        self._detections = 0
        if self.config.enabled:
            cfg = self.config
            area = "the whole view" if self.whole_frame else f"{len(camera.zones)} zone(s) and lines"
            log.info(
                "%s: motion gating on (%s, re-detect every %g s, pixel motion in %s)",
                camera.id, cfg.source, cfg.max_skip_s, area,
            )  # fmt: skip

    @property
    def whole_frame(self) -> bool:
        """Whether pixel motion anywhere in the view counts."""
        lines = any(isinstance(r, LineCrossingRuleConfig) for r in self.rules)
        return (not self.camera.zones and not lines) or needs_whole_frame(self.rules)

    def decide(self, frame: Frame, tracks: Callable[[], TrackActivity]) -> GateDecision:
        """Detect on this frame, or skip it; the first reason to detect wins (cheapest checks first). `tracks` gives
        the tracker's state as of its last update."""
        quick = self.quick_decision(frame, tracks)
        return quick if quick is not None else self.pixel_decision(frame)

    def quick_decision(self, frame: Frame, tracks: Callable[[], TrackActivity]) -> GateDecision | None:
        """The decision when it needs no pixel work (gating off, the first frames, moving people, the camera's own
        motion), else None: then `pixel_decision` compares the frame with the last detected one."""
        cfg = self.config
        if not cfg.enabled:
            return GateDecision(True, "disabled")
        if self._last_detect is None or self._detections < FIRST_FRAMES:
            return GateDecision(True, "first")
        if (frame.captured_at - self._last_detect).total_seconds() >= cfg.max_skip_s:
            return GateDecision(True, "max_skip")
        # a person moving, lost (maybe occluded) or not yet confirmed: the tracker needs every frame to keep them,
        # wherever they are, so journeys and staff status survive between zones
        activity = tracks()
        if activity.uncertain > 0 or bool((activity.speeds > cfg.min_track_speed).any()):
            return GateDecision(True, "tracks")
        if cfg.source in ("camera", "both") and self._camera_motion(frame.captured_at):
            return GateDecision(True, "camera")
        if cfg.source == "camera":
            return GateDecision(False, "still")
        return None

    def pixel_decision(self, frame: Frame) -> GateDecision:
        """Detect when enough pixels changed in the analysed area since the last detection (a fraction of a ms)."""
        cfg = self.config
        share = self._changed_share(frame)
        if share >= cfg.min_changed_share:
            return GateDecision(True, "pixels", share)
        return GateDecision(False, "still", share)

    def detected(self, frame: Frame) -> None:
        """The detector ran on `frame`: it is the new reference for pixel motion and for `max_skip_s`."""
        self._last_detect = frame.captured_at
        self._detections += 1
        self._reference_frame = frame
        # compared on the way here (motion): its small image is ready; otherwise it is made when first needed
        self._reference = self._current[1] if self._current is not None and self._current[0] is frame else None
        self._current = None  # its frame (1 MB at 768x432) is needed no more: do not hold it until the next compare

    def _camera_motion(self, at: datetime) -> bool:
        """The camera reports motion now or within `camera_hold_s`; no camera state yet counts as motion."""
        state = self.signals() if self.signals is not None else None
        return state is None or state.motion_within(at, self.config.camera_hold_s)

    def _changed_share(self, frame: Frame) -> float:
        """Share of the frame's pixels, inside the mask, changed since the last detection."""
        assert self._reference_frame is not None
        current = small_gray(frame.image)
        self._current = (frame, current)
        if self._reference is None:
            self._reference = small_gray(self._reference_frame.image)
        reference = self._reference
        if reference.shape != current.shape:  # the stream changed size
            return 1.0
        changed = cv2.threshold(cv2.absdiff(current, reference), self.config.pixel_threshold, 255, cv2.THRESH_BINARY)[1]
        mask = self._mask_for(current.shape[1], current.shape[0])
        if mask is not None:
            changed = cv2.bitwise_and(changed, mask)
        return cv2.countNonZero(changed) / float(current.size)

    def _mask_for(self, width: int, height: int) -> GrayImage | None:
        if self._mask_size != (width, height):
            self._mask_size = (width, height)
            self._mask = analysed_mask(self.camera, self.rules, (width, height), self.config.zone_margin)
        return self._mask
