"""Triton python-backend model: YOLOX-nano on onnxruntime behind StoreSight's detector tensor contract.

Input `images_u8` uint8 [B,S,S,3] (BGR, letterboxed top-left, pad 114). Outputs, in input pixels:
`boxes` f32 [B,K,4] (x1,y1,x2,y2), `scores` f32 [B,K], `classes` i32 [B,K], `count` i32 [B,1] (valid rows;
Triton needs a non-empty shape on a batched output).
Only numpy and onnxruntime are needed in the interpreter that runs the stub.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _grid(input_size: int, strides: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Cell offsets (N,2) and per-row stride (N,1) in the order YOLOX concatenates its three heads."""
    cells, row_strides = [], []
    for stride in strides:
        n = input_size // stride
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        row_strides.append(np.full((n * n, 1), stride))
    return np.concatenate(cells).astype(np.float32), np.concatenate(row_strides).astype(np.float32)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, limit: int) -> np.ndarray:
    """Greedy NMS; returns kept indices, best first, at most `limit`."""
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
    return np.asarray(keep, dtype=np.int64)


class TritonPythonModel:
    """Normalise, infer, decode, NMS."""

    def initialize(self, args: dict) -> None:
        """Load the ONNX file named in the config parameters from this version directory."""
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.input_size = int(params.get("input_size", "416"))
        self.score_threshold = float(params.get("score_threshold", "0.25"))
        self.nms_iou = float(params.get("nms_iou", "0.45"))
        self.k = int(params.get("max_detections", "100"))
        strides = [int(s) for s in params.get("strides", "8,16,32").split(",")]
        self.cells, self.strides = _grid(self.input_size, strides)
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        onnx_path = os.path.join(version_dir, params.get("onnx_file", "yolox_nano.onnx"))
        if not os.path.isfile(onnx_path):
            raise pb_utils.TritonModelException(
                f"model file missing: {onnx_path}; run `storesight models fetch` to put it in place"
            )
        # `storesight models fetch` writes a symbolic-batch copy of the shipped (batch 1) export; use it when it is
        # there, else the file as given (an IT-supplied model may have a fixed batch).
        batch_file = params.get("onnx_batch_file", "")
        batch_path = os.path.join(version_dir, batch_file) if batch_file else ""
        path = batch_path if batch_path and os.path.isfile(batch_path) else onnx_path
        options = ort.SessionOptions()
        threads = int(params.get("ort_threads", "0"))
        if threads > 0:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        declared = self.session.get_inputs()[0].shape[2:]
        if any(isinstance(d, int) and d != self.input_size for d in declared):
            raise pb_utils.TritonModelException(
                f"{os.path.basename(path)} takes {declared} images, the config's input_size is {self.input_size}: "
                "run `storesight models fetch` to derive the copy that takes any size"
            )
        self.per_call = self._images_per_call()
        pb_utils.Logger.log_info(
            f"yolox_nano: {os.path.basename(path)}, "
            + ("whole batch per onnxruntime call" if self.per_call is None else f"{self.per_call} image(s) per call")
        )

    def _images_per_call(self) -> int | None:
        """None when the session runs any batch in one call, else the fixed batch it takes.

        A symbolic batch dimension is only a declaration: a graph with constant reshapes fails at batch 2, so it is
        probed once here rather than failing the first real batch."""
        dim = self.session.get_inputs()[0].shape[0]
        if isinstance(dim, int) and dim > 0:
            return dim
        probe = np.zeros((2, 3, self.input_size, self.input_size), np.float32)
        try:
            out = self.session.run(None, {self.input_name: probe})[0]
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types: any means "cannot batch"
            pb_utils.Logger.log_warn(f"yolox_nano: the model cannot run a batch of 2 ({exc}); one image per call")
            return 1
        return None if out.shape[0] == 2 else 1

    def _forward(self, images: np.ndarray) -> np.ndarray:
        """Raw head output [B,N,85] for uint8 BGR [B,S,S,3]."""
        x = images.transpose(0, 3, 1, 2).astype(np.float32)
        n = self.per_call
        if n is None or len(x) == n:
            return self.session.run(None, {self.input_name: x})[0]
        if n == 1:
            return np.concatenate([self.session.run(None, {self.input_name: x[i : i + 1]})[0] for i in range(len(x))])
        # a fixed batch larger than 1: pad the last chunk with copies of its first image, drop their outputs
        chunks = []
        for start in range(0, len(x), n):
            part = x[start : start + n]
            padded = np.concatenate([part, np.repeat(part[:1], n - len(part), axis=0)])
            chunks.append(self.session.run(None, {self.input_name: padded})[0][: len(part)])
        return np.concatenate(chunks)

    def _decode(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """One image's raw output to padded (boxes, scores, classes) and the valid count."""
        xy = (raw[:, :2] + self.cells) * self.strides
        wh = np.exp(raw[:, 2:4]) * self.strides
        class_probs = raw[:, 5:] * raw[:, 4:5]
        classes = class_probs.argmax(axis=1)
        scores = class_probs[np.arange(len(classes)), classes]
        mask = scores >= self.score_threshold
        xy, wh, scores, classes = xy[mask], wh[mask], scores[mask], classes[mask]
        boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)
        # class-aware NMS in one pass: shift each class's boxes to its own region of the plane
        offsets = classes[:, None].astype(np.float32) * (4.0 * self.input_size)
        keep = _nms(boxes + offsets, scores, self.nms_iou, self.k)
        n = len(keep)
        out_boxes = np.zeros((self.k, 4), np.float32)
        out_scores = np.zeros((self.k,), np.float32)
        out_classes = np.full((self.k,), -1, np.int32)
        out_boxes[:n] = np.clip(boxes[keep], 0, self.input_size)
        out_scores[:n] = scores[keep]
        out_classes[:n] = classes[keep]
        return out_boxes, out_scores, out_classes, n

    def execute(self, requests: list) -> list:
        """Run all requests of a dynamic batch as one forward pass."""
        batches = [pb_utils.get_input_tensor_by_name(r, "images_u8").as_numpy() for r in requests]
        raw = self._forward(np.concatenate(batches))
        responses, start = [], 0
        for batch in batches:
            decoded = [self._decode(raw[start + i]) for i in range(len(batch))]
            start += len(batch)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("boxes", np.stack([d[0] for d in decoded])),
                        pb_utils.Tensor("scores", np.stack([d[1] for d in decoded])),
                        pb_utils.Tensor("classes", np.stack([d[2] for d in decoded])),
                        pb_utils.Tensor("count", np.asarray([[d[3]] for d in decoded], np.int32)),
                    ]
                )
            )
        return responses

    def finalize(self) -> None:
        """Release the onnxruntime session."""
        self.session = None
