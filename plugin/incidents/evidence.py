"""Evidence snapshots: the frame as JPEG with the zone and the person's box drawn on it; and the copy with the
people blurred, for sinks whose config says `privacy: blur` (the local snapshot keeps the original)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from plugin.private import private_dir, write_private
from plugin.types import ImageArray

NormBox = tuple[float, float, float, float]  # x1, y1, x2, y2 in 0..1 of the image

ZONE_COLOUR = (0, 200, 255)  # BGR amber
BOX_COLOUR = (0, 0, 255)  # BGR red
JPEG_QUALITY = 85  # readable faces and text at ~60 KB for 768x432
BLUR_MARGIN = 0.1  # a person's box grows by this share of its size each way: hair, raised arms
BLUR_CELLS = 8  # a blurred box keeps this many cells across its width: a shape, no face


def draw_snapshot(
    image: ImageArray,
    box: tuple[float, float, float, float] | None,
    zone_px: npt.NDArray[np.int32] | None,
    label: str,
) -> ImageArray:
    """A copy of the image with the zone outline, the box and its label."""
    out = image.copy()
    if zone_px is not None:
        overlay = out.copy()
        cv2.fillPoly(overlay, [zone_px], ZONE_COLOUR)
        cv2.addWeighted(overlay, 0.2, out, 0.8, 0, dst=out)
        cv2.polylines(out, [zone_px], True, ZONE_COLOUR, 2, cv2.LINE_AA)
    if box is not None:
        x1, y1, x2, y2 = (round(v) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), BOX_COLOUR, 2, cv2.LINE_AA)
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        ty = max(y1, th + 6)
        cv2.rectangle(out, (x1, ty - th - 6), (x1 + tw + 6, ty), BOX_COLOUR, -1)
        cv2.putText(out, label, (x1 + 3, ty - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def blur_people(image: ImageArray, people: Sequence[NormBox] | None) -> ImageArray:
    """A copy of the image with each person's box (0..1, grown by BLUR_MARGIN) pixelated beyond recognition and
    every other pixel unchanged; `people` None (nobody knows where the people are) blurs the whole image."""
    out = image.copy()
    h, w = out.shape[:2]
    boxes = [(0.0, 0.0, 1.0, 1.0)] if people is None else people
    for x1, y1, x2, y2 in boxes:
        mx, my = BLUR_MARGIN * (x2 - x1), BLUR_MARGIN * (y2 - y1)
        left, top = max(0, int((x1 - mx) * w)), max(0, int((y1 - my) * h))
        right, bottom = min(w, int(np.ceil((x2 + mx) * w))), min(h, int(np.ceil((y2 + my) * h)))
        if right - left < 2 or bottom - top < 2:
            continue
        roi = out[top:bottom, left:right]
        cells_x = max(1, min(BLUR_CELLS, right - left))
        cells_y = max(1, min(round(BLUR_CELLS * (bottom - top) / (right - left)), bottom - top))
        small = cv2.resize(roi, (cells_x, cells_y), interpolation=cv2.INTER_AREA)
        out[top:bottom, left:right] = cv2.resize(small, (right - left, bottom - top), interpolation=cv2.INTER_NEAREST)
    return out


def encode_jpeg(image: ImageArray) -> bytes:
    """The image as JPEG at the evidence quality."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError("JPEG encoding failed")
    return bytes(data.tobytes())


def decode_jpeg(data: bytes) -> ImageArray:
    """A JPEG's pixels (BGR)."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError("not a readable JPEG")
    return np.ascontiguousarray(image, np.uint8)


def write_jpeg(path: Path, image: ImageArray) -> None:
    """Encode and write atomically (a reader never sees half a file), private (0600) in a private folder."""
    data = encode_jpeg(image)
    private_dir(path.parent)
    write_private(path, data)


def blurred_path(snapshot: Path | str) -> Path:
    """Where an incident's snapshot with the people blurred lives: next to the original."""
    p = Path(snapshot)
    return p.with_name(p.stem + ".blurred.jpg")
