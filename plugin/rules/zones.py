"""Polygon zones in normalised coordinates, tested with a precomputed mask (one fancy-index lookup per frame)."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from plugin.config.cameras import ZoneConfig
from plugin.types import Detections, FloatArray


class PolygonZone:
    """A zone resolved to pixels lazily, once per frame size (main and sub streams share one config)."""

    def __init__(self, config: ZoneConfig) -> None:
        self.config = config
        self.id = config.id
        self._normalised = np.asarray(config.polygon, np.float64)
        self._masks: dict[tuple[int, int], npt.NDArray[np.bool_]] = {}

    def polygon_px(self, width: int, height: int) -> npt.NDArray[np.int32]:
        """The polygon in pixel coordinates of a width x height frame."""
        px: npt.NDArray[np.int32] = np.round(self._normalised * [width - 1, height - 1]).astype(np.int32)
        return px

    def _mask(self, width: int, height: int) -> npt.NDArray[np.bool_]:
        key = (width, height)
        mask = self._masks.get(key)
        if mask is None:
            canvas = np.zeros((height, width), np.uint8)
            cv2.fillPoly(canvas, [self.polygon_px(width, height)], (1,))
            mask = canvas.astype(bool)
            self._masks[key] = mask
        return mask

    def contains_points(self, points: FloatArray, width: int, height: int) -> npt.NDArray[np.bool_]:
        """Which (N,2) pixel points lie in the zone (edges included)."""
        if len(points) == 0:
            return np.zeros((0,), bool)
        xs = np.clip(np.round(points[:, 0]).astype(np.intp), 0, width - 1)
        ys = np.clip(np.round(points[:, 1]).astype(np.intp), 0, height - 1)
        result: npt.NDArray[np.bool_] = self._mask(width, height)[ys, xs]
        return result

    def contains(self, detections: Detections, width: int, height: int) -> npt.NDArray[np.bool_]:
        """Which detections are in the zone, by the zone's anchor (feet by default)."""
        if self.config.anchor == "center":
            xy = detections.xyxy
            points = np.stack([(xy[:, 0] + xy[:, 2]) / 2, (xy[:, 1] + xy[:, 3]) / 2], axis=1).astype(np.float32)
        else:
            points = detections.anchors_bottom_center()
        return self.contains_points(points, width, height)
