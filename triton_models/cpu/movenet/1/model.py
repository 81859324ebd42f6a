"""Triton python-backend model: MoveNet SinglePose Lightning on onnxruntime.

Input `crops_u8` uint8 [B,192,192,3] (RGB person crops, padded square). Output `keypoints` f32 [B,17,3]:
(y, x, score) per COCO keypoint, y and x normalised to the crop. The shipped ONNX (a tf2onnx conversion of the
TFLite model) has a fixed batch of 1, so a batch runs as B forward passes in one execution.
Only numpy and onnxruntime are needed in the interpreter that runs the stub.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Crops in, keypoints out."""

    def initialize(self, args: dict) -> None:
        """Load the ONNX file named in the config parameters from this version directory."""
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.input_size = int(params.get("input_size", "192"))
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        onnx_path = os.path.join(version_dir, params.get("onnx_file", "movenet_lightning.onnx"))
        if not os.path.isfile(onnx_path):
            raise pb_utils.TritonModelException(
                f"model file missing: {onnx_path}; run `storesight models fetch --from DIR` with a directory "
                "holding movenet_lightning.onnx (README: Pose)"
            )
        options = ort.SessionOptions()
        threads = int(params.get("ort_threads", "0"))
        if threads > 0:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.fixed_batch = self.session.get_inputs()[0].shape[0] == 1

    def _forward(self, crops: np.ndarray) -> np.ndarray:
        """Keypoints [B,17,3] for uint8 RGB [B,S,S,3]."""
        if self.fixed_batch and len(crops) > 1:
            outs = [self.session.run(None, {self.input_name: crops[i : i + 1]})[0] for i in range(len(crops))]
            raw = np.concatenate(outs)
        else:
            raw = self.session.run(None, {self.input_name: crops})[0]
        return raw.reshape(len(crops), 17, 3).astype(np.float32)

    def execute(self, requests: list) -> list:
        """Run all requests of a dynamic batch in one execution."""
        batches = [pb_utils.get_input_tensor_by_name(r, "crops_u8").as_numpy() for r in requests]
        keypoints = self._forward(np.ascontiguousarray(np.concatenate(batches)))
        responses, start = [], 0
        for batch in batches:
            out = keypoints[start : start + len(batch)]
            start += len(batch)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("keypoints", out)]))
        return responses

    def finalize(self) -> None:
        """Release the onnxruntime session."""
        self.session = None
