"""PoseClient: MoveNet keypoints for chosen person boxes, through Triton (model `movenet`, see its config.pbtxt).

Each person box is widened by a margin, made square around its centre (so the person is not distorted), cut out of
the frame (padding with black where the square leaves the frame), resized to 192x192 RGB, sent as one batch per
frame, and the keypoints are mapped back to frame pixels. Keypoints travel in the bridge as float32 [17,3] rows of
(x, y, score) in frame pixels (note: the model itself answers (y, x, score), normalised to the crop).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from plugin.errors import InferenceUnavailable, ModelError
from plugin.inference.triton import triton_aio_client, triton_aio_module
from plugin.types import FloatArray, ImageArray

log = logging.getLogger(__name__)

POSE_MODEL = "movenet"
CROP_SIZE = 192

# COCO keypoint order, as MoveNet answers
NOSE, L_EYE, R_EYE, L_EAR, R_EAR = 0, 1, 2, 3, 4
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 5, 6, 7, 8, 9, 10
L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 11, 12, 13, 14, 15, 16
KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
)  # fmt: skip


@dataclass(frozen=True)
class CropWindow:
    """Where a square crop sits in the frame: top-left corner and side, in frame pixels."""

    x0: float
    y0: float
    side: float

    def to_frame(self, yx_score: FloatArray) -> FloatArray:
        """Model output rows (y, x, score), normalised to the crop, to (x, y, score) in frame pixels."""
        out = np.empty_like(yx_score, dtype=np.float32)
        out[..., 0] = self.x0 + yx_score[..., 1] * self.side
        out[..., 1] = self.y0 + yx_score[..., 0] * self.side
        out[..., 2] = yx_score[..., 2]
        return out


def crop_person(
    image_bgr: ImageArray, box: Sequence[float], size: int = CROP_SIZE, margin: float = 0.15
) -> tuple[ImageArray, CropWindow]:
    """A size x size RGB crop of the square around `box` (x1,y1,x2,y2) widened by `margin` of its longer side."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) * (1.0 + 2.0 * margin)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    x0, y0 = cx - side / 2.0, cy - side / 2.0
    h, w = image_bgr.shape[:2]
    ix0, iy0 = int(np.floor(x0)), int(np.floor(y0))
    iside = int(np.ceil(side))
    canvas = np.zeros((iside, iside, 3), np.uint8)
    sx0, sy0 = max(ix0, 0), max(iy0, 0)
    sx1, sy1 = min(ix0 + iside, w), min(iy0 + iside, h)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - iy0 : sy1 - iy0, sx0 - ix0 : sx1 - ix0] = image_bgr[sy0:sy1, sx0:sx1]
    interp = cv2.INTER_AREA if iside > size else cv2.INTER_LINEAR
    crop = cv2.cvtColor(cv2.resize(canvas, (size, size), interpolation=interp), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(crop, dtype=np.uint8), CropWindow(float(ix0), float(iy0), float(iside))


class PoseClient:
    """Keypoints for person boxes from the Triton pose model; one tritonclient shared by all cameras."""

    def __init__(self, url: str, model: str = POSE_MODEL, request_timeout_s: float = 10.0) -> None:
        self.url = url
        self.model = model
        self.request_timeout_s = request_timeout_s
        self.scheme, _, self._address = url.partition("://")
        self.max_batch_size = 0
        self._client: Any = None

    async def _ensure(self) -> Any:
        if self._client is None:
            self._client = triton_aio_client(self.scheme, self._address)
        return self._client

    async def _load_info(self, client: Any) -> None:
        if self.scheme == "grpc":
            raw = (await client.get_model_config(self.model, as_json=True))["config"]
        else:
            raw = await client.get_model_config(self.model)
        inputs = {i["name"]: i for i in raw.get("input", [])}
        if "crops_u8" not in inputs or [int(d) for d in inputs["crops_u8"]["dims"]] != [CROP_SIZE, CROP_SIZE, 3]:
            raise ModelError(f"model {self.model!r} does not take crops_u8 [{CROP_SIZE},{CROP_SIZE},3]")
        self.max_batch_size = max(1, int(raw.get("max_batch_size", 1)))

    async def estimate(self, image_bgr: ImageArray, boxes: npt.NDArray[np.float32]) -> FloatArray:
        """Keypoints [N,17,3] as (x, y, score) in frame pixels for the N boxes (x1,y1,x2,y2) of one frame."""
        if len(boxes) == 0:
            return np.zeros((0, 17, 3), np.float32)
        from tritonclient.utils import InferenceServerException

        client = await self._ensure()
        try:
            if self.max_batch_size == 0:
                await self._load_info(client)
            requests = await asyncio.to_thread(self._requests, image_bgr, boxes)
            out: list[FloatArray] = []
            mod = triton_aio_module(self.scheme)
            for inp, windows in requests:
                async with asyncio.timeout(self.request_timeout_s):
                    result = await client.infer(self.model, [inp], outputs=[mod.InferRequestedOutput("keypoints")])
                raw = result.as_numpy("keypoints").reshape(len(windows), 17, 3)
                out.extend(win.to_frame(raw[i]) for i, win in enumerate(windows))
        except TimeoutError:
            raise InferenceUnavailable(
                f"Triton at {self.url}: no pose answer in {self.request_timeout_s:.0f} s"
            ) from None
        except InferenceServerException as exc:
            raise InferenceUnavailable(f"Triton at {self.url}, model {self.model!r}: {exc.message()}") from None
        except OSError as exc:
            raise InferenceUnavailable(f"Triton at {self.url}: {exc}") from None
        return np.stack(out).astype(np.float32)

    def _requests(self, image_bgr: ImageArray, boxes: npt.NDArray[np.float32]) -> list[tuple[Any, list[CropWindow]]]:
        """Crops of the boxes as request inputs of at most max_batch_size each; runs in a worker thread (cutting,
        resizing and serialising crops is per-frame work that would hold the event loop all cameras share)."""
        crops = [crop_person(image_bgr, b) for b in boxes]
        mod = triton_aio_module(self.scheme)
        requests = []
        for start in range(0, len(crops), self.max_batch_size):
            part = crops[start : start + self.max_batch_size]
            batch = np.stack([c for c, _ in part])
            inp = mod.InferInput("crops_u8", list(batch.shape), "UINT8")
            inp.set_data_from_numpy(batch)
            requests.append((inp, [win for _, win in part]))
        return requests

    async def close(self) -> None:
        """Close the underlying client."""
        if self._client is not None:
            await self._client.close()
            self._client = None
