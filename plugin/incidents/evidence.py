"""Evidence snapshots: the frame as JPEG with the zone and the person's box drawn on it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from plugin.types import ImageArray

ZONE_COLOUR = (0, 200, 255)  # BGR amber
BOX_COLOUR = (0, 0, 255)  # BGR red
JPEG_QUALITY = 85  # readable faces and text at ~60 KB for 768x432


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


def write_jpeg(path: Path, image: ImageArray) -> None:
    """Encode and write atomically (a reader never sees half a file)."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"JPEG encoding failed for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data.tobytes())
    tmp.replace(path)
