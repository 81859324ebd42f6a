"""Triton's queue and compute statistics, read from a real tritonserver over gRPC and HTTP (their JSON differs:
gRPC writes 64-bit numbers as strings and leaves zeros out), agree and grow with each detection."""

from __future__ import annotations

import numpy as np
import pytest

from plugin.errors import InferenceUnavailable
from plugin.inference.server import EmbeddedTriton, free_port
from plugin.inference.triton import TritonInferenceClient

pytestmark = pytest.mark.triton


async def test_statistics_over_grpc_and_http(triton: EmbeddedTriton) -> None:
    grpc = TritonInferenceClient(triton.grpc_url, "yolox_nano")
    http = TritonInferenceClient(triton.http_url, "yolox_nano")
    try:
        await grpc.wait_ready(30)
        [before] = await grpc.statistics(["yolox_nano"])
        image = np.zeros((240, 320, 3), np.uint8)
        await grpc.detect([image])
        await grpc.detect([image, image])
        [after_grpc] = await grpc.statistics(["yolox_nano"])
        [after_http] = await http.statistics(["yolox_nano"])
    finally:
        await grpc.close()
        await http.close()
    # other tests share the server: compare growth, at least what this test sent
    assert after_grpc.requests - before.requests >= 2
    assert after_grpc.inferences - before.inferences >= 3
    assert after_grpc.queue_s > before.queue_s and after_grpc.compute_infer_s > before.compute_infer_s
    assert after_grpc.compute_input_s > 0 and after_grpc.compute_output_s > 0
    # both protocols read the same totals (nothing else ran between the two reads in this test's event loop,
    # though another process could have: so HTTP sees at least what gRPC saw)
    assert after_http.model == after_grpc.model == "yolox_nano"
    assert after_http.requests >= after_grpc.requests and after_http.executions >= after_grpc.executions
    assert after_http.compute_infer_s >= after_grpc.compute_infer_s


async def test_no_server_is_inference_unavailable() -> None:
    client = TritonInferenceClient(f"grpc://127.0.0.1:{free_port()}", "yolox_nano", request_timeout_s=2)
    try:
        with pytest.raises(InferenceUnavailable, match="no statistics for 'yolox_nano'"):
            await client.statistics(["yolox_nano"])
    finally:
        await client.close()
