"""What an exit zone looks like empty, learned from the video, and how far the current view differs from it.

blocked_exit uses it for obstructions the detector cannot name (boxes, cages, pallets: COCO has no class for them).
The zone's bounding box is cut out, turned grey, shrunk to at most `SIDE` pixels a side and masked by the polygon.
The reference is a slow running average of those crops, updated only while no detection touches the zone, the
view is still (no undetected passer-by) and nothing in it is flagged as changed, so an obstruction never fades
into the reference and gradual daylight drift does.

Each crop is compared after normalising both sides to their own median and spread (interquartile range) over the
same visible pixels, so a global brightness or contrast change (lights dimmed, a camera's auto-exposure) cancels
out. A pixel differs when the normalised values are more than `pixel_delta` spreads apart; the zone is changed
when `change_share` of its visible pixels differ. Pixels under a detection's box (grown by a margin for its
shadow) are not visible: a person or a named object explains them.

What it cannot handle: light that changes one part of the zone and not the rest (a sun patch, a door opened onto
a lit corridor, a shadow of someone outside the zone) reads as a change; an object the same tone as the floor
behind it does not; a near-uniform zone (a plain wall) has its spread floored at `MIN_SPREAD` grey levels, so
there a strong contrast change is not fully cancelled; and a zone learned while obstructed reads the obstruction's
removal as a change, so learn it empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import Field

from plugin.config.base import Strict
from plugin.rules.zones import PolygonZone
from plugin.types import FloatArray, ImageArray

SIDE = 64  # crop size: small enough to cost well under a millisecond, big enough for a box a tenth of the zone
MIN_SPREAD = 6.0  # grey levels: floors the spread of near-uniform zones, where sensor noise would be amplified
MIN_VISIBLE_SHARE = 0.5  # with less of the zone visible (people in front of it), the view proves nothing either way
STILL_SHARE = 0.02  # between consecutive crops, more differing pixels than this is motion: no learning then
BOX_MARGIN = 0.15  # a detection hides its box grown by this share of its height: its shadow and a loose box edge
MIN_LEARN_SAMPLES = 5
MAX_LEARN_STEP_S = 1.0  # one sample after a gap (someone passed) counts for at most this much learning time

State = Literal["learning", "clear", "changed", "occluded"]
F32 = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]


class ExitReferenceConfig(Strict):
    """blocked_exit's learned empty-zone view: a persistent change against it is an obstruction nobody detected."""

    enabled: bool = Field(default=True, description="learn the empty zone and flag persistent changes against it")
    learn_s: float = Field(
        default=30.0,
        gt=0,
        description="seconds of empty, still zone before it is used, and the time constant of its slow updates "
        "while empty (longer ignores more passing shadows, follows daylight more slowly)",
    )
    change_share: float = Field(
        default=0.15,
        gt=0,
        lt=1,
        description="changed when this share of the zone's visible pixels differ from the reference; lower finds "
        "smaller objects and more shadows",
    )
    pixel_delta: float = Field(
        default=1.5,
        gt=0,
        description="a pixel differs when it is this many spreads (interquartile range / 1.349 of the zone's grey "
        "levels, after brightness normalisation) from the reference; lower finds low-contrast objects and noise",
    )


@dataclass(frozen=True)
class ReferenceView:
    """The verdict on one frame: the state, the share of visible zone pixels that differ, where (frame pixels)."""

    state: State
    share: float = 0.0
    box: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class _Geometry:
    """The zone's bounding box in one frame size and its polygon mask at crop size."""

    x0: int
    y0: int
    x1: int
    y1: int
    size: tuple[int, int]  # crop (width, height)
    mask: BoolArray


def _geometry(zone: PolygonZone, width: int, height: int) -> _Geometry:
    poly = zone.polygon_px(width, height)
    x0, y0 = (int(v) for v in poly.min(axis=0))
    x1, y1 = (int(v) + 1 for v in poly.max(axis=0))
    scale = min(1.0, SIDE / max(x1 - x0, y1 - y0, 1))
    size = (max(round((x1 - x0) * scale), 1), max(round((y1 - y0) * scale), 1))
    canvas = np.zeros((size[1], size[0]), np.uint8)
    cv2.fillPoly(canvas, [np.round((poly - [x0, y0]) * scale).astype(np.int32)], (1,))
    return _Geometry(x0, y0, x1, y1, size, canvas.astype(bool))


def _normalised(grey: F32, visible: BoolArray) -> F32:
    """Grey levels as distances from the visible pixels' median, in spreads (IQR / 1.349, floored)."""
    values = grey[visible]
    n = len(values)
    q1, median, q3 = np.partition(values, (n // 4, n // 2, 3 * n // 4))[[n // 4, n // 2, 3 * n // 4]]
    spread = max(float(q3 - q1) / 1.349, MIN_SPREAD)
    result: F32 = ((grey - median) / spread).astype(np.float32)
    return result


def _largest_blob(geo: _Geometry, diff: BoolArray) -> tuple[float, float, float, float]:
    """Frame-pixel box of the largest connected patch of differing pixels (scattered noise would span the zone)."""
    _, _, stats, _ = cv2.connectedComponentsWithStats(diff.astype(np.uint8), connectivity=8)
    x, y, w, h, _ = stats[1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))].tolist()
    sx, sy = (geo.x1 - geo.x0) / geo.size[0], (geo.y1 - geo.y0) / geo.size[1]
    return (geo.x0 + x * sx, geo.y0 + y * sy, geo.x0 + (x + w) * sx, geo.y0 + (y + h) * sy)


class EmptyZoneReference:
    """One zone's learned empty view; `update` each analysed frame with the boxes of everything detected."""

    def __init__(self, config: ExitReferenceConfig, zone: PolygonZone) -> None:
        self.config = config
        self.zone = zone
        self._geo: _Geometry | None = None
        self._frame_size: tuple[int, int] | None = None
        self._ref: F32 | None = None
        self._samples = 0
        self._learned_s = 0.0
        self._last_learn: datetime | None = None
        self._previous: F32 | None = None  # the last crop, normalised over the whole zone: for stillness

    @property
    def learned(self) -> bool:
        """Whether the reference has seen `learn_s` of empty, still zone."""
        return self._samples >= MIN_LEARN_SAMPLES and self._learned_s >= self.config.learn_s

    def update(self, image: ImageArray, boxes: FloatArray, t: datetime) -> ReferenceView:
        """Compare the frame with the reference (once learned), then learn from it if the zone is empty and still."""
        height, width = image.shape[:2]
        geo = self._geo if self._frame_size == (width, height) else None
        if geo is None:
            geo = self._reset(width, height)
        small = cv2.resize(image[geo.y0 : geo.y1, geo.x0 : geo.x1], geo.size, interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32)
        hidden = self._hidden(geo, boxes, BOX_MARGIN) & geo.mask
        visible = geo.mask & ~hidden
        # learning stops while a detection itself is in the zone; its margin (for shadows) only hides pixels, or a
        # person standing next to the zone would keep it from ever learning
        touched = bool((self._hidden(geo, boxes, 0.0) & geo.mask).any())
        whole = _normalised(grey, geo.mask)
        moving = self._previous is None or self._differs(whole, self._previous, geo.mask) > STILL_SHARE
        self._previous = whole
        if visible.sum() < MIN_VISIBLE_SHARE * geo.mask.sum():
            return ReferenceView("occluded")
        view = self._compare(geo, _normalised(grey, visible) if touched else whole, visible)
        if view.state != "changed" and not touched and not moving:
            self._learn(grey, t)
        return view

    def _reset(self, width: int, height: int) -> _Geometry:
        """A new frame size (a stream switched resolution): start learning over."""
        self._geo = _geometry(self.zone, width, height)
        self._frame_size = (width, height)
        self._ref, self._previous = None, None
        self._samples, self._learned_s, self._last_learn = 0, 0.0, None
        return self._geo

    def _hidden(self, geo: _Geometry, boxes: FloatArray, grow: float) -> BoolArray:
        """Crop pixels behind a detection's box, grown by `grow` of its height on every side."""
        hidden = np.zeros_like(geo.mask)
        if len(boxes) == 0:
            return hidden
        sx, sy = geo.size[0] / (geo.x1 - geo.x0), geo.size[1] / (geo.y1 - geo.y0)
        margin = grow * (boxes[:, 3] - boxes[:, 1])
        x0 = np.floor((boxes[:, 0] - margin - geo.x0) * sx).astype(int).clip(0, geo.size[0])
        x1 = np.ceil((boxes[:, 2] + margin - geo.x0) * sx).astype(int).clip(0, geo.size[0])
        y0 = np.floor((boxes[:, 1] - margin - geo.y0) * sy).astype(int).clip(0, geo.size[1])
        y1 = np.ceil((boxes[:, 3] + margin - geo.y0) * sy).astype(int).clip(0, geo.size[1])
        for a, b, c, d in zip(x0.tolist(), x1.tolist(), y0.tolist(), y1.tolist(), strict=True):
            hidden[c:d, a:b] = True
        return hidden

    def _differs(self, a: F32, b: F32, where: BoolArray) -> float:
        """The share of pixels in `where` whose normalised values are more than pixel_delta apart."""
        return float((np.abs(a - b)[where] > self.config.pixel_delta).mean())

    def _compare(self, geo: _Geometry, current: F32, visible: BoolArray) -> ReferenceView:
        """The current crop (normalised over the visible pixels) against the reference, normalised likewise."""
        if self._ref is None or not self.learned:
            return ReferenceView("learning")
        diff = (np.abs(current - _normalised(self._ref, visible)) > self.config.pixel_delta) & visible
        share = float(diff.sum() / visible.sum())
        if share < self.config.change_share:
            return ReferenceView("clear", share)
        return ReferenceView("changed", share, _largest_blob(geo, diff))

    def _learn(self, grey: F32, t: datetime) -> None:
        """Running average: the plain mean of the first samples, then an exponential one with time constant learn_s."""
        dt = 0.0 if self._last_learn is None else min((t - self._last_learn).total_seconds(), MAX_LEARN_STEP_S)
        self._last_learn = t
        self._samples += 1
        self._learned_s += dt
        if self._ref is None:
            self._ref = grey.copy()
            return
        alpha = max(1.0 / self._samples, dt / self.config.learn_s)
        self._ref += alpha * (grey - self._ref)
