"""The onnx/gpu flavours' detector graph (plugin/inference/detector_graph.py): the contract's tensors, batches, and
the same detections as today's python-backend model (triton_models/cpu/yolox_nano) on the shared clip's frames.

The embedded Triton has only the python backend, so the graph runs in-process on onnxruntime here (the engine
Triton's onnxruntime backend wraps) while the python-backend model runs in the real tritonserver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest
from conftest import MODEL_FILE, require

from plugin.errors import ModelError
from plugin.inference.assets import MODELS
from plugin.inference.detector_graph import build_detector_graph, graph_recipe, is_current
from plugin.inference.naive import YoloxSettings, read_model_parameters
from plugin.inference.server import EmbeddedTriton
from plugin.inference.triton import letterbox

REPO_ROOT = Path(__file__).resolve().parents[4]
SETTINGS = YoloxSettings.from_parameters(
    read_model_parameters(REPO_ROOT / "triton_models/onnx/yolox_nano/config.pbtxt")
)
SIZE, K = SETTINGS.input_size, SETTINGS.max_detections
EVERY = 5  # every 5th frame of the 1394: 279 frames, people entering, standing, leaving and the empty room
BOX_PX = 1e-3  # the same float32 arithmetic in another order: identical within a thousandth of a pixel
SCORE = 1e-5


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The graph built from the pinned YOLOX file, in an onnxruntime session."""
    import onnxruntime as ort

    require(None if MODEL_FILE.is_file() else f"{MODEL_FILE} missing: run `storesight models fetch`")
    path = tmp_path_factory.mktemp("graph") / "model.onnx"
    build_detector_graph(MODEL_FILE, MODELS[0].sha256, SETTINGS, path)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def frames(clip: Path, every: int = EVERY) -> Iterator[tuple[int, np.ndarray]]:
    """(index, letterboxed uint8 BGR [S,S,3]) for every `every`-th frame of the clip, read in order."""
    cap = cv2.VideoCapture(str(clip))
    index = -1
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                return
            index += 1
            if index % every == 0:
                yield index, letterbox(image, SIZE)[0]
    finally:
        cap.release()


def test_the_graph_has_the_contracts_tensors(graph: Any) -> None:
    (inp,) = graph.get_inputs()
    assert (inp.name, inp.type, inp.shape) == ("images_u8", "tensor(uint8)", ["batch", SIZE, SIZE, 3])
    outs = {o.name: (o.type, o.shape) for o in graph.get_outputs()}
    assert outs == {
        "boxes": ("tensor(float)", ["batch", K, 4]),
        "scores": ("tensor(float)", ["batch", K]),
        "classes": ("tensor(int32)", ["batch", K]),
        "count": ("tensor(int32)", ["batch", 1]),
    }


def test_an_empty_frame_gives_no_rows_and_padding(graph: Any) -> None:
    blank = np.full((2, SIZE, SIZE, 3), 114, np.uint8)  # the letterbox's own grey
    boxes, scores, classes, count = graph.run(None, {"images_u8": blank})
    assert count.tolist() == [[0], [0]]
    assert not boxes.any() and not scores.any() and (classes == -1).all()


def test_a_batch_gives_what_its_images_give_alone(graph: Any, clip: Path) -> None:
    picked = [img for i, img in frames(clip, every=100) if i in (100, 300, 900, 1300)]
    batch = graph.run(None, {"images_u8": np.stack(picked)})
    people = [
        int(((classes == 0) & (scores >= 0.35)).sum()) for scores, classes in zip(batch[1], batch[2], strict=True)
    ]
    assert people == [1, 1, 0, 1]  # one person at the table; frame 900: nobody
    for row, image in enumerate(picked):
        alone = graph.run(None, {"images_u8": image[None]})
        for got, want in zip(batch, alone, strict=True):
            np.testing.assert_allclose(got[row], want[0], atol=BOX_PX)


def test_the_recipe_is_recorded_and_a_changed_setting_is_not_current(graph: Any, tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    build_detector_graph(MODEL_FILE, MODELS[0].sha256, SETTINGS, path)
    recipe = graph_recipe(path)
    assert recipe is not None and recipe["sha256"] == MODELS[0].sha256 and recipe["score_threshold"] == 0.25
    assert is_current(path, MODEL_FILE.name, MODELS[0].sha256, SETTINGS)
    stricter = YoloxSettings(**{**SETTINGS.__dict__, "score_threshold": 0.5})
    assert not is_current(path, MODEL_FILE.name, MODELS[0].sha256, stricter)
    assert not is_current(path, MODEL_FILE.name, "0" * 64, SETTINGS)


def test_a_graph_that_is_not_a_yolox_export_is_refused(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    two_out = helper.make_graph(
        [node, helper.make_node("Identity", ["x"], ["z"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [1])],
    )  # fmt: skip
    src = tmp_path / "other.onnx"
    onnx.save(helper.make_model(two_out), str(src))
    with pytest.raises(ModelError, match="expected one input and one output"):
        build_detector_graph(src, "x", SETTINGS, tmp_path / "model.onnx")
    src.write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="not a readable ONNX file"):
        build_detector_graph(src, "x", SETTINGS, tmp_path / "model.onnx")


@pytest.mark.triton
@pytest.mark.slow
def test_same_detections_as_the_python_backend_model(graph: Any, triton: EmbeddedTriton, clip: Path) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(triton.grpc_url.removeprefix("grpc://"))
    outputs = [grpcclient.InferRequestedOutput(n) for n in ("boxes", "scores", "classes", "count")]
    compared = rows = 0
    try:
        for index, image in frames(clip):
            inp = grpcclient.InferInput("images_u8", [1, SIZE, SIZE, 3], "UINT8")
            inp.set_data_from_numpy(image[None])
            served = client.infer("yolox_nano", [inp], outputs=outputs)
            want = [served.as_numpy(n) for n in ("boxes", "scores", "classes", "count")]
            got = graph.run(None, {"images_u8": image[None]})
            n = int(want[3].reshape(-1)[0])
            assert int(got[3][0, 0]) == n, f"frame {index}: {int(got[3][0, 0])} rows, python backend {n}"
            np.testing.assert_array_equal(got[2][0], want[2][0], err_msg=f"frame {index}: classes")
            np.testing.assert_allclose(got[0][0], want[0][0], atol=BOX_PX, err_msg=f"frame {index}: boxes")
            np.testing.assert_allclose(got[1][0], want[1][0], atol=SCORE, err_msg=f"frame {index}: scores")
            compared += 1
            rows += n
    finally:
        client.close()
    print(f"detector graph vs python backend: {compared} frames, {rows} detections, all equal within {BOX_PX} px")
    assert compared == 279 and rows > 200  # the comparison covered the clip and compared real detections
