"""In-process YOLOX on onnxruntime, for the benchmark's naive baseline only (the product detects through Triton).

It reads the same model repository entry the embedded Triton serves (the ONNX file and the `parameters` of its
config.pbtxt), so both sides of the comparison run the same weights, input size, thresholds and class names. The
decode and NMS mirror the CPU flavour's `model.py` (the tensor contract's semantics) but run one image at a time:
the baseline is "one loop per camera, no batching", on purpose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from plugin.errors import ModelError
from plugin.inference.triton import letterbox
from plugin.types import Detections, ImageArray

F32 = npt.NDArray[np.float32]

_PARAM = re.compile(r'key:\s*"(?P<key>[^"]+)"\s*,\s*value:\s*\{\s*string_value:\s*"(?P<value>[^"]*)"')


def read_model_parameters(config_pbtxt: Path) -> dict[str, str]:
    """The string `parameters` of a Triton model config (all the CPU flavour keeps there)."""
    try:
        text = config_pbtxt.read_text()
    except OSError as exc:
        raise ModelError(f"cannot read the model config {config_pbtxt}: {exc}") from None
    return {m["key"]: m["value"] for m in _PARAM.finditer(text)}


def model_file(version_dir: Path, params: dict[str, str]) -> Path:
    """The ONNX file the CPU flavour's model.py runs: the derived copy (symbolic batch and image size) when it is
    there, else the file as given, so the baseline runs exactly what Triton serves."""
    batch = params.get("onnx_batch_file", "")
    if batch and (version_dir / batch).is_file():
        return version_dir / batch
    return version_dir / params.get("onnx_file", "yolox_nano.onnx")


@dataclass(frozen=True)
class YoloxSettings:
    """What decoding needs, read from the model's config.pbtxt."""

    input_size: int
    strides: tuple[int, ...]
    score_threshold: float
    nms_iou: float
    max_detections: int
    class_names: tuple[str, ...]

    @classmethod
    def from_parameters(cls, params: dict[str, str]) -> YoloxSettings:
        """Parse the config parameters, with the CPU flavour's defaults."""
        return cls(
            input_size=int(params.get("input_size", "416")),
            strides=tuple(int(s) for s in params.get("strides", "8,16,32").split(",")),
            score_threshold=float(params.get("score_threshold", "0.25")),
            nms_iou=float(params.get("nms_iou", "0.45")),
            max_detections=int(params.get("max_detections", "100")),
            class_names=tuple(n.strip() for n in params.get("class_names", "").split(",") if n.strip()),
        )


def _grid(input_size: int, strides: tuple[int, ...]) -> tuple[F32, F32]:
    """Cell offsets (N,2) and per-row stride (N,1), in the order YOLOX concatenates its heads."""
    cells, row_strides = [], []
    for stride in strides:
        n = input_size // stride
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        row_strides.append(np.full((n * n, 1), stride))
    return np.concatenate(cells).astype(np.float32), np.concatenate(row_strides).astype(np.float32)


def nms(boxes: F32, scores: F32, iou_threshold: float, limit: int) -> npt.NDArray[np.intp]:
    """Greedy non-maximum suppression; kept indices, best first, at most `limit`."""
    order = np.argsort(-scores)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order.size and len(keep) < limit:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        iou = inter / (areas[i] + areas[rest] - inter + 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.intp)


class OnnxYolox:
    """YOLOX on an onnxruntime session; `detect` is blocking and thread-safe (onnxruntime's `run` is)."""

    def __init__(
        self, onnx_file: Path, settings: YoloxSettings, intra_op_threads: int = 0, own_size: bool = False
    ) -> None:
        """`own_size`: a file that declares a fixed image size runs at that size whatever `settings` say (the
        export as published takes 416 px only)."""
        if not onnx_file.is_file():
            raise ModelError(f"model file missing: {onnx_file}; run `storesight models fetch` to put it in place")
        try:
            import onnxruntime as ort  # type: ignore[import-untyped,import-not-found,unused-ignore]
        except ImportError:
            raise ModelError("the naive baseline needs onnxruntime (pip install 'storesight[embedded]')") from None
        options = ort.SessionOptions()
        if intra_op_threads > 0:
            options.intra_op_num_threads = intra_op_threads
        self.session: Any = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        self.input_name: str = self.session.get_inputs()[0].name
        declared = self.session.get_inputs()[0].shape[2:]
        if own_size and declared and all(isinstance(d, int) for d in declared):
            settings = replace(settings, input_size=int(declared[0]))
        self.settings = settings
        self.cells, self.row_strides = _grid(settings.input_size, settings.strides)

    def _decode(self, raw: F32) -> tuple[F32, F32, npt.NDArray[np.int32]]:
        """One image's raw head output (N,85) to boxes (input pixels), scores and classes after NMS."""
        s = self.settings
        xy = (raw[:, :2] + self.cells) * self.row_strides
        wh = np.exp(raw[:, 2:4]) * self.row_strides
        class_probs = raw[:, 5:] * raw[:, 4:5]
        classes = class_probs.argmax(axis=1)
        scores = class_probs[np.arange(len(classes)), classes]
        mask = scores >= s.score_threshold
        xy, wh, scores, classes = xy[mask], wh[mask], scores[mask], classes[mask]
        boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)
        # class-aware NMS in one pass: each class's boxes shifted to their own region of the plane
        offsets = classes[:, None].astype(np.float32) * (4.0 * s.input_size)
        keep = nms(boxes + offsets, scores, s.nms_iou, s.max_detections)
        kept: F32 = np.clip(boxes[keep], 0, s.input_size).astype(np.float32)
        return kept, scores[keep].astype(np.float32), classes[keep].astype(np.int32)

    def detect(self, image: ImageArray) -> Detections:
        """Letterbox, forward, decode, NMS; boxes in the image's own pixels."""
        boxed, lb = letterbox(image, self.settings.input_size)
        x = boxed.transpose(2, 0, 1)[None].astype(np.float32)
        raw = self.session.run(None, {self.input_name: x})[0][0]
        boxes, scores, classes = self._decode(raw)
        return Detections.from_arrays(lb.to_frame(boxes), scores, classes)
