"""Detections columns and polygon zones (feet anchor, normalised coordinates, any resolution)."""

from __future__ import annotations

import numpy as np
import pytest

from plugin.config.cameras import ZoneConfig
from plugin.inference.triton import letterbox
from plugin.redact import REDACTED, redact_url
from plugin.rules.zones import PolygonZone
from plugin.types import Detections


def test_detections_validate_shapes() -> None:
    with pytest.raises(ValueError, match="scores must be"):
        Detections.from_arrays([[0, 0, 1, 1]], [0.5, 0.6], [0])
    with pytest.raises(ValueError, match="xyxy must be"):
        Detections(np.zeros((2, 3), np.float32), np.zeros(2, np.float32), np.zeros(2, np.int32))


def test_detections_filter_by_mask() -> None:
    d = Detections.from_arrays([[0, 0, 10, 20], [5, 5, 6, 6]], [0.9, 0.2], [0, 2], [4, 5])
    kept = d[d.scores > 0.5]
    assert len(kept) == 1
    assert kept.track_ids is not None and kept.track_ids.tolist() == [4]
    assert kept.anchors_bottom_center().tolist() == [[5.0, 20.0]]
    assert len(Detections.empty()) == 0


@pytest.mark.parametrize(
    ("box", "anchor", "inside"),
    [
        ((100, 50, 200, 400), "bottom_center", True),  # feet (150, 400) inside, head outside
        ((100, 50, 200, 400), "center", False),  # centre (150, 225) is above the zone
        ((500, 300, 700, 430), "bottom_center", False),  # right of the zone
        ((0, 0, 80, 431), "bottom_center", True),  # on the left edge
    ],
)
def test_zone_tests_the_feet_by_default(box: tuple[int, ...], anchor: str, inside: bool) -> None:
    zone = PolygonZone(ZoneConfig(id="z", polygon=[(0.0, 0.67), (0.4, 0.67), (0.4, 1.0), (0.0, 1.0)], anchor=anchor))  # type: ignore[arg-type]
    dets = Detections.from_arrays([box], [0.9], [0])
    assert zone.contains(dets, 768, 432).tolist() == [inside]


def test_zone_is_resolution_independent() -> None:
    zone = PolygonZone(ZoneConfig(id="z", polygon=[(0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.5, 1.0)]))
    main = Detections.from_arrays([[1000, 500, 1100, 900], [100, 100, 200, 900]], [0.9, 0.9], [0, 0])
    sub = Detections.from_arrays(main.xyxy / 4, main.scores, main.class_ids)
    assert zone.contains(main, 1920, 1080).tolist() == [True, False]
    assert zone.contains(sub, 480, 270).tolist() == [True, False]
    assert zone.contains(Detections.empty(), 480, 270).tolist() == []


def test_letterbox_is_top_left_and_reversible() -> None:
    img = np.zeros((432, 768, 3), np.uint8)
    img[:, :] = 200
    canvas, lb = letterbox(img, 416)
    assert canvas.shape == (416, 416, 3)
    assert canvas[0, 0].tolist() == [200, 200, 200]
    assert canvas[-1, -1].tolist() == [114, 114, 114]  # padding at the bottom
    assert lb.to_frame(np.array([[0, 0, 416, 234]], np.float32)).round().tolist() == [[0, 0, 768, 432]]


@pytest.mark.parametrize(
    ("raw", "leaked"),
    [
        ("rtsp://admin:s3cret@10.0.0.5:554/stream1", "s3cret"),
        ("http://cam/snap?user=a&password=hunter2&x=1", "hunter2"),
        ("opening rtsp://u:p%40ss@host/x failed", "p%40ss"),
    ],
)
def test_secrets_are_redacted(raw: str, leaked: str) -> None:
    out = redact_url(raw)
    assert leaked not in out
    assert REDACTED in out
